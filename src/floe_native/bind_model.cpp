// Python view of the native decoder: Model (validated GGUF weights) and Decoder (KV cache + forward pass).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <optional>

#include "floe/decoder.h"
#include "floe/model.h"

namespace py = pybind11;
using namespace floe;

namespace {

// Decoder plus the cancel flag Python can raise from another thread.
struct PyDecoder {
    PyDecoder(std::shared_ptr<const Model> m, int n_ctx, int threads, const Kernels& k)
        : decoder(std::move(m), n_ctx, threads, k) {}
    Decoder decoder;
    std::atomic<bool> cancel{false};
};

const Kernels& variant_or_active(const std::optional<std::string>& name) {
    if (!name) return active_kernels();
    if (const Kernels* k = find_variant(name->c_str())) return *k;
    throw std::invalid_argument("variant '" + *name + "' is not available on this CPU");
}

}  // namespace

void bind_model(py::module_& m) {
    static py::exception<ModelError> model_error(m, "ModelError", PyExc_ValueError);
    static py::exception<ContextFull> context_full(m, "ContextOverflowError", PyExc_ValueError);
    static py::exception<Cancelled> cancelled(m, "Cancelled", PyExc_TimeoutError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ModelError& e) {
            py::set_error(model_error, e.what());
        } catch (const ContextFull& e) {
            py::set_error(context_full, e.what());
        } catch (const Cancelled& e) {
            py::set_error(cancelled, e.what());
        }
    });

    py::class_<Model, std::shared_ptr<Model>>(m, "Model", "A llama-architecture GGUF model, weights used in place.")
        .def(py::init([](const std::string& path) {
                 py::gil_scoped_release release;
                 return std::make_shared<Model>(path);
             }),
             py::arg("path"))
        .def_property_readonly("config", [](const Model& model) {
            const ModelConfig& c = model.config();
            py::dict d;
            d["arch"] = c.arch, d["n_layers"] = c.n_layers, d["dim"] = c.dim, d["n_heads"] = c.n_heads;
            d["n_kv_heads"] = c.n_kv_heads, d["head_dim"] = c.head_dim, d["ffn_dim"] = c.ffn_dim;
            d["n_vocab"] = c.n_vocab, d["n_ctx_train"] = c.n_ctx_train, d["rms_eps"] = c.rms_eps;
            d["rope_base"] = c.rope_base;
            return d;
        })
        .def_property_readonly("file_size", [](const Model& model) { return model.file().file_size(); });

    py::class_<PyDecoder>(m, "Decoder", "Forward pass with a KV cache over a thread pool.")
        .def(py::init([](std::shared_ptr<Model> model, int n_ctx, int threads, const std::optional<std::string>& v) {
                 return std::make_unique<PyDecoder>(std::move(model), n_ctx, threads, variant_or_active(v));
             }),
             py::arg("model"), py::arg("n_ctx") = 2048, py::arg("threads") = 1, py::arg("variant") = py::none())
        .def_property_readonly("n_past", [](const PyDecoder& d) { return d.decoder.n_past(); })
        .def_property_readonly("n_ctx", [](const PyDecoder& d) { return d.decoder.n_ctx(); })
        .def_property_readonly("n_threads", [](const PyDecoder& d) { return d.decoder.n_threads(); })
        .def("eval", [](PyDecoder& d, py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens,
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
            d.cancel.store(false);
            py::gil_scoped_release release;
            d.decoder.eval(ids, n, out, all_logits, &d.cancel, deadline);
            return logits;
        }, py::arg("tokens"), py::arg("all_logits") = true, py::arg("timeout_s") = py::none(),
           "Evaluate tokens after the cached ones; logits of every position (n, n_vocab) or of the last (n_vocab,).")
        .def("cancel", [](PyDecoder& d) { d.cancel.store(true); }, "Stop a running eval at the next layer (thread-safe).")
        .def("truncate", [](PyDecoder& d, int n_past) { d.decoder.truncate(n_past); }, py::arg("n_past"))
        .def("reset", [](PyDecoder& d) { d.decoder.truncate(0); });
}
