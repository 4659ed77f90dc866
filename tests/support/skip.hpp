// Skipping a test whose capability is truly absent (style.md §10): print why, exit 77.
// Each Catch2 test case runs as its own ctest process, so exiting skips just that case.
#pragma once

#include <unistd.h>

#include <cstdio>

namespace hv::test {

[[noreturn]] inline void skip(const char* why) {
    std::fprintf(stderr, "SKIP: %s\n", why);
    std::fflush(stderr);
    ::_exit(77);
}

inline void skip_unless(bool have, const char* why) {
    if (!have) {
        skip(why);
    }
}

inline void require_root() { skip_unless(::geteuid() == 0, "needs root"); }

}  // namespace hv::test
