// The SDOT dot-product policy (armv8.2 dotprod), shared by the variants compiled with it: neon_dotprod.cpp and
// neon_i8mm.cpp. Only files built with +dotprod may include it (see neon_base.h on linkage).
#pragma once
#include "neon_common.h"

#if !defined(__aarch64__) || !defined(__ARM_FEATURE_DOTPROD)
#error "neon_sdot.h needs aarch64 with -march=armv8.2-a+dotprod"
#endif

namespace floe {
namespace {

// The name matters: every kernel of the variant is instantiated with its Dot policy and carries its name, which is
// how targets/ci/check_pi4_binary.sh --portable tells this variant's SDOT from a stray one elsewhere.
struct DotSdot {
    static constexpr bool kMmla = false;
    static int32x4_t dot_q4(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
        return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
    }
    static int32x4_t dot_q8(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
        return dot_q4(w0, w1, a0, a1);  // int32 lanes: no overflow whatever the int8 values
    }
};

}  // namespace
}  // namespace floe
