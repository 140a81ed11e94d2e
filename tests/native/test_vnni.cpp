// The VNNI variants (avx512_vnni, avx_vnni, and vnni_emu everywhere with AVX2): dispatch order, and the integer
// dot products exact against ref at the int8 extremes, for every block count mod 4 (the G-block steps' tails).
#include <cstring>
#include <random>
#include <string>

#include "check.h"
#include "floe/kernels.h"
#include "test_variants.h"

using namespace floe;

namespace {

// Why a compiled-in VNNI variant cannot run here ("" when it can, or is not compiled in).
std::string vnni_skip_reason(const Kernels* k, bool cpu_has, const char* feature) {
    if (k == nullptr || find_variant(k->name) != nullptr) return "";
    return std::string(k->name) + " skipped: " + (cpu_has ? "the OS does not save its register state" :
                                                               std::string("this CPU has no ") + feature);
}

// One block of type t with unit scale (and an integer min for q4_1, a sum for q8_1) and quants from `pick`.
template <class Pick>
void fill_block(QType t, uint8_t* blk, Pick pick) {
    const fp16_t one = fp32_to_fp16(1.0f);
    std::memcpy(blk, &one, 2);
    const size_t size = type_traits(t).type_size;
    const bool nibbles = t == QType::Q4_0 || t == QType::Q4_1;
    uint8_t* qs = blk + size - (nibbles ? QK / 2 : QK);
    int sum = 0;
    for (int j = 0; j < (nibbles ? QK / 2 : QK); ++j) {
        qs[j] = pick(j);
        sum += static_cast<int8_t>(qs[j]);
    }
    if (t == QType::Q4_1) {
        const fp16_t m = fp32_to_fp16(static_cast<float>(qs[0] % 17) - 8.0f);
        std::memcpy(blk + 2, &m, 2);
    }
    if (t == QType::Q8_1) {
        const fp16_t s = fp32_to_fp16(static_cast<float>(sum));
        std::memcpy(blk + 2, &s, 2);
    }
}

}  // namespace

TEST(vnni_dispatch_order) {
    const CpuFeatures& f = cpu_features();
    const std::vector<const Kernels*> v = available_variants();
    const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx2 && f.fma && f.f16c;
    if (avx512 && f.avx512vnni && kernels_avx512_vnni())
        CHECK(v.front() == kernels_avx512_vnni(), "AVX512-VNNI CPU: best variant is %s", v.front()->name);
    else if (!(avx512 && kernels_avx512()) && f.avxvnni && f.avx2 && f.fma && f.f16c && kernels_avx_vnni())
        CHECK(v.front() == kernels_avx_vnni(), "AVX-VNNI CPU: best variant is %s", v.front()->name);
    for (const std::string& why : {vnni_skip_reason(kernels_avx512_vnni(), f.avx512vnni, "AVX512_VNNI"),
                                   vnni_skip_reason(kernels_avx_vnni(), f.avxvnni, "AVX-VNNI")})
        if (!why.empty()) std::printf("     %s\n", why.c_str());
}

// Unit scales: every sum is an integer < 2^24, so any summation order gives ref's float exactly. Rows and columns
// cycle through the extremes: -128 / 127 / 0 weights and activations, 15 / 0 nibbles, and random bytes.
TEST(vnni_integer_dots_exact_at_extremes) {
    std::mt19937 rng(77);
    const auto pattern = [&](int kind) {
        return [&rng, kind](int j) -> uint8_t {
            switch (kind) {
                case 0: return 0x80;                        // -128 (q8), 0 / 8 (nibbles)
                case 1: return 0x7f;                        // 127, nibbles 15 / 7
                case 2: return j % 2 ? 0x80 : 0x7f;         // alternating extremes
                case 3: return 0x00;
                case 4: return 0xff;                        // -1, nibbles 15 / 15
                default: return static_cast<uint8_t>(rng());
            }
        };
    };
    for (const Kernels* k : floe_test::kernel_variants()) {
        if (k == &kernels_ref()) continue;
        for (QType wt : {QType::Q4_0, QType::Q4_1, QType::Q8_0}) {
            const QType at = type_traits(wt).activation;
            for (int64_t nb : {1, 2, 3, 5, 6, 7, 13, 49}) {
                const int64_t n = nb * QK;
                const int nr = 9, nc = 6;
                const size_t ldw = row_size(wt, n), lda = row_size(at, n);
                std::vector<uint8_t> w(ldw * nr), a(lda * nc);
                for (int r = 0; r < nr; ++r)
                    for (int64_t b = 0; b < nb; ++b)
                        fill_block(wt, &w[r * ldw + b * type_traits(wt).type_size], pattern((r + b) % 6));
                for (int c = 0; c < nc; ++c)
                    for (int64_t b = 0; b < nb; ++b)
                        fill_block(at, &a[c * lda + b * type_traits(at).type_size], pattern((c + 2 * b) % 6));
                std::vector<float> want(nr * nc), got(nr * nc);
                kernels_ref().gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, want.data(), nr);
                k->gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, got.data(), nr);
                for (int i = 0; i < nr * nc; ++i)
                    CHECK(want[i] == got[i], "%s gemm %s nb=%lld [%d,%d]: %.1f vs ref %.1f", k->name,
                          type_traits(wt).name, static_cast<long long>(nb), i % nr, i / nr, got[i], want[i]);
            }
        }
    }
}
