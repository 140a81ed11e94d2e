// Tokenizer pieces without a model file: Unicode helpers, pre-tokenizer splits, and BPE / special tokens /
// streaming on a toy vocabulary written as an in-memory GGUF. (Ids against llama.cpp: tests/test_tokenizer.py.)
#include <cstring>
#include <stdexcept>

#include "check.h"
#include "floe/gguf.h"
#include "floe/pretokenize.h"
#include "floe/tokenizer.h"
#include "floe/unicode.h"

using namespace floe;

namespace {

// Writes the metadata-only GGUF v3 image the tokenizer is built from.
class GgufImage {
public:
    void str(const std::string& key, const std::string& v) { kv(key, 8), put_str(v); }
    void u32(const std::string& key, uint32_t v) { kv(key, 4), put(v); }
    void boolean(const std::string& key, bool v) { kv(key, 7), put(uint8_t(v)); }
    void strings(const std::string& key, const std::vector<std::string>& v) {
        kv(key, 9), put(uint32_t(8)), put(uint64_t(v.size()));
        for (const auto& s : v) put_str(s);
    }
    void i32s(const std::string& key, const std::vector<int32_t>& v) {
        kv(key, 9), put(uint32_t(5)), put(uint64_t(v.size()));
        for (int32_t x : v) put(x);
    }
    std::string bytes() const {
        std::string out = "GGUF";
        append(out, uint32_t(3)), append(out, uint64_t(0)), append(out, uint64_t(n_kv_));
        return out + body_;
    }

private:
    template <typename T>
    static void append(std::string& s, T v) { s.append(reinterpret_cast<const char*>(&v), sizeof v); }
    template <typename T>
    void put(T v) { append(body_, v); }
    void put_str(const std::string& s) { put(uint64_t(s.size())), body_ += s; }
    void kv(const std::string& key, uint32_t type) { put_str(key), put(type), ++n_kv_; }
    std::string body_;
    size_t n_kv_ = 0;
};

// Specials, then the 256 byte characters (id 4 + byte), then merged tokens.
const std::vector<std::string> kSpecials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"};
const std::vector<std::string> kMerged = {"ll", "he", "hell", "hello", "\xC4\xA0w"};  // "Ġw" = " w"
const std::vector<std::string> kMerges = {"l l", "h e", "he ll", "hell o", "\xC4\xA0 w", "x y"};  // "xy": no token

int32_t byte_id(char c) { return 4 + static_cast<uint8_t>(c); }
int32_t merged_id(const std::string& t) {
    for (size_t i = 0; i < kMerged.size(); ++i)
        if (kMerged[i] == t) return static_cast<int32_t>(4 + 256 + i);
    return -1;
}

struct ToyModel {
    std::string image;
    std::shared_ptr<Tokenizer> tok;
    explicit ToyModel(const std::string& pre = "smollm", bool add_bos = false) {
        std::vector<std::string> tokens = kSpecials;
        std::vector<int32_t> types = {3, 3, 3, 4};
        for (int b = 0; b < 256; ++b) tokens.push_back(unicode::byte_to_chars(uint8_t(b))), types.push_back(1);
        for (const auto& t : kMerged) tokens.push_back(t), types.push_back(1);
        GgufImage g;
        g.str("tokenizer.ggml.model", "gpt2");
        g.str("tokenizer.ggml.pre", pre);
        g.strings("tokenizer.ggml.tokens", tokens);
        g.i32s("tokenizer.ggml.token_type", types);
        g.strings("tokenizer.ggml.merges", kMerges);
        g.u32("tokenizer.ggml.bos_token_id", 1);
        g.u32("tokenizer.ggml.eos_token_id", 2);
        g.boolean("tokenizer.ggml.add_bos_token", add_bos);
        image = g.bytes();
        GGUFFile file(reinterpret_cast<const uint8_t*>(image.data()), image.size());
        tok = std::make_shared<Tokenizer>(file);
    }
};

std::vector<std::string> words(const std::string& pre, const std::string& text) {
    const Words w = PreTokenizer(pre).split(text);
    std::vector<std::string> out;
    size_t begin = 0;
    for (size_t end : w.ends) out.push_back(w.text.substr(begin, end - begin)), begin = end;
    return out;
}

template <typename F>
bool throws(F f) {
    try {
        f();
    } catch (const std::exception&) {
        return true;
    }
    return false;
}

}  // namespace

TEST(unicode_flags) {
    using namespace unicode;
    CHECK(flags('a') == kLetter && flags('7') == kNumber && flags('!') == kPunctuation, "ascii");
    CHECK(flags(' ') == (kSeparator | kWhitespace) && flags('\n') == (kControl | kWhitespace), "space");
    CHECK(flags(0x4E16) == kLetter && flags(0x0663) == kNumber && flags(0x0301) == kMark, "non-ascii");
    CHECK(flags(0x1F389) == kSymbol && flags(0x0378) == kUndefined && flags(0x110000) == kUndefined, "other");
    CHECK(flags(0x2FFC) == kSymbol, "Unicode 15.1 data (%s)", data_version());
}

TEST(utf8_decoding_matches_llama_cpp) {
    using unicode::decode_utf8;
    CHECK((decode_utf8("a\xC3\xA9\xE4\xB8\x96\xF0\x9F\x8E\x89") == std::vector<uint32_t>{'a', 0xE9, 0x4E16, 0x1F389}),
          "valid");
    CHECK((decode_utf8("\xFF\x80" "a\xC3") == std::vector<uint32_t>{0xFFFD, 0xFFFD, 'a', 0xFFFD}), "malformed");
    CHECK((decode_utf8("\xC0\x80\xED\xA0\x80") == std::vector<uint32_t>{0, 0xD800}), "overlong and surrogate kept");
    CHECK(decode_utf8("\xF4\x90\x80\x80") == std::vector<uint32_t>(4, 0xFFFD), "above U+10FFFF");
    std::string s;
    for (uint32_t cp : {0x24u, 0xA2u, 0x20ACu, 0x10348u, 0xD800u}) unicode::append_utf8(s, cp);
    CHECK(s == "\x24\xC2\xA2\xE2\x82\xAC\xF0\x90\x8D\x88\xED\xA0\x80", "encode");
}

TEST(utf8_incomplete_tail) {
    using unicode::incomplete_utf8_tail;
    CHECK(incomplete_utf8_tail("") == 0 && incomplete_utf8_tail("abc") == 0, "ascii");
    CHECK(incomplete_utf8_tail("a\xC3") == 1 && incomplete_utf8_tail("\xE4\xB8") == 2, "partial");
    CHECK(incomplete_utf8_tail("\xF0\x9F\x8E") == 3 && incomplete_utf8_tail("\xF0\x9F\x8E\x89") == 0, "4-byte");
    CHECK(incomplete_utf8_tail("\xC3\xA9") == 0 && incomplete_utf8_tail("\x80") == 0, "complete or stray");
    CHECK(incomplete_utf8_tail("\xED\xA0") == 0 && incomplete_utf8_tail("\xF4\x90") == 0, "never valid");
    CHECK(incomplete_utf8_tail("\xE0\x80") == 0 && incomplete_utf8_tail("\xC1") == 0, "overlong");
}

TEST(byte_level_mapping) {
    CHECK(unicode::byte_to_chars(' ') == "\xC4\xA0" && unicode::byte_to_chars('a') == "a", "space is U+0120");
    for (int b = 0; b < 256; ++b) {
        const std::vector<uint32_t> cps = unicode::decode_utf8(unicode::byte_to_chars(uint8_t(b)));
        CHECK(cps.size() == 1 && unicode::chars_to_byte(cps[0]) == b, "byte %d round trip", b);
    }
    CHECK(unicode::chars_to_byte(0x4E16) == -1 && unicode::chars_to_byte(' ') == -1, "not a byte character");
}

TEST(pretokenizer_splits) {
    using V = std::vector<std::string>;
    CHECK((words("smollm", "Hello 123  world\n") == V{"Hello", " ", "1", "2", "3", " ", " world", "\n"}), "smollm");
    CHECK((words("gpt-2", "I'm  a\t42!! ") == V{"I", "'m", " ", " a", "\t", "42", "!!", " "}), "gpt2");
    CHECK((words("llama-bpe", "12345 x'LL\r\n\n  y") == V{"123", "45", " x", "'LL", "\r\n\n", " ", " y"}), "llama3");
    CHECK((words("qwen2", "12 ab") == V{"1", "2", " ab"}), "qwen2");
    CHECK((words("default", "a+=1000;") == V{"a", "+=", "100", "0", ";"}), "default");
    CHECK(words("smollm", "").empty(), "empty");
    CHECK(words("smollm", "\xFF") == V{"\xEF\xBF\xBD"}, "malformed byte becomes U+FFFD");
    CHECK(throws([] { PreTokenizer p("no-such-pre"); }), "unknown name");
}

TEST(bpe_merges_by_rank) {
    ToyModel m;
    const Tokenizer& t = *m.tok;
    CHECK(t.n_vocab() == 4 + 256 + 5 && t.pre() == "smollm", "vocab");
    const std::vector<int32_t> want = {merged_id("hello"), merged_id("\xC4\xA0w"), byte_id('o'), byte_id('r'),
                                       byte_id('l'), byte_id('d')};
    CHECK(t.tokenize("hello world") == want, "hello world");
    CHECK(t.tokenize("xy") == (std::vector<int32_t>{byte_id('x'), byte_id('y')}), "merge result not a token");
    CHECK(t.tokenize("").empty() && t.tokenize("", true).empty(), "empty; add_bos_token is false");
    CHECK(ToyModel("smollm", true).tok->tokenize("he", true) == (std::vector<int32_t>{1, merged_id("he")}), "BOS");
    CHECK(t.detokenize(t.tokenize("hello world \xE4\xB8\x96")) == "hello world \xE4\xB8\x96", "round trip");
}

TEST(special_tokens) {
    ToyModel m;
    const Tokenizer& t = *m.tok;
    const std::vector<int32_t> ids = t.tokenize("<|im_start|>he<|im_end|><tool>");
    CHECK((ids == std::vector<int32_t>{1, merged_id("he"), 2, 3}), "parsed");
    const std::vector<int32_t> plain = t.tokenize("<|im_start|>he<tool>", true, false);
    CHECK(plain.size() > 3 && plain.front() == byte_id('<') && plain.back() == 3, "control as text, user-defined kept");
    CHECK(t.detokenize(ids) == "he<tool>" && t.detokenize(ids, true) == "<|im_start|>he<|im_end|><tool>", "render");
    CHECK(t.is_eog(2) && t.is_eog(0) && !t.is_eog(1), "end of generation: eos, <|endoftext|>");
    CHECK(throws([&] { t.detokenize({5, t.n_vocab()}); }) && throws([&] { t.token_bytes(-1); }), "bad id");
}

TEST(stream_decoder) {
    ToyModel m;
    StreamDecoder d(m.tok);
    CHECK(d.feed(byte_id('a')) == "a", "ascii");
    CHECK(d.feed(byte_id('\xC3')) == "" && d.pending() == 1, "held back");
    CHECK(d.feed(byte_id('\xA9')) == "\xC3\xA9" && d.pending() == 0, "completed");
    CHECK(d.feed(1) == "", "control skipped");
    CHECK(d.feed(byte_id('\xE4')) == "" && d.flush() == "\xE4" && d.pending() == 0, "flush");
    CHECK(throws([&] { d.feed(-3); }) && d.pending() == 0, "bad id");
    CHECK(StreamDecoder(m.tok, true).feed(1) == "<|im_start|>", "control rendered");
}

TEST(tokenizer_metadata_errors) {
    auto build = [](const GgufImage& g) {
        const std::string img = g.bytes();
        GGUFFile file(reinterpret_cast<const uint8_t*>(img.data()), img.size());
        Tokenizer t(file);
    };
    auto with_model = [](const std::string& model) {
        GgufImage g;
        g.str("tokenizer.ggml.model", model);
        return g;
    };
    CHECK(throws([&] { build(with_model("gpt2")); }), "missing tokens");
    GgufImage spm = with_model("llama");
    spm.strings("tokenizer.ggml.tokens", {"a", "b"});
    CHECK(throws([&] { build(spm); }), "SentencePiece not supported");
    GgufImage dup = with_model("gpt2");
    dup.strings("tokenizer.ggml.tokens", {"a", "a"});
    dup.strings("tokenizer.ggml.merges", {});
    CHECK(throws([&] { build(dup); }), "duplicate token");
    GgufImage bad_merges = with_model("gpt2");
    bad_merges.strings("tokenizer.ggml.tokens", {"a", "b"});
    bad_merges.i32s("tokenizer.ggml.merges", {1});
    CHECK(throws([&] { build(bad_merges); }), "merges of the wrong type");
    GgufImage ok = with_model("gpt2");
    ok.strings("tokenizer.ggml.tokens", {"a", "b"});
    ok.strings("tokenizer.ggml.merges", {"a b"});
    CHECK(!throws([&] { build(ok); }), "minimal vocabulary");
}
