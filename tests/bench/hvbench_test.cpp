// hvbench smoke: `hvbench --quick ring` runs, every stdout line is a flat JSON object with the
// schema of bench/README.md, --json writes the same lines, --plot writes an SVG.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "temp_dir.hpp"

namespace {

/// A JSON value of a flat object: string, number, bool or null (kept as its text).
struct Value {
    enum Kind { string, number, boolean, null } kind;
    std::string text;
    double num = 0;
};

/// Parses one flat JSON object {"k": v, ...}; nullopt on any syntax error.
std::optional<std::map<std::string, Value>> parse_flat_object(const std::string& s) {
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
        ++i;
        std::string out;
        while (i < s.size() && s[i] != '"') {
            if (s[i] == '\\') {
                if (++i >= s.size()) {
                    return std::nullopt;
                }
                const char e = s[i];
                if (e == 'u') {
                    if (i + 4 >= s.size()) {
                        return std::nullopt;
                    }
                    out += '?';
                    i += 4;
                } else if (e == 'n') {
                    out += '\n';
                } else if (e == 't') {
                    out += '\t';
                } else if (e == '"' || e == '\\' || e == '/') {
                    out += e;
                } else {
                    return std::nullopt;
                }
                ++i;
            } else if (static_cast<unsigned char>(s[i]) < 0x20) {
                return std::nullopt;
            } else {
                out += s[i++];
            }
        }
        if (i >= s.size()) {
            return std::nullopt;
        }
        ++i;
        return out;
    };
    std::map<std::string, Value> obj;
    ws();
    if (i >= s.size() || s[i++] != '{') {
        return std::nullopt;
    }
    ws();
    if (i < s.size() && s[i] == '}') {
        ++i;
    } else {
        for (;;) {
            ws();
            auto key = str();
            if (!key) {
                return std::nullopt;
            }
            ws();
            if (i >= s.size() || s[i++] != ':') {
                return std::nullopt;
            }
            ws();
            Value v{};
            if (i < s.size() && s[i] == '"') {
                auto t = str();
                if (!t) {
                    return std::nullopt;
                }
                v = {Value::string, *t};
            } else if (s.compare(i, 4, "null") == 0) {
                v = {Value::null, "null"};
                i += 4;
            } else if (s.compare(i, 4, "true") == 0 || s.compare(i, 5, "false") == 0) {
                const bool t = s[i] == 't';
                v = {Value::boolean, t ? "true" : "false"};
                i += t ? 4 : 5;
            } else {
                const char* begin = s.c_str() + i;
                char* end = nullptr;
                const double d = std::strtod(begin, &end);
                if (end == begin) {
                    return std::nullopt;
                }
                v = {Value::number, std::string(begin, static_cast<const char*>(end)), d};
                i += static_cast<std::size_t>(end - begin);
            }
            if (!obj.emplace(*key, v).second) {
                return std::nullopt;  // duplicate key
            }
            ws();
            if (i < s.size() && s[i] == ',') {
                ++i;
                continue;
            }
            if (i < s.size() && s[i] == '}') {
                ++i;
                break;
            }
            return std::nullopt;
        }
    }
    ws();
    if (i != s.size()) {
        return std::nullopt;
    }
    return obj;
}

struct Run {
    int exit_code;
    std::vector<std::string> lines;
};

Run run_hvbench(const std::string& args, const std::string& env = "") {
    const std::string cmd = env + " " + std::string(HVBENCH_PATH) + " " + args + " 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        out.append(buf, n);
    }
    const int status = ::pclose(p);
    Run r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, {}};
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
        r.lines.push_back(line);
    }
    return r;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

TEST_CASE("the flat JSON checker rejects what is not a flat JSON object", "[bench]") {
    CHECK(parse_flat_object(R"({"a":1,"b":"x","c":null,"d":true})"));
    CHECK_FALSE(parse_flat_object(R"({"a":1,})"));
    CHECK_FALSE(parse_flat_object(R"({"a":1} x)"));
    CHECK_FALSE(parse_flat_object(R"({"a":1,"a":2})"));
    CHECK_FALSE(parse_flat_object(R"({"a":})"));
    CHECK_FALSE(parse_flat_object(R"({"a":"unterminated})"));
    CHECK_FALSE(parse_flat_object("not json"));
}

namespace {

/// Checks one stdout line against bench/README.md's schema; returns the parsed object.
std::map<std::string, Value> check_line(const std::string& line) {
    INFO(line);
    auto obj = parse_flat_object(line);
    REQUIRE(obj);
    auto& o = *obj;
    for (const char* k : {"suite", "case", "unit", "peer", "git_sha", "host", "better"}) {
        INFO(k);
        REQUIRE(o.count(k) == 1);
        CHECK(o[k].kind == Value::string);
        CHECK_FALSE(o[k].text.empty());
    }
    for (const char* k : {"value", "peer_value", "ratio", "runs"}) {
        INFO(k);
        REQUIRE(o.count(k) == 1);
        REQUIRE(o[k].kind == Value::number);
        CHECK(o[k].num > 0);
    }
    CHECK(o["runs"].num == 1);
    CHECK(o["quick"].text == "true");
    const bool higher = o["better"].text == "higher";
    CHECK((higher || o["better"].text == "lower"));
    const double expect_ratio =
        higher ? o["value"].num / o["peer_value"].num : o["peer_value"].num / o["value"].num;
    CHECK(o["ratio"].num == Approx(expect_ratio).epsilon(1e-4));
    if (o["unit"].text == "ns") {
        CHECK_FALSE(higher);
        for (const char* k : {"p50_ns", "p99_ns", "peer_p50_ns", "peer_p99_ns"}) {
            INFO(k);
            REQUIRE(o.count(k) == 1);
            REQUIRE(o[k].kind == Value::number);
            CHECK(o[k].num > 0);
        }
        CHECK(o["p99_ns"].num >= o["p50_ns"].num);
        CHECK(o["peer_p99_ns"].num >= o["peer_p50_ns"].num);
        CHECK(o["value"].num == o["p50_ns"].num);
    }
    return o;
}

}  // namespace

TEST_CASE("hvbench --quick ring prints one well-formed JSON line per case", "[bench]") {
    hv::test::TempDir dir("hvbench-test");
    const std::string json = (dir / "out.json").string();
    const std::string svg = (dir / "out.svg").string();
    const Run r = run_hvbench("--quick --json " + json + " --plot " + svg + " ring");
    REQUIRE(r.exit_code == 0);
    REQUIRE(r.lines.size() >= 4);
    std::map<std::string, int> cases;
    for (const auto& line : r.lines) {
        auto o = check_line(line);
        CHECK(o["suite"].text == "ring");
        ++cases[o["case"].text];
    }
    for (const char* c : {"blkif_2threads", "netif_tx_2threads", "blkif_rtt", "blkif_2proc",
                          "netif_tx_2proc", "blkif_rtt_2proc", "blkif_2proc_poll"}) {
        INFO(c);
        CHECK(cases.count(c) == 1);
    }
    for (const auto& [name, count] : cases) {
        INFO(name);
        CHECK(count == 1);
    }

    std::string file_lines;
    for (const auto& l : r.lines) {
        file_lines += l + "\n";
    }
    CHECK(slurp(json) == file_lines);

    const std::string chart = slurp(svg);
    CHECK(chart.rfind("<?xml", 0) == 0);
    CHECK(chart.find("<svg") != std::string::npos);
    CHECK(chart.find("</svg>") != std::string::npos);
    std::size_t bars = 0;
    for (std::size_t pos = 0; (pos = chart.find("<rect", pos)) != std::string::npos; ++pos) {
        ++bars;
    }
    CHECK(bars == r.lines.size() + 1);  // one per case plus the background
}

TEST_CASE("hvbench --quick evtchn grant xs ring prints every suite's cases with the schema",
          "[bench]") {
    const Run r = run_hvbench("--quick evtchn grant xs ring");
    REQUIRE(r.exit_code == 0);
    std::map<std::string, std::map<std::string, Value>> by_case;
    for (const auto& line : r.lines) {
        auto o = check_line(line);
        const std::string key = o["suite"].text + "/" + o["case"].text;
        INFO(key);
        CHECK(by_case.count(key) == 0);
        by_case[key] = o;
    }
    auto has = [&](const std::string& key) {
        INFO(key);
        CHECK(by_case.count(key) == 1);
        return by_case.count(key) == 1;
    };
    if (has("evtchn/notify_rtt_2domains")) {
        CHECK(by_case["evtchn/notify_rtt_2domains"]["unit"].text == "ns");
        CHECK(by_case["evtchn/notify_rtt_2domains"]["peer"].text == "eventfd_2proc");
    }
    for (const char* c : {"copy_batch1", "copy_batch16", "copy_batch64", "copy_batch64_scattered"}) {
        if (has(std::string("grant/") + c)) {
            CHECK(by_case[std::string("grant/") + c]["unit"].text == "GB/s");
            CHECK(by_case[std::string("grant/") + c]["peer"].text == "memcpy");
        }
    }
    has("grant/hypercall_rtt");
    has("grant/map_unmap_trusted");
    has("ring/blkif_2proc");
    has("ring/netif_tx_2proc");
    // Sleeping, adaptive and polling side by side, each with its own peer.
    for (const char* c : {"grant/copy_batch64_adaptive", "grant/hypercall_rtt_adaptive",
                          "ring/blkif_2proc_adaptive", "ring/blkif_rtt_2proc_adaptive",
                          "ring/blkif_2proc_poll", "evtchn/notify_rtt_2domains_spin"}) {
        if (has(c)) {
            CHECK(by_case[c]["peer"].text != "");
        }
    }
    if (has("grant/copy_batch64_adaptive")) {
        CHECK(by_case["grant/copy_batch64_adaptive"]["cfg_wait"].text == "adaptive");
        CHECK(by_case["grant/copy_batch64"]["cfg_wait"].text == "sleep");
    }
    if (has("evtchn/notify_rtt_2domains_spin")) {
        CHECK(by_case["evtchn/notify_rtt_2domains_spin"]["peer"].text == "eventfd_2proc_spin");
    }
    // The xs cases need Debian's daemons through the team's peer script; without it the
    // suite says why on stderr and prints no xs lines.
    const char* env = std::getenv("HV_XENSTORED_PEER");
    const std::string script =
        env != nullptr ? env : std::string(HV_SHARED_DIR) + "/peers/xenstored-peer";
    if (std::filesystem::exists(script)) {
        for (const char* op : {"read", "write"}) {
            for (const char* shape : {"_1conn_d1", "_1conn_d64", "_64conn_d1", "_64conn_d64"}) {
                const std::string key = std::string("xs/") + op + shape;
                if (has(key)) {
                    auto& o = by_case[key];
                    CHECK(o["unit"].text == "op/s");
                    CHECK((o["peer"].text == "c_xenstored" || o["peer"].text == "oxenstored"));
                    // Both peers' medians are reported beside the better one.
                    REQUIRE(o.count("cfg_c_xenstored") == 1);
                    REQUIRE(o.count("cfg_oxenstored") == 1);
                    CHECK(std::strtod(o[std::string("cfg_") + o["peer"].text].text.c_str(),
                                      nullptr) == Approx(o["peer_value"].num).epsilon(1e-4));
                }
            }
        }
        if (has("xs/watch_fire_latency")) {
            CHECK(by_case["xs/watch_fire_latency"]["unit"].text == "ns");
        }
    } else {
        WARN("no xenstored peer script at " << script << ": xs cases not checked");
        for (const auto& [key, o] : by_case) {
            CHECK(key.rfind("xs/", 0) != 0);
        }
    }
}

TEST_CASE("hvbench removes the rundirs of its in-process hv-min and its xenstored sockets",
          "[bench]") {
    hv::test::TempDir tmp("hvbench-tmp");
    const Run r = run_hvbench("--quick --case rtt evtchn grant", "TMPDIR=" + tmp.str());
    REQUIRE(r.exit_code == 0);
    // notify_rtt_2domains(_spin), hypercall_rtt(_adaptive): two in-process hv-mins for grant
    CHECK(r.lines.size() == 4);
    CHECK(std::filesystem::is_empty(tmp.path()));
}

TEST_CASE("hvbench --helper refuses unknown helpers and runs only inside a domain", "[bench]") {
    CHECK(run_hvbench("--helper nosuch /nonexistent").exit_code == 2);
    // Outside a domain there is no HV_HYPERCALL_FD to attach through.
    CHECK(run_hvbench("--helper evtchn /nonexistent").exit_code == 1);
}

TEST_CASE("hvbench --case keeps only the matching cases", "[bench]") {
    const Run r = run_hvbench("--quick --case rtt ring");
    REQUIRE(r.exit_code == 0);
    REQUIRE_FALSE(r.lines.empty());
    for (const auto& line : r.lines) {
        auto obj = parse_flat_object(line);
        REQUIRE(obj);
        CHECK((*obj)["case"].text.find("rtt") != std::string::npos);
    }
}

TEST_CASE("hvbench --case takes a comma-separated list and '$' for a whole name", "[bench]") {
    // blkif_2threads is also the start of blkif_2threads_4pages; '$' keeps only the first.
    const Run r = run_hvbench("--quick --case 'blkif_2threads$,netif_tx_2threads_vs' ring");
    REQUIRE(r.exit_code == 0);
    std::vector<std::string> names;
    for (const auto& line : r.lines) {
        auto obj = parse_flat_object(line);
        REQUIRE(obj);
        names.push_back((*obj)["case"].text);
    }
    CHECK(names == std::vector<std::string>{"blkif_2threads", "netif_tx_2threads_vs_pipe"});
}

TEST_CASE("hvbench rejects unknown suites and bad options", "[bench]") {
    CHECK(run_hvbench("nosuchsuite").exit_code == 2);
    CHECK(run_hvbench("--runs 0 ring").exit_code == 2);
    CHECK(run_hvbench("--runs x ring").exit_code == 2);
    CHECK(run_hvbench("--bogus ring").exit_code == 2);
    CHECK(run_hvbench("").exit_code == 2);
    CHECK(run_hvbench("--json").exit_code == 2);
    const Run help = run_hvbench("--help");
    CHECK(help.exit_code == 0);
}
