// Reference dot products and gemm tiles: one block at a time, exact integer sums per block,
// float accumulation across blocks in row order.
#include "floe/kernels.h"

namespace floe::ref {
namespace {

float dot_q4_0_q8_0(int64_t n, const block_q4_0* x, const block_q8_0* y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK / 2; ++j) {
            sumi += ((x[i].qs[j] & 0x0f) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK / 2];
        }
        sum += static_cast<float>(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    return sum;
}

float dot_q4_1_q8_1(int64_t n, const block_q4_1* x, const block_q8_1* y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK / 2; ++j) {
            sumi += (x[i].qs[j] & 0x0f) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK / 2];
        }
        sum += static_cast<float>(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
               fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
    }
    return sum;
}

float dot_q8_0_q8_0(int64_t n, const block_q8_0* x, const block_q8_0* y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK; ++j) sumi += x[i].qs[j] * y[i].qs[j];
        sum += static_cast<float>(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    return sum;
}

// Every tile is the same double loop over one dot product.
template <typename W, typename A, float (*Dot)(int64_t, const W*, const A*)>
void gemm_tile(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
               size_t ldo) {
    for (int c = 0; c < nc; ++c) {
        const auto* ac = reinterpret_cast<const A*>(static_cast<const char*>(a) + c * lda);
        for (int r = 0; r < nr; ++r) {
            const auto* wr = reinterpret_cast<const W*>(static_cast<const char*>(w) + r * ldw);
            out[c * ldo + r] = Dot(n, wr, ac);
        }
    }
}

}  // namespace

float dot_f32(int64_t n, const float* x, const float* y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += x[i] * y[i];
    return sum;
}

float dot_f16_f32(int64_t n, const fp16_t* x, const float* y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += fp16_to_fp32(x[i]) * y[i];
    return sum;
}

// The table entries (declared in kernels.h): one tile loop per weight type.
const gemm_fn gemm_q4_0 = gemm_tile<block_q4_0, block_q8_0, dot_q4_0_q8_0>;
const gemm_fn gemm_q4_1 = gemm_tile<block_q4_1, block_q8_1, dot_q4_1_q8_1>;
const gemm_fn gemm_q8_0 = gemm_tile<block_q8_0, block_q8_0, dot_q8_0_q8_0>;
const gemm_fn gemm_f16 = gemm_tile<fp16_t, float, dot_f16_f32>;
const gemm_fn gemm_f32 = gemm_tile<float, float, dot_f32>;

}  // namespace floe::ref
