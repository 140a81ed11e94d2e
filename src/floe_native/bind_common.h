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

// The names of TypedObject arguments (one struct per name: const_name needs the literal at compile time).
#define FLOE_BIND_TYPE_NAME(Tag, text) \
    struct Tag {                       \
        static constexpr auto name = py::detail::const_name(text); \
    }
FLOE_BIND_TYPE_NAME(F32Tag, "numpy.typing.NDArray[numpy.float32]");
FLOE_BIND_TYPE_NAME(F64Tag, "numpy.typing.NDArray[numpy.float64]");
FLOE_BIND_TYPE_NAME(I32Tag, "numpy.typing.NDArray[numpy.int32]");
FLOE_BIND_TYPE_NAME(OptF32Tag, "numpy.typing.NDArray[numpy.float32] | None");
FLOE_BIND_TYPE_NAME(OptI32Tag, "numpy.typing.NDArray[numpy.int32] | None");
FLOE_BIND_TYPE_NAME(TextTag, "str | bytes");
FLOE_BIND_TYPE_NAME(GGUFSourceTag, "str | os.PathLike[str] | GGUFFile");
#undef FLOE_BIND_TYPE_NAME

using F32Array = TypedObject<F32Tag>;
using F64Array = TypedObject<F64Tag>;
using I32Array = TypedObject<I32Tag>;
using OptF32Array = TypedObject<OptF32Tag>;  // None allowed
using OptI32Array = TypedObject<OptI32Tag>;
using Text = TypedObject<TextTag>;
using GGUFSource = TypedObject<GGUFSourceTag>;

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
