// The generated code-point class table (unicode_data.cpp, made by tools/gen_unicode_data.py). Private to
// unicode.cpp; everything else uses floe::unicode::flags().
#pragma once
#include <cstddef>
#include <cstdint>

namespace floe::unicode::data {

struct FlagRange {
    uint32_t first;  // first code point of the run
    uint16_t flags;  // floe::unicode::Flag bits
};

extern const char kVersion[];
extern const size_t kRangeCount;
extern const FlagRange kRanges[];

}  // namespace floe::unicode::data
