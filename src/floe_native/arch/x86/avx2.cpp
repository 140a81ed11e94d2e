// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; see x86_gemm.h for the quantized gemm).
#include <cmath>

#include "x86_gemm.h"
#include "x86_lora.h"

namespace floe::x86 {
namespace {

// ---- f32 helpers -----------------------------------------------------------------------------------------------
// Sums of four vectors: [hsum(a) hsum(b) hsum(c) hsum(d)].
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// ---- activation quantizers: byte-identical to ref (as ggml's SIMD quantize_row_q8_0/q8_1) ---------------------
// One block: stores the 32 quants and returns true, with *d and *sum = sum(qs). Returns false, storing nothing,
// when 127 / amax overflows (amax tiny): ref then converts inf / nan to int8 as its compiler does, so the caller
// hands such a block to ref itself.
inline bool quantize_block(const float* x, int8_t* qs, float* d_out, int* sum) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(abs_ps(v[k]), amax);  // a NaN input is skipped, as by fmax in ref
    }
    const float m = hmax(amax);
    const float id = m != 0.0f ? 127.0f / m : 0.0f;
    if (!(id <= 3.4028235e38f)) return false;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));  // MXCSR: half to even
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    *sum = _mm_cvtsi128_si32(s4);
    *d_out = m / 127.0f;
    // packs work per 128-bit lane: bytes come out as dwords 0 4 1 5 2 6 3 7
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs),
                        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return true;
}

inline fp16_t to_f16(float f) { return static_cast<fp16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

// ---- dense gemm (f32 / f16 weights, f32 activations): the micro-kernel of a 4-row x C-column tile ------------
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const fp16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

template <class T, int C>
inline void dense_tile(int64_t n, const tiles::RowTile& t, const float* const a[C], float* out, size_t ldo) {
    const int64_t n8 = n / 8 * 8;
    const auto w4 = t.as<T>();
    const auto& wr = w4.p;
    __m256 acc[C][4];
    for (int c = 0; c < C; ++c)
        for (int r = 0; r < 4; ++r) acc[c][r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 x[4];
        for (int r = 0; r < 4; ++r) x[r] = load8(wr[r] + i);
        for (int c = 0; c < C; ++c) {
            const __m256 y = _mm256_loadu_ps(a[c] + i);
            for (int r = 0; r < 4; ++r) acc[c][r] = _mm256_fmadd_ps(x[r], y, acc[c][r]);
        }
    }
    for (int c = 0; c < C; ++c) {
        alignas(16) float s[4];
        _mm_store_ps(s, hsum4(acc[c][0], acc[c][1], acc[c][2], acc[c][3]));
        for (int r = 0; r < t.rows; ++r)
            out[c * ldo + t.r0 + r] = s[r] + tiles::dot_tail(n - n8, wr[r] + n8, a[c] + n8);
    }
}

// Every row tile of C columns.
template <class T, int C>
void dense_rows(int64_t n, const void* w, size_t ldw, int nr, const float* const a[C], float* out, size_t ldo) {
    tiles::for_each_tile<C>(w, ldw, nr, C, [&](const tiles::RowTile& t, int, auto) { dense_tile<T, C>(n, t, a, out, ldo); });
}

// Columns in pairs (the last one alone).
template <class T>
void gemm_dense(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                size_t ldo) {
    tiles::for_each_column_group<2>(nc, [&](int c0, auto group) {
        constexpr int C = decltype(group)::value;
        const auto cols = tiles::columns<float, C>(a, lda, c0, out, ldo, 0);
        dense_rows<T, C>(n, w, ldw, nr, cols.a, cols.out[0], ldo);
    });
}

// Blocks are written through byte offsets (memcpy for the fp16 fields), so y need not be 2-byte aligned.
template <class B, bool WithSum>
void quantize_rows(const float* x, void* vy, int64_t n, void (*ref_block)(const float*, void*, int64_t)) {
    auto* y = static_cast<uint8_t*>(vy);
    for (int64_t i = 0; i < n / QK; ++i, x += QK, y += sizeof(B)) {
        float d;
        int sum;
        if (!quantize_block(x, reinterpret_cast<int8_t*>(y + offsetof(B, qs)), &d, &sum)) {
            ref_block(x, y, QK);
            continue;
        }
        const fp16_t hd = to_f16(d);
        std::memcpy(y + offsetof(B, d), &hd, 2);
        if constexpr (WithSum) {
            const fp16_t hs = to_f16(static_cast<float>(sum) * d);
            std::memcpy(y + offsetof(block_q8_1, s), &hs, 2);
        }
    }
}

}  // namespace

namespace avx2 {

void quantize_q8_0(const float* x, void* y, int64_t n) { quantize_rows<block_q8_0, false>(x, y, n, ref::quantize_q8_0); }

void quantize_q8_1(const float* x, void* y, int64_t n) { quantize_rows<block_q8_1, true>(x, y, n, ref::quantize_q8_1); }

void gemm_f16(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
              size_t ldo) {
    gemm_dense<fp16_t>(n, w, ldw, nr, a, lda, nc, out, ldo);
}

void gemm_f32(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
              size_t ldo) {
    gemm_dense<float>(n, w, ldw, nr, a, lda, nc, out, ldo);
}

void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
    // squares in float, summed in double (as ref and ggml)
    const int64_t n8 = n / 8 * 8;
    __m256d acc[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 sq = _mm256_mul_ps(v, v);
        acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    const __m256d a = _mm256_add_pd(acc[0], acc[1]);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
    const double ss = _mm_cvtsd_f64(h) + ref::sum_squares(n - n8, x + n8);
    const float mean = static_cast<float>(ss / static_cast<double>(n));
    const float s = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(mean + eps)));
    const __m256 vs = _mm256_set1_ps(s);
    for (int64_t i = 0; i < n8; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(weight + i)));
    ref::scale(out + n8, x + n8, weight + n8, s, n - n8);
}

void softmax(float* x, int64_t n) {
    const int64_t n8 = n / 8 * 8;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n8; i += 8) vm = _mm256_max_ps(_mm256_loadu_ps(x + i), vm);  // NaNs skipped, as in ref
    const float m0 = hmax(vm), mt = ref::max_f32(n - n8, x + n8);
    const float m = mt > m0 ? mt : m0;

    vm = _mm256_set1_ps(m);
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    const float sum = hsum(vsum) + ref::exp_sub_sum(x + n8, n - n8, m);

    const float inv = 1.0f / sum;
    const __m256 vi = _mm256_set1_ps(inv);
    for (int64_t i = 0; i < n8; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    ref::mul_scalar(x + n8, n - n8, inv);
}

void swiglu(float* out, const float* gate, const float* up, int64_t n) {
    const int64_t n8 = n / 8 * 8;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    ref::swiglu(out + n8, gate + n8, up + n8, n - n8);
}

// F16C's conversion rounds to nearest even like fp32_to_fp16 (MXCSR's DAZ/FTZ are off: subnormals are kept), and
// widening back is exact: bit-identical to ref but for NaN payloads.
void round_f16(float* x, int64_t n) {
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    ref::round_f16(x + n8, n - n8);
}

// Same products and sums as ref::rope_head, so results are bit-identical (products via mul_rounded: no FMA).
// Pair-chunk outer loop: the cos / sin vectors are loaded (and for neox deinterleaved) once for all heads.
void rope(float* x, int n_heads, int head_dim, const float* cs, bool neox) {
    const int half = head_dim / 2;
    int i = 0;  // first pair left to the scalar tail
    if (!neox) {  // 4 adjacent pairs (x0 x1) per vector; cs is interleaved the same way
        for (; i + 4 <= half; i += 4) {
            const __m256 t = _mm256_loadu_ps(cs + 2 * i);
            const __m256 c = _mm256_moveldup_ps(t), s = _mm256_movehdup_ps(t);
            for (int h = 0; h < n_heads; ++h) {
                float* p = x + h * head_dim + 2 * i;
                const __m256 v = _mm256_loadu_ps(p);
                const __m256 swapped = _mm256_permute_ps(v, 0xb1);  // x1 x0
                // even lanes: x0 c - x1 s, odd lanes: x1 c + x0 s
                _mm256_storeu_ps(p, _mm256_addsub_ps(mul_rounded(v, c), mul_rounded(swapped, s)));
            }
        }
    } else {  // 8 pairs (x[i], x[i + half]) per vector
        for (; i + 8 <= half; i += 8) {
            const __m256 t0 = _mm256_loadu_ps(cs + 2 * i), t1 = _mm256_loadu_ps(cs + 2 * i + 8);
            const auto deinterleave = [](__m256 v) {  // lanes 0 1 4 5 2 3 6 7 -> 0..7
                return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xd8));
            };
            const __m256 c = deinterleave(_mm256_shuffle_ps(t0, t1, 0x88));
            const __m256 s = deinterleave(_mm256_shuffle_ps(t0, t1, 0xdd));
            for (int h = 0; h < n_heads; ++h) {
                float* p = x + h * head_dim + i;
                const __m256 x0 = _mm256_loadu_ps(p), x1 = _mm256_loadu_ps(p + half);
                _mm256_storeu_ps(p, _mm256_sub_ps(mul_rounded(x0, c), mul_rounded(x1, s)));
                _mm256_storeu_ps(p + half, _mm256_add_ps(mul_rounded(x0, s), mul_rounded(x1, c)));
            }
        }
    }
    for (int h = 0; h < n_heads; ++h) ref::rope_head(x + h * head_dim, head_dim, cs, neox, i);
}

void lora_up(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
             size_t ldy) {
    lora::up_walk<LoraAvx2>(terms, n_terms, rows, p0, p1, n, y, ldy);
}

}  // namespace avx2
}  // namespace floe::x86

namespace floe {

// The quantized gemms take one block per 128-bit step (G = 1): on Zen1, which splits 256-bit ops in two, that
// measured 10-25% faster than G = 2 (CPUs with full-width 256-bit units would likely prefer G = 2).
const Kernels* kernels_avx2() {
    static constexpr Kernels k = x86::make_kernels<1, x86::Maddubs>("avx2", x86::avx2::lora_up);
    return &k;
}

}  // namespace floe
