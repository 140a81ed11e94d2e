// NEON kernels shared by the "neon" (armv7 + aarch64) and "neon_dotprod" (aarch64 + dotprod) variants.
// Every kernel is a template over the int8 dot-product policy (DotNeon here, DotSdot in neon_dotprod.cpp); the
// scalar reference (ref/) is the specification and the tails of every loop call its out-of-line helpers.
//
// Linkage: everything here sits in an unnamed namespace on purpose. The two including files are compiled with
// different -march flags; an inline function with external linkage would be emitted by both and merged by the
// linker, and the armv8.2 copy could then run on a Cortex-A72 (SIGILL). For the same reason this file calls no
// inline function of another floe header (fp16_to_fp32 & co.): fp16 goes through NEON or through floe::ref.
//
// armv7 notes: no vpaddq/vaddvq/vcvtnq/vdivq/float64x2, no vfmaq without VFPv4, no fp16 conversion without neon-fp16
// (polyfilled below), and NEON flushes subnormals to zero: code paths where that could change a result either
// avoid subnormal intermediates or fall back to the scalar reference.
#pragma once

#if !defined(__ARM_NEON) && !defined(__ARM_NEON__)
#error "neon_common.h needs NEON (armv7: -mfpu=neon)"
#endif

#if defined(__FAST_MATH__)
#error "the NEON kernels promise results identical to the reference: build without -ffast-math"
#endif

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

#include "floe/kernels.h"

#if defined(__aarch64__)
#define FLOE_NEON_A64 1
#else
#define FLOE_NEON_A64 0
#endif

namespace floe {
namespace {  // internal linkage, see above
namespace neon {

// ---------------------------------------------------------------------------------------------------------------
// Polyfills: one name for both ISAs.

inline float32x4_t fma_f32(float32x4_t acc, float32x4_t a, float32x4_t b) {  // acc + a * b
#if FLOE_NEON_A64 || defined(__ARM_FEATURE_FMA)
    return vfmaq_f32(acc, a, b);
#else
    return vmlaq_f32(acc, a, b);  // VFPv3 NEON: multiply, then add
#endif
}

inline float32x4_t fms_f32(float32x4_t acc, float32x4_t a, float32x4_t b) {  // acc - a * b
#if FLOE_NEON_A64 || defined(__ARM_FEATURE_FMA)
    return vfmsq_f32(acc, a, b);
#else
    return vmlsq_f32(acc, a, b);
#endif
}

// {a0+a1, a2+a3, b0+b1, b2+b3}
inline int32x4_t padd_s32(int32x4_t a, int32x4_t b) {
#if FLOE_NEON_A64
    return vpaddq_s32(a, b);
#else
    return vcombine_s32(vpadd_s32(vget_low_s32(a), vget_high_s32(a)), vpadd_s32(vget_low_s32(b), vget_high_s32(b)));
#endif
}

inline float32x4_t padd_f32(float32x4_t a, float32x4_t b) {
#if FLOE_NEON_A64
    return vpaddq_f32(a, b);
#else
    return vcombine_f32(vpadd_f32(vget_low_f32(a), vget_high_f32(a)), vpadd_f32(vget_low_f32(b), vget_high_f32(b)));
#endif
}

// {sum(v0), sum(v1), sum(v2), sum(v3)}: four horizontal sums at once (lanes end up "one per row").
inline int32x4_t hsum4_s32(int32x4_t v0, int32x4_t v1, int32x4_t v2, int32x4_t v3) {
    return padd_s32(padd_s32(v0, v1), padd_s32(v2, v3));
}
inline float32x4_t hsum4_f32(float32x4_t v0, float32x4_t v1, float32x4_t v2, float32x4_t v3) {
    return padd_f32(padd_f32(v0, v1), padd_f32(v2, v3));
}

inline int32_t hsum_s32(int32x4_t v) {
#if FLOE_NEON_A64
    return vaddvq_s32(v);
#else
    const int32x2_t s = vadd_s32(vget_low_s32(v), vget_high_s32(v));
    return vget_lane_s32(vpadd_s32(s, s), 0);
#endif
}

inline float hsum_f32(float32x4_t v) {
#if FLOE_NEON_A64
    return vaddvq_f32(v);
#else
    const float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
}

// max ignoring NaN where the ISA can (fmax semantics, as ref's absmax); armv7 vmax propagates NaN.
inline float32x4_t maxnm_f32(float32x4_t a, float32x4_t b) {
#if FLOE_NEON_A64
    return vmaxnmq_f32(a, b);
#else
    return vmaxq_f32(a, b);
#endif
}

inline float hmax_f32(float32x4_t v) {
#if FLOE_NEON_A64
    return vmaxnmvq_f32(v);
#else
    const float32x2_t m = vmax_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpmax_f32(m, m), 0);
#endif
}

inline bool any_u32(uint32x4_t m) {
#if FLOE_NEON_A64
    return vmaxvq_u32(m) != 0;
#else
    const uint32x2_t o = vorr_u32(vget_low_u32(m), vget_high_u32(m));
    return (vget_lane_u32(o, 0) | vget_lane_u32(o, 1)) != 0;
#endif
}

// Round to nearest, ties to even, per lane, to int32 (= nearbyint in the default rounding mode). armv7 has only
// truncating conversion: adding and subtracting 1.5 * 2^23 rounds |v| < 2^22 to an integer in NEON's fixed
// round-to-nearest-even mode, exactly (here |v| <= 127.5); the float is then an integer and converts exactly.
inline int32x4_t round_even_s32(float32x4_t v) {
#if FLOE_NEON_A64
    return vcvtnq_s32_f32(v);
#else
    const float32x4_t magic = vdupq_n_f32(0x1.8p23f);
    return vcvtq_s32_f32(vsubq_f32(vaddq_f32(v, magic), magic));
#endif
}

// Four IEEE halfs to floats, exactly (same values as floe::fp16_to_fp32, subnormals, inf and NaN included).
inline float32x4_t f16x4_to_f32(uint16x4_t h) {
#if FLOE_NEON_A64
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
#else
    // Integer rebias; subnormals are renormalized with one float subtraction whose operands and result are
    // normal floats, so NEON's flush-to-zero cannot touch them.
    const uint32x4_t x = vmovl_u16(h);
    const uint32x4_t shifted_exp = vdupq_n_u32(0x7c00u << 13);
    uint32x4_t o = vshlq_n_u32(vandq_u32(x, vdupq_n_u32(0x7fff)), 13);
    const uint32x4_t e = vandq_u32(o, shifted_exp);
    o = vaddq_u32(o, vdupq_n_u32((127 - 15) << 23));
    o = vaddq_u32(o, vandq_u32(vceqq_u32(e, shifted_exp), vdupq_n_u32((128 - 16) << 23)));  // inf / nan
    const float32x4_t sub = vsubq_f32(vreinterpretq_f32_u32(vaddq_u32(o, vdupq_n_u32(1u << 23))),
                                      vreinterpretq_f32_u32(vdupq_n_u32(113u << 23)));
    o = vbslq_u32(vceqq_u32(e, vdupq_n_u32(0)), vreinterpretq_u32_f32(sub), o);  // zero / subnormal
    return vreinterpretq_f32_u32(vorrq_u32(o, vshlq_n_u32(vandq_u32(x, vdupq_n_u32(0x8000)), 16)));
#endif
}

#if !FLOE_NEON_A64
// One half to float, exactly, in core registers (the same steps as f16x4_to_f32). Used for the few scales per block
// on armv7, where the vector version's constants would take NEON registers the gemm loops need.
inline float f16_to_f32_scalar(fp16_t h) {
    uint32_t o = static_cast<uint32_t>(h & 0x7fff) << 13;
    const uint32_t e = o & (0x7c00u << 13);
    o += (127 - 15) << 23;
    if (e == (0x7c00u << 13)) {
        o += (128 - 16) << 23;  // inf / nan
    } else if (e == 0) {        // zero / subnormal: renormalize with one (exact) float subtraction
        o += 1u << 23;
        const uint32_t magic = 113u << 23;
        float f, m;
        __builtin_memcpy(&f, &o, 4);
        __builtin_memcpy(&m, &magic, 4);
        f -= m;
        __builtin_memcpy(&o, &f, 4);
    }
    o |= static_cast<uint32_t>(h & 0x8000) << 16;
    float f;
    __builtin_memcpy(&f, &o, 4);
    return f;
}
#endif

inline float32x4_t f16x4(fp16_t a, fp16_t b, fp16_t c, fp16_t d) {
#if FLOE_NEON_A64
    const uint16_t t[4] = {a, b, c, d};
    return f16x4_to_f32(vld1_u16(t));
#else
    const float t[4] = {f16_to_f32_scalar(a), f16_to_f32_scalar(b), f16_to_f32_scalar(c), f16_to_f32_scalar(d)};
    return vld1q_f32(t);
#endif
}

// float -> half, round to nearest even (as floe::fp32_to_fp16 for every non-NaN input).
inline fp16_t to_fp16(float f) {
#if FLOE_NEON_A64
    return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0);  // FCVTN, FPCR: RNE, no FZ
#else
    fp16_t h;
    ref::quantize_f16(&f, &h, 1);
    return h;
#endif
}

// expf per lane, max relative error ~2e-7 (ARM optimized-routines' algorithm, as ggml_v_expf): exp(x) = 2^n * e^b,
// |b| <= ln2/2, e^b by a degree-5 polynomial; lanes with large |n| are rebuilt with two scale factors so that
// overflow gives inf, underflow gives subnormals (aarch64) or 0, and -inf gives 0. On armv7 the fast path's
// k * j would be flushed to zero once 2^n nears FLT_MIN, so the two-factor path starts at |n| > 100 there.
inline float32x4_t exp_f32(float32x4_t x) {
    constexpr float kFastMaxN = FLOE_NEON_A64 ? 126.0f : 100.0f;
    const float32x4_t r = vdupq_n_f32(0x1.8p23f);
    const float32x4_t z = fma_f32(r, x, vdupq_n_f32(0x1.715476p+0f));
    const float32x4_t n = vsubq_f32(z, r);
    const float32x4_t b =
        fms_f32(fms_f32(x, n, vdupq_n_f32(0x1.62e4p-1f)), n, vdupq_n_f32(0x1.7f7d1cp-20f));
    const uint32x4_t e = vshlq_n_u32(vreinterpretq_u32_f32(z), 23);
    const float32x4_t k = vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(vdupq_n_f32(1.0f))));
    const uint32x4_t c = vcagtq_f32(n, vdupq_n_f32(kFastMaxN));
    const float32x4_t u = vmulq_f32(b, b);
    const float32x4_t j = fma_f32(
        vmulq_f32(vdupq_n_f32(0x1.ffffecp-1f), b),
        fma_f32(fma_f32(vdupq_n_f32(0x1.fffdb6p-2f), vdupq_n_f32(0x1.555e66p-3f), b),
                fma_f32(vdupq_n_f32(0x1.573e2ep-5f), vdupq_n_f32(0x1.0e4020p-7f), b), u),
        u);
    if (!any_u32(c)) return fma_f32(k, j, k);
    const uint32x4_t d = vandq_u32(vcleq_f32(n, vdupq_n_f32(0.0f)), vdupq_n_u32(0x82000000u));
    const float32x4_t s1 = vreinterpretq_f32_u32(vaddq_u32(d, vdupq_n_u32(0x7f000000u)));
    const float32x4_t s2 = vreinterpretq_f32_u32(vsubq_u32(e, d));
    return vbslq_f32(vcagtq_f32(n, vdupq_n_f32(192.0f)), vmulq_f32(s1, s1),
                     vbslq_f32(c, vmulq_f32(fma_f32(s2, s2, j), s1), vaddq_f32(k, vmulq_f32(k, j))));
}

// silu(g) = g / (1 + exp(-g)), per lane.
inline float32x4_t silu_f32(float32x4_t g) {
    const float32x4_t den = vaddq_f32(vdupq_n_f32(1.0f), exp_f32(vnegq_f32(g)));
#if FLOE_NEON_A64
    return vdivq_f32(g, den);
#else
    // No vector divide: reciprocal estimate + two Newton steps (~1 ulp). Huge denominators are scaled by 2^-64
    // first (numerator too) so the reciprocal stays a normal float; den = inf still gives 1/den = 0.
    const uint32x4_t big = vcgtq_f32(den, vdupq_n_f32(0x1p64f));
    const float32x4_t sc = vbslq_f32(big, vdupq_n_f32(0x1p-64f), vdupq_n_f32(1.0f));
    const float32x4_t dd = vmulq_f32(den, sc);
    float32x4_t rcp = vrecpeq_f32(dd);
    rcp = vmulq_f32(rcp, vrecpsq_f32(dd, rcp));
    rcp = vmulq_f32(rcp, vrecpsq_f32(dd, rcp));
    return vmulq_f32(vmulq_f32(g, sc), rcp);
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// int8 dot-product policy. dot_q4/dot_q8 return an int32x4 whose lanes sum to sum_i w[i] * a[i] over 32 pairs,
// w = (w0 | w1), a = (a0 | a1), exactly. dot_q4 may assume |w| <= 15 (q4 weights), dot_q8 takes any int8.

struct DotNeon {
    static int32x4_t dot_q4(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
        // |w * a| <= 15 * 128 = 1920, four products per int16 lane <= 7680: no overflow.
        int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
        p = vmlal_s8(p, vget_high_s8(w0), vget_high_s8(a0));
        p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(a1));
        p = vmlal_s8(p, vget_high_s8(w1), vget_high_s8(a1));
        return vpaddlq_s16(p);
    }
    static int32x4_t dot_q8(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
        // (-128)^2 = 16384 fits one int16 lane, two do not: widen after every multiply.
        int32x4_t s = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(a0)));
        s = vpadalq_s16(s, vmull_s8(vget_high_s8(w0), vget_high_s8(a0)));
        s = vpadalq_s16(s, vmull_s8(vget_low_s8(w1), vget_low_s8(a1)));
        s = vpadalq_s16(s, vmull_s8(vget_high_s8(w1), vget_high_s8(a1)));
        return s;
    }
};

// ---------------------------------------------------------------------------------------------------------------
// Activation quantizers: byte-identical to ref::quantize_q8_0 / q8_1 (ggml's SIMD semantics: same amax,
// d = amax / 127 and id = 127 / amax as real divisions, x * id rounded half to even, fp16 round-to-nearest-even,
// q8_1: s = fp16(sum(q) * d)).

template <typename Block, bool kSum>
inline void quantize_q8(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<Block*>(vy);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        float32x4_t v[8];
        for (int j = 0; j < 8; ++j) v[j] = vld1q_f32(x + 4 * j);
        float32x4_t m[4];
        for (int j = 0; j < 4; ++j) m[j] = maxnm_f32(vabsq_f32(v[j]), vabsq_f32(v[j + 4]));
        const float amax = hmax_f32(maxnm_f32(maxnm_f32(m[0], m[1]), maxnm_f32(m[2], m[3])));
#if !FLOE_NEON_A64
        // NEON flushes subnormal inputs: blocks this tiny (or zero, or NaN) are left to the reference.
        if (!(amax >= 0x1p-100f)) {
            if (kSum)
                ref::quantize_q8_1(x, &y[i], QK);
            else
                ref::quantize_q8_0(x, &y[i], QK);
            continue;
        }
#endif
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32x4_t q[8];
        for (int j = 0; j < 8; ++j) q[j] = round_even_s32(vmulq_n_f32(v[j], id));
        int8x16_t q8[2];  // truncating narrows, as ref's static_cast<int8_t>
        for (int j = 0; j < 2; ++j) {
            const int16x8_t lo = vcombine_s16(vmovn_s32(q[4 * j]), vmovn_s32(q[4 * j + 1]));
            const int16x8_t hi = vcombine_s16(vmovn_s32(q[4 * j + 2]), vmovn_s32(q[4 * j + 3]));
            q8[j] = vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
            vst1q_s8(y[i].qs + 16 * j, q8[j]);
        }
        y[i].d = to_fp16(d);
        if constexpr (kSum) {  // sum of the stored int8 values, as ref
            const int16x8_t s16 = vaddq_s16(vpaddlq_s8(q8[0]), vpaddlq_s8(q8[1]));
            y[i].s = to_fp16(static_cast<float>(hsum_s32(vpaddlq_s16(s16))) * d);
        }
    }
}

inline void quantize_q8_0(const float* x, void* y, int64_t n) { quantize_q8<block_q8_0, false>(x, y, n); }
inline void quantize_q8_1(const float* x, void* y, int64_t n) { quantize_q8<block_q8_1, true>(x, y, n); }

// ---------------------------------------------------------------------------------------------------------------
// Quantized gemm. A tile is 4 weight rows x NC activation columns: each weight block is unpacked once and used for
// NC columns, each activation block is loaded once and used for 4 rows. Per block, the four rows' integer sums of
// one column are reduced into the lanes of one vector (lane = row), converted and scaled as ref does:
// sum += float(sumi) * (dw * da) [+ mw * sa], so with unit scales every lane is exact.

// 4 rows x 2 columns keeps everything in aarch64's 32 registers; armv7 has 16, so it works one column at a time.
constexpr int kTileCols = FLOE_NEON_A64 ? 2 : 1;

struct FmtQ4_0 {
    using W = block_q4_0;
    using A = block_q8_0;
    static constexpr bool kMin = false;
    static void unpack(const W& b, int8x16_t& lo, int8x16_t& hi) {
        const uint8x16_t q = vld1q_u8(b.qs);
        lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
        hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
    }
    template <class Dot>
    static int32x4_t dot(int8x16_t lo, int8x16_t hi, int8x16_t a0, int8x16_t a1) {
        return Dot::dot_q4(lo, hi, a0, a1);
    }
};

struct FmtQ4_1 {
    using W = block_q4_1;
    using A = block_q8_1;
    static constexpr bool kMin = true;
    static void unpack(const W& b, int8x16_t& lo, int8x16_t& hi) {
        const uint8x16_t q = vld1q_u8(b.qs);
        lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
        hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
    }
    template <class Dot>
    static int32x4_t dot(int8x16_t lo, int8x16_t hi, int8x16_t a0, int8x16_t a1) {
        return Dot::dot_q4(lo, hi, a0, a1);
    }
};

struct FmtQ8_0 {
    using W = block_q8_0;
    using A = block_q8_0;
    static constexpr bool kMin = false;
    static void unpack(const W& b, int8x16_t& lo, int8x16_t& hi) {
        lo = vld1q_s8(b.qs);
        hi = vld1q_s8(b.qs + 16);
    }
    template <class Dot>
    static int32x4_t dot(int8x16_t lo, int8x16_t hi, int8x16_t a0, int8x16_t a1) {
        return Dot::dot_q8(lo, hi, a0, a1);
    }
};

inline void store_rows(float* out, float32x4_t v, int nrv) {
    if (nrv == 4) {
        vst1q_f32(out, v);
    } else {
        float t[4];
        vst1q_f32(t, v);
        for (int r = 0; r < nrv; ++r) out[r] = t[r];
    }
}

// w: 4 row pointers (rows past the tile's end repeat its last row), a / out: NC column pointers; nrv valid rows.
template <class Dot, class F, int NC>
inline void q_tile(int64_t nb, const typename F::W* const* w, const typename F::A* const* a, float* const* out,
                   int nrv) {
    static_assert(NC == 1 || NC == 2, "activation scales of a tile are packed in one vector");
    float32x4_t acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
        int8x16_t lo[4], hi[4];
        for (int r = 0; r < 4; ++r) F::unpack(w[r][b], lo[r], hi[r]);
        const float32x4_t dw = f16x4(w[0][b].d, w[1][b].d, w[2][b].d, w[3][b].d);
        float32x4_t mw = vdupq_n_f32(0.0f);
        float sc[4];  // activation scales: d of column 0 (and 1), then s (q8_1)
        if constexpr (F::kMin) {
            mw = f16x4(w[0][b].m, w[1][b].m, w[2][b].m, w[3][b].m);
            vst1q_f32(sc, f16x4(a[0][b].d, a[NC - 1][b].d, a[0][b].s, a[NC - 1][b].s));
        } else {
            vst1q_f32(sc, f16x4(a[0][b].d, a[NC - 1][b].d, 0, 0));
        }
        for (int c = 0; c < NC; ++c) {
            const int8x16_t a0 = vld1q_s8(a[c][b].qs), a1 = vld1q_s8(a[c][b].qs + 16);
            int32x4_t s[4];
            for (int r = 0; r < 4; ++r) s[r] = F::template dot<Dot>(lo[r], hi[r], a0, a1);
            const float32x4_t sumi = vcvtq_f32_s32(hsum4_s32(s[0], s[1], s[2], s[3]));
            const float32x4_t dd = vmulq_n_f32(dw, sc[c]);
            if constexpr (F::kMin)
                acc[c] = vaddq_f32(acc[c], fma_f32(vmulq_n_f32(mw, sc[2 + c]), sumi, dd));
            else
                acc[c] = fma_f32(acc[c], sumi, dd);
        }
    }
    for (int c = 0; c < NC; ++c) store_rows(out[c], acc[c], nrv);
}

template <class Dot, class F>
inline void gemm_q(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                   size_t ldo) {
    using W = typename F::W;
    using A = typename F::A;
    const int64_t nb = n / QK;
    const char* wb = static_cast<const char*>(w);
    const char* ab = static_cast<const char*>(a);
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const int nrv = nr - r0 < 4 ? nr - r0 : 4;
        const W* wr[4];
        for (int r = 0; r < 4; ++r)
            wr[r] = reinterpret_cast<const W*>(wb + static_cast<size_t>(r0 + (r < nrv ? r : nrv - 1)) * ldw);
        int c0 = 0;
        for (; c0 + kTileCols <= nc; c0 += kTileCols) {
            const A* ac[kTileCols];
            float* oc[kTileCols];
            for (int c = 0; c < kTileCols; ++c) {
                ac[c] = reinterpret_cast<const A*>(ab + static_cast<size_t>(c0 + c) * lda);
                oc[c] = out + static_cast<size_t>(c0 + c) * ldo + r0;
            }
            q_tile<Dot, F, kTileCols>(nb, wr, ac, oc, nrv);
        }
        for (; c0 < nc; ++c0) {
            const A* ac = reinterpret_cast<const A*>(ab + static_cast<size_t>(c0) * lda);
            float* oc = out + static_cast<size_t>(c0) * ldo + r0;
            q_tile<Dot, F, 1>(nb, wr, &ac, &oc, nrv);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// f16 / f32 gemm: same 4 x NC tiling, KU float32x4 accumulators per (row, column) pair; the n % (4 KU) tail of
// every dot product is ref::dot_f32 / ref::dot_f16_f32.

constexpr int kUnroll = FLOE_NEON_A64 ? 2 : 1;

struct RowF32 {
    using T = float;
    static void load(const float* p, float32x4_t (&x)[kUnroll]) {
        for (int u = 0; u < kUnroll; ++u) x[u] = vld1q_f32(p + 4 * u);
    }
    static float tail(int64_t n, const float* w, const float* a) { return ref::dot_f32(n, w, a); }
};

struct RowF16 {
    using T = fp16_t;
    static void load(const fp16_t* p, float32x4_t (&x)[kUnroll]) {
        if constexpr (kUnroll == 2) {
            const uint16x8_t h = vld1q_u16(p);
            x[0] = f16x4_to_f32(vget_low_u16(h));
            x[kUnroll - 1] = f16x4_to_f32(vget_high_u16(h));
        } else {
            x[0] = f16x4_to_f32(vld1_u16(p));
        }
    }
    static float tail(int64_t n, const fp16_t* w, const float* a) { return ref::dot_f16_f32(n, w, a); }
};

template <class R, int NC>
inline void f_tile(int64_t n, const typename R::T* const* w, const float* const* a, float* const* out, int nrv) {
    constexpr int kStep = 4 * kUnroll;
    // One flat array, acc[(c * 4 + r) * kUnroll + u]: GCC keeps it in registers (as acc[NC][4][kUnroll] it stored
    // the whole array to the stack on every iteration).
    constexpr int kAcc = NC * 4 * kUnroll;
    float32x4_t acc[kAcc];
    for (int i = 0; i < kAcc; ++i) acc[i] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + kStep <= n; k += kStep) {
        float32x4_t wv[4][kUnroll];
        for (int r = 0; r < 4; ++r) R::load(w[r] + k, wv[r]);
        for (int c = 0; c < NC; ++c) {
            float32x4_t av[kUnroll];
            RowF32::load(a[c] + k, av);
            for (int r = 0; r < 4; ++r)
                for (int u = 0; u < kUnroll; ++u) {
                    float32x4_t& x = acc[(c * 4 + r) * kUnroll + u];
                    x = fma_f32(x, wv[r][u], av[u]);
                }
        }
    }
    for (int c = 0; c < NC; ++c) {
        float32x4_t s[4];
        for (int r = 0; r < 4; ++r) {
            s[r] = acc[(c * 4 + r) * kUnroll];
            for (int u = 1; u < kUnroll; ++u) s[r] = vaddq_f32(s[r], acc[(c * 4 + r) * kUnroll + u]);
        }
        store_rows(out[c], hsum4_f32(s[0], s[1], s[2], s[3]), nrv);
    }
    // Tails after the stores, so that no vector is live across these calls.
    if (k < n)
        for (int c = 0; c < NC; ++c)
            for (int r = 0; r < nrv; ++r) out[c][r] += R::tail(n - k, w[r] + k, a[c] + k);
}

template <class R>
inline void gemm_f(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                   size_t ldo) {
    using T = typename R::T;
    const char* wb = static_cast<const char*>(w);
    const char* ab = static_cast<const char*>(a);
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const int nrv = nr - r0 < 4 ? nr - r0 : 4;
        const T* wr[4];
        for (int r = 0; r < 4; ++r)
            wr[r] = reinterpret_cast<const T*>(wb + static_cast<size_t>(r0 + (r < nrv ? r : nrv - 1)) * ldw);
        int c0 = 0;
        for (; c0 + kTileCols <= nc; c0 += kTileCols) {
            const float* ac[kTileCols];
            float* oc[kTileCols];
            for (int c = 0; c < kTileCols; ++c) {
                ac[c] = reinterpret_cast<const float*>(ab + static_cast<size_t>(c0 + c) * lda);
                oc[c] = out + static_cast<size_t>(c0 + c) * ldo + r0;
            }
            f_tile<R, kTileCols>(n, wr, ac, oc, nrv);
        }
        for (; c0 < nc; ++c0) {
            const float* ac = reinterpret_cast<const float*>(ab + static_cast<size_t>(c0) * lda);
            float* oc = out + static_cast<size_t>(c0) * ldo + r0;
            f_tile<R, 1>(n, wr, &ac, &oc, nrv);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// f32 ops.

// Squares in float, summed in double (as ref and ggml); mean rounded to float, then s = 1 / sqrt(mean + eps).
inline void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
    int64_t i = 0;
#if FLOE_NEON_A64
    float64x2_t acc[4] = {vdupq_n_f64(0.0), vdupq_n_f64(0.0), vdupq_n_f64(0.0), vdupq_n_f64(0.0)};
    for (; i + 8 <= n; i += 8) {
        const float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + i + 4);
        const float32x4_t a2 = vmulq_f32(a, a), b2 = vmulq_f32(b, b);
        acc[0] = vaddq_f64(acc[0], vcvt_f64_f32(vget_low_f32(a2)));
        acc[1] = vaddq_f64(acc[1], vcvt_high_f64_f32(a2));
        acc[2] = vaddq_f64(acc[2], vcvt_f64_f32(vget_low_f32(b2)));
        acc[3] = vaddq_f64(acc[3], vcvt_high_f64_f32(b2));
    }
    const double ss = vaddvq_f64(vaddq_f64(vaddq_f64(acc[0], acc[1]), vaddq_f64(acc[2], acc[3])));
#else
    const double ss = 0.0;  // no double SIMD on armv7: VFP does it all in the tail
#endif
    const float mean = static_cast<float>((ss + ref::sum_squares(n - i, x + i)) / static_cast<double>(n));
    const float s = 1.0f / __builtin_sqrtf(mean + eps);
    i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), s), vld1q_f32(weight + i)));
    ref::scale(out + i, x + i, weight + i, s, n - i);
}

inline void softmax(float* x, int64_t n) {
    float32x4_t mv[2] = {vdupq_n_f32(-__builtin_inff()), vdupq_n_f32(-__builtin_inff())};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        mv[0] = vmaxq_f32(mv[0], vld1q_f32(x + i));
        mv[1] = vmaxq_f32(mv[1], vld1q_f32(x + i + 4));
    }
    float m = hmax_f32(vmaxq_f32(mv[0], mv[1]));
    const float mt = ref::max_f32(n - i, x + i);
    m = mt > m ? mt : m;

    const float32x4_t vm = vdupq_n_f32(m);
    float32x4_t sv[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 2; ++u) {
            const float32x4_t e = exp_f32(vsubq_f32(vld1q_f32(x + i + 4 * u), vm));
            vst1q_f32(x + i + 4 * u, e);
            sv[u] = vaddq_f32(sv[u], e);
        }
    const float sum = hsum_f32(vaddq_f32(sv[0], sv[1])) + ref::exp_sub_sum(x + i, n - i, m);

    const float inv = 1.0f / sum;
    i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    ref::mul_scalar(x + i, n - i, inv);
}

inline void swiglu(float* out, const float* gate, const float* up, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(silu_f32(vld1q_f32(gate + i)), vld1q_f32(up + i)));
    ref::swiglu(out + i, gate + i, up + i, n - i);
}

// Same formula as ref::rope_head: (x0, x1) -> (x0 c - x1 s, x0 s + x1 c), four pairs per step.
inline void rope(float* x, int n_heads, int head_dim, const float* cs, bool neox) {
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; ++h, x += head_dim) {
        int i = 0;
        for (; i + 4 <= half; i += 4) {
            const float32x4x2_t t = vld2q_f32(cs + 2 * i);  // {cos}, {sin}
            float32x4_t x0, x1;
            if (neox) {
                x0 = vld1q_f32(x + i);
                x1 = vld1q_f32(x + i + half);
            } else {
                const float32x4x2_t p = vld2q_f32(x + 2 * i);
                x0 = p.val[0];
                x1 = p.val[1];
            }
            const float32x4_t y0 = vsubq_f32(vmulq_f32(x0, t.val[0]), vmulq_f32(x1, t.val[1]));
            const float32x4_t y1 = vaddq_f32(vmulq_f32(x0, t.val[1]), vmulq_f32(x1, t.val[0]));
            if (neox) {
                vst1q_f32(x + i, y0);
                vst1q_f32(x + i + half, y1);
            } else {
                float32x4x2_t p;
                p.val[0] = y0;
                p.val[1] = y1;
                vst2q_f32(x + 2 * i, p);
            }
        }
        if (i < half) ref::rope_head(x, head_dim, cs, neox, i);
    }
}

}  // namespace neon
}  // namespace
}  // namespace floe

#include "neon_fusion.h"

namespace floe {
namespace {
namespace neon {

// ---------------------------------------------------------------------------------------------------------------

template <class Dot>
constexpr Kernels make_kernels(const char* name) {
    return Kernels{
        name,
        quantize_q8_0,
        quantize_q8_1,
        gemm_q<Dot, FmtQ4_0>,
        gemm_q<Dot, FmtQ4_1>,
        gemm_q<Dot, FmtQ8_0>,
        gemm_f<RowF16>,
        gemm_f<RowF32>,
        rmsnorm,
        softmax,
        swiglu,
        rope,
        max,
        sum_exp,
        lincomb,
        mix_exp,
        topk,
    };
}

}  // namespace neon
}  // namespace
}  // namespace floe
