// Python bindings of fusion.h: Fuser (config + scratch), FusionSampler (params + RNG), log_softmax, logsumexp, topk,
// remap_topk, apply_repeat_penalty.
// Arrays are read in place: float32 / int32, C-contiguous, 1-D, the right length; anything else raises TypeError
// (not an ndarray, wrong dtype) or ValueError (layout, size) instead of being copied. The GIL is released during
// every pass over the vocabulary.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "bind_common.h"
#include "floe/fusion.h"
#include "floe/kernels.h"

namespace py = pybind11;
using namespace floe;
using bind::F32Array;
using bind::F64Array;
using bind::I32Array;
using bind::OptF32Array;
using bind::OptI32Array;
using bind::pick_variant;
using bind::to_array;

namespace {

// The checked array behind o (see the file comment); size (if given) receives its length.
template <typename T>
py::array checked_array(const py::object& o, const char* what, const char* dtype, int64_t want, int64_t* size) {
    if (!py::isinstance<py::array>(o))
        throw py::type_error(std::string(what) + " must be a numpy " + dtype + " array, got " +
                             std::string(py::str(py::type::of(o).attr("__name__"))));
    const auto a = py::reinterpret_borrow<py::array>(o);
    if (!py::isinstance<py::array_t<T>>(a))
        throw py::type_error(std::string(what) + " must be a " + dtype + " array, got " +
                             std::string(py::str(a.dtype())));
    if (a.ndim() != 1) throw std::invalid_argument(std::string(what) + " must be 1-D");
    if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(what) + " must be C-contiguous");
    if (want >= 0 && a.size() != want)
        throw std::invalid_argument(std::string(what) + " has " + std::to_string(a.size()) + " elements, expected " +
                                    std::to_string(want));
    if (size) *size = a.size();
    return a;
}

template <typename T>
const T* view(const py::object& o, const char* what, const char* dtype, int64_t want = -1, int64_t* size = nullptr) {
    return static_cast<const T*>(checked_array<T>(o, what, dtype, want, size).data());
}

template <typename T>
T* mutable_view(const py::object& o, const char* what, const char* dtype, int64_t* size) {
    py::array a = checked_array<T>(o, what, dtype, -1, size);
    if (!a.writeable()) throw std::invalid_argument(std::string(what) + " must be writeable");
    return static_cast<T*>(a.mutable_data());
}

class PyFuser {
public:
    PyFuser(const fusion::Config& c, const std::optional<std::string>& variant)
        : cfg_(c), k_(&pick_variant(variant)) {
        fusion::validate(cfg_);
    }

    // make_tuple's result is typed (pybind11 >= 3): the generated stub names every element.
    // known: edge_stats() of these logits, as its tuple (top1, max_prob, entropy, needs_cloud, max_logit, lse)
    using Known = std::tuple<int32_t, float, double, bool, float, double>;

    // weights: (w_edge, w_cloud) for this call only, instead of the configured static weights and the adaptive
    // rule (validated as they are); the configured gate still applies: a confident edge is gated, weights (1, 0).
    auto fuse(const F32Array& edge, const OptI32Array& ids, const OptF32Array& lps, const OptF32Array& dense,
              const std::optional<Known>& known, const std::optional<std::tuple<float, float>>& weights) {
        const float* e = view<float>(edge, "edge_logits", "float32", cfg_.n_vocab);
        fusion::Config cfg = cfg_;  // a few scalars: the override never touches the Fuser's own settings
        if (weights) {
            std::tie(cfg.w_edge, cfg.w_cloud) = *weights;
            cfg.adaptive = false;
            fusion::validate(cfg);
        }
        fusion::Cloud cl;
        if (!ids.is_none() || !lps.is_none()) {
            if (ids.is_none() || lps.is_none())
                throw std::invalid_argument("cloud_ids and cloud_logprobs go together");
            if (!dense.is_none()) throw std::invalid_argument("give cloud evidence as dense or as top-k, not both");
            int64_t k = 0;
            cl.ids = view<int32_t>(ids, "cloud_ids", "int32", -1, &k);
            if (k > fusion::kMaxK) throw std::invalid_argument("cloud top-k has more than 64 entries");
            cl.logprobs = view<float>(lps, "cloud_logprobs", "float32", k);
            cl.k = static_cast<int>(k);
        } else if (!dense.is_none()) {
            cl.dense = view<float>(dense, "cloud_dense", "float32", cfg_.n_vocab);
        }
        fusion::EdgeStats ks;
        if (known) std::tie(ks.top1, ks.max_prob, ks.entropy, ks.needs_cloud, ks.max_logit, ks.lse) = *known;
        fusion::Step st;
        {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);  // scratch is per Fuser
            st = fusion::fuse(*k_, cfg, e, cl, scratch_, known ? &ks : nullptr);
        }
        return py::make_tuple(to_array(st.ids, st.n), to_array(st.logprobs, st.n), st.w_edge, st.w_cloud, st.gated,
                              st.normalized, st.edge_top1, st.cloud_top1, st.edge_entropy, st.cloud_entropy);
    }

    auto edge_stats(const F32Array& edge) {
        const float* e = view<float>(edge, "edge_logits", "float32", cfg_.n_vocab);
        fusion::EdgeStats s;
        {
            py::gil_scoped_release release;
            s = fusion::edge_stats(*k_, cfg_, e);
        }
        return py::make_tuple(s.top1, s.max_prob, s.entropy, s.needs_cloud, s.max_logit, s.lse);
    }

    const fusion::Config& config() const { return cfg_; }
    const char* variant() const { return k_->name; }

private:
    fusion::Config cfg_;
    const Kernels* k_;
    std::vector<float> scratch_;
    std::mutex mutex_;
};

class PySampler {
public:
    PySampler(const fusion::SampleParams& p, uint64_t seed) : p_(p), rng_(seed) { fusion::validate(p_); }

    auto sample(const I32Array& ids, const F32Array& lps, const OptI32Array& recent) {
        int64_t n = 0, n_recent = 0;
        const int32_t* ip = view<int32_t>(ids, "ids", "int32", -1, &n);
        const float* lp = view<float>(lps, "logprobs", "float32", n);
        if (n < 1 || n > fusion::kMaxK) throw std::invalid_argument("a fused step has 1..64 candidates");
        const int32_t* rp = recent.is_none() ? nullptr : view<int32_t>(recent, "recent", "int32", -1, &n_recent);
        fusion::Step st;
        st.n = static_cast<int>(n);
        std::copy(ip, ip + n, st.ids);
        std::copy(lp, lp + n, st.logprobs);
        const fusion::Sample s = fusion::sample(st, p_, rng_, rp, static_cast<int>(n_recent));
        return py::make_tuple(s.token, s.logprob);
    }

    std::vector<uint64_t> state() const { return {rng_.state, rng_.state + 4}; }

private:
    fusion::SampleParams p_;
    fusion::Rng rng_;
};

}  // namespace

void bind_fusion(py::module_& m) {
    py::class_<PyFuser>(m, "Fuser", "Native fusion step (see floe_edge.fusion.Fuser).")
        .def(py::init([](int64_t n_vocab, const std::string& mode, float w_edge, float w_cloud, bool adaptive,
                         float gate, float disagree_power, float min_weight, float tail_floor, int top_k,
                         bool normalize, const std::optional<std::string>& variant) {
                 fusion::Config c;
                 c.n_vocab = n_vocab;
                 if (mode == "loglinear")
                     c.mode = fusion::Mode::LogLinear;
                 else if (mode == "linear")
                     c.mode = fusion::Mode::Linear;
                 else
                     throw std::invalid_argument("mode must be 'loglinear' or 'linear', got '" + mode + "'");
                 c.w_edge = w_edge, c.w_cloud = w_cloud, c.adaptive = adaptive, c.gate = gate;
                 c.disagree_power = disagree_power, c.min_weight = min_weight, c.tail_floor = tail_floor;
                 c.top_k = top_k, c.normalize = normalize;
                 return std::make_unique<PyFuser>(c, variant);
             }),
             py::arg("n_vocab"), py::arg("mode"), py::arg("w_edge"), py::arg("w_cloud"), py::arg("adaptive"),
             py::arg("gate"), py::arg("disagree_power"), py::arg("min_weight"), py::arg("tail_floor"),
             py::arg("top_k"), py::arg("normalize"), py::arg("variant") = py::none(),
             "A fusion step for n_vocab tokens with these settings (floe_edge.fusion.Fuser documents them).")
        .def("fuse", &PyFuser::fuse, py::arg("edge_logits"), py::arg("cloud_ids") = py::none(),
             py::arg("cloud_logprobs") = py::none(), py::arg("cloud_dense") = py::none(),
             py::arg("edge_stats") = py::none(), py::arg("weights") = py::none(),
             "-> (ids, logprobs, w_edge, w_cloud, gated, normalized, edge_top1, cloud_top1, edge_entropy, "
             "cloud_entropy); weights: (w_edge, w_cloud) for this call instead of the static or adaptive ones "
             "(the gate still applies)")
        .def("edge_stats", &PyFuser::edge_stats, py::arg("edge_logits"),
             "-> (top1, max_prob, entropy, needs_cloud, max_logit, lse)")
        .def_property_readonly("variant", &PyFuser::variant, "The kernel variant the fusion passes run on.");

    py::class_<PySampler>(m, "FusionSampler", "Seeded sampler over a fused top-k (see floe_edge.fusion.FusedSampler).")
        .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repeat_penalty, uint64_t seed) {
                 fusion::SampleParams p;
                 p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty;
                 return std::make_unique<PySampler>(p, seed);
             }),
             py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("min_p"), py::arg("repeat_penalty"),
             py::arg("seed"), "A sampler with these settings and an xoshiro256** stream seeded with seed.")
        .def("sample", &PySampler::sample, py::arg("ids"), py::arg("logprobs"), py::arg("recent") = py::none(),
             "-> (token, fused log-prob); recent: tokens the repetition penalty applies to.")
        .def_property_readonly("rng_state", &PySampler::state, "The four 64-bit words of the generator's state.");

    m.def("log_softmax", [](const F32Array& x, const std::optional<std::string>& variant) {
        int64_t n = 0;
        const float* xp = view<float>(x, "x", "float32", -1, &n);
        const Kernels& k = pick_variant(variant);
        py::array_t<float> out(n);
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        fusion::log_softmax(k, xp, op, n);
        return out;
    }, py::arg("x"), py::arg("variant") = py::none(), "x - logsumexp(x) (NaN counts as -inf).");
    m.def("logsumexp", [](const F32Array& x, const std::optional<std::string>& variant) {
        int64_t n = 0;
        const float* xp = view<float>(x, "x", "float32", -1, &n);
        const Kernels& k = pick_variant(variant);
        py::gil_scoped_release release;
        return fusion::logsumexp(k, xp, n);
    }, py::arg("x"), py::arg("variant") = py::none(), "log(sum(exp(x))) (NaN counts as -inf).");
    m.def("topk", [](const F32Array& x, int k, const std::optional<std::string>& variant) {
        int64_t n = 0;
        const float* xp = view<float>(x, "x", "float32", -1, &n);
        if (k < 1 || k > kMaxTopK) throw std::invalid_argument("k must be in 1..128");
        const Kernels& kv = pick_variant(variant);
        int32_t ids[kMaxTopK];
        float vals[kMaxTopK];
        int got;
        {
            py::gil_scoped_release release;
            got = kv.topk(xp, n, k, ids, vals);
        }
        return py::make_tuple(to_array(ids, got), to_array(vals, got));
    }, py::arg("x"), py::arg("k"), py::arg("variant") = py::none(),
          "-> (ids, values): the k (1..128) largest values, descending, ties to the lower index.");
    m.def("remap_topk", [](const I32Array& ids, const F32Array& lps, const I32Array& map) {
        int64_t k = 0, map_len = 0;
        const int32_t* ip = view<int32_t>(ids, "ids", "int32", -1, &k);
        const float* lp = view<float>(lps, "logprobs", "float32", k);
        const int32_t* mp = view<int32_t>(map, "map", "int32", -1, &map_len);
        if (k > fusion::kMaxK) throw std::invalid_argument("top-k has more than 64 entries");
        int32_t oi[fusion::kMaxK];
        float ol[fusion::kMaxK];
        const int n = fusion::remap_topk(ip, lp, static_cast<int>(k), mp, map_len, oi, ol);
        return py::make_tuple(to_array(oi, n), to_array(ol, n));
    }, py::arg("ids"), py::arg("logprobs"), py::arg("map"),
          "-> (edge ids, log-probs): a cloud top-k mapped through map (cloud id -> edge id or -1), by the rule of "
          "floe_edge.vocab_map.VocabMap.remap (ValueError on NaN, positive log-probs or a mass above 1).");
    m.def("apply_repeat_penalty", [](const F64Array& scores, const I32Array& recent, double penalty,
                                     const OptI32Array& ids) {
        int64_t n = 0, n_recent = 0;
        double* sp = mutable_view<double>(scores, "scores", "float64", &n);
        const int32_t* rp = view<int32_t>(recent, "recent", "int32", -1, &n_recent);
        const int32_t* ip = ids.is_none() ? nullptr : view<int32_t>(ids, "ids", "int32", n);
        if (!(penalty > 0) || !std::isfinite(penalty)) throw std::invalid_argument("penalty must be > 0");
        if (n_recent > INT32_MAX) throw std::invalid_argument("recent is too long");
        fusion::apply_repeat_penalty(sp, ip, n, rp, static_cast<int>(n_recent), penalty);
    }, py::arg("scores"), py::arg("recent"), py::arg("penalty"), py::arg("ids") = py::none(),
          "In place, llama.cpp's repetition penalty on the scores of the distinct tokens in recent: a positive "
          "score / penalty, any other * penalty. scores[i] belongs to token ids[i], or to token i without ids "
          "(a recent id outside the vocabulary is then a ValueError). The rule FusionSampler.sample applies.");
}
