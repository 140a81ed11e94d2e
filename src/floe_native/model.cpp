#include "floe/model.h"

#include <cmath>

namespace floe {

namespace {

bool is_weight_type(uint32_t t) {
    switch (static_cast<QType>(t)) {
        case QType::F32: case QType::F16: case QType::Q4_0: case QType::Q4_1: case QType::Q8_0: return true;
        default: return false;
    }
}

int positive_int(const GGUFFile& f, const std::string& key) {
    const uint64_t v = f.get_uint(key);
    if (v == 0 || v > (1u << 24)) throw ModelError("metadata " + key + " = " + std::to_string(v) + " is out of range");
    return static_cast<int>(v);
}

const GGUFTensor& tensor(const GGUFFile& f, const std::string& name) {
    const GGUFTensor* t = f.find_tensor(name);
    if (t == nullptr) throw ModelError("missing tensor '" + name + "'");
    return *t;
}

// A 2-D weight of cols x rows (ggml order) in a type we have kernels for.
Weight matrix(const GGUFFile& f, const std::string& name, int64_t cols, int64_t rows) {
    const GGUFTensor& t = tensor(f, name);
    if (t.n_dims != 2 || t.ne[0] != cols || t.ne[1] != rows)
        throw ModelError("tensor '" + name + "' has shape [" + std::to_string(t.ne[0]) + ", " + std::to_string(t.ne[1]) +
                         "], expected [" + std::to_string(cols) + ", " + std::to_string(rows) + "]");
    if (!is_weight_type(t.type))
        throw ModelError("tensor '" + name + "' has ggml type " + std::to_string(t.type) +
                         ", which this decoder does not support (f32, f16, q4_0, q4_1, q8_0)");
    return {static_cast<QType>(t.type), t.data, rows, cols};
}

const float* vector_f32(const GGUFFile& f, const std::string& name, int64_t n) {
    const GGUFTensor& t = tensor(f, name);
    if (t.type != static_cast<uint32_t>(QType::F32) || t.ne[0] != n || t.ne[1] != 1 || t.ne[2] != 1 || t.ne[3] != 1)
        throw ModelError("tensor '" + name + "' must be an f32 vector of " + std::to_string(n));
    if (reinterpret_cast<uintptr_t>(t.data) % alignof(float) != 0) throw ModelError("tensor '" + name + "' is misaligned");
    return reinterpret_cast<const float*>(t.data);
}

}  // namespace

Model::Model(const std::string& path) : file_(std::make_unique<GGUFFile>(path)) {
    const GGUFFile& f = *file_;
    ModelConfig& c = config_;
    c.arch = f.get_string("general.architecture");
    if (c.arch != "llama")
        throw ModelError("unsupported architecture '" + c.arch + "' (the native decoder runs llama-architecture models; "
                         "use LlamaCppSLM for others)");
    const std::string p = c.arch + ".";
    c.n_layers = positive_int(f, p + "block_count");
    c.dim = positive_int(f, p + "embedding_length");
    c.n_heads = positive_int(f, p + "attention.head_count");
    c.n_kv_heads = static_cast<int>(f.get_uint(p + "attention.head_count_kv", static_cast<uint64_t>(c.n_heads)));
    c.ffn_dim = positive_int(f, p + "feed_forward_length");
    c.n_ctx_train = positive_int(f, p + "context_length");
    c.rms_eps = static_cast<float>(f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5));
    c.rope_base = static_cast<float>(f.get_float(p + "rope.freq_base", 10000.0));
    if (c.n_layers > 1024 || c.dim % c.n_heads != 0 || c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0)
        throw ModelError("inconsistent head counts or layer count in metadata");
    c.head_dim = c.dim / c.n_heads;
    if (c.head_dim % 2 != 0) throw ModelError("head dimension must be even for RoPE");
    const uint64_t rope_dims = f.get_uint(p + "rope.dimension_count", static_cast<uint64_t>(c.head_dim));
    if (rope_dims != static_cast<uint64_t>(c.head_dim))
        throw ModelError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported");
    if (!(c.rms_eps > 0.0f) || !(c.rope_base > 1.0f) || !std::isfinite(c.rope_base))
        throw ModelError("rms epsilon or rope base out of range");

    const GGUFTensor& embd = tensor(f, "token_embd.weight");
    if (embd.n_dims != 2 || embd.ne[0] != c.dim || embd.ne[1] < 1 || embd.ne[1] > (1 << 24))
        throw ModelError("token_embd.weight has the wrong shape");
    c.n_vocab = static_cast<int>(embd.ne[1]);
    token_embd_ = matrix(f, "token_embd.weight", c.dim, c.n_vocab);
    output_ = f.find_tensor("output.weight") ? matrix(f, "output.weight", c.dim, c.n_vocab) : token_embd_;
    output_norm_ = vector_f32(f, "output_norm.weight", c.dim);

    layers_.resize(static_cast<size_t>(c.n_layers));
    for (int i = 0; i < c.n_layers; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        LayerWeights& l = layers_[static_cast<size_t>(i)];
        l.attn_norm = vector_f32(f, b + "attn_norm.weight", c.dim);
        l.wq = matrix(f, b + "attn_q.weight", c.dim, c.dim);
        l.wk = matrix(f, b + "attn_k.weight", c.dim, c.kv_dim());
        l.wv = matrix(f, b + "attn_v.weight", c.dim, c.kv_dim());
        l.wo = matrix(f, b + "attn_output.weight", c.dim, c.dim);
        l.ffn_norm = vector_f32(f, b + "ffn_norm.weight", c.dim);
        l.w_gate = matrix(f, b + "ffn_gate.weight", c.dim, c.ffn_dim);
        l.w_up = matrix(f, b + "ffn_up.weight", c.dim, c.ffn_dim);
        l.w_down = matrix(f, b + "ffn_down.weight", c.ffn_dim, c.dim);
    }
    file_->drop_metadata();  // the decoder needs only the weights now; the tokenizer reads its own copy
}

}  // namespace floe
