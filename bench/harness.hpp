// hvbench harness: every case is measured beside its peer (a native or well-known equivalent)
// in the same run, as a median of N runs, and printed as ONE JSON line on stdout.
// Layer: tools (top). Single-threaded driver; suites may start their own threads per run.
//
// Adding a suite: write bench/suite_<name>.cpp with `int run_<name>_suite(hv::bench::Context&)`,
// declare it in bench/suites.hpp and add one row to the table in bench/main.cpp.
#pragma once

#include <sched.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"

namespace hv::bench {

struct Options {
    unsigned runs = 5;  // --runs N: median of N runs
    bool runs_given = false;
    bool quick = false;     // --quick: a few milliseconds per case (CI smoke mode)
    std::string json_path;  // --json FILE: also write the JSON lines there
    std::string plot_path;  // --plot FILE.svg: bar chart of ratios
    std::string filter;     // --case PATTERN: see selects()

    /// Whether --case lets the case `name` run. PATTERN is a comma-separated list of terms; a
    /// term matches names that contain it, or, ending in '$', only the name equal to the rest
    /// (`pkt64_rings_loop_map$` runs that case and not `pkt64_rings_loop_map_poll`).
    [[nodiscard]] bool selects(std::string_view name) const;
};

/// One measurement of one side (ours or the peer) in one run.
struct Sample {
    double value = 0;                                       // in the case's unit
    double p50 = std::numeric_limits<double>::quiet_NaN();  // latency, ns (NaN: not a latency case)
    double p99 = std::numeric_limits<double>::quiet_NaN();
};

/// What a case measures. `value`s of both sides share `unit`.
struct CaseSpec {
    std::string name;  // e.g. "blkif_2threads"
    std::string unit;  // e.g. "req/s", "ns"
    std::string peer;  // what we compare with, e.g. "socketpair_seqpacket"
    bool higher_is_better = true;
    /// Extra flat key/values for the JSON line (ring pages, message size, ...).
    std::vector<std::pair<std::string, std::string>> config;
};

/// Adds figures the runs gathered (e.g. CPU time per byte) to a case's config, once after the
/// runs and before its JSON line is printed.
using AfterRuns = std::function<void(std::vector<std::pair<std::string, std::string>>& config)>;

/// The reported result of a case (medians over runs).
struct CaseResult {
    std::string suite;
    CaseSpec spec;
    Sample ours;
    Sample peer;
    unsigned runs = 0;
    /// ours/peer for higher-is-better units, peer/ours otherwise: > 1 means we win.
    double ratio = 0;
};

/// A measurement function: one run of one side. An error aborts the suite.
using Measure = std::function<hv::Result<Sample>()>;

class Context {
public:
    Context(Options opts, std::string suite) : opts_(std::move(opts)), suite_(std::move(suite)) {}

    const Options& options() const noexcept { return opts_; }
    bool quick() const noexcept { return opts_.quick; }
    /// `normal` work units, or `quick` in --quick mode.
    std::uint64_t scale(std::uint64_t normal, std::uint64_t quick) const noexcept {
        return opts_.quick ? quick : normal;
    }

    /// Runs ours and the peer alternately (runs times each, so both see the same machine
    /// state), takes medians, prints the JSON line and a progress line on stderr.
    /// Errors: the first failing measurement's.
    hv::Result<void> run_case(const CaseSpec& spec, const Measure& ours, const Measure& peer,
                              const AfterRuns& after_runs = {});

    const std::vector<CaseResult>& results() const noexcept { return results_; }

private:
    Options opts_;
    std::string suite_;
    std::vector<CaseResult> results_;
};

/// Percentile (0..100) of unsorted samples (copied and partially sorted).
double percentile(std::vector<double> v, double pct);

/// The JSON line of a result (no trailing newline). Keys: suite, case, unit, value, peer,
/// peer_value, ratio, better, runs, quick, git_sha, host, cpu, [p50_ns, p99_ns, peer_p50_ns,
/// peer_p99_ns], plus each config key prefixed "cfg_".
std::string to_json_line(const CaseResult& r, bool quick);

/// A standalone SVG bar chart: one bar per case, length = ratio, a rule at 1.0.
std::string ratio_chart_svg(const std::vector<CaseResult>& results);

/// Short git sha of the source tree (HV_GIT_SHA env overrides), or "unknown".
const std::string& git_sha();
/// Host name, and the CPU model from /proc/cpuinfo.
const std::string& host_name();
const std::string& cpu_model();

/// Pins the calling thread to one CPU (index modulo the CPUs we may run on). Best effort.
void pin_to_cpu(unsigned index) noexcept;

/// The CPU number of the `index`-th (modulo their count) CPU the calling thread may run on;
/// -1 when it may run on only one (nothing to place apart).
int allowed_cpu(unsigned index) noexcept;

/// Pins the calling thread to CPU `cpu` while it lives (threads it starts meanwhile inherit
/// that) and gives it back its previous affinity after. cpu < 0: does nothing. Best effort.
class ScopedPin {
public:
    explicit ScopedPin(int cpu) noexcept;
    ~ScopedPin();
    ScopedPin(const ScopedPin&) = delete;
    ScopedPin& operator=(const ScopedPin&) = delete;

private:
    cpu_set_t saved_;
    bool pinned_ = false;
};

}  // namespace hv::bench
