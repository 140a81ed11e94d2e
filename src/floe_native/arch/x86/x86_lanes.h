// Lane-width building blocks of the quantized gemm (x86_gemm.h), for 128- and 256-bit vectors.
//
// Quantized dot products work on "lanes": a 128-bit lane holds one 32-value block (its two 16-byte halves in
// separate registers), so the same code runs on __m128i (G = 1 block per step) and __m256i (G = 2); every integer
// op used is lane-local. No 512-bit form: on Zen4 the AVX-512 variants stream weights faster with 256-bit steps
// (EVEX encoding, 32 registers) than they did with 512-bit ones (q4_0 49152 x 576, 1 thread: 850-905 -> 785 us).
// Linkage: see x86_base.h.
#pragma once
#include "x86_base.h"

namespace floe::x86 {
namespace {

// ---- lane-local integer / float ops, overloaded by width ---------------------------------------------------
inline __m128i v_and(__m128i a, __m128i b) { return _mm_and_si128(a, b); }
inline __m128i v_xor(__m128i a, __m128i b) { return _mm_xor_si128(a, b); }
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
inline __m256i v_xor(__m256i a, __m256i b) { return _mm256_xor_si256(a, b); }
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

// ---- v_dpbusd(acc, u, s): acc + per int32 the sum of its 4 products u8 x s8 (exact, no saturation) ------------
// VNNI's vpdpbusd: the EVEX form with AVX512_VNNI + VL, the VEX form with AVX-VNNI (128/256 bits).
// FLOE_DPBUSD_EMULATED builds it from AVX2 ops instead, so that a CPU without VNNI still runs the VNNI code path
// in the tests (tests/native/test_vnni_emu.cpp); it is slower than the maddubs path and never dispatched.
#if defined(FLOE_DPBUSD_EMULATED)
// Bytes widened in place to int16 (u zero-, s sign-extended; even and odd bytes apart), then madd: int32 sums of
// products (4k, 4k+2) and (4k+1, 4k+3), |each| <= 2 * 255 * 128.
inline __m256i v_dpbusd(__m256i acc, __m256i u, __m256i s) {
    const __m256i u_even = _mm256_and_si256(u, _mm256_set1_epi16(0xff)), u_odd = _mm256_srli_epi16(u, 8);
    const __m256i s_even = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8), s_odd = _mm256_srai_epi16(s, 8);
    const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(u_even, s_even), _mm256_madd_epi16(u_odd, s_odd));
    return _mm256_add_epi32(acc, p);
}
inline __m128i v_dpbusd(__m128i acc, __m128i u, __m128i s) {
    return _mm256_castsi256_si128(
        v_dpbusd(_mm256_castsi128_si256(acc), _mm256_castsi128_si256(u), _mm256_castsi128_si256(s)));
}
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
inline __m128i v_dpbusd(__m128i acc, __m128i u, __m128i s) { return _mm_dpbusd_epi32(acc, u, s); }
inline __m256i v_dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
#elif defined(__AVXVNNI__)
inline __m128i v_dpbusd(__m128i acc, __m128i u, __m128i s) { return _mm_dpbusd_avx_epi32(acc, u, s); }
inline __m256i v_dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
#endif

// The same 128-bit constant in every lane.
template <class I>
inline I bcast_lanes(__m128i x);
template <>
inline __m128i bcast_lanes<__m128i>(__m128i x) { return x; }
template <>
inline __m256i bcast_lanes<__m256i>(__m128i x) { return _mm256_broadcastsi128_si256(x); }

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
    static I loadc(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }  // G lanes, contiguous
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
    static I loadc(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
    static F loadf(const float* p) { return _mm256_loadu_ps(p); }
    static I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static F fp16x4(const uint8_t* const w[4], size_t off, size_t stride) {
        const long long lo = static_cast<long long>(gather_fp16x4(w, off));
        const long long hi = static_cast<long long>(gather_fp16x4(w, off + stride));
        return _mm256_cvtph_ps(_mm_set_epi64x(hi, lo));
    }
    static __m128 sum_lanes(F v) { return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); }
};


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

}  // namespace
}  // namespace floe::x86
