// Unicode helpers for the BPE tokenizer: code-point classes, UTF-8 decoding/encoding with llama.cpp's
// error handling, and GPT-2's byte <-> printable-character mapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace floe::unicode {

// Code-point class bits (same values as llama.cpp's unicode_cpt_flags). Exactly one of the first eight is set
// for every code point <= U+10FFFF; kWhitespace is the White_Space property and comes on top.
enum Flag : uint16_t {
    kUndefined = 0x001,    // unassigned (Cn), and anything above U+10FFFF
    kNumber = 0x002,       // \p{N}
    kLetter = 0x004,       // \p{L}
    kSeparator = 0x008,    // \p{Z}
    kMark = 0x010,         // \p{M}
    kPunctuation = 0x020,  // \p{P}
    kSymbol = 0x040,       // \p{S}
    kControl = 0x080,      // \p{C} except Cn
    kWhitespace = 0x100,   // \s as llama.cpp defines it (White_Space)
};

constexpr uint32_t kReplacement = 0xFFFD;
constexpr uint32_t kMaxCodepoint = 0x10FFFF;

uint16_t flags(uint32_t cp);
const char* data_version();  // Unicode version of the class table

// Decode as llama.cpp's unicode_cpts_from_utf8 does, so that token ids match for any input: a malformed
// sequence yields U+FFFD and skips one byte; overlong forms and surrogates are accepted as their value.
// Unlike llama.cpp (which aborts), a 4-byte form above U+10FFFF is treated as malformed too.
std::vector<uint32_t> decode_utf8(std::string_view text);
void append_utf8(std::string& out, uint32_t cp);  // cp <= U+10FFFF (surrogates are encoded as-is)

// Number of trailing bytes of `bytes` that are a proper prefix of a well-formed UTF-8 sequence, i.e. the
// part a streaming decoder must hold back until more bytes arrive (0..3).
size_t incomplete_utf8_tail(std::string_view bytes);

// GPT-2 byte-level BPE works on text where each byte is replaced by one printable character.
const std::string& byte_to_chars(uint8_t byte);  // UTF-8 of that character
int chars_to_byte(uint32_t cp);                  // inverse; -1 if cp is not one of the 256 characters

}  // namespace floe::unicode
