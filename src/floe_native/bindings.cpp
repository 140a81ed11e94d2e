// pybind11 module floe_edge._native: thin, validating wrappers; every long call releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include "bind_common.h"
#include "floe/kernels.h"
#include "floe/matmul.h"

namespace py = pybind11;
using namespace floe;
using floe::bind::pick_variant;

namespace {

QType parse_qtype(const std::string& s) {
    static const std::map<std::string, QType> names = {{"f32", QType::F32},   {"f16", QType::F16},
                                                       {"q4_0", QType::Q4_0}, {"q4_1", QType::Q4_1},
                                                       {"q8_0", QType::Q8_0}, {"q8_1", QType::Q8_1}};
    auto it = names.find(s);
    if (it == names.end())
        throw std::invalid_argument("unknown qtype '" + s + "' (expected f32, f16, q4_0, q4_1, q8_0 or q8_1)");
    return it->second;
}

// Arrays are taken as they are (no silent copies or casts): wrong dtype or layout is a clear ValueError.
template <typename T>
const T* checked(const py::array& a, const char* what, const char* dtype_name) {
    if (!py::isinstance<py::array_t<T>>(a))  // same dtype (native byte order), no conversion
        throw std::invalid_argument(std::string(what) + " must be a " + dtype_name + " array, got " +
                                    std::string(py::str(a.dtype())));
    if (!(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(what) + " must be C-contiguous");
    return static_cast<const T*>(a.data());
}

void check_size(py::ssize_t got, int64_t want, const std::string& what) {
    if (got != want)
        throw std::invalid_argument(what + " has " + std::to_string(got) + " elements, expected " + std::to_string(want));
}

// One pool per thread count, kept for the life of the process (threads are costly to start per call).
ThreadPool& pool_for(int threads) {
    if (threads < 1 || threads > 256) throw std::invalid_argument("threads must be in 1..256");
    static std::mutex mutex;
    static std::map<int, std::unique_ptr<ThreadPool>> pools;
    std::lock_guard<std::mutex> lock(mutex);
    auto& p = pools[threads];
    if (!p) p = std::make_unique<ThreadPool>(threads);
    return *p;
}

py::array_t<uint8_t> quantize(const py::array& x, const std::string& qtype, const std::optional<std::string>& variant) {
    const QType t = parse_qtype(qtype);
    const float* xp = checked<float>(x, "x", "float32");
    const int64_t n = x.size();
    const int bs = type_traits(t).block_size;
    if (n % bs != 0)
        throw std::invalid_argument("x has " + std::to_string(n) + " values; " + qtype + " needs a multiple of " +
                                    std::to_string(bs));
    const Kernels& k = pick_variant(variant);
    py::array_t<uint8_t> out(static_cast<py::ssize_t>(row_size(t, n)));
    uint8_t* op = out.mutable_data();
    py::gil_scoped_release release;
    switch (t) {  // weights as ggml's reference quantizers (= gguf.quants)
        case QType::Q4_0: ref::quantize_q4_0(xp, op, n); break;
        case QType::Q4_1: ref::quantize_q4_1(xp, op, n); break;
        case QType::F16: ref::quantize_f16(xp, op, n); break;
        case QType::Q8_0: ref::quantize_q8_0_weights(xp, op, n); break;
        case QType::F32: std::memcpy(op, xp, static_cast<size_t>(n) * 4); break;
        case QType::Q8_1: k.quantize_q8_1(xp, op, n); break;  // activation-only format
    }
    return out;
}

py::array_t<uint8_t> quantize_activations(const py::array& x, const std::string& qtype,
                                          const std::optional<std::string>& variant) {
    const QType t = parse_qtype(qtype);
    if (t != QType::Q8_0 && t != QType::Q8_1) throw std::invalid_argument("activations quantize to q8_0 or q8_1");
    const float* xp = checked<float>(x, "x", "float32");
    const int64_t n = x.size();
    if (n % QK != 0) throw std::invalid_argument("x has " + std::to_string(n) + " values; needs a multiple of 32");
    const Kernels& k = pick_variant(variant);
    py::array_t<uint8_t> out(static_cast<py::ssize_t>(row_size(t, n)));
    uint8_t* op = out.mutable_data();
    py::gil_scoped_release release;
    k.quantize(t)(xp, op, n);
    return out;
}

py::array_t<float> dequantize(const py::array& buf, const std::string& qtype, int64_t n) {
    const QType t = parse_qtype(qtype);
    const uint8_t* bp = checked<uint8_t>(buf, "buf", "uint8");
    if (n < 0 || n % type_traits(t).block_size != 0)
        throw std::invalid_argument("n must be a non-negative multiple of " + std::to_string(type_traits(t).block_size));
    check_size(buf.size(), static_cast<int64_t>(row_size(t, n)), "buf");
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    float* op = out.mutable_data();
    py::gil_scoped_release release;
    ref::dequantize(t, bp, op, n);
    return out;
}

py::array_t<float> matmul(const py::array& w, const std::string& qtype, int64_t rows, int64_t cols, const py::array& x,
                          const std::optional<std::string>& variant, int threads, bool vector) {
    const QType t = parse_qtype(qtype);
    check_matmul_shape(t, rows, cols);
    const uint8_t* wp = checked<uint8_t>(w, "w_buf", "uint8");
    check_size(w.size(), static_cast<int64_t>(row_size(t, cols)) * rows, "w_buf (bytes)");
    const float* xp = checked<float>(x, "x", "float32");
    int64_t n = 1;
    if (vector) {
        check_size(x.size(), cols, "x");
    } else {
        if (x.ndim() != 2 || x.shape(1) != cols)
            throw std::invalid_argument("X must have shape (n, " + std::to_string(cols) + ")");
        n = x.shape(0);
        if (n < 1 || n > 4096) throw std::invalid_argument("X must have 1..4096 rows");
    }
    const Kernels& k = pick_variant(variant);
    ThreadPool& pool = pool_for(threads);
    py::array_t<float> out = vector ? py::array_t<float>(rows) : py::array_t<float>({n, rows});
    float* op = out.mutable_data();
    {
        py::gil_scoped_release release;
        thread_local std::vector<uint8_t> scratch;
        floe::matmul(k, t, wp, rows, cols, xp, static_cast<int>(n), op, pool, scratch);
    }
    return out;
}

py::array_t<float> copy_f32(const py::array& x, const char* what) {
    const float* xp = checked<float>(x, what, "float32");
    py::array_t<float> out(x.size());
    std::memcpy(out.mutable_data(), xp, static_cast<size_t>(x.size()) * sizeof(float));
    return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "floe-edge native core: kernels with runtime CPU dispatch, GGUF reader";
    bind_gguf(m);
    bind_model(m);
    bind_tokenizer(m);
    bind_fusion(m);

    m.def("variants", [] {
        std::vector<std::string> out;
        for (const Kernels* k : available_variants()) out.emplace_back(k->name);
        return out;
    }, "Kernel variants this CPU can run, best first ('ref' last).");
    m.def("active_variant", [] { return std::string(active_kernels().name); },
          "The variant chosen at load (FLOE_FORCE_VARIANT=name forces one, FLOE_FORCE_REF=1 'ref').");
    m.def("cpu_features", [] {
        const CpuFeatures& f = cpu_features();
        py::typing::Dict<py::str, py::object> d;
        d["arch"] = f.arch;
        d["avx2"] = f.avx2, d["fma"] = f.fma, d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f, d["avx512bw"] = f.avx512bw, d["avx512vl"] = f.avx512vl;
        d["avx512vnni"] = f.avx512vnni, d["avxvnni"] = f.avxvnni;
        d["neon"] = f.neon, d["dotprod"] = f.dotprod, d["fp16"] = f.fp16, d["i8mm"] = f.i8mm;
        return d;
    }, "CPU features seen by the runtime probe.");

    m.def("quantize", &quantize, py::arg("x"), py::arg("qtype"), py::arg("variant") = py::none(),
          "float32 values (flattened in C order) to ggml blocks of qtype, as ggml's reference quantizers.");
    m.def("quantize_activations", &quantize_activations, py::arg("x"), py::arg("qtype"),
          py::arg("variant") = py::none(), "float32 activations to q8_0 / q8_1 blocks, as matvec quantizes them.");
    m.def("dequantize", &dequantize, py::arg("buf"), py::arg("qtype"), py::arg("n"),
          "n float32 values decoded from ggml blocks of qtype.");
    m.def("matvec", [](const py::array& w, const std::string& q, int64_t rows, int64_t cols, const py::array& x,
                       const std::optional<std::string>& variant, int threads) {
        return matmul(w, q, rows, cols, x, variant, threads, true);
    }, py::arg("w_buf"), py::arg("qtype"), py::arg("rows"), py::arg("cols"), py::arg("x"),
          py::arg("variant") = py::none(), py::arg("threads") = 1, "y[rows] = W[rows, cols] @ x.");
    m.def("matmul", [](const py::array& w, const std::string& q, int64_t rows, int64_t cols, const py::array& x,
                       const std::optional<std::string>& variant, int threads) {
        return matmul(w, q, rows, cols, x, variant, threads, false);
    }, py::arg("w_buf"), py::arg("qtype"), py::arg("rows"), py::arg("cols"), py::arg("x"),
          py::arg("variant") = py::none(), py::arg("threads") = 1, "Y[n, rows] = X[n, cols] @ W.T.");

    m.def("rmsnorm", [](const py::array& x, const py::array& weight, float eps, const std::optional<std::string>& v) {
        const float* wp = checked<float>(weight, "weight", "float32");
        check_size(weight.size(), x.size(), "weight");
        py::array_t<float> out = copy_f32(x, "x");
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        pick_variant(v).rmsnorm(op, op, wp, out.size(), eps);
        return out;
    }, py::arg("x"), py::arg("weight"), py::arg("eps") = 1e-5f, py::arg("variant") = py::none(),
          "x / sqrt(mean(x^2) + eps) * weight.");
    m.def("softmax", [](const py::array& x, const std::optional<std::string>& v) {
        py::array_t<float> out = copy_f32(x, "x");
        float* op = out.mutable_data();
        if (out.size() == 0) throw std::invalid_argument("softmax of an empty array");
        py::gil_scoped_release release;
        pick_variant(v).softmax(op, out.size());
        return out;
    }, py::arg("x"), py::arg("variant") = py::none(), "softmax(x) of a non-empty float32 array.");
    m.def("swiglu", [](const py::array& gate, const py::array& up, const std::optional<std::string>& v) {
        const float* up_p = checked<float>(up, "up", "float32");
        check_size(up.size(), gate.size(), "up");
        py::array_t<float> out = copy_f32(gate, "gate");
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        pick_variant(v).swiglu(op, op, up_p, out.size());
        return out;
    }, py::arg("gate"), py::arg("up"), py::arg("variant") = py::none(), "silu(gate) * up.");
    m.def("rope", [](const py::array& x, int64_t pos, float base, bool neox, const std::optional<std::string>& v) {
        if (x.ndim() != 2 || x.shape(1) < 2 || x.shape(1) % 2 != 0)
            throw std::invalid_argument("x must have shape (n_heads, head_dim) with an even head_dim");
        const int n_heads = static_cast<int>(x.shape(0)), head_dim = static_cast<int>(x.shape(1));
        py::array_t<float> out = copy_f32(x, "x");
        out.resize({x.shape(0), x.shape(1)});
        float* op = out.mutable_data();
        const Kernels& k = pick_variant(v);
        py::gil_scoped_release release;
        std::vector<float> cs(static_cast<size_t>(head_dim));
        rope_table(cs.data(), pos, head_dim, base);
        k.rope(op, n_heads, head_dim, cs.data(), neox);
        return out;
    }, py::arg("x"), py::arg("pos"), py::arg("base") = 10000.0f, py::arg("neox") = false,
          py::arg("variant") = py::none(), "Rotary embedding of x[n_heads, head_dim] at position pos.");
}
