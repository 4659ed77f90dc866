// `hvbench --quick net` (label root): every stdout line is a flat JSON object with the schema of
// bench/README.md and the net suite's cases; afterwards nothing is left behind: no hvb-<pid>-*
// namespaces, no run directory, no process started from it (OVS daemons, guests), the root
// namespace's links unchanged, and the hugepages it added to the pool given back (its log).
// Shape only, never speed.
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hv/subprocess.hpp"
#include "skip.hpp"
#include "temp_dir.hpp"
#include "testpmd.hpp"
#include "text_match.hpp"

namespace {

struct JVal {
    enum Kind { string, number, boolean, null } kind;
    std::string text;
    double num = 0;
};

/// A flat JSON object (string/number/bool/null values; no escapes beyond \" \\ \/ \n \t).
std::optional<std::map<std::string, JVal>> parse_flat(const std::string& s) {
    std::size_t i = 0;
    auto ws = [&] {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) {
            ++i;
        }
    };
    auto str = [&]() -> std::optional<std::string> {
        if (i >= s.size() || s[i] != '"') {
            return std::nullopt;
        }
        std::string out;
        for (++i; i < s.size() && s[i] != '"'; ++i) {
            if (s[i] == '\\') {
                if (++i >= s.size() || std::string("\"\\/nt").find(s[i]) == std::string::npos) {
                    return std::nullopt;
                }
            }
            out += s[i];
        }
        if (i >= s.size()) {
            return std::nullopt;
        }
        ++i;
        return out;
    };
    std::map<std::string, JVal> obj;
    ws();
    if (i >= s.size() || s[i++] != '{') {
        return std::nullopt;
    }
    while (true) {
        ws();
        auto k = str();
        if (!k) {
            return std::nullopt;
        }
        ws();
        if (i >= s.size() || s[i++] != ':') {
            return std::nullopt;
        }
        ws();
        JVal v{};
        if (i < s.size() && s[i] == '"') {
            auto t = str();
            if (!t) {
                return std::nullopt;
            }
            v = {JVal::string, *t};
        } else if (s.compare(i, 4, "null") == 0) {
            v = {JVal::null, "null"};
            i += 4;
        } else if (s.compare(i, 4, "true") == 0 || s.compare(i, 5, "false") == 0) {
            const bool t = s[i] == 't';
            v = {JVal::boolean, t ? "true" : "false"};
            i += t ? 4 : 5;
        } else {
            const char* b = s.c_str() + i;
            char* e = nullptr;
            v.num = std::strtod(b, &e);
            if (e == b) {
                return std::nullopt;
            }
            v.kind = JVal::number;
            i += static_cast<std::size_t>(e - b);
        }
        if (!obj.emplace(*k, v).second) {
            return std::nullopt;
        }
        ws();
        if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
        }
        if (i < s.size() && s[i] == '}') {
            ++i;
            ws();
            return i == s.size() ? std::optional(obj) : std::nullopt;
        }
        return std::nullopt;
    }
}

std::set<std::string> root_links() {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator("/sys/class/net")) {
        out.insert(e.path().filename().string());
    }
    return out;
}

std::string read_file(const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// Processes whose command line mentions `needle`.
std::vector<std::string> processes_mentioning(const std::string& needle) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        const std::string pid = e.path().filename().string();
        if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) {
            continue;
        }
        std::string cmd = read_file("/proc/" + pid + "/cmdline");
        for (auto& c : cmd) {
            c = c == '\0' ? ' ' : c;
        }
        if (cmd.find(needle) != std::string::npos) {
            out.push_back(pid + ": " + cmd);
        }
    }
    return out;
}

/// Live processes whose parent is this process (orphans re-parented to us as subreaper),
/// after reaping the ones that exited. Waits up to 2 s for ones still on their way out.
std::vector<std::string> live_orphans() {
    std::vector<std::string> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    do {
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        out.clear();
        const std::string me = std::to_string(::getpid());
        for (const auto& e : std::filesystem::directory_iterator("/proc")) {
            const std::string pid = e.path().filename().string();
            if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) {
                continue;
            }
            const std::string st = read_file("/proc/" + pid + "/stat");
            const auto rp = st.rfind(')');
            if (rp == std::string::npos) {
                continue;
            }
            std::istringstream f(st.substr(rp + 2));
            std::string state, ppid;
            f >> state >> ppid;
            if (ppid == me && state != "Z") {
                std::string cmd = read_file("/proc/" + pid + "/cmdline");
                for (auto& c : cmd) {
                    c = c == '\0' ? ' ' : c;
                }
                out.push_back(pid + ": " + cmd);
            }
        }
        if (out.empty()) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < deadline);
    return out;
}

/// The 2 MiB hugepage pool's size, -1 when unreadable.
long hugepage_pool() {
    std::ifstream in("/proc/sys/vm/nr_hugepages");
    long v = -1;
    return (in >> v) ? v : -1;
}

/// Why hvbench could not raise the hugepage pool for its DPDK peer (300 pages of 2 MiB, two
/// testpmd processes of 256 MiB), or "" when it can: the kernel has 2 MiB pages, the pool is
/// writable and the memory is there (with as much again to spare).
std::string why_no_hugepages() {
    if (::access("/sys/kernel/mm/hugepages/hugepages-2048kB", F_OK) != 0) {
        return "no 2 MiB hugepages in this kernel";
    }
    if (::access("/proc/sys/vm/nr_hugepages", W_OK) != 0 || hugepage_pool() < 0) {
        return "/proc/sys/vm/nr_hugepages not writable";
    }
    std::ifstream in("/proc/meminfo");
    for (std::string line; std::getline(in, line);) {
        unsigned long kb = 0;
        if (std::sscanf(line.c_str(), "MemAvailable: %lu kB", &kb) == 1) {
            return kb >= 2UL * 300 * 2048 ? "" : "less than 1.2 GiB of memory available";
        }
    }
    return "no MemAvailable in /proc/meminfo";
}

}  // namespace

TEST_CASE("hvbench --quick net prints one schema-valid line per case and leaves nothing behind",
          "[bench][net][root]") {
    hv::test::require_root();
    hv::test::TempDir dir{"bench-net"};
    const std::string json = (dir / "net.json").string();
    const std::string svg = (dir / "net.svg").string();
    const auto links_before = root_links();
    // CI has dpdk-testpmd and can raise the hugepage pool: then the pkt64 cases' DPDK peer
    // must run, on hugepages. Elsewhere it may be unavailable, and must say why.
    const bool have_testpmd = !hv::test::find_testpmd().empty();
    const std::string no_huge = why_no_hugepages();
    const bool peer_required = have_testpmd && no_huge.empty();
    UNSCOPED_INFO("DPDK peer " << (peer_required ? "required"
                                   : !have_testpmd ? "optional: no dpdk-testpmd"
                                                   : "optional: " + no_huge));
    const long pool_before = hugepage_pool();

    // Every process hvbench leaves orphaned (guests' commands, daemons) is re-parented to us.
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
    hv::SpawnOptions so;
    auto proc = hv::Subprocess::spawn(
        {HVBENCH_PATH, "--quick", "--json", json, "--plot", svg, "net"}, so);
    REQUIRE(proc);
    const pid_t pid = proc->pid();
    auto rc = proc->wait(240000);  // every case in each variant (baseline, map, polling)
    REQUIRE(rc);
    INFO(proc->output());
    CHECK(*rc == 0);

    std::set<std::string> expected{"pkt64_rings_tx",              "pkt64_rings_tx_map",
                                   "pkt64_rings_tx_poll",         "pkt64_rings_tx_map_poll",
                                   "pkt64_rings_loop",            "pkt64_rings_loop_map",
                                   "pkt64_rings_loop_poll",       "pkt64_rings_loop_map_poll",
                                   "pkt64_rings_loop_map_nopool", "pkt64_rings_loop_map_poll_nopool"};
    for (const char* fabric : {"bridge", "ovs"}) {
        for (const char* variant : {"", "_map", "_map_poll"}) {
            for (const char* c : {"tcp_%s_1stream%s", "tcp_%s_4streams%s", "udp_rtt_%s%s"}) {
                char name[64];
                std::snprintf(name, sizeof name, c, fabric, variant);
                expected.insert(name);
            }
        }
    }
    std::set<std::string> seen;
    std::istringstream lines(read_file(json));
    for (std::string line; std::getline(lines, line);) {
        INFO(line);
        auto o = parse_flat(line);
        REQUIRE(o);
        auto& m = *o;
        auto is = [&](const char* k, JVal::Kind kind) { return m.count(k) && m[k].kind == kind; };
        CHECK(is("suite", JVal::string));
        CHECK(m["suite"].text == "net");
        REQUIRE(is("case", JVal::string));
        CHECK(expected.count(m["case"].text) == 1);
        CHECK(seen.insert(m["case"].text).second);
        CHECK(is("unit", JVal::string));
        REQUIRE(is("value", JVal::number));
        CHECK(m["value"].num > 0);
        CHECK(is("peer", JVal::string));
        CHECK(is("ratio", JVal::number));
        CHECK((m["better"].text == "higher" || m["better"].text == "lower"));
        CHECK(is("runs", JVal::number));
        CHECK(m["runs"].num == 1);
        CHECK(m["quick"].text == "true");
        CHECK(is("git_sha", JVal::string));
        CHECK(is("host", JVal::string));
        CHECK(is("cpu", JVal::string));
        CHECK(is("cfg_data_path", JVal::string));
        CHECK(is("cfg_poll_us", JVal::string));
        if (m["case"].text.rfind("pkt64_rings_", 0) == 0) {
            // The peer either ran (a number) or says why not; in CI it must run on hugepages.
            if (peer_required) {
                REQUIRE(is("peer_value", JVal::number));
                CHECK(m["peer_value"].num > 0);
                CHECK(m["ratio"].num > 0);
                CHECK_FALSE(m.count("cfg_peer_unavailable"));
                CHECK(m["cfg_peer_memory"].text.rfind("2MiB hugepages", 0) == 0);
            } else if (m["peer_value"].kind == JVal::null) {
                CHECK(is("cfg_peer_unavailable", JVal::string));
                CHECK_FALSE(m["cfg_peer_unavailable"].text.empty());
            } else {
                CHECK(is("peer_value", JVal::number));
            }
        } else {
            REQUIRE(is("peer_value", JVal::number));
            CHECK(m["peer_value"].num > 0);
            CHECK(m["ratio"].num > 0);
        }
        if (m["case"].text.rfind("udp_rtt", 0) == 0) {
            CHECK(m["unit"].text == "ns");
            CHECK(m["better"].text == "lower");
            REQUIRE(is("p50_ns", JVal::number));
            REQUIRE(is("p99_ns", JVal::number));
            CHECK(m["p99_ns"].num >= m["p50_ns"].num);
            REQUIRE(is("peer_p99_ns", JVal::number));
        }
    }
    CHECK(seen == expected);
    CHECK(read_file(svg).find("<svg") != std::string::npos);
    // Each pkt64 run reports its waits on stderr; a queue without a spin window never polls.
    const std::string& log = proc->output();
    for (const std::string& c : expected) {
        if (c.rfind("pkt64_rings_", 0) != 0) {
            continue;
        }
        INFO(c);
        const auto at = log.find("hvbench net/" + c + ": frontend slept ");
        REQUIRE(at != std::string::npos);
        const std::string line = log.substr(at, log.find('\n', at) - at);
        CHECK(line.find("; steal ") != std::string::npos);
        if (c.find("_poll") == std::string::npos) {
            CHECK(line.find("polled 0, spin skipped 0;") != std::string::npos);
        }
    }

    // Nothing left behind.
    const std::string prefix = "hvb-" + std::to_string(pid) + "-";
    std::vector<std::string> left;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
        if (e.path().filename().string().rfind(prefix, 0) == 0) {
            left.push_back(e.path().string());
        }
    }
    const std::string run_prefix = "hvbench-net-" + std::to_string(pid) + "-";
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
        if (e.path().filename().string().rfind(run_prefix, 0) == 0) {
            left.push_back(e.path().string());
        }
    }
    for (const auto& p : live_orphans()) {
        left.push_back(p);
    }
    for (const auto& p : processes_mentioning(run_prefix)) {
        left.push_back(p);
    }
    INFO("left behind: " << left.size());
    for (const auto& l : left) {
        UNSCOPED_INFO(l);
    }
    CHECK(left.empty());
    CHECK(root_links() == links_before);
    // The hugepage pool: the bench gave back exactly what it added (its own log says both; the
    // machine-wide value may be changed meanwhile by another process, so it is not compared).
    const std::string raised_re = R"(hugepages: pool raised by (\d+) )";
    const std::string gave_re = R"(hugepages: gave back (-?\d+) )";
    hv::test::Groups m;
    const std::string& out = proc->output();
    if (hv::test::re_search(out, raised_re, &m)) {
        const std::string raised = m[1];
        REQUIRE(hv::test::re_search(out, gave_re, &m));
        CHECK(m[1] == raised);
    } else {
        CHECK_FALSE(peer_required);  // it could have raised the pool
        CHECK_FALSE(hv::test::re_search(out, gave_re));
    }
    // And the pool is back where it was (ctest's `hugepages` lock keeps the other tests that
    // raise it from running meanwhile).
    CHECK(hugepage_pool() == pool_before);
}
