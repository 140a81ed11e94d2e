// The kernel variants the native tests run: every variant this CPU can run, plus on x86 with AVX2 the emulated
// VNNI table (vnni_emu.cpp), which tests the VNNI code path where the CPU has no VNNI.
#pragma once
#include <vector>

#include "floe/kernels.h"

namespace floe {
const Kernels* kernels_vnni_emu();  // tests/native/vnni_emu.cpp (x86 builds only)
}

namespace floe_test {

inline std::vector<const floe::Kernels*> kernel_variants() {
    std::vector<const floe::Kernels*> out = floe::available_variants();  // ref last
#if defined(__x86_64__) || defined(_M_X64)
    const floe::CpuFeatures& f = floe::cpu_features();
    if (f.avx2 && f.fma && f.f16c) out.insert(out.end() - 1, floe::kernels_vnni_emu());
#endif
    return out;
}

}  // namespace floe_test
