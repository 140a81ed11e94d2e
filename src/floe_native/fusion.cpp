// Fusion and sampling (see fusion.h). The passes over V floats go through the Kernels table; everything here is
// O(k) bookkeeping. Passes per token (V floats each), log-linear with a sparse cloud top-k:
//   static weights:  top-k (compare only) + one exp pass for the normalizer (none with normalize = false)
//   adaptive / gate: + one exp pass for the edge entropy (reused as the normalizer when w_e == 1)
// The edge's own normalizer cancels in log-linear fusion, and tokens outside the cloud's top-k share one tail
// value, so the fused top-k is among the cloud's ids and the edge's top (k + k_cloud): no pass over V needs the
// fused distribution itself. A dense cloud costs one lincomb pass (fused scores) before the top-k.
#include "floe/fusion.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace floe::fusion {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Messages are built only on failure (this runs per token).
void require(bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(what);
}
[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

struct Cand {
    int32_t id;
    double score;
};

bool better(const Cand& a, const Cand& b) { return a.score > b.score || (a.score == b.score && a.id < b.id); }

// Candidates of one step on the stack: a step has at most the cloud's k plus top_k of them, so no heap allocation
// per token.
struct Cands {
    static constexpr int kCapacity = 2 * kMaxK;
    Cand v[kCapacity];
    int n = 0;
    void clear() { n = 0; }
    void push_back(const Cand& c) { v[n++] = c; }
    int size() const { return n; }
    Cand* begin() { return v; }
    Cand* end() { return v + n; }
    const Cand* begin() const { return v; }
    const Cand* end() const { return v + n; }
    Cand& operator[](int i) { return v[i]; }
};

// One pass over a distribution's values: its top `want` (want >= 1; [0] is the max), and when asked a second pass
// for the normalizer and the entropy.
struct Dist {
    int n = 0;
    int32_t ids[kMaxTopK];
    float vals[kMaxTopK];
    int32_t top1 = -1;
    float max = -INFINITY;
    double lse = NAN, entropy = NAN;
};

void scan(const Kernels& k, const float* x, int64_t n, int want, bool with_entropy, const char* what, Dist* d) {
    d->n = k.topk(x, n, want, d->ids, d->vals);
    if (d->n < 1) fail(std::string(what) + " has no finite value (all -inf or NaN)");
    if (d->vals[0] == INFINITY) fail(std::string(what) + " contains +inf");
    d->top1 = d->ids[0], d->max = d->vals[0];
    if (with_entropy) {
        double sdx = 0.0;
        const double s = k.sum_exp(x, n, d->max, 1.0f, &sdx);
        d->lse = d->max + std::log(s);
        d->entropy = std::log(s) - sdx / s;
    }
}

// Sparse cloud evidence made into a distribution (fusion.h): per-entry log-probs and the tail value.
struct SparseCloud {
    int k = 0;
    int32_t ids[kMaxK];
    double lp[kMaxK];
    double tail = -kInf;  // log-prob of each token outside the top-k
    int64_t n_rest = 0;
    int32_t top1 = -1;
    double entropy = 0.0;
};

SparseCloud make_sparse(const Config& c, const Cloud& cl) {
    require(cl.k >= 0 && cl.k <= kMaxK, "cloud top-k must have 0..64 entries");
    SparseCloud s;
    double lmax = -kInf;
    for (int j = 0; j < cl.k; ++j) {
        const int32_t id = cl.ids[j];
        if (id < 0 || id >= c.n_vocab) fail("cloud id " + std::to_string(id) + " outside the vocabulary");
        for (int i = 0; i < j; ++i)
            if (cl.ids[i] == id) fail("cloud id " + std::to_string(id) + " repeated");
        const float v = cl.logprobs[j];
        require(v != INFINITY, "cloud log-probs contain +inf");
        if (v <= kAbsentLogprob && v > -INFINITY) continue;  // OpenAI's filler: not in the top-k, a tail token
        s.ids[s.k] = id;
        s.lp[s.k] = std::isnan(v) ? -kInf : v;
        if (s.lp[s.k] > lmax || (s.lp[s.k] == lmax && s.lp[s.k] > -kInf && id < s.top1)) lmax = s.lp[s.k], s.top1 = id;
        ++s.k;
    }
    double mass = 0.0;
    for (int j = 0; j < s.k; ++j) mass += std::exp(s.lp[j]);
    s.n_rest = c.n_vocab - s.k;
    const double rest = s.n_rest > 0 ? std::max(1.0 - mass, static_cast<double>(c.tail_floor)) : 0.0;
    const double log_z = std::log(mass + rest);
    for (int j = 0; j < s.k; ++j) {
        s.lp[j] -= log_z;
        if (s.lp[j] > -kInf) s.entropy -= std::exp(s.lp[j]) * s.lp[j];
    }
    if (s.n_rest > 0) {
        s.tail = std::log(rest / static_cast<double>(s.n_rest)) - log_z;
        s.entropy -= static_cast<double>(s.n_rest) * std::exp(s.tail) * s.tail;
    }
    return s;
}

// Adaptive weights. h = entropy / log V in [0, 1], confidence 1 - h; when the two top-1s differ the confidences are
// raised to disagree_power, which moves weight towards the more confident side. w ~ prior * confidence^power,
// normalized to sum 1, each kept in [min_weight, 1 - min_weight]. When both are (nearly) flat, r_e + r_c < 1e-6,
// their ratio is rounding noise: the priors are used.
void adaptive_weights(const Config& c, double h_e, double h_c, bool agree, float* w_e, float* w_c) {
    const double pw = agree ? 1.0 : c.disagree_power;
    const double r_e = c.w_edge * std::pow(std::clamp(1.0 - h_e, 0.0, 1.0), pw);
    const double r_c = c.w_cloud * std::pow(std::clamp(1.0 - h_c, 0.0, 1.0), pw);
    double we = r_e + r_c >= 1e-6 ? r_e / (r_e + r_c) : c.w_edge / (c.w_edge + c.w_cloud);
    we = std::clamp(we, static_cast<double>(c.min_weight), 1.0 - c.min_weight);
    *w_e = static_cast<float>(we);
    *w_c = static_cast<float>(1.0 - we);
}

// The best `top_k` candidates into step (scores are unnormalized log-probs), normalized by log_z, or over
// themselves when log_z is NaN. Candidates scoring -inf (zero probability) are dropped.
void emit(Cands& cand, int top_k, double log_z, Step* st) {
    std::sort(cand.begin(), cand.end(), better);
    int n = 0;
    while (n < cand.size() && n < top_k && cand[n].score > -kInf) ++n;
    require(n > 0, "the fused distribution is empty: edge and cloud give no token a non-zero probability");
    if (std::isnan(log_z)) {
        double s = 0.0;
        for (int i = 0; i < n; ++i) s += std::exp(cand[i].score - cand[0].score);
        log_z = cand[0].score + std::log(s);
    }
    st->n = n;
    for (int i = 0; i < n; ++i) {
        st->ids[i] = cand[i].id;
        st->logprobs[i] = static_cast<float>(cand[i].score - log_z);
    }
}

// Candidates of a sparse-cloud step: the cloud's ids, then enough other tokens that top_k of them are not cloud
// ids: in the edge's order (e: its top list), then (edge weight 0, or too few finite edge logits) lowest ids first,
// as all of those tie.
void sparse_candidates(const Config& c, const Dist* e, const SparseCloud& s, Cands& cand) {
    cand.clear();
    for (int j = 0; j < s.k; ++j) cand.push_back({s.ids[j], 0.0});
    const auto add = [&](int32_t id) {
        for (const Cand& x : cand)
            if (x.id == id) return;
        cand.push_back({id, 0.0});
    };
    const int64_t target = std::min<int64_t>(s.k + c.top_k, c.n_vocab);
    const auto short_of = [&] { return static_cast<int64_t>(cand.size()) < target; };
    for (int i = 0; e && i < e->n && short_of(); ++i) add(e->ids[i]);
    for (int32_t id = 0; id < c.n_vocab && short_of(); ++id) add(id);  // stops after at most 2 * 64 ids
}

double cloud_lp(const SparseCloud& s, int32_t id) {
    for (int j = 0; j < s.k; ++j)
        if (s.ids[j] == id) return s.lp[j];
    return s.tail;
}

// sum_{i not a cloud id} exp(w (x_i - m)), by segments between the sorted cloud ids. Not a total minus the cloud
// ids' terms: when the cloud's top-k holds most of the edge's mass (the two agree) that subtraction cancels.
double sum_exp_outside(const Kernels& k, const float* x, int64_t n, float m, float w, const SparseCloud& s) {
    int32_t ids[kMaxK];
    std::copy(s.ids, s.ids + s.k, ids);
    std::sort(ids, ids + s.k);
    double sum = 0.0;
    int64_t start = 0;
    for (int j = 0; j < s.k; ++j) {
        sum += k.sum_exp(x + start, ids[j] - start, m, w, nullptr);
        start = ids[j] + 1;
    }
    return sum + k.sum_exp(x + start, n - start, m, w, nullptr);
}

// The largest edge logit outside the cloud's ids (e's top list holds k_cloud + top_k entries, so it is there if any
// such logit is finite), else e->max. The outside sum is taken relative to it: relative to e->max it underflows to 0
// when the edge's best token is a cloud id far above the rest.
float max_outside(const Dist& e, const SparseCloud& s) {
    for (int i = 0; i < e.n; ++i)
        if (std::find(s.ids, s.ids + s.k, e.ids[i]) == s.ids + s.k) return e.vals[i];
    return e.max;
}

// log Z of a log-linear step with a sparse cloud: the cloud ids' terms (cand[0..sc.k), scored; sparse_candidates
// puts them first) plus exp(w_c tail) * sum_{others} exp(w_e x). e null: edge weight 0.
double sparse_log_z(const Kernels& k, const float* edge, int64_t V, const Dist* e, const SparseCloud& sc,
                    Cands& cand, float we, float wc) {
    const float m_out = e ? max_outside(*e, sc) : 0.0f;  // rest = sum_{i not a cloud id} exp(w_e (x_i - m_out))
    const double rest = e ? sum_exp_outside(k, edge, V, m_out, we, sc) : static_cast<double>(sc.n_rest);
    const double tail_base = sc.n_rest > 0 ? wc * sc.tail + (e ? we * static_cast<double>(m_out) : 0.0) : -kInf;
    double m = tail_base;
    for (int j = 0; j < sc.k; ++j) m = std::max(m, cand[j].score);
    double z = sc.n_rest > 0 ? rest * std::exp(tail_base - m) : 0.0;
    for (int j = 0; j < sc.k; ++j) z += std::exp(cand[j].score - m);
    return m + std::log(z);
}

double edge_term(float x, double w) { return std::isnan(x) || x == -INFINITY ? -kInf : w * x; }

}  // namespace

void validate(const Config& c) {
    require(c.n_vocab >= 1 && c.n_vocab <= (int64_t{1} << 31) - 1, "n_vocab must be in 1..2^31-1");
    require(c.top_k >= 1 && c.top_k <= kMaxK, "top_k must be in 1..64");
    require(std::isfinite(c.w_edge) && std::isfinite(c.w_cloud) && c.w_edge >= 0 && c.w_cloud >= 0 &&
                c.w_edge + c.w_cloud > 0,
            "weights must be finite, >= 0 and not both 0");
    require(c.tail_floor > 0 && c.tail_floor < 1, "tail_floor must be in (0, 1)");
    require(c.gate > 0, "gate must be > 0 (> 1 disables it)");
    require(c.disagree_power >= 1 && std::isfinite(c.disagree_power), "disagree_power must be >= 1");
    require(c.min_weight >= 0 && c.min_weight < 0.5f, "min_weight must be in [0, 0.5)");
}

EdgeStats edge_stats(const Kernels& k, const Config& c, const float* edge) {
    Dist d;
    scan(k, edge, c.n_vocab, 1, true, "edge logits", &d);
    const float pmax = static_cast<float>(std::exp(d.max - d.lse));
    return {d.top1, pmax, d.entropy, pmax < c.gate, d.max, d.lse};
}

// Weights: static, or the adaptive rule; then the gate. Linear fusion normalizes them to sum 1.
Step fuse(const Kernels& k, const Config& c, const float* edge, const Cloud& cloud, std::vector<float>& scratch,
          const EdgeStats* known) {
    const int64_t V = c.n_vocab;
    const bool sparse = cloud.ids != nullptr || cloud.logprobs != nullptr;
    require(!(sparse && cloud.dense), "cloud evidence is either dense or sparse, not both");
    require(!sparse || (cloud.ids && cloud.logprobs) || cloud.k == 0,
            "sparse cloud evidence needs ids and log-probs");
    const bool has_cloud = cloud.dense != nullptr || (sparse && cloud.k > 0);
    const bool gate_on = c.gate <= 1.0f;
    const bool linear = c.mode == Mode::Linear;
    Step st;

    // Edge: max and top-1 always; normalizer and entropy when the weights or the fusion need them.
    const bool edge_entropy = has_cloud && (c.adaptive || gate_on);
    const int k_sparse = sparse ? std::clamp(cloud.k, 0, kMaxK) : 0;
    Dist e;
    const int want = static_cast<int>(std::min<int64_t>(c.top_k + k_sparse, V));
    scan(k, edge, V, want, (edge_entropy || linear) && !known, "edge logits", &e);
    if (known) {
        require(known->top1 == e.top1 && known->max_logit == e.max, "edge statistics of other logits");
        e.lse = known->lse;  // also the edge-only normalizer, below
        if (edge_entropy || linear) e.entropy = known->entropy;
    }
    st.edge_top1 = e.top1;
    if (!std::isnan(e.entropy)) st.edge_entropy = static_cast<float>(e.entropy);

    SparseCloud sc;
    Dist cd;
    if (sparse && cloud.k > 0) {
        sc = make_sparse(c, cloud);
        st.cloud_top1 = sc.top1;
        st.cloud_entropy = static_cast<float>(sc.entropy);
    } else if (cloud.dense) {
        scan(k, cloud.dense, V, 1, c.adaptive || linear, "cloud log-probs", &cd);
        st.cloud_top1 = cd.top1;
        if (!std::isnan(cd.entropy)) st.cloud_entropy = static_cast<float>(cd.entropy);
    }

    float we = 1.0f, wc = 0.0f;
    if (has_cloud) {
        we = c.w_edge, wc = c.w_cloud;
        if (gate_on && std::exp(e.max - e.lse) >= c.gate) {
            st.gated = true, we = 1.0f, wc = 0.0f;
        } else if (c.adaptive) {
            const double log_v = V > 1 ? std::log(static_cast<double>(V)) : 1.0;
            const double h_c = sparse ? sc.entropy : cd.entropy;  // double: the rule amplifies h's error 1 / (1 - h)
            adaptive_weights(c, e.entropy / log_v, h_c / log_v, st.edge_top1 == st.cloud_top1, &we, &wc);
        }
    }
    if (linear && wc > 0.0f) {
        const float s = we + wc;
        we /= s, wc /= s;
    }
    st.w_edge = we, st.w_cloud = wc;
    const bool exact = c.normalize || linear;
    st.normalized = exact;

    Cands cand;
    if (wc == 0.0f) {  // edge only: the edge's top-k, p_e^w_e renormalized (log-linear) or p_e itself (linear)
        const double w = linear ? 1.0 : we;
        sparse_candidates(c, &e, SparseCloud{}, cand);
        for (auto& cd_ : cand) cd_.score = edge_term(edge[cd_.id], w);
        double log_z = NAN;
        if (exact && w == 1.0 && !std::isnan(e.lse))
            log_z = e.lse;
        else if (exact)
            log_z = w * e.max + std::log(k.sum_exp(edge, V, e.max, static_cast<float>(w), nullptr));
        emit(cand, c.top_k, log_z, &st);
        return st;
    }

    if (sparse) {
        const bool use_edge = we > 0.0f;
        sparse_candidates(c, use_edge ? &e : nullptr, sc, cand);
        if (!linear) {
            // score = w_e x + w_c log p_c; Z = sum over the cloud ids + exp(w_c tail) * sum_{others} exp(w_e x)
            for (auto& cd_ : cand)
                cd_.score = (use_edge ? edge_term(edge[cd_.id], we) : 0.0) + wc * cloud_lp(sc, cd_.id);
            emit(cand, c.top_k, exact ? sparse_log_z(k, edge, V, use_edge ? &e : nullptr, sc, cand, we, wc) : NAN, &st);
        } else {
            // p_f = w_e p_e + w_c p_c, exactly normalized: log Z = 0
            for (auto& cd_ : cand) {
                const double pe = use_edge ? std::exp(edge_term(edge[cd_.id], 1.0) - e.lse) : 0.0;
                cd_.score = std::log(we * pe + wc * std::exp(cloud_lp(sc, cd_.id)));
            }
            emit(cand, c.top_k, 0.0, &st);
        }
        return st;
    }

    // Dense cloud: the fused score of every token, then its top-k.
    scratch.resize(static_cast<size_t>(V));
    float* u = scratch.data();
    if (!linear) {
        if (we > 0.0f)
            k.lincomb(u, edge, we, cloud.dense, wc, 0.0f, V);
        else
            k.lincomb(u, cloud.dense, wc, nullptr, 0.0f, 0.0f, V);
    } else {  // probabilities: topk on them orders as on log-probs
        const float oc = static_cast<float>(std::log(wc) - cd.lse);
        if (we > 0.0f)
            k.mix_exp(u, edge, static_cast<float>(std::log(we) - e.lse), cloud.dense, oc, V);
        else
            k.mix_exp(u, cloud.dense, oc, nullptr, 0.0f, V);
    }
    int32_t ids[kMaxK];
    float vals[kMaxK];
    const int n = k.topk(u, V, c.top_k, ids, vals);
    for (int i = 0; i < n; ++i)
        cand.push_back({ids[i], linear ? std::log(static_cast<double>(vals[i])) : static_cast<double>(vals[i])});
    double log_z = linear ? 0.0 : NAN;
    if (!linear && exact && n > 0) log_z = vals[0] + std::log(k.sum_exp(u, V, vals[0], 1.0f, nullptr));
    emit(cand, c.top_k, log_z, &st);
    return st;
}

double logsumexp(const Kernels& k, const float* x, int64_t n) {
    require(n >= 1, "logsumexp of an empty array");
    const float m = k.max(x, n);
    require(m > -INFINITY, "no finite value (all -inf or NaN)");
    require(m != INFINITY, "+inf in the input");
    return m + std::log(k.sum_exp(x, n, m, 1.0f, nullptr));
}

void log_softmax(const Kernels& k, const float* x, float* out, int64_t n) {
    const double lse = logsumexp(k, x, n);
    k.lincomb(out, x, 1.0f, nullptr, 0.0f, static_cast<float>(-lse), n);
}

// Same steps, order and arithmetic as VocabMap.remap (vocab_map.py), so both give the same float32 results.
int remap_topk(const int32_t* ids, const float* logprobs, int k, const int32_t* map, int64_t map_len,
               int32_t* out_ids, float* out_logprobs) {
    require(k >= 0 && k <= kMaxK, "top-k must have 0..64 entries");
    for (int j = 0; j < k; ++j)
        if (ids[j] < 0 || ids[j] >= map_len) fail("cloud id " + std::to_string(ids[j]) + " outside the map");
    Cand kept[kMaxK];  // mapped, present entries in input order
    int n_kept = 0;
    double mass = 0.0;  // of every present entry, mapped or not
    for (int j = 0; j < k; ++j) {
        double v = logprobs[j];
        if (!(v <= kPositiveSlack)) fail(std::to_string(v) + " is not a log-probability");
        if (!(v < 0.0)) v = 0.0;  // (0, kPositiveSlack]: rounding
        if (!(v > kAbsentLogprob)) continue;
        mass += std::exp(v);
        if (map[ids[j]] >= 0) kept[n_kept++] = {map[ids[j]], v};
    }
    if (mass > 1.0 + kMassSlack)
        fail("the log-probs add up to a probability of " + std::to_string(mass) + " > 1: not a distribution");
    Cand merged[kMaxK];
    int n = 0;
    for (int j = 0; j < n_kept; ++j) {  // each edge id once, at its first entry: log(sum exp(x - top)) + top
        bool seen = false, single = true;
        double top = kept[j].score;
        for (int i = 0; i < n_kept && !seen; ++i)
            if (kept[i].id == kept[j].id && i != j) {
                seen = i < j, single = false;
                top = std::max(top, kept[i].score);
            }
        if (seen) continue;
        double acc = 0.0;
        if (!single)
            for (int i = j; i < n_kept; ++i)
                if (kept[i].id == kept[j].id) acc += std::exp(kept[i].score - top);
        merged[n++] = {kept[j].id, single ? kept[j].score : top + std::log(acc)};
    }
    std::sort(merged, merged + n, better);
    for (int i = 0; i < n; ++i) out_ids[i] = merged[i].id, out_logprobs[i] = static_cast<float>(merged[i].score);
    return n;
}

// ---- sampling ------------------------------------------------------------------------------------------------

Rng::Rng(uint64_t seed) {
    for (auto& s : state) {  // splitmix64
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        s = z ^ (z >> 31);
    }
}

uint64_t Rng::next() {  // xoshiro256**
    const auto rotl = [](uint64_t x, int r) { return (x << r) | (x >> (64 - r)); };
    const uint64_t out = rotl(state[1] * 5, 7) * 9, t = state[1] << 17;
    state[2] ^= state[0], state[3] ^= state[1], state[1] ^= state[2], state[0] ^= state[3];
    state[2] ^= t, state[3] = rotl(state[3], 45);
    return out;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

void validate(const SampleParams& p) {
    require(p.temperature >= 0 && std::isfinite(p.temperature), "temperature must be >= 0");
    require(p.top_k >= 0, "top_k must be >= 0 (0: off)");
    require(p.top_p > 0 && p.top_p <= 1, "top_p must be in (0, 1]");
    require(p.min_p >= 0 && p.min_p < 1, "min_p must be in [0, 1)");
    require(p.repeat_penalty > 0 && std::isfinite(p.repeat_penalty), "repeat_penalty must be > 0");
}

void apply_repeat_penalty(double* scores, const int32_t* ids, int64_t n, const int32_t* recent, int n_recent,
                          double penalty) {
    if (penalty == 1.0 || n_recent <= 0) return;
    const int32_t* recent_end = recent + n_recent;
    if (ids != nullptr) {
        for (int64_t i = 0; i < n; ++i)
            if (std::find(recent, recent_end, ids[i]) != recent_end) scores[i] = penalized(scores[i], penalty);
        return;
    }
    for (const int32_t* t = recent; t != recent_end; ++t) {
        if (*t < 0 || *t >= n) fail("recent token " + std::to_string(*t) + " outside the vocabulary");
        if (std::find(recent, t, *t) == t) scores[*t] = penalized(scores[*t], penalty);  // first occurrence only
    }
}

Sample sample(const Step& st, const SampleParams& p, Rng& rng, const int32_t* recent, int n_recent) {
    require(st.n >= 1 && st.n <= kMaxK, "the fused step has no candidates");
    double scores[kMaxK];
    std::copy(st.logprobs, st.logprobs + st.n, scores);
    apply_repeat_penalty(scores, st.ids, st.n, recent, n_recent, p.repeat_penalty);
    Cand c[kMaxK];
    for (int i = 0; i < st.n; ++i) c[i] = {st.ids[i], scores[i]};
    std::sort(c, c + st.n, better);
    const auto fused_lp = [&](int32_t id) {
        for (int i = 0; i < st.n; ++i)
            if (st.ids[i] == id) return st.logprobs[i];
        return -INFINITY;
    };
    if (p.temperature == 0.0f) return {c[0].id, fused_lp(c[0].id)};

    int n = p.top_k > 0 ? std::min(p.top_k, st.n) : st.n;
    double q[kMaxK], total = 0.0;
    for (int i = 0; i < n; ++i) total += q[i] = std::exp(c[i].score - c[0].score);
    if (p.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
        double cum = 0.0;
        int keep = 0;
        while (keep < n && cum < p.top_p * total) cum += q[keep++];
        n = std::max(keep, 1);
    }
    if (p.min_p > 0.0f) {  // q is relative to the best already
        int keep = 1;
        while (keep < n && q[keep] >= p.min_p) ++keep;
        n = keep;
    }
    total = 0.0;
    for (int i = 0; i < n; ++i) total += q[i] = std::exp((c[i].score - c[0].score) / p.temperature);
    const double r = rng.uniform() * total;
    double cum = 0.0;
    int pick = n - 1;
    for (int i = 0; i < n; ++i)
        if ((cum += q[i]) > r) {
            pick = i;
            break;
        }
    return {c[pick].id, fused_lp(c[pick].id)};
}

}  // namespace floe::fusion
