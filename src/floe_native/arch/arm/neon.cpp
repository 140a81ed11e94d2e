// The "neon" variant: Advanced SIMD only (aarch64, and armv7 with -mfpu=neon). Baseline for the Pi 4 (Cortex-A72)
// and every other ARM board; the kernels themselves are in neon_common.h.
#include "neon_common.h"

namespace floe {

const Kernels* kernels_neon() {
    static constexpr Kernels k = neon::make_kernels<neon::DotNeon>("neon");
    return &k;
}

}  // namespace floe
