// The decoder's LoRA side: swapping adapters, the adapted projections, and the recompute of a stale cache.
#include <algorithm>
#include <cmath>
#include <string>

#include "floe/decoder.h"

namespace floe {

void Decoder::set_adapters(std::vector<ActiveAdapter> adapters, bool keep_cache) {
    const std::string shape = model_shape(config());
    int max_rank = 0;
    for (const ActiveAdapter& a : adapters) {
        if (!a.adapter) throw std::invalid_argument("set_adapters: null adapter");
        if (a.adapter->base_shape() != shape)
            throw ModelError("adapter made for a model of shape '" + a.adapter->base_shape() + "' cannot run on '" +
                             shape + "'");
        if (!std::isfinite(a.scale)) throw std::invalid_argument("adapter scale must be finite");
        max_rank = std::max(max_rank, a.adapter->max_rank());
    }
    const bool same = adapters.size() == adapters_.size() &&
                      std::equal(adapters.begin(), adapters.end(), adapters_.begin(), [](const auto& x, const auto& y) {
                          return x.adapter == y.adapter && x.scale == y.scale;
                      });
    // Size every buffer a forward pass needs now: A x of each (adapter, projection) for a full batch.
    lora_t_stride_ = kMaxBatch * max_rank;
    lora_t_.assign(adapters.size() * kNumProj * static_cast<size_t>(lora_t_stride_), 0.0f);
    lora_jobs_.clear();
    lora_jobs_.reserve(3 + 3 * adapters.size());
    lora_terms_.clear();
    lora_terms_.reserve(3 * adapters.size());
    adapters_ = std::move(adapters);
    if (!same && !keep_cache && n_past_ > 0) stale_ = true;
}

void Decoder::project(int layer, const Proj* projs, const MatmulJob* base, int n_proj, int64_t cols, const float* x,
                      int n) {
    if (adapters_.empty()) {
        matmul_jobs(kern_, base, n_proj, cols, x, n, pool_, scratch_);
        return;
    }
    // One matmul pass computes W x and every A x (they share x); then the B products are added to W x.
    lora_jobs_.assign(base, base + n_proj);
    lora_terms_.clear();
    LoraSite sites[3];
    int first_term[3];
    for (int i = 0; i < n_proj; ++i) {
        first_term[i] = static_cast<int>(lora_terms_.size());
        for (size_t a = 0; a < adapters_.size(); ++a) {
            const LoraPair* pair = adapters_[a].adapter->pair(layer, projs[i]);
            if (pair == nullptr) continue;
            float* t = &lora_t_[(a * kNumProj + static_cast<size_t>(projs[i])) * lora_t_stride_];
            lora_jobs_.push_back(lora_a_job(*pair, t));
            lora_terms_.push_back(lora_term(*pair, adapters_[a].adapter->scale(*pair, adapters_[a].scale), t));
        }
    }
    for (int i = 0; i < n_proj; ++i) {
        const int end = i + 1 < n_proj ? first_term[i + 1] : static_cast<int>(lora_terms_.size());
        sites[i] = {base[i].y, base[i].ldy, base[i].rows, lora_terms_.data() + first_term[i], end - first_term[i]};
    }
    matmul_jobs(kern_, lora_jobs_.data(), static_cast<int>(lora_jobs_.size()), cols, x, n, pool_, scratch_);
    if (!lora_terms_.empty()) lora_apply(kern_, sites, n_proj, n, pool_);
}

// Run the cached tokens again under the current adapters, rewriting their keys and values. A cancel leaves the
// cache stale, so the next eval starts over.
void Decoder::recompute_prefix(const std::atomic<bool>* cancel, int64_t deadline_ns) {
    for (int done = 0; done < n_past_; done += kMaxBatch) {
        const int b = std::min(kMaxBatch, n_past_ - done);
        forward(tokens_.data() + done, b, done, nullptr, false, cancel, deadline_ns);
    }
    recomputed_ += n_past_;
    stale_ = false;
}

}  // namespace floe
