// Byte-level BPE as llama.cpp does it (llama-vocab.cpp): split out special tokens, pre-tokenize each piece of
// raw text into words, map each byte of a word to its GPT-2 character, then apply merges lowest rank first.
#include "floe/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "floe/unicode.h"

namespace floe {

namespace {

const GGUFValue& require_array(const GGUFFile& file, const std::string& key, GGUFType elem) {
    const GGUFValue* v = file.find(key);
    if (v == nullptr) throw GGUFError("tokenizer metadata '" + key + "' is missing");
    if (v->type != GGUFType::ARRAY || v->elem_type != elem)
        throw GGUFError("tokenizer metadata '" + key + "' has the wrong type");
    return *v;
}

bool scalar_to_int(const GGUFValue::Scalar& s, int64_t* out) {
    if (const auto* u = std::get_if<uint64_t>(&s)) {
        if (*u > uint64_t(INT64_MAX)) return false;
        *out = static_cast<int64_t>(*u);
        return true;
    }
    if (const auto* i = std::get_if<int64_t>(&s)) {
        *out = *i;
        return true;
    }
    return false;
}

bool optional_bool(const GGUFFile& file, const std::string& key, bool fallback) {
    const GGUFValue* v = file.find(key);
    if (v == nullptr) return fallback;
    if (const auto* b = std::get_if<bool>(&v->scalar); b && v->type == GGUFType::BOOL) return *b;
    throw GGUFError("tokenizer metadata '" + key + "' is not a bool");
}

uint8_t attr_from_type(int64_t type) {
    switch (type) {
        case 1: return kAttrNormal;
        case 2: return kAttrUnknown;
        case 3: return kAttrControl;
        case 4: return kAttrUserDefined;
        case 5: return kAttrUnused;
        case 6: return kAttrByte;
        default: return kAttrUndefined;
    }
}

// A normal token's text is byte-level encoded: map each character back to its byte. llama.cpp renders a
// character outside the 256-character alphabet as "[UNK_BYTE_0x<hex><token text>]"; so do we.
std::string decode_byte_level(const std::string& text) {
    std::string out;
    for (uint32_t cp : unicode::decode_utf8(text)) {
        const int b = unicode::chars_to_byte(cp);
        if (b >= 0) {
            out += static_cast<char>(b);
            continue;
        }
        std::string utf8;
        unicode::append_utf8(utf8, cp);
        out += "[UNK_BYTE_0x";
        for (unsigned char c : utf8) {
            char hex[3];
            std::snprintf(hex, sizeof hex, "%02x", c);
            out += hex;
        }
        out += text + "]";
    }
    return out;
}

// A byte token's text is "<0xXX>".
std::string decode_byte_token(const std::string& text) {
    unsigned value = 0;
    char close = 0;
    if (text.size() == 6 && std::sscanf(text.c_str(), "<0x%2x%c", &value, &close) == 2 && close == '>')
        return std::string(1, static_cast<char>(value));
    return {};
}

// The pre-tokenizer name, after checking the tokenizer model (so a SentencePiece file gets that error).
std::string bpe_pre_name(const GGUFFile& file) {
    const std::string model = file.get_string("tokenizer.ggml.model");
    if (model != "gpt2")
        throw std::invalid_argument("unsupported tokenizer model '" + model + "' (only 'gpt2' byte-level BPE)");
    return file.find("tokenizer.ggml.pre") ? file.get_string("tokenizer.ggml.pre") : std::string();
}

}  // namespace

struct Tokenizer::BpeWork {
    struct Symbol {
        int32_t id;          // symbol id (see merges_)
        int32_t prev, next;  // neighbours in the word, -1 at the ends
        uint32_t begin, size;  // bytes of the word; size 0 once merged into the left neighbour
    };
    struct Pair {
        int32_t rank, left, right;  // symbol indices
        int32_t left_id, right_id, result;
    };
    // Heap order: lowest rank first, then leftmost, as llama.cpp's llm_bigram_bpe::comparator.
    struct Later {
        bool operator()(const Pair& a, const Pair& b) const {
            return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
        }
    };
    std::vector<Symbol> symbols;
    std::vector<Pair> heap;
};

Tokenizer::Tokenizer(const GGUFFile& file) : pre_(bpe_pre_name(file)) {
    load_vocab(file);
    load_merges(file);
    load_special_ids(file);
    apply_llama_fixups(file);
    build_pieces();
    build_special_order();
}

void Tokenizer::load_vocab(const GGUFFile& file) {
    const GGUFValue& tokens = require_array(file, "tokenizer.ggml.tokens", GGUFType::STRING);
    const size_t n = tokens.array.size();
    if (n == 0 || n > size_t(INT32_MAX)) throw GGUFError("tokenizer vocabulary is empty or too large");
    text_.resize(n);
    attr_.assign(n, kAttrNormal);
    id_of_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        std::string t = std::get<std::string>(tokens.array[i]);
        if (t.empty()) t = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp names empty tokens
        if (!id_of_.emplace(t, static_cast<int32_t>(i)).second)
            throw GGUFError("duplicate token in vocabulary: '" + t + "'");
        text_[i] = std::move(t);
    }
    if (const GGUFValue* types = file.find("tokenizer.ggml.token_type")) {
        if (types->type != GGUFType::ARRAY || types->array.size() < n)
            throw GGUFError("tokenizer.ggml.token_type is not an array of one type per token");
        for (size_t i = 0; i < n; ++i) {
            int64_t t = 0;
            if (!scalar_to_int(types->array[i], &t)) throw GGUFError("tokenizer.ggml.token_type is not integer");
            attr_[i] = attr_from_type(t);
        }
    }
}

int32_t Tokenizer::merge_symbol(const std::string& text) {
    if (auto it = id_of_.find(text); it != id_of_.end()) return it->second;
    const int32_t next = n_vocab() + static_cast<int32_t>(extra_symbols_.size());
    return extra_symbols_.emplace(text, next).first->second;
}

void Tokenizer::load_merges(const GGUFFile& file) {
    const GGUFValue& merges = require_array(file, "tokenizer.ggml.merges", GGUFType::STRING);
    if (merges.array.size() > size_t(INT32_MAX)) throw GGUFError("too many merges");
    for (size_t rank = 0; rank < merges.array.size(); ++rank) {
        const std::string& m = std::get<std::string>(merges.array[rank]);
        // "left right"; the search starts at 1 so that a left part may itself be a space, as in llama.cpp.
        const size_t space = m.find(' ', 1);
        const std::string left = space == std::string::npos ? std::string() : m.substr(0, space);
        const std::string right = space == std::string::npos ? std::string() : m.substr(space + 1);
        const int32_t l = merge_symbol(left), r = merge_symbol(right);
        const int32_t result = merge_symbol(left + right);
        merges_.insert(l, r, Merge{static_cast<int32_t>(rank), result});  // a repeated pair keeps its first rank
    }
    // Each raw byte starts as the symbol of its GPT-2 character; -1 if no token or merge mentions it.
    for (int b = 0; b < 256; ++b) {
        const std::string& chars = unicode::byte_to_chars(static_cast<uint8_t>(b));
        const auto vocab = id_of_.find(chars);
        const auto extra = extra_symbols_.find(chars);
        byte_symbol_[b] = vocab != id_of_.end() ? vocab->second : extra != extra_symbols_.end() ? extra->second : -1;
        const auto single = id_of_.find(std::string(1, static_cast<char>(b)));
        char_byte_token_[b] = single != id_of_.end() ? single->second : kNoToken;
    }
    extra_symbols_.clear();  // only needed to number the merges
}

void Tokenizer::load_special_ids(const GGUFFile& file) {
    const int64_t n = n_vocab();
    // llama.cpp's defaults for BPE vocabularies; a file value outside the vocabulary is ignored.
    auto read_id = [&](const char* key, int32_t fallback) {
        int32_t id = fallback >= 0 && fallback < n ? fallback : kNoToken;
        if (const GGUFValue* v = file.find(key)) {
            int64_t value = 0;
            if (v->type != GGUFType::ARRAY && scalar_to_int(v->scalar, &value) && value >= 0 && value < n)
                id = static_cast<int32_t>(value);
        }
        return id;
    };
    bos_ = read_id("tokenizer.ggml.bos_token_id", 11);
    eos_ = read_id("tokenizer.ggml.eos_token_id", 11);
    unk_ = read_id("tokenizer.ggml.unknown_token_id", kNoToken);
    pad_ = read_id("tokenizer.ggml.padding_token_id", kNoToken);
    add_bos_ = optional_bool(file, "tokenizer.ggml.add_bos_token", pre_.add_bos_default());
    add_eos_ = optional_bool(file, "tokenizer.ggml.add_eos_token", false);
    if (add_bos_ && bos_ == kNoToken) throw GGUFError("tokenizer.ggml.add_bos_token is true but there is no BOS token");
    if (add_eos_ && eos_ == kNoToken) throw GGUFError("tokenizer.ggml.add_eos_token is true but there is no EOS token");
}

void Tokenizer::build_pieces() {
    piece_.resize(text_.size());
    for (size_t i = 0; i < text_.size(); ++i) {
        const uint8_t a = attr_[i];
        if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined))
            piece_[i] = text_[i];
        else if (a & kAttrNormal)
            piece_[i] = decode_byte_level(text_[i]);
        else if (a & kAttrByte)
            piece_[i] = decode_byte_token(text_[i]);
        // unused and undefined tokens render as nothing, as in llama.cpp
    }
}

void Tokenizer::build_special_order() {
    for (int32_t id = 0; id < n_vocab(); ++id)
        if (attr_[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special_order_.push_back(id);
    // Longest first, so that a token containing another wins. llama.cpp leaves the order of equal lengths
    // unspecified; we take the lower id first.
    std::stable_sort(special_order_.begin(), special_order_.end(),
                     [&](int32_t a, int32_t b) { return text_[a].size() > text_[b].size(); });
}

void Tokenizer::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab())
        throw std::invalid_argument("token id " + std::to_string(id) + " is out of range [0, " +
                                    std::to_string(n_vocab()) + ")");
}

const std::string& Tokenizer::token_text(int32_t id) const {
    check_id(id);
    return text_[id];
}

uint8_t Tokenizer::token_attr(int32_t id) const {
    check_id(id);
    return attr_[id];
}

int32_t Tokenizer::find_token(std::string_view text) const {
    const auto it = id_of_.find(std::string(text));
    return it == id_of_.end() ? kNoToken : it->second;
}

bool Tokenizer::is_eog(int32_t id) const { return std::binary_search(eog_.begin(), eog_.end(), id); }

const std::string& Tokenizer::token_bytes(int32_t id) const {
    check_id(id);
    return piece_[id];
}

const std::string& Tokenizer::token_output(int32_t id, bool special) const {
    static const std::string empty;
    check_id(id);
    if (!special && (attr_[id] & (kAttrControl | kAttrUnknown))) return empty;
    return piece_[id];
}

std::string Tokenizer::detokenize(const std::vector<int32_t>& ids, bool special) const {
    std::string out;
    for (int32_t id : ids) out += token_output(id, special);
    return out;
}

// Special tokens written in the text are cut out before anything else (llama.cpp's tokenizer_st_partition):
// for each special token, longest first, every occurrence in the remaining raw text becomes that token.
std::vector<Tokenizer::Fragment> Tokenizer::partition_special(std::string_view text, bool parse_special) const {
    std::vector<Fragment> frags;
    if (!text.empty()) frags.push_back({kNoToken, 0, text.size()});
    std::vector<Fragment> next;
    for (int32_t id : special_order_) {
        if (!parse_special && (attr_[id] & (kAttrControl | kAttrUnknown))) continue;  // user-defined still apply
        const std::string& needle = text_[id];
        next.clear();
        for (const Fragment& f : frags) {
            if (f.token != kNoToken) {
                next.push_back(f);
                continue;
            }
            size_t pos = f.begin;
            const size_t end = f.begin + f.size;
            for (;;) {
                const size_t hit = text.substr(0, end).find(needle, pos);
                if (hit == std::string_view::npos) break;
                if (hit > pos) next.push_back({kNoToken, pos, hit - pos});
                next.push_back({id, hit, needle.size()});
                pos = hit + needle.size();
            }
            if (pos < end) next.push_back({kNoToken, pos, end - pos});
        }
        frags.swap(next);
    }
    return frags;
}

std::vector<int32_t> Tokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_special && add_bos_) out.push_back(bos_);
    for (const Fragment& f : partition_special(text, parse_special)) {
        if (f.token != kNoToken)
            out.push_back(f.token);
        else
            tokenize_words(text.substr(f.begin, f.size), out);
    }
    if (add_special && add_eos_) out.push_back(eos_);
    return out;
}

void Tokenizer::tokenize_words(std::string_view text, std::vector<int32_t>& out) const {
    const Words words = pre_.split(text);
    BpeWork work;
    // Words repeat a lot in code and prose: a repeated word copies the ids of its first occurrence.
    std::unordered_map<std::string_view, std::pair<size_t, size_t>> seen;  // word -> (first id index, count)
    size_t begin = 0;
    for (size_t end : words.ends) {
        const std::string_view word = std::string_view(words.text).substr(begin, end - begin);
        begin = end;
        auto [it, first_time] = seen.try_emplace(word, out.size(), 0);
        if (!first_time) {
            const auto [start, count] = it->second;
            for (size_t k = 0; k < count; ++k) {
                const int32_t id = out[start + k];
                out.push_back(id);
            }
            continue;
        }
        bpe_word(word, work, out);
        it->second.second = out.size() - it->second.first;
    }
}

// A symbol that is not a token (llama.cpp): each byte of its *encoded* text is looked up as a one-byte token
// and dropped if there is none. With a complete byte-level vocabulary this never happens.
void Tokenizer::emit_fallback(std::string_view bytes, std::vector<int32_t>& out) const {
    for (char b : bytes)
        for (char c : unicode::byte_to_chars(static_cast<uint8_t>(b))) {
            const int32_t id = char_byte_token_[static_cast<uint8_t>(c)];
            if (id != kNoToken) out.push_back(id);
        }
}

void Tokenizer::bpe_word(std::string_view word, BpeWork& work, std::vector<int32_t>& out) const {
    auto emit = [&](int32_t symbol, std::string_view bytes) {
        if (symbol >= 0 && symbol < n_vocab())
            out.push_back(symbol);
        else
            emit_fallback(bytes, out);
    };
    if (pre_.ignore_merges()) {  // a word that is a token stays whole
        std::string encoded;
        for (char b : word) encoded += unicode::byte_to_chars(static_cast<uint8_t>(b));
        if (const int32_t id = find_token(encoded); id != kNoToken) {
            out.push_back(id);
            return;
        }
    }
    if (word.size() == 1) return emit(byte_symbol_[static_cast<uint8_t>(word[0])], word);

    auto& syms = work.symbols;
    auto& heap = work.heap;
    syms.clear();
    heap.clear();
    const int32_t n = static_cast<int32_t>(word.size());
    for (int32_t i = 0; i < n; ++i)
        syms.push_back({byte_symbol_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, uint32_t(i), 1});

    auto add_pair = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const Merge* m = merges_.find(syms[left].id, syms[right].id);
        if (m == nullptr) return;
        heap.push_back({m->rank, left, right, syms[left].id, syms[right].id, m->result});
        std::push_heap(heap.begin(), heap.end(), BpeWork::Later());
    };
    for (int32_t i = 1; i < n; ++i) add_pair(i - 1, i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), BpeWork::Later());
        const BpeWork::Pair p = heap.back();
        heap.pop_back();
        auto& left = syms[p.left];
        auto& right = syms[p.right];
        // Skip pairs made stale by an earlier merge of either side.
        if (left.size == 0 || right.size == 0 || left.id != p.left_id || right.id != p.right_id) continue;
        left.id = p.result;
        left.size += right.size;
        right.size = 0;
        left.next = right.next;
        if (right.next >= 0) syms[right.next].prev = p.left;
        add_pair(left.prev, p.left);
        add_pair(p.left, left.next);
    }
    for (int32_t i = 0; i != -1; i = syms[i].next) emit(syms[i].id, word.substr(syms[i].begin, syms[i].size));
}

StreamDecoder::StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool special)
    : tokenizer_(std::move(tokenizer)), special_(special) {
    if (!tokenizer_) throw std::invalid_argument("StreamDecoder needs a tokenizer");
}

std::string StreamDecoder::feed(int32_t id) {
    pending_ += tokenizer_->token_output(id, special_);
    const size_t ready = pending_.size() - unicode::incomplete_utf8_tail(pending_);
    std::string out = pending_.substr(0, ready);
    pending_.erase(0, ready);
    return out;
}

std::string StreamDecoder::flush() {
    std::string out;
    out.swap(pending_);
    return out;
}

}  // namespace floe
