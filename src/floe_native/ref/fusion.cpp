// Reference fusion primitives (see kernels.h): the specification of the SIMD versions and their scalar tails.
// Compiled with -ffp-contract=off (CMakeLists.txt): lincomb's two products must stay separately rounded, as in
// every SIMD variant, so that fused scores (and hence top-k order) are bit-identical across variants.
#include <cmath>
#include <algorithm>

#include "floe/kernels.h"

namespace floe::ref {

float max(const float* x, int64_t n) { return max_f32(n, x); }  // x > m is false for NaN: NaN skipped

double sum_exp(const float* x, int64_t n, float m, float s, double* sum_dx) {
    double sum = 0.0, sdx = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float d = s * (x[i] - m);
        if (!(d > kExpCut)) continue;  // NaN and -inf too
        const float e = std::exp(d);
        sum += e;
        sdx += static_cast<double>(e) * d;
    }
    if (sum_dx) *sum_dx = sdx;
    return sum;
}

void lincomb(float* out, const float* x, float a, const float* y, float b, float c, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        float v = a * x[i];
        if (y) v = v + b * y[i];
        v = v + c;
        out[i] = std::isnan(v) ? -INFINITY : v;
    }
}

void mix_exp(float* out, const float* x, float ox, const float* y, float oy, int64_t n) {
    const auto term = [](float t) { return t > kExpCut ? std::exp(t) : 0.0f; };  // NaN: 0
    for (int64_t i = 0; i < n; ++i) out[i] = term(x[i] + ox) + (y ? term(y[i] + oy) : 0.0f);
}

namespace {

bool better(const TopKBuffer::Entry& a, const TopKBuffer::Entry& b) {
    return a.val > b.val || (a.val == b.val && a.id < b.id);
}

}  // namespace

// Ids arrive in increasing order, so a value equal to the k-th best never displaces it (ties go to the lower id):
// "x > thr" is the whole admission test, the same one the SIMD loops use. A full buffer is cut back with
// nth_element (linear time), so a hit costs O(1) amortized.
void topk_push(TopKBuffer* h, const float* x, int64_t n, int64_t first_id) {
    for (int64_t i = 0; i < n; ++i) {
        if (!(x[i] > h->thr)) continue;
        h->e[h->size++] = {x[i], static_cast<int32_t>(first_id + i)};
        if (h->size == 2 * kMaxTopK) {
            std::nth_element(h->e, h->e + h->k - 1, h->e + h->size, better);
            h->size = h->k;
            h->thr = h->e[h->k - 1].val;
        }
    }
}

int topk_finish(TopKBuffer* h, int32_t* ids, float* vals) {
    const int n = h->size < h->k ? h->size : h->k;
    std::partial_sort(h->e, h->e + n, h->e + h->size, better);
    for (int i = 0; i < n; ++i) vals[i] = h->e[i].val, ids[i] = h->e[i].id;
    return n;
}

int topk(const float* x, int64_t n, int k, int32_t* ids, float* vals) {
    TopKBuffer h;
    h.k = k;
    topk_push(&h, x, n, 0);
    return topk_finish(&h, ids, vals);
}

}  // namespace floe::ref
