// Python view of the GGUF reader: metadata as Python values, tensor data as zero-copy numpy views.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <memory>

#include "bind_common.h"
#include "floe/gguf.h"

namespace py = pybind11;
using namespace floe;

namespace {

py::object to_python(const GGUFValue::Scalar& s) {
    if (const auto* u = std::get_if<uint64_t>(&s)) return py::int_(*u);
    if (const auto* i = std::get_if<int64_t>(&s)) return py::int_(*i);
    if (const auto* d = std::get_if<double>(&s)) return py::float_(*d);
    if (const auto* b = std::get_if<bool>(&s)) return py::bool_(*b);
    const std::string& str = std::get<std::string>(s);
    PyObject* u = PyUnicode_DecodeUTF8(str.data(), static_cast<Py_ssize_t>(str.size()), nullptr);
    if (u != nullptr) return py::reinterpret_steal<py::object>(u);
    PyErr_Clear();  // not UTF-8 (e.g. a partial-UTF-8 token): keep the bytes
    return py::bytes(str);
}

py::object to_python(const GGUFValue& v) {
    if (v.type != GGUFType::ARRAY) return to_python(v.scalar);
    py::list out(v.array.size());
    for (size_t i = 0; i < v.array.size(); ++i) out[i] = to_python(v.array[i]);
    return std::move(out);
}

py::dict tensor_info(const GGUFTensor& t) {
    py::list shape;
    for (int d = 0; d < t.n_dims; ++d) shape.append(t.ne[d]);
    py::dict info;
    info["name"] = t.name;
    info["type"] = t.type;
    info["shape"] = shape;  // ggml order: shape[0] is the contiguous dimension
    info["offset"] = t.offset;
    info["nbytes"] = t.nbytes;
    return info;
}

}  // namespace

void bind_gguf(py::module_& m) {
    py::register_exception<GGUFError>(m, "GGUFError", PyExc_ValueError);

    py::class_<GGUFFile, std::shared_ptr<GGUFFile>>(m, "GGUFFile", "A validated, memory-mapped GGUF file.")
        .def(py::init([](const std::string& path) {
                 py::gil_scoped_release release;
                 return std::make_shared<GGUFFile>(path);
             }),
             py::arg("path"), "Open and validate a GGUF file (GGUFError when it is malformed).")
        .def_static("from_bytes", [](py::bytes data) {
            // Parse a copy that lives as long as the returned object (used by tests and the fuzz target).
            auto holder = std::make_shared<std::string>(data);
            auto file = std::shared_ptr<GGUFFile>(
                new GGUFFile(reinterpret_cast<const uint8_t*>(holder->data()), holder->size()),
                [holder](GGUFFile* f) { delete f; });
            return file;
        }, py::arg("data"), "Parse a GGUF image held in memory (a copy is kept).")
        .def_property_readonly("version", &GGUFFile::version, "GGUF format version.")
        .def_property_readonly("alignment", &GGUFFile::alignment, "Alignment of the tensor data, in bytes.")
        .def_property_readonly("file_size", &GGUFFile::file_size, "Size of the file, in bytes.")
        .def_property_readonly("metadata", [](const GGUFFile& f) {
            py::typing::Dict<py::str, py::object> d;
            for (const auto& [key, value] : f.metadata()) d[py::str(key)] = to_python(value);
            return d;
        }, "Metadata key -> value (int, float, bool, str, bytes when not UTF-8, or a list of them).")
        .def_property_readonly("tensors", [](const GGUFFile& f) {
            py::typing::List<py::typing::Dict<py::str, py::object>> out;
            for (const GGUFTensor& t : f.tensors()) out.append(tensor_info(t));
            return out;
        }, "Tensor infos: dicts with name, type, shape (ggml order), offset and nbytes.")
        .def("tensor_data", [](py::object self, const std::string& name) {
            const GGUFFile& f = self.cast<const GGUFFile&>();
            const GGUFTensor* t = f.find_tensor(name);
            if (t == nullptr) throw py::key_error("no tensor named '" + name + "'");
            // read-only view into the mapping; the array keeps the file object alive
            py::array_t<uint8_t> view({static_cast<py::ssize_t>(t->nbytes)}, {1}, t->data, self);
            py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
            return view;
        }, py::arg("name"), "Raw bytes of a tensor (read-only, zero-copy).");
}
