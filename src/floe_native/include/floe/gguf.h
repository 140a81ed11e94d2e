// Hardened read-only GGUF (v2/v3) reader: the file is mmapped and every count, length, offset and size is
// checked before use, so a crafted file yields a GGUFError with the reason, never a crash or a huge allocation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace floe {

class GGUFError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// GGUF metadata value types (gguf spec numbering).
enum class GGUFType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

// A metadata value. Integers of every width are held as int64/uint64, floats as double; arrays keep their
// element type (arrays of arrays are rejected, as llama.cpp does).
struct GGUFValue {
    using Scalar = std::variant<uint64_t, int64_t, double, bool, std::string>;
    GGUFType type = GGUFType::U8;
    GGUFType elem_type = GGUFType::U8;  // for arrays
    Scalar scalar;
    std::vector<Scalar> array;
};

// Guarantees for every tensor of a parsed file: a valid UTF-8 name of 1..63 bytes, 1..4 dims, each >= 0, ne[0] a
// multiple of the type's block size, nbytes and every stride derived from ne (zero dims counted as 1) within
// int64, offset aligned, [data, data + nbytes) inside the file and disjoint from every other non-empty tensor.
struct GGUFTensor {
    std::string name;
    uint32_t type = 0;           // ggml type id
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous dimension
    uint64_t offset = 0;         // relative to the data section
    uint64_t nbytes = 0;
    const uint8_t* data = nullptr;  // inside the mapping
};

// Limits on what a file may ask us to allocate.
struct GGUFLimits {
    uint64_t max_tensors = 1u << 16;
    uint64_t max_kv = 1u << 16;
    uint64_t max_string = 1u << 24;         // bytes in one string
    uint64_t max_array = 1u << 24;          // elements in one array
    uint64_t max_metadata_bytes = 1u << 28; // all keys, strings and array elements, as held in memory
};

// Block size and bytes per block of a ggml type; false for unknown or removed types.
bool ggml_type_size(uint32_t type, uint64_t* block_size, uint64_t* type_size);

class GGUFFile {
public:
    explicit GGUFFile(const std::string& path, const GGUFLimits& limits = {});
    // Parse an in-memory image (not copied: must outlive the object). Used by the fuzz target.
    GGUFFile(const uint8_t* data, size_t size, const GGUFLimits& limits = {});
    ~GGUFFile();
    GGUFFile(const GGUFFile&) = delete;
    GGUFFile& operator=(const GGUFFile&) = delete;

    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    size_t file_size() const { return size_; }
    const std::map<std::string, GGUFValue>& metadata() const { return kv_; }
    const std::vector<GGUFTensor>& tensors() const { return tensors_; }

    const GGUFValue* find(const std::string& key) const;
    // Free the parsed metadata (vocabulary arrays are megabytes) once a reader has taken what it needs;
    // tensors stay valid.
    void drop_metadata();
    const GGUFTensor* find_tensor(const std::string& name) const;

    // Typed getters: throw GGUFError when the key is missing or has another type.
    std::string get_string(const std::string& key) const;
    uint64_t get_uint(const std::string& key) const;  // any unsigned or non-negative signed integer
    double get_float(const std::string& key) const;   // f32/f64 (or an integer)
    uint64_t get_uint(const std::string& key, uint64_t fallback) const;
    double get_float(const std::string& key, double fallback) const;

private:
    void parse(const GGUFLimits& limits);

    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t metadata_bytes_ = 0;  // as held in memory after parsing
    std::map<std::string, GGUFValue> kv_;
    std::vector<GGUFTensor> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

}  // namespace floe
