// AVX2 + FMA fusion primitives (see kernels.h for the contracts); the AVX-512 table reuses them: these loops are
// bound by the exp polynomial or by memory, not by vector width. Scalar tails are ref's.
#include <cmath>

#include "x86_base.h"

namespace floe::x86 {
namespace {

constexpr int64_t kBlock = 512;  // floats summed per lane in float before the running sum goes to double

inline __m256d widen_sum(__m256 v) {  // the 8 lanes as 4 doubles (pairwise), exactly
    return _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

inline double hsum_pd(__m256d v) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

// exp for x in [kExpCut, 88], where every result is a normal float: the Cephes polynomial of exp_ps (same
// accuracy, ~2e-7 relative), with n = round(x / ln2) taken from the low mantissa bits of x / ln2 + 1.5 * 2^23 and
// 2^n applied by one integer add to the exponent field. No clamping or two-step scaling: ~14 ops instead of ~22,
// which is what a pass of sums over V costs.
inline __m256 exp_normal_range(__m256 x) {
    const __m256 magic = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 p = exp_reduced(x, _mm256_sub_ps(z, magic));
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(z), 23)));
}

// max(v, lo) then min(., 88): NaN becomes lo (max returns its second operand), +inf 88
inline __m256 clamp_exp_arg(__m256 v, __m256 lo) { return _mm256_min_ps(_mm256_max_ps(v, lo), _mm256_set1_ps(88.0f)); }

inline __m256 nan_to_ninf(__m256 v) {
    return _mm256_blendv_ps(v, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

template <bool kDx>
double sum_exp_impl(const float* x, int64_t n, float m, float s, double* sum_dx) {
    const __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(kExpCut);
    const int64_t n8 = n / 8 * 8;
    __m256d acc = _mm256_setzero_pd(), acc_dx = _mm256_setzero_pd();
    for (int64_t b = 0; b < n8; b += kBlock) {
        const int64_t end = b + kBlock < n8 ? b + kBlock : n8;
        __m256 se[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, sd[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        const auto step = [&](int64_t i, int u) {
            const __m256 d = _mm256_mul_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
            const __m256 dc = clamp_exp_arg(d, lo);
            const __m256 e = _mm256_and_ps(exp_normal_range(dc), _mm256_cmp_ps(d, lo, _CMP_GT_OQ));
            se[u] = _mm256_add_ps(se[u], e);
            if (kDx) sd[u] = _mm256_fmadd_ps(e, dc, sd[u]);
        };
        int64_t i = b;
        for (; i + 16 <= end; i += 16) step(i, 0), step(i + 8, 1);  // two chains hide the polynomial's latency
        if (i < end) step(i, 0);
        acc = _mm256_add_pd(acc, widen_sum(_mm256_add_ps(se[0], se[1])));
        if (kDx) acc_dx = _mm256_add_pd(acc_dx, widen_sum(_mm256_add_ps(sd[0], sd[1])));
    }
    double tail_dx = 0.0;
    const double sum = hsum_pd(acc) + ref::sum_exp(x + n8, n - n8, m, s, kDx ? &tail_dx : nullptr);
    if (kDx) *sum_dx = hsum_pd(acc_dx) + tail_dx;
    return sum;
}

}  // namespace

namespace avx2 {

float max(const float* x, int64_t n) {
    const int64_t n32 = n / 32 * 32;
    __m256 m[4];
    for (auto& v : m) v = _mm256_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n32; i += 32)
        for (int u = 0; u < 4; ++u) m[u] = _mm256_max_ps(_mm256_loadu_ps(x + i + 8 * u), m[u]);  // NaN skipped
    const float mv = hmax(_mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3])));
    const float mt = ref::max(x + n32, n - n32);
    return mt > mv ? mt : mv;
}

double sum_exp(const float* x, int64_t n, float m, float s, double* sum_dx) {
    return sum_dx ? sum_exp_impl<true>(x, n, m, s, sum_dx) : sum_exp_impl<false>(x, n, m, s, nullptr);
}

void lincomb(float* out, const float* x, float a, const float* y, float b, float c, int64_t n) {
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 v = mul_rounded(va, _mm256_loadu_ps(x + i));
        if (y) v = _mm256_add_ps(v, mul_rounded(vb, _mm256_loadu_ps(y + i)));
        _mm256_storeu_ps(out + i, nan_to_ninf(_mm256_add_ps(v, vc)));
    }
    ref::lincomb(out + n8, x + n8, a, y ? y + n8 : nullptr, b, c, n - n8);
}

void mix_exp(float* out, const float* x, float ox, const float* y, float oy, int64_t n) {
    const __m256 vox = _mm256_set1_ps(ox), voy = _mm256_set1_ps(oy), lo = _mm256_set1_ps(kExpCut);
    const auto term = [&](const float* p, __m256 o) {  // 0 at or below the cut, and for NaN
        const __m256 t = _mm256_add_ps(_mm256_loadu_ps(p), o);
        return _mm256_and_ps(exp_normal_range(clamp_exp_arg(t, lo)), _mm256_cmp_ps(t, lo, _CMP_GT_OQ));
    };
    const int64_t n8 = n / 8 * 8;
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 v = term(x + i, vox);
        if (y) v = _mm256_add_ps(v, term(y + i, voy));
        _mm256_storeu_ps(out + i, v);
    }
    ref::mix_exp(out + n8, x + n8, ox, y ? y + n8 : nullptr, oy, n - n8);
}

int topk(const float* x, int64_t n, int k, int32_t* ids, float* vals) {
    TopKBuffer h;
    h.k = k;
    const int64_t n32 = n / 32 * 32;
    __m256 thr = _mm256_set1_ps(h.thr);
    for (int64_t i = 0; i < n32; i += 32) {
        __m256 v[4], any = _mm256_setzero_ps();
        for (int u = 0; u < 4; ++u) {
            v[u] = _mm256_loadu_ps(x + i + 8 * u);
            any = _mm256_or_ps(any, _mm256_cmp_ps(v[u], thr, _CMP_GT_OQ));  // false for NaN
        }
        if (!_mm256_testz_ps(any, any)) {  // rare once the threshold has risen: find the lanes
            uint32_t hits = 0;
            for (int u = 0; u < 4; ++u)
                hits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v[u], thr, _CMP_GT_OQ))) << (8 * u);
            for (; hits; hits &= hits - 1) {  // in id order
                const int j = __builtin_ctz(hits);
                ref::topk_push(&h, x + i + j, 1, i + j);
            }
            thr = _mm256_set1_ps(h.thr);
        }
    }
    ref::topk_push(&h, x + n32, n - n32, n32);
    return ref::topk_finish(&h, ids, vals);
}

}  // namespace avx2
}  // namespace floe::x86
