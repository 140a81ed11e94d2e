// AVX-512 (F + BW + VL) kernels. The quantized gemms are the x86_gemm.h templates with two blocks per 256-bit step,
// EVEX-encoded (32 registers; 512-bit steps streamed slower, see x86_lanes.h); everything else but lora_up is the
// AVX2 function itself.

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*; GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "x86_gemm.h"
#include "x86_lora.h"

namespace floe {
namespace {

void lora_up_avx512(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
                    size_t ldy) {
    lora::up_walk<x86::LoraAvx512>(terms, n_terms, rows, p0, p1, n, y, ldy);
}

}  // namespace

// Constant-initialized table: calling kernels_avx512() runs no AVX-512 instruction, so it is safe to ask on any
// CPU whether the variant is compiled in.
const Kernels* kernels_avx512() {
    static constexpr Kernels k = x86::make_kernels<2, x86::Maddubs>("avx512", lora_up_avx512);
    return &k;
}

}  // namespace floe
