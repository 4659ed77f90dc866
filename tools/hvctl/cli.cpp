// hvctl dispatch: global options, the verb table with each verb's help, usage errors.
// Layer: tools. One thread.
#include "cli.hpp"

#include <algorithm>
#include <ostream>

namespace hv::tools {

namespace {

constexpr std::string_view general_help =
    "Exit status: 0 success, 1 failure (hv-min unreachable, bad domain file, operation\n"
    "failed), 2 usage error. Global options: --rundir DIR (default $HV_RUNDIR, else\n"
    "/run/hvkit: where hv-min's control socket is), -h/--help, --version.\n";

const Verb verb_table[] = {
    {"create", "[-n] [-q] [-c] [-e] CFG [KEY=VALUE...]", "Create a domain from an xl.cfg-style file",
     "Starts the domain described by CFG: hv-min gives it a domid, `memory` MiB of memory,\n"
     "a grant table, event channels and a XenStore connection, then runs `kernel` with\n"
     "`cmdline` split into arguments. KEY=VALUE arguments replace keys of the file, as\n"
     "with xl (e.g. memory=128 'name=\"other\"').\n"
     "  -n  dry run: parse and print the configuration, create nothing\n"
     "  -q  quiet: print nothing on success\n"
     "  -c  attach to the console right after creating (see `hvctl help console`)\n"
     "  -e  start no watcher: the domain's death leaves what the toolstack wrote for it\n"
     "Keys: name, memory, maxmem, vcpus, type=\"pv\", kernel, cmdline, root, extra,\n"
     "disk, vif, pci (written as libxl does), driver_domain, trusted,\n"
     "on_poweroff, on_reboot, on_crash. As with xl, a watcher in the background (log:\n"
     "$HVCTL_LOG_DIR, default /var/log/hvkit, hvctl-NAME.log) waits for the domain's\n"
     "death and applies on_poweroff (its program exited with 0) or on_crash (anything\n"
     "else): destroy (the default) removes its devices and XenStore home as `destroy`\n"
     "does, preserve keeps them, restart cleans up and creates it again from CFG.\n"
     "A disk or vif with backend=NAME is served by the\n"
     "driver domain NAME (one created with driver_domain = 1 whose kernel is blkback,\n"
     "netback or hv-driver); so is a pci device with backend=NAME (kernel pciback; all of\n"
     "a domain's pci devices name the same one). The create fails if no domain has that name. trusted = 1\n"
     "lets a driver domain map its frontends' memory (zero copy); without it (isolated)\n"
     "it uses grant copies only. Errors in the file are reported as FILE:LINE: message.\n",
     verb_create},
    {"list", "[-l] [NAME|ID...]", "List domains",
     "Prints xl's table: Name ID Mem VCPUs State Time(s), Domain-0 first. Mem is MiB;\n"
     "VCPUs counts the threads of the domain's process; State is xl's rbpscd flags (r =\n"
     "running, d = dying); Time(s) is CPU time.\n"
     "  -l  long form: JSON with every field (pid, memory pages, trusted, driver_domain)\n",
     verb_list},
    {"destroy", "NAME|ID", "Terminate a domain immediately",
     "Kills the domain's program and releases everything it held (grants, mappings,\n"
     "event channels, XenStore watches); returns once the domain is gone. Its devices,\n"
     "and for a driver domain the devices it serves to other domains, are asked to close\n"
     "first (up to 5 s) and removed afterwards. Domain-0 cannot be destroyed.\n",
     verb_destroy},
    {"info", "", "Print information about the host and hv-min",
     "Host name, kernel release, CPUs and memory, then hv-min's rundir and how many\n"
     "domains are running. Exits 1 if hv-min cannot be reached.\n",
     verb_info},
    {"console", "NAME|ID", "Attach to a domain's console",
     "Streams the domain's console (its program's stdout and stderr) and sends what you\n"
     "type to its stdin; recent output is shown first. The terminal is in raw mode while\n"
     "attached. Ctrl-] detaches (exit 0); the domain's death ends it too (exit 0).\n"
     "The console is also logged to $HV_RUNDIR/console/<domid>.log.\n",
     verb_console},
    {"mem-set", "NAME|ID MEM", "Set a domain's current memory",
     "Writes MEM to /local/domain/ID/memory/target in KiB, as xl does; `list` then shows\n"
     "it. MEM is a number with an optional unit b, k, m, g or t (MiB when none). Refused\n"
     "(exit 1) above the domain's maxmem (memory/static-max, written by create) and for\n"
     "Domain-0. hvkit has no balloon driver: the target is what the domain is asked to\n"
     "use; its memory stays allocated.\n",
     verb_memset},
    {"stat", "", "Print per-domain and per-device statistics once",
     "Two tables. Domains: Name ID State Mem(MiB) Max(MiB) Time(s) CPU(%) Devices.\n"
     "Devices (one row per vbd and vif): the backend domain and its xenbus state, and the\n"
     "backend's counters (statistics/* in its device directory, updated every second):\n"
     "Reads/Writes are requests (vbd) or packets received/sent by the guest (vif),\n"
     "RdBytes/WrBytes their bytes, Errors the failed requests (vbd) or dropped and bad\n"
     "packets (vif). '-' when the backend has written no statistics yet.\n",
     verb_stat},
    {"top", "[-b] [-n N] [-d SECS]", "Show domains and devices live, like xentop",
     "The `stat` tables refreshed every second, with CPU(%) over the last interval.\n"
     "q or Ctrl-C quits (exit 0).\n"
     "  -b       batch mode: print each refresh below the last, no terminal control\n"
     "  -n N     stop after N refreshes\n"
     "  -d SECS  seconds between refreshes (default 1)\n",
     verb_top},
    {"block-attach", "NAME|ID DISKSPEC", "Attach a virtual block device",
     "Hot-plugs a disk into a domain (running or not) with xl's disk spec syntax, e.g.\n"
     "  'format=raw, vdev=xvdb, access=rw, target=/srv/img.raw'   or   'phy:/dev/VG/LV,xvdb,w'\n"
     "Writes the device's frontend and backend directories, then waits up to 10 s for the\n"
     "backend (blkback, or the spec's backend=DOMAIN) to take it (InitWait or Connected).\n"
     "A guest running hv-guest exports it on NBD as <nbd-dir>/<vdev>.nbd once connected.\n"
     "Exit 1 (nothing left behind) if the domain does not exist, the vdev is in use, the\n"
     "backend domain does not exist, or the backend refuses the device or does not answer;\n"
     "exit 2 for a spec that does not parse.\n",
     verb_block_attach},
    {"block-detach", "[-f|--force] NAME|ID VDEV", "Detach a virtual block device",
     "Removes a disk as xl does: backend online=0 and state Closing, wait up to 10 s for the\n"
     "backend to reach Closed (the frontend closes first), then remove both directories.\n"
     "VDEV is a name (xvdb, hdc, sda) or the device number block-list shows.\n"
     "  -f, --force  remove the device even if its backend does not reach Closed\n"
     "Exit 1 if the device is not attached, or (without --force) it did not close in time:\n"
     "it is then left in place.\n",
     verb_block_detach},
    {"block-list", "NAME|ID...", "List a domain's virtual block devices",
     "Prints xl's table: Vdev BE handle state evt-ch ring-ref BE-path, one row per vbd.\n"
     "Vdev is the device number, BE the backend domid, handle the frontend's domid (as xl),\n"
     "state the frontend's XenbusState; evt-ch/ring-ref are the frontend's (its first queue\n"
     "and ring page when it uses several), -1 when not published. Exit 1 if a domain does\n"
     "not exist (the others are still listed).\n",
     verb_block_list},
    {"network-attach", "NAME|ID VIFSPEC", "Attach a network interface",
     "Hot-plugs a NIC with xl's vif spec syntax, e.g. 'bridge=xenbr0, mac=00:16:3e:00:00:01'\n"
     "(keys: bridge, mac, type, rate, mtu, vifname, devid, backend, ...). Without mac a\n"
     "random 00:16:3e MAC is chosen; without devid the next free one. Waits up to 10 s for\n"
     "the backend (netback) to take it. A guest running hv-guest gets it as eth<devid> in\n"
     "its own network namespace. An Open vSwitch bridge: type=ovs (or openvswitch), or\n"
     "script=vif-openvswitch as with xl.\n"
     "Exit 1 if the domain does not exist, the devid or mac is\n"
     "in use, or the backend refuses it or does not answer; exit 2 for a bad spec.\n",
     verb_network_attach},
    {"network-detach", "[-f|--force] NAME|ID DEVID|MAC", "Detach a network interface",
     "Removes a NIC (by devid or MAC) as xl does: backend online=0 and Closing, wait up to\n"
     "10 s for Closed, then remove both directories.\n"
     "  -f, --force  remove the device even if its backend does not reach Closed\n"
     "Exit 1 if there is no such NIC, or (without --force) it did not close in time.\n",
     verb_network_detach},
    {"network-list", "NAME|ID...", "List a domain's network interfaces",
     "Prints xl's table: Idx BE Mac Addr. handle state evt-ch tx-/rx-ring-ref BE-path, one\n"
     "row per vif (state is the frontend's; -1 where a key is not published). Exit 1 if a\n"
     "domain does not exist (the others are still listed).\n",
     verb_network_list},
    {"pci-assignable-add", "BDF", "Make a host PCI device assignable",
     "BDF is dddd:bb:dd.f or bb:dd.f. A host device is taken from its driver through sysfs\n"
     "(driver_override = pciback, then unbind); a device pciback emulates (pciback\n"
     "--emulate) is just recorded. Either is listed in /hvkit/pci/assignable with the\n"
     "driver it came from. A device already assignable is a warning (exit 0), as in xl.\n"
     "Exit 1 if no such device exists, it is assigned to a domain, or unbinding fails;\n"
     "exit 2 for a bad BDF.\n",
     verb_pci_assignable_add},
    {"pci-assignable-remove", "[-r] BDF", "Return an assignable PCI device to the host",
     "Removes the device from the assignable list.\n"
     "  -r  rebind it to the host driver it was taken from (driver_override cleared);\n"
     "      without -r it is left with no driver, as xl does\n"
     "Exit 1 if it is not assignable, is assigned to a domain (pci-detach it first), or\n"
     "rebinding fails (it then stays assignable); exit 2 for a bad BDF.\n",
     verb_pci_assignable_remove},
    {"pci-assignable-list", "", "List assignable PCI devices",
     "Prints one dddd:bb:dd.f per line, as xl does, whether or not a domain holds it.\n",
     verb_pci_assignable_list},
    {"pci-attach", "NAME|ID BDF[@VSLOT][,permissive=1,...][,backend=NAME]",
     "Hot-plug a PCI device into a domain",
     "Assigns an assignable device with xl's pci spec syntax (options permissive,\n"
     "msitranslate, power_mgmt, seize, rdm_policy; ours: backend=NAME, also as a third\n"
     "argument). A domain without PCI devices gets its pci device, served by pciback in\n"
     "Domain-0 or in the driver domain NAME (driver_domain = 1, kernel = pciback), and the\n"
     "command waits up to 10 s for pciback to export it. A domain's devices share one\n"
     "backend. Otherwise the backend must be Connected (the guest's pcifront is up;\n"
     "waited up to 10 s): the device is added to the next slot with state Reconfiguring in\n"
     "one transaction and the command waits up to 10 s for the guest to take it.\n"
     "Exit 1 if the domain does not exist, the device is not assignable or is assigned\n"
     "already, the backend domain does not exist or is not a driver domain, or the\n"
     "backend does not take it (an unanswered request is withdrawn); exit 2 for a bad spec.\n",
     verb_pci_attach},
    {"pci-detach", "[-f|--force] NAME|ID BDF", "Hot-unplug a PCI device from a domain",
     "Asks the guest to let go (slot state Closing, backend Reconfiguring), waits up to 10 s\n"
     "for the backend to be Connected again, then deletes the slot's keys and renumbers the\n"
     "higher slots down. The device stays assignable.\n"
     "  -f, --force  remove the slot even if the backend is not Connected or does not finish\n"
     "Exit 1 if the device is not assigned to the domain, or (without --force) the backend\n"
     "is not Connected or does not finish the unplug in time: it is then left in place.\n",
     verb_pci_detach},
    {"pci-list", "NAME|ID", "List a domain's PCI devices",
     "Prints xl's table: Vdev Device, one row per device; Vdev is the slot.function the\n"
     "guest sees (from the backend; --.- until it exported the device), Device the host BDF.\n"
     "Exit 1 if the domain does not exist.\n",
     verb_pci_list},
    {"help", "[VERB]", "Print help for hvctl or one verb", "", nullptr},
};

void print_usage(std::ostream& o) {
    o << "usage: hvctl [--rundir DIR] VERB [ARGS...]\n\nVerbs:\n";
    for (const Verb& v : verb_table) {
        std::string name(v.name);
        name.resize(std::max<std::size_t>(name.size(), 22), ' ');
        o << "  " << name << v.summary << '\n';
    }
    o << "\n'hvctl help VERB' or 'hvctl VERB --help' describes a verb.\n" << general_help;
}

void print_verb_help(std::ostream& o, const Verb& v) {
    o << "usage: hvctl " << v.name;
    if (!v.args.empty()) {
        o << ' ' << v.args;
    }
    o << "\n\n"
      << v.summary << ".\n";
    if (!v.help.empty()) {
        o << '\n' << v.help;
    }
    o << '\n' << general_help;
}

}  // namespace

Control* Cli::control() {
    if (control_) {
        return control_.get();
    }
    auto c = connect();
    if (!c) {
        err << "hvctl: cannot reach hv-min in " << rundir << ": " << c.error().message()
            << " (is hv-min running? see --rundir)\n";
        return nullptr;
    }
    control_ = std::move(*c);
    return control_.get();
}

std::span<const Verb> verbs() noexcept {
    return verb_table;
}

const Verb* find_verb(std::string_view name) noexcept {
    for (const Verb& v : verb_table) {
        if (v.name == name) {
            return &v;
        }
    }
    return nullptr;
}

int run_hvctl(Cli& cli, std::span<const std::string> args) {
    std::size_t i = 0;
    while (i < args.size() && !args[i].empty() && args[i][0] == '-') {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            print_usage(cli.out);
            return kExitOk;
        }
        if (a == "--version") {
            cli.out << "hvctl (hvkit) 0.1\n";
            return kExitOk;
        }
        if (a == "--rundir" && i + 1 < args.size()) {
            cli.rundir = args[i + 1];
            i += 2;
            continue;
        }
        if (a.rfind("--rundir=", 0) == 0) {
            cli.rundir = a.substr(9);
            ++i;
            continue;
        }
        cli.err << "hvctl: unknown option '" << a << "'\n";
        print_usage(cli.err);
        return kExitUsage;
    }
    if (i >= args.size()) {
        print_usage(cli.err);
        return kExitUsage;
    }
    const std::string& name = args[i];
    const std::span<const std::string> rest = args.subspan(i + 1);
    if (name == "__watch") {  // started by create, not a verb for people: not in the table
        return verb_watch(cli, rest);
    }
    const Verb* v = find_verb(name);
    if (v == nullptr) {
        cli.err << "hvctl: unknown verb '" << name << "'\n";
        print_usage(cli.err);
        return kExitUsage;
    }
    for (const std::string& a : rest) {
        if (a == "-h" || a == "--help") {
            print_verb_help(cli.out, *v);
            return kExitOk;
        }
    }
    if (name == "help") {
        if (rest.empty()) {
            print_usage(cli.out);
            return kExitOk;
        }
        const Verb* w = find_verb(rest[0]);
        if (w == nullptr || rest.size() > 1) {
            cli.err << "hvctl: help: unknown verb '" << rest[0] << "'\n";
            print_usage(cli.err);
            return kExitUsage;
        }
        print_verb_help(cli.out, *w);
        return kExitOk;
    }
    return v->run(cli, rest);
}

/// Prints "usage: hvctl VERB ARGS" for a verb's own argument errors.
int verb_usage(Cli& cli, std::string_view verb, std::string_view why) {
    const Verb* v = find_verb(verb);
    cli.err << "hvctl " << verb << ": " << why << "\nusage: hvctl " << verb;
    if (v != nullptr && !v->args.empty()) {
        cli.err << ' ' << v->args;
    }
    cli.err << "\n";
    return kExitUsage;
}

hv::expected<std::vector<std::string>, std::string> split_cmdline(std::string_view s) {
    std::vector<std::string> out;
    std::string cur;
    bool in_word = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n') {
            if (in_word) {
                out.push_back(std::move(cur));
                cur.clear();
                in_word = false;
            }
            continue;
        }
        in_word = true;
        if (c == '\'') {
            const auto end = s.find('\'', i + 1);
            if (end == std::string_view::npos) {
                return hv::unexpected(std::string("unterminated ' in cmdline"));
            }
            cur.append(s.substr(i + 1, end - i - 1));
            i = end;
        } else if (c == '"') {
            ++i;
            for (;; ++i) {
                if (i >= s.size()) {
                    return hv::unexpected(std::string("unterminated \" in cmdline"));
                }
                if (s[i] == '"') {
                    break;
                }
                if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '"' || s[i + 1] == '\\')) {
                    ++i;
                }
                cur.push_back(s[i]);
            }
        } else if (c == '\\') {
            if (i + 1 >= s.size()) {
                return hv::unexpected(std::string("cmdline ends with a backslash"));
            }
            cur.push_back(s[++i]);
        } else {
            cur.push_back(c);
        }
    }
    if (in_word) {
        out.push_back(std::move(cur));
    }
    return out;
}

std::optional<DomainRow> lookup_domain(Cli& cli, Control& c, std::string_view verb,
                                       std::string_view name_or_id) {
    auto rows = c.list();
    if (!rows) {
        cli.err << "hvctl " << verb << ": " << rows.error().message() << "\n";
        return std::nullopt;
    }
    auto dom = resolve_domain(*rows, name_or_id);
    if (!dom) {
        cli.err << "hvctl " << verb << ": " << dom.error() << "\n";
        return std::nullopt;
    }
    return *dom;
}

std::optional<DomainRow> lookup_domain(Cli& cli, std::string_view verb,
                                       std::string_view name_or_id) {
    Control* c = cli.control();
    if (c == nullptr) {
        return std::nullopt;
    }
    return lookup_domain(cli, *c, verb, name_or_id);
}

hv::expected<DomainRow, std::string> resolve_domain(std::span<const DomainRow> rows,
                                                    std::string_view name_or_id) {
    const bool numeric =
        !name_or_id.empty() && std::all_of(name_or_id.begin(), name_or_id.end(),
                                           [](char c) { return c >= '0' && c <= '9'; });
    for (const DomainRow& r : rows) {
        if (numeric ? (name_or_id.size() <= 5 && std::to_string(r.domid) == name_or_id)
                    : r.name == name_or_id) {
            return r;
        }
    }
    return hv::unexpected("no domain " + std::string(numeric ? "with id " : "named ") + "'" +
                          std::string(name_or_id) + "'");
}

}  // namespace hv::tools
