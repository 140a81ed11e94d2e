// Unmerged LoRA adapters in llama.cpp's GGUF LoRA format, and the product that applies them:
// y = W x + sum_i s_i B_i (A_i x) on the seven projections of a llama block.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floe/gguf.h"
#include "floe/kernels.h"
#include "floe/matmul.h"
#include "floe/model.h"
#include "floe/threadpool.h"

namespace floe {

// The projections an adapter may target, in the order of LayerWeights.
enum class Proj : int { Q, K, V, O, Gate, Up, Down };
constexpr int kNumProj = 7;
const char* proj_name(Proj p);  // "attn_q", ..., "ffn_down" (the GGUF tensor name part)

// One LoRA pair, in the adapter's own memory: A as in the file, r rows of n_in values (ggml [n_in, r]); B
// (ggml [r, n_out]: n_out rows of r) packed as lora_up's panels (pack_lora_b). Each f32 or f16, as in the file.
struct LoraPair {
    QType a_type = QType::F32, b_type = QType::F32;
    const void* a = nullptr;
    const void* b_panels = nullptr;
    int r = 0;
    int64_t n_in = 0, n_out = 0;
};

// Bytes of B (n_out rows of r values of type, f32 or f16) as panels of kLoraPanel rows (kernels.h).
size_t lora_panels_bytes(QType type, int r, int64_t n_out);
// B (n_out rows of r values) -> panels (lora_panels_bytes bytes; rows past n_out zero).
void pack_lora_b(QType type, const void* b, int r, int64_t n_out, void* panels);

class Adapter {
public:
    // Opens a GGUF LoRA adapter and validates it against base (see lora.cpp for the rules). Throws GGUFError for a
    // malformed file, ModelError for a well-formed file that is not a LoRA adapter for base, naming the tensor.
    Adapter(const std::string& path, const Model& base);

    float alpha() const { return alpha_; }  // 0: absent
    int n_layers() const { return static_cast<int>(layers_.size()); }
    int n_pairs() const { return n_pairs_; }
    int max_rank() const { return max_rank_; }
    const std::string& base_shape() const { return base_shape_; }  // the base's dimensions, to match a decoder's
    // nullptr when the adapter leaves that projection alone
    const LoraPair* pair(int layer, Proj p) const;
    // llama.cpp's rule: user_scale * alpha / r, or user_scale when alpha is 0
    float scale(const LoraPair& pair, float user_scale) const;
    // Base tensor names adapted, with their rank ("blk.0.attn_q.weight", 8), in layer and projection order.
    std::vector<std::pair<std::string, int>> targets() const;

private:
    void fill_arena();
    struct FreeArena {
        void operator()(void* p) const;
    };
    // Every A and B of the adapter, laid out in the order a forward pass reads them (see lora.cpp); the file is
    // closed once they are copied.
    std::unique_ptr<uint8_t, FreeArena> arena_;
    float alpha_ = 0.0f;
    int n_pairs_ = 0, max_rank_ = 0;
    std::string base_shape_;
    std::vector<std::array<LoraPair, kNumProj>> layers_;  // r == 0: not adapted
};

// A model's dimensions as text ("llama L30 d576 kv192 ffn1536"): equal for models an adapter fits.
std::string model_shape(const ModelConfig& c);

// One adapted projection of a batch of n tokens: its output rows y[c * ldy + o] (o < rows, already holding W x)
// and its LoRA terms, each B with its final scale and t = A x already computed (n rows of pair.r floats).
using LoraTerm = LoraUpTerm;
LoraTerm lora_term(const LoraPair& pair, float scale, const float* t);
struct LoraSite {
    float* y;
    size_t ldy;
    int64_t rows;
    const LoraTerm* terms;
    int n_terms;
};

// The matmul job computing t = A x of a pair (append it to the base projection's matmul_jobs call, which
// shares the input x): one job of pair.r rows into t (n rows of r floats).
MatmulJob lora_a_job(const LoraPair& pair, float* t);

// y += sum_terms scale * B t for every site: the kernel table's lora_up (see kernels.h for the exact sums), the
// sites' panels split over the pool.
void lora_apply(const Kernels& k, const LoraSite* sites, int n_sites, int n, ThreadPool& pool);

}  // namespace floe
