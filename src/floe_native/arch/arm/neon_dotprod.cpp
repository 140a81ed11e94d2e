// The "neon_dotprod" variant (aarch64, compiled with -march=armv8.2-a+dotprod): the same kernels as "neon"
// (neon_common.h) with the int8 dot products done by SDOT. Pi 5 (Cortex-A76), Snapdragon; dispatch.cpp only
// offers it when HWCAP_ASIMDDP is set.
#include "neon_common.h"

#if !defined(__aarch64__) || !defined(__ARM_FEATURE_DOTPROD)
#error "neon_dotprod.cpp must be compiled for aarch64 with -march=armv8.2-a+dotprod"
#endif

namespace floe {
namespace {

// The name matters: every kernel of this variant is instantiated with DotSdot and carries it, which is how
// targets/ci/check_pi4_binary.sh --portable tells this variant's SDOT from a stray one elsewhere.
struct DotSdot {
    static int32x4_t dot_q4(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
        return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
    }
    static int32x4_t dot_q8(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
        return dot_q4(w0, w1, a0, a1);  // int32 lanes: no overflow whatever the int8 values
    }
};

}  // namespace

const Kernels* kernels_neon_dotprod() {
    static constexpr Kernels k = neon::make_kernels<DotSdot>("neon_dotprod");
    return &k;
}

}  // namespace floe
