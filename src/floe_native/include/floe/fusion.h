// Token-level fusion of the edge model's logits with the cloud's evidence, and sampling on the result.
// Variant-independent: the passes over the vocabulary are the Kernels table's fusion primitives (kernels.h).
//
// Distributions (V = n_vocab):
//   edge   p_e = softmax(x), x the edge logits. NaN logits count as -inf; +inf, or no finite logit, is an error.
//   cloud  dense: p_c = softmax(c), c log-probs (renormalized: only their differences matter).
//          sparse top-k (ids unique, k <= 64; finite lp <= -9999, OpenAI's filler, are absent:
//          tail tokens; -inf is probability 0):
//          M = sum_j exp(lp_j); the rest of the vocabulary (V - k tokens)
//          shares the remaining mass R = max(1 - M, tail_floor), each tail token getting log(R / (V - k)); the
//          whole is renormalized by M + R (only matters when the top-k claims more than 1 - tail_floor).
// Fusion, weights (w_e, w_c):
//   log-linear  log p_f = w_e log p_e + w_c log p_c - log Z   (the edge and cloud normalizers cancel into Z)
//   linear      p_f = (w_e p_e + w_c p_c) / (w_e + w_c)
// Weights are static, or adaptive per token (adaptive_weights() in fusion.cpp has the rule): from the normalized
// entropies of both sides, sharper when their top-1s disagree, and gated: when the edge's top probability reaches
// `gate` the cloud is not used for the token (weights (1, 0)); edge_stats() gives the same decision before any upload.
#pragma once
#include <cstdint>
#include <vector>

#include "floe/kernels.h"

namespace floe::fusion {

constexpr int kMaxK = 64;  // cloud top-k and fused top-k limit
constexpr float kAbsentLogprob = -9999.0f;  // OpenAI fills missing top-k entries with it: finite and at or below,
                                             // absent

enum class Mode { LogLinear, Linear };

struct Config {
    int64_t n_vocab = 0;
    Mode mode = Mode::LogLinear;
    float w_edge = 0.5f, w_cloud = 0.5f;  // static weights, or the adaptive rule's priors
    bool adaptive = false;
    float gate = 1.1f;              // edge top probability at or above which the cloud is skipped (> 1: never)
    float disagree_power = 2.0f;    // adaptive: confidence exponent when the edge and cloud top-1 differ
    float min_weight = 0.05f;       // adaptive: floor of each weight while both are used
    float tail_floor = 1e-4f;       // sparse cloud: least mass left to the tokens outside its top-k
    int top_k = 20;                 // size of the fused top-k returned (1..64); sampling draws from it
    bool normalize = true;          // false (log-linear, static, no gate): skip the exp pass over V; log-probs are
                                    // then normalized over the returned top-k only
};
void validate(const Config& c);  // std::invalid_argument on a bad setting

// Cloud evidence: dense (n_vocab log-probs), sparse (k ids + log-probs), or neither (edge only).
struct Cloud {
    const float* dense = nullptr;
    const int32_t* ids = nullptr;
    const float* logprobs = nullptr;
    int k = 0;
};

struct EdgeStats {
    int32_t top1;
    float max_prob;
    double entropy;     // nats
    bool needs_cloud;   // max_prob < gate
    float max_logit;
    double lse;         // log-sum-exp of the logits
};

struct Step {
    int n = 0;  // fused top-k entries (fewer than top_k when fewer tokens have non-zero probability)
    int32_t ids[kMaxK];
    float logprobs[kMaxK];  // fused log-probs, descending (ties: lower id first)
    float w_edge = 1.0f, w_cloud = 0.0f;  // weights used for this token
    bool gated = false;                   // the edge was confident enough: cloud evidence ignored
    bool normalized = true;               // false: logprobs normalized over the top-k only (Config::normalize)
    int32_t edge_top1 = -1, cloud_top1 = -1;  // -1: no cloud evidence (or all of it -inf)
    float edge_entropy = -1.0f, cloud_entropy = -1.0f;  // nats, -1 when the step did not need them
};

// One fusion step. scratch (grown to n_vocab floats when a dense pass needs it) is the caller's, reused per token:
// once it has grown, a step allocates nothing (candidates live in fixed arrays). Throws std::invalid_argument on
// bad input (ids out of range or repeated, +inf, no finite edge logit).
// known: edge_stats() of these very logits, computed once per position: fuse then makes no exp pass over the edge
// logits of its own (same result; throws when its top-1 or max differ from the logits').
Step fuse(const Kernels& k, const Config& c, const float* edge, const Cloud& cloud, std::vector<float>& scratch,
          const EdgeStats* known = nullptr);
EdgeStats edge_stats(const Kernels& k, const Config& c, const float* edge);

// log-softmax of x into out (may alias), and log-sum-exp; NaN counts as -inf, all -inf / +inf is an error.
double logsumexp(const Kernels& k, const float* x, int64_t n);
void log_softmax(const Kernels& k, const float* x, float* out, int64_t n);

// Cross-vocabulary top-k, the rule of floe_edge.vocab_map.VocabMap.remap: cloud ids mapped through
// map[0..map_len) (-1: no edge token). A log-prob that is NaN or above kPositiveSlack is an error, one in
// (0, kPositiveSlack] is rounding and counts as 0; -inf and finite values <= kAbsentLogprob are absent. The present
// entries (mapped or not) must not claim a probability above 1 + kMassSlack. Entries mapping to the same edge id are
// merged by log-sum-exp, unmapped ones dropped. Output sorted as Step; returns the count (<= k).
// Throws std::invalid_argument on ids outside [0, map_len) and on the errors above.
constexpr double kPositiveSlack = 1e-3;
constexpr double kMassSlack = 1e-2;
int remap_topk(const int32_t* ids, const float* logprobs, int k, const int32_t* map, int64_t map_len,
               int32_t* out_ids, float* out_logprobs);

// ---- sampling ------------------------------------------------------------------------------------------------
// xoshiro256** seeded through splitmix64 (Blackman & Vigna): the same stream on every platform for a seed.
class Rng {
public:
    explicit Rng(uint64_t seed = 0);
    uint64_t next();
    double uniform();  // [0, 1), 53 bits
    uint64_t state[4];
};

struct SampleParams {
    float temperature = 0.0f;  // 0: greedy
    int top_k = 0;             // 0: all of the fused top-k
    float top_p = 1.0f;
    float min_p = 0.0f;
    float repeat_penalty = 1.0f;
};
void validate(const SampleParams& p);

struct Sample {
    int32_t token;
    float logprob;  // the token's fused log-prob (before penalty and temperature)
};

// llama.cpp's repetition penalty on the score (logit or log-prob) of a recently seen token: a positive score is
// divided by the penalty, any other multiplied by it, so a penalty > 1 always makes the token less likely.
inline double penalized(double score, double penalty) { return score > 0 ? score / penalty : score * penalty; }

// Applies `penalized` once to every distinct token of recent[0..n_recent). Sparse form: scores[i] is the score of
// token ids[i]; dense form (ids null): scores[t] is token t's, and a recent id outside [0, n) is an
// error (std::invalid_argument). O(n * n_recent) sparse, O(n_recent^2) dense: recent is a short window.
// Both samplers use it: fusion::sample on a fused top-k, floe_edge.sampling.Sampler on a logit vector.
void apply_repeat_penalty(double* scores, const int32_t* ids, int64_t n, const int32_t* recent, int n_recent,
                          double penalty);

// Draws from the fused top-k of `step`, in llama.cpp's order: repetition penalty (apply_repeat_penalty), top-k,
// top-p, min-p (on probabilities renormalized over what is kept), temperature. Greedy takes the best after the
// penalty (ties: lower id); it draws no random number. Allocates nothing.
Sample sample(const Step& step, const SampleParams& p, Rng& rng, const int32_t* recent, int n_recent);

}  // namespace floe::fusion
