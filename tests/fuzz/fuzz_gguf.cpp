// libFuzzer target for the GGUF reader: any input must parse or throw GGUFError; nothing else (crash, ASan/UBSan
// report, other exception, huge allocation) is allowed. Build and run: tests/fuzz/run_fuzz.sh <seconds>.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "floe/gguf.h"

namespace {

void require(bool ok) {
    if (!ok) std::abort();  // a broken invariant is a finding, like a crash
}

uint64_t walk(const floe::GGUFFile& f, const uint8_t* data, size_t size) {
    uint64_t sum = f.version() + f.alignment();
    require(f.alignment() > 0 && (f.alignment() & (f.alignment() - 1)) == 0);
    for (const auto& [key, v] : f.metadata()) {
        sum += key.size();
        for (const auto& s : v.array)
            if (const auto* str = std::get_if<std::string>(&s)) sum += str->size();
        if (v.type == floe::GGUFType::ARRAY) continue;
        try {  // typed getters: value or GGUFError
            sum += f.get_uint(key);
            sum += static_cast<uint64_t>(f.get_float(key) != 0.0);
            sum += f.get_string(key).size();
        } catch (const floe::GGUFError&) {
        }
    }
    for (const floe::GGUFTensor& t : f.tensors()) {
        uint64_t block = 0, type_size = 0;
        require(floe::ggml_type_size(t.type, &block, &type_size));
        require(t.n_dims >= 1 && t.n_dims <= 4 && t.offset % f.alignment() == 0);
        uint64_t elements = 1;
        for (int d = 0; d < 4; ++d) {
            require(t.ne[d] >= 0 && (d < t.n_dims || t.ne[d] == 1));
            require(!__builtin_mul_overflow(elements, static_cast<uint64_t>(t.ne[d]), &elements));
        }
        uint64_t nbytes = 0;  // the true byte size, without wrapping
        require(t.ne[0] % static_cast<int64_t>(block) == 0 && elements <= uint64_t{INT64_MAX});
        require(!__builtin_mul_overflow(elements / block, type_size, &nbytes) && nbytes == t.nbytes);
        require(t.data >= data && t.nbytes <= size && t.data - data <= static_cast<ptrdiff_t>(size - t.nbytes));
        require(f.find_tensor(t.name) == &t);
        for (uint64_t i = 0; i < t.nbytes; ++i) sum += t.data[i];  // ASan checks every byte is inside the input
    }
    return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        floe::GGUFFile f(data, size);
        volatile uint64_t sink = walk(f, data, size);
        (void)sink;
    } catch (const floe::GGUFError&) {
        // the expected outcome for almost every input
    }
    return 0;
}
