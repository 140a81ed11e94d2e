// Python view of the native decoder: Model (validated GGUF weights), Adapter (a LoRA adapter validated against a
// Model) and Decoder (KV cache + forward pass).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <chrono>
#include <mutex>
#include <optional>

#include "bind_common.h"
#include "floe/decoder.h"
#include "floe/lora.h"
#include "floe/model.h"

namespace py = pybind11;
using namespace floe;

namespace {

// Decoder plus the cancel flag Python can raise from another thread, and a lock held by every eval: an adapter swap
// from another thread waits for the running eval to finish, so a swap always falls between evals. A cancel() is consumed by an eval: the one
// running, or else the next one (which then raises Cancelled before its first layer). Every eval clears the flag
// when it ends, however it ends, so a cancel is never lost to an eval starting and never outlives the eval it hit.
struct PyDecoder {
    PyDecoder(std::shared_ptr<const Model> m, int n_ctx, int threads, const Kernels& k)
        : decoder(std::move(m), n_ctx, threads, k) {}
    Decoder decoder;
    std::atomic<bool> cancel{false};
    std::mutex busy;
};

// Clears the cancel flag when an eval ends (returns or throws).
struct ClearOnExit {
    std::atomic<bool>& flag;
    ~ClearOnExit() { flag.store(false); }
};

py::array_t<float> eval(PyDecoder& d, const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& tokens,
                        bool all_logits, std::optional<double> timeout_s) {
    if (tokens.ndim() != 1) throw std::invalid_argument("tokens must be a 1-D sequence of ids");
    const int n = static_cast<int>(tokens.size());
    if (n < 1) throw std::invalid_argument("eval needs at least one token");
    const int vocab = d.decoder.config().n_vocab;
    py::array_t<float> logits = all_logits ? py::array_t<float>({n, vocab}) : py::array_t<float>(vocab);
    int64_t deadline = 0;
    if (timeout_s) {
        const auto now = std::chrono::steady_clock::now().time_since_epoch();
        deadline = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() +
                   static_cast<int64_t>(*timeout_s * 1e9);
    }
    const int32_t* ids = tokens.data();
    float* out = logits.mutable_data();
    ClearOnExit clear{d.cancel};
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(d.busy);
    d.decoder.eval(ids, n, out, all_logits, &d.cancel, deadline);
    return logits;
}

// The cached token ids, copied under the eval lock: an eval on another thread is writing past n_past.
py::array_t<int32_t> cached_tokens(PyDecoder& d) {
    std::vector<int32_t> ids;
    {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(d.busy);
        ids.assign(d.decoder.tokens(), d.decoder.tokens() + d.decoder.n_past());
    }
    py::array_t<int32_t> out(static_cast<py::ssize_t>(ids.size()));
    std::copy(ids.begin(), ids.end(), out.mutable_data());
    return out;
}

void set_adapters(PyDecoder& d, const std::vector<std::pair<std::shared_ptr<Adapter>, float>>& adapters,
                  bool keep_cache) {
    std::vector<ActiveAdapter> active;
    for (const auto& [adapter, scale] : adapters) {
        if (!adapter) throw std::invalid_argument("set_adapters: an adapter is None");
        active.push_back({adapter, scale});
    }
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(d.busy);
    d.decoder.set_adapters(std::move(active), keep_cache);
}

void bind_adapter(py::module_& m) {
    py::class_<Adapter, std::shared_ptr<Adapter>>(m, "Adapter",
                                                  "A LoRA adapter in llama.cpp's GGUF format, validated against a Model.")
        .def(py::init([](const std::string& path, const std::shared_ptr<Model>& model) {
                 if (!model) throw std::invalid_argument("Adapter needs a model");
                 py::gil_scoped_release release;
                 return std::make_shared<Adapter>(path, *model);
             }),
             py::arg("path"), py::arg("model"),
             "Load an adapter for model (GGUFError for a malformed file, ModelError when it is not a LoRA adapter for "
             "this model: the message names the tensor and the problem).")
        .def_property_readonly("alpha", &Adapter::alpha, "adapter.lora.alpha (0 when absent: scale = user scale).")
        .def_property_readonly("n_pairs", &Adapter::n_pairs, "Adapted tensors.")
        .def_property_readonly("max_rank", &Adapter::max_rank, "Largest rank of its pairs.")
        .def_property_readonly("targets", &Adapter::targets,
                               "(base tensor name, rank) of every adapted tensor, in layer and projection order.");
}

}  // namespace

void bind_model(py::module_& m) {
    py::register_exception<ModelError>(m, "ModelError", PyExc_ValueError);
    py::register_exception<ContextFull>(m, "ContextOverflowError", PyExc_ValueError);
    py::register_exception<Cancelled>(m, "Cancelled", PyExc_TimeoutError);

    py::class_<Model, std::shared_ptr<Model>>(m, "Model", "A llama-architecture GGUF model, weights used in place.")
        .def(py::init([](const std::string& path) {
                 py::gil_scoped_release release;
                 return std::make_shared<Model>(path);
             }),
             py::arg("path"), "Load and validate a GGUF model (ModelError when unsupported).")
        .def_property_readonly("config", [](const Model& model) {
            const ModelConfig& c = model.config();
            py::typing::Dict<py::str, py::object> d;
            d["arch"] = c.arch, d["n_layers"] = c.n_layers, d["dim"] = c.dim, d["n_heads"] = c.n_heads;
            d["n_kv_heads"] = c.n_kv_heads, d["head_dim"] = c.head_dim, d["ffn_dim"] = c.ffn_dim;
            d["n_vocab"] = c.n_vocab, d["n_ctx_train"] = c.n_ctx_train, d["rms_eps"] = c.rms_eps;
            d["rope_base"] = c.rope_base;
            return d;
        }, "Hyperparameters: arch, n_layers, dim, n_heads, n_kv_heads, head_dim, ffn_dim, n_vocab, ...")
        .def_property_readonly("file_size", [](const Model& model) { return model.file().file_size(); },
                               "Size of the GGUF file, in bytes.");

    bind_adapter(m);  // before Decoder, whose set_adapters names it

    py::class_<PyDecoder>(m, "Decoder", "Forward pass with a KV cache over a thread pool.")
        .def(py::init([](std::shared_ptr<Model> model, int n_ctx, int threads, const std::optional<std::string>& v) {
                 return std::make_unique<PyDecoder>(std::move(model), n_ctx, threads, bind::pick_variant(v));
             }),
             py::arg("model"), py::arg("n_ctx") = 2048, py::arg("threads") = 1, py::arg("variant") = py::none(),
             "A decoder with an empty KV cache of n_ctx positions, running on `threads` threads.")
        .def_property_readonly("n_past", [](const PyDecoder& d) { return d.decoder.n_past(); }, "Cached positions.")
        .def_property_readonly("tokens", &cached_tokens,
                               "Token ids of the cached positions (a copy, int32, n_past of them), in order.")
        .def_property_readonly("n_ctx", [](const PyDecoder& d) { return d.decoder.n_ctx(); }, "Context size.")
        .def_property_readonly("n_threads", [](const PyDecoder& d) { return d.decoder.n_threads(); },
                               "Threads of the pool.")
        .def("eval", &eval, py::arg("tokens"), py::arg("all_logits") = true, py::arg("timeout_s") = py::none(),
             "Evaluate tokens after the cached ones; logits of every position (n, n_vocab) or of the last (n_vocab,). "
             "Raises Cancelled (cache unchanged) on cancel() or when timeout_s passes, ContextOverflowError when the "
             "tokens do not fit.")
        .def("cancel", [](PyDecoder& d) { d.cancel.store(true); },
             "Make the running eval raise Cancelled at its next layer, or the next eval if none is running "
             "(thread-safe; consumed by that eval).")
        .def("truncate", [](PyDecoder& d, int n_past) { d.decoder.truncate(n_past); }, py::arg("n_past"),
             "Forget the cached positions from n_past on (0 <= n_past <= self.n_past).")
        .def("reset", [](PyDecoder& d) { d.decoder.truncate(0); }, "Empty the KV cache.")
        .def("set_adapters", &set_adapters, py::arg("adapters"), py::arg("keep_cache") = false,
             "Replace the LoRA adapters by [(adapter, scale), ...] (empty: none), waiting for a running eval to end. "
             "Unless keep_cache, the next eval first recomputes the cached tokens under the new adapters.")
        .def_property_readonly("cache_stale", [](const PyDecoder& d) { return d.decoder.cache_stale(); },
                               "Will the next eval recompute the cached prefix (after an adapter swap)?")
        .def_property_readonly("recomputed_tokens", [](const PyDecoder& d) { return d.decoder.recomputed_tokens(); },
                               "Cached positions recomputed after adapter swaps, in total.");
}
