// A llama-architecture model read from GGUF: hyperparameters and views of the weights inside the mapping.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floe/blocks.h"
#include "floe/gguf.h"

namespace floe {

class ModelError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct ModelConfig {
    std::string arch;   // "llama"
    int n_layers = 0;
    int dim = 0;        // embedding width
    int n_heads = 0;
    int n_kv_heads = 0;
    int head_dim = 0;
    int ffn_dim = 0;
    int n_vocab = 0;
    int n_ctx_train = 0;
    float rms_eps = 1e-5f;
    float rope_base = 10000.0f;
    bool rope_neox = false;
    int kv_dim() const { return n_kv_heads * head_dim; }
};

// A weight matrix: rows x cols (cols contiguous), in place in the file.
struct Weight {
    QType type = QType::F32;
    const void* data = nullptr;
    int64_t rows = 0, cols = 0;
};

struct LayerWeights {
    const float* attn_norm = nullptr;
    Weight wq, wk, wv, wo;
    const float* ffn_norm = nullptr;
    Weight w_gate, w_up, w_down;
};

class Model {
public:
    // Opens and validates (architecture, every tensor's presence, type and shape). Throws GGUFError/ModelError.
    explicit Model(const std::string& path);

    const ModelConfig& config() const { return config_; }
    const GGUFFile& file() const { return *file_; }
    const Weight& token_embd() const { return token_embd_; }
    const float* output_norm() const { return output_norm_; }
    const Weight& output() const { return output_; }  // token_embd when tied
    const LayerWeights& layer(int i) const { return layers_[static_cast<size_t>(i)]; }

private:
    std::unique_ptr<GGUFFile> file_;
    ModelConfig config_;
    Weight token_embd_, output_;
    const float* output_norm_ = nullptr;
    std::vector<LayerWeights> layers_;
};

}  // namespace floe
