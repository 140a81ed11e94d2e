// Each step below reproduces, split for split, how llama.cpp (src/unicode.cpp) applies one pre-tokenizer regex:
// its hand-written matchers for the GPT-2 and Llama-3 patterns, and std::regex over category-collapsed text
// for the others. Positions are code points; a step splits every piece left by the previous step and treats
// the piece boundary like the end of the text (which matters for \s+(?!\S)).
#include "floe/pretokenize.h"

#include <algorithm>
#include <stdexcept>

#include "floe/unicode.h"

namespace floe {

namespace {

using unicode::Flag;
using Step = PreTokenizer::Step;

constexpr uint32_t kNone = 0xFFFFFFFF;  // "code point" outside the current piece

bool is_letter(uint16_t f) { return f & Flag::kLetter; }
bool is_number(uint16_t f) { return f & Flag::kNumber; }
bool is_space(uint16_t f) { return f & Flag::kWhitespace; }
// [^\s\p{L}\p{N}] inside the piece (flags are 0 outside it, and every real code point has a class bit).
bool is_other(uint16_t f) { return f != 0 && !(f & (Flag::kWhitespace | Flag::kLetter | Flag::kNumber)); }
bool is_newline(uint32_t c) { return c == '\r' || c == '\n'; }
bool is_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }
uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// One piece [begin, end) of the text being split, and the cuts made in it so far.
class Piece {
public:
    Piece(const std::vector<uint32_t>& cpts, const std::vector<uint16_t>& flags, size_t begin, size_t end,
          std::vector<size_t>& out)
        : begin(begin), end(end), cpts_(cpts), flags_(flags), last_cut_(begin), out_(out) {}

    uint32_t cpt(size_t i) const { return i < end ? cpts_[i] : kNone; }
    uint16_t flags(size_t i) const { return i < end ? flags_[i] : 0; }

    template <typename Pred>
    size_t run_end(size_t i, Pred pred) const {
        while (pred(flags(i))) ++i;
        return i;
    }

    // End the current word at `pos` (no-op if it would be empty).
    void cut(size_t pos) {
        if (pos > last_cut_) out_.push_back(pos - last_cut_);
        last_cut_ = pos;
    }

    const size_t begin, end;

private:
    const std::vector<uint32_t>& cpts_;
    const std::vector<uint16_t>& flags_;
    size_t last_cut_;
    std::vector<size_t>& out_;
};

// 's 't 're 've 'm 'll 'd at pos: the length matched (0 if none). Only ASCII letters can match, also when
// case-insensitive (no other code point lower-cases to one of these letters).
size_t contraction_length(const Piece& p, size_t pos, bool any_case) {
    if (p.cpt(pos) != '\'') return 0;
    auto at = [&](size_t i) { return any_case ? ascii_lower(p.cpt(i)) : p.cpt(i); };
    const uint32_t a = at(pos + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    const uint32_t b = at(pos + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// A regex without alternatives or lookaround: every match becomes a word and so does every gap between
// matches. `match(p, pos)` returns the length of the match starting at pos, 0 if none.
template <typename Match>
void split_matches(Piece& p, Match match) {
    size_t pos = p.begin;
    while (pos < p.end) {
        const size_t n = match(p, pos);
        if (n == 0) {
            ++pos;
            continue;
        }
        p.cut(pos);
        pos += n;
        p.cut(pos);
    }
    p.cut(p.end);
}

// Whitespace at pos for the GPT-2 pattern: \s+(?!\S) leaves the last space of a run to prefix the next word;
// at the end of the piece, or for a single space, \s+ takes the whole run. Returns the end of the word.
size_t gpt2_whitespace_end(const Piece& p, size_t pos) {
    const size_t n = p.run_end(pos, is_space) - pos;
    if (n > 1 && pos + n < p.end) return pos + n - 1;
    return pos + std::max<size_t>(n, 1);  // n == 0 cannot happen in a piece; split off one code point
}

void split_gpt2(Piece& p) {
    size_t pos = p.begin;
    while (pos < p.end) {
        if (size_t n = contraction_length(p, pos, false)) {
            pos += n;
        } else {
            const size_t lead = p.cpt(pos) == ' ' ? 1 : 0;  // " ?" before a letter, number or symbol run
            const uint16_t f = p.flags(pos + lead);
            if (is_letter(f))
                pos = p.run_end(pos + lead, is_letter);
            else if (is_number(f))
                pos = p.run_end(pos + lead, is_number);
            else if (is_other(f))
                pos = p.run_end(pos + lead, is_other);
            else
                pos = gpt2_whitespace_end(p, pos);
        }
        p.cut(pos);
    }
}

// Whitespace at pos for the Llama-3 pattern: \s*[\r\n]+ (up to the last newline of the run), else as GPT-2.
size_t llama3_whitespace_end(const Piece& p, size_t pos) {
    size_t last_newline_end = 0;
    size_t i = pos;
    for (; is_space(p.flags(i)); ++i)
        if (is_newline(p.cpt(i))) last_newline_end = i + 1;
    if (last_newline_end > 0) return last_newline_end;
    return gpt2_whitespace_end(p, pos);
}

// The Llama-3 pattern with \p{N}{1,max_digits}. Qwen2's pattern differs only in taking single digits; llama.cpp
// runs it through std::regex, whose leftmost-alternative backtracking gives the same splits as this matcher.
void split_llama3(Piece& p, size_t max_digits) {
    size_t pos = p.begin;
    while (pos < p.end) {
        const uint32_t c = p.cpt(pos);
        const uint16_t f = p.flags(pos);
        if (size_t n = contraction_length(p, pos, true)) {
            pos += n;
        } else if (!is_newline(c) && !is_number(f) && (is_letter(f) || is_letter(p.flags(pos + 1)))) {
            pos = p.run_end(pos + 1, is_letter);  // [^\r\n\p{L}\p{N}]?\p{L}+
        } else if (is_number(f)) {
            const size_t digits_end = p.run_end(pos, is_number);  // \p{N}{1,max}: groups from the left
            while (pos + max_digits < digits_end) {
                pos += max_digits;
                p.cut(pos);
            }
            pos = digits_end;
        } else if (const size_t lead = c == ' ' ? 1 : 0; is_other(p.flags(pos + lead))) {
            pos = p.run_end(pos + lead, is_other);  // " ?[^\s\p{L}\p{N}]+[\r\n]*"
            while (is_newline(p.cpt(pos))) ++pos;
        } else {
            pos = llama3_whitespace_end(p, pos);
        }
        p.cut(pos);
    }
}

size_t match_each_digit(const Piece& p, size_t pos) { return is_number(p.flags(pos)) ? 1 : 0; }

size_t match_digit_run(const Piece& p, size_t pos) { return p.run_end(pos, is_number) - pos; }

size_t match_ascii_digit3(const Piece& p, size_t pos) {
    const bool three = is_ascii_digit(p.cpt(pos)) && is_ascii_digit(p.cpt(pos + 1)) && is_ascii_digit(p.cpt(pos + 2));
    return three ? 3 : 0;
}

// [\p{P}\$\+<=>\^~\|]+ : punctuation plus the ASCII symbols listed (not '`').
size_t match_punct_run(const Piece& p, size_t pos) {
    auto punct = [&](size_t i) {
        const uint32_t c = p.cpt(i);
        return (p.flags(i) & Flag::kPunctuation) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' ||
               c == '^' || c == '~' || c == '|';
    };
    size_t i = pos;
    while (punct(i)) ++i;
    return i - pos;
}

void split_piece(Step step, Piece& p) {
    switch (step) {
        case Step::kEachDigit: return split_matches(p, match_each_digit);
        case Step::kDigitRuns: return split_matches(p, match_digit_run);
        case Step::kAsciiDigit3: return split_matches(p, match_ascii_digit3);
        case Step::kPunctRuns: return split_matches(p, match_punct_run);
        case Step::kGpt2: return split_gpt2(p);
        case Step::kLlama3: return split_llama3(p, 3);
        case Step::kQwen2: return split_llama3(p, 1);
    }
}

struct Config {
    std::vector<std::string> names;
    std::vector<Step> steps;
    bool ignore_merges;
    bool add_bos;
};

// The pre-tokenizer names llama.cpp maps to each regex list (llama-vocab.cpp), for the families we support
// ("gpt2" is our alias of "gpt-2"). The flags are llama.cpp's ignore_merges and add_bos defaults per name.
const std::vector<Config>& configs() {
    static const std::vector<Config> table = {
        {{"default"}, {Step::kPunctRuns, Step::kGpt2, Step::kDigitRuns, Step::kAsciiDigit3}, false, false},
        {{"gpt-2", "gpt2", "phi-2", "mpt", "olmo"}, {Step::kGpt2}, false, false},
        {{"smollm", "starcoder", "refact", "command-r", "codeshell"}, {Step::kEachDigit, Step::kGpt2}, false, false},
        {{"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}, {Step::kLlama3}, true, true},
        {{"dbrx", "smaug-bpe"}, {Step::kLlama3}, false, false},
        {{"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan"}, {Step::kQwen2}, false, false},
    };
    return table;
}

}  // namespace

PreTokenizer::PreTokenizer(const std::string& name) : name_(name.empty() ? "default" : name) {
    for (const Config& c : configs()) {
        if (std::find(c.names.begin(), c.names.end(), name_) == c.names.end()) continue;
        steps_ = c.steps;
        ignore_merges_ = c.ignore_merges;
        add_bos_default_ = c.add_bos;
        return;
    }
    std::string known;
    for (const std::string& n : supported_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unsupported pre-tokenizer '" + name_ + "' (supported: " + known + ")");
}

std::vector<std::string> PreTokenizer::supported_names() {
    std::vector<std::string> out;
    for (const Config& c : configs()) out.insert(out.end(), c.names.begin(), c.names.end());
    return out;
}

Words PreTokenizer::split(std::string_view text) const {
    const std::vector<uint32_t> cpts = unicode::decode_utf8(text);
    std::vector<uint16_t> flags(cpts.size());
    std::transform(cpts.begin(), cpts.end(), flags.begin(), unicode::flags);

    std::vector<size_t> pieces;  // lengths, in code points
    if (!cpts.empty()) pieces.push_back(cpts.size());
    for (Step step : steps_) {
        std::vector<size_t> next;
        next.reserve(pieces.size() * 2);
        size_t begin = 0;
        for (size_t len : pieces) {
            Piece p(cpts, flags, begin, begin + len, next);
            split_piece(step, p);
            begin += len;
        }
        pieces = std::move(next);
    }

    Words words;
    words.text.reserve(text.size() + 8);
    words.ends.reserve(pieces.size());
    size_t i = 0;
    for (size_t len : pieces) {
        for (const size_t end = i + len; i < end; ++i) unicode::append_utf8(words.text, cpts[i]);
        words.ends.push_back(words.text.size());
    }
    return words;
}

}  // namespace floe
