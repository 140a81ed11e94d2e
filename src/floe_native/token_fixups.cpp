// llama.cpp's corrections to token types and its end-of-generation set (llama-vocab.cpp, "auto-detect special
// tokens"): some tokens are made control tokens by their text, whatever tokenizer.ggml.token_type says, and
// that decides which tokens are cut out of raw text. Kept apart from the BPE code: it is a list of facts.
#include <algorithm>
#include <string>
#include <vector>

#include "floe/tokenizer.h"

namespace floe {

namespace {

// Non-ASCII texts are spelled in hex: \xEF\xBD\x9C is U+FF5C (fullwidth |), \xE2\x96\x81 is U+2581 (SentencePiece
// space). Tokens that end generation; they are made control tokens.
const char* const kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~["
};

// Fill-in-the-middle tokens: when the file does not name one, the first token with one of these texts is used
// and made a control token; the pad, repo and separator ones also end generation.
struct FimKind {
    const char* key;
    const char* deprecated_key;
    bool ends_generation;
    std::vector<const char*> texts;
};
const std::vector<FimKind>& fim_kinds() {
    static const std::vector<FimKind> kinds = {
        {"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id", false,
         {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
          "<PRE>", "\xE2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>"}},
        {"tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id", false,
         {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>",
          "<SUF>", "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>"}},
        {"tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id", false,
         {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>",
          "<MID>", "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>"}},
        {"tokenizer.ggml.fim_pad_token_id", nullptr, true, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
        {"tokenizer.ggml.fim_rep_token_id", nullptr, true,
         {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
        {"tokenizer.ggml.fim_sep_token_id", nullptr, true, {"<|file_sep|>"}},
    };
    return kinds;
}

// A token id stored under `key`, if present and inside the vocabulary.
int32_t id_from_metadata(const GGUFFile& file, const char* key, int32_t n_vocab) {
    const GGUFValue* v = key ? file.find(key) : nullptr;
    if (v == nullptr || v->type == GGUFType::ARRAY) return Tokenizer::kNoToken;
    if (const auto* u = std::get_if<uint64_t>(&v->scalar); u && *u < uint64_t(n_vocab)) return int32_t(*u);
    if (const auto* i = std::get_if<int64_t>(&v->scalar); i && *i >= 0 && *i < n_vocab) return int32_t(*i);
    return Tokenizer::kNoToken;
}

}  // namespace

// llama.cpp does not trust token types alone: some tokens are made control tokens by their text, and the
// set of end-of-generation tokens is built from ids and texts. Partitioning special tokens depends on this.
void Tokenizer::apply_llama_fixups(const GGUFFile& file) {
    auto id_of_key = [&](const char* key) { return id_from_metadata(file, key, n_vocab()); };
    std::vector<int32_t> eog;
    for (const FimKind& kind : fim_kinds()) {
        int32_t id = id_of_key(kind.key);
        if (id == kNoToken) id = id_of_key(kind.deprecated_key);
        if (id == kNoToken) {
            for (const char* text : kind.texts) {  // lowest id wins (llama.cpp: hash-map order)
                const int32_t t = find_token(text);
                if (t != kNoToken && (id == kNoToken || t < id)) id = t;
            }
            if (id != kNoToken) attr_[id] |= kAttrControl;
        }
        if (id != kNoToken && kind.ends_generation) eog.push_back(id);
    }
    for (const char* text : kEogTexts) {
        const int32_t id = find_token(text);
        if (id == kNoToken) continue;
        attr_[id] |= kAttrControl;
        eog.push_back(id);
    }
    // gpt-oss: these must always be rendered, so llama.cpp makes them user-defined.
    for (const char* text : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})
        if (const int32_t id = find_token(text); id != kNoToken) attr_[id] = kAttrUserDefined;
    for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
        if (const int32_t id = id_of_key(key); id != kNoToken) eog.push_back(id);
    if (eos_ != kNoToken) eog.push_back(eos_);
    // o200k_harmony / solar-open: "<|end|>" separates turns there and must not stop generation.
    const int32_t end = find_token("<|end|>");
    auto in_eog = [&](const char* text) {
        const int32_t id = find_token(text);
        return id != kNoToken && std::find(eog.begin(), eog.end(), id) != eog.end();
    };
    if (end != kNoToken && in_eog("<|end|>") &&
        ((in_eog("<|return|>") && (in_eog("<|call|>") || in_eog("<|calls|>"))) ||
         ((in_eog("<|call|>") || in_eog("<|calls|>")) && in_eog("<|flush|>")))) {
        eog.erase(std::remove(eog.begin(), eog.end(), end), eog.end());
        attr_[end] = kAttrUserDefined;
    }
    std::sort(eog.begin(), eog.end());
    eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
    eog_ = std::move(eog);
}

}  // namespace floe
