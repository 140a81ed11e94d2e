// Reference f32 ops: RMSNorm, softmax, SwiGLU, RoPE. Scalar helpers here are also the SIMD tails.
#include <cmath>

#include "floe/kernels.h"

namespace floe::ref {

double sum_squares(int64_t n, const float* x) {
    double sum = 0.0;  // squares in float, summed in double: as ggml's rms_norm, so activations match llama.cpp's
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
    return sum;
}

void scale(float* out, const float* x, const float* weight, float s, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s * weight[i];
}

void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
    const float mean = static_cast<float>(sum_squares(n, x) / static_cast<double>(n));
    const float s = 1.0f / std::sqrt(mean + eps);
    scale(out, x, weight, s, n);
}

float max_f32(int64_t n, const float* x) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

float exp_sub_sum(float* x, int64_t n, float m) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - m);
        sum += x[i];
    }
    return sum;
}

void mul_scalar(float* x, int64_t n, float s) {
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void softmax(float* x, int64_t n) {
    const float m = max_f32(n, x);
    const float sum = exp_sub_sum(x, n, m);
    mul_scalar(x, n, 1.0f / sum);
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

void swiglu(float* out, const float* gate, const float* up, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

void round_f16(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = fp16_to_fp32(fp32_to_fp16(x[i]));
}

void rope_head(float* x, int head_dim, const float* cs, bool neox, int first_pair) {
    const int half = head_dim / 2;
    for (int i = first_pair; i < half; ++i) {
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float c = cs[2 * i], s = cs[2 * i + 1];
        const float x0 = x[i0], x1 = x[i1];
        x[i0] = x0 * c - x1 * s;
        x[i1] = x0 * s + x1 * c;
    }
}

void rope(float* x, int n_heads, int head_dim, const float* cs, bool neox) {
    for (int h = 0; h < n_heads; ++h) rope_head(x + h * head_dim, head_dim, cs, neox, 0);
}

}  // namespace floe::ref

namespace floe {

void rope_table(float* cs, int64_t pos, int head_dim, float base) {
    const float theta_scale = std::pow(base, -2.0f / static_cast<float>(head_dim));
    float theta = static_cast<float>(pos);
    for (int i = 0; i < head_dim / 2; ++i) {
        cs[2 * i] = std::cos(theta);
        cs[2 * i + 1] = std::sin(theta);
        theta *= theta_scale;
    }
}

const Kernels& kernels_ref() {
    static const Kernels k = {
        "ref",         ref::quantize_q8_0, ref::quantize_q8_1, ref::gemm_q4_0, ref::gemm_q4_1, ref::gemm_q8_0,
        ref::gemm_f16, ref::gemm_f32,      ref::rmsnorm,       ref::softmax,   ref::swiglu,    ref::rope,
        ref::round_f16,
        ref::max,      ref::sum_exp,       ref::lincomb,       ref::mix_exp,   ref::topk,
        ref::lora_up,
    };
    return k;
}

gemm_fn Kernels::gemm(QType w) const {
    switch (w) {
        case QType::Q4_0: return gemm_q4_0;
        case QType::Q4_1: return gemm_q4_1;
        case QType::Q8_0: return gemm_q8_0;
        case QType::F16: return gemm_f16;
        case QType::F32: return gemm_f32;
        default: return nullptr;
    }
}

quantize_fn Kernels::quantize(QType act) const {
    switch (act) {
        case QType::Q8_0: return quantize_q8_0;
        case QType::Q8_1: return quantize_q8_1;
        default: return nullptr;
    }
}

}  // namespace floe
