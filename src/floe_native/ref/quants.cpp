// Reference quantizers: weights exactly as ggml's quantize_row_*_ref (= gguf.quants), activations as ggml's SIMD paths.
#include <algorithm>
#include <cmath>
#include <limits>

#include "floe/kernels.h"

namespace floe::ref {

namespace {
// 1 / d, or 0 where d is 0 or so small (subnormal) that 1 / d overflows: then x * id is inf or NaN, whose
// conversion to an integer is undefined (x86 gives 0, aarch64 saturates: found by the emulated arm64 run). Such a
// d is 0 in fp16, so the block decodes the same whatever its quants; 0 * x makes them well defined.
float inverse_scale(float d) {
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    return std::isfinite(inv) ? inv : 0.0f;
}

float absmax(const float* x) {
    float amax = 0.0f;
    for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    return amax;
}
}  // namespace

// Activation quantizers (the kernel table's): as ggml's SIMD quantize_row_q8_0/q8_1 run on x86 and ARM, which
// round half to even with id = 127 / amax, not like its scalar quantize_row_*_ref (roundf, id = 1 / d). Ties are
// common in real activations (they derive from quantized weights), so this choice decides whether our logits
// track llama.cpp's.
namespace {
template <bool WithSum, typename Block>
void quantize_activations(const float* x, Block* y, int64_t n) {
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        const float amax = absmax(x);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; ++j) {
            y[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));  // default rounding mode: half to even
            sum += y[i].qs[j];
        }
        y[i].d = fp32_to_fp16(d);
        if constexpr (WithSum) y[i].s = fp32_to_fp16(static_cast<float>(sum) * d);
    }
}
}  // namespace

void quantize_q8_0(const float* x, void* y, int64_t n) {
    quantize_activations<false>(x, static_cast<block_q8_0*>(y), n);
}

void quantize_q8_1(const float* x, void* y, int64_t n) {
    quantize_activations<true>(x, static_cast<block_q8_1*>(y), n);
}

// Weight quantizers: ggml's quantize_row_*_ref, byte for byte as gguf.quants.
void quantize_q8_0_weights(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<block_q8_0*>(vy);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        const float d = absmax(x) / 127.0f;
        const float id = inverse_scale(d);
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
    }
}

void quantize_q4_0(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<block_q4_0*>(vy);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        float amax = 0.0f, max = 0.0f;  // max keeps its sign: the scale maps it to -8
        for (int j = 0; j < QK; ++j) {
            if (std::fabs(x[j]) > amax) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = inverse_scale(d);
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK / 2; ++j) {
            const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
            const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + QK / 2] * id + 8.5f)));
            y[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

void quantize_q4_1(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<block_q4_1*>(vy);
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
        // ggml's loop, not std::fmin/fmax: with +0.0 and -0.0 in a block, fmin's pick is the platform's
        // (aarch64's FMINNM takes -0.0, found by the emulated arm64 test run), ggml keeps the first zero
        float min = std::numeric_limits<float>::max(), max = -std::numeric_limits<float>::max();
        for (int j = 0; j < QK; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15.0f;
        const float id = inverse_scale(d);
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(min);
        for (int j = 0; j < QK / 2; ++j) {
            const int lo = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
            const int hi = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + QK / 2] - min) * id + 0.5f)));
            y[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

void quantize_f16(const float* x, void* vy, int64_t n) {
    auto* y = static_cast<fp16_t*>(vy);
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

namespace {
template <class Block>  // q8_0 or q8_1: y = q * d (q8_1's s is not needed)
void dequantize_q8(const Block* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n / QK; ++i, y += QK) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
    }
}
}  // namespace

void dequantize(QType t, const void* vx, float* y, int64_t n) {
    switch (t) {
        case QType::F32:
            std::memcpy(y, vx, static_cast<size_t>(n) * sizeof(float));
            return;
        case QType::F16:
            for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(static_cast<const fp16_t*>(vx)[i]);
            return;
        case QType::Q4_0:
            for (int64_t i = 0; i < n / QK; ++i, y += QK) {
                const auto& b = static_cast<const block_q4_0*>(vx)[i];
                const float d = fp16_to_fp32(b.d);
                for (int j = 0; j < QK / 2; ++j) {
                    y[j] = static_cast<float>((b.qs[j] & 0x0f) - 8) * d;
                    y[j + QK / 2] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
                }
            }
            return;
        case QType::Q4_1:
            for (int64_t i = 0; i < n / QK; ++i, y += QK) {
                const auto& b = static_cast<const block_q4_1*>(vx)[i];
                const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
                for (int j = 0; j < QK / 2; ++j) {
                    y[j] = static_cast<float>(b.qs[j] & 0x0f) * d + m;
                    y[j + QK / 2] = static_cast<float>(b.qs[j] >> 4) * d + m;
                }
            }
            return;
        case QType::Q8_0: return dequantize_q8(static_cast<const block_q8_0*>(vx), y, n);
        case QType::Q8_1: return dequantize_q8(static_cast<const block_q8_1*>(vx), y, n);
    }
}

}  // namespace floe::ref
