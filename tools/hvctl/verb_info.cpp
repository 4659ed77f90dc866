// hvctl info: host facts, then hv-min's. Layer: tools.
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <ostream>

#include "cli.hpp"

namespace hv::tools {

namespace {

void line(std::ostream& o, const char* key, const std::string& value) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%-23s: ", key);
    o << buf << value << "\n";
}

}  // namespace

int verb_info(Cli& cli, std::span<const std::string> args) {
    if (!args.empty()) {
        return verb_usage(cli, "info", "takes no arguments");
    }
    struct utsname u {};
    if (::uname(&u) == 0) {
        line(cli.out, "host", u.nodename);
        line(cli.out, "release", u.release);
        line(cli.out, "machine", u.machine);
    }
    line(cli.out, "nr_cpus", std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)));
    struct sysinfo si {};
    if (::sysinfo(&si) == 0) {
        const std::uint64_t unit = si.mem_unit;
        line(cli.out, "total_memory", std::to_string(si.totalram * unit >> 20));
        line(cli.out, "free_memory", std::to_string(si.freeram * unit >> 20));
    }
    line(cli.out, "hvkit_version", "0.1");
    line(cli.out, "rundir", cli.rundir);
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto rows = c->list();
    if (!rows) {
        cli.err << "hvctl info: " << rows.error().message() << "\n";
        return kExitFailure;
    }
    line(cli.out, "nr_domains", std::to_string(rows->size()));
    std::uint64_t pages = 0;
    for (const DomainRow& r : *rows) {
        pages += r.memory_pages;
    }
    line(cli.out, "domain_memory", std::to_string(pages / 256));
    return kExitOk;
}

}  // namespace hv::tools
