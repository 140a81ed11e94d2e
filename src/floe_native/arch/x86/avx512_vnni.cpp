// AVX-512 with VNNI (F + BW + VL + VNNI: Ice Lake, Zen4 and later): avx512.cpp's table with vpdpbusd as the
// integer dot product of the quantized gemms (x86_gemm.h's Vnni), which also lets q8_0 weights take it when
// several columns share them (gemm_q8_0 says why not for a matvec).

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*; GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "x86_gemm.h"
#include "x86_lora.h"

namespace floe {
namespace {

void lora_up_avx512_vnni(const LoraUpTerm* terms, int n_terms, int64_t rows, int64_t p0, int64_t p1, int n, float* y,
                         size_t ldy) {
    lora::up_walk<x86::LoraAvx512>(terms, n_terms, rows, p0, p1, n, y, ldy);
}

}  // namespace

// Constant-initialized: asking for the table runs no AVX-512 instruction (see avx512.cpp).
const Kernels* kernels_avx512_vnni() {
    static constexpr Kernels k = x86::make_kernels<2, x86::Vnni>("avx512_vnni", lora_up_avx512_vnni);
    return &k;
}

}  // namespace floe
