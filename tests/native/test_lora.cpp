// LoRA products: the adapted projection of every variant against the scalar reference and a double computation,
// and the identities the decoder relies on. (Adapter files: test_lora_files.cpp.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "check.h"
#include "floe/lora.h"
#include "floe/matmul.h"

using namespace floe;

namespace {

std::mt19937 rng(4321);

std::vector<float> randn(size_t n, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// A LoRA matrix in f32 or f16 bytes, and its values as floats (after the f16 rounding).
struct Matrix {
    QType type;
    std::vector<uint8_t> bytes;
    std::vector<float> values;
};

Matrix make_matrix(QType type, size_t n, float scale) {
    Matrix m{type, {}, randn(n, scale)};
    m.bytes.resize(n * (type == QType::F32 ? 4 : 2));
    if (type == QType::F32) {
        std::memcpy(m.bytes.data(), m.values.data(), m.bytes.size());
    } else {
        ref::quantize_f16(m.values.data(), m.bytes.data(), static_cast<int64_t>(n));
        ref::dequantize(QType::F16, m.bytes.data(), m.values.data(), static_cast<int64_t>(n));
    }
    return m;
}

struct TestPair {
    Matrix a, b;
    LoraPair pair;
};

std::unique_ptr<TestPair> make_test_pair(int r, int64_t n_in, int64_t n_out, QType at, QType bt) {
    auto p = std::make_unique<TestPair>(TestPair{make_matrix(at, r * n_in, 0.3f), make_matrix(bt, n_out * r, 0.3f), {}});
    p->pair = {at, bt, p->a.bytes.data(), p->b.bytes.data(), r, n_in, n_out};
    return p;
}

// W x + sum_i s_i B_i A_i x for n tokens, as the decoder runs it: one matmul pass for W and the A's, then lora_apply.
std::vector<float> run_projection(const Kernels& k, const std::vector<float>& w, int64_t n_in, int64_t n_out,
                                  const std::vector<const LoraPair*>& pairs, const std::vector<float>& scales,
                                  const std::vector<float>& x, int n, int threads = 2) {
    ThreadPool pool(threads);
    std::vector<uint8_t> scratch;
    std::vector<float> lora_scratch, y(static_cast<size_t>(n * n_out));
    std::vector<std::vector<float>> t(pairs.size());
    std::vector<MatmulJob> jobs = {{QType::F32, w.data(), n_out, y.data(), static_cast<size_t>(n_out)}};
    std::vector<LoraTerm> terms;
    for (size_t i = 0; i < pairs.size(); ++i) {
        t[i].resize(static_cast<size_t>(n * pairs[i]->r));
        jobs.push_back(lora_a_job(*pairs[i], t[i].data()));
        terms.push_back({pairs[i], scales[i], t[i].data()});
    }
    matmul_jobs(k, jobs.data(), static_cast<int>(jobs.size()), n_in, x.data(), n, pool, scratch);
    const LoraSite site{y.data(), static_cast<size_t>(n_out), n_out, terms.data(), static_cast<int>(terms.size())};
    lora_apply(k, &site, 1, n, pool, lora_scratch);
    return y;
}

// The same in double, with the sum of absolute terms (the scale of the float rounding error) in err_scale.
std::vector<double> projection_double(const std::vector<float>& w, int64_t n_in, int64_t n_out,
                                      const std::vector<const TestPair*>& pairs, const std::vector<float>& scales,
                                      const std::vector<float>& x, int n, std::vector<double>& err_scale) {
    std::vector<double> y(static_cast<size_t>(n * n_out), 0.0);
    err_scale.assign(y.size(), 0.0);
    for (int c = 0; c < n; ++c) {
        const float* xc = &x[static_cast<size_t>(c * n_in)];
        for (int64_t o = 0; o < n_out; ++o)
            for (int64_t i = 0; i < n_in; ++i) {
                y[c * n_out + o] += static_cast<double>(w[o * n_in + i]) * xc[i];
                err_scale[c * n_out + o] += std::fabs(static_cast<double>(w[o * n_in + i]) * xc[i]);
            }
        for (size_t p = 0; p < pairs.size(); ++p) {
            const TestPair& tp = *pairs[p];
            const int r = tp.pair.r;
            std::vector<double> ax(r, 0.0), ax_abs(r, 0.0);
            for (int j = 0; j < r; ++j)
                for (int64_t i = 0; i < n_in; ++i) {
                    ax[j] += static_cast<double>(tp.a.values[j * n_in + i]) * xc[i];
                    ax_abs[j] += std::fabs(static_cast<double>(tp.a.values[j * n_in + i]) * xc[i]);
                }
            for (int64_t o = 0; o < n_out; ++o)
                for (int j = 0; j < r; ++j) {
                    const double bs = static_cast<double>(tp.b.values[o * r + j]) * scales[p];
                    y[c * n_out + o] += bs * ax[j];
                    err_scale[c * n_out + o] += std::fabs(bs) * ax_abs[j];
                }
        }
    }
    return y;
}

struct Shape {
    int64_t n_in, n_out;
    int r;
};
// r = 1, sizes that are not multiples of any SIMD width, and SmolLM2's widths
const Shape kShapes[] = {{1, 1, 1}, {7, 5, 1}, {17, 33, 4}, {64, 16, 8}, {100, 37, 3}, {576, 192, 8}, {576, 1536, 8}};
const QType kTypePairs[][2] = {{QType::F32, QType::F32}, {QType::F16, QType::F16}, {QType::F32, QType::F16},
                               {QType::F16, QType::F32}};

}  // namespace

TEST(lora_projection_matches_reference_and_double) {
    for (const Shape& s : kShapes) {
        for (const auto& types : kTypePairs) {
            for (int n : {1, 3, 9}) {
                const std::vector<float> w = randn(static_cast<size_t>(s.n_in * s.n_out), 0.1f);
                const std::vector<float> x = randn(static_cast<size_t>(n * s.n_in), 1.0f);
                auto p1 = make_test_pair(s.r, s.n_in, s.n_out, types[0], types[1]);
                auto p2 = make_test_pair(std::max(1, s.r / 2), s.n_in, s.n_out, types[1], types[0]);
                const std::vector<float> scales = {0.75f, -1.25f};
                std::vector<double> err;
                const std::vector<double> want = projection_double(w, s.n_in, s.n_out, {p1.get(), p2.get()}, scales, x,
                                                                   n, err);
                const std::vector<float> ref_y =
                    run_projection(kernels_ref(), w, s.n_in, s.n_out, {&p1->pair, &p2->pair}, scales, x, n);
                for (const Kernels* k : available_variants()) {
                    const std::vector<float> got =
                        run_projection(*k, w, s.n_in, s.n_out, {&p1->pair, &p2->pair}, scales, x, n);
                    int bad_ref = 0, bad_double = 0;
                    for (size_t i = 0; i < got.size(); ++i) {
                        const double tol = 1e-5 * err[i] + 1e-30;
                        bad_ref += std::fabs(static_cast<double>(got[i]) - ref_y[i]) > 2 * tol;
                        bad_double += std::fabs(got[i] - want[i]) > tol;
                    }
                    CHECK(bad_ref == 0 && bad_double == 0,
                          "%s n_in=%lld n_out=%lld r=%d types %d/%d n=%d: %d outputs off ref, %d off double", k->name,
                          static_cast<long long>(s.n_in), static_cast<long long>(s.n_out), s.r,
                          static_cast<int>(types[0]), static_cast<int>(types[1]), n, bad_ref, bad_double);
                }
            }
        }
    }
}

// Two terms sharing A and B with scales s/2 add exactly what one term with s adds; a zero B adds exactly nothing;
// the thread count does not change a bit.
TEST(lora_exact_identities) {
    const Shape s{100, 37, 4};
    const int n = 5;
    const std::vector<float> w = randn(static_cast<size_t>(s.n_in * s.n_out), 0.1f);
    const std::vector<float> x = randn(static_cast<size_t>(n * s.n_in), 1.0f);
    auto p = make_test_pair(s.r, s.n_in, s.n_out, QType::F16, QType::F32);
    auto zero = make_test_pair(s.r, s.n_in, s.n_out, QType::F32, QType::F16);
    std::fill(zero->b.bytes.begin(), zero->b.bytes.end(), 0);
    for (const Kernels* k : available_variants()) {
        const auto whole = run_projection(*k, w, s.n_in, s.n_out, {&p->pair}, {1.5f}, x, n);
        const auto halves = run_projection(*k, w, s.n_in, s.n_out, {&p->pair, &p->pair}, {0.75f, 0.75f}, x, n);
        CHECK(whole == halves, "%s: s/2 + s/2 differs from s", k->name);
        const auto base = run_projection(*k, w, s.n_in, s.n_out, {}, {}, x, n);
        const auto with_zero = run_projection(*k, w, s.n_in, s.n_out, {&zero->pair}, {3.0f}, x, n);
        CHECK(base == with_zero, "%s: a zero B changed the projection", k->name);
        const auto one_thread = run_projection(*k, w, s.n_in, s.n_out, {&p->pair}, {1.5f}, x, n, 1);
        const auto three_threads = run_projection(*k, w, s.n_in, s.n_out, {&p->pair}, {1.5f}, x, n, 3);
        CHECK(one_thread == whole && three_threads == whole, "%s: thread count changed the result", k->name);
    }
}
