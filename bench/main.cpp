// hvbench: runs benchmark suites, each case beside its peer, one JSON line per case.
//   hvbench [--runs N] [--quick] [--json FILE] [--plot FILE.svg] [--case PATTERN] SUITE...|all
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "harness.hpp"
#include "suites.hpp"

namespace {

struct SuiteEntry {
    std::string_view name;
    std::string_view what;
    int (*run)(hv::bench::Context&);
};

// The suite table: one row per bench/suite_<name>.cpp. Later: blk, net.
constexpr SuiteEntry suites[] = {
    {"ring", "blkif/netif rings between two threads/processes vs socketpair/pipe",
     hv::bench::run_ring_suite},
    {"evtchn", "event-channel notify round trip between two domains vs eventfd",
     hv::bench::run_evtchn_suite},
    {"grant", "batched grant copy vs memcpy, hypercall round trip, grant map/unmap",
     hv::bench::run_grant_suite},
    {"xs", "XenStore read/write/watch vs Debian's C xenstored and oxenstored",
     hv::bench::run_xs_suite},
    {"net", "guest<->guest TCP/UDP via netfront -> netback -> Linux bridge / OVS vs veth namespaces",
     hv::bench::run_net_suite},
    {"blk", "4K random/1M sequential I/O: blkfront domain -> blkback vs native io_uring (and fio)",
     hv::bench::run_blk_suite},
};

struct HelperEntry {
    std::string_view name;
    hv::bench::HelperHandler handler;
};

// Helper modes: the programs of the domains a suite creates (`hvbench --helper NAME CTLPATH`).
constexpr HelperEntry helpers[] = {
    {"evtchn", hv::bench::evtchn_helper},
    {"grant", hv::bench::grant_helper},
    {"net", hv::bench::net_helper},
    {"blk", hv::bench::blk_helper},
};

void usage(FILE* f) {
    std::fprintf(f,
                 "usage: hvbench [--runs N] [--quick] [--json FILE] [--plot FILE.svg] "
                 "[--case PATTERN] SUITE...|all\n"
                 "  --runs N     median of N runs per case (default 5; 1 with --quick)\n"
                 "  --quick      few-millisecond smoke mode (CI)\n"
                 "  --json FILE  also write the JSON lines to FILE\n"
                 "  --plot FILE  write an SVG bar chart of ours/peer ratios\n"
                 "  --case PAT   only cases whose name contains PAT; a comma-separated list of such\n"
                 "               terms; a term ending in '$' must equal the whole name\n"
                 "suites:\n");
    for (const auto& s : suites) {
        std::fprintf(f, "  %-8.*s %.*s\n", static_cast<int>(s.name.size()), s.name.data(),
                     static_cast<int>(s.what.size()), s.what.data());
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string_view(argv[1]) == "--helper") {
        for (const auto& h : helpers) {
            if (h.name == argv[2]) {
                return hv::bench::run_helper_domain(argv[3], h.handler);
            }
        }
        std::fprintf(stderr, "hvbench: no helper named %s\n", argv[2]);
        return 2;
    }
    hv::bench::Options opts;
    std::vector<std::string> wanted;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&](const char* opt) -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "hvbench: %s needs a value\n", opt);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--runs") {
            char* end = nullptr;
            const char* v = value("--runs");
            const unsigned long n = std::strtoul(v, &end, 10);
            if (end == v || *end != '\0' || n == 0 || n > 1000) {
                std::fprintf(stderr, "hvbench: --runs wants 1..1000\n");
                return 2;
            }
            opts.runs = static_cast<unsigned>(n);
            opts.runs_given = true;
        } else if (a == "--quick") {
            opts.quick = true;
        } else if (a == "--json") {
            opts.json_path = value("--json");
        } else if (a == "--plot") {
            opts.plot_path = value("--plot");
        } else if (a == "--case") {
            opts.filter = value("--case");
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            std::fprintf(stderr, "hvbench: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            wanted.emplace_back(a);
        }
    }
    if (opts.quick && !opts.runs_given) {
        opts.runs = 1;
    }
    if (wanted.empty()) {
        usage(stderr);
        return 2;
    }
    std::vector<const SuiteEntry*> to_run;
    for (const auto& w : wanted) {
        bool found = false;
        for (const auto& s : suites) {
            if (w == "all" || w == s.name) {
                to_run.push_back(&s);
                found = true;
            }
        }
        if (!found) {
            std::fprintf(stderr, "hvbench: no suite named %s\n", w.c_str());
            usage(stderr);
            return 2;
        }
    }

    std::vector<hv::bench::CaseResult> all;
    int rc = 0;
    for (const auto* s : to_run) {
        hv::bench::Context ctx(opts, std::string(s->name));
        std::fprintf(stderr, "hvbench: suite %.*s (%u run%s per case%s)\n",
                     static_cast<int>(s->name.size()), s->name.data(), opts.runs,
                     opts.runs == 1 ? "" : "s", opts.quick ? ", quick" : "");
        if (s->run(ctx) != 0) {
            std::fprintf(stderr, "hvbench: suite %.*s failed\n", static_cast<int>(s->name.size()),
                         s->name.data());
            rc = 1;
        }
        all.insert(all.end(), ctx.results().begin(), ctx.results().end());
    }
    if (!opts.json_path.empty()) {
        std::ofstream out(opts.json_path, std::ios::trunc);
        for (const auto& r : all) {
            out << hv::bench::to_json_line(r, opts.quick) << '\n';
        }
        if (!out) {
            std::fprintf(stderr, "hvbench: cannot write %s\n", opts.json_path.c_str());
            rc = 1;
        }
    }
    if (!opts.plot_path.empty()) {
        std::ofstream out(opts.plot_path, std::ios::trunc);
        out << hv::bench::ratio_chart_svg(all);
        if (!out) {
            std::fprintf(stderr, "hvbench: cannot write %s\n", opts.plot_path.c_str());
            rc = 1;
        }
    }
    return rc;
}
