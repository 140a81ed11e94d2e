// NEON activation quantizers and gemms (quantized and f16 / f32 weights), templates over the int8 dot-product
// policy (DotNeon here, DotSdot in neon_sdot.h, DotI8mm in neon_i8mm.cpp). The tiles are walked by tiles.h.
// Linkage: see neon_base.h.
#pragma once
#include "../tiles.h"
#include "neon_base.h"

namespace floe {
namespace {
namespace neon {

// ---------------------------------------------------------------------------------------------------------------
// int8 dot-product policy. dot_q4/dot_q8 return an int32x4 whose lanes sum to sum_i w[i] * a[i] over 32 pairs,
// w = (w0 | w1), a = (a0 | a1), exactly. dot_q4 may assume |w| <= 15 (q4 weights), dot_q8 takes any int8.

struct DotNeon {
    static constexpr bool kMmla = false;  // see block_sums
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

// q4_0 (nibble - 8) and q4_1 (nibble, plus the m * s term: kMin) weights against q8 activations.
template <class Wb, class Ab, bool kMinTerm>
struct FmtQ4 {
    using W = Wb;
    using A = Ab;
    static constexpr bool kMin = kMinTerm;
    static void unpack(const W& b, int8x16_t& lo, int8x16_t& hi) {
        const uint8x16_t q = vld1q_u8(b.qs);
        lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
        hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        if constexpr (!kMin) {
            lo = vsubq_s8(lo, vdupq_n_s8(8));
            hi = vsubq_s8(hi, vdupq_n_s8(8));
        }
    }
    template <class Dot>
    static int32x4_t dot(int8x16_t lo, int8x16_t hi, int8x16_t a0, int8x16_t a1) {
        return Dot::dot_q4(lo, hi, a0, a1);
    }
};
using FmtQ4_0 = FmtQ4<block_q4_0, block_q8_0, false>;
using FmtQ4_1 = FmtQ4<block_q4_1, block_q8_1, true>;

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
    tiles::store_rows(out, v, nrv, [](float* p, float32x4_t x) { vst1q_f32(p, x); });
}

// The int32 sums of block b for the NC columns of a tile, lane = row. Per column: the four rows' Dot products,
// reduced across lanes. A Dot with kMmla (i8mm's SMMLA: a 2 x 8 by 8 x 2 int8 product per instruction) takes
// both columns of a pair at once, with half the multiply instructions.
template <class Dot, class F, int NC>
inline void block_sums(const int8x16_t (&lo)[4], const int8x16_t (&hi)[4], const typename F::A* const* a, int64_t b,
                       int32x4_t (&sums)[NC]) {
    if constexpr (NC == 2 && Dot::kMmla) {
        Dot::mmla_4x2(lo, hi, a[0][b].qs, a[1][b].qs, sums);
    } else {
        for (int c = 0; c < NC; ++c) {
            const int8x16_t a0 = vld1q_s8(a[c][b].qs), a1 = vld1q_s8(a[c][b].qs + 16);
            int32x4_t s[4];
            for (int r = 0; r < 4; ++r) s[r] = F::template dot<Dot>(lo[r], hi[r], a0, a1);
            sums[c] = hsum4_s32(s[0], s[1], s[2], s[3]);
        }
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
        int32x4_t sums[NC];
        block_sums<Dot, F, NC>(lo, hi, a, b, sums);
        for (int c = 0; c < NC; ++c) {
            const float32x4_t sumi = vcvtq_f32_s32(sums[c]);
            const float32x4_t dd = vmulq_n_f32(dw, sc[c]);
            if constexpr (F::kMin)
                acc[c] = vaddq_f32(acc[c], fma_f32(vmulq_n_f32(mw, sc[2 + c]), sumi, dd));
            else
                acc[c] = fma_f32(acc[c], sumi, dd);
        }
    }
    for (int c = 0; c < NC; ++c) store_rows(out[c], acc[c], nrv);
}

// Rows outer: a row tile's weights are read once for all columns.
template <class Dot, class F>
inline void gemm_q(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                   size_t ldo) {
    using W = typename F::W;
    using A = typename F::A;
    const int64_t nb = n / QK;
    tiles::for_each_tile<kTileCols>(w, ldw, nr, nc, [&](const tiles::RowTile& t, int c0, auto group) {
        constexpr int C = decltype(group)::value;
        const auto w4 = t.as<W>();
        const auto cols = tiles::columns<A, C>(a, lda, c0, out, ldo, t.r0);
        q_tile<Dot, F, C>(nb, w4.p, cols.a, cols.out, t.rows);
    });
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
            for (int r = 0; r < nrv; ++r) out[c][r] += tiles::dot_tail(n - k, w[r] + k, a[c] + k);
}

template <class R>
inline void gemm_f(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                   size_t ldo) {
    using T = typename R::T;
    tiles::for_each_tile<kTileCols>(w, ldw, nr, nc, [&](const tiles::RowTile& t, int c0, auto group) {
        constexpr int C = decltype(group)::value;
        const auto w4 = t.as<T>();
        const auto cols = tiles::columns<float, C>(a, lda, c0, out, ldo, t.r0);
        f_tile<R, C>(n, w4.p, cols.a, cols.out, t.rows);
    });
}

}  // namespace neon
}  // namespace
}  // namespace floe
