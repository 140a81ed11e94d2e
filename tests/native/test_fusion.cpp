// Fusion primitives of every SIMD variant against ref, and fusion / sampling through each variant against ref.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <stdexcept>

#include "check.h"
#include "floe/fusion.h"
#include "floe/kernels.h"

using namespace floe;

// Heap allocations of this thread while an AllocationCount is alive (the global operator new is replaced for the
// whole test binary; it counts only inside such a scope).
namespace {
thread_local bool g_counting = false;
thread_local long g_allocations = 0;

struct AllocationCount {
    AllocationCount() { g_allocations = 0, g_counting = true; }
    ~AllocationCount() { g_counting = false; }
    long value() const { return g_allocations; }
};
}  // namespace

// Every unaligned form is replaced, so each allocation and its release meet in malloc / free (ASan checks pairs).
namespace {
void* counted_malloc(std::size_t size) noexcept {
    if (g_counting) ++g_allocations;
    return std::malloc(size != 0 ? size : 1);
}
void* counted_new(std::size_t size) {
    if (void* p = counted_malloc(size)) return p;
    throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return counted_new(size); }
void* operator new[](std::size_t size) { return counted_new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

std::mt19937 frng(4321);

std::vector<float> logits(int64_t n, float scale, bool specials) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = dist(frng);
    if (specials && n > 8) v[1] = -INFINITY, v[3] = NAN, v[n - 1] = -INFINITY, v[5] = v[2];  // v[5] ties v[2]
    return v;
}

std::vector<const Kernels*> all_but_ref() {
    std::vector<const Kernels*> out;
    for (const Kernels* k : available_variants())
        if (k != &kernels_ref()) out.push_back(k);
    return out;
}

bool near(double got, double want, double tol) { return std::fabs(got - want) <= tol * (1.0 + std::fabs(want)); }

const int64_t kSizes[] = {1, 3, 8, 15, 16, 17, 31, 33, 100, 513, 1031, 4099, 49152};

}  // namespace

TEST(fusion_primitives_match_reference) {
    for (const Kernels* k : all_but_ref())
        for (int64_t n : kSizes)
            for (bool specials : {false, true}) {
                const auto x = logits(n, 4.0f, specials), y = logits(n, 2.0f, specials);
                const float m = ref::max(x.data(), n);
                CHECK(k->max(x.data(), n) == m, "%s max n=%lld", k->name, static_cast<long long>(n));
                if (m > -INFINITY) {
                    for (float s : {1.0f, 0.3f}) {
                        double dx_r = 0, dx_k = 0;
                        const double want = ref::sum_exp(x.data(), n, m, s, &dx_r);
                        const double got = k->sum_exp(x.data(), n, m, s, &dx_k);
                        CHECK(near(got, want, 2e-6), "%s sum_exp n=%lld: %.9g vs %.9g", k->name, static_cast<long long>(n), got, want);
                        CHECK(std::fabs(dx_k - dx_r) <= 2e-6 * (want + std::fabs(dx_r)), "%s sum_exp dx n=%lld: %.9g vs %.9g",
                              k->name, static_cast<long long>(n), dx_k, dx_r);
                        CHECK(k->sum_exp(x.data(), n, m, s, nullptr) == got, "%s sum_exp without dx", k->name);
                    }
                }
                std::vector<float> want(n), got(n);
                ref::lincomb(want.data(), x.data(), 0.7f, y.data(), 0.45f, -1.5f, n);
                k->lincomb(got.data(), x.data(), 0.7f, y.data(), 0.45f, -1.5f, n);
                CHECK(std::memcmp(want.data(), got.data(), n * sizeof(float)) == 0, "%s lincomb not bit-identical n=%lld",
                      k->name, static_cast<long long>(n));
                ref::mix_exp(want.data(), x.data(), -3.0f, y.data(), -2.0f, n);
                k->mix_exp(got.data(), x.data(), -3.0f, y.data(), -2.0f, n);
                for (int64_t i = 0; i < n; ++i)
                    CHECK(near(got[i], want[i], 1e-6) || std::fabs(got[i] - want[i]) < 1e-37f, "%s mix_exp [%lld]: %g vs %g",
                          k->name, static_cast<long long>(i), got[i], want[i]);
                for (int kk : {1, 5, 20, 64, 128}) {
                    int32_t ri[kMaxTopK], gi[kMaxTopK];
                    float rv[kMaxTopK], gv[kMaxTopK];
                    const int rn = ref::topk(x.data(), n, kk, ri, rv), gn = k->topk(x.data(), n, kk, gi, gv);
                    CHECK(rn == gn && std::memcmp(ri, gi, rn * 4) == 0 && std::memcmp(rv, gv, rn * 4) == 0,
                          "%s topk k=%d n=%lld differs from ref", k->name, kk, static_cast<long long>(n));
                }
            }
}

TEST(topk_reference_is_sorted_and_complete) {
    for (int64_t n : kSizes) {
        auto x = logits(n, 1.0f, true);
        for (size_t i = 7; i < x.size(); i += 11) x[i] = 0.25f;  // many ties
        int32_t ids[kMaxTopK];
        float vals[kMaxTopK];
        const int got = ref::topk(x.data(), n, 64, ids, vals);
        int finite = 0;
        for (float v : x) finite += v > -INFINITY;
        CHECK(got == (finite < 64 ? finite : 64), "topk count n=%lld", static_cast<long long>(n));
        for (int i = 1; i < got; ++i)
            CHECK(vals[i - 1] > vals[i] || (vals[i - 1] == vals[i] && ids[i - 1] < ids[i]), "topk order at %d", i);
        for (int i = 0; i < got; ++i) CHECK(x[ids[i]] == vals[i], "topk value/id mismatch");
        if (got > 0 && got < finite) {  // nothing left out beats the last one
            int better = 0;
            for (int64_t j = 0; j < n; ++j)
                better += x[j] > vals[got - 1] || (x[j] == vals[got - 1] && j < ids[got - 1]);
            CHECK(better == got - 1, "topk missed a better value n=%lld", static_cast<long long>(n));
        }
    }
}

TEST(fuse_every_variant_matches_reference) {
    const int64_t V = 5003;
    auto edge = logits(V, 3.0f, true);
    const auto dense = logits(V, 2.0f, true);
    int32_t ids[20];
    float lps[20];
    for (int j = 0; j < 20; ++j) ids[j] = static_cast<int32_t>((j * 977 + 13) % V), lps[j] = -1.0f - 0.3f * j;
    ids[3] = 2;  // a cloud id that ties on the edge
    for (const Kernels* k : all_but_ref())
        for (fusion::Mode mode : {fusion::Mode::LogLinear, fusion::Mode::Linear})
            for (bool adaptive : {false, true})
                for (int ev = 0; ev < 3; ++ev) {
                    fusion::Config c;
                    c.n_vocab = V, c.mode = mode, c.adaptive = adaptive, c.w_edge = 0.6f, c.w_cloud = 0.4f;
                    c.top_k = 32;
                    fusion::Cloud cl;
                    if (ev == 1) cl.ids = ids, cl.logprobs = lps, cl.k = 20;
                    if (ev == 2) cl.dense = dense.data();
                    std::vector<float> s1, s2;
                    const fusion::Step want = fusion::fuse(kernels_ref(), c, edge.data(), cl, s1);
                    const fusion::Step got = fusion::fuse(*k, c, edge.data(), cl, s2);
                    CHECK(want.n == got.n && std::memcmp(want.ids, got.ids, want.n * 4) == 0,
                          "%s fuse mode=%d adaptive=%d evidence=%d: top-k ids differ", k->name, static_cast<int>(mode),
                          adaptive, ev);
                    for (int i = 0; i < want.n && i < got.n; ++i)
                        CHECK(std::fabs(want.logprobs[i] - got.logprobs[i]) <= 1e-5f, "%s fuse logprob %d: %g vs %g",
                              k->name, i, got.logprobs[i], want.logprobs[i]);
                    CHECK(std::fabs(want.w_edge - got.w_edge) <= 1e-5f && want.edge_top1 == got.edge_top1 &&
                              want.cloud_top1 == got.cloud_top1,
                          "%s fuse weights / top-1", k->name);
                }
}

TEST(fuse_normalization_and_errors) {
    const int64_t V = 1000;
    auto edge = logits(V, 2.0f, false);
    fusion::Config c;
    c.n_vocab = V, c.top_k = 64;
    std::vector<float> scratch;
    int32_t ids[3] = {5, 9, 700};
    float lps[3] = {-0.5f, -1.5f, -3.0f};
    fusion::Cloud cl;
    cl.ids = ids, cl.logprobs = lps, cl.k = 3;
    // with V <= top_k every token is returned: probabilities sum to 1
    fusion::Config all = c;
    all.n_vocab = 50;
    for (fusion::Mode mode : {fusion::Mode::LogLinear, fusion::Mode::Linear}) {
        all.mode = mode;
        int32_t small_ids[3] = {5, 9, 40};
        fusion::Cloud sc = cl;
        sc.ids = small_ids;
        const fusion::Step st = fusion::fuse(kernels_ref(), all, edge.data(), sc, scratch);
        double total = 0;
        for (int i = 0; i < st.n; ++i) total += std::exp(st.logprobs[i]);
        CHECK(st.n == 50 && std::fabs(total - 1.0) < 1e-5, "mode %d: %d entries summing to %g", static_cast<int>(mode), st.n, total);
    }
    bool threw = false;
    ids[1] = 5;  // repeated id
    try {
        fusion::fuse(kernels_ref(), c, edge.data(), cl, scratch);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "a repeated cloud id must be rejected");
    std::vector<float> dead(V, -INFINITY);
    dead[7] = NAN;
    threw = false;
    try {
        fusion::fuse(kernels_ref(), c, dead.data(), fusion::Cloud{}, scratch);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "all -inf / NaN edge logits must be rejected");
}

TEST(rng_and_sampling_reproducible) {
    fusion::Rng a(42), b(42);
    for (int i = 0; i < 100; ++i) CHECK(a.next() == b.next(), "same seed, same stream");
    fusion::Rng z(0);
    CHECK(z.next() == 0x99ec5f36cb75f2b4ull, "xoshiro256** from splitmix64(0): first output");
    fusion::Step st;
    st.n = 4;
    const int32_t ids[4] = {10, 11, 12, 13};
    const float lp[4] = {-0.2f, -2.0f, -2.5f, -4.0f};
    std::memcpy(st.ids, ids, sizeof ids);
    std::memcpy(st.logprobs, lp, sizeof lp);
    fusion::SampleParams greedy;
    fusion::Rng r(1);
    CHECK(fusion::sample(st, greedy, r, nullptr, 0).token == 10, "greedy");
    const int32_t recent[1] = {10};
    greedy.repeat_penalty = 20.0f;  // -0.2 * 20 = -4 < -2
    CHECK(fusion::sample(st, greedy, r, recent, 1).token == 11, "repetition penalty");
    fusion::SampleParams p;
    p.temperature = 1.0f, p.top_p = 0.5f;  // the first token alone holds > 50% of the kept mass
    for (int i = 0; i < 20; ++i) CHECK(fusion::sample(st, p, r, nullptr, 0).token == 10, "top-p");
    p.top_p = 1.0f, p.min_p = 0.5f;
    for (int i = 0; i < 20; ++i) CHECK(fusion::sample(st, p, r, nullptr, 0).token == 10, "min-p");
}

TEST(fusion_and_sampling_allocate_nothing_per_token) {
    {
        AllocationCount probe;  // the counter sees a std::vector
        std::vector<int> v(10);
        CHECK(probe.value() == 1 && v.size() == 10, "allocation counter: %ld", probe.value());
    }
    const int64_t V = 5003;
    const auto edge = logits(V, 3.0f, true), dense = logits(V, 2.0f, false);
    int32_t ids[20], map[40];
    float lps[20];
    for (int j = 0; j < 20; ++j) ids[j] = static_cast<int32_t>((j * 977 + 13) % V), lps[j] = -1.0f - 0.3f * j;
    for (int j = 0; j < 40; ++j) map[j] = j % 3 == 0 ? -1 : j / 2;  // unmapped ids and collisions
    int32_t cloud_ids[20];
    float cloud_lps[20];  // a distribution's top-k (mass 0.52)
    for (int j = 0; j < 20; ++j) cloud_ids[j] = 2 * j, cloud_lps[j] = -2.0f - 0.3f * j;
    const int32_t recent[3] = {ids[0], ids[1], 7};
    fusion::SampleParams sp;
    sp.temperature = 0.8f, sp.top_k = 10, sp.top_p = 0.9f, sp.min_p = 0.01f, sp.repeat_penalty = 1.3f;
    fusion::Rng rng(3);
    for (const Kernels* k : available_variants())
        for (fusion::Mode mode : {fusion::Mode::LogLinear, fusion::Mode::Linear})
            for (bool adaptive : {false, true})
                for (int ev = 0; ev < 3; ++ev) {
                    fusion::Config c;
                    c.n_vocab = V, c.mode = mode, c.adaptive = adaptive, c.top_k = 64, c.gate = adaptive ? 0.99f : 1.1f;
                    fusion::Cloud cl;
                    if (ev == 1) cl.ids = ids, cl.logprobs = lps, cl.k = 20;
                    if (ev == 2) cl.dense = dense.data();
                    std::vector<float> scratch;
                    fusion::fuse(*k, c, edge.data(), cl, scratch);  // warm-up: scratch grows once
                    AllocationCount count;
                    for (int token = 0; token < 5; ++token) {
                        const fusion::Step st = fusion::fuse(*k, c, edge.data(), cl, scratch);
                        fusion::sample(st, sp, rng, recent, 3);
                        int32_t out_ids[fusion::kMaxK];
                        float out_lps[fusion::kMaxK];
                        fusion::remap_topk(cloud_ids, cloud_lps, 20, map, 40, out_ids, out_lps);
                    }
                    CHECK(count.value() == 0, "%s mode=%d adaptive=%d evidence=%d: %ld allocations in 5 tokens",
                          k->name, static_cast<int>(mode), adaptive, ev, count.value());
                }
}

TEST(remap_topk_follows_the_vocab_map_rule) {
    const int32_t map[6] = {4, -1, 4, 2, 7, 9};
    int32_t oi[fusion::kMaxK];
    float ol[fusion::kMaxK];
    const int32_t ids[6] = {0, 1, 2, 3, 4, 5};
    const float lps[6] = {std::log(0.2f), std::log(0.3f), std::log(0.1f), std::log(0.25f), -INFINITY, -9999.0f};
    const int n = fusion::remap_topk(ids, lps, 6, map, 6, oi, ol);
    CHECK(n == 2 && oi[0] == 4 && oi[1] == 2 && std::fabs(ol[0] - std::log(0.3f)) < 1e-6f, "merge / drop: n=%d", n);
    const float rounding[1] = {5e-4f};  // (0, 1e-3]: rounding of a certain token
    CHECK(fusion::remap_topk(ids, rounding, 1, map, 6, oi, ol) == 1 && ol[0] == 0.0f, "clamped to 0: %g", ol[0]);
    const float bad[][2] = {{NAN, -1.0f}, {INFINITY, -1.0f}, {0.01f, -1.0f}, {-0.1f, -0.1f}};  // last: mass 1.8
    for (const auto& lp : bad) {
        bool threw = false;
        try {
            fusion::remap_topk(ids, lp, 2, map, 6, oi, ol);
        } catch (const std::invalid_argument&) {
            threw = true;
        }
        CHECK(threw, "remap_topk accepted log-probs (%g, %g)", lp[0], lp[1]);
    }
}

TEST(repeat_penalty_sparse_and_dense_agree) {
    double dense[6] = {1.5, -0.5, 0.0, 2.0, -3.0, 0.25};
    const int32_t ids[3] = {3, 1, 5};
    double sparse[3] = {dense[3], dense[1], dense[5]};
    const int32_t recent[5] = {1, 3, 1, 0, 3};  // repeats count once
    fusion::apply_repeat_penalty(dense, nullptr, 6, recent, 5, 2.0);
    fusion::apply_repeat_penalty(sparse, ids, 3, recent, 5, 2.0);
    CHECK(dense[0] == 0.75 && dense[1] == -1.0 && dense[3] == 1.0 && dense[5] == 0.25 && dense[2] == 0.0,
          "dense penalty");
    CHECK(sparse[0] == dense[3] && sparse[1] == dense[1] && sparse[2] == dense[5], "sparse penalty");
    const int32_t outside[1] = {6};
    bool threw = false;
    try {
        fusion::apply_repeat_penalty(dense, nullptr, 6, outside, 1, 2.0);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "a recent id outside a dense vector must be rejected");
}
