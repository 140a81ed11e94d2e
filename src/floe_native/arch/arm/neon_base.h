// NEON basics shared by the "neon" (armv7 + aarch64) and "neon_dotprod" (aarch64 + dotprod) variants: one name per
// operation for both ISAs (polyfills), fp16 conversions, and the vector exp / silu. The kernels built on them are in
// neon_gemm.h, neon_ops.h and neon_fusion.h; neon_common.h assembles the table. The scalar reference (ref/) is the
// specification and the tails of every loop call its out-of-line helpers.
//
// Linkage: everything in these headers sits in an unnamed namespace on purpose. The two including files are
// compiled with different -march flags; an inline function with external linkage would be emitted by both and
// merged by the linker, and the armv8.2 copy could then run on a Cortex-A72 (SIGILL). For the same reason they
// call no inline function of another floe header (fp16_to_fp32 & co.): fp16 goes through NEON or through floe::ref.
//
// armv7 notes: no vpaddq/vaddvq/vcvtnq/vdivq/float64x2, no vfmaq without VFPv4, no fp16 conversion without neon-fp16
// (polyfilled below), and NEON flushes subnormals to zero: code paths where that could change a result either
// avoid subnormal intermediates or fall back to the scalar reference.
#pragma once

#if !defined(__ARM_NEON) && !defined(__ARM_NEON__)
#error "the NEON kernels need NEON (armv7: -mfpu=neon)"
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

}  // namespace neon
}  // namespace
}  // namespace floe
