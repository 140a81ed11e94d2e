// Runtime CPU feature probe and variant choice. Compiled without any -m flags: it must run on every CPU.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "floe/kernels.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define FLOE_X86 1
#elif defined(__aarch64__) || defined(__arm__)
#include <sys/auxv.h>
#define FLOE_ARM 1
#endif

namespace floe {

// Variants compiled out of this build (see CMakeLists.txt) report nullptr.
#if !FLOE_HAVE_AVX2
const Kernels* kernels_avx2() { return nullptr; }
#endif
#if !FLOE_HAVE_AVX512
const Kernels* kernels_avx512() { return nullptr; }
#endif
#if !FLOE_HAVE_AVX512_VNNI
const Kernels* kernels_avx512_vnni() { return nullptr; }
#endif
#if !FLOE_HAVE_AVX_VNNI
const Kernels* kernels_avx_vnni() { return nullptr; }
#endif
#if !FLOE_HAVE_NEON
const Kernels* kernels_neon() { return nullptr; }
#endif
#if !FLOE_HAVE_NEON_DOTPROD
const Kernels* kernels_neon_dotprod() { return nullptr; }
#endif
#if !FLOE_HAVE_NEON_I8MM
const Kernels* kernels_neon_i8mm() { return nullptr; }
#endif

namespace {

#if FLOE_X86
uint64_t xgetbv0() {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures probe() {
    CpuFeatures f;
    f.arch = "x86_64";
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    if (!osxsave || !avx) return f;
    const uint64_t xcr0 = xgetbv0();
    const bool os_avx = (xcr0 & 0x6) == 0x6;         // XMM + YMM state saved by the OS
    const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
    if (!os_avx) return f;
    if (__get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_subleaf = a;
    f.avx2 = b & (1u << 5);
    if (os_avx512) {
        f.avx512f = b & (1u << 16);
        f.avx512bw = b & (1u << 30);
        f.avx512vl = b & (1u << 31);
        f.avx512vnni = c & (1u << 11);
    }
    // Only the bits asked for: AMX (advertised by some VMs that fault on it) is neither probed nor used.
    if (max_subleaf >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f.avxvnni = a & (1u << 4);  // VEX-encoded, needs the YMM state only
    }
    return f;
}
#elif FLOE_ARM
// Bits defined here because old libc headers lack them.
#if defined(__aarch64__)
constexpr unsigned long kHwcapAsimd = 1ul << 1, kHwcapFphp = 1ul << 9, kHwcapAsimdDp = 1ul << 20;
constexpr unsigned long kHwcap2I8mm = 1ul << 13;
#endif

CpuFeatures probe() {
    CpuFeatures f;
    const unsigned long hw = getauxval(AT_HWCAP);
#if defined(__aarch64__)
    f.arch = "aarch64";
    const unsigned long hw2 = getauxval(AT_HWCAP2);
    f.neon = hw & kHwcapAsimd;
    f.fp16 = hw & kHwcapFphp;
    f.dotprod = hw & kHwcapAsimdDp;
    f.i8mm = hw2 & kHwcap2I8mm;
#else
    f.arch = "armv7";
    f.neon = hw & (1ul << 12);  // HWCAP_NEON
#endif
    return f;
}
#else
CpuFeatures probe() { return {}; }
#endif

bool force_ref() {
    const char* v = std::getenv("FLOE_FORCE_REF");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = probe();
    return f;
}

std::vector<const Kernels*> available_variants() {
    const CpuFeatures& f = cpu_features();
    std::vector<const Kernels*> out;
    const bool avx2 = f.avx2 && f.fma && f.f16c, avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl;
    if (avx512 && f.avx512vnni && kernels_avx512_vnni()) out.push_back(kernels_avx512_vnni());
    if (avx512 && kernels_avx512()) out.push_back(kernels_avx512());
    if (avx2 && f.avxvnni && kernels_avx_vnni()) out.push_back(kernels_avx_vnni());
    if (avx2 && kernels_avx2()) out.push_back(kernels_avx2());
    if (f.neon && f.dotprod && f.i8mm && kernels_neon_i8mm()) out.push_back(kernels_neon_i8mm());
    if (f.neon && f.dotprod && kernels_neon_dotprod()) out.push_back(kernels_neon_dotprod());
    if (f.neon && kernels_neon()) out.push_back(kernels_neon());
    out.push_back(&kernels_ref());
    return out;
}

namespace {

// FLOE_FORCE_VARIANT=name (tests, benchmarks), else FLOE_FORCE_REF, else the best.
const Kernels& choose_variant() {
    const char* name = std::getenv("FLOE_FORCE_VARIANT");
    if (name == nullptr || *name == '\0') return force_ref() ? kernels_ref() : *available_variants().front();
    if (const Kernels* k = find_variant(name)) return *k;
    std::string have;
    for (const Kernels* k : available_variants()) have += std::string(have.empty() ? "" : ", ") + k->name;
    throw std::runtime_error(std::string("FLOE_FORCE_VARIANT=") + name + ": not a variant this CPU can run (available: " +
                             have + ")");
}

}  // namespace

const Kernels& active_kernels() {
    static const Kernels& k = choose_variant();
    return k;
}

const Kernels* find_variant(const char* name) {
    for (const Kernels* k : available_variants())
        if (std::strcmp(k->name, name) == 0) return k;
    return nullptr;
}

}  // namespace floe
