// GPT-2 style byte-level BPE tokenizer built from GGUF metadata (tokenizer.ggml.model == "gpt2"). Token ids
// are identical to llama.cpp's llama_tokenize for the same model; see tests/test_tokenizer.py.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "floe/gguf.h"
#include "floe/pair_map.h"
#include "floe/pretokenize.h"

namespace floe {

// Token attributes, from tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
// 6 byte; anything else is undefined) plus llama.cpp's fix-ups (e.g. "<|im_end|>" is always control).
enum TokenAttr : uint8_t {
    kAttrUndefined = 0,
    kAttrNormal = 1 << 0,
    kAttrUnknown = 1 << 1,
    kAttrControl = 1 << 2,
    kAttrUserDefined = 1 << 3,
    kAttrUnused = 1 << 4,
    kAttrByte = 1 << 5,
};

class Tokenizer {
public:
    static constexpr int32_t kNoToken = -1;

    // Throws GGUFError for missing or malformed tokenizer metadata and std::invalid_argument for a tokenizer
    // model or pre-tokenizer that is not supported.
    explicit Tokenizer(const GGUFFile& file);

    // Text (any bytes; malformed UTF-8 is read as U+FFFD per bad byte, like llama.cpp) to token ids.
    // add_special: add BOS/EOS *as the model asks* (tokenizer.ggml.add_bos_token / add_eos_token), exactly
    //   like llama.cpp's add_special; a model with add_bos_token = false (SmolLM2) gets no BOS.
    // parse_special: control tokens written in the text ("<|im_start|>") become their ids; otherwise they are
    //   tokenized as plain text. User-defined tokens are always matched, as in llama.cpp.
    std::vector<int32_t> tokenize(std::string_view text, bool add_special = true, bool parse_special = true) const;

    // Ids to bytes. Control and unknown tokens are rendered as their text if `special`, else skipped.
    // Throws std::invalid_argument for an id outside [0, n_vocab).
    std::string detokenize(const std::vector<int32_t>& ids, bool special = false) const;
    // The bytes one token decodes to (control tokens rendered); throws std::invalid_argument for a bad id.
    const std::string& token_bytes(int32_t id) const;
    // What token `id` adds to the output of detokenize(..., special).
    const std::string& token_output(int32_t id, bool special) const;

    int32_t n_vocab() const { return static_cast<int32_t>(text_.size()); }
    const std::string& token_text(int32_t id) const;  // as stored in the vocabulary (byte-level encoded)
    uint8_t token_attr(int32_t id) const;
    int32_t find_token(std::string_view text) const;  // exact vocabulary lookup, kNoToken if absent

    int32_t bos_id() const { return bos_; }
    int32_t eos_id() const { return eos_; }
    int32_t unk_id() const { return unk_; }
    int32_t pad_id() const { return pad_; }
    bool add_bos() const { return add_bos_; }
    bool add_eos() const { return add_eos_; }
    const std::vector<int32_t>& eog_ids() const { return eog_; }  // tokens that end generation, sorted
    bool is_eog(int32_t id) const;
    const std::string& pre() const { return pre_.name(); }

private:
    struct Merge {
        int32_t rank = 0;
        int32_t result = 0;  // symbol id of the merged string
    };
    struct Fragment {
        int32_t token;  // kNoToken: raw text [begin, begin + size)
        size_t begin, size;
    };
    struct BpeWork;  // scratch buffers reused across the words of one call

    void load_vocab(const GGUFFile& file);
    void load_merges(const GGUFFile& file);
    void load_special_ids(const GGUFFile& file);
    void apply_llama_fixups(const GGUFFile& file);
    void build_pieces();
    void build_special_order();
    void check_id(int32_t id) const;

    std::vector<Fragment> partition_special(std::string_view text, bool parse_special) const;
    void tokenize_words(std::string_view text, std::vector<int32_t>& out) const;
    void bpe_word(std::string_view word, BpeWork& work, std::vector<int32_t>& out) const;
    void emit_fallback(std::string_view bytes, std::vector<int32_t>& out) const;
    int32_t merge_symbol(const std::string& text);

    PreTokenizer pre_;
    std::vector<std::string> text_;   // token strings
    std::vector<uint8_t> attr_;       // TokenAttr bits
    std::vector<std::string> piece_;  // decoded bytes of each token (control tokens rendered)
    std::unordered_map<std::string, int32_t> id_of_;

    // BPE runs on "symbols": vocabulary ids, plus ids >= n_vocab for merge strings that are not tokens (a
    // merge may name one; llama.cpp merges by string, so we must too).
    std::unordered_map<std::string, int32_t> extra_symbols_;
    PairMap<Merge> merges_;                       // (left symbol, right symbol) -> merge
    std::array<int32_t, 256> byte_symbol_{};      // symbol of each raw byte (its GPT-2 character)
    std::array<int32_t, 256> char_byte_token_{};  // token whose text is this single byte (fallback), or -1

    std::vector<int32_t> special_order_;  // tokens matched in raw text, longest text first
    std::vector<int32_t> eog_;
    int32_t bos_ = kNoToken, eos_ = kNoToken, unk_ = kNoToken, pad_ = kNoToken;
    bool add_bos_ = false, add_eos_ = false;
};

// Turns a stream of token ids into text without ever splitting a UTF-8 character: feed() returns the bytes
// of the characters completed so far and holds back a trailing incomplete sequence until the next token.
// Bytes that can never become valid UTF-8 are passed through at once (a Python caller decodes them with
// errors="replace").
class StreamDecoder {
public:
    explicit StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool special = false);
    std::string feed(int32_t id);  // throws std::invalid_argument for a bad id (state unchanged)
    std::string flush();           // whatever is held back (an incomplete sequence), and reset
    size_t pending() const { return pending_.size(); }

private:
    std::shared_ptr<const Tokenizer> tokenizer_;
    bool special_;
    std::string pending_;
};

}  // namespace floe
