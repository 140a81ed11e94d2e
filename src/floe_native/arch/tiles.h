// The tile walk shared by every SIMD gemm (x86 and NEON): the output is cut into tiles of 4 weight rows x C
// activation columns, and a variant's micro-kernel computes one tile. The walk owns what every variant does the
// same way: the short last row tile (its missing rows repeat the last real row, only real rows are stored), the
// split of the columns into groups of at most kMaxCols (the last group shorter), the store of a partial tile, and
// the scalar tail of dense dot products (ref's).
//
// Internal linkage on purpose (unnamed namespace), as in x86_base.h and neon_base.h: the including files are
// compiled with different -m / -march flags, and each must keep its own copy. The walk is always inlined, and so
// are the micro-kernels (FLOE_TILE_INLINE): the generated loops are those of one hand-written function per tile
// width, as before the walk was shared (GCC otherwise keeps some tiles out of line, a call per tile).
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "floe/kernels.h"

#define FLOE_TILE_INLINE [[gnu::always_inline]] inline

namespace floe {
namespace {
namespace tiles {

constexpr int kRows = 4;

template <class T>
struct TypedRows {
    const T* p[4];
};

// Four weight rows of one tile.
struct RowTile {
    const uint8_t* w[kRows];  // rows past the matrix's end repeat its last row (their results are dropped)
    const uint8_t* next;      // the first row of the tile after next (this tile's near the end): what to prefetch
    int r0;                   // index of the tile's first row
    int rows;                 // real rows, 1..4
    template <class T>
    TypedRows<T> as() const {  // the rows as arrays of T (weight blocks or values)
        TypedRows<T> t;
        for (int r = 0; r < kRows; ++r) t.p[r] = reinterpret_cast<const T*>(w[r]);
        return t;
    }
};

// A tile's C activation columns (lda bytes apart, as arrays of A) and its C output columns (ldo floats apart).
template <class A, int C>
struct Columns {
    const A* a[C];
    float* out[C];
};

template <class A, int C>
FLOE_TILE_INLINE Columns<A, C> columns(const void* a, size_t lda, int c0, float* out, size_t ldo, int r0) {
    Columns<A, C> cols;
    for (int c = 0; c < C; ++c) {
        cols.a[c] = reinterpret_cast<const A*>(static_cast<const uint8_t*>(a) + static_cast<size_t>(c0 + c) * lda);
        cols.out[c] = out + static_cast<size_t>(c0 + c) * ldo + r0;
    }
    return cols;
}

// Calls f(std::integral_constant<int, C>{}) for the runtime c, 1 <= c <= kMax: a tile's column count as a constant.
template <int kMax, class F>
FLOE_TILE_INLINE void with_cols(int c, F&& f) {
    if constexpr (kMax > 1) {
        if (c < kMax) return with_cols<kMax - 1>(c, f);
    }
    f(std::integral_constant<int, kMax>{});
}

// Row tile r0 of nr rows (ldw bytes apart), its next pointer 8 rows (two tiles) ahead: one tile of short rows is
// read in less time than DRAM takes to answer (Zen4, q4_0 49152 x 576, 1 thread: 825 -> 711 us).
FLOE_TILE_INLINE RowTile row_tile(const uint8_t* wb, size_t ldw, int nr, int r0) {
    RowTile t;
    t.r0 = r0;
    t.rows = nr - r0 < kRows ? nr - r0 : kRows;
    for (int r = 0; r < kRows; ++r) t.w[r] = wb + static_cast<size_t>(r0 + (r < t.rows ? r : t.rows - 1)) * ldw;
    t.next = r0 + 2 * kRows < nr ? wb + static_cast<size_t>(r0 + 2 * kRows) * ldw : t.w[0];
    return t;
}

// Walks nr rows (ldw bytes apart) x nc columns, rows outer: for each row tile, tile(t, c0, C) for the column groups
// [c0, c0 + C), C a std::integral_constant of at most kMaxCols. A tile's weights are read once for all columns.
template <int kMaxCols, class Tile>
FLOE_TILE_INLINE void for_each_tile(const void* w, size_t ldw, int nr, int nc, Tile&& tile) {
    const auto* wb = static_cast<const uint8_t*>(w);
    for (int r0 = 0; r0 < nr; r0 += kRows) {
        const RowTile t = row_tile(wb, ldw, nr, r0);
        for (int c0 = 0; c0 < nc; c0 += kMaxCols)
            with_cols<kMaxCols>(nc - c0, [&](auto C) { tile(t, c0, C); });
    }
}

// Walks nr rows in groups of T row tiles, group(t) with t[0..T) 4T consecutive rows, for micro-kernels that read
// T tiles side by side; the rows left over (fewer than 4T) go to tile(t), one row tile at a time. A tile's next
// pointer stays 8 rows ahead, as in for_each_tile (for a pair: the same tile of the next pair; two pairs ahead
// measured no better, Zen4 q8_0 576 x 1536 and 8192 x 8192).
template <int T, class Group, class Tile>
FLOE_TILE_INLINE void for_each_tile_group(const void* w, size_t ldw, int nr, Group&& group, Tile&& tile) {
    const auto* wb = static_cast<const uint8_t*>(w);
    int r0 = 0;
    for (; r0 + T * kRows <= nr; r0 += T * kRows) {
        RowTile t[T];
        for (int k = 0; k < T; ++k) t[k] = row_tile(wb, ldw, nr, r0 + k * kRows);
        group(static_cast<const RowTile*>(t));
    }
    for (; r0 < nr; r0 += kRows) tile(row_tile(wb, ldw, nr, r0));
}

// Column groups outer: group(c0, C) for each group [c0, c0 + C), C a std::integral_constant of at most kMaxCols.
// For variants that prepare a group of activation columns once and then walk all row tiles with it
// (for_each_tile<C> over the group).
template <int kMaxCols, class Group>
FLOE_TILE_INLINE void for_each_column_group(int nc, Group&& group) {
    for (int c0 = 0; c0 < nc; c0 += kMaxCols) with_cols<kMaxCols>(nc - c0, [&](auto C) { group(c0, C); });
}

// out[0..rows) = the tile's 4 results v: one vector store (store4(float*, V)) for a full tile, a buffer for a short one.
template <class V, class Store4>
FLOE_TILE_INLINE void store_rows(float* out, V v, int rows, Store4&& store4) {
    if (rows == kRows) {
        store4(out, v);
    } else {
        alignas(16) float t[kRows];
        store4(t, v);
        for (int r = 0; r < rows; ++r) out[r] = t[r];
    }
}

// The scalar tail of a dense dot product (the last n % vector-step values): ref's, so every variant rounds alike.
inline float dot_tail(int64_t n, const float* w, const float* a) { return ref::dot_f32(n, w, a); }
inline float dot_tail(int64_t n, const fp16_t* w, const float* a) { return ref::dot_f16_f32(n, w, a); }

}  // namespace tiles
}  // namespace
}  // namespace floe
