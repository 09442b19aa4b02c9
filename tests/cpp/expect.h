// The C++ tests' one check: EXPECT(cond, printf-style why) counts and prints a failure and the test
// goes on; main returns `failures != 0`. (Not CHECK: libtorch's headers define that.)
#pragma once

#include <cstdio>

inline int failures = 0;

#define EXPECT(cond, ...)                                               \
    do {                                                                \
        if (!(cond)) {                                                  \
            ++failures;                                                 \
            std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::printf(__VA_ARGS__);                                   \
            std::printf("\n");                                          \
        }                                                               \
    } while (0)
