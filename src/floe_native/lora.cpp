// LoRA adapters (llama.cpp's GGUF LoRA format) and their product. Loading rules, as llama.cpp's loader plus what
// our decoder needs: general.type "adapter", adapter.type "lora", the base's architecture; every tensor named
// <base tensor>.lora_a / .lora_b, the base tensor one of the seven projections of an existing layer; both halves of
// every pair; A = [n_in, r], B = [r, n_out] (ggml order) with the base's n_in, n_out and 1 <= r <= n_in; f32 or f16,
// aligned, finite.
#include "floe/lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace floe {

namespace {

constexpr const char* kProjNames[kNumProj] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_gate", "ffn_up", "ffn_down"};
constexpr int64_t kRowChunk = 16;   // rows handed to threads together, as matmul's chunks
constexpr int64_t kRowBlock = 256;  // rows of one gemm call (fewer calls; scratch stays small)

const Weight& base_weight(const LayerWeights& l, Proj p) {
    const Weight* w[kNumProj] = {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down};
    return *w[static_cast<int>(p)];
}

std::string ggml_type_name(uint32_t t) {
    switch (t) {
        case 0: return "f32";
        case 1: return "f16";
        case 28: return "f64";
        case 30: return "bf16";
        default: return "ggml type " + std::to_string(t) + " (quantized)";
    }
}

bool ends_with(const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// "blk.<layer>.<projection>.weight" -> layer, projection; false for any other name.
bool parse_base_name(const std::string& name, int n_layers, int* layer, Proj* proj) {
    if (name.rfind("blk.", 0) != 0 || !ends_with(name, ".weight")) return false;
    const size_t dot = name.find('.', 4);
    if (dot == std::string::npos || dot == 4 || dot - 4 > 4) return false;
    int l = 0;
    for (size_t i = 4; i < dot; ++i) {
        if (name[i] < '0' || name[i] > '9') return false;
        l = l * 10 + (name[i] - '0');
    }
    if (l >= n_layers || (name[4] == '0' && dot > 5)) return false;
    const std::string mid = name.substr(dot + 1, name.size() - dot - 1 - std::strlen(".weight"));
    for (int p = 0; p < kNumProj; ++p)
        if (mid == kProjNames[p]) {
            *layer = l;
            *proj = static_cast<Proj>(p);
            return true;
        }
    return false;
}

[[noreturn]] void bad(const std::string& tensor, const std::string& why) {
    throw ModelError("LoRA tensor '" + tensor + "' " + why);
}

std::string shape_text(const GGUFTensor& t) {
    std::string s = "[";
    for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
    return s + "]";
}

// Type, alignment and values of one half of a pair.
QType check_values(const GGUFTensor& t) {
    if (t.type != static_cast<uint32_t>(QType::F32) && t.type != static_cast<uint32_t>(QType::F16))
        bad(t.name, "has type " + ggml_type_name(t.type) + "; LoRA tensors must be f32 or f16");
    const QType type = static_cast<QType>(t.type);
    const size_t esize = type == QType::F32 ? sizeof(float) : sizeof(fp16_t);
    if (reinterpret_cast<uintptr_t>(t.data) % esize != 0) bad(t.name, "is misaligned in the file");
    const uint64_t n = t.nbytes / esize;
    for (uint64_t i = 0; i < n; ++i) {
        bool finite;
        if (type == QType::F32) {
            float v;
            std::memcpy(&v, t.data + i * esize, sizeof v);
            finite = std::isfinite(v);
        } else {
            fp16_t h;
            std::memcpy(&h, t.data + i * esize, sizeof h);
            finite = (h & 0x7c00) != 0x7c00;
        }
        if (!finite) bad(t.name, "holds a NaN or infinite value at index " + std::to_string(i));
    }
    return type;
}

LoraPair make_pair(const GGUFTensor& a, const GGUFTensor& b, const Weight& w) {
    LoraPair p;
    p.a_type = check_values(a);
    p.b_type = check_values(b);
    if (a.n_dims != 2 || b.n_dims != 2)
        bad(a.n_dims != 2 ? a.name : b.name, "must be 2-D, has shape " + shape_text(a.n_dims != 2 ? a : b));
    if (a.ne[0] != w.cols || a.ne[1] < 1 || a.ne[1] > w.cols)
        bad(a.name, "has shape " + shape_text(a) + ", expected [" + std::to_string(w.cols) + ", r] with r in 1.." +
                        std::to_string(w.cols) + " (hint: an adapter for another base model?)");
    if (b.ne[0] != a.ne[1] || b.ne[1] != w.rows)
        bad(b.name, "has shape " + shape_text(b) + ", expected [" + std::to_string(a.ne[1]) + ", " +
                        std::to_string(w.rows) + "] (r of lora_a, n_out of the base tensor)");
    p.a = a.data;
    p.b = b.data;
    p.r = static_cast<int>(a.ne[1]);
    p.n_in = w.cols;
    p.n_out = w.rows;
    return p;
}

std::string required_string(const GGUFFile& f, const std::string& key, const std::string& want) {
    const GGUFValue* v = f.find(key);
    if (v == nullptr) throw ModelError("not a LoRA adapter: metadata " + key + " is missing (expected '" + want + "')");
    if (v->type != GGUFType::STRING) throw ModelError("not a LoRA adapter: metadata " + key + " is not a string");
    return std::get<std::string>(v->scalar);
}

}  // namespace

const char* proj_name(Proj p) { return kProjNames[static_cast<int>(p)]; }

std::string model_shape(const ModelConfig& c) {
    return c.arch + " L" + std::to_string(c.n_layers) + " d" + std::to_string(c.dim) + " kv" +
           std::to_string(c.kv_dim()) + " ffn" + std::to_string(c.ffn_dim);
}

Adapter::Adapter(const std::string& path, const Model& base) : file_(std::make_unique<GGUFFile>(path)) {
    const GGUFFile& f = *file_;
    const ModelConfig& c = base.config();
    if (const std::string t = required_string(f, "general.type", "adapter"); t != "adapter")
        throw ModelError("not a LoRA adapter: general.type is '" + t + "', expected 'adapter'");
    if (const std::string t = required_string(f, "adapter.type", "lora"); t != "lora")
        throw ModelError("adapter.type is '" + t + "'; only 'lora' adapters are supported");
    if (const std::string a = required_string(f, "general.architecture", c.arch); a != c.arch)
        throw ModelError("adapter architecture '" + a + "' does not match the base model's '" + c.arch + "'");
    const double alpha = f.get_float("adapter.lora.alpha", 0.0);
    if (!std::isfinite(alpha) || std::fabs(alpha) > 1e30) throw ModelError("adapter.lora.alpha is not a finite number");
    alpha_ = static_cast<float>(alpha);
    base_shape_ = model_shape(c);

    // Pair the halves by base tensor name.
    std::map<std::pair<int, int>, std::pair<const GGUFTensor*, const GGUFTensor*>> halves;
    for (const GGUFTensor& t : f.tensors()) {
        const bool is_a = ends_with(t.name, ".lora_a");
        if (!is_a && !ends_with(t.name, ".lora_b")) bad(t.name, "has an unexpected suffix (expected .lora_a or .lora_b)");
        const std::string base_name = t.name.substr(0, t.name.size() - std::strlen(".lora_a"));
        int layer = 0;
        Proj proj = Proj::Q;
        if (!parse_base_name(base_name, c.n_layers, &layer, &proj))
            bad(t.name, base.file().find_tensor(base_name)
                            ? "adapts '" + base_name + "', which is not a projection this decoder adapts (attn_q, "
                              "attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down)"
                            : "adapts '" + base_name + "', which does not exist in the base model (hint: an adapter "
                              "for another base model?)");
        auto& h = halves[{layer, static_cast<int>(proj)}];
        (is_a ? h.first : h.second) = &t;
    }
    if (halves.empty()) throw ModelError("the adapter holds no LoRA tensors");

    layers_.resize(static_cast<size_t>(c.n_layers));
    for (const auto& [key, h] : halves) {
        const std::string base_name = "blk." + std::to_string(key.first) + "." + kProjNames[key.second] + ".weight";
        if (h.first == nullptr) bad(base_name + ".lora_a", "is missing (its lora_b is present)");
        if (h.second == nullptr) bad(base_name + ".lora_b", "is missing (its lora_a is present)");
        const Weight& w = base_weight(base.layer(key.first), static_cast<Proj>(key.second));
        LoraPair& p = layers_[static_cast<size_t>(key.first)][static_cast<size_t>(key.second)];
        p = make_pair(*h.first, *h.second, w);
        ++n_pairs_;
        max_rank_ = std::max(max_rank_, p.r);
    }
    file_->drop_metadata();
}

const LoraPair* Adapter::pair(int layer, Proj p) const {
    if (layer < 0 || layer >= n_layers()) return nullptr;
    const LoraPair& lp = layers_[static_cast<size_t>(layer)][static_cast<size_t>(p)];
    return lp.r > 0 ? &lp : nullptr;
}

float Adapter::scale(const LoraPair& pair, float user_scale) const {
    return alpha_ != 0.0f ? user_scale * alpha_ / static_cast<float>(pair.r) : user_scale;
}

std::vector<std::pair<std::string, int>> Adapter::targets() const {
    std::vector<std::pair<std::string, int>> out;
    for (int l = 0; l < n_layers(); ++l)
        for (int p = 0; p < kNumProj; ++p)
            if (const LoraPair* lp = pair(l, static_cast<Proj>(p)))
                out.emplace_back("blk." + std::to_string(l) + "." + kProjNames[p] + ".weight", lp->r);
    return out;
}

MatmulJob lora_a_job(const LoraPair& pair, float* t) {
    return {pair.a_type, pair.a, pair.r, t, static_cast<size_t>(pair.r)};
}

size_t lora_scratch_floats(int n, int n_threads) {
    return 2 * static_cast<size_t>(kRowBlock) * n * n_threads;  // per thread: tmp + delta of kRowBlock rows x n
}

namespace {

// Rows [r0, r0 + nr) of one site: tmp = B t per term, delta = sum of scale * tmp, then y += delta.
void apply_rows(const Kernels& k, const LoraSite& site, int64_t r0, int nr, int n, float* tmp, float* delta) {
    for (int i = 0; i < site.n_terms; ++i) {
        const LoraTerm& term = site.terms[i];
        const LoraPair& p = *term.pair;
        const size_t ldb = row_size(p.b_type, p.r);
        k.gemm(p.b_type)(p.r, static_cast<const char*>(p.b) + r0 * ldb, ldb, nr, term.t, p.r * sizeof(float), n, tmp,
                         nr);
        for (int64_t j = 0; j < static_cast<int64_t>(nr) * n; ++j)
            delta[j] = i == 0 ? term.scale * tmp[j] : delta[j] + term.scale * tmp[j];
    }
    for (int c = 0; c < n; ++c)
        for (int row = 0; row < nr; ++row) site.y[c * site.ldy + r0 + row] += delta[c * nr + row];
}

}  // namespace

void lora_apply(const Kernels& k, const LoraSite* sites, int n_sites, int n, ThreadPool& pool,
                std::vector<float>& scratch) {
    const size_t per_thread = lora_scratch_floats(n, 1);
    if (scratch.size() < per_thread * pool.size()) scratch.resize(per_thread * pool.size());
    int64_t chunks = 0;
    for (int s = 0; s < n_sites; ++s)
        if (sites[s].n_terms > 0) chunks += (sites[s].rows + kRowChunk - 1) / kRowChunk;
    pool.run([&](int tid, int nth) {
        float* tmp = &scratch[per_thread * tid];
        float* delta = tmp + per_thread / 2;
        // This thread's contiguous share of all chunks, walked site by site in blocks of up to kRowBlock rows.
        const int64_t c0 = chunks * tid / nth, c1 = chunks * (tid + 1) / nth;
        int64_t first = 0;  // the site's first chunk
        for (int s = 0; s < n_sites && first < c1; ++s) {
            const LoraSite& site = sites[s];
            if (site.n_terms == 0) continue;
            const int64_t site_chunks = (site.rows + kRowChunk - 1) / kRowChunk;
            const int64_t lo = std::max(c0, first) - first, hi = std::min(c1, first + site_chunks) - first;
            first += site_chunks;
            const int64_t end = std::min(site.rows, hi * kRowChunk);
            for (int64_t r0 = lo * kRowChunk; r0 < end; r0 += kRowBlock)
                apply_rows(k, site, r0, static_cast<int>(std::min(kRowBlock, end - r0)), n, tmp, delta);
        }
    });
}

}  // namespace floe
