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

// A pair as an Adapter holds it: B packed as panels.
struct TestPair {
    Matrix a, b;
    std::vector<uint8_t> b_panels;
    LoraPair pair;
    void pack() {
        b_panels.resize(lora_panels_bytes(b.type, pair.r, pair.n_out));
        pack_lora_b(b.type, b.bytes.data(), pair.r, pair.n_out, b_panels.data());
        pair.b_panels = b_panels.data();
    }
};

std::unique_ptr<TestPair> make_test_pair(int r, int64_t n_in, int64_t n_out, QType at, QType bt) {
    auto p = std::make_unique<TestPair>(TestPair{make_matrix(at, r * n_in, 0.3f), make_matrix(bt, n_out * r, 0.3f), {}, {}});
    p->pair = {at, bt, p->a.bytes.data(), nullptr, r, n_in, n_out};
    p->pack();
    return p;
}

// W x + sum_i s_i B_i A_i x for n tokens, as the decoder runs it: one matmul pass for W and the A's, then lora_apply.
std::vector<float> run_projection(const Kernels& k, const std::vector<float>& w, int64_t n_in, int64_t n_out,
                                  const std::vector<const LoraPair*>& pairs, const std::vector<float>& scales,
                                  const std::vector<float>& x, int n, int threads = 2) {
    ThreadPool pool(threads);
    std::vector<uint8_t> scratch;
    std::vector<float> y(static_cast<size_t>(n * n_out));
    std::vector<std::vector<float>> t(pairs.size());
    std::vector<MatmulJob> jobs = {{QType::F32, w.data(), n_out, y.data(), static_cast<size_t>(n_out)}};
    std::vector<LoraTerm> terms;
    for (size_t i = 0; i < pairs.size(); ++i) {
        t[i].resize(static_cast<size_t>(n * pairs[i]->r));
        jobs.push_back(lora_a_job(*pairs[i], t[i].data()));
        terms.push_back(lora_term(*pairs[i], scales[i], t[i].data()));
    }
    matmul_jobs(k, jobs.data(), static_cast<int>(jobs.size()), n_in, x.data(), n, pool, scratch);
    const LoraSite site{y.data(), static_cast<size_t>(n_out), n_out, terms.data(), static_cast<int>(terms.size())};
    lora_apply(k, &site, 1, n, pool);
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
    zero->pack();
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

// ---- the lora_up kernel itself, every variant against ref (the specification), on B as panels -----------------

namespace {

struct UpCase {
    std::vector<std::unique_ptr<TestPair>> pairs;
    std::vector<std::vector<float>> t;
    std::vector<LoraTerm> terms;
};

// Terms over one output of `rows` rows for n tokens; types alternate f32 / f16, ranks cycle through rs.
UpCase make_up_case(int64_t rows, const std::vector<int>& rs, int n, float b_scale, float t_scale) {
    UpCase u;
    for (size_t i = 0; i < rs.size(); ++i) {
        const QType bt = i % 2 ? QType::F16 : QType::F32;
        u.pairs.push_back(make_test_pair(rs[i], 1, rows, QType::F32, bt));
        if (b_scale != 0.3f) {  // rescale B (the callers keep f16 B well within its range)
            Matrix& b = u.pairs.back()->b;
            for (float& v : b.values) v *= b_scale / 0.3f;
            if (bt == QType::F32) std::memcpy(b.bytes.data(), b.values.data(), b.bytes.size());
            if (bt == QType::F16) {
                ref::quantize_f16(b.values.data(), b.bytes.data(), static_cast<int64_t>(b.values.size()));
                ref::dequantize(QType::F16, b.bytes.data(), b.values.data(), static_cast<int64_t>(b.values.size()));
            }
            u.pairs.back()->pack();
        }
        u.t.push_back(randn(static_cast<size_t>(n * rs[i]), t_scale));
    }
    for (size_t i = 0; i < rs.size(); ++i)
        u.terms.push_back(lora_term(u.pairs[i]->pair, i % 2 ? -0.625f : 1.5f, u.t[i].data()));
    return u;
}

}  // namespace

TEST(lora_pack_b_layout) {
    auto p = make_test_pair(3, 1, 17, QType::F32, QType::F32);
    const auto* panels = reinterpret_cast<const float*>(p->b_panels.data());
    CHECK(p->b_panels.size() == 2 * 3 * kLoraPanel * sizeof(float), "panel bytes %zu", p->b_panels.size());
    int bad = 0;
    for (int64_t o = 0; o < 2 * kLoraPanel; ++o)
        for (int j = 0; j < 3; ++j) {
            const float want = o < 17 ? p->b.values[o * 3 + j] : 0.0f;
            bad += panels[((o / kLoraPanel) * 3 + j) * kLoraPanel + o % kLoraPanel] != want;
        }
    CHECK(bad == 0, "%d panel values misplaced", bad);
}

TEST(lora_up_matches_reference) {
    struct Scale {
        float b, t;
    };
    // ordinary values, large products (|B t| near 1e37), tiny ones (subnormal products), t all zero
    const Scale scales[] = {{0.3f, 1.0f}, {1e30f, 1e7f}, {1e-20f, 1e-20f}, {0.3f, 0.0f}};
    for (int64_t rows : {1, 5, 16, 17, 33, 200})
        for (const std::vector<int>& rs : {std::vector<int>{1}, {8}, {3, 13}, {8, 8, 5}})
            for (int n : {1, 2, 5})
                for (const Scale& sc : scales) {
                    const Scale use = rs.size() > 1 && sc.b > 1.0f ? Scale{1e4f, 1e4f} : sc;  // f16 terms: its range
                    const UpCase u = make_up_case(rows, rs, n, use.b, use.t);
                    const size_t ldy = static_cast<size_t>(rows) + 7;  // rows..ldy must stay untouched
                    const std::vector<float> y0 = randn(ldy * n, 1.0f);
                    const int64_t panels = (rows + kLoraPanel - 1) / kLoraPanel;
                    std::vector<float> want = y0;
                    ref::lora_up(u.terms.data(), static_cast<int>(u.terms.size()), rows, 0, panels, n, want.data(), ldy);
                    for (const Kernels* k : available_variants()) {
                        std::vector<float> got = y0;
                        // two calls over [0, 1) and [1, panels), as two threads would split them
                        k->lora_up(u.terms.data(), static_cast<int>(u.terms.size()), rows, 0, 1, n, got.data(), ldy);
                        k->lora_up(u.terms.data(), static_cast<int>(u.terms.size()), rows, 1, panels, n, got.data(), ldy);
                        int bad = 0, touched = 0;
                        for (int c = 0; c < n; ++c)
                            for (size_t o = 0; o < ldy; ++o) {
                                const size_t i = c * ldy + o;
                                if (o >= static_cast<size_t>(rows)) {
                                    touched += std::memcmp(&got[i], &y0[i], sizeof(float)) != 0;
                                    continue;
                                }
                                double mag = std::fabs(y0[i]);
                                for (size_t ti = 0; ti < u.terms.size(); ++ti)
                                    for (int j = 0; j < rs[ti]; ++j)
                                        mag += std::fabs(static_cast<double>(u.terms[ti].scale) *
                                                         u.pairs[ti]->b.values[o * rs[ti] + j] * u.t[ti][c * rs[ti] + j]);
                                bad += !(std::fabs(static_cast<double>(got[i]) - want[i]) <= 1e-5 * mag + 1e-30);
                            }
                        CHECK(bad == 0 && touched == 0, "%s rows=%lld terms=%zu n=%d scale %g/%g: %d off ref, %d padding "
                              "rows written", k->name, static_cast<long long>(rows), rs.size(), n, use.b, use.t, bad,
                              touched);
                    }
                }
}

// Exact in every variant: two terms with scales s/2 (and the same B and t) add what one with s adds, and a zero B or
// zero t adds exactly nothing.
TEST(lora_up_exact_identities) {
    const int64_t rows = 37;
    const int n = 3;
    for (const Kernels* k : available_variants()) {
        UpCase u = make_up_case(rows, {8, 5}, n, 0.3f, 1.0f);
        const std::vector<float> y0 = randn(static_cast<size_t>(rows * n), 1.0f);
        const int64_t panels = (rows + kLoraPanel - 1) / kLoraPanel;
        auto run = [&](const std::vector<LoraTerm>& terms) {
            std::vector<float> y = y0;
            k->lora_up(terms.data(), static_cast<int>(terms.size()), rows, 0, panels, n, y.data(), rows);
            return y;
        };
        LoraTerm whole = u.terms[1], half = u.terms[1];
        whole.scale = 3.0f;
        half.scale = 1.5f;
        CHECK(run({whole}) == run({half, half}), "%s: s/2 + s/2 differs from s", k->name);
        std::fill(u.pairs[0]->b.bytes.begin(), u.pairs[0]->b.bytes.end(), 0);
        u.pairs[0]->pack();
        std::fill(u.t[1].begin(), u.t[1].end(), 0.0f);
        CHECK(run({u.terms[0], u.terms[1]}) == y0, "%s: a zero B or t changed y", k->name);
    }
}
