#include <cstdlib>
#include <cstring>

#include "check.h"
#include "floe/kernels.h"
#include "test_variants.h"

int main(int argc, char** argv) {
    std::printf("variants:");
    for (const floe::Kernels* k : floe::available_variants()) std::printf(" %s", k->name);
    std::printf("  (active: %s; tested:", floe::active_kernels().name);
    for (const floe::Kernels* k : floe_test::kernel_variants()) std::printf(" %s", k->name);
    std::printf(")\n");
    // CI states which variant the CPU (or qemu's -cpu) must get, so a dispatch regression cannot pass silently.
    if (const char* want = std::getenv("FLOE_EXPECT_VARIANT"); want && *want &&
        std::strcmp(want, floe::active_kernels().name) != 0) {
        std::printf("FAIL dispatch: expected variant %s, got %s\n", want, floe::active_kernels().name);
        return 1;
    }
    return floe_test::run_all(argc > 1 ? argv[1] : nullptr);
}
