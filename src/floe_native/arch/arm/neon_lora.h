// NEON policy for the shared LoRA up-projection walk (../lora_up.h): a panel of 16 floats is four vectors.
// Linkage as in neon_base.h.
#pragma once
#include "../lora_up.h"
#include "neon_fusion.h"

namespace floe {
namespace {
namespace neon {

struct LoraNeon {
    struct Acc {
        float32x4_t v[4];
    };
    static Acc zero() { return {{vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}}; }
    static Acc fma(Acc a, const float* b, float t) {
        const float32x4_t vt = vdupq_n_f32(t);
        for (int k = 0; k < 4; ++k) a.v[k] = fma_f32(a.v[k], vld1q_f32(b + 4 * k), vt);
        return a;
    }
    static Acc fma(Acc a, const fp16_t* b, float t) {
        const float32x4_t vt = vdupq_n_f32(t);
        for (int k = 0; k < 4; ++k) a.v[k] = fma_f32(a.v[k], f16x4_to_f32(vld1_u16(b + 4 * k)), vt);
        return a;
    }
    static Acc scaled(Acc a, float s) {
        const float32x4_t vs = vdupq_n_f32(s);
        for (int k = 0; k < 4; ++k) a.v[k] = mul_rounded(a.v[k], vs);
        return a;
    }
    static Acc add(Acc a, Acc b) {
        for (int k = 0; k < 4; ++k) a.v[k] = vaddq_f32(a.v[k], b.v[k]);
        return a;
    }
    static void add_to(float* y, Acc d) {
        for (int k = 0; k < 4; ++k) vst1q_f32(y + 4 * k, vaddq_f32(vld1q_f32(y + 4 * k), d.v[k]));
    }
    static void store(float* out, Acc d) {
        for (int k = 0; k < 4; ++k) vst1q_f32(out + 4 * k, d.v[k]);
    }
};

inline void lora_up(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
                    size_t ldy) {
    lora::up_walk<LoraNeon>(terms, n_terms, rows, p0, p1, n, y, ldy);
}

}  // namespace neon
}  // namespace
}  // namespace floe
