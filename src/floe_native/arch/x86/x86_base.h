// What every x86 kernel file shares (avx2.cpp, avx2_fusion.cpp, avx512.cpp): f32 vector helpers, and the AVX2
// functions with external linkage that the AVX-512 table reuses as they are.
//
// Everything else here has internal linkage (anonymous namespace) on purpose: each variant's .cpp compiles its own
// copy with its own -m flags. An ordinary inline function would be merged by the linker across translation
// units, and the AVX-512 copy could end up being the one the AVX2 table (or the ref path) calls. For the same
// reason the variant files call no inline function from floe headers (fp16_to_fp32 & co.) and instantiate no
// std:: template with types of their own outside this namespace.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "floe/kernels.h"

namespace floe::x86 {
namespace {

// ---- f32 helpers (softmax, swiglu, fusion) -----------------------------------------------------------------
inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// A product rounded to float on its own: GCC fuses a separate multiply and add into an FMA (-ffp-contract=fast
// is its default), which ref never does; the empty asm hides the product from that.
inline __m256 mul_rounded(__m256 a, __m256 b) {
    __m256 p = _mm256_mul_ps(a, b);
    __asm__("" : "+x"(p));
    return p;
}

// e^(x - n ln2) for an integer-valued n nearest x / ln2 (Cephes): r = x - n ln2, |r| <= ln2/2, with ln2 in two
// parts so n * c1 is exact; e^r = 1 + r + r^2 P(r), P of degree 5 (max rel. error ~2e-7 against exp).
inline __m256 exp_reduced(__m256 x, __m256 n) {
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    return _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
}

// expf: exp_reduced times 2^n, applied as 2^(n/2) * 2^(n - n/2) so that subnormal results and those up to FLT_MAX
// stay right. x <= -104 gives 0 (also -inf), x >= 88.8 gives inf, NaN stays NaN (max/min return their second
// operand then).
inline __m256 exp_ps(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
    x = _mm256_min_ps(_mm256_set1_ps(88.8f), x);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 p = exp_reduced(x, n);
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const auto pow2 = [](__m256i k) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
    };
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(n2));
}

}  // namespace
}  // namespace floe::x86

// AVX2 kernels with external linkage: defined in avx2.cpp, reused as they are by the AVX-512 table.
namespace floe::x86::avx2 {
void quantize_q8_0(const float* x, void* y, int64_t n);
void quantize_q8_1(const float* x, void* y, int64_t n);
void gemm_f16(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out, size_t ldo);
void gemm_f32(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out, size_t ldo);
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps);
void softmax(float* x, int64_t n);
void swiglu(float* out, const float* gate, const float* up, int64_t n);
void rope(float* x, int n_heads, int head_dim, const float* cs, bool neox);
void round_f16(float* x, int64_t n);
// fusion primitives (avx2_fusion.cpp)
float max(const float* x, int64_t n);
double sum_exp(const float* x, int64_t n, float m, float s, double* sum_dx);
void lincomb(float* out, const float* x, float a, const float* y, float b, float c, int64_t n);
void mix_exp(float* out, const float* x, float ox, const float* y, float oy, int64_t n);
int topk(const float* x, int64_t n, int k, int32_t* ids, float* vals);
// LoRA up-projection (avx2.cpp); the AVX-512 table has its own (avx512.cpp)
void lora_up(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y, size_t ldy);
}  // namespace floe::x86::avx2
