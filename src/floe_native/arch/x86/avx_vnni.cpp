// AVX-VNNI (VEX-encoded vpdpbusd on 256-bit vectors: Alder Lake and later Intel cores without AVX-512): the AVX2
// table with vpdpbusd as the integer dot product of the quantized gemms (x86_gemm.h's Vnni). Two blocks per
// 256-bit step (G = 2): these cores have full-width 256-bit units (the AVX2 table's G = 1 suits Zen1's halves).
//
// Compiled a second time into the native tests with FLOE_DPBUSD_EMULATED and AVX2 flags only (table
// "vnni_emu"): the same code with vpdpbusd emulated, so CPUs without VNNI still test this path.
#include "x86_gemm.h"

namespace floe {

#if defined(FLOE_DPBUSD_EMULATED)
const Kernels* kernels_vnni_emu() {
    static constexpr Kernels k = x86::make_kernels<2, x86::Vnni>("vnni_emu", x86::avx2::lora_up);
    return &k;
}
#else
const Kernels* kernels_avx_vnni() {
    static constexpr Kernels k = x86::make_kernels<2, x86::Vnni>("avx_vnni", x86::avx2::lora_up);
    return &k;
}
#endif

}  // namespace floe
