// Pre-tokenization for byte-level BPE: split text into words exactly as llama.cpp does for a given
// tokenizer.ggml.pre name. BPE merges never cross a word boundary, so these splits decide the token ids.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace floe {

// The text of a split, re-encoded as UTF-8 (malformed input bytes become U+FFFD, as in llama.cpp) and the end
// offset of each word in it: word i is text[ends[i-1], ends[i]).
struct Words {
    std::string text;
    std::vector<size_t> ends;
};

class PreTokenizer {
public:
    // One step of a pre-tokenizer: llama.cpp applies a list of regexes, each splitting every piece left by
    // the previous one. Each step here reproduces one of those regexes.
    enum class Step {
        kEachDigit,     // \p{N}: every number code point on its own
        kDigitRuns,     // \p{N}+
        kAsciiDigit3,   // [0-9][0-9][0-9]
        kPunctRuns,     // [\p{P}\$\+<=>\^~\|]+
        kGpt2,          // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
        kLlama3,        // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
                        //   \s*[\r\n]+|\s+(?!\S)|\s+
        kQwen2,         // as kLlama3 but \p{N} (single digits) instead of \p{N}{1,3}
    };

    // `name` is tokenizer.ggml.pre ("" means "default"). Throws std::invalid_argument for names not supported.
    explicit PreTokenizer(const std::string& name);

    const std::string& name() const { return name_; }
    const std::vector<Step>& steps() const { return steps_; }
    // llama.cpp options that come with the pre-tokenizer type.
    bool ignore_merges() const { return ignore_merges_; }      // a word that is a token is not split by BPE
    bool add_bos_default() const { return add_bos_default_; }  // unless tokenizer.ggml.add_bos_token says

    Words split(std::string_view text) const;

    static std::vector<std::string> supported_names();

private:
    std::string name_;
    std::vector<Step> steps_;
    bool ignore_merges_ = false;
    bool add_bos_default_ = false;
};

}  // namespace floe
