// The LoRA up-projection walk shared by every SIMD variant (x86 and NEON): panels outer, then tokens, then terms,
// as ref::lora_up (kernels.h has the contract). A variant supplies a policy V for 16 floats in registers:
//   Acc                      the 16 floats (one or more vectors)
//   zero()                   all zero
//   fma(acc, b16, t)         acc + b16[0..16) * t, b16 float or fp16_t (the product may be fused)
//   scaled(acc, s)           s * acc, each product rounded on its own (no FMA with a following add)
//   add(a, b)                a + b
//   add_to(y16, d)           y16[0..16) += d
//   store(out16, d)          out16[0..16) = d
// B is read as one stream per term; the hardware prefetchers stop at page boundaries and each term's panels are
// only a few pages, so the walk prefetches kPrefetchBytes ahead in every term's stream itself.
//
// Internal linkage on purpose, as tiles.h: the including files are compiled with different -m / -march flags.
#pragma once
#include <cstddef>
#include <cstdint>

#include "floe/kernels.h"

namespace floe {
namespace {
namespace lora {

constexpr size_t kPrefetchBytes = 2048;
constexpr size_t kLine = 64;

template <class V, class T>
[[gnu::always_inline]] inline typename V::Acc panel_sum(const T* b, const float* t, int r) {
    typename V::Acc acc = V::zero();
    for (int j = 0; j < r; ++j) acc = V::fma(acc, b + static_cast<size_t>(j) * kLoraPanel, t[j]);
    return acc;
}

template <class V>
void up_walk(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
             size_t ldy) {
    if (n_terms <= 0) return;
    for (int64_t p = p0; p < p1; ++p) {
        for (int i = 0; i < n_terms; ++i) {
            const size_t esize = terms[i].type == QType::F16 ? sizeof(fp16_t) : sizeof(float);
            const size_t bytes = static_cast<size_t>(terms[i].r) * kLoraPanel * esize;
            const char* ahead = static_cast<const char*>(terms[i].panels) + p * bytes + kPrefetchBytes;
            for (size_t o = 0; o < bytes; o += kLine) __builtin_prefetch(ahead + o);
        }
        const int64_t o0 = p * kLoraPanel;
        for (int c = 0; c < n; ++c) {
            typename V::Acc d = V::zero();
            for (int i = 0; i < n_terms; ++i) {
                const LoraUpTerm& term = terms[i];
                const size_t at = static_cast<size_t>(p) * term.r * kLoraPanel;
                const float* t = term.t + static_cast<size_t>(c) * term.r;
                const typename V::Acc acc =
                    term.type == QType::F16 ? panel_sum<V>(static_cast<const fp16_t*>(term.panels) + at, t, term.r)
                                            : panel_sum<V>(static_cast<const float*>(term.panels) + at, t, term.r);
                const typename V::Acc s = V::scaled(acc, term.scale);
                d = i == 0 ? s : V::add(d, s);
            }
            float* yo = y + c * ldy + o0;
            if (rows - o0 >= kLoraPanel) {
                V::add_to(yo, d);
            } else {  // the last, short panel: only its real rows
                alignas(64) float tmp[kLoraPanel];
                V::store(tmp, d);
                for (int64_t o = 0; o < rows - o0; ++o) yo[o] += tmp[o];
            }
        }
    }
}

}  // namespace lora
}  // namespace
}  // namespace floe
