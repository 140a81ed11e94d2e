// Helpers shared by the bind_*.cpp files of the pybind11 module floe_edge._native.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>

#include "floe/kernels.h"

namespace floe::bind {

namespace py = pybind11;

// The kernel variant a call asked for by name, or the active one; an unknown name lists what this CPU has.
inline const Kernels& pick_variant(const std::optional<std::string>& name) {
    if (!name) return active_kernels();
    if (const Kernels* k = find_variant(name->c_str())) return *k;
    std::string have;
    for (const Kernels* k : available_variants()) have += std::string(have.empty() ? "" : ", ") + k->name;
    throw std::invalid_argument("variant '" + *name + "' is not available on this CPU (available: " + have + ")");
}

// A new 1-D numpy array holding a copy of p[0..n).
template <typename T>
py::array_t<T> to_array(const T* p, py::ssize_t n) {
    py::array_t<T> a(n);
    std::copy(p, p + n, a.mutable_data());
    return a;
}

// An argument taken as the Python object it is, whatever it is (the binding checks it and raises the clear error),
// but named in signatures and generated stubs as Tag::name says: e.g. numpy.typing.NDArray[numpy.float32].
template <typename Tag>
class TypedObject : public py::object {
public:
    TypedObject() = default;
    TypedObject(py::handle h, borrowed_t) : py::object(h, borrowed_t{}) {}
    TypedObject(py::handle h, stolen_t) : py::object(h, stolen_t{}) {}
    static bool check_(py::handle) { return true; }
};

struct F32Tag {
    static constexpr auto name = py::detail::const_name("numpy.typing.NDArray[numpy.float32]");
};
struct F64Tag {
    static constexpr auto name = py::detail::const_name("numpy.typing.NDArray[numpy.float64]");
};
struct I32Tag {
    static constexpr auto name = py::detail::const_name("numpy.typing.NDArray[numpy.int32]");
};
struct OptF32Tag {
    static constexpr auto name = py::detail::const_name("numpy.typing.NDArray[numpy.float32] | None");
};
struct OptI32Tag {
    static constexpr auto name = py::detail::const_name("numpy.typing.NDArray[numpy.int32] | None");
};
struct TextTag {
    static constexpr auto name = py::detail::const_name("str | bytes");
};
using F32Array = TypedObject<F32Tag>;
using F64Array = TypedObject<F64Tag>;
using I32Array = TypedObject<I32Tag>;
struct GGUFSourceTag {
    static constexpr auto name = py::detail::const_name("str | os.PathLike[str] | GGUFFile");
};
using GGUFSource = TypedObject<GGUFSourceTag>;
using OptF32Array = TypedObject<OptF32Tag>;  // None allowed
using OptI32Array = TypedObject<OptI32Tag>;
using Text = TypedObject<TextTag>;

}  // namespace floe::bind

namespace pybind11::detail {
template <typename Tag>
struct handle_type_name<floe::bind::TypedObject<Tag>> {
    static constexpr auto name = Tag::name;
};
}  // namespace pybind11::detail

// The parts of the module, one per file (bindings.cpp defines the module and calls them).
void bind_gguf(pybind11::module_& m);       // bind_gguf.cpp
void bind_model(pybind11::module_& m);      // bind_model.cpp
void bind_tokenizer(pybind11::module_& m);  // bind_tokenizer.cpp
void bind_fusion(pybind11::module_& m);     // bind_fusion.cpp
