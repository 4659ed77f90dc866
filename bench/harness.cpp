// hvbench harness implementation: medians, JSON lines, the SVG chart, host facts.
#include "harness.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace hv::bench {

namespace {

double median(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double d) { return std::isnan(d); }), v.end());
    if (v.empty()) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string json_escape(const std::string& s) {
    std::string out;
    out.reserve(s.size() + 2);
    for (char c : s) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out;
}

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '&':
                out += "&amp;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

std::string num(double v) {
    if (std::isnan(v) || std::isinf(v)) {
        return "null";
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) {
        s.pop_back();
    }
    return s;
}

}  // namespace

double percentile(std::vector<double> v, double pct) {
    if (v.empty()) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    const auto last = static_cast<double>(v.size() - 1);
    const auto k = static_cast<std::size_t>(std::clamp(pct / 100.0 * last + 0.5, 0.0, last));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

bool Options::selects(std::string_view name) const {
    if (filter.empty()) {
        return true;
    }
    std::string_view rest = filter;
    while (true) {
        const std::size_t comma = rest.find(',');
        std::string_view term = rest.substr(0, comma);
        if (!term.empty() && term.back() == '$') {
            if (name == term.substr(0, term.size() - 1)) {
                return true;
            }
        } else if (!term.empty() && name.find(term) != std::string_view::npos) {
            return true;
        }
        if (comma == std::string_view::npos) {
            return false;
        }
        rest.remove_prefix(comma + 1);
    }
}

hv::Result<void> Context::run_case(const CaseSpec& spec, const Measure& ours, const Measure& peer,
                                   const AfterRuns& after_runs) {
    if (!opts_.selects(spec.name)) {
        return {};
    }
    const unsigned runs = opts_.runs == 0 ? 1 : opts_.runs;
    std::vector<double> ov, op50, op99, pv, pp50, pp99;
    for (unsigned i = 0; i < runs; ++i) {
        auto o = ours();
        if (!o) {
            std::fprintf(stderr, "hvbench %s/%s: ours failed: %s\n", suite_.c_str(),
                         spec.name.c_str(), o.error().message().c_str());
            return hv::fail(o.error());
        }
        auto p = peer();
        if (!p) {
            std::fprintf(stderr, "hvbench %s/%s: peer failed: %s\n", suite_.c_str(),
                         spec.name.c_str(), p.error().message().c_str());
            return hv::fail(p.error());
        }
        std::fprintf(stderr, "hvbench %s/%s run %u/%u: ours %.4g %s, %s %.4g %s\n", suite_.c_str(),
                     spec.name.c_str(), i + 1, runs, o->value, spec.unit.c_str(), spec.peer.c_str(),
                     p->value, spec.unit.c_str());
        ov.push_back(o->value);
        op50.push_back(o->p50);
        op99.push_back(o->p99);
        pv.push_back(p->value);
        pp50.push_back(p->p50);
        pp99.push_back(p->p99);
    }
    CaseResult r;
    r.suite = suite_;
    r.spec = spec;
    if (after_runs) {
        after_runs(r.spec.config);
    }
    r.runs = runs;
    r.ours = {median(ov), median(op50), median(op99)};
    r.peer = {median(pv), median(pp50), median(pp99)};
    if (r.ours.value > 0 && r.peer.value > 0) {
        r.ratio = spec.higher_is_better ? r.ours.value / r.peer.value : r.peer.value / r.ours.value;
    }
    const std::string line = to_json_line(r, opts_.quick);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    results_.push_back(std::move(r));
    return {};
}

std::string to_json_line(const CaseResult& r, bool quick) {
    std::ostringstream o;
    o << "{\"suite\":\"" << json_escape(r.suite) << "\",\"case\":\"" << json_escape(r.spec.name)
      << "\",\"unit\":\"" << json_escape(r.spec.unit) << "\",\"value\":" << num(r.ours.value)
      << ",\"peer\":\"" << json_escape(r.spec.peer) << "\",\"peer_value\":" << num(r.peer.value)
      << ",\"ratio\":" << num(r.ratio) << ",\"better\":\""
      << (r.spec.higher_is_better ? "higher" : "lower") << "\",\"runs\":" << r.runs
      << ",\"quick\":" << (quick ? "true" : "false") << ",\"git_sha\":\"" << json_escape(git_sha())
      << "\",\"host\":\"" << json_escape(host_name()) << "\",\"cpu\":\"" << json_escape(cpu_model())
      << "\"";
    if (!std::isnan(r.ours.p50)) {
        o << ",\"p50_ns\":" << num(r.ours.p50) << ",\"p99_ns\":" << num(r.ours.p99)
          << ",\"peer_p50_ns\":" << num(r.peer.p50) << ",\"peer_p99_ns\":" << num(r.peer.p99);
    }
    for (const auto& [k, v] : r.spec.config) {
        o << ",\"cfg_" << json_escape(k) << "\":\"" << json_escape(v) << "\"";
    }
    o << "}";
    return o.str();
}

std::string ratio_chart_svg(const std::vector<CaseResult>& results) {
    const int label_w = 300, bar_w = 420, row_h = 26, top = 50, right = 80;
    const int width = label_w + bar_w + right;
    const int height = top + static_cast<int>(results.size()) * row_h + 40;
    double max_ratio = 1.0;
    for (const auto& r : results) {
        max_ratio = std::max(max_ratio, std::isfinite(r.ratio) ? r.ratio : 0.0);
    }
    max_ratio *= 1.1;
    auto x_of = [&](double ratio) {
        return label_w + static_cast<int>(std::clamp(ratio, 0.0, max_ratio) / max_ratio * bar_w);
    };
    std::ostringstream o;
    o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << ' ' << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">hvbench: ours vs peer "
         "(ratio &gt; 1 = ours better)</text>\n"
      << "<text x=\"10\" y=\"40\" fill=\"#555\">git " << xml_escape(git_sha()) << " on "
      << xml_escape(host_name()) << "</text>\n";
    int y = top;
    for (const auto& r : results) {
        const bool win = r.ratio >= 1.0;
        o << "<text x=\"" << label_w - 8 << "\" y=\"" << y + 17 << "\" text-anchor=\"end\">"
          << xml_escape(r.suite + "/" + r.spec.name + " vs " + r.spec.peer) << "</text>\n"
          << "<rect x=\"" << label_w << "\" y=\"" << y + 4 << "\" width=\""
          << std::max(1, x_of(r.ratio) - label_w) << "\" height=\"" << row_h - 8 << "\" fill=\""
          << (win ? "#3a7d44" : "#b5432f") << "\"/>\n"
          << "<text x=\"" << x_of(r.ratio) + 4 << "\" y=\"" << y + 17 << "\">" << num(r.ratio)
          << "x</text>\n";
        y += row_h;
    }
    const int x1 = x_of(1.0);
    o << "<line x1=\"" << x1 << "\" y1=\"" << top - 2 << "\" x2=\"" << x1 << "\" y2=\"" << y + 2
      << "\" stroke=\"black\" stroke-dasharray=\"4,3\"/>\n"
      << "<text x=\"" << x1 << "\" y=\"" << y + 18 << "\" text-anchor=\"middle\">1.0</text>\n"
      << "</svg>\n";
    return o.str();
}

const std::string& git_sha() {
    static const std::string sha = [] {
        if (const char* env = std::getenv("HV_GIT_SHA"); env != nullptr && *env != '\0') {
            return std::string(env);
        }
        std::string out;
        const std::string cmd = "git -C '" HV_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null";
        if (FILE* p = ::popen(cmd.c_str(), "r")) {
            char buf[128];
            while (std::fgets(buf, sizeof buf, p) != nullptr) {
                out += buf;
            }
            ::pclose(p);
        }
        out = trim(out);
        return out.empty() ? std::string("unknown") : out;
    }();
    return sha;
}

const std::string& host_name() {
    static const std::string name = [] {
        char buf[256] = {};
        if (::gethostname(buf, sizeof buf - 1) != 0) {
            return std::string("unknown");
        }
        return std::string(buf);
    }();
    return name;
}

const std::string& cpu_model() {
    static const std::string model = [] {
        std::ifstream in("/proc/cpuinfo");
        std::string line;
        while (std::getline(in, line)) {
            if (line.rfind("model name", 0) == 0) {
                const auto colon = line.find(':');
                if (colon != std::string::npos) {
                    return trim(line.substr(colon + 2));
                }
            }
        }
        return std::string("unknown");
    }();
    return model;
}

int allowed_cpu(unsigned index) noexcept {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) <= 1) {
        return -1;
    }
    unsigned want = index % static_cast<unsigned>(CPU_COUNT(&allowed));
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &allowed) && want-- == 0) {
            return cpu;
        }
    }
    return -1;
}

ScopedPin::ScopedPin(int cpu) noexcept {
    CPU_ZERO(&saved_);
    if (cpu < 0 || cpu >= CPU_SETSIZE ||
        ::pthread_getaffinity_np(::pthread_self(), sizeof saved_, &saved_) != 0) {
        return;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pinned_ = ::pthread_setaffinity_np(::pthread_self(), sizeof one, &one) == 0;
}

ScopedPin::~ScopedPin() {
    if (pinned_) {
        (void)::pthread_setaffinity_np(::pthread_self(), sizeof saved_, &saved_);
    }
}

void pin_to_cpu(unsigned index) noexcept {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        return;
    }
    const int count = CPU_COUNT(&allowed);
    if (count <= 1) {
        return;
    }
    unsigned want = index % static_cast<unsigned>(count);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &allowed)) {
            if (want == 0) {
                cpu_set_t one;
                CPU_ZERO(&one);
                CPU_SET(cpu, &one);
                (void)::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
                return;
            }
            --want;
        }
    }
}

}  // namespace hv::bench
