// Adapter files against a tiny llama model written here: a good adapter loads and runs in the decoder; crafted
// ones (another architecture, a missing half, wrong shapes or types, NaN, names of no projection) and every
// truncation raise GGUFError or ModelError naming the problem, never crash (this runs under ASan too).
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include "check.h"
#include "floe/decoder.h"
#include "floe/lora.h"

using namespace floe;

namespace {

// A GGUF v3 image built from typed metadata and tensors; offsets and alignment computed on write.
class GGUFBuilder {
public:
    GGUFBuilder& str(const std::string& key, const std::string& v) {
        key_(key, 8);
        text(kv_, v);
        return *this;
    }
    GGUFBuilder& u32(const std::string& key, uint32_t v) {
        key_(key, 4);
        raw(kv_, v);
        return *this;
    }
    GGUFBuilder& f32(const std::string& key, float v) {
        key_(key, 6);
        raw(kv_, v);
        return *this;
    }
    // values: f32 numbers, stored as `type` (0 f32, 1 f16, 28 f64; others get zero bytes of their ggml size)
    GGUFBuilder& tensor(const std::string& name, std::vector<int64_t> ne, const std::vector<float>& values,
                        uint32_t type = 0) {
        std::vector<uint8_t> data;
        for (float v : values) {
            if (type == 0) raw(data, v);
            else if (type == 1) raw(data, fp32_to_fp16(v));
            else if (type == 28) raw(data, static_cast<double>(v));
        }
        if (type == 8) data.resize(values.size() / 32 * 34);  // q8_0 blocks
        tensors_.push_back({name, std::move(ne), type, std::move(data)});
        return *this;
    }
    std::vector<uint8_t> bytes() const {
        std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
        raw(out, uint32_t{3});
        raw(out, static_cast<uint64_t>(tensors_.size()));
        raw(out, n_kv_);
        out.insert(out.end(), kv_.begin(), kv_.end());
        uint64_t offset = 0;
        for (const T& t : tensors_) {
            text(out, t.name);
            raw(out, static_cast<uint32_t>(t.ne.size()));
            for (int64_t d : t.ne) raw(out, d);
            raw(out, t.type);
            raw(out, offset);
            offset += (t.data.size() + 31) / 32 * 32;
        }
        for (const T& t : tensors_) {
            while (out.size() % 32) out.push_back(0);
            out.insert(out.end(), t.data.begin(), t.data.end());
        }
        return out;
    }

private:
    struct T {
        std::string name;
        std::vector<int64_t> ne;
        uint32_t type;
        std::vector<uint8_t> data;
    };
    template <typename V>
    static void raw(std::vector<uint8_t>& out, V v) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        out.insert(out.end(), p, p + sizeof v);
    }
    static void text(std::vector<uint8_t>& out, const std::string& s) {
        raw(out, static_cast<uint64_t>(s.size()));
        out.insert(out.end(), s.begin(), s.end());
    }
    void key_(const std::string& key, uint32_t type) {
        text(kv_, key);
        raw(kv_, type);
        ++n_kv_;
    }
    std::vector<uint8_t> kv_;
    uint64_t n_kv_ = 0;
    std::vector<T> tensors_;
};

std::vector<float> values(size_t n, float base) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = base * std::sin(static_cast<float>(i) * 0.7f + base);
    return v;
}

// A llama model of one block: dim, 2 heads, ffn 2 dim, vocab 4.
std::vector<uint8_t> tiny_model(int dim) {
    const int ffn = 2 * dim;
    GGUFBuilder g;
    g.str("general.architecture", "llama").u32("llama.block_count", 1).u32("llama.embedding_length", dim);
    g.u32("llama.attention.head_count", 2).u32("llama.feed_forward_length", ffn).u32("llama.context_length", 64);
    g.tensor("token_embd.weight", {dim, 4}, values(4 * dim, 1.0f)).tensor("output_norm.weight", {dim}, values(dim, 1));
    g.tensor("blk.0.attn_norm.weight", {dim}, values(dim, 1.0f)).tensor("blk.0.ffn_norm.weight", {dim}, values(dim, 1));
    for (const char* p : {"attn_q", "attn_k", "attn_v", "attn_output"})
        g.tensor(std::string("blk.0.") + p + ".weight", {dim, dim}, values(dim * dim, 0.3f));
    g.tensor("blk.0.ffn_gate.weight", {dim, ffn}, values(dim * ffn, 0.2f));
    g.tensor("blk.0.ffn_up.weight", {dim, ffn}, values(dim * ffn, 0.25f));
    g.tensor("blk.0.ffn_down.weight", {ffn, dim}, values(dim * ffn, 0.15f));
    return g.bytes();
}

// Hooks that spoil one part of an otherwise good adapter.
struct AdapterSpec {
    std::string arch = "llama", general_type = "adapter";
    int dim = 8;
    std::string q_a_name = "blk.0.attn_q.weight.lora_a";
    bool with_q_b = true;
    int64_t q_a_cols = 0;  // 0: dim
    uint32_t down_type = 1;
    bool nan = false;
};

std::vector<uint8_t> adapter_file(const AdapterSpec& s) {
    const int r = 2, dim = s.dim, ffn = 2 * s.dim;
    GGUFBuilder g;
    g.str("general.type", s.general_type).str("general.architecture", s.arch).str("adapter.type", "lora");
    g.f32("adapter.lora.alpha", 4.0f);
    const int64_t q_cols = s.q_a_cols ? s.q_a_cols : dim;
    std::vector<float> qa = values(static_cast<size_t>(q_cols * r), 0.5f);
    if (s.nan) qa[3] = NAN;
    g.tensor(s.q_a_name, {q_cols, r}, qa);
    if (s.with_q_b) g.tensor("blk.0.attn_q.weight.lora_b", {r, dim}, values(dim * r, 0.5f));
    g.tensor("blk.0.ffn_down.weight.lora_a", {ffn, r}, values(ffn * r, 0.4f), s.down_type);
    g.tensor("blk.0.ffn_down.weight.lora_b", {r, dim}, values(dim * r, 0.4f), s.down_type);
    return g.bytes();
}

// A scratch directory for the files of this test binary.
class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/floe_lora_test_XXXXXX";
        if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
    }
    ~TempDir() {
        for (const std::string& f : files_) std::remove(f.c_str());
        if (!dir_.empty()) rmdir(dir_.c_str());
    }
    std::string write(const std::string& name, const std::vector<uint8_t>& bytes, size_t n = SIZE_MAX) {
        const std::string path = dir_ + "/" + name;
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                    static_cast<std::streamsize>(std::min(n, bytes.size())));
        files_.push_back(path);
        return path;
    }

private:
    std::string dir_;
    std::vector<std::string> files_;
};

// The error text of loading an adapter file for base ("" when it loads).
std::string load_error(TempDir& tmp, const Model& base, const std::vector<uint8_t>& bytes, size_t n = SIZE_MAX) {
    try {
        Adapter a(tmp.write("adapter.gguf", bytes, n), base);
        return "";
    } catch (const ModelError& e) {
        return std::string("ModelError: ") + e.what();
    } catch (const GGUFError& e) {
        return std::string("GGUFError: ") + e.what();
    }
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(lora_file_good_adapter_runs) {
    TempDir tmp;
    auto model = std::make_shared<Model>(tmp.write("model.gguf", tiny_model(8)));
    auto adapter = std::make_shared<Adapter>(tmp.write("good.gguf", adapter_file({})), *model);
    CHECK(adapter->n_pairs() == 2 && adapter->max_rank() == 2 && adapter->alpha() == 4.0f, "pairs %d rank %d",
          adapter->n_pairs(), adapter->max_rank());
    CHECK(adapter->pair(0, Proj::Q) && adapter->pair(0, Proj::Down) && !adapter->pair(0, Proj::K), "wrong pairs");
    CHECK(adapter->scale(*adapter->pair(0, Proj::Q), 0.5f) == 1.0f, "scale must be 0.5 * 4 / 2");
    Decoder d(model, 16, 2);
    const int32_t tokens[] = {1, 2, 3};
    std::vector<float> base(3 * 4), adapted(3 * 4), again(3 * 4);
    d.eval(tokens, 3, base.data(), true);
    d.set_adapters({{adapter, 1.0f}});
    CHECK(d.cache_stale(), "a swap with a cached prefix must mark the cache stale");
    d.truncate(0);
    d.eval(tokens, 3, adapted.data(), true);
    CHECK(base != adapted, "the adapter changed nothing");
    d.set_adapters({});
    d.truncate(0);
    d.eval(tokens, 3, again.data(), true);
    CHECK(base == again, "removing the adapter must restore the base logits exactly");
}

TEST(lora_file_bad_adapters) {
    TempDir tmp;
    const Model base(tmp.write("model.gguf", tiny_model(8)));
    struct Case {
        const char* what;
        std::function<void(AdapterSpec&)> spoil;
        const char* expect;
    };
    const Case cases[] = {
        {"wrong architecture", [](AdapterSpec& s) { s.arch = "gpt2"; }, "architecture 'gpt2'"},
        {"not an adapter", [](AdapterSpec& s) { s.general_type = "model"; }, "general.type is 'model'"},
        {"missing lora_b", [](AdapterSpec& s) { s.with_q_b = false; }, "attn_q.weight.lora_b' is missing"},
        {"wrong shape", [](AdapterSpec& s) { s.q_a_cols = 9; }, "attn_q.weight.lora_a' has shape [9, 2]"},
        {"f64", [](AdapterSpec& s) { s.down_type = 28; }, "has type f64"},
        {"NaN", [](AdapterSpec& s) { s.nan = true; }, "NaN"},
        {"another base", [](AdapterSpec& s) { s.dim = 16; }, "has shape [16, 2]"},
        {"not a projection", [](AdapterSpec& s) { s.q_a_name = "blk.0.attn_norm.weight.lora_a"; }, "not a projection"},
        {"no such layer", [](AdapterSpec& s) { s.q_a_name = "blk.7.attn_q.weight.lora_a"; }, "does not exist"},
        {"bad suffix", [](AdapterSpec& s) { s.q_a_name = "blk.0.attn_q.weight.lora_c"; }, "unexpected suffix"},
    };
    for (const Case& c : cases) {
        AdapterSpec spec;
        c.spoil(spec);
        const std::string err = load_error(tmp, base, adapter_file(spec));
        CHECK(contains(err, "ModelError") && contains(err, c.expect), "%s: got '%s'", c.what, err.c_str());
    }
}

TEST(lora_file_truncated_everywhere) {
    TempDir tmp;
    const Model base(tmp.write("model.gguf", tiny_model(8)));
    const std::vector<uint8_t> good = adapter_file({});
    CHECK(load_error(tmp, base, good).empty(), "the good adapter must load");
    int loaded = 0;
    for (size_t n = 0; n < good.size(); ++n) {
        const std::string err = load_error(tmp, base, good, n);  // never a crash; an error or, rarely, a load
        loaded += err.empty();
        CHECK(err.empty() || contains(err, "GGUFError"), "prefix %zu: %s", n, err.c_str());
    }
    // the last tensor's data ends in the padding-free tail: every shorter prefix must fail
    CHECK(loaded == 0, "%d truncated files loaded", loaded);
}

TEST(lora_adapter_of_another_shape_rejected_by_decoder) {
    TempDir tmp;
    auto small = std::make_shared<Model>(tmp.write("small.gguf", tiny_model(8)));
    const Model big(tmp.write("big.gguf", tiny_model(16)));
    AdapterSpec spec;
    spec.dim = 16;
    auto adapter = std::make_shared<Adapter>(tmp.write("big_adapter.gguf", adapter_file(spec)), big);
    Decoder d(small, 16, 1);
    bool threw = false;
    try {
        d.set_adapters({{adapter, 1.0f}});
    } catch (const ModelError& e) {
        threw = contains(e.what(), "shape");
    }
    CHECK(threw, "an adapter for another model shape must be refused");
}

// The cache's token list (prefix reuse reads it) follows eval, truncate and a cancelled eval; a stale cache cut to a
// common prefix and extended gives the logits of a fresh run.
TEST(decoder_tokens_follow_the_cache) {
    TempDir tmp;
    auto model = std::make_shared<Model>(tmp.write("model.gguf", tiny_model(8)));
    auto adapter = std::make_shared<Adapter>(tmp.write("good.gguf", adapter_file({})), *model);
    Decoder d(model, 16, 1);
    auto cached = [&d] { return std::vector<int32_t>(d.tokens(), d.tokens() + d.n_past()); };
    const int32_t a[] = {1, 2, 3, 0}, b[] = {3, 1};
    std::vector<float> out(4 * 4), fresh(4), reused(4);
    d.eval(a, 4, out.data(), true);
    d.eval(b, 2, out.data(), false);
    CHECK((cached() == std::vector<int32_t>{1, 2, 3, 0, 3, 1}), "tokens after two evals");
    d.truncate(3);
    CHECK((cached() == std::vector<int32_t>{1, 2, 3}), "tokens after truncate(3)");
    std::atomic<bool> cancel{true};
    bool threw = false;
    try {
        d.eval(b, 2, out.data(), false, &cancel);
    } catch (const Cancelled&) {
        threw = true;
    }
    CHECK(threw && (cached() == std::vector<int32_t>{1, 2, 3}), "a cancelled eval must leave the tokens as they were");
    d.set_adapters({{adapter, 1.0f}});  // stale: positions 0..2 were computed without the adapter
    d.truncate(2);
    d.eval(b, 2, reused.data(), false);  // recomputes {1, 2}, then evaluates {3, 1}
    CHECK((cached() == std::vector<int32_t>{1, 2, 3, 1}) && !d.cache_stale(), "tokens after the recompute");
    d.truncate(0);
    CHECK(d.n_past() == 0 && cached().empty(), "truncate(0) empties the list");
    const int32_t whole[] = {1, 2, 3, 1};
    d.eval(whole, 4, fresh.data(), false);
    CHECK(fresh == reused, "a stale prefix kept and recomputed must give the fresh run's logits exactly");
}
