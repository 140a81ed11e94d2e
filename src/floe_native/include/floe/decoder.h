// llama-architecture forward pass with an f16 KV cache: batched prefill and multi-token evaluation over a
// thread pool, every buffer preallocated, a cancel flag and deadline checked between layers.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "floe/kernels.h"
#include "floe/lora.h"
#include "floe/model.h"
#include "floe/threadpool.h"

namespace floe {

class ContextFull : public std::length_error {
public:
    using std::length_error::length_error;
};
class Cancelled : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// An adapter applied by a decoder, with the user's scale (the final scale of a pair is Adapter::scale()).
struct ActiveAdapter {
    std::shared_ptr<const Adapter> adapter;
    float scale = 1.0f;
};

class Decoder {
public:
    Decoder(std::shared_ptr<const Model> model, int n_ctx, int n_threads, const Kernels& kernels = active_kernels());

    const ModelConfig& config() const { return model_->config(); }
    int n_ctx() const { return n_ctx_; }
    int n_past() const { return n_past_; }
    int n_threads() const { return pool_.size(); }
    // Token ids of the cached positions 0..n_past()-1 (valid until the next eval/truncate): a caller starting a new
    // sequence keeps the longest common prefix and evaluates only the rest.
    const int32_t* tokens() const { return tokens_.data(); }

    // Run n tokens at positions n_past()..n_past()+n-1 and append them to the KV cache. Writes the logits of
    // every position (n x n_vocab) when all_logits, else of the last one only. If cancel becomes true or the
    // steady clock passes deadline_ns (0 = none) the call throws Cancelled and the cache is left as it was.
    void eval(const int32_t* tokens, int n, float* logits, bool all_logits, const std::atomic<bool>* cancel = nullptr,
              int64_t deadline_ns = 0);

    // Forget positions from n_past on (e.g. rejected draft tokens); n_past <= n_past().
    void truncate(int n_past);

    // Replace the LoRA adapters (empty: none); not while an eval runs (the caller serializes). Base weights are
    // untouched. The cached keys/values were computed under the old adapters: unless keep_cache, the next eval
    // first recomputes the cached positions (their token ids are kept) under the new ones. Setting the same list
    // again changes nothing. Throws ModelError for an adapter made for another model shape, invalid_argument for a
    // non-finite scale.
    void set_adapters(std::vector<ActiveAdapter> adapters, bool keep_cache = false);
    const std::vector<ActiveAdapter>& adapters() const { return adapters_; }
    bool cache_stale() const { return stale_; }                 // the next eval recomputes the cached prefix
    int64_t recomputed_tokens() const { return recomputed_; }   // positions recomputed after swaps, in total

private:
    static constexpr int kMaxBatch = 64;  // tokens per forward pass; longer inputs run in several passes

    void forward(const int32_t* tokens, int n, int pos, float* logits, bool all_logits,
                 const std::atomic<bool>* cancel, int64_t deadline_ns);
    void attention(int layer, int n, int pos);
    void recompute_prefix(const std::atomic<bool>* cancel, int64_t deadline_ns);
    // The base products of projections sharing the input x[n][cols], plus their LoRA terms.
    void project(int layer, const Proj* projs, const MatmulJob* base, int n_proj, int64_t cols, const float* x, int n);
    fp16_t* k_cache(int layer, int pos) const;  // K row of a position: kv_dim values
    fp16_t* v_cache(int layer, int dim) const;  // V transposed: one row of n_ctx positions per kv dimension

    std::shared_ptr<const Model> model_;
    const Kernels& kern_;
    int n_ctx_;
    int n_past_ = 0;
    ThreadPool pool_;

    // KV cache in f16, calloc'ed so untouched parts cost no resident memory: K as [layer][position][kv_dim],
    // V transposed as [layer][kv_dim][n_ctx] (as llama.cpp), so attention's weighted sum is a row-major gemm.
    std::unique_ptr<fp16_t, void (*)(void*)> kcache_, vcache_;
    // Activations for up to kMaxBatch tokens.
    std::vector<float> x_, xb_, q_, kv_new_, att_, hb_, hb2_, scores_, cs_;
    std::vector<uint8_t> scratch_;

    // LoRA: the active adapters, A x per (adapter, projection) for a batch, and buffers sized by set_adapters so a
    // forward pass allocates nothing.
    std::vector<ActiveAdapter> adapters_;
    std::vector<float> lora_t_;
    std::vector<MatmulJob> lora_jobs_;
    std::vector<LoraTerm> lora_terms_;
    int lora_t_stride_ = 0;  // floats of one (adapter, projection) slot of lora_t_
    // Token ids of the cached positions (for the recompute after a swap, and for prefix reuse: tokens()).
    std::vector<int32_t> tokens_;
    bool stale_ = false;
    int64_t recomputed_ = 0;
};

}  // namespace floe
