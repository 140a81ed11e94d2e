// NEON fusion primitives (see kernels.h for the contracts). Linkage as in neon_base.h: everything here has internal
// linkage and calls only ref's out-of-line helpers (the scalar tails).
// armv7: NEON flushes subnormals to zero, so lincomb / sum_exp treat |values| < FLT_MIN as 0 there (ref does not);
// logits and log-probs that small carry no information, and aarch64 is exact.
#pragma once
#include "neon_base.h"

namespace floe {
namespace {
namespace neon {

constexpr int64_t kSumBlock = 512;  // floats summed per lane in float before going to the double running sum

inline float32x4_t ninf_f32() { return vdupq_n_f32(-__builtin_inff()); }

// max(acc, x) that skips NaN in x (aarch64 FMAXNM; armv7 VMAX returns NaN, so NaN lanes become -inf first)
inline float32x4_t max_skip_nan(float32x4_t acc, float32x4_t x) {
#if FLOE_NEON_A64
    return vmaxnmq_f32(acc, x);
#else
    return vmaxq_f32(acc, vbslq_f32(vceqq_f32(x, x), x, ninf_f32()));
#endif
}

inline float32x4_t nan_to(float32x4_t v, float32x4_t r) { return vbslq_f32(vceqq_f32(v, v), v, r); }

// A product rounded on its own: GCC would otherwise contract it with the following add into an FMA (ref never does).
inline float32x4_t mul_rounded(float32x4_t a, float32x4_t b) {
    float32x4_t p = vmulq_f32(a, b);
    __asm__("" : "+w"(p));
    return p;
}

// e where d > lo, else 0 (also for NaN d): terms at or below kExpCut count as 0, as in ref
inline float32x4_t cut(float32x4_t e, float32x4_t d, float32x4_t lo) {
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), vcgtq_f32(d, lo)));
}

inline float max(const float* x, int64_t n) {
    float32x4_t m[4] = {ninf_f32(), ninf_f32(), ninf_f32(), ninf_f32()};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int u = 0; u < 4; ++u) m[u] = max_skip_nan(m[u], vld1q_f32(x + i + 4 * u));
    const float mv = hmax_f32(vmaxq_f32(vmaxq_f32(m[0], m[1]), vmaxq_f32(m[2], m[3])));
    const float mt = ref::max(x + i, n - i);
    return mt > mv ? mt : mv;
}

inline void add_block(double& acc, float32x4_t v) {
#if FLOE_NEON_A64
    acc += vaddvq_f64(vaddq_f64(vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v)));
#else
    acc += static_cast<double>(hsum_f32(v));
#endif
}

template <bool kDx>
inline double sum_exp_impl(const float* x, int64_t n, float m, float s, double* sum_dx) {
    const float32x4_t vm = vdupq_n_f32(m), vs = vdupq_n_f32(s), lo = vdupq_n_f32(kExpCut);
    const int64_t n4 = n / 4 * 4;
    double sum = 0.0, sdx = 0.0;
    for (int64_t b = 0; b < n4; b += kSumBlock) {
        const int64_t end = b + kSumBlock < n4 ? b + kSumBlock : n4;
        float32x4_t se[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}, sd[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        const auto step = [&](int64_t i, int u) {
            const float32x4_t d = vmulq_f32(vs, vsubq_f32(vld1q_f32(x + i), vm));
            const float32x4_t dc = vmaxq_f32(nan_to(d, lo), lo);
            const float32x4_t e = cut(exp_f32(dc), d, lo);
            se[u] = vaddq_f32(se[u], e);
            if (kDx) sd[u] = fma_f32(sd[u], e, dc);
        };
        int64_t i = b;
        for (; i + 8 <= end; i += 8) step(i, 0), step(i + 4, 1);
        if (i < end) step(i, 0);
        add_block(sum, vaddq_f32(se[0], se[1]));
        if (kDx) add_block(sdx, vaddq_f32(sd[0], sd[1]));
    }
    double tail_dx = 0.0;
    sum += ref::sum_exp(x + n4, n - n4, m, s, kDx ? &tail_dx : nullptr);
    if (kDx) *sum_dx = sdx + tail_dx;
    return sum;
}

inline double sum_exp(const float* x, int64_t n, float m, float s, double* sum_dx) {
    return sum_dx ? sum_exp_impl<true>(x, n, m, s, sum_dx) : sum_exp_impl<false>(x, n, m, s, nullptr);
}

inline void lincomb(float* out, const float* x, float a, const float* y, float b, float c, int64_t n) {
    const float32x4_t va = vdupq_n_f32(a), vb = vdupq_n_f32(b), vc = vdupq_n_f32(c);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = mul_rounded(va, vld1q_f32(x + i));
        if (y) v = vaddq_f32(v, mul_rounded(vb, vld1q_f32(y + i)));
        vst1q_f32(out + i, nan_to(vaddq_f32(v, vc), ninf_f32()));
    }
    ref::lincomb(out + i, x + i, a, y ? y + i : nullptr, b, c, n - i);
}

inline void mix_exp(float* out, const float* x, float ox, const float* y, float oy, int64_t n) {
    const float32x4_t vox = vdupq_n_f32(ox), voy = vdupq_n_f32(oy), lo = vdupq_n_f32(kExpCut);
    const auto term = [&](const float* p, float32x4_t o) {
        const float32x4_t t = vaddq_f32(vld1q_f32(p), o);
        return cut(exp_f32(vmaxq_f32(nan_to(t, lo), lo)), t, lo);
    };
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = term(x + i, vox);
        if (y) v = vaddq_f32(v, term(y + i, voy));
        vst1q_f32(out + i, v);
    }
    ref::mix_exp(out + i, x + i, ox, y ? y + i : nullptr, oy, n - i);
}

inline int topk(const float* x, int64_t n, int k, int32_t* ids, float* vals) {
    TopKBuffer h;
    h.k = k;
    float32x4_t thr = vdupq_n_f32(h.thr);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32x4_t hit = vcgtq_f32(vld1q_f32(x + i), thr);  // false for NaN
        for (int u = 1; u < 4; ++u) hit = vorrq_u32(hit, vcgtq_f32(vld1q_f32(x + i + 4 * u), thr));
        if (any_u32(hit)) {
            ref::topk_push(&h, x + i, 16, i);
            thr = vdupq_n_f32(h.thr);
        }
    }
    ref::topk_push(&h, x + i, n - i, i);
    return ref::topk_finish(&h, ids, vals);
}

}  // namespace neon
}  // namespace
}  // namespace floe
