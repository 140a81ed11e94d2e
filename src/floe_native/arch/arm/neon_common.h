// The NEON kernel table, shared by the "neon" (neon.cpp) and "neon_dotprod" (neon_dotprod.cpp) variants: the same
// kernels, with the int8 dot products of the quantized gemms done by the variant's Dot policy. Linkage: see
// neon_base.h.
#pragma once
#include "neon_fusion.h"
#include "neon_gemm.h"
#include "neon_lora.h"
#include "neon_ops.h"

namespace floe {
namespace {
namespace neon {

template <class Dot>
constexpr Kernels make_kernels(const char* name) {
    return Kernels{
        name,
        quantize_q8_0,
        quantize_q8_1,
        gemm_q<Dot, FmtQ4_0>,
        gemm_q<Dot, FmtQ4_1>,
        gemm_q<Dot, FmtQ8_0>,
        gemm_f<RowF16>,
        gemm_f<RowF32>,
        rmsnorm,
        softmax,
        swiglu,
        rope,
        round_f16,
        max,
        sum_exp,
        lincomb,
        mix_exp,
        topk,
        lora_up,
    };
}

}  // namespace neon
}  // namespace
}  // namespace floe
