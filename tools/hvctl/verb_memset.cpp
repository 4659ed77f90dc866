// hvctl mem-set NAME|ID MEM: the domain's memory target, as xl mem-set writes it.
// Layer: tools. One thread.
#include <cctype>
#include <ostream>

#include "cli.hpp"

namespace hv::tools {

std::optional<std::uint64_t> parse_mem_size_kib(std::string_view s) {
    // SPEC: xl's parse_mem_size_kb: decimal, one optional unit letter (b k m g t, any case),
    // MiB when none.
    std::uint64_t v = 0;
    std::size_t i = 0;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
        if (v > (UINT64_MAX - 9) / 10) {
            return std::nullopt;
        }
        v = v * 10 + static_cast<std::uint64_t>(s[i] - '0');
    }
    if (i == 0 || s.size() - i > 1) {
        return std::nullopt;
    }
    const char unit =
        i < s.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(s[i]))) : 'm';
    unsigned shift = 0;  // KiB = v << shift
    switch (unit) {
        case 'b':
            return v / 1024;
        case 'k':
            shift = 0;
            break;
        case 'm':
            shift = 10;
            break;
        case 'g':
            shift = 20;
            break;
        case 't':
            shift = 30;
            break;
        default:
            return std::nullopt;
    }
    if (v > (UINT64_MAX >> (shift + 2))) {  // leave room for KiB -> bytes in callers
        return std::nullopt;
    }
    return v << shift;
}

int verb_memset(Cli& cli, std::span<const std::string> args) {
    for (const std::string& a : args) {
        if (!a.empty() && a[0] == '-') {
            return verb_usage(cli, "mem-set", "unknown option '" + a + "'");
        }
    }
    if (args.size() != 2) {
        return verb_usage(
            cli, "mem-set",
            args.size() < 2 ? "which domain and how much memory?" : "too many arguments");
    }
    const auto kib = parse_mem_size_kib(args[1]);
    if (!kib) {
        return verb_usage(cli, "mem-set",
                          "invalid memory size '" + args[1] + "' (a number with k, m, g or t)");
    }
    if (*kib == 0) {
        return verb_usage(cli, "mem-set", "memory must be at least 1k");
    }
    const auto dom = lookup_domain(cli, "mem-set", args[0]);
    if (!dom) {
        return kExitFailure;
    }
    Control* c = cli.control();  // connected by lookup_domain
    if (dom->domid == 0) {
        cli.err << "hvctl mem-set: Domain-0's memory is the host's; it has no target to set\n";
        return kExitFailure;
    }
    // maxmem (static-max) when the toolstack recorded it, else what hv-min allocated.
    const std::uint64_t max_kib =
        dom->static_max_kib != 0 ? dom->static_max_kib : dom->memory_pages * 4;
    if (*kib > max_kib) {
        cli.err << "hvctl mem-set: " << dom->name << ": " << *kib << " KiB is above maxmem ("
                << max_kib << " KiB)\n";
        return kExitFailure;
    }
    auto r = c->set_memory(dom->domid, std::nullopt, *kib);
    if (!r) {
        cli.err << "hvctl mem-set: " << dom->name << ": " << r.error().message() << "\n";
        return kExitFailure;
    }
    return kExitOk;
}

}  // namespace hv::tools
