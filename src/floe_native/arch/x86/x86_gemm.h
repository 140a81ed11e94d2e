// The quantized gemm shared by every x86 table (AVX2, AVX-512, their VNNI forms), and the table itself (make_kernels).
//
// A tile is 4 weight rows x C activation columns (the walk is tiles.h's): per block the 4 rows' integer dot
// products are reduced into one vector [r0 r1 r2 r3] per lane (x86_lanes.h), converted to float once, and
// multiplied by the 4 rows' scales at once. Linkage: see x86_base.h.
#pragma once
#include "../tiles.h"
#include "x86_lanes.h"

namespace floe::x86 {
namespace {

// ---- the integer dot primitive: one row's unsigned weight bytes x signed activation bytes, per lane ---------
// Maddubs (AVX2, AVX-512BW): int16 pair sums, saturating, so exact only for small unsigned operands (nibbles).
// Vnni: vpdpbusd sums 4 products straight into int32, exact for any u8 x s8 (x86_lanes.h's v_dpbusd).
// dot() takes a block's two 16-byte halves; reduce() turns four rows' dots into int32 [r0 r1 r2 r3] per lane.
struct Maddubs {
    // int16 pair sums: |lane| <= 2 * (2 * 15 * 128) = 7680 for nibble weights
    template <class I>
    static I dot(I w_lo, I a_lo, I w_hi, I a_hi) {
        return v_add16(v_maddubs(w_lo, a_lo), v_maddubs(w_hi, a_hi));
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

// int32 sums of 4 rows, 4 partials each per lane -> [r0 r1 r2 r3] per lane
template <class I>
inline I reduce32(I m0, I m1, I m2, I m3) {
    const I t01 = v_add32(v_unpacklo32(m0, m1), v_unpackhi32(m0, m1));  // r0 r1 r0 r1
    const I t23 = v_add32(v_unpacklo32(m2, m3), v_unpackhi32(m2, m3));  // r2 r3 r2 r3
    return v_add32(v_unpacklo64(t01, t23), v_unpackhi64(t01, t23));
}

#if defined(FLOE_DPBUSD_EMULATED) || defined(__AVX512VNNI__) || defined(__AVXVNNI__)
struct Vnni {
    template <class I>
    static I dot(I w_lo, I a_lo, I w_hi, I a_hi) {
        return v_dpbusd(v_dpbusd(bcast_lanes<I>(_mm_setzero_si128()), w_lo, a_lo), w_hi, a_hi);
    }
    template <class I>
    static I reduce(I m0, I m1, I m2, I m3) {
        return reduce32(m0, m1, m2, m3);
    }
};
#endif

// ---- quantized formats ---------------------------------------------------------------------------------------
// Per activation column the driver first builds a Prep: block scales (and sums) as floats, each repeated 4 times
// so that one load gives the per-lane vector for any G. A format supplies:
//   prepare()      the Prep of one activation column (once per call, shared by all row tiles)
//   decode()       one weight row's block(s) into registers
//   dot()          partial integer dot products of one row per lane
//   reduce()       four rows' partials -> int32 [r0 r1 r2 r3] per lane
//   scales()       the 4 rows' fp16 scales of the block(s) as floats
//   accumulate()   acc += the block's float contribution

// Formats whose weight blocks have one scale, d, first.
template <class Wb>
struct ScaleD {
    template <int G>
    struct Scales {
        typename Lanes<G>::F d;
    };
    template <int G>
    static Scales<G> scales(const uint8_t* const w[4], int64_t b) {
        return {Lanes<G>::fp16x4(w, b * sizeof(Wb), sizeof(Wb))};
    }
};

// Weights decoded to unsigned bytes (Decode: W, decode()) against the signed q8 activation bytes, as the Prep's
// ActHalves holds them.
template <class Decode, class Dot>
struct ByteDot : Decode {
    template <int G>
    using Weights = typename Decode::template Weights<G>;
    template <int G>
    struct Act {
        typename Lanes<G>::I lo, hi;
    };
    template <int G, class Prep>
    static Act<G> load_act(const Prep& p, int64_t b) {  // one full-width load per half (ActHalves)
        return {Lanes<G>::loadc(p.act.lo + 16 * b), Lanes<G>::loadc(p.act.hi + 16 * b)};
    }
    template <int G>
    static typename Lanes<G>::I dot(const Weights<G>& w, const Act<G>& a) {
        return Dot::dot(w.lo, a.lo, w.hi, a.hi);
    }
    template <class I>
    static I reduce(I p0, I p1, I p2, I p3) {
        return Dot::reduce(p0, p1, p2, p3);
    }
};

// q4_0 / q4_1 weights: nibbles 0-15, values 0-15 of the block in lo, 16-31 in hi.
template <class Wb>
struct NibbleDecode {
    using W = Wb;
    template <int G>
    struct Weights {
        typename Lanes<G>::I lo, hi;
    };
    template <int G>
    static Weights<G> decode(const uint8_t* row, int64_t b) {
        using L = Lanes<G>;
        const auto raw = L::load(field<W>(row, b, offsetof(W, qs)), sizeof(W));
        const auto m = L::set1_8(0x0f);
        return {v_and(raw, m), v_and(v_srli16<4>(raw), m)};
    }
};

// q8_0 weights for u8 x s8 products: w + 128 (w ^ 0x80), made up for by the Prep's 128 * sum(a).
struct BiasedByteDecode {
    using W = block_q8_0;
    template <int G>
    struct Weights {
        typename Lanes<G>::I lo, hi;
    };
    template <int G>
    static Weights<G> decode(const uint8_t* row, int64_t b) {
        using L = Lanes<G>;
        const uint8_t* qs = field<W>(row, b, offsetof(W, qs));
        const auto bias = L::set1_8(static_cast<char>(0x80));
        return {v_xor(L::load(qs, sizeof(W)), bias), v_xor(L::load(qs + 16, sizeof(W)), bias)};
    }
};

// The activation bytes of a call, split into the blocks' first and second 16-byte halves, each half array
// contiguous: G blocks' halves are then one aligned-size load, in the lane order the weights use, where reading
// them from the 34- or 36-byte blocks took 2G unaligned loads and inserts per column (Zen4, 1 thread, avx512_vnni:
// q4_1 49152 x 576 842-867 -> 818 us, q4_0 733-749 -> 708-726 us).
struct ActHalves {
    const uint8_t* lo;
    const uint8_t* hi;
    static size_t bytes(int64_t nb) { return static_cast<size_t>(nb) * 32; }
    template <class Ab>
    static ActHalves split(const void* act, int64_t nb, uint8_t* buf) {
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* qs = field<Ab>(act, b, offsetof(Ab, qs));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + 16 * b), _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + 16 * (nb + b)),
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16)));
        }
        return {buf, buf + 16 * nb};
    }
};

// Weights stored or decoded with an offset, w = q - 2^Shift: sum(w * a) = sum(q * a) - 2^Shift * sum(a), the
// second term from the Prep (q4_0: 8, q8_0 for u8 x s8: 128; |2^Shift * sum(a)| <= 2^19).
template <class Wb, class Ab, int Shift>
struct OffsetPrep : ScaleD<Wb> {
    struct Prep {
        float* d;      // activation scale, x4 per block
        int32_t* off;  // 2^Shift * sum(a.qs), x4 per block
        ActHalves act;
    };
    static size_t prep_bytes(int64_t nb) { return static_cast<size_t>(nb) * 32 + ActHalves::bytes(nb); }
    static Prep prepare(const void* act, int64_t nb, uint8_t* buf) {
        Prep p{reinterpret_cast<float*>(buf), reinterpret_cast<int32_t*>(buf + nb * 16),
               ActHalves::split<Ab>(act, nb, buf + nb * 32)};
        for (int64_t b = 0; b < nb; ++b) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(field<Ab>(act, b, offsetof(Ab, qs))));
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);  // exact: |pair| <= 256
            const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));  // the total in every lane
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p.off + 4 * b), _mm_slli_epi32(s, Shift));
            _mm_storeu_ps(p.d + 4 * b, _mm_set1_ps(load_f16(field<Ab>(act, b, offsetof(Ab, d)))));
        }
        return p;
    }
    template <int G>
    static typename Lanes<G>::F accumulate(typename Lanes<G>::I s, const typename ScaleD<Wb>::template Scales<G>& sc,
                                           const Prep& p, int64_t b,
                                           typename Lanes<G>::F acc) {
        using L = Lanes<G>;
        const auto sumi = v_sub32(s, L::loadi(p.off + 4 * b));
        return v_fma(v_cvt(sumi), v_mul(sc.d, L::loadf(p.d + 4 * b)), acc);
    }
};

// q4_0 x q8_0: sum((q - 8) * a) = sum(q * a) - 8 * sum(a).
template <class Dot>
struct Q4_0 : ByteDot<NibbleDecode<block_q4_0>, Dot>, OffsetPrep<block_q4_0, block_q8_0, 3> {};

// q8_0 x q8_0 for VNNI: sum((q + 128) * a) - 128 * sum(a), exact over the full int8 range.
template <class Dot>
struct Q8_0Biased : ByteDot<BiasedByteDecode, Dot>, OffsetPrep<block_q8_0, block_q8_0, 7> {};

// q4_1 x q8_1: d_w d_a sum(q * a) + m_w s_a, with s_a = d_a sum(a) from the activation block.
template <class Dot>
struct Q4_1 : ByteDot<NibbleDecode<block_q4_1>, Dot> {
    using A = block_q8_1;
    using W = block_q4_1;
    struct Prep {
        float* d;  // x4 per block
        float* s;  // x4 per block
        ActHalves act;
    };
    static size_t prep_bytes(int64_t nb) { return static_cast<size_t>(nb) * 32 + ActHalves::bytes(nb); }
    static Prep prepare(const void* act, int64_t nb, uint8_t* buf) {
        Prep p{reinterpret_cast<float*>(buf), reinterpret_cast<float*>(buf + nb * 16),
               ActHalves::split<A>(act, nb, buf + nb * 32)};
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

// q8_0 x q8_0 without VNNI, over the full int8 range (-128 * -128 included), which maddubs cannot do: 16-bit madd.
// Weights widen with one unpack each as w * 256 (0 in the low byte), activations are sign-extended once per
// call into the Prep; the block sums are multiples of 256 (|sum| <= 2^27) and shift back exactly.
struct Q8_0 : ScaleD<block_q8_0> {
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
        return reduce32(m0, m1, m2, m3);
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

// acc[k][c] += blocks [b, b_end) of T 4-row tiles t[k] read side by side, G blocks per step ((b_end - b) % G == 0).
// Software-pipelined: a block's float part is issued after the next block's integer part, so that its long
// integer -> float -> fma dependency chain overlaps independent work (Zen1's window holds ~1.5 blocks).
// A tile's next pointer is where the tile it prefetches for starts (tiles.h): those bytes are prefetched at the pace
// this tile is read, because 4 interleaved short rows are not streams the hardware prefetcher picks up; from the
// first block on, else the first step's bytes of every tile would miss. Into L1 while the T tiles hold up to
// kPrefetchL1Bytes, into L2 beyond: tiles of long rows, prefetched ahead, would leave a 32 KiB L1 again before they
// are read (Zen4, 1 thread: q8_0 8192 x 8192 12.5 -> 23 GB/s, 49152 x 576 9.6 -> 15.8 GB/s with both changes; 8 KiB
// rather than 4 KiB: q8_0 576 x 1536, 6.5 KiB tiles, 46 -> 37 us).
constexpr size_t kPrefetchL1Bytes = 8192;

// The loops over the T tiles are unrolled by hand: GCC otherwise keeps a loop over the tiles with their block sums
// in memory (a pair then ran slower than two single tiles).
#define FLOE_UNROLL _Pragma("GCC unroll 4")

// Always inlined, and never wrapped in a lambda: GCC takes a function made only of prefetches for one without side
// effects, and drops its calls (it did so to a prefetch lambda here once the micro-kernel took T tiles).
template <size_t kBytes>
FLOE_TILE_INLINE void prefetch_bytes(const uint8_t* at, bool to_l1) {
    for (size_t o = 0; o < kBytes; o += 64) {
        const char* a = reinterpret_cast<const char*>(at + o);
        if (to_l1) _mm_prefetch(a, _MM_HINT_T0);
        else _mm_prefetch(a, _MM_HINT_T1);
    }
}

template <class Fmt, int G, int C, int T>
FLOE_TILE_INLINE void tile_blocks(const tiles::RowTile* t, const typename Fmt::Prep* p, int64_t b, int64_t b_end,
                        typename Lanes<G>::F acc_out[T][C]) {
    if (b >= b_end) return;
    constexpr size_t step = 4 * sizeof(typename Fmt::W);  // tile bytes per block
    typename Lanes<G>::F acc[T][C];  // local copy: stores through acc_out could alias the Prep, pinning it in memory
    FLOE_UNROLL for (int k = 0; k < T; ++k)
        for (int c = 0; c < C; ++c) acc[k][c] = acc_out[k][c];
    const auto add = [&](int k, const BlockSums<Fmt, G, C>& bs) {
        for (int c = 0; c < C; ++c) acc[k][c] = Fmt::accumulate(bs.s[c], bs.sc, p[c], bs.b, acc[k][c]);
    };
    const bool to_l1 = T * (b_end - b) * step <= kPrefetchL1Bytes;
    BlockSums<Fmt, G, C> prev[T];
    FLOE_UNROLL for (int k = 0; k < T; ++k) {
        prefetch_bytes<G * step>(t[k].next + b * step, to_l1);
        prev[k] = block_sums<Fmt, G, C>(t[k].w, p, b);
    }
    for (b += G; b < b_end; b += G) {
        FLOE_UNROLL for (int k = 0; k < T; ++k) {
            prefetch_bytes<G * step>(t[k].next + b * step, to_l1);
            const auto cur = block_sums<Fmt, G, C>(t[k].w, p, b);
            add(k, prev[k]);
            prev[k] = cur;
        }
    }
    FLOE_UNROLL for (int k = 0; k < T; ++k) add(k, prev[k]);
    FLOE_UNROLL for (int k = 0; k < T; ++k)
        for (int c = 0; c < C; ++c) acc_out[k][c] = acc[k][c];
}

// T 4-row x C-column tiles read side by side (the micro-kernel of tiles.h's walks): G blocks per step, the nb % G
// last blocks one at a time.
template <class Fmt, int G, int C, int T>
FLOE_TILE_INLINE void quant_tiles(int64_t nb, const tiles::RowTile* t, const typename Fmt::Prep* p, float* out, size_t ldo) {
    const int64_t nb_main = nb / G * G;
    typename Lanes<G>::F acc[T][C];
    __m128 acc1[T][C];
    FLOE_UNROLL for (int k = 0; k < T; ++k)
        for (int c = 0; c < C; ++c) acc[k][c] = Lanes<G>::zerof(), acc1[k][c] = _mm_setzero_ps();
    tile_blocks<Fmt, G, C, T>(t, p, 0, nb_main, acc);
    if (G > 1) tile_blocks<Fmt, 1, C, T>(t, p, nb_main, nb, acc1);
    FLOE_UNROLL for (int k = 0; k < T; ++k)
        for (int c = 0; c < C; ++c) {
            const __m128 v = _mm_add_ps(Lanes<G>::sum_lanes(acc[k][c]), acc1[k][c]);
            tiles::store_rows(out + c * ldo + t[k].r0, v, t[k].rows, [](float* o, __m128 x) { _mm_storeu_ps(o, x); });
        }
}

// Every row tile of C prepared columns. A matvec (C = 1) whose tiles are long reads them in pairs: a tile's 4 rows
// are then 4 streams far apart in memory (short rows, 4 of them contiguous, are one stream), and this core reads
// more bytes per second from 8 streams than from 4 (Zen4: 28-30 vs 24-26 GB/s). Long: two tiles would pass the L1
// prefetch rule.
template <class Fmt, int G, int C>
void gemm_rows(int64_t nb, const void* w, size_t ldw, int nr, const typename Fmt::Prep* p, float* out, size_t ldo) {
    const auto one = [&](const tiles::RowTile& t, auto...) { quant_tiles<Fmt, G, C, 1>(nb, &t, p, out, ldo); };
    if constexpr (C == 1) {
        if (2 * 4 * nb * sizeof(typename Fmt::W) > kPrefetchL1Bytes) {
            const auto pair = [&](const tiles::RowTile* t) { quant_tiles<Fmt, G, C, 2>(nb, t, p, out, ldo); };
            return tiles::for_each_tile_group<2>(w, ldw, nr, pair, one);
        }
    }
    tiles::for_each_tile<C>(w, ldw, nr, C, one);
}

// The gemm_fn: activation columns in groups of up to 4, each prepared once and reused by every row tile.
// Flattened: tiles and block loops inline into one loop nest, as GCC compiled it when the walk was written out
// here (left to itself it now keeps some tiles out of line).
template <class Fmt, int G>
[[gnu::flatten]] void gemm_quant(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
                size_t ldo) {
    const int64_t nb = n / QK;
    const size_t pb = Fmt::prep_bytes(nb);
    // The first 8 rows: no tile before them prefetches them (tiles.h), so ask for them before preparing the
    // activations, which then overlaps their way from DRAM (Zen4, q8_0 576 x 1536, 1 thread: 38.9 -> 38.0 us).
    const size_t first = static_cast<size_t>(nr < 8 ? nr : 8) * ldw;
    for (size_t o = 0; o < first; o += 64) {
        const char* at = static_cast<const char*>(w) + o;
        if (first <= kPrefetchL1Bytes) _mm_prefetch(at, _MM_HINT_T0);
        else _mm_prefetch(at, _MM_HINT_T1);
    }
    Scratch buf((nc < 4 ? nc : 4) * pb);
    tiles::for_each_column_group<4>(nc, [&](int c0, auto group) {
        constexpr int C = decltype(group)::value;
        typename Fmt::Prep p[C];
        for (int c = 0; c < C; ++c) p[c] = Fmt::prepare(static_cast<const uint8_t*>(a) + (c0 + c) * lda, nb, buf.p + c * pb);
        gemm_rows<Fmt, G, C>(nb, w, ldw, nr, p, out + c0 * ldo, ldo);
    });
}

// q8_0: maddubs cannot multiply int8 x int8, so without VNNI the 16-bit madd format (Q8_0) does it. With VNNI,
// which format is faster depends on the column count, as measured on Zen4 (1 thread): with several columns the
// weights are reused and vpdpbusd's fewer instructions win (1536 x 576 x 64 columns: 651 vs 1119 us); a matvec
// streams its weights from DRAM once, and there the madd format keeps up with memory where the VNNI one does not
// (49152 x 576: 1.06 vs 1.74 ms) although it is slower from cache (21 vs 28 us at 1536 x 576). Decode is matvecs.
template <int G, class Dot>
void gemm_q8_0(int64_t n, const void* w, size_t ldw, int nr, const void* a, size_t lda, int nc, float* out,
               size_t ldo) {
    if constexpr (std::is_same_v<Dot, Maddubs>) {
        gemm_quant<Q8_0, G>(n, w, ldw, nr, a, lda, nc, out, ldo);
    } else {
        if (nc == 1) gemm_quant<Q8_0, G>(n, w, ldw, nr, a, lda, nc, out, ldo);
        else gemm_quant<Q8_0Biased<Dot>, G>(n, w, ldw, nr, a, lda, nc, out, ldo);
    }
}

// The kernel table of a variant: the quantized gemms take G blocks per step with the Dot primitive, everything
// else but lora_up is the AVX2 function.
template <int G, class Dot>
constexpr Kernels make_kernels(const char* name, lora_up_fn lora_up) {
    return Kernels{
        name,
        avx2::quantize_q8_0,
        avx2::quantize_q8_1,
        gemm_quant<Q4_0<Dot>, G>,
        gemm_quant<Q4_1<Dot>, G>,
        gemm_q8_0<G, Dot>,
        avx2::gemm_f16,
        avx2::gemm_f32,
        avx2::rmsnorm,
        avx2::softmax,
        avx2::swiglu,
        avx2::rope,
        avx2::round_f16,
        avx2::max,
        avx2::sum_exp,
        avx2::lincomb,
        avx2::mix_exp,
        avx2::topk,
        lora_up,
    };
}

}  // namespace
}  // namespace floe::x86
