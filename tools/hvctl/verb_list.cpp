// hvctl list [-l] [NAME|ID...]: xl's domain table, or JSON with -l. Layer: tools.
#include <cstdio>
#include <ostream>

#include "cli.hpp"

namespace hv::tools {

namespace {

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (u < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", u);
            out += buf;
        } else {
            out.push_back(c);
        }
    }
    return out + "\"";
}

}  // namespace

std::string state_flags(char state) {
    // SPEC: xl list's State column: one position per flag, r b p s c d.
    std::string f = "------";
    static constexpr std::string_view letters = "rbpscd";
    const auto pos = letters.find(state);
    if (pos != std::string_view::npos) {
        f[pos] = state;
    }
    return f;
}

std::string format_list(std::span<const DomainRow> rows) {
    std::string out;
    char line[256];
    std::snprintf(line, sizeof line, "%-40s %5s %5s %5s     %-6s  %8s\n", "Name", "ID", "Mem",
                  "VCPUs", "State", "Time(s)");
    out += line;
    for (const DomainRow& r : rows) {
        std::snprintf(line, sizeof line, "%-40s %5u %5llu %5u     %s  %8.1f\n", r.name.c_str(),
                      static_cast<unsigned>(r.domid),
                      static_cast<unsigned long long>(r.memory_pages / 256),
                      static_cast<unsigned>(r.vcpus), state_flags(r.state).c_str(),
                      static_cast<double>(r.cpu_time_ns) / 1e9);
        out += line;
    }
    return out;
}

std::string format_list_long(std::span<const DomainRow> rows) {
    std::string out = "[\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const DomainRow& r = rows[i];
        out += "    {\n";
        out += "        \"domid\": " + std::to_string(r.domid) + ",\n";
        out += "        \"name\": " + json_string(r.name) + ",\n";
        out += "        \"memory_pages\": " + std::to_string(r.memory_pages) + ",\n";
        out += "        \"memory_mib\": " + std::to_string(r.memory_pages / 256) + ",\n";
        out += "        \"state\": " + json_string(state_flags(r.state)) + ",\n";
        out += "        \"cpu_time_ns\": " + std::to_string(r.cpu_time_ns) + ",\n";
        out += "        \"vcpus\": " + std::to_string(r.vcpus) + ",\n";
        out += "        \"pid\": " + std::to_string(r.pid) + ",\n";
        out += std::string("        \"trusted\": ") + (r.trusted ? "true" : "false") + ",\n";
        out += std::string("        \"driver_domain\": ") + (r.driver_domain ? "true" : "false") +
               ",\n";
        out += "        \"target_kib\": " + std::to_string(r.target_kib) + ",\n";
        out += "        \"static_max_kib\": " + std::to_string(r.static_max_kib) + "\n";
        out += i + 1 < rows.size() ? "    },\n" : "    }\n";
    }
    return out + "]\n";
}

int verb_list(Cli& cli, std::span<const std::string> args) {
    bool long_form = false;
    std::vector<std::string> wanted;
    for (const std::string& a : args) {
        if (a == "-l" || a == "--long") {
            long_form = true;
        } else if (!a.empty() && a[0] == '-') {
            return verb_usage(cli, "list", "unknown option '" + a + "'");
        } else {
            wanted.push_back(a);
        }
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto rows = c->list();
    if (!rows) {
        cli.err << "hvctl list: " << rows.error().message() << "\n";
        return kExitFailure;
    }
    std::vector<DomainRow> shown;
    if (wanted.empty()) {
        shown = *rows;
    } else {
        for (const std::string& w : wanted) {
            auto r = resolve_domain(*rows, w);
            if (!r) {
                cli.err << "hvctl list: " << r.error() << "\n";
                return kExitFailure;
            }
            shown.push_back(*r);
        }
    }
    cli.out << (long_form ? format_list_long(shown) : format_list(shown));
    return kExitOk;
}

}  // namespace hv::tools
