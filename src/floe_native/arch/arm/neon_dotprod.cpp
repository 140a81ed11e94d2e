// The "neon_dotprod" variant (aarch64, compiled with -march=armv8.2-a+dotprod): the same kernels as "neon"
// (neon_common.h) with the int8 dot products done by SDOT (neon_sdot.h). Pi 5 (Cortex-A76), Snapdragon; dispatch.cpp
// only offers it when HWCAP_ASIMDDP is set.
#include "neon_sdot.h"

namespace floe {

const Kernels* kernels_neon_dotprod() {
    static constexpr Kernels k = neon::make_kernels<DotSdot>("neon_dotprod");
    return &k;
}

}  // namespace floe
