// The forward pass, top to bottom (shapes for a batch of n tokens):
//   x[n][dim] = embed(tokens)
//   per layer:  h = rmsnorm(x) ; q,k,v = h Wq, h Wk, h Wv ; rope(q, k) ; cache k, v
//               (every projection h W also adds the LoRA terms sum_i s_i B_i (A_i h) of the active adapters)
//               att = softmax(q K^T / sqrt(hd)) V (causal, GQA) ; x += att Wo
//               h = rmsnorm(x) ; x += (silu(h Wgate) * h Wup) Wdown
//   logits = rmsnorm(x) Wout
#include "floe/decoder.h"

#include <chrono>
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <string>

#include "floe/matmul.h"

namespace floe {

namespace {

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

fp16_t* calloc_f16(size_t n) {
    auto* p = static_cast<fp16_t*>(std::calloc(n, sizeof(fp16_t)));
    if (p == nullptr) throw std::bad_alloc();
    return p;
}

}  // namespace

Decoder::Decoder(std::shared_ptr<const Model> model, int n_ctx, int n_threads, const Kernels& kernels)
    : model_(std::move(model)), kern_(kernels), n_ctx_(n_ctx), pool_(n_threads), kcache_(nullptr, std::free),
      vcache_(nullptr, std::free) {
    const ModelConfig& c = config();
    if (n_ctx < 1 || n_ctx > (1 << 20)) throw std::invalid_argument("n_ctx must be in 1..1048576");
    if (n_threads < 1 || n_threads > 256) throw std::invalid_argument("threads must be in 1..256");
    const size_t cache_values = static_cast<size_t>(c.n_layers) * static_cast<size_t>(n_ctx) * c.kv_dim();
    kcache_.reset(calloc_f16(cache_values));
    vcache_.reset(calloc_f16(cache_values));
    const size_t B = kMaxBatch;
    x_.resize(B * c.dim);
    xb_.resize(B * c.dim);
    q_.resize(B * c.dim);
    kv_new_.resize(B * c.kv_dim() * 2);
    att_.resize(B * c.dim);
    hb_.resize(B * c.ffn_dim);
    hb2_.resize(B * c.ffn_dim);
    scores_.resize(static_cast<size_t>(pool_.size()) * (c.n_heads / c.n_kv_heads) * n_ctx);
    cs_.resize(B * c.head_dim);
    tokens_.resize(static_cast<size_t>(n_ctx));
}

fp16_t* Decoder::k_cache(int layer, int pos) const {
    return kcache_.get() + (static_cast<size_t>(layer) * n_ctx_ + pos) * config().kv_dim();
}

fp16_t* Decoder::v_cache(int layer, int dim) const {
    return vcache_.get() + (static_cast<size_t>(layer) * config().kv_dim() + dim) * n_ctx_;
}

void Decoder::truncate(int n_past) {
    if (n_past < 0 || n_past > n_past_) throw std::invalid_argument("truncate: n_past must be in 0..n_past()");
    n_past_ = n_past;
}

void Decoder::eval(const int32_t* tokens, int n, float* logits, bool all_logits, const std::atomic<bool>* cancel,
                   int64_t deadline_ns) {
    const ModelConfig& c = config();
    if (n < 1) throw std::invalid_argument("eval needs at least one token");
    for (int i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= c.n_vocab)
            throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " is outside the vocabulary (0.." +
                                        std::to_string(c.n_vocab - 1) + ")");
    if (n > n_ctx_ - n_past_)
        throw ContextFull("context full: " + std::to_string(n_past_) + " + " + std::to_string(n) + " tokens exceed n_ctx " +
                          std::to_string(n_ctx_));
    if (stale_) recompute_prefix(cancel, deadline_ns);
    std::copy(tokens, tokens + n, tokens_.begin() + n_past_);  // past n_past: kept only once the eval succeeds
    for (int done = 0; done < n; done += kMaxBatch) {
        const int b = std::min(kMaxBatch, n - done);
        float* out = all_logits ? logits + static_cast<size_t>(done) * c.n_vocab : logits;
        // only the pass holding the last token produces logits unless all are wanted
        const bool want = all_logits || done + b == n;
        forward(tokens + done, b, n_past_ + done, want ? out : nullptr, all_logits, cancel, deadline_ns);
    }
    n_past_ += n;
}

void Decoder::forward(const int32_t* tokens, int n, int pos, float* logits, bool all_logits,
                      const std::atomic<bool>* cancel, int64_t deadline_ns) {
    const ModelConfig& c = config();
    const Model& m = *model_;
    const int dim = c.dim, kv_dim = c.kv_dim(), hd = c.head_dim;
    const Weight& embd = m.token_embd();
    for (int i = 0; i < n; ++i)
        ref::dequantize(embd.type, static_cast<const char*>(embd.data) + row_size(embd.type, dim) * tokens[i],
                        &x_[static_cast<size_t>(i) * dim], dim);
    for (int i = 0; i < n; ++i) rope_table(&cs_[static_cast<size_t>(i) * hd], pos + i, hd, c.rope_base);

    float* k_new = kv_new_.data();
    float* v_new = kv_new_.data() + static_cast<size_t>(n) * kv_dim;
    for (int l = 0; l < c.n_layers; ++l) {
        if ((cancel && cancel->load(std::memory_order_relaxed)) || (deadline_ns && now_ns() > deadline_ns))
            throw Cancelled("evaluation cancelled at layer " + std::to_string(l));
        const LayerWeights& w = m.layer(l);

        for (int i = 0; i < n; ++i) kern_.rmsnorm(&xb_[i * dim], &x_[i * dim], w.attn_norm, dim, c.rms_eps);
        const MatmulJob qkv[] = {{w.wq.type, w.wq.data, dim, q_.data(), static_cast<size_t>(dim)},
                                 {w.wk.type, w.wk.data, kv_dim, k_new, static_cast<size_t>(kv_dim)},
                                 {w.wv.type, w.wv.data, kv_dim, v_new, static_cast<size_t>(kv_dim)}};
        static constexpr Proj kQKV[] = {Proj::Q, Proj::K, Proj::V};
        project(l, kQKV, qkv, 3, dim, xb_.data(), n);
        for (int i = 0; i < n; ++i) {
            const float* cs = &cs_[static_cast<size_t>(i) * hd];
            kern_.rope(&q_[i * dim], c.n_heads, hd, cs, c.rope_neox);
            kern_.rope(&k_new[i * kv_dim], c.n_kv_heads, hd, cs, c.rope_neox);
            ref::quantize_f16(&k_new[i * kv_dim], k_cache(l, pos + i), kv_dim);
            for (int d = 0; d < kv_dim; ++d) v_cache(l, d)[pos + i] = fp32_to_fp16(v_new[i * kv_dim + d]);
        }
        attention(l, n, pos);
        const MatmulJob o{w.wo.type, w.wo.data, dim, xb_.data(), static_cast<size_t>(dim)};
        static constexpr Proj kO[] = {Proj::O};
        project(l, kO, &o, 1, dim, att_.data(), n);
        for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += xb_[i];

        for (int i = 0; i < n; ++i) kern_.rmsnorm(&xb_[i * dim], &x_[i * dim], w.ffn_norm, dim, c.rms_eps);
        const MatmulJob gate_up[] = {{w.w_gate.type, w.w_gate.data, c.ffn_dim, hb_.data(), static_cast<size_t>(c.ffn_dim)},
                                     {w.w_up.type, w.w_up.data, c.ffn_dim, hb2_.data(), static_cast<size_t>(c.ffn_dim)}};
        static constexpr Proj kGateUp[] = {Proj::Gate, Proj::Up};
        project(l, kGateUp, gate_up, 2, dim, xb_.data(), n);
        kern_.swiglu(hb_.data(), hb_.data(), hb2_.data(), static_cast<int64_t>(n) * c.ffn_dim);
        const MatmulJob down{w.w_down.type, w.w_down.data, dim, xb_.data(), static_cast<size_t>(dim)};
        static constexpr Proj kDown[] = {Proj::Down};
        project(l, kDown, &down, 1, c.ffn_dim, hb_.data(), n);
        for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += xb_[i];
    }
    if (logits == nullptr) return;
    const int first = all_logits ? 0 : n - 1;  // rows that need logits
    for (int i = first; i < n; ++i) kern_.rmsnorm(&xb_[i * dim], &x_[i * dim], m.output_norm(), dim, c.rms_eps);
    const Weight& out = m.output();
    matmul(kern_, out.type, out.data, c.n_vocab, dim, &xb_[static_cast<size_t>(first) * dim], n - first, logits, pool_,
           scratch_);
}

// Causal GQA attention of the batch's n queries (positions pos..pos+n-1) over the cache. One task per token and
// KV head: the query heads sharing that KV head are adjacent in q, so K and V are read once for the whole group.
void Decoder::attention(int layer, int n, int pos) {
    const ModelConfig& c = config();
    const int hd = c.head_dim, kv_dim = c.kv_dim(), group = c.n_heads / c.n_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int tasks = n * c.n_kv_heads;
    pool_.run([&](int tid, int nth) {
        float* scores = &scores_[static_cast<size_t>(tid) * group * n_ctx_];  // [group][n_ctx]
        for (int task = tid; task < tasks; task += nth) {
            const int i = task / c.n_kv_heads, kvh = task % c.n_kv_heads;
            const int len = pos + i + 1;  // keys 0..pos+i
            // q and the probabilities are rounded to f16 as llama.cpp's f16 KV path does, so logits track it.
            float* q = &q_[static_cast<size_t>(i) * c.dim + kvh * group * hd];
            kern_.round_f16(q, group * hd);
            kern_.gemm_f16(hd, k_cache(layer, 0) + kvh * hd, kv_dim * sizeof(fp16_t), len, q, hd * sizeof(float),
                           group, scores, n_ctx_);
            for (int g = 0; g < group; ++g) {
                float* s = scores + static_cast<size_t>(g) * n_ctx_;
                for (int t = 0; t < len; ++t) s[t] *= scale;
                kern_.softmax(s, len);
                kern_.round_f16(s, len);
            }
            // out[g][d] = sum_t p[g][t] V[t][d]: a gemm over the transposed V rows of this KV head
            float* out = &att_[static_cast<size_t>(i) * c.dim + kvh * group * hd];
            kern_.gemm_f16(len, v_cache(layer, kvh * hd), n_ctx_ * sizeof(fp16_t), hd, scores,
                           n_ctx_ * sizeof(float), group, out, hd);
        }
    });
}

}  // namespace floe
