// Python view of the BPE tokenizer: Tokenizer (ids <-> bytes) and StreamDecoder (ids -> str as characters
// complete). Text may be str (UTF-8 encoded) or bytes; ids outside the vocabulary raise ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bind_common.h"
#include "floe/gguf.h"
#include "floe/tokenizer.h"
#include "floe/unicode.h"

namespace py = pybind11;
using namespace floe;

namespace {

// str -> its UTF-8 (a str with lone surrogates raises UnicodeEncodeError); bytes-like -> the bytes.
std::string text_bytes(const py::handle& text) {
    if (py::isinstance<py::str>(text)) {
        Py_ssize_t size = 0;
        const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
        if (data == nullptr) throw py::error_already_set();
        return std::string(data, static_cast<size_t>(size));
    }
    if (py::isinstance<py::bytes>(text) || py::isinstance<py::bytearray>(text) || py::isinstance<py::memoryview>(text))
        return std::string(py::bytes(py::reinterpret_borrow<py::object>(text)));
    const std::string type = py::str(py::type::handle_of(text).attr("__name__"));
    throw py::type_error("text must be str or bytes, not " + type);
}

int32_t checked_id(const Tokenizer& tok, int64_t id) {
    if (id < 0 || id >= tok.n_vocab())
        throw py::value_error("token id " + std::to_string(id) + " is out of range [0, " +
                              std::to_string(tok.n_vocab()) + ")");
    return static_cast<int32_t>(id);
}

std::vector<int32_t> checked_ids(const Tokenizer& tok, const std::vector<int64_t>& ids) {
    std::vector<int32_t> out;
    out.reserve(ids.size());
    for (int64_t id : ids) out.push_back(checked_id(tok, id));
    return out;
}

std::optional<int32_t> optional_id(int32_t id) {
    return id == Tokenizer::kNoToken ? std::nullopt : std::optional<int32_t>(id);
}

py::str decode_replace(const std::string& bytes) {
    PyObject* s = PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace");
    if (s == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(s);
}

std::shared_ptr<Tokenizer> from_gguf(const bind::GGUFSource& source) {
    if (py::isinstance<GGUFFile>(source)) {
        const GGUFFile& file = source.cast<const GGUFFile&>();
        py::gil_scoped_release release;
        return std::make_shared<Tokenizer>(file);
    }
    const std::string path = py::str(py::module_::import("os").attr("fspath")(source));
    py::gil_scoped_release release;
    GGUFFile file(path);
    return std::make_shared<Tokenizer>(file);
}

}  // namespace

void bind_tokenizer(py::module_& m) {
    py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(
        m, "Tokenizer", "Byte-level BPE tokenizer from GGUF metadata; ids equal llama.cpp's for the same model.")
        .def_static("from_gguf", &from_gguf, py::arg("source"),
                    "Build from a GGUF path or an open GGUFFile (only the tokenizer.* metadata is read).")
        .def(
            "tokenize",
            [](const Tokenizer& t, const bind::Text& text, bool add_bos, bool special) {
                const std::string bytes = text_bytes(text);
                py::gil_scoped_release release;
                return t.tokenize(bytes, add_bos, special);
            },
            py::arg("text"), py::arg("add_bos") = true, py::arg("special") = true,
            "Token ids of text (str or bytes). add_bos adds BOS/EOS only as the model asks "
            "(tokenizer.ggml.add_bos_token / add_eos_token), like llama.cpp's add_special. special: control "
            "tokens written in the text (e.g. '<|im_start|>') become their ids.")
        .def(
            "detokenize",
            [](const Tokenizer& t, const std::vector<int64_t>& ids, bool special) {
                const std::vector<int32_t> checked = checked_ids(t, ids);
                std::string out;
                {
                    py::gil_scoped_release release;
                    out = t.detokenize(checked, special);
                }
                return py::bytes(out);
            },
            py::arg("ids"), py::arg("special") = false,
            "Bytes of the ids; control tokens are rendered as their text if special, else skipped.")
        .def(
            "token_bytes", [](const Tokenizer& t, int64_t id) { return py::bytes(t.token_bytes(checked_id(t, id))); },
            py::arg("id"), "The bytes token id decodes to (control tokens rendered as their text).")
        .def(
            "token_text", [](const Tokenizer& t, int64_t id) { return py::bytes(t.token_text(checked_id(t, id))); },
            py::arg("id"), "The token's string as stored in the vocabulary (byte-level encoded).")
        .def(
            "is_control",
            [](const Tokenizer& t, int64_t id) { return (t.token_attr(checked_id(t, id)) & kAttrControl) != 0; },
            py::arg("id"), "True if the token is a control token.")
        .def(
            "is_eog", [](const Tokenizer& t, int64_t id) { return t.is_eog(checked_id(t, id)); }, py::arg("id"),
            "True if the token ends generation (as llama.cpp's llama_vocab_is_eog).")
        .def(
            "_split_words",
            [](const Tokenizer& t, const bind::Text& text) {
                const Words w = PreTokenizer(t.pre()).split(text_bytes(text));
                py::typing::List<py::bytes> out;
                size_t begin = 0;
                for (size_t end : w.ends) {
                    out.append(py::bytes(w.text.substr(begin, end - begin)));
                    begin = end;
                }
                return out;
            },
            py::arg("text"), "Pre-tokenizer words of raw text (no special-token handling); for debugging.")
        .def_property_readonly("n_vocab", &Tokenizer::n_vocab, "Tokens in the vocabulary.")
        .def_property_readonly("bos_id", [](const Tokenizer& t) { return optional_id(t.bos_id()); }, "BOS id or None.")
        .def_property_readonly("eos_id", [](const Tokenizer& t) { return optional_id(t.eos_id()); }, "EOS id or None.")
        .def_property_readonly("unk_id", [](const Tokenizer& t) { return optional_id(t.unk_id()); }, "UNK id or None.")
        .def_property_readonly("pad_id", [](const Tokenizer& t) { return optional_id(t.pad_id()); }, "PAD id or None.")
        .def_property_readonly("add_bos", &Tokenizer::add_bos, "The model's tokenizer.ggml.add_bos_token.")
        .def_property_readonly("add_eos", &Tokenizer::add_eos, "The model's tokenizer.ggml.add_eos_token.")
        .def_property_readonly("eog_ids", &Tokenizer::eog_ids, "Ids that end generation, sorted.")
        .def_property_readonly("pre", &Tokenizer::pre, "Pre-tokenizer name (tokenizer.ggml.pre).")
        .def("__len__", &Tokenizer::n_vocab)
        .def("__repr__", [](const Tokenizer& t) {
            return "<Tokenizer pre='" + t.pre() + "' n_vocab=" + std::to_string(t.n_vocab()) + ">";
        });

    py::class_<StreamDecoder>(m, "StreamDecoder",
                              "Incremental detokenizer: feed(id) returns only complete UTF-8 characters.")
        .def(py::init([](std::shared_ptr<Tokenizer> tokenizer, bool special) {
                 return std::make_unique<StreamDecoder>(std::move(tokenizer), special);
             }),
             py::arg("tokenizer"), py::arg("special") = false)
        .def(
            "feed",
            [](StreamDecoder& d, int64_t id) {
                if (id < INT32_MIN || id > INT32_MAX)  // StreamDecoder::feed range-checks the rest
                    throw py::value_error("token id " + std::to_string(id) + " is out of range");
                return decode_replace(d.feed(static_cast<int32_t>(id)));
            },
            py::arg("id"), "Add a token; return the text of the characters it completes.")
        .def("flush", [](StreamDecoder& d) { return decode_replace(d.flush()); },
             "Return the held-back incomplete tail (as U+FFFD) and reset.")
        .def_property_readonly("pending", &StreamDecoder::pending, "Bytes held back.");

    m.def("_unicode_flags_table", [] {
        py::array_t<uint16_t> out(unicode::kMaxCodepoint + 1);
        uint16_t* p = out.mutable_data();
        for (uint32_t cp = 0; cp <= unicode::kMaxCodepoint; ++cp) p[cp] = unicode::flags(cp);
        return out;
    }, "Code-point class flags for U+0000..U+10FFFF (tests compare them with llama.cpp's).");
    m.attr("_unicode_version") = unicode::data_version();
}
