// Block formats, bit-compatible with ggml (ggml-common.h): 32 values per block, fp16 scales.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace floe {

constexpr int QK = 32;  // values per quantized block

using fp16_t = uint16_t;  // IEEE binary16 bits

struct block_q4_0 {  // x = d * (q - 8), q in [0, 15]
    fp16_t d;
    uint8_t qs[QK / 2];  // low nibbles: values 0..15, high nibbles: values 16..31
};
struct block_q4_1 {  // x = d * q + m, q in [0, 15]
    fp16_t d;
    fp16_t m;
    uint8_t qs[QK / 2];
};
struct block_q8_0 {  // x = d * q
    fp16_t d;
    int8_t qs[QK];
};
struct block_q8_1 {  // activation blocks for q4_1: s = d * sum(q)
    fp16_t d;
    fp16_t s;
    int8_t qs[QK];
};
static_assert(sizeof(block_q4_0) == 18, "q4_0 block must match ggml");
static_assert(sizeof(block_q4_1) == 20, "q4_1 block must match ggml");
static_assert(sizeof(block_q8_0) == 34, "q8_0 block must match ggml");
static_assert(sizeof(block_q8_1) == 36, "q8_1 block must match ggml");

// Tensor types; the values are ggml's type ids so GGUF files map directly.
enum class QType : int { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q8_1 = 9 };

struct TypeTraits {
    const char* name;
    int block_size;     // values per block
    size_t type_size;   // bytes per block
    QType activation;   // what the other operand of a dot product is quantized to
};

constexpr TypeTraits type_traits(QType t) {
    switch (t) {
        case QType::F32: return {"f32", 1, 4, QType::F32};
        case QType::F16: return {"f16", 1, 2, QType::F32};
        case QType::Q4_0: return {"q4_0", QK, sizeof(block_q4_0), QType::Q8_0};
        case QType::Q4_1: return {"q4_1", QK, sizeof(block_q4_1), QType::Q8_1};
        case QType::Q8_0: return {"q8_0", QK, sizeof(block_q8_0), QType::Q8_0};
        case QType::Q8_1: return {"q8_1", QK, sizeof(block_q8_1), QType::Q8_1};
    }
    return {"?", 0, 0, QType::F32};
}

// Bytes of one row of n values (n must be a multiple of the block size).
constexpr size_t row_size(QType t, int64_t n) {
    return static_cast<size_t>(n / type_traits(t).block_size) * type_traits(t).type_size;
}

// Portable fp16 <-> fp32, round-to-nearest-even, as F16C's vcvtps2ph with imm 0 (what ggml uses).
inline float fp16_to_fp32(fp16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);  // inf / nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal: normalize
        int e = -1;
        do { man <<= 1; ++e; } while ((man & 0x400) == 0);
        bits = sign | ((112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline fp16_t fp32_to_fp16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return static_cast<fp16_t>(sign | 0x7e00 | ((absx >> 13) & 0x3ff));  // nan
    if (absx < 0x38800000u) {  // result is subnormal or zero: align to 2^-24 units
        if (absx < 0x33000000u) return static_cast<fp16_t>(sign);  // < 2^-25 rounds to 0
        const uint32_t e = absx >> 23;
        const uint32_t m = (absx & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;  // value = m * 2^(e-150) = (m >> shift) units of 2^-24
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) ++r;
        return static_cast<fp16_t>(sign | r);
    }
    uint32_t r = ((absx - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
    const uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;  // carries into the exponent correctly
    if (r >= 0x7c00) r = 0x7c00;  // overflow to inf
    return static_cast<fp16_t>(sign | r);
}

}  // namespace floe
