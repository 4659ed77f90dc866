// `hvbench --quick blk` smoke: every stdout line is a flat JSON object with the blk schema
// (shape only, never speed) and the suite leaves no loop device, VG or file behind.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "skip.hpp"
#include "text_match.hpp"

namespace {

struct Run {
    int status = -1;
    std::string pid;  // hvbench's: its loop files, VG and images carry it
    std::vector<std::string> lines;
};

Run run(const std::string& args) {
    Run r;
    // The shell prints its pid, then becomes hvbench (same pid).
    std::FILE* p = ::popen(
        ("echo $$; exec " + std::string(HVBENCH_PATH) + " " + args + " 2>/dev/null").c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[8192];
    while (std::fgets(buf, sizeof buf, p) != nullptr) {
        std::string l(buf);
        if (!l.empty() && l.back() == '\n') {
            l.pop_back();
        }
        if (r.pid.empty()) {
            r.pid = l;
            continue;
        }
        r.lines.push_back(l);
    }
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string sh_out(const std::string& cmd) {
    std::string out;
    std::FILE* p = ::popen(("LVM_SUPPRESS_FD_WARNINGS=1; export LVM_SUPPRESS_FD_WARNINGS; (" + cmd + ") 2>/dev/null").c_str(), "r");
    if (p == nullptr) {
        return out;
    }
    char buf[4096];
    while (std::fgets(buf, sizeof buf, p) != nullptr) {
        out += buf;
    }
    ::pclose(p);
    return out;
}

/// What the blk run `pid` may leave behind: the loop device over its PV file, its VG, its
/// files. Only that run's names: other runs (other helpers' benches) may be live meanwhile.
std::string leftovers(const std::string& pid) {
    REQUIRE(!pid.empty());
    std::string s = sh_out("losetup -a | grep 'hvbench-blk-pv\\." + pid + "\\.img'");
    s += sh_out("vgs --noheadings -o vg_name | grep -w hvbenchblk" + pid);
    for (const char* dir : {"/dev/shm", "/var/tmp"}) {
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
            const std::string f = e.path().filename().string();
            if (f.rfind("hvbench-blk", 0) == 0 && f.ends_with("." + pid + ".img")) {
                s += e.path().string() + "\n";
            }
        }
    }
    return s;
}

const std::string kNum = R"(-?[0-9][0-9.e+\-]*)";

/// The value text of "key" in a flat JSON line ("" if absent); strings without quotes.
std::string field(const std::string& line, const std::string& key) {
    const std::string re = "\"" + key + R"(":("([^"\\]|\\.)*"|[^,}]*))";
    hv::test::Groups m;
    if (!hv::test::re_search(line, re, &m)) {
        return "";
    }
    std::string v = m[1];
    if (v.size() >= 2 && v.front() == '"') {
        v = v.substr(1, v.size() - 2);
    }
    return v;
}

void check_line(const std::string& l) {
    INFO(l);
    REQUIRE(l.front() == '{');
    REQUIRE(l.back() == '}');
    CHECK(field(l, "suite") == "blk");
    const std::string unit = field(l, "unit");
    CHECK((unit == "ns" || unit == "IOPS" || unit == "MB/s"));
    CHECK(field(l, "better") == (unit == "ns" ? "lower" : "higher"));
    CHECK(field(l, "peer") == "native_io_uring");
    CHECK(field(l, "quick") == "true");
    for (const char* k : {"value", "peer_value", "ratio", "runs", "p50_ns", "p99_ns", "peer_p50_ns",
                          "peer_p99_ns"}) {
        INFO(k);
        CHECK(hv::test::re_match(field(l, k), kNum));
    }
    for (const char* k : {"cfg_iops", "cfg_peer_iops", "cfg_mbps", "cfg_peer_mbps", "cfg_cpu_us_per_io",
                          "cfg_peer_cpu_us_per_io", "cfg_added_p50_us", "cfg_iops_ratio"}) {
        INFO(k);
        CHECK(hv::test::re_match(field(l, k), kNum));
    }
    CHECK(!field(l, "cfg_target").empty());
    CHECK(!field(l, "cfg_native_io").empty());
    const std::string storage = field(l, "cfg_target_storage");
    CHECK((storage == "shm" || storage == "file" || storage == "lv"));
    CHECK(hv::test::re_match(field(l, "case"),
                             storage + "_(randread_4k_qd1|randread_4k_qd32|randwrite_4k_qd32|"
                                       "seqread_1m_qd8|randread_4k_qd1_poll|"
                                       "randread_4k_qd32_poll)_(map|copy)"));
    // Polled cases say so (and have no fio figure); the others run with event channels.
    const bool polled = field(l, "case").find("_poll_") != std::string::npos;
    CHECK(field(l, "cfg_polling").starts_with(polled ? "on:" : "off:"));
}

}  // namespace

TEST_CASE("hvbench --quick blk prints one well-formed line per case and leaves nothing behind",
          "[bench][blk][root]") {
    hv::test::require_root();
    hv::test::skip_unless(std::system("command -v lvcreate >/dev/null && command -v losetup >/dev/null") == 0,
                          "needs losetup and the lvm2 tools");
    // Every case, in the suite's order: the 1 MiB copy-mode cases run after the earlier cases
    // on the same frontend domain (they once failed there with I/O errors: 651387e).
    const Run r = run("--quick blk");
    CHECK(r.status == 0);
    std::set<std::string> cases;
    for (const auto& l : r.lines) {
        check_line(l);
        cases.insert(field(l, "case"));
    }
    CHECK(leftovers(r.pid).empty());
    // 3 targets × (5 4 KiB workloads, 2 of them polled, + the 1 MiB one) × 2 modes
    CHECK(r.lines.size() == 36);
    CHECK(cases.size() == 36);
}

TEST_CASE("hvbench blk with a case filter matching nothing prints no line and leaves nothing behind", "[bench][blk][root]") {
    hv::test::require_root();
    const Run r = run("--quick --case no_such_case blk");
    CHECK(r.status == 0);
    CHECK(r.lines.empty());
    CHECK(leftovers(r.pid).empty());
}
