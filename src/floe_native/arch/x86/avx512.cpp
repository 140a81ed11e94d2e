// AVX-512 (F + BW + VL) kernels. The quantized gemms are the x86_common.h templates with four blocks per 512-bit
// step; everything that gains little from 512-bit vectors is the AVX2 function itself.

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*; GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "x86_common.h"

namespace floe {

// Constant-initialized table: calling kernels_avx512() runs no AVX-512 instruction, so it is safe to ask on any
// CPU whether the variant is compiled in.
const Kernels* kernels_avx512() {
    using namespace x86;
    static const Kernels k = {
        "avx512",
        avx2::quantize_q8_0,
        avx2::quantize_q8_1,
        gemm_quant<Q4_0, 4>,
        gemm_quant<Q4_1, 4>,
        gemm_quant<Q8_0, 4>,
        avx2::gemm_f16,
        avx2::gemm_f32,
        avx2::rmsnorm,
        avx2::softmax,
        avx2::swiglu,
        avx2::rope,
        avx2::max,
        avx2::sum_exp,
        avx2::lincomb,
        avx2::mix_exp,
        avx2::topk,
    };
    return &k;
}

}  // namespace floe
