// Native GGUF reader tests, meant to run under ASan + UBSan (host-asan preset) and on the cross targets:
//   floe_gguf_tests <corpus dir>   (tests/gguf_corpus, written by tests/gguf_crafted.py)
// Every corpus file listed in MANIFEST.tsv is parsed from an exactly-sized heap buffer and through the mmap path;
// bad files must throw GGUFError with the expected reason, good ones must parse and expose in-bounds tensors.
// Cases built here in C++: truncation at every offset and byte corruption of each good file, the tensor
// byte-size overflow (CVE-2025-53630 class), the limits, the typed getters.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <dirent.h>

#include "check.h"
#include "floe/gguf.h"

using floe::GGUFError;
using floe::GGUFFile;
using Bytes = std::vector<uint8_t>;

namespace {

std::string g_corpus;

struct Entry {
    std::string file;
    bool ok;
    std::string needle;
};

std::vector<Entry> manifest() {
    std::vector<Entry> out;
    std::ifstream in(g_corpus + "/MANIFEST.tsv");
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream fields(line);
        Entry e;
        std::string kind;
        std::getline(fields, e.file, '\t');
        std::getline(fields, kind, '\t');
        std::getline(fields, e.needle);
        e.ok = kind == "ok";
        out.push_back(e);
    }
    return out;
}

Bytes read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Touch every byte the parsed file points at and check the invariants the reader promises.
uint64_t walk(const GGUFFile& f) {
    uint64_t sum = 0;
    for (const auto& [key, v] : f.metadata()) {
        sum += key.size() + v.array.size();
        if (v.type != floe::GGUFType::ARRAY) {
            try {
                sum += f.get_uint(key);
            } catch (const GGUFError&) {
            }
        }
    }
    for (const floe::GGUFTensor& t : f.tensors()) {
        uint64_t block = 0, size = 0;
        CHECK(floe::ggml_type_size(t.type, &block, &size), "tensor %s has type %u", t.name.c_str(), t.type);
        CHECK(t.n_dims >= 1 && t.n_dims <= 4 && t.offset % f.alignment() == 0, "tensor %s", t.name.c_str());
        CHECK(f.find_tensor(t.name) == &t, "find_tensor(%s)", t.name.c_str());
        for (uint64_t i = 0; i < t.nbytes; ++i) sum += t.data[i];  // ASan: must stay inside the image
    }
    return sum;
}

// Parse from an exactly-sized heap copy (so ASan sees any over-read); returns "" or the error message.
std::string parse(const uint8_t* data, size_t n, const floe::GGUFLimits& limits = {}) {
    std::unique_ptr<uint8_t[]> copy(new uint8_t[n > 0 ? n : 1]);
    if (n > 0) std::memcpy(copy.get(), data, n);
    try {
        GGUFFile f(copy.get(), n, limits);
        walk(f);
        return "";
    } catch (const GGUFError& e) {
        return e.what();
    }
}

std::string parse(const Bytes& b, const floe::GGUFLimits& limits = {}) { return parse(b.data(), b.size(), limits); }

// ---- a tiny little-endian GGUF writer -----------------------------------------------------------------------
struct W {
    Bytes b;
    template <typename T>
    W& put(T v) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        b.insert(b.end(), p, p + sizeof(T));
        return *this;
    }
    W& str(const std::string& s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    W& header(uint64_t n_tensors, uint64_t n_kv) {
        b.insert(b.end(), {'G', 'G', 'U', 'F'});
        return put<uint32_t>(3).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
    }
    W& tensor(const std::string& name, std::vector<int64_t> dims, uint32_t type, uint64_t offset) {
        str(name).put<uint32_t>(static_cast<uint32_t>(dims.size()));
        for (int64_t d : dims) put<int64_t>(d);
        return put<uint32_t>(type).put<uint64_t>(offset);
    }
    W& pad(size_t alignment = 32) {
        while (b.size() % alignment) b.push_back(0);
        return *this;
    }
    W& fill(size_t n) {
        for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(i * 7));
        return *this;
    }
};

Bytes small_valid() {
    W w;
    w.header(2, 3);
    w.str("general.architecture").put<uint32_t>(8).str("llama");
    w.str("llama.block_count").put<uint32_t>(4).put<uint32_t>(2);
    w.str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(2).str("<s>").str("</s>");
    w.tensor("a", {8, 2}, 0, 0).tensor("b", {64}, 2, 64).pad().fill(64 + 36);
    return w.b;
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace

TEST(gguf_corpus_manifest) {
    const std::vector<Entry> entries = manifest();
    CHECK(entries.size() >= 50, "MANIFEST.tsv in %s lists %zu files", g_corpus.c_str(), entries.size());
    std::set<std::string> listed;
    for (const Entry& e : entries) listed.insert(e.file);
    DIR* dir = opendir(g_corpus.c_str());
    CHECK(dir != nullptr, "cannot open %s", g_corpus.c_str());
    if (dir == nullptr) return;
    while (dirent* d = readdir(dir)) {
        const std::string name = d->d_name;
        if (name.size() > 5 && name.compare(name.size() - 5, 5, ".gguf") == 0)
            CHECK(listed.count(name) == 1, "%s is not in MANIFEST.tsv", name.c_str());
    }
    closedir(dir);
}

TEST(gguf_corpus_files) {
    for (const Entry& e : manifest()) {
        const std::string path = g_corpus + "/" + e.file;
        const Bytes data = read_file(path);
        const std::string from_memory = parse(data);
        std::string from_path;
        try {
            GGUFFile f(path);
            walk(f);
            CHECK(f.file_size() == data.size(), "%s: size", e.file.c_str());
        } catch (const GGUFError& err) {
            from_path = err.what();
        }
        if (e.ok) {
            CHECK(from_memory.empty() && from_path.empty(), "%s: rejected: %s", e.file.c_str(), from_memory.c_str());
        } else {
            CHECK(contains(from_memory, e.needle), "%s: got '%s', want '%s'", e.file.c_str(), from_memory.c_str(),
                  e.needle.c_str());
            CHECK(from_path == from_memory || (data.empty() && contains(from_path, "empty file")),
                  "%s: path '%s' vs memory '%s'", e.file.c_str(), from_path.c_str(), from_memory.c_str());
        }
    }
}

// Every prefix of a good file is rejected until its last tensor's data is complete; after that it parses.
TEST(gguf_truncation_every_offset) {
    std::vector<Bytes> files = {small_valid()};
    for (const Entry& e : manifest())
        if (e.ok) files.push_back(read_file(g_corpus + "/" + e.file));
    for (const Bytes& data : files) {
        GGUFFile full(data.data(), data.size());
        size_t required = 0;  // bytes needed: the tensor data, else the end of the kvs (unknown here: 1)
        for (const auto& t : full.tensors())
            required = std::max<size_t>(required, static_cast<size_t>(t.data - data.data()) + t.nbytes);
        size_t first_ok = data.size();
        for (size_t n = 0; n < data.size(); ++n) {
            const std::string err = parse(data.data(), n);
            if (err.empty() && first_ok == data.size()) first_ok = n;
            if (!err.empty())
                CHECK(first_ok == data.size(), "prefix %zu rejected after prefix %zu parsed", n, first_ok);
        }
        CHECK(first_ok >= required, "prefix of %zu bytes parsed, %zu needed", first_ok, required);
    }
}

// Overwrite every byte before the data section of the good files with a few values: each result parses or throws
// GGUFError.
TEST(gguf_byte_corruption) {
    std::vector<Bytes> files = {small_valid()};
    for (const Entry& e : manifest())
        if (e.ok) files.push_back(read_file(g_corpus + "/" + e.file));
    int parsed = 0, rejected = 0;
    for (const Bytes& data : files) {
        size_t end = data.size();  // corrupt the header, kvs and tensor infos, not the tensor data
        {
            GGUFFile f(data.data(), data.size());
            for (const auto& t : f.tensors()) end = std::min<size_t>(end, static_cast<size_t>(t.data - data.data()));
        }
        for (size_t i = 0; i < end; ++i) {
            const uint8_t b = data[i];
            for (uint8_t v : {uint8_t{0x00}, uint8_t{0xFF}, uint8_t{0x80}, uint8_t(b + 1), uint8_t(b ^ 0x40)}) {
                Bytes m = data;
                m[i] = v;
                (parse(m).empty() ? parsed : rejected)++;
            }
        }
    }
    CHECK(parsed > 0 && rejected > 0, "parsed %d, rejected %d", parsed, rejected);
}

// CVE-2025-53630 / GHSA-96jg-mvhq-q7q7 class: a logical size that wraps must not become a small byte size.
TEST(gguf_nbytes_overflow) {
    struct Shape {
        std::vector<int64_t> dims;
        uint32_t type;
        const char* why;
    };
    const Shape shapes[] = {
        {{int64_t{1} << 62}, 0, "byte size overflows"},                     // 2^62 f32 = 2^64 bytes -> 0
        {{(int64_t{1} << 62) + 8}, 0, "byte size overflows"},               // -> 32 bytes
        {{int64_t{1} << 31, int64_t{1} << 30}, 27, "byte size overflows"},  // i64
        {{int64_t{1} << 62, 0}, 0, "byte size overflows"},                  // empty, but the row stride wraps
        {{int64_t{1} << 32, int64_t{1} << 32, 2}, 0, "too many elements"},  // element count wraps to 0
        {{INT64_MAX, 3}, 24, "too many elements"},
        {{INT64_MAX - 31}, 8, "byte size overflows"},                       // q8_0: fits uint64, not int64
    };
    for (const Shape& s : shapes) {
        W w;
        w.header(1, 0).tensor("w", s.dims, s.type, 0).pad().fill(64);
        const std::string err = parse(w.b);
        CHECK(contains(err, s.why), "dims[0]=%lld type %u: '%s'", static_cast<long long>(s.dims[0]), s.type,
              err.c_str());
    }
    W ok;  // the largest f32 row whose byte size fits in int64 is accepted up to the bounds check
    ok.header(1, 0).tensor("w", {(int64_t{1} << 61) - 1}, 0, 0).pad().fill(64);
    CHECK(contains(parse(ok.b), "data lies outside the file"), "%s", parse(ok.b).c_str());
}

TEST(gguf_limits) {
    const Bytes data = small_valid();
    floe::GGUFLimits l;
    CHECK(parse(data, l).empty(), "%s", parse(data, l).c_str());
    l.max_tensors = 1;
    CHECK(contains(parse(data, l), "tensor count 2 is impossible or exceeds the limit"), "%s", parse(data, l).c_str());
    l = {};
    l.max_kv = 2;
    CHECK(contains(parse(data, l), "metadata count 3"), "%s", parse(data, l).c_str());
    l = {};
    l.max_string = 4;
    CHECK(contains(parse(data, l), "string value length 5 exceeds the limit"), "%s", parse(data, l).c_str());
    l = {};
    l.max_array = 1;
    CHECK(contains(parse(data, l), "array length 2 exceeds the limit"), "%s", parse(data, l).c_str());
    l = {};
    l.max_metadata_bytes = 64;
    CHECK(contains(parse(data, l), "metadata exceeds the size limit"), "%s", parse(data, l).c_str());
}

TEST(gguf_getters_and_paths) {
    const Bytes data = small_valid();
    GGUFFile f(data.data(), data.size());
    CHECK(f.version() == 3 && f.alignment() == 32 && f.tensors().size() == 2, "header");
    CHECK(f.get_string("general.architecture") == "llama", "arch");
    CHECK(f.get_uint("llama.block_count") == 2 && f.get_uint("missing", 7) == 7, "uint");
    CHECK(f.get_float("llama.block_count") == 2.0 && f.get_float("missing", 0.5) == 0.5, "float");
    int thrown = 0;
    for (const char* key : {"missing", "tokenizer.ggml.tokens"}) {
        try {
            f.get_string(key);
        } catch (const GGUFError&) {
            ++thrown;
        }
    }
    try {
        f.get_uint("general.architecture");
    } catch (const GGUFError&) {
        ++thrown;
    }
    CHECK(thrown == 3, "getters threw %d times", thrown);
    CHECK(f.find_tensor("b") != nullptr && f.find_tensor("b")->nbytes == 36 && f.find_tensor("c") == nullptr, "find");

    for (const std::string& path : {std::string("/nonexistent/x.gguf"), g_corpus, std::string("/dev/null")}) {
        try {
            GGUFFile bad(path);
            CHECK(false, "%s parsed", path.c_str());
        } catch (const GGUFError& e) {
            CHECK(contains(e.what(), "cannot open") || contains(e.what(), "not a regular file"), "%s: %s",
                  path.c_str(), e.what());
        }
    }
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s <corpus dir (tests/gguf_corpus)> [test name filter]\n", argv[0]);
        return 2;
    }
    g_corpus = argv[1];
    return floe_test::run_all(argc > 2 ? argv[2] : nullptr);
}
