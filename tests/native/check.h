// Minimal test harness: TEST(name) registers a function; CHECK records a failure and continues.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace floe_test {
struct Case {
    const char* name;
    void (*fn)();
};
std::vector<Case>& registry();
extern int failures;
struct Register {
    Register(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};
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
