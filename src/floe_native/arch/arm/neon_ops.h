// NEON f32 ops: rmsnorm, softmax, swiglu, rope. Linkage: see neon_base.h.
#pragma once
#include "neon_base.h"

namespace floe {
namespace {
namespace neon {

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

// FCVTN / FCVTL: round to nearest even as FPCR has it (RNE, no flush: the Linux default), exact widening.
// armv7 has no half conversion in NEON without neon-fp16: the reference does it.
inline void round_f16(float* x, int64_t n) {
    int64_t i = 0;
#if FLOE_NEON_A64
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vcvt_f32_f16(vcvt_f16_f32(vld1q_f32(x + i))));
#endif
    ref::round_f16(x + i, n - i);
}

}  // namespace neon
}  // namespace
}  // namespace floe
