// Reference LoRA up-projection (the specification of lora_up_fn, kernels.h): plain loops over B's panels.
// Compiled with -ffp-contract=off: every product is rounded on its own, as the contract asks of scale * acc.
#include "floe/kernels.h"

namespace floe::ref {

namespace {

float panel_value(QType type, const void* panel, int64_t k) {
    return type == QType::F16 ? fp16_to_fp32(static_cast<const fp16_t*>(panel)[k]) : static_cast<const float*>(panel)[k];
}

}  // namespace

void lora_up(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
             size_t ldy) {
    if (n_terms <= 0) return;  // y untouched (adding 0 would turn -0 into +0)
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t o0 = p * kLoraPanel;
        const int valid = rows - o0 < kLoraPanel ? static_cast<int>(rows - o0) : kLoraPanel;
        for (int c = 0; c < n; ++c) {
            float d[kLoraPanel] = {};
            for (int i = 0; i < n_terms; ++i) {
                const LoraUpTerm& term = terms[i];
                const size_t esize = term.type == QType::F16 ? sizeof(fp16_t) : sizeof(float);
                const void* panel = static_cast<const char*>(term.panels) + p * term.r * kLoraPanel * esize;
                const float* t = term.t + static_cast<size_t>(c) * term.r;
                for (int o = 0; o < valid; ++o) {
                    float acc = 0.0f;
                    for (int j = 0; j < term.r; ++j) acc += panel_value(term.type, panel, j * kLoraPanel + o) * t[j];
                    const float s = term.scale * acc;
                    d[o] = i == 0 ? s : d[o] + s;
                }
            }
            for (int o = 0; o < valid; ++o) y[c * ldy + o0 + o] += d[o];
        }
    }
}

}  // namespace floe::ref
