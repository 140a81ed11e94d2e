// Every available SIMD variant (and vnni_emu, test_variants.h) against the scalar reference, on random data and edge cases.
#include <cmath>
#include <cstring>
#include <random>

#include "check.h"
#include "test_variants.h"
#include "floe/kernels.h"
#include "floe/matmul.h"

using namespace floe;

namespace {

std::mt19937 rng(1234);

std::vector<float> random_floats(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
}

std::vector<uint8_t> random_bytes(size_t n) {
    std::uniform_int_distribution<int> dist(0, 255);
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = static_cast<uint8_t>(dist(rng));
    return v;
}

std::vector<const Kernels*> simd_variants() {
    std::vector<const Kernels*> out;
    for (const Kernels* k : floe_test::kernel_variants())
        if (k != &kernels_ref()) out.push_back(k);
    return out;
}

bool close(float got, float want, float rel, float abs_tol) {
    if (std::isnan(want)) return std::isnan(got);
    if (std::isinf(want)) return got == want;
    return std::fabs(got - want) <= rel * std::fabs(want) + abs_tol;
}

// Quantized weights of `rows` rows in type t, from random floats (edge rows mixed in).
std::vector<uint8_t> make_weights(QType t, int rows, int64_t cols) {
    std::vector<float> f = random_floats(rows * cols);
    if (rows > 2) {
        std::fill(f.begin(), f.begin() + cols, 0.0f);  // an all-zero row
        for (int64_t i = 0; i < cols; ++i) f[cols + i] = (i % 2 ? 1.0f : -1.0f) * 1e4f;  // max magnitude
    }
    std::vector<uint8_t> w(row_size(t, cols) * rows);
    switch (t) {
        case QType::Q4_0: ref::quantize_q4_0(f.data(), w.data(), rows * cols); break;
        case QType::Q4_1: ref::quantize_q4_1(f.data(), w.data(), rows * cols); break;
        case QType::Q8_0: ref::quantize_q8_0_weights(f.data(), w.data(), rows * cols); break;
        case QType::F16: ref::quantize_f16(f.data(), w.data(), rows * cols); break;
        default: std::memcpy(w.data(), f.data(), w.size());
    }
    return w;
}

// Activations in the weight type's activation format.
std::vector<uint8_t> make_activations(QType wt, int rows, int64_t cols, const std::vector<float>& f) {
    const QType at = type_traits(wt).activation;
    std::vector<uint8_t> a(row_size(at, cols) * rows);
    if (quantize_fn q = kernels_ref().quantize(at))
        q(f.data(), a.data(), rows * cols);
    else
        std::memcpy(a.data(), f.data(), a.size());
    return a;
}

// Sum of |w_i * a_i| over dequantized operands: the scale of rounding error a dot product may carry.
float abs_dot(QType wt, const uint8_t* w, const uint8_t* a, int64_t n) {
    std::vector<float> wf(n), af(n);
    ref::dequantize(wt, w, wf.data(), n);
    ref::dequantize(type_traits(wt).activation, a, af.data(), n);
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(wf[i]) * af[i]);
    if (wt == QType::Q4_1)  // plus the m * s term of every block
        for (int64_t b = 0; b < n / QK; ++b)
            s += std::fabs(fp16_to_fp32(reinterpret_cast<const block_q4_1*>(w)[b].m) *
                           fp16_to_fp32(reinterpret_cast<const block_q8_1*>(a)[b].s));
    return static_cast<float>(s);
}

const QType kWeightTypes[] = {QType::Q4_0, QType::Q4_1, QType::Q8_0, QType::F16, QType::F32};

}  // namespace

TEST(fp16_round_trip_all_values) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = fp16_to_fp32(static_cast<fp16_t>(h));
        if (std::isnan(f)) continue;
        if (fp32_to_fp16(f) != h) ++bad;
    }
    CHECK(bad == 0, "%d halfs do not round-trip", bad);
    CHECK(fp32_to_fp16(65520.0f) == 0x7c00, "65520 must round to inf");
    CHECK(fp32_to_fp16(65519.0f) == 0x7bff, "65519 must round to 65504");
    CHECK(fp32_to_fp16(1.0f + 1.0f / 2048) == 0x3c00, "tie must round to even");
    CHECK(fp32_to_fp16(5.9604645e-08f) == 0x0001, "smallest subnormal");
    CHECK(fp32_to_fp16(2.9802322e-08f) == 0x0000, "half of smallest subnormal ties to zero");
}

TEST(quantize_activations_byte_identical) {
    for (const Kernels* k : simd_variants()) {
        for (int64_t n : {32, 64, 576, 1536}) {
            std::vector<float> x = random_floats(n, 3.0f);
            if (n >= 96) {
                std::fill(x.begin(), x.begin() + 32, 0.0f);  // zero block
                x[32] = 127.0f;  // scale 1: the others land exactly on .5 ties
                for (int j = 33; j < 64; ++j) x[j] = (j % 2 ? 1.0f : -1.0f) * (static_cast<float>(j - 33) + 0.5f);
                x[64] = 3.0e38f;
                x[65] = -3.0e38f;
            }
            for (QType at : {QType::Q8_0, QType::Q8_1}) {
                std::vector<uint8_t> want(row_size(at, n)), got(row_size(at, n), 0xAA);
                kernels_ref().quantize(at)(x.data(), want.data(), n);
                k->quantize(at)(x.data(), got.data(), n);
                CHECK(want == got, "%s quantize %s n=%lld differs from ref", k->name, type_traits(at).name,
                      static_cast<long long>(n));
            }
        }
    }
}

TEST(gemm_matches_reference_random) {
    for (const Kernels* k : simd_variants()) {
        for (QType wt : kWeightTypes) {
            // 2080: rows long enough for x86's pairs of tiles in every format, with an odd block count
            for (int64_t n : {32, 64, 96, 576, 1536, 2080}) {
                for (int nr : {1, 2, 3, 4, 5, 7, 8, 13, 16, 33}) {
                    for (int nc : {1, 2, 3, 4, 5, 9}) {
                        const std::vector<uint8_t> w = make_weights(wt, nr, n);
                        const std::vector<uint8_t> a = make_activations(wt, nc, n, random_floats(nc * n));
                        const size_t ldw = row_size(wt, n), lda = row_size(type_traits(wt).activation, n);
                        std::vector<float> want(nr * nc), got(nr * nc, NAN);
                        kernels_ref().gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, want.data(), nr);
                        k->gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, got.data(), nr);
                        for (int c = 0; c < nc; ++c)
                            for (int r = 0; r < nr; ++r) {
                                const float tol = 1e-5f * abs_dot(wt, &w[r * ldw], &a[c * lda], n) + 1e-30f;
                                const float g = got[c * nr + r], e = want[c * nr + r];
                                CHECK(std::fabs(g - e) <= tol, "%s gemm %s n=%lld nr=%d nc=%d [%d,%d]: %g vs ref %g",
                                      k->name, type_traits(wt).name, static_cast<long long>(n), nr, nc, r, c, g, e);
                            }
                    }
                }
            }
        }
    }
}

// The tile walk stores only real rows and columns: with an output stride ldo > nr (as matmul's row chunks use),
// the gap between columns and everything past the last column keep their values, whatever the short tiles.
static void check_gemm_outputs_only(const Kernels* k, QType wt, int64_t n, int nr, int nc) {
    constexpr float kSentinel = 12345.0f;
    const std::vector<uint8_t> w = make_weights(wt, nr, n);
    const std::vector<uint8_t> a = make_activations(wt, nc, n, random_floats(nc * n));
    const size_t ldw = row_size(wt, n), lda = row_size(type_traits(wt).activation, n);
    const size_t ldo = nr + 3;
    std::vector<float> want(nr * nc), got(ldo * nc + 4, kSentinel);
    kernels_ref().gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, want.data(), nr);
    k->gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, got.data(), ldo);
    for (size_t i = 0; i < got.size(); ++i) {
        const size_t c = i / ldo, r = i % ldo;
        if (c < static_cast<size_t>(nc) && r < static_cast<size_t>(nr)) {
            const float tol = 1e-5f * abs_dot(wt, &w[r * ldw], &a[c * lda], n) + 1e-30f;
            CHECK(std::fabs(got[i] - want[c * nr + r]) <= tol, "%s gemm %s n=%lld nr=%d nc=%d [%zu,%zu]: %g vs %g",
                  k->name, type_traits(wt).name, static_cast<long long>(n), nr, nc, r, c, got[i], want[c * nr + r]);
        } else {
            CHECK(got[i] == kSentinel, "%s gemm %s n=%lld nr=%d nc=%d wrote outside its outputs at %zu", k->name,
                  type_traits(wt).name, static_cast<long long>(n), nr, nc, i);
        }
    }
}

TEST(gemm_writes_only_its_outputs) {
    for (const Kernels* k : floe_test::kernel_variants())
        for (QType wt : kWeightTypes)
            for (int64_t n : {64, 2080})  // 2080: x86's pairs of tiles (13 rows: a pair, a tile, a short tile)
                for (int nr : {1, 3, 5, 6, 7, 13})
                    for (int nc : {1, 3, 5, 6, 9}) check_gemm_outputs_only(k, wt, n, nr, nc);
}

// With unit scales and integer mins every partial sum is an integer below 2^24: any summation order gives the
// same float, so the integer dot products must agree exactly.
TEST(gemm_integer_dots_exact) {
    const fp16_t one = fp32_to_fp16(1.0f);
    for (const Kernels* k : simd_variants()) {
        for (QType wt : {QType::Q4_0, QType::Q4_1, QType::Q8_0}) {
            const QType at = type_traits(wt).activation;
            const int64_t n = 1536;
            const int nr = 13, nc = 3;
            const size_t ldw = row_size(wt, n), lda = row_size(at, n);
            std::vector<uint8_t> w = random_bytes(ldw * nr), a = random_bytes(lda * nc);
            for (int r = 0; r < nr; ++r)
                for (int64_t b = 0; b < n / QK; ++b) {
                    uint8_t* blk = &w[r * ldw + b * type_traits(wt).type_size];
                    std::memcpy(blk, &one, 2);
                    if (wt == QType::Q4_1) {
                        const fp16_t m = fp32_to_fp16(static_cast<float>(static_cast<int>(blk[2] % 17) - 8));
                        std::memcpy(blk + 2, &m, 2);
                    }
                    if (r == 0 && wt == QType::Q8_0) std::memset(blk + 2, 0x80, QK);  // all -128
                    if (r == 1) std::memset(blk + type_traits(wt).type_size - (wt == QType::Q8_0 ? QK : QK / 2),
                                            wt == QType::Q8_0 ? 0x7f : 0xff, wt == QType::Q8_0 ? QK : QK / 2);
                }
            for (int c = 0; c < nc; ++c)
                for (int64_t b = 0; b < n / QK; ++b) {
                    uint8_t* blk = &a[c * lda + b * type_traits(at).type_size];
                    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + type_traits(at).type_size - QK);
                    if (c == 1) std::memset(blk + type_traits(at).type_size - QK, 0x7f, QK);  // all +127
                    std::memcpy(blk, &one, 2);
                    if (at == QType::Q8_1) {
                        int sum = 0;
                        for (int j = 0; j < QK; ++j) sum += qs[j];
                        const fp16_t s = fp32_to_fp16(static_cast<float>(sum));
                        std::memcpy(blk + 2, &s, 2);
                    }
                }
            std::vector<float> want(nr * nc), got(nr * nc);
            kernels_ref().gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, want.data(), nr);
            k->gemm(wt)(n, w.data(), ldw, nr, a.data(), lda, nc, got.data(), nr);
            CHECK(want == got, "%s gemm %s: integer dot products differ from ref", k->name, type_traits(wt).name);
        }
    }
}

TEST(f32_ops_match_reference) {
    for (const Kernels* k : simd_variants()) {
        for (int64_t n : {1, 7, 8, 15, 16, 17, 33, 100, 576, 1536}) {
            const std::vector<float> x = random_floats(n, 4.0f), wgt = random_floats(n), up = random_floats(n);
            std::vector<float> want(n), got(n);
            ref::rmsnorm(want.data(), x.data(), wgt.data(), n, 1e-5f);
            k->rmsnorm(got.data(), x.data(), wgt.data(), n, 1e-5f);
            for (int64_t i = 0; i < n; ++i)
                CHECK(close(got[i], want[i], 1e-5f, 1e-6f), "%s rmsnorm n=%lld", k->name, static_cast<long long>(n));

            std::vector<float> gate = random_floats(n, 8.0f);
            if (n > 4) gate[0] = -100.0f, gate[1] = 100.0f, gate[2] = 0.0f, gate[3] = -88.0f;
            ref::swiglu(want.data(), gate.data(), up.data(), n);
            k->swiglu(got.data(), gate.data(), up.data(), n);
            for (int64_t i = 0; i < n; ++i)
                CHECK(close(got[i], want[i], 1e-5f, 1e-30f), "%s swiglu n=%lld g=%g: %g vs %g", k->name,
                      static_cast<long long>(n), gate[i], got[i], want[i]);

            std::vector<float> s = random_floats(n, 10.0f);
            if (n > 4) s[0] = -INFINITY, s[1] = 80.0f, s[2] = -80.0f;
            want = s, got = s;
            ref::softmax(want.data(), n);
            k->softmax(got.data(), n);
            for (int64_t i = 0; i < n; ++i)
                CHECK(close(got[i], want[i], 1e-5f, 1e-30f), "%s softmax n=%lld [%lld]: %g vs %g", k->name,
                      static_cast<long long>(n), static_cast<long long>(i), got[i], want[i]);
        }
        std::vector<float> same(100, 3.0f), want = same;  // all equal -> uniform
        ref::softmax(want.data(), 100);
        k->softmax(same.data(), 100);
        for (int i = 0; i < 100; ++i) CHECK(close(same[i], want[i], 1e-6f, 0), "%s softmax uniform", k->name);
    }
}

// Every f16 rounding case: halfway ties both ways, the largest finite half and the overflow edge, subnormal halves
// and the smallest ones that round to zero, signed zeros, infinities; then random values. Bit-identical to ref,
// NaN only as NaN (payloads may differ between F16C / FCVTN and the scalar code).
TEST(round_f16_matches_reference) {
    std::vector<float> x = {0.0f, -0.0f, 1.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -(1.0f + 0x1p-11f), 65504.0f,
                            65519.99f, 65520.0f, -65520.0f, 0x1p-14f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-26f,
                            3 * 0x1p-25f, -0x1p-25f, 1e-30f, INFINITY, -INFINITY, NAN, 0.333333f, 2049.0f, 4097.0f};
    for (float v : random_floats(1000, 1e3f)) x.push_back(v);
    for (float v : random_floats(200, 1e-5f)) x.push_back(v);  // subnormal halves
    for (const Kernels* k : simd_variants()) {
        for (size_t n : {x.size(), size_t{1}, size_t{7}, size_t{9}}) {
            std::vector<float> want(x.begin(), x.begin() + n), got = want;
            ref::round_f16(want.data(), n);
            k->round_f16(got.data(), n);
            for (size_t i = 0; i < n; ++i) {
                const bool same = std::isnan(want[i]) ? std::isnan(got[i])
                                                      : std::memcmp(&got[i], &want[i], sizeof(float)) == 0;
                CHECK(same, "%s round_f16(%a) = %a, ref %a", k->name, x[i], got[i], want[i]);
            }
        }
    }
}

TEST(rope_matches_reference) {
    for (const Kernels* k : simd_variants()) {
        for (int head_dim : {2, 6, 16, 64, 128}) {
            for (bool neox : {false, true}) {
                std::vector<float> cs(head_dim);
                rope_table(cs.data(), 37, head_dim, 10000.0f);
                const int n_heads = 3;
                std::vector<float> want = random_floats(n_heads * head_dim), got = want;
                ref::rope(want.data(), n_heads, head_dim, cs.data(), neox);
                k->rope(got.data(), n_heads, head_dim, cs.data(), neox);
                for (int i = 0; i < n_heads * head_dim; ++i)
                    CHECK(close(got[i], want[i], 1e-6f, 1e-6f), "%s rope d=%d neox=%d", k->name, head_dim, neox);
            }
        }
    }
}

TEST(rope_table_rotates) {
    std::vector<float> cs(64);
    rope_table(cs.data(), 0, 64, 10000.0f);
    CHECK(cs[0] == 1.0f && cs[1] == 0.0f, "position 0 is the identity");
    rope_table(cs.data(), 5, 64, 10000.0f);
    CHECK(close(cs[0], std::cos(5.0f), 1e-6f, 1e-7f) && close(cs[1], std::sin(5.0f), 1e-6f, 1e-7f), "theta_0 = pos");
}

TEST(matmul_threads_agree) {
    for (const Kernels* k : floe_test::kernel_variants()) {
        for (QType wt : kWeightTypes) {
            const int64_t rows = 100, cols = 256;
            const int n = 3;
            const std::vector<uint8_t> w = make_weights(wt, rows, cols);
            const std::vector<float> x = random_floats(n * cols);
            std::vector<float> want(n * rows), got(n * rows);
            std::vector<uint8_t> scratch;
            const std::vector<uint8_t> a = make_activations(wt, n, cols, x);
            kernels_ref().gemm(wt)(cols, w.data(), row_size(wt, cols), rows, a.data(),
                                   row_size(type_traits(wt).activation, cols), n, want.data(), rows);
            for (int threads : {1, 2, 3}) {
                ThreadPool pool(threads);
                matmul(*k, wt, w.data(), rows, cols, x.data(), n, got.data(), pool, scratch);
                for (int i = 0; i < n * rows; ++i)
                    CHECK(close(got[i], want[i], 1e-4f, 1e-3f), "%s matmul %s threads=%d [%d]: %g vs %g", k->name,
                          type_traits(wt).name, threads, i, got[i], want[i]);
            }
        }
    }
}

TEST(matmul_rejects_bad_shapes) {
    bool threw = false;
    try {
        check_matmul_shape(QType::Q4_0, 4, 33);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "cols not a multiple of 32 must be rejected");
    threw = false;
    try {
        check_matmul_shape(QType::Q8_1, 4, 32);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "q8_1 weights must be rejected");
}
