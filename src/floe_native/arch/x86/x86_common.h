// Building blocks shared by the AVX2 and AVX-512 kernel tables (avx2.cpp, avx512.cpp).
//
// Everything here has internal linkage (anonymous namespace) on purpose: each variant's .cpp compiles its own
// copy with its own -m flags. An ordinary inline function would be merged by the linker across translation
// units, and the AVX-512 copy could end up being the one the AVX2 table (or the ref path) calls. For the same
// reason the variant files call no inline function from floe headers (fp16_to_fp32 & co.) and instantiate no
// std:: template with types of their own outside this namespace.
//
// Quantized dot products work on "lanes": a 128-bit lane holds one 32-value block (its two 16-byte halves in
// separate registers), so the same code runs on __m128i (G = 1 block per step), __m256i (G = 2) and __m512i
// (G = 4); every integer op used is lane-local. A tile is 4 weight rows x C activation columns: per block the
// 4 rows' integer dot products are reduced into one vector [r0 r1 r2 r3] per lane, converted to float once,
// and multiplied by the 4 rows' scales at once.
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

// ---- lane-local integer / float ops, overloaded by width ---------------------------------------------------
inline __m128i v_and(__m128i a, __m128i b) { return _mm_and_si128(a, b); }
template <int N>
inline __m128i v_srli16(__m128i a) { return _mm_srli_epi16(a, N); }
template <int N>
inline __m128i v_srai32(__m128i a) { return _mm_srai_epi32(a, N); }
inline __m128i v_add16(__m128i a, __m128i b) { return _mm_add_epi16(a, b); }
inline __m128i v_add32(__m128i a, __m128i b) { return _mm_add_epi32(a, b); }
inline __m128i v_sub32(__m128i a, __m128i b) { return _mm_sub_epi32(a, b); }
inline __m128i v_maddubs(__m128i u8, __m128i s8) { return _mm_maddubs_epi16(u8, s8); }
inline __m128i v_madd(__m128i a, __m128i b) { return _mm_madd_epi16(a, b); }
inline __m128i v_unpacklo8(__m128i a, __m128i b) { return _mm_unpacklo_epi8(a, b); }
inline __m128i v_unpackhi8(__m128i a, __m128i b) { return _mm_unpackhi_epi8(a, b); }
inline __m128i v_unpacklo16(__m128i a, __m128i b) { return _mm_unpacklo_epi16(a, b); }
inline __m128i v_unpackhi16(__m128i a, __m128i b) { return _mm_unpackhi_epi16(a, b); }
inline __m128i v_unpacklo32(__m128i a, __m128i b) { return _mm_unpacklo_epi32(a, b); }
inline __m128i v_unpackhi32(__m128i a, __m128i b) { return _mm_unpackhi_epi32(a, b); }
inline __m128i v_unpacklo64(__m128i a, __m128i b) { return _mm_unpacklo_epi64(a, b); }
inline __m128i v_unpackhi64(__m128i a, __m128i b) { return _mm_unpackhi_epi64(a, b); }
inline __m128i v_shuffle8(__m128i a, __m128i idx) { return _mm_shuffle_epi8(a, idx); }
inline __m128 v_cvt(__m128i a) { return _mm_cvtepi32_ps(a); }
inline __m128 v_mul(__m128 a, __m128 b) { return _mm_mul_ps(a, b); }
inline __m128 v_fma(__m128 a, __m128 b, __m128 c) { return _mm_fmadd_ps(a, b, c); }

inline __m256i v_and(__m256i a, __m256i b) { return _mm256_and_si256(a, b); }
template <int N>
inline __m256i v_srli16(__m256i a) { return _mm256_srli_epi16(a, N); }
template <int N>
inline __m256i v_srai32(__m256i a) { return _mm256_srai_epi32(a, N); }
inline __m256i v_add16(__m256i a, __m256i b) { return _mm256_add_epi16(a, b); }
inline __m256i v_add32(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
inline __m256i v_sub32(__m256i a, __m256i b) { return _mm256_sub_epi32(a, b); }
inline __m256i v_maddubs(__m256i u8, __m256i s8) { return _mm256_maddubs_epi16(u8, s8); }
inline __m256i v_madd(__m256i a, __m256i b) { return _mm256_madd_epi16(a, b); }
inline __m256i v_unpacklo8(__m256i a, __m256i b) { return _mm256_unpacklo_epi8(a, b); }
inline __m256i v_unpackhi8(__m256i a, __m256i b) { return _mm256_unpackhi_epi8(a, b); }
inline __m256i v_unpacklo16(__m256i a, __m256i b) { return _mm256_unpacklo_epi16(a, b); }
inline __m256i v_unpackhi16(__m256i a, __m256i b) { return _mm256_unpackhi_epi16(a, b); }
inline __m256i v_unpacklo32(__m256i a, __m256i b) { return _mm256_unpacklo_epi32(a, b); }
inline __m256i v_unpackhi32(__m256i a, __m256i b) { return _mm256_unpackhi_epi32(a, b); }
inline __m256i v_unpacklo64(__m256i a, __m256i b) { return _mm256_unpacklo_epi64(a, b); }
inline __m256i v_unpackhi64(__m256i a, __m256i b) { return _mm256_unpackhi_epi64(a, b); }
inline __m256i v_shuffle8(__m256i a, __m256i idx) { return _mm256_shuffle_epi8(a, idx); }
inline __m256 v_cvt(__m256i a) { return _mm256_cvtepi32_ps(a); }
inline __m256 v_mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline __m256 v_fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

#if defined(__AVX512F__) && defined(__AVX512BW__)
inline __m512i v_and(__m512i a, __m512i b) { return _mm512_and_si512(a, b); }
template <int N>
inline __m512i v_srli16(__m512i a) { return _mm512_srli_epi16(a, N); }
template <int N>
inline __m512i v_srai32(__m512i a) { return _mm512_srai_epi32(a, N); }
inline __m512i v_add16(__m512i a, __m512i b) { return _mm512_add_epi16(a, b); }
inline __m512i v_add32(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
inline __m512i v_sub32(__m512i a, __m512i b) { return _mm512_sub_epi32(a, b); }
inline __m512i v_maddubs(__m512i u8, __m512i s8) { return _mm512_maddubs_epi16(u8, s8); }
inline __m512i v_madd(__m512i a, __m512i b) { return _mm512_madd_epi16(a, b); }
inline __m512i v_unpacklo8(__m512i a, __m512i b) { return _mm512_unpacklo_epi8(a, b); }
inline __m512i v_unpackhi8(__m512i a, __m512i b) { return _mm512_unpackhi_epi8(a, b); }
inline __m512i v_unpacklo16(__m512i a, __m512i b) { return _mm512_unpacklo_epi16(a, b); }
inline __m512i v_unpackhi16(__m512i a, __m512i b) { return _mm512_unpackhi_epi16(a, b); }
inline __m512i v_unpacklo32(__m512i a, __m512i b) { return _mm512_unpacklo_epi32(a, b); }
inline __m512i v_unpackhi32(__m512i a, __m512i b) { return _mm512_unpackhi_epi32(a, b); }
inline __m512i v_unpacklo64(__m512i a, __m512i b) { return _mm512_unpacklo_epi64(a, b); }
inline __m512i v_unpackhi64(__m512i a, __m512i b) { return _mm512_unpackhi_epi64(a, b); }
inline __m512i v_shuffle8(__m512i a, __m512i idx) { return _mm512_shuffle_epi8(a, idx); }
inline __m512 v_cvt(__m512i a) { return _mm512_cvtepi32_ps(a); }
inline __m512 v_mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
inline __m512 v_fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
#endif

// The same 128-bit constant in every lane.
template <class I>
inline I bcast_lanes(__m128i x);
template <>
inline __m128i bcast_lanes<__m128i>(__m128i x) { return x; }
template <>
inline __m256i bcast_lanes<__m256i>(__m128i x) { return _mm256_broadcastsi128_si256(x); }
#if defined(__AVX512F__) && defined(__AVX512BW__)
template <>
inline __m512i bcast_lanes<__m512i>(__m128i x) { return _mm512_broadcast_i32x4(x); }
#endif

// Four fp16 values (one per row, each `off` bytes into its row) packed in the integer registers: four 16-bit
// loads and shifts cost no vector-port time, which the dot products need.
inline uint64_t gather_fp16x4(const uint8_t* const w[4], size_t off) {
    uint64_t v = 0;
    for (int r = 0; r < 4; ++r) {
        uint16_t h;
        std::memcpy(&h, w[r] + off, 2);
        v |= static_cast<uint64_t>(h) << (16 * r);
    }
    return v;
}

// ---- G blocks per step: loads and the per-block scale vector ------------------------------------------------
template <int G>
struct Lanes;

template <>
struct Lanes<1> {
    using I = __m128i;
    using F = __m128;
    static I set1_8(char c) { return _mm_set1_epi8(c); }
    static I zero() { return _mm_setzero_si128(); }
    static F zerof() { return _mm_setzero_ps(); }
    // lane g = the 16 bytes at p + g * stride
    static I load(const void* p, size_t) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
    static F loadf(const float* p) { return _mm_loadu_ps(p); }
    static I loadi(const int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
    // Lane g = the fp16 field `off` bytes into block g (blocks `stride` bytes apart) of the 4 rows, as floats.
    static F fp16x4(const uint8_t* const w[4], size_t off, size_t) {
        return _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(gather_fp16x4(w, off))));
    }
    static __m128 sum_lanes(F v) { return v; }
};

template <>
struct Lanes<2> {
    using I = __m256i;
    using F = __m256;
    static I set1_8(char c) { return _mm256_set1_epi8(c); }
    static I zero() { return _mm256_setzero_si256(); }
    static F zerof() { return _mm256_setzero_ps(); }
    static I load(const void* p, size_t stride) {
        const auto* b = static_cast<const uint8_t*>(p);
        return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b))),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + stride)), 1);
    }
    static F loadf(const float* p) { return _mm256_loadu_ps(p); }
    static I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static F fp16x4(const uint8_t* const w[4], size_t off, size_t stride) {
        const long long lo = static_cast<long long>(gather_fp16x4(w, off));
        const long long hi = static_cast<long long>(gather_fp16x4(w, off + stride));
        return _mm256_cvtph_ps(_mm_set_epi64x(hi, lo));
    }
    static __m128 sum_lanes(F v) { return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); }
};

#if defined(__AVX512F__) && defined(__AVX512BW__)
template <>
struct Lanes<4> {
    using I = __m512i;
    using F = __m512;
    static I set1_8(char c) { return _mm512_set1_epi8(c); }
    static I zero() { return _mm512_setzero_si512(); }
    static F zerof() { return _mm512_setzero_ps(); }
    static I load(const void* p, size_t stride) {
        const auto* b = static_cast<const uint8_t*>(p);
        const __m256i lo = Lanes<2>::load(b, stride), hi = Lanes<2>::load(b + 2 * stride, stride);
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    static F loadf(const float* p) { return _mm512_loadu_ps(p); }
    static I loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
    static F fp16x4(const uint8_t* const w[4], size_t off, size_t stride) {
        const __m256i h = _mm256_set_epi64x(static_cast<long long>(gather_fp16x4(w, off + 3 * stride)),
                                            static_cast<long long>(gather_fp16x4(w, off + 2 * stride)),
                                            static_cast<long long>(gather_fp16x4(w, off + stride)),
                                            static_cast<long long>(gather_fp16x4(w, off)));
        return _mm512_cvtph_ps(h);
    }
    static __m128 sum_lanes(F v) {
        const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        return Lanes<2>::sum_lanes(h);
    }
};
#endif

// Block fields by byte offset: rows and columns need not be aligned for the blocks' fp16 members.
template <class B>
inline const uint8_t* field(const void* base, int64_t b, size_t off) {
    return static_cast<const uint8_t*>(base) + b * static_cast<int64_t>(sizeof(B)) + off;
}
inline float load_f16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// Heap scratch owned by one call (std::unique_ptr<uint8_t[]> would be a template shared with other TUs).
struct Scratch {
    explicit Scratch(size_t n) : p(new uint8_t[n]) {}
    ~Scratch() { delete[] p; }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    uint8_t* p;
};

// ---- quantized formats ---------------------------------------------------------------------------------------
// Per activation column the driver first builds a Prep: block scales (and sums) as floats, each repeated 4 times
// so that one load gives the per-lane vector for any G. A format supplies:
//   prepare()      the Prep of one activation column (once per call, shared by all row tiles)
//   decode()       one weight row's block(s) into registers
//   dot()          partial integer dot products of one row per lane
//   reduce()       four rows' partials -> int32 [r0 r1 r2 r3] per lane
//   scales()       the 4 rows' fp16 scales of the block(s) as floats
//   accumulate()   acc += the block's float contribution

// q4_0 / q4_1 weights: unsigned nibbles against signed q8 activations, so maddubs takes them as they are.
template <class Wb, class Ab>
struct Nibbles {
    using W = Wb;
    using A = Ab;
    template <int G>
    struct Weights {
        typename Lanes<G>::I lo, hi;  // values 0-15 and 16-31 of the block
    };
    template <int G>
    static Weights<G> decode(const uint8_t* row, int64_t b) {
        using L = Lanes<G>;
        const auto raw = L::load(field<W>(row, b, offsetof(W, qs)), sizeof(W));
        const auto m = L::set1_8(0x0f);
        return {v_and(raw, m), v_and(v_srli16<4>(raw), m)};
    }
    template <int G>
    struct Act {
        typename Lanes<G>::I lo, hi;
    };
    template <int G, class Prep>
    static Act<G> load_act(const Prep& p, int64_t b) {  // straight from the activation blocks
        const uint8_t* qs = field<A>(p.act, b, offsetof(A, qs));
        return {Lanes<G>::load(qs, sizeof(A)), Lanes<G>::load(qs + 16, sizeof(A))};
    }
    // int16 pair sums: |lane| <= 2 * (2 * 15 * 128) = 7680
    template <int G>
    static typename Lanes<G>::I dot(const Weights<G>& w, const Act<G>& a) {
        return v_add16(v_maddubs(w.lo, a.lo), v_maddubs(w.hi, a.hi));
    }
    // Stays in int16 while the sums fit (4 lanes per row <= 30720), then one madd widens: fewer multiplies than
    // widening each row on its own.
    template <class I>
    static I reduce(I p0, I p1, I p2, I p3) {
        const I t01 = v_add16(v_unpacklo16(p0, p1), v_unpackhi16(p0, p1));  // r0 r1 r0 r1 ..
        const I t23 = v_add16(v_unpacklo16(p2, p3), v_unpackhi16(p2, p3));  // r2 r3 r2 r3 ..
        const I u = v_add16(v_unpacklo32(t01, t23), v_unpackhi32(t01, t23));  // r0 r1 r2 r3 r0 r1 r2 r3
        const I pairs = v_shuffle8(u, bcast_lanes<I>(_mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15)));
        return v_madd(pairs, bcast_lanes<I>(_mm_set1_epi16(1)));  // r0 r0 r1 r1 .. -> r0 r1 r2 r3
    }
};

// q4_0 x q8_0: sum((q - 8) * a) = sum(q * a) - 8 * sum(a), with 8 * sum(a) from the Prep.
struct Q4_0 : Nibbles<block_q4_0, block_q8_0> {
    struct Prep {
        float* d;      // activation scale, x4 per block
        int32_t* off;  // 8 * sum(a.qs), x4 per block
        const void* act;
    };
    static size_t prep_bytes(int64_t nb) { return static_cast<size_t>(nb) * 32; }
    static Prep prepare(const void* act, int64_t nb, uint8_t* buf) {
        Prep p{reinterpret_cast<float*>(buf), reinterpret_cast<int32_t*>(buf + nb * 16), act};
        for (int64_t b = 0; b < nb; ++b) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(field<A>(act, b, offsetof(A, qs))));
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);  // exact: |pair| <= 256
            const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));  // the total in every lane
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p.off + 4 * b), _mm_slli_epi32(s, 3));
            _mm_storeu_ps(p.d + 4 * b, _mm_set1_ps(load_f16(field<A>(act, b, offsetof(A, d)))));
        }
        return p;
    }
    template <int G>
    struct Scales {
        typename Lanes<G>::F d;
    };
    template <int G>
    static Scales<G> scales(const uint8_t* const w[4], int64_t b) {
        return {Lanes<G>::fp16x4(w, b * sizeof(W), sizeof(W))};
    }
    template <int G>
    static typename Lanes<G>::F accumulate(typename Lanes<G>::I s, const Scales<G>& sc, const Prep& p, int64_t b,
                                           typename Lanes<G>::F acc) {
        using L = Lanes<G>;
        const auto sumi = v_sub32(s, L::loadi(p.off + 4 * b));
        return v_fma(v_cvt(sumi), v_mul(sc.d, L::loadf(p.d + 4 * b)), acc);
    }
};

// q4_1 x q8_1: d_w d_a sum(q * a) + m_w s_a, with s_a = d_a sum(a) from the activation block.
struct Q4_1 : Nibbles<block_q4_1, block_q8_1> {
    struct Prep {
        float* d;  // x4 per block
        float* s;  // x4 per block
        const void* act;
    };
    static size_t prep_bytes(int64_t nb) { return static_cast<size_t>(nb) * 32; }
    static Prep prepare(const void* act, int64_t nb, uint8_t* buf) {
        Prep p{reinterpret_cast<float*>(buf), reinterpret_cast<float*>(buf + nb * 16), act};
        for (int64_t b = 0; b < nb; ++b) {
            _mm_storeu_ps(p.d + 4 * b, _mm_set1_ps(load_f16(field<A>(act, b, offsetof(A, d)))));
            _mm_storeu_ps(p.s + 4 * b, _mm_set1_ps(load_f16(field<A>(act, b, offsetof(A, s)))));
        }
        return p;
    }
    template <int G>
    struct Scales {
        typename Lanes<G>::F d, m;
    };
    template <int G>
    static Scales<G> scales(const uint8_t* const w[4], int64_t b) {
        return {Lanes<G>::fp16x4(w, b * sizeof(W), sizeof(W)), Lanes<G>::fp16x4(w, b * sizeof(W) + 2, sizeof(W))};
    }
    template <int G>
    static typename Lanes<G>::F accumulate(typename Lanes<G>::I s, const Scales<G>& sc, const Prep& p, int64_t b,
                                           typename Lanes<G>::F acc) {
        using L = Lanes<G>;
        acc = v_fma(sc.m, L::loadf(p.s + 4 * b), acc);
        return v_fma(v_cvt(s), v_mul(sc.d, L::loadf(p.d + 4 * b)), acc);
    }
};

// q8_0 x q8_0 over the full int8 range (-128 * -128 included), which maddubs cannot do: 16-bit madd instead.
// Weights widen with one unpack each as w * 256 (0 in the low byte), activations are sign-extended once per
// call into the Prep; the block sums are multiples of 256 (|sum| <= 2^27) and shift back exactly.
struct Q8_0 {
    using W = block_q8_0;
    using A = block_q8_0;
    struct Prep {
        float* d;      // x4 per block
        int16_t* a16;  // 32 per block
    };
    static size_t prep_bytes(int64_t nb) { return static_cast<size_t>(nb) * (16 + 64); }
    static Prep prepare(const void* act, int64_t nb, uint8_t* buf) {
        Prep p{reinterpret_cast<float*>(buf), reinterpret_cast<int16_t*>(buf + nb * 16)};
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* qs = field<A>(act, b, offsetof(A, qs));
            const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
            const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16));
            auto* dst = reinterpret_cast<__m256i*>(p.a16 + 32 * b);
            _mm256_storeu_si256(dst, _mm256_cvtepi8_epi16(lo));
            _mm256_storeu_si256(dst + 1, _mm256_cvtepi8_epi16(hi));
            _mm_storeu_ps(p.d + 4 * b, _mm_set1_ps(load_f16(field<A>(act, b, offsetof(A, d)))));
        }
        return p;
    }
    template <int G>
    struct Weights {
        typename Lanes<G>::I lo, hi;  // raw bytes 0-15, 16-31
    };
    template <int G>
    static Weights<G> decode(const uint8_t* row, int64_t b) {
        const uint8_t* qs = field<W>(row, b, offsetof(W, qs));
        return {Lanes<G>::load(qs, sizeof(W)), Lanes<G>::load(qs + 16, sizeof(W))};
    }
    template <int G>
    struct Act {
        const int16_t* a16;
    };
    template <int G>
    static Act<G> load_act(const Prep& p, int64_t b) {
        return {p.a16 + 32 * b};
    }
    template <int G>
    static typename Lanes<G>::I dot(const Weights<G>& w, const Act<G>& a) {
        using L = Lanes<G>;
        const auto z = L::zero();
        const auto ld = [&](int k) { return L::load(a.a16 + 8 * k, 64); };  // 8 values of each block
        const auto s01 = v_add32(v_madd(v_unpacklo8(z, w.lo), ld(0)), v_madd(v_unpackhi8(z, w.lo), ld(1)));
        const auto s23 = v_add32(v_madd(v_unpacklo8(z, w.hi), ld(2)), v_madd(v_unpackhi8(z, w.hi), ld(3)));
        return v_add32(s01, s23);
    }
    template <class I>
    static I reduce(I m0, I m1, I m2, I m3) {
        const I t01 = v_add32(v_unpacklo32(m0, m1), v_unpackhi32(m0, m1));  // r0 r1 r0 r1
        const I t23 = v_add32(v_unpacklo32(m2, m3), v_unpackhi32(m2, m3));  // r2 r3 r2 r3
        return v_add32(v_unpacklo64(t01, t23), v_unpackhi64(t01, t23));
    }
    template <int G>
    using Scales = Q4_0::Scales<G>;
    template <int G>
    static Scales<G> scales(const uint8_t* const w[4], int64_t b) {
        return {Lanes<G>::fp16x4(w, b * sizeof(W), sizeof(W))};
    }
    template <int G>
    static typename Lanes<G>::F accumulate(typename Lanes<G>::I s, const Scales<G>& sc, const Prep& p, int64_t b,
                                           typename Lanes<G>::F acc) {
        return v_fma(v_cvt(v_srai32<8>(s)), v_mul(sc.d, Lanes<G>::loadf(p.d + 4 * b)), acc);
    }
};

// The integer part of block(s) b of a 4-row x C-column tile: per column the rows' sums [r0 r1 r2 r3] per lane.
template <class Fmt, int G, int C>
struct BlockSums {
    typename Lanes<G>::I s[C];
    typename Fmt::template Scales<G> sc;
    int64_t b;
};

template <class Fmt, int G, int C>
inline BlockSums<Fmt, G, C> block_sums(const uint8_t* const w[4], const typename Fmt::Prep* p, int64_t b) {
    BlockSums<Fmt, G, C> out;
    typename Fmt::template Weights<G> wr[4];
    for (int r = 0; r < 4; ++r) wr[r] = Fmt::template decode<G>(w[r], b);
    for (int c = 0; c < C; ++c) {
        const auto av = Fmt::template load_act<G>(p[c], b);
        out.s[c] = Fmt::reduce(Fmt::dot(wr[0], av), Fmt::dot(wr[1], av), Fmt::dot(wr[2], av), Fmt::dot(wr[3], av));
    }
    out.sc = Fmt::template scales<G>(w, b);
    out.b = b;
    return out;
}

// acc[c] += blocks [b, b_end) of a 4-row tile, G blocks per step ((b_end - b) % G == 0).
// Software-pipelined: a block's float part is issued after the next block's integer part, so that its long
// integer -> float -> fma dependency chain overlaps independent work (Zen1's window holds ~1.5 blocks).
// pf is where the next tile's rows start: those bytes are prefetched at the pace this tile is read, because
// 4 interleaved short rows are not streams the hardware prefetcher picks up.
template <class Fmt, int G, int C>
inline void tile_blocks(const uint8_t* const w[4], const typename Fmt::Prep* p, int64_t b, int64_t b_end,
                        typename Lanes<G>::F acc_out[C], const uint8_t* pf) {
    if (b >= b_end) return;
    constexpr size_t step = 4 * sizeof(typename Fmt::W);  // tile bytes per block
    typename Lanes<G>::F acc[C];  // local copy: stores through acc_out could alias the Prep, pinning it in memory
    for (int c = 0; c < C; ++c) acc[c] = acc_out[c];
    const auto add = [&](const BlockSums<Fmt, G, C>& bs) {
        for (int c = 0; c < C; ++c) acc[c] = Fmt::accumulate(bs.s[c], bs.sc, p[c], bs.b, acc[c]);
    };
    auto prev = block_sums<Fmt, G, C>(w, p, b);
    for (b += G; b < b_end; b += G) {
        for (size_t o = 0; o < G * step; o += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + b * step + o), _MM_HINT_T0);
        const auto cur = block_sums<Fmt, G, C>(w, p, b);
        add(prev);
        prev = cur;
    }
    add(prev);
    for (int c = 0; c < C; ++c) acc_out[c] = acc[c];
}

// Rows in tiles of 4 (a short last tile repeats its last row and stores only the real ones).
template <class Fmt, int G, int C>
void gemm_rows(int64_t nb, const uint8_t* w, size_t ldw, int nr, const typename Fmt::Prep* p, float* out, size_t ldo) {
    const int64_t nb_main = nb / G * G;
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const uint8_t* wr[4];
        for (int r = 0; r < 4; ++r) wr[r] = w + static_cast<size_t>(r0 + r < nr ? r0 + r : nr - 1) * ldw;
        const uint8_t* pf = r0 + 4 < nr ? w + static_cast<size_t>(r0 + 4) * ldw : wr[0];  // next tile
        typename Lanes<G>::F acc[C];
        __m128 acc1[C];
        for (int c = 0; c < C; ++c) acc[c] = Lanes<G>::zerof(), acc1[c] = _mm_setzero_ps();
        tile_blocks<Fmt, G, C>(wr, p, 0, nb_main, acc, pf);
        if (G > 1) tile_blocks<Fmt, 1, C>(wr, p, nb_main, nb, acc1, pf);
        for (int c = 0; c < C; ++c) {
            const __m128 v = _mm_add_ps(Lanes<G>::sum_lanes(acc[c]), acc1[c]);
            float* o = out + c * ldo + r0;
            if (nr - r0 >= 4) {
                _mm_storeu_ps(o, v);
            } else {
                alignas(16) float t[4];
                _mm_store_ps(t, v);
                for (int r = 0; r < nr - r0; ++r) o[r] = t[r];
            }
        }
    }
}

// The gemm_fn: activation columns in groups of up to 4, each prepared once and reused by every row tile.
template <class Fmt, int G>
void gemm_quant(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                size_t ldo) {
    const int64_t nb = n / QK;
    const size_t pb = Fmt::prep_bytes(nb);
    Scratch buf((nc < 4 ? nc : 4) * pb);
    const auto* wb = static_cast<const uint8_t*>(w);
    for (int c0 = 0; c0 < nc; c0 += 4) {
        const int C = nc - c0 < 4 ? nc - c0 : 4;
        typename Fmt::Prep p[4];
        for (int c = 0; c < C; ++c) p[c] = Fmt::prepare(static_cast<const uint8_t*>(a) + (c0 + c) * lda, nb, buf.p + c * pb);
        float* o = out + c0 * ldo;
        switch (C) {
            case 1: gemm_rows<Fmt, G, 1>(nb, wb, ldw, nr, p, o, ldo); break;
            case 2: gemm_rows<Fmt, G, 2>(nb, wb, ldw, nr, p, o, ldo); break;
            case 3: gemm_rows<Fmt, G, 3>(nb, wb, ldw, nr, p, o, ldo); break;
            default: gemm_rows<Fmt, G, 4>(nb, wb, ldw, nr, p, o, ldo); break;
        }
    }
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
// fusion primitives (avx2_fusion.cpp)
float max(const float* x, int64_t n);
double sum_exp(const float* x, int64_t n, float m, float s, double* sum_dx);
void lincomb(float* out, const float* x, float a, const float* y, float b, float c, int64_t n);
void mix_exp(float* out, const float* x, float ox, const float* y, float oy, int64_t n);
int topk(const float* x, int64_t n, int k, int32_t* ids, float* vals);
}  // namespace floe::x86::avx2
