// One signature per kernel and one table of function pointers per CPU variant (ref, avx2, avx_vnni, avx512,
// avx512_vnni, neon, neon_dotprod, neon_i8mm).
// The scalar reference (ref/) is the specification; every SIMD variant computes the same thing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "floe/blocks.h"

namespace floe {

// Quantize n floats (n % 32 == 0) into n/32 activation blocks (block_q8_0 or block_q8_1), as ggml's SIMD
// quantize_row_q8_0/q8_1: d = amax / 127, q = round-half-even(x * (127 / amax)), q8_1: s = fp16(d * sum(q)).
using quantize_fn = void (*)(const float* x, void* y, int64_t n);

// Tile of dot products: out[c * ldo + r] = dot(W row r, A row c) for r < nr, c < nc.
// n values per row; W rows are ldw bytes apart, A rows lda bytes apart. W holds the weight type, A the
// weight type's activation type (type_traits(w).activation: q8_0, q8_1 or f32).
using gemm_fn = void (*)(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc,
                         float* out, size_t ldo);

// out[i] = x[i] * (1 / sqrt(mean(x^2) + eps)) * weight[i], mean summed in double as ggml does (out may alias x)
using rmsnorm_fn = void (*)(float* out, const float* x, const float* weight, int64_t n, float eps);
// x = softmax(x) in place (max-subtracted; -inf entries give 0)
using softmax_fn = void (*)(float* x, int64_t n);
// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g))   (out may alias gate or up)
using swiglu_fn = void (*)(float* out, const float* gate, const float* up, int64_t n);
// Rotate n_heads heads of head_dim values in place by the table cs = {cos0, sin0, cos1, sin1, ...}
// (head_dim/2 pairs, see rope_table). neox = false: pairs (x[2i], x[2i+1]) (llama); true: (x[i], x[i+d/2]).
using rope_fn = void (*)(float* x, int n_heads, int head_dim, const float* cs, bool neox);
// x[i] = x[i] rounded to the nearest IEEE half (ties to even, overflow to inf, subnormal halves kept) and back, in
// place: attention's queries and probabilities, rounded as llama.cpp's f16 KV path does. NaN stays a NaN.
using round_f16_fn = void (*)(float* x, int64_t n);

// ---- fusion primitives (used by fusion.cpp). NaN inputs count as -inf everywhere: never a max, a top-k entry or
// any probability mass. Sums of exponentials are accumulated in float per lane and in double across blocks
// (ref: all in double), so they differ from ref by ~1e-6 relative whatever n.
constexpr float kExpCut = -86.0f;
// max(x[0..n)), -inf for n == 0 or all -inf / NaN
using max_fn = float (*)(const float* x, int64_t n);
// sum_i exp(d_i), d_i = s * (x[i] - m); when sum_dx != nullptr also *sum_dx = sum_i exp(d_i) * d_i (the entropy
// term of log-softmax). Terms with d_i <= -86 (exp < 4e-38, at the edge of float's normal range) count as 0: no
// subnormal arithmetic, which costs microcode assists on x86. Needs s > 0 and m >= max(x) (finite).
using sum_exp_fn = double (*)(const float* x, int64_t n, float m, float s, double* sum_dx);
// out[i] = (a * x[i] + b * y[i]) + c, each product rounded to float (no FMA: bit-identical in every variant),
// y == nullptr drops its term; a NaN result becomes -inf. Needs a, b > 0 (the caller drops zero-weight terms).
using lincomb_fn = void (*)(float* out, const float* x, float a, const float* y, float b, float c, int64_t n);
// out[i] = exp(x[i] + ox) + exp(y[i] + oy) (y == nullptr drops its term): a linear mixture of two distributions
// given as log-probs, the weights folded into the offsets (ox = log w_x - lse(x)); terms whose exponent is <= -86
// count as 0, as in sum_exp.
using mix_exp_fn = void (*)(float* out, const float* x, float ox, const float* y, float oy, int64_t n);
// The k largest of x[0..n) (1 <= k <= kMaxTopK) in one pass: ids[] and vals[] sorted by value descending, ties to
// the lower id; -inf and NaN are never selected. Returns how many were found (< k when x has fewer such values).
constexpr int kMaxTopK = 128;
using topk_fn = int (*)(const float* x, int64_t n, int k, int32_t* ids, float* vals);

// Top-k state shared by every variant's topk: a buffer of candidates with a threshold. Values > thr are appended;
// when the buffer is full it is cut back to the best k and thr becomes the k-th best value (-inf before the first
// cut). SIMD loops compare whole vectors against thr and hand only the hits to ref::topk_push, so the scan costs
// one compare per element and a hit O(1) amortized.
struct TopKBuffer {
    struct Entry {
        float val;
        int32_t id;
    };
    int k = 0, size = 0;
    float thr = -__builtin_inff();
    Entry e[2 * kMaxTopK];
};

// ---- LoRA up-projection: y += sum_i s_i B_i t_i for the terms of one adapted projection (lora.cpp).
// B (n_out x r, f32 or f16) is stored as panels of kLoraPanel output rows (pack_lora_b in lora.h): panel p holds
// r x kLoraPanel values, [j][i] = B[kLoraPanel * p + i][j], rows past n_out zero. One panel is a contiguous run of
// bytes and the panels follow each other, so a kernel reads B as one stream.
constexpr int kLoraPanel = 16;
struct LoraUpTerm {
    QType type;          // B's type: F32 or F16
    const void* panels;  // B as panels
    int r;
    float scale;
    const float* t;  // A x of n tokens: n rows of r floats
};
// For panels p in [p0, p1) of an output of `rows` rows and tokens c < n: y[c * ldy + o] += d[o] for the rows
// o = kLoraPanel * p + i < rows only, where d = sum over the terms in order of (scale * acc) and
// acc[o] = sum_{j in order} B[o][j] * t[c * r + j] (each product may be fused into the sum). scale * acc is
// rounded on its own and d is added to y once: two terms with the same B and t and scales s/2 add exactly what
// one with s adds, and a zero B adds exactly nothing.
using lora_up_fn = void (*)(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n,
                            float* y, size_t ldy);

struct Kernels {
    const char* name;
    quantize_fn quantize_q8_0;
    quantize_fn quantize_q8_1;
    gemm_fn gemm_q4_0;  // W q4_0, A q8_0
    gemm_fn gemm_q4_1;  // W q4_1, A q8_1
    gemm_fn gemm_q8_0;  // W q8_0, A q8_0
    gemm_fn gemm_f16;   // W f16,  A f32
    gemm_fn gemm_f32;   // W f32,  A f32
    rmsnorm_fn rmsnorm;
    softmax_fn softmax;
    swiglu_fn swiglu;
    rope_fn rope;
    round_f16_fn round_f16;
    max_fn max;
    sum_exp_fn sum_exp;
    lincomb_fn lincomb;
    mix_exp_fn mix_exp;
    topk_fn topk;
    lora_up_fn lora_up;

    gemm_fn gemm(QType w) const;            // nullptr for types with no weight kernel (q8_1)
    quantize_fn quantize(QType act) const;  // nullptr for f32 activations
};

// Variant tables. A variant compiled out of this build returns nullptr; being compiled in does not mean
// the CPU can run it: use available_variants().
const Kernels& kernels_ref();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();
const Kernels* kernels_avx512_vnni();  // avx512 with vpdpbusd in the quantized gemms
const Kernels* kernels_avx_vnni();     // avx2 with VEX vpdpbusd (AVX-VNNI), two blocks per 256-bit step
const Kernels* kernels_neon();
const Kernels* kernels_neon_dotprod();
const Kernels* kernels_neon_i8mm();

// CPU features seen by the probe (dispatch.cpp).
struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
    bool avxvnni = false;  // the VEX form of vpdpbusd (CPUID.(7,1):EAX[4])
    bool neon = false, dotprod = false, fp16 = false, i8mm = false;
    const char* arch = "unknown";
};
const CpuFeatures& cpu_features();

// Variants this CPU can run, best first; ref is always last.
std::vector<const Kernels*> available_variants();
// Chosen once: the best available; FLOE_FORCE_VARIANT=name picks that one (std::runtime_error naming the
// available ones if this CPU cannot run it), FLOE_FORCE_REF=1 picks ref.
const Kernels& active_kernels();
// Lookup among available variants by name; nullptr if unknown or not runnable here.
const Kernels* find_variant(const char* name);

// Precomputed RoPE table for one position: head_dim/2 (cos, sin) pairs with
// theta_i = pos * base^(-2i/head_dim), computed as llama.cpp does (theta *= theta_scale in float).
void rope_table(float* cs, int64_t pos, int head_dim, float base);

// ---- the reference kernels, and scalar helpers shared by every variant (the tails of SIMD loops) -----
namespace ref {
// gemms: one dot product per output, one block at a time (ref/gemm.cpp); constant after static initialization
extern const gemm_fn gemm_q4_0, gemm_q4_1, gemm_q8_0, gemm_f16, gemm_f32;
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps);
void softmax(float* x, int64_t n);
void rope(float* x, int n_heads, int head_dim, const float* cs, bool neox);
void round_f16(float* x, int64_t n);
void quantize_q8_0(const float* x, void* y, int64_t n);  // activations (see quantize_fn)
void quantize_q8_1(const float* x, void* y, int64_t n);
// Weights: ggml's quantize_row_*_ref, byte-identical to gguf.quants (q8_0 weights round half away from zero).
void quantize_q8_0_weights(const float* x, void* y, int64_t n);
void quantize_q4_0(const float* x, void* y, int64_t n);
void quantize_q4_1(const float* x, void* y, int64_t n);
void quantize_f16(const float* x, void* y, int64_t n);
void dequantize(QType t, const void* x, float* y, int64_t n);
float dot_f32(int64_t n, const float* x, const float* y);
float dot_f16_f32(int64_t n, const fp16_t* x, const float* y);
double sum_squares(int64_t n, const float* x);  // float squares, double sum (as ggml)
float max_f32(int64_t n, const float* x);
float exp_sub_sum(float* x, int64_t n, float m);  // x = exp(x - m), returns the sum
void mul_scalar(float* x, int64_t n, float s);
void scale(float* out, const float* x, const float* weight, float s, int64_t n);  // out = x * s * weight
float silu(float x);
void swiglu(float* out, const float* gate, const float* up, int64_t n);
void rope_head(float* x, int head_dim, const float* cs, bool neox, int first_pair);  // pairs from first_pair on
// fusion primitives (ref/fusion.cpp); the scalar tails of the SIMD versions
float max(const float* x, int64_t n);
double sum_exp(const float* x, int64_t n, float m, float s, double* sum_dx);
void lincomb(float* out, const float* x, float a, const float* y, float b, float c, int64_t n);
void mix_exp(float* out, const float* x, float ox, const float* y, float oy, int64_t n);
int topk(const float* x, int64_t n, int k, int32_t* ids, float* vals);
void topk_push(TopKBuffer* h, const float* x, int64_t n, int64_t first_id);  // offer x[i] as id first_id + i
int topk_finish(TopKBuffer* h, int32_t* ids, float* vals);                     // sorted output, returns the count
void lora_up(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
             size_t ldy);  // ref/lora.cpp
}  // namespace ref

}  // namespace floe
