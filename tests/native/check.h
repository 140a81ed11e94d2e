// Minimal test harness: TEST(name) registers a function; CHECK records a failure and continues.
#pragma once
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace floe_test {
struct Case {
    const char* name;
    void (*fn)();
};
inline std::vector<Case>& registry() {
    static std::vector<Case> cases;
    return cases;
}
inline int failures = 0;
struct Register {
    Register(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

// Runs the registered tests whose name contains filter (all if null); the process exit code.
inline int run_all(const char* filter) {
    int run = 0;
    for (const auto& c : registry()) {
        if (filter != nullptr && std::strstr(c.name, filter) == nullptr) continue;
        const int before = failures;
        c.fn();
        ++run;
        std::printf("%s %s\n", failures == before ? "ok  " : "FAIL", c.name);
    }
    std::printf("%d tests, %d failed checks\n", run, failures);
    return failures == 0 && run > 0 ? 0 : 1;
}
}  // namespace floe_test

#define TEST(name)                                                    \
    static void name();                                               \
    static floe_test::Register register_##name(#name, name);          \
    static void name()

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            ++floe_test::failures;                                                        \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                            \
            std::fprintf(stderr, "\n");                                                   \
        }                                                                                 \
    } while (0)
