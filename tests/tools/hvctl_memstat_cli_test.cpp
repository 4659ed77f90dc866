// hvctl mem-set, stat and top: argument handling and exit codes without hv-min (their
// behaviour against the real hv-min is in tests/system).
#include <unistd.h>

#include <catch2/catch.hpp>

#include "cli.hpp"
#include "hvctl_run.hpp"

using namespace hv::tools;

using Run = hv::test::HvctlRun;
using hv::test::hvctl;

TEST_CASE("memory sizes parse as xl's: MiB by default, b k m g t in any case", "[tools][hvctl]") {
    CHECK(parse_mem_size_kib("256") == 256u * 1024);
    CHECK(parse_mem_size_kib("256m") == 256u * 1024);
    CHECK(parse_mem_size_kib("256M") == 256u * 1024);
    CHECK(parse_mem_size_kib("1g") == 1024u * 1024);
    CHECK(parse_mem_size_kib("2G") == 2048u * 1024);
    CHECK(parse_mem_size_kib("1t") == 1024ull * 1024 * 1024);
    CHECK(parse_mem_size_kib("65536k") == 65536u);
    CHECK(parse_mem_size_kib("65536K") == 65536u);
    CHECK(parse_mem_size_kib("1048576b") == 1024u);
    CHECK(parse_mem_size_kib("0") == 0u);
    for (const char* bad : {"", "m", "-1", "1.5g", "12mb", "1x", " 1", "1 ", "99999999999999999999",
                            "17592186044416g"}) {
        INFO(bad);
        CHECK_FALSE(parse_mem_size_kib(bad));
    }
}

TEST_CASE("mem-set, stat and top argument errors exit 2 without connecting", "[tools][hvctl]") {
    struct Case {
        std::vector<std::string> args;
        std::string err;
    };
    const Case cases[] = {
        {{"mem-set"},
         "hvctl mem-set: which domain and how much memory?\nusage: hvctl mem-set "
         "NAME|ID MEM\n"},
        {{"mem-set", "g"},
         "hvctl mem-set: which domain and how much memory?\nusage: hvctl "
         "mem-set NAME|ID MEM\n"},
        {{"mem-set", "g", "1", "2"},
         "hvctl mem-set: too many arguments\nusage: hvctl mem-set NAME|ID MEM\n"},
        {{"mem-set", "g", "12q"},
         "hvctl mem-set: invalid memory size '12q' (a number with k, m, g or t)\nusage: hvctl "
         "mem-set NAME|ID MEM\n"},
        {{"mem-set", "g", "0"},
         "hvctl mem-set: memory must be at least 1k\nusage: hvctl mem-set NAME|ID MEM\n"},
        {{"mem-set", "-x", "g", "1"},
         "hvctl mem-set: unknown option '-x'\nusage: hvctl mem-set NAME|ID MEM\n"},
        {{"stat", "x"}, "hvctl stat: takes no arguments\nusage: hvctl stat\n"},
        {{"stat", "-l"}, "hvctl stat: unknown option '-l'\nusage: hvctl stat\n"},
        {{"top", "-n"},
         "hvctl top: -n needs a count from 1\nusage: hvctl top [-b] [-n N] "
         "[-d SECS]\n"},
        {{"top", "-b", "-n", "0"},
         "hvctl top: -n needs a count from 1\nusage: hvctl top [-b] "
         "[-n N] [-d SECS]\n"},
        {{"top", "-d", "1x"},
         "hvctl top: -d needs seconds from 1\nusage: hvctl top [-b] [-n N] "
         "[-d SECS]\n"},
        {{"top", "-z"},
         "hvctl top: unknown argument '-z'\nusage: hvctl top [-b] [-n N] "
         "[-d SECS]\n"},
    };
    for (const Case& c : cases) {
        INFO(c.args[0] << " " << (c.args.size() > 1 ? c.args[1] : ""));
        const Run r = hvctl(c.args);
        CHECK(r.rc == kExitUsage);
        CHECK(r.err == c.err);
        CHECK_FALSE(r.connected);
    }
}

TEST_CASE("mem-set, stat and top -b fail with exit 1 when hv-min is unreachable",
          "[tools][hvctl]") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"mem-set", "g", "128"}, {"stat"}, {"top", "-b", "-n", "1"}}) {
        INFO(args[0]);
        const Run r = hvctl(args);
        CHECK(r.rc == kExitFailure);
        CHECK(r.connected);
        CHECK(r.err.find("cannot reach hv-min in /nonexistent/rundir") != std::string::npos);
    }
}

TEST_CASE("interactive top needs a terminal on standard input", "[tools][hvctl]") {
    if (::isatty(0) != 0) {
        SUCCEED("standard input is a terminal here; the refusal is not reachable");
        return;
    }
    const Run r = hvctl({"top"});
    CHECK(r.rc == kExitUsage);
    CHECK(r.err == "hvctl top: standard input is not a terminal (use -b for batch mode)\n");
    CHECK_FALSE(r.connected);
}
