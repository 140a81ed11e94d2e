// The "neon_i8mm" variant (aarch64, compiled with -march=armv8.2-a+dotprod+i8mm): neon_dotprod's kernels, except
// that a quantized gemm tile with two activation columns (prefill, chunk verification) multiplies with SMMLA, which
// takes 2 weight rows x 8 values against 8 values x 2 columns per instruction where SDOT takes one row and one
// column. A matvec (decode) has a single column and stays on SDOT, as in ggml (it pairs rows and columns for
// i8mm only when there are two columns). Snapdragon 8 Gen 2 (Cortex-X3 / A715 / A510), Graviton 3, Apple M2 and
// later; dispatch.cpp offers it when HWCAP2_I8MM and HWCAP_ASIMDDP are both set.
#include "neon_sdot.h"

#if !defined(__ARM_FEATURE_MATMUL_INT8)
#error "neon_i8mm.cpp must be compiled with -march=armv8.2-a+dotprod+i8mm"
#endif

namespace floe {
namespace {

// Named for check_pi4_binary.sh, as DotSdot (neon_sdot.h).
struct DotI8mm : DotSdot {
    static constexpr bool kMmla = true;

    // the first (second) 8 bytes of x, then the first (second) 8 bytes of y
    static int8x16_t zip1_64(int8x16_t x, int8x16_t y) {
        return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(x), vreinterpretq_s64_s8(y)));
    }
    static int8x16_t zip2_64(int8x16_t x, int8x16_t y) {
        return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(x), vreinterpretq_s64_s8(y)));
    }

    // sums[c] = the 4 rows' dot products with column c's block (qa: column 0, qb: column 1), lane = row.
    // SMMLA's operands are row pairs: 8 values of row i then the same 8 of row i + 1, and likewise for the two
    // columns; its result is [r_i c0, r_i c1, r_i+1 c0, r_i+1 c1], int32 and exact for any int8 values.
    static void mmla_4x2(const int8x16_t (&lo)[4], const int8x16_t (&hi)[4], const int8_t* qa, const int8_t* qb,
                         int32x4_t (&sums)[2]) {
        const int8x16_t a_lo = vld1q_s8(qa), a_hi = vld1q_s8(qa + 16), b_lo = vld1q_s8(qb), b_hi = vld1q_s8(qb + 16);
        const int8x16_t x[4] = {zip1_64(a_lo, b_lo), zip2_64(a_lo, b_lo), zip1_64(a_hi, b_hi), zip2_64(a_hi, b_hi)};
        int32x4_t pair[2];
        for (int p = 0; p < 2; ++p) {
            const int r = 2 * p;
            int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip1_64(lo[r], lo[r + 1]), x[0]);
            s = vmmlaq_s32(s, zip2_64(lo[r], lo[r + 1]), x[1]);
            s = vmmlaq_s32(s, zip1_64(hi[r], hi[r + 1]), x[2]);
            pair[p] = vmmlaq_s32(s, zip2_64(hi[r], hi[r + 1]), x[3]);
        }
        sums[0] = vuzp1q_s32(pair[0], pair[1]);  // [r0 c0, r1 c0, r2 c0, r3 c0]
        sums[1] = vuzp2q_s32(pair[0], pair[1]);
    }
};

}  // namespace

const Kernels* kernels_neon_i8mm() {
    static constexpr Kernels k = neon::make_kernels<DotI8mm>("neon_i8mm");
    return &k;
}

}  // namespace floe
