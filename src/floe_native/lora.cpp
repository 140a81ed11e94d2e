// LoRA adapters (llama.cpp's GGUF LoRA format) and their product. Loading rules, as llama.cpp's loader plus what
// our decoder needs: general.type "adapter", adapter.type "lora", the base's architecture; every tensor named
// <base tensor>.lora_a / .lora_b, the base tensor one of the seven projections of an existing layer; both halves of
// every pair; A = [n_in, r], B = [r, n_out] (ggml order) with the base's n_in, n_out and 1 <= r <= n_in; f32 or f16,
// aligned, finite.
#include "floe/lora.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace floe {

namespace {

constexpr const char* kProjNames[kNumProj] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_gate", "ffn_up", "ffn_down"};
// The arena's order: per layer, the projections as the decoder groups them (those sharing an input), each group's
// A's and then its B's, as a forward pass reads them: lora_up's prefetches running past one B land in the next.
constexpr Proj kReadOrder[][3] = {{Proj::Q, Proj::K, Proj::V}, {Proj::O}, {Proj::Gate, Proj::Up}, {Proj::Down}};
constexpr size_t kGroupSize[] = {3, 1, 2, 1};
constexpr size_t kAlign = 64;                  // every matrix starts on a cache line
constexpr size_t kHugePage = size_t{2} << 20;  // arenas this big are huge-page aligned: fewer TLB misses per token

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

// A validated pair; its a and b_panels still point into the file (B not yet packed) until the arena is filled.
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
    p.b_panels = b.data;
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

size_t esize(QType t) { return t == QType::F16 ? sizeof(fp16_t) : sizeof(float); }
size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

uint8_t* alloc_arena(size_t bytes) {
    const size_t align = bytes >= kHugePage ? kHugePage : kAlign;
    const size_t size = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
    void* p = std::aligned_alloc(align, size);
    if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // A hint (THP may be off, which only costs speed). Measured on Zen4 with cold caches: an f32 r=8 adapter's A and
    // B steps 0.81 -> 0.61 ms per token; the first arena may pay THP compaction at load (~35 ms once, here).
    if (align == kHugePage) madvise(p, size, MADV_HUGEPAGE);
#endif
    return static_cast<uint8_t*>(p);
}

}  // namespace

size_t lora_panels_bytes(QType type, int r, int64_t n_out) {
    return static_cast<size_t>((n_out + kLoraPanel - 1) / kLoraPanel) * kLoraPanel * r * esize(type);
}

namespace {

template <class T>
void pack_panels(const T* b, int r, int64_t n_out, T* panels) {
    for (int64_t o = 0; o < n_out; ++o)
        for (int j = 0; j < r; ++j) panels[((o / kLoraPanel) * r + j) * kLoraPanel + o % kLoraPanel] = b[o * r + j];
}

}  // namespace

void pack_lora_b(QType type, const void* b, int r, int64_t n_out, void* panels) {
    std::memset(panels, 0, lora_panels_bytes(type, r, n_out));  // the rows past n_out
    if (type == QType::F16)
        pack_panels(static_cast<const fp16_t*>(b), r, n_out, static_cast<fp16_t*>(panels));
    else
        pack_panels(static_cast<const float*>(b), r, n_out, static_cast<float*>(panels));
}

void Adapter::FreeArena::operator()(void* p) const { std::free(p); }

const char* proj_name(Proj p) { return kProjNames[static_cast<int>(p)]; }

std::string model_shape(const ModelConfig& c) {
    return c.arch + " L" + std::to_string(c.n_layers) + " d" + std::to_string(c.dim) + " kv" +
           std::to_string(c.kv_dim()) + " ffn" + std::to_string(c.ffn_dim);
}

Adapter::Adapter(const std::string& path, const Model& base) {
    const GGUFFile f(path);
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
    fill_arena();
}

// Copies every A and packs every B into one arena in kReadOrder; the pairs then point there and the file closes.
void Adapter::fill_arena() {
    size_t bytes = 0;
    const auto each = [&](auto&& f) {  // f(pair, is_b) in arena order
        for (auto& layer : layers_)
            for (size_t g = 0; g < std::size(kReadOrder); ++g)
                for (int is_b = 0; is_b < 2; ++is_b)
                    for (size_t i = 0; i < kGroupSize[g]; ++i)
                        if (LoraPair& p = layer[static_cast<size_t>(kReadOrder[g][i])]; p.r > 0) f(p, is_b != 0);
    };
    each([&](const LoraPair& p, bool is_b) {
        bytes += aligned(is_b ? lora_panels_bytes(p.b_type, p.r, p.n_out) : p.r * p.n_in * esize(p.a_type));
    });
    arena_.reset(alloc_arena(bytes));
    size_t at = 0;
    each([&](LoraPair& p, bool is_b) {
        uint8_t* dst = arena_.get() + at;
        if (is_b) {
            pack_lora_b(p.b_type, p.b_panels, p.r, p.n_out, dst);
            p.b_panels = dst;
            at += aligned(lora_panels_bytes(p.b_type, p.r, p.n_out));
        } else {
            std::memcpy(dst, p.a, p.r * p.n_in * esize(p.a_type));
            p.a = dst;
            at += aligned(p.r * p.n_in * esize(p.a_type));
        }
    });
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

LoraTerm lora_term(const LoraPair& pair, float scale, const float* t) {
    return {pair.b_type, pair.b_panels, pair.r, scale, t};
}

void lora_apply(const Kernels& k, const LoraSite* sites, int n_sites, int n, ThreadPool& pool) {
    int64_t panels = 0;
    for (int s = 0; s < n_sites; ++s)
        if (sites[s].n_terms > 0) panels += (sites[s].rows + kLoraPanel - 1) / kLoraPanel;
    pool.run([&](int tid, int nth) {
        // This thread's contiguous share of all panels, walked site by site.
        const int64_t c0 = panels * tid / nth, c1 = panels * (tid + 1) / nth;
        int64_t first = 0;  // the site's first panel
        for (int s = 0; s < n_sites && first < c1; ++s) {
            const LoraSite& site = sites[s];
            if (site.n_terms == 0) continue;
            const int64_t site_panels = (site.rows + kLoraPanel - 1) / kLoraPanel;
            const int64_t lo = std::max(c0, first) - first, hi = std::min(c1, first + site_panels) - first;
            first += site_panels;
            if (lo < hi) k.lora_up(site.terms, site.n_terms, site.rows, lo, hi, n, site.y, site.ldy);
        }
    });
}

}  // namespace floe
