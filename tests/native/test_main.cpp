#include <cstdlib>
#include <cstring>

#include "check.h"
#include "floe/kernels.h"

namespace floe_test {
std::vector<Case>& registry() {
    static std::vector<Case> cases;
    return cases;
}
int failures = 0;
}  // namespace floe_test

int main(int argc, char** argv) {
    std::printf("variants:");
    for (const floe::Kernels* k : floe::available_variants()) std::printf(" %s", k->name);
    std::printf("  (active: %s)\n", floe::active_kernels().name);
    // CI states which variant the CPU (or qemu's -cpu) must get, so a dispatch regression cannot pass silently.
    if (const char* want = std::getenv("FLOE_EXPECT_VARIANT"); want && *want &&
        std::strcmp(want, floe::active_kernels().name) != 0) {
        std::printf("FAIL dispatch: expected variant %s, got %s\n", want, floe::active_kernels().name);
        return 1;
    }
    int run = 0;
    for (const auto& c : floe_test::registry()) {
        if (argc > 1 && std::strstr(c.name, argv[1]) == nullptr) continue;
        const int before = floe_test::failures;
        c.fn();
        ++run;
        std::printf("%s %s\n", floe_test::failures == before ? "ok  " : "FAIL", c.name);
    }
    std::printf("%d tests, %d failed checks\n", run, floe_test::failures);
    return floe_test::failures == 0 && run > 0 ? 0 : 1;
}
