#include "floe/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace floe {

namespace {

[[noreturn]] void fail(const std::string& why) { throw GGUFError("invalid GGUF file: " + why); }

// Bounds-checked little-endian reader over the file image.
class Cursor {
public:
    Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    size_t pos() const { return pos_; }
    size_t remaining() const { return size_ - pos_; }

    template <typename T>
    T read(const char* what) {
        if (remaining() < sizeof(T)) fail(std::string("truncated while reading ") + what);
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(const char* what, uint64_t max_len) {
        const uint64_t len = read<uint64_t>(what);
        if (len > max_len) fail(std::string(what) + " length " + std::to_string(len) + " exceeds the limit");
        if (len > remaining()) fail(std::string("truncated inside ") + what);
        std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return s;
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF): keys and tensor names must be text,
// so that every consumer (and Python) can take them as strings.
bool valid_utf8(const std::string& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if (c == 0xED) { len = 3; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) len = 3;
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else return false;
        if (n - i < len) return false;
        if (p[i + 1] < lo || p[i + 1] > hi) return false;
        for (size_t k = 2; k < len; ++k)
            if ((p[i + k] & 0xC0) != 0x80) return false;
        i += len;
    }
    return true;
}

// Bytes a value of this type takes at least in the file (0 for unknown types).
uint64_t min_encoded_size(GGUFType t) {
    switch (t) {
        case GGUFType::U8: case GGUFType::I8: case GGUFType::BOOL: return 1;
        case GGUFType::U16: case GGUFType::I16: return 2;
        case GGUFType::U32: case GGUFType::I32: case GGUFType::F32: return 4;
        case GGUFType::U64: case GGUFType::I64: case GGUFType::F64: case GGUFType::STRING: return 8;
        case GGUFType::ARRAY: return 12;
    }
    return 0;
}

GGUFValue::Scalar read_scalar(Cursor& c, GGUFType t, const GGUFLimits& limits, uint64_t* held) {
    switch (t) {
        case GGUFType::U8: return static_cast<uint64_t>(c.read<uint8_t>("u8"));
        case GGUFType::I8: return static_cast<int64_t>(c.read<int8_t>("i8"));
        case GGUFType::U16: return static_cast<uint64_t>(c.read<uint16_t>("u16"));
        case GGUFType::I16: return static_cast<int64_t>(c.read<int16_t>("i16"));
        case GGUFType::U32: return static_cast<uint64_t>(c.read<uint32_t>("u32"));
        case GGUFType::I32: return static_cast<int64_t>(c.read<int32_t>("i32"));
        case GGUFType::U64: return c.read<uint64_t>("u64");
        case GGUFType::I64: return c.read<int64_t>("i64");
        case GGUFType::F32: return static_cast<double>(c.read<float>("f32"));
        case GGUFType::F64: return c.read<double>("f64");
        case GGUFType::BOOL: {
            const uint8_t b = c.read<uint8_t>("bool");
            if (b > 1) fail("bool value " + std::to_string(b) + " is neither 0 nor 1");
            return b == 1;
        }
        case GGUFType::STRING: {
            std::string s = c.read_string("string value", limits.max_string);
            *held += s.size();
            return s;
        }
        case GGUFType::ARRAY: break;
    }
    fail("unknown value type " + std::to_string(static_cast<uint32_t>(t)));
}

GGUFType read_type(Cursor& c, const char* what) {
    const uint32_t t = c.read<uint32_t>(what);
    if (t > static_cast<uint32_t>(GGUFType::F64)) fail(std::string("unknown ") + what + " " + std::to_string(t));
    return static_cast<GGUFType>(t);
}

GGUFValue read_value(Cursor& c, const GGUFLimits& limits, uint64_t* held) {
    GGUFValue v;
    v.type = read_type(c, "value type");
    if (v.type != GGUFType::ARRAY) {
        v.scalar = read_scalar(c, v.type, limits, held);
        return v;
    }
    v.elem_type = read_type(c, "array element type");
    if (v.elem_type == GGUFType::ARRAY) fail("nested arrays are not supported");
    const uint64_t n = c.read<uint64_t>("array length");
    if (n > limits.max_array) fail("array length " + std::to_string(n) + " exceeds the limit");
    uint64_t min_bytes;
    if (mul_overflows(n, min_encoded_size(v.elem_type), &min_bytes) || min_bytes > c.remaining())
        fail("array of " + std::to_string(n) + " elements runs past the end of the file");
    *held += n * sizeof(GGUFValue::Scalar);
    if (*held > limits.max_metadata_bytes) fail("metadata exceeds the size limit");
    v.array.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) v.array.push_back(read_scalar(c, v.elem_type, limits, held));
    return v;
}

}  // namespace

bool ggml_type_size(uint32_t type, uint64_t* block_size, uint64_t* type_size) {
    struct Size { uint32_t type; uint64_t block, bytes; };
    static const Size sizes[] = {
        {0, 1, 4},      {1, 1, 2},      {2, 32, 18},    {3, 32, 20},    {6, 32, 22},    {7, 32, 24},
        {8, 32, 34},    {9, 32, 36},    {10, 256, 84},  {11, 256, 110}, {12, 256, 144}, {13, 256, 176},
        {14, 256, 210}, {15, 256, 292}, {16, 256, 66},  {17, 256, 74},  {18, 256, 98},  {19, 256, 50},
        {20, 32, 18},   {21, 256, 110}, {22, 256, 82},  {23, 256, 136}, {24, 1, 1},     {25, 1, 2},
        {26, 1, 4},     {27, 1, 8},     {28, 1, 8},     {29, 256, 56},  {30, 1, 2},     {34, 256, 54},
        {35, 256, 66},  {39, 32, 17},
    };
    for (const Size& s : sizes)
        if (s.type == type) {
            *block_size = s.block;
            *type_size = s.bytes;
            return true;
        }
    return false;
}

GGUFFile::GGUFFile(const std::string& path, const GGUFLimits& limits) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw GGUFError("cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw GGUFError(path + " is not a regular file");
    }
    if (static_cast<uint64_t>(st.st_size) > SIZE_MAX) {  // 32-bit targets
        ::close(fd);
        throw GGUFError(path + " is too large to map on this platform");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw GGUFError("cannot map " + path + ": " + std::strerror(errno));
        base_ = static_cast<const uint8_t*>(p);
        mapped_ = true;
    } else {
        ::close(fd);
    }
    try {
        parse(limits);
    } catch (...) {
        if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
        throw;
    }
}

GGUFFile::GGUFFile(const uint8_t* data, size_t size, const GGUFLimits& limits) : base_(data), size_(size) {
    parse(limits);
}

namespace {
// Parsed vocabularies are many small allocations that glibc keeps resident after they are freed: hand them back.
void release_freed_heap() {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}
}  // namespace

GGUFFile::~GGUFFile() {
    if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
    const bool large = metadata_bytes_ > (1u << 20);
    kv_.clear();
    if (large) release_freed_heap();
}

void GGUFFile::drop_metadata() {
    kv_.clear();
    release_freed_heap();
}

void GGUFFile::parse(const GGUFLimits& limits) {
    Cursor c(base_, size_);
    if (size_ == 0) fail("empty file");
    if (std::memcmp(base_, "GGUF", std::min<size_t>(size_, 4)) != 0) fail("bad magic (not a GGUF file)");
    c.read<uint32_t>("magic");
    version_ = c.read<uint32_t>("version");
    if (version_ == 0x02000000u || version_ == 0x03000000u) fail("big-endian GGUF files are not supported");
    if (version_ != 2 && version_ != 3) fail("unsupported version " + std::to_string(version_) + " (need 2 or 3)");
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // Each entry takes bytes in the file, so counts larger than the file are lies, whatever the limits say.
    if (n_tensors > limits.max_tensors || n_tensors > c.remaining() / 24)
        fail("tensor count " + std::to_string(n_tensors) + " is impossible or exceeds the limit");
    if (n_kv > limits.max_kv || n_kv > c.remaining() / 12)
        fail("metadata count " + std::to_string(n_kv) + " is impossible or exceeds the limit");

    uint64_t held = 0;
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.read_string("metadata key", 65535);  // spec: at most 2^16-1 bytes
        if (key.empty()) fail("empty metadata key");
        if (!valid_utf8(key)) fail("metadata key is not valid UTF-8");
        held += key.size();
        GGUFValue v = read_value(c, limits, &held);
        if (held > limits.max_metadata_bytes) fail("metadata exceeds the size limit");
        if (!kv_.emplace(key, std::move(v)).second) fail("duplicate metadata key '" + key + "'");
    }

    metadata_bytes_ = held;

    if (const GGUFValue* a = find("general.alignment")) {
        if (a->type != GGUFType::U32) fail("general.alignment must be a u32");
        alignment_ = std::get<uint64_t>(a->scalar);
        if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0 || alignment_ > (1u << 16))
            fail("general.alignment " + std::to_string(alignment_) + " is not a power of two up to 65536");
    }

    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GGUFTensor t;
        t.name = c.read_string("tensor name", 63);  // ggml: GGML_MAX_NAME = 64 with the terminating NUL
        if (t.name.empty()) fail("empty tensor name");
        if (!valid_utf8(t.name)) fail("tensor name is not valid UTF-8");
        const uint32_t n_dims = c.read<uint32_t>("tensor n_dims");
        if (n_dims < 1 || n_dims > 4) fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dims (1..4)");
        t.n_dims = static_cast<int>(n_dims);
        uint64_t elements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const int64_t ne = c.read<int64_t>("tensor dim");
            if (ne < 0) fail("tensor '" + t.name + "' has a negative dimension");
            t.ne[d] = ne;
            if (mul_overflows(elements, static_cast<uint64_t>(ne), &elements) || elements > uint64_t{INT64_MAX})
                fail("tensor '" + t.name + "' has too many elements (overflows int64)");
        }
        t.type = c.read<uint32_t>("tensor type");
        uint64_t block, bytes;
        if (!ggml_type_size(t.type, &block, &bytes))
            fail("tensor '" + t.name + "' has unknown type " + std::to_string(t.type));
        if (t.ne[0] % static_cast<int64_t>(block) != 0)
            fail("tensor '" + t.name + "' row of " + std::to_string(t.ne[0]) + " is not a multiple of the block size " +
                 std::to_string(block));
        // The byte size, and every stride a consumer derives from the shape (nb[i] = nb[i-1] * ne[i-1], with a zero
        // dimension counted as 1), must fit in int64: otherwise a huge logical tensor could wrap to a few bytes
        // (CVE-2025-53630 / GHSA-96jg-mvhq-q7q7 in ggml) and pass the bounds check below.
        uint64_t span = std::max<uint64_t>(static_cast<uint64_t>(t.ne[0]) / block, 1);
        bool overflow = mul_overflows(span, bytes, &span);
        for (int d = 1; d < t.n_dims && !overflow; ++d)
            overflow = mul_overflows(span, std::max<uint64_t>(static_cast<uint64_t>(t.ne[d]), 1), &span);
        if (overflow || span > uint64_t{INT64_MAX})
            fail("tensor '" + t.name + "' byte size overflows");
        t.nbytes = elements / block * bytes;  // <= span: no overflow
        t.offset = c.read<uint64_t>("tensor offset");
        if (t.offset % alignment_ != 0) fail("tensor '" + t.name + "' offset is not aligned");
        if (!tensor_index_.emplace(t.name, tensors_.size()).second) fail("duplicate tensor '" + t.name + "'");
        tensors_.push_back(std::move(t));
    }

    // The data section starts at the next aligned offset; every tensor must lie inside it, without overlaps.
    const uint64_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
    if (n_tensors > 0 && data_start > size_) fail("data section starts past the end of the file");
    const uint64_t data_size = n_tensors > 0 ? size_ - data_start : 0;
    std::vector<const GGUFTensor*> by_offset;  // tensors with data; an empty tensor overlaps nothing
    for (GGUFTensor& t : tensors_) {
        if (t.offset > data_size || t.nbytes > data_size - t.offset)
            fail("tensor '" + t.name + "' data lies outside the file");
        t.data = base_ + data_start + t.offset;
        if (t.nbytes > 0) by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](const GGUFTensor* a, const GGUFTensor* b) {
        return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;  // deterministic message
    });
    for (size_t i = 1; i < by_offset.size(); ++i)
        if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
            fail("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

const GGUFTensor* GGUFFile::find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
const GGUFValue& require(const GGUFFile& f, const std::string& key) {
    const GGUFValue* v = f.find(key);
    if (v == nullptr) throw GGUFError("missing metadata key '" + key + "'");
    if (v->type == GGUFType::ARRAY) throw GGUFError("metadata key '" + key + "' is an array");
    return *v;
}
}  // namespace

std::string GGUFFile::get_string(const std::string& key) const {
    const GGUFValue& v = require(*this, key);
    if (const auto* s = std::get_if<std::string>(&v.scalar)) return *s;
    throw GGUFError("metadata key '" + key + "' is not a string");
}

uint64_t GGUFFile::get_uint(const std::string& key) const {
    const GGUFValue& v = require(*this, key);
    if (const auto* u = std::get_if<uint64_t>(&v.scalar)) return *u;
    if (const auto* i = std::get_if<int64_t>(&v.scalar); i && *i >= 0) return static_cast<uint64_t>(*i);
    throw GGUFError("metadata key '" + key + "' is not a non-negative integer");
}

double GGUFFile::get_float(const std::string& key) const {
    const GGUFValue& v = require(*this, key);
    if (const auto* d = std::get_if<double>(&v.scalar)) return *d;
    if (const auto* u = std::get_if<uint64_t>(&v.scalar)) return static_cast<double>(*u);
    if (const auto* i = std::get_if<int64_t>(&v.scalar)) return static_cast<double>(*i);
    throw GGUFError("metadata key '" + key + "' is not a number");
}

uint64_t GGUFFile::get_uint(const std::string& key, uint64_t fallback) const {
    return find(key) ? get_uint(key) : fallback;
}

double GGUFFile::get_float(const std::string& key, double fallback) const {
    return find(key) ? get_float(key) : fallback;
}

}  // namespace floe
