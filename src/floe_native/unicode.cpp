#include "floe/unicode.h"

#include <algorithm>
#include <array>

#include "unicode_data.h"

namespace floe::unicode {

namespace {

// ASCII is by far the most common input: answer it from a small table instead of a binary search.
std::array<uint16_t, 128> make_ascii_flags() {
    std::array<uint16_t, 128> t{};
    size_t r = 0;
    for (uint32_t cp = 0; cp < 128; ++cp) {
        while (r + 1 < data::kRangeCount && data::kRanges[r + 1].first <= cp) ++r;
        t[cp] = data::kRanges[r].flags;
    }
    return t;
}

bool is_continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes (controls,
// space, DEL, NBSP, soft hyphen, ...) are moved to U+0100.. in byte order, so every byte is a visible char.
bool is_self_mapped(uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteMap {
    std::array<std::string, 256> chars;   // byte -> UTF-8 of its character
    std::array<int16_t, 256 + 68> bytes;  // character (all are < U+0144) -> byte
    ByteMap() {
        bytes.fill(-1);
        uint32_t next = 256;
        for (uint32_t b = 0; b < 256; ++b) {
            const uint32_t cp = is_self_mapped(b) ? b : next++;
            append_utf8(chars[b], cp);
            bytes[cp] = static_cast<int16_t>(b);
        }
    }
};

const ByteMap& byte_map() {
    static const ByteMap map;
    return map;
}

}  // namespace

uint16_t flags(uint32_t cp) {
    static const std::array<uint16_t, 128> ascii = make_ascii_flags();
    if (cp < 128) return ascii[cp];
    if (cp > kMaxCodepoint) return kUndefined;
    const data::FlagRange* end = data::kRanges + data::kRangeCount;
    const data::FlagRange* it =
        std::upper_bound(data::kRanges, end, cp, [](uint32_t v, const data::FlagRange& r) { return v < r.first; });
    return (it - 1)->flags;  // kRanges[0].first == 0, so it > kRanges
}

const char* data_version() { return data::kVersion; }

std::vector<uint32_t> decode_utf8(std::string_view text) {
    std::vector<uint32_t> out;
    out.reserve(text.size());
    const size_t n = text.size();
    auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
    // Continuation bytes are checked but, like llama.cpp, overlong forms and surrogates are not rejected:
    // they decode to their value and re-encode to the same bytes, which keeps token ids identical.
    auto has_continuations = [&](size_t i, size_t count) {
        if (i + count >= n) return false;
        for (size_t k = 1; k <= count; ++k)
            if (!is_continuation(byte(i + k))) return false;
        return true;
    };
    size_t i = 0;
    while (i < n) {
        const uint8_t b0 = byte(i);
        uint32_t cp = kReplacement;
        size_t len = 1;
        if (b0 < 0x80) {
            cp = b0;
        } else if ((b0 & 0xE0) == 0xC0 && has_continuations(i, 1)) {
            cp = (uint32_t(b0 & 0x1F) << 6) | (byte(i + 1) & 0x3F);
            len = 2;
        } else if ((b0 & 0xF0) == 0xE0 && has_continuations(i, 2)) {
            cp = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(byte(i + 1) & 0x3F) << 6) | (byte(i + 2) & 0x3F);
            len = 3;
        } else if ((b0 & 0xF8) == 0xF0 && has_continuations(i, 3)) {
            const uint32_t v = (uint32_t(b0 & 0x07) << 18) | (uint32_t(byte(i + 1) & 0x3F) << 12) |
                               (uint32_t(byte(i + 2) & 0x3F) << 6) | (byte(i + 3) & 0x3F);
            if (v <= kMaxCodepoint) {  // llama.cpp aborts on these; we treat them as malformed
                cp = v;
                len = 4;
            }
        }
        out.push_back(cp);
        i += len;
    }
    return out;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | ((cp >> 18) & 0x07));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

size_t incomplete_utf8_tail(std::string_view bytes) {
    // Well-formed sequences (Unicode table 3-7): the lead byte fixes the length and the range of the
    // second byte; later bytes are plain continuations.
    auto sequence_length = [](uint8_t b) -> size_t {
        if (b >= 0xC2 && b <= 0xDF) return 2;
        if (b >= 0xE0 && b <= 0xEF) return 3;
        if (b >= 0xF0 && b <= 0xF4) return 4;
        return 0;
    };
    auto second_byte_ok = [](uint8_t lead, uint8_t b) {
        switch (lead) {
            case 0xE0: return b >= 0xA0 && b <= 0xBF;
            case 0xED: return b >= 0x80 && b <= 0x9F;
            case 0xF0: return b >= 0x90 && b <= 0xBF;
            case 0xF4: return b >= 0x80 && b <= 0x8F;
            default: return is_continuation(b);
        }
    };
    const size_t n = bytes.size();
    for (size_t k = 1; k <= 3 && k <= n; ++k) {
        const uint8_t lead = static_cast<uint8_t>(bytes[n - k]);
        if (is_continuation(lead)) continue;  // keep looking for the lead byte
        if (sequence_length(lead) <= k) return 0;  // ASCII, invalid, or a complete sequence
        for (size_t j = 1; j < k; ++j) {
            const uint8_t b = static_cast<uint8_t>(bytes[n - k + j]);
            if (j == 1 ? !second_byte_ok(lead, b) : !is_continuation(b)) return 0;
        }
        return k;
    }
    return 0;
}

const std::string& byte_to_chars(uint8_t byte) { return byte_map().chars[byte]; }

int chars_to_byte(uint32_t cp) { return cp < byte_map().bytes.size() ? byte_map().bytes[cp] : -1; }

}  // namespace floe::unicode
