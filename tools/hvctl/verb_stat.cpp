// hvctl stat (one table) and hvctl top (the same table refreshed, like xentop): per domain
// and per device, from hv-min's domain list and the backends' `statistics/*` keys.
// Layer: tools. One thread.
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <ostream>

#include "cli.hpp"
#include "pci.hpp"

namespace hv::tools {

namespace {

/// One device of one domain, with its backend's counters. Reads and writes are from the
/// guest's side: a vbd's reads; a vif's packets received (rx) and sent (tx); a PCI device's
/// config-space reads and writes (no byte counts; its MSI and MSI-X ops are `extra`).
struct DeviceStat {
    std::uint16_t frontend = 0;
    AttachedDevice dev;
    std::string label;  // "vbd xvda", "vif 0"
    std::string state;  // the backend's XenbusState name
    bool has_stats = false;
    std::uint64_t reads = 0;
    std::uint64_t writes = 0;
    std::uint64_t read_bytes = 0;
    std::uint64_t written_bytes = 0;
    std::uint64_t errors = 0;
    bool has_bytes = true;
    std::string extra;  // appended after Errors (pci: "msi=N msix=M")
};

struct Snapshot {
    std::vector<DomainRow> domains;
    std::vector<DeviceStat> devices;
    std::chrono::steady_clock::time_point when;
};

std::string state_name(const std::string& value) {
    static constexpr const char* names[] = {"Unknown",     "Initialising",  "InitWait",
                                            "Initialised", "Connected",     "Closing",
                                            "Closed",      "Reconfiguring", "Reconfigured"};
    if (value.size() == 1 && value[0] >= '0' && value[0] <= '8') {
        return names[value[0] - '0'];
    }
    return value.empty() ? "-" : "?";
}

/// A counter the backend wrote; 0 when absent or not a decimal of at most 19 digits (a driver
/// domain may write anything in its own directory).
std::uint64_t counter(const std::map<std::string, std::string>& keys, const std::string& k) {
    const auto it = keys.find(k);
    if (it == keys.end() || it->second.empty() || it->second.size() > 19) {
        return 0;
    }
    std::uint64_t v = 0;
    for (char ch : it->second) {
        if (ch < '0' || ch > '9') {
            return 0;
        }
        v = v * 10 + static_cast<std::uint64_t>(ch - '0');
    }
    return v;
}

/// The counters the backend wrote under `dir` (name -> value).
std::map<std::string, std::string> read_counters(Control& c, const std::string& dir, bool& found) {
    std::map<std::string, std::string> keys;
    found = false;
    if (auto names = c.list_store(dir); names) {
        found = true;
        for (const std::string& k : *names) {
            if (auto v = c.read_store(dir + "/" + k); v) {
                keys[k] = *v;
            }
        }
    }
    return keys;
}

/// A pci bus: one row per device the backend exported (its validated `vdev-i`), with
/// pciback's `statistics/<vdev dddd-bb-dd-f>/{conf_read,conf_write,msi,msix,errors}`; one
/// "pci -" row while nothing is exported. Counters of devices no longer on the bus (left
/// behind by an unplug) are not shown.
void pci_stats(Control& c, std::uint16_t fe, const AttachedDevice& d, const std::string& state,
               std::vector<DeviceStat>& out) {
    DeviceStat base;
    base.frontend = fe;
    base.dev = d;
    base.state = state;
    base.has_bytes = false;
    const std::size_t before = out.size();
    if (auto b = read_pci_backend(c, d.backend, fe)) {
        for (const PciSlot& slot : b->slots) {
            if (!slot.vdev) {
                continue;
            }
            DeviceStat s = base;
            char label[32];
            std::snprintf(label, sizeof label, "pci %02x:%02x.%x", slot.vdev->bus, slot.vdev->dev,
                          slot.vdev->func);
            s.label = label;
            const auto keys = read_counters(
                c, b->dir + "/statistics/" + registry_name(*slot.vdev), s.has_stats);
            s.reads = counter(keys, "conf_read");
            s.writes = counter(keys, "conf_write");
            s.errors = counter(keys, "errors");
            s.extra = "msi=" + std::to_string(counter(keys, "msi")) +
                      " msix=" + std::to_string(counter(keys, "msix"));
            out.push_back(std::move(s));
        }
    }
    if (out.size() == before) {
        base.label = "pci -";
        out.push_back(std::move(base));
    }
}

void device_stats(Control& c, std::uint16_t fe, const AttachedDevice& d,
                  std::vector<DeviceStat>& out) {
    DeviceStat s;
    s.frontend = fe;
    s.dev = d;
    const std::string bdir = "/local/domain/" + std::to_string(d.backend) + "/backend/" + d.type +
                             "/" + std::to_string(fe) + "/" + std::to_string(d.devid);
    auto st = c.read_store(bdir + "/state");
    s.state = st ? state_name(*st) : "-";
    if (d.type == "pci") {
        pci_stats(c, fe, d, s.state, out);
        return;
    }
    std::string name = std::to_string(d.devid);
    if (d.type == "vbd") {
        // The backend domain owns this directory and may have rewritten `dev`: only a plain
        // device name is shown (no terminal control bytes reach `top`'s screen).
        auto dev = c.read_store(bdir + "/dev");
        if (dev && !dev->empty() && dev->size() < 16 &&
            std::all_of(dev->begin(), dev->end(), [](char ch) {
                return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
            })) {
            name = *dev;
        }
    }
    s.label = d.type + " " + name;
    const auto keys = read_counters(c, bdir + "/statistics", s.has_stats);
    if (d.type == "vbd") {
        s.reads = counter(keys, "rd_req");
        s.writes = counter(keys, "wr_req");
        s.read_bytes = counter(keys, "rd_sect") * 512;
        s.written_bytes = counter(keys, "wr_sect") * 512;
        s.errors = counter(keys, "errors");
    } else {
        s.reads = counter(keys, "rx_packets");
        s.writes = counter(keys, "tx_packets");
        s.read_bytes = counter(keys, "rx_bytes");
        s.written_bytes = counter(keys, "tx_bytes");
        s.errors =
            counter(keys, "tx_errors") + counter(keys, "tx_dropped") + counter(keys, "rx_dropped");
    }
    out.push_back(std::move(s));
}

Result<Snapshot> take_snapshot(Control& c) {
    Snapshot snap;
    auto rows = c.list();
    if (!rows) {
        return unexpected(rows.error());
    }
    snap.when = std::chrono::steady_clock::now();
    snap.domains = std::move(*rows);
    for (const DomainRow& r : snap.domains) {
        if (r.domid == 0) {
            continue;
        }
        auto devs = c.devices(r.domid);
        if (!devs) {
            continue;  // died meanwhile
        }
        for (const AttachedDevice& d : *devs) {
            device_stats(c, r.domid, d, snap.devices);
        }
    }
    return snap;
}

std::string domain_name(const Snapshot& s, std::uint16_t domid) {
    for (const DomainRow& r : s.domains) {
        if (r.domid == domid) {
            return r.name;
        }
    }
    return std::to_string(domid);
}

/// The two tables. `prev` (top): CPU(%) over the interval since it; otherwise "-".
std::string format_snapshot(const Snapshot& s, const Snapshot* prev) {
    std::string out;
    char line[320];
    std::snprintf(line, sizeof line, "%-24s %5s %-6s %8s %9s %8s %6s %7s\n", "Name", "ID", "State",
                  "Mem(MiB)", "Max(MiB)", "Time(s)", "CPU(%)", "Devices");
    out += line;
    for (const DomainRow& r : s.domains) {
        std::size_t ndev = 0;
        for (const DeviceStat& d : s.devices) {
            ndev += d.frontend == r.domid;
        }
        std::string cpu = "-";
        if (prev != nullptr) {
            for (const DomainRow& p : prev->domains) {
                const double secs = std::chrono::duration<double>(s.when - prev->when).count();
                if (p.domid == r.domid && p.pid == r.pid && secs > 0 &&
                    r.cpu_time_ns >= p.cpu_time_ns) {
                    std::snprintf(line, sizeof line, "%.1f",
                                  static_cast<double>(r.cpu_time_ns - p.cpu_time_ns) / 1e7 / secs);
                    cpu = line;
                }
            }
        }
        const std::string max =
            r.static_max_kib != 0 ? std::to_string(r.static_max_kib / 1024) : "-";
        std::snprintf(line, sizeof line, "%-24s %5u %-6s %8llu %9s %8.1f %6s %7zu\n",
                      r.name.c_str(), static_cast<unsigned>(r.domid), state_flags(r.state).c_str(),
                      static_cast<unsigned long long>(r.memory_pages / 256), max.c_str(),
                      static_cast<double>(r.cpu_time_ns) / 1e9, cpu.c_str(), ndev);
        out += line;
    }
    out += "\n";
    std::snprintf(line, sizeof line, "%-24s %-12s %-16s %-12s %10s %10s %12s %12s %7s\n", "Domain",
                  "Device", "Backend", "State", "Reads", "Writes", "RdBytes", "WrBytes", "Errors");
    out += line;
    for (const DeviceStat& d : s.devices) {
        const std::string be = domain_name(s, d.dev.backend);
        auto num = [&](std::uint64_t v, bool shown = true) {
            return d.has_stats && shown ? std::to_string(v) : std::string("-");
        };
        std::snprintf(line, sizeof line, "%-24s %-12s %-16s %-12s %10s %10s %12s %12s %7s",
                      domain_name(s, d.frontend).c_str(), d.label.c_str(), be.c_str(),
                      d.state.c_str(), num(d.reads).c_str(), num(d.writes).c_str(),
                      num(d.read_bytes, d.has_bytes).c_str(),
                      num(d.written_bytes, d.has_bytes).c_str(), num(d.errors).c_str());
        out += line;
        if (d.has_stats && !d.extra.empty()) {
            out += " " + d.extra;
        }
        out += "\n";
    }
    return out;
}

volatile sig_atomic_t g_stop = 0;

void on_stop(int) {
    g_stop = 1;
}

/// Restores the terminal and the signal handlers on every way out of `top`.
class TopSession {
public:
    explicit TopSession(bool raw) {
        struct sigaction sa {};
        sa.sa_handler = on_stop;  // no SA_RESTART: poll returns EINTR
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &old_int_);
        ::sigaction(SIGTERM, &sa, &old_term_);
        g_stop = 0;
        if (raw && ::tcgetattr(0, &saved_) == 0) {
            termios t = saved_;
            t.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
            t.c_cc[VMIN] = 0;
            t.c_cc[VTIME] = 0;
            raw_ = ::tcsetattr(0, TCSANOW, &t) == 0;
        }
    }
    TopSession(const TopSession&) = delete;
    TopSession& operator=(const TopSession&) = delete;
    ~TopSession() {
        if (raw_) {
            ::tcsetattr(0, TCSANOW, &saved_);
        }
        ::sigaction(SIGINT, &old_int_, nullptr);
        ::sigaction(SIGTERM, &old_term_, nullptr);
    }

private:
    termios saved_{};
    bool raw_ = false;
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
};

/// Waits up to `ms`; true when the user asked to quit (q, Ctrl-C, SIGTERM).
bool wait_or_quit(bool interactive, int ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (g_stop == 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now())
                              .count();
        if (left <= 0) {
            return false;
        }
        pollfd p{0, POLLIN, 0};
        const int n = ::poll(&p, interactive ? 1 : 0, static_cast<int>(left));
        if (n > 0 && interactive) {
            char ch = 0;
            if (::read(0, &ch, 1) == 1 && (ch == 'q' || ch == 'Q')) {
                return true;
            }
        }
    }
    return true;
}

}  // namespace

int verb_stat(Cli& cli, std::span<const std::string> args) {
    if (!args.empty()) {
        return verb_usage(
            cli, "stat",
            args[0][0] == '-' ? "unknown option '" + args[0] + "'" : "takes no arguments");
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto snap = take_snapshot(*c);
    if (!snap) {
        cli.err << "hvctl stat: " << snap.error().message() << "\n";
        return kExitFailure;
    }
    cli.out << format_snapshot(*snap, nullptr);
    return kExitOk;
}

int verb_top(Cli& cli, std::span<const std::string> args) {
    bool batch = false;
    long iterations = 0;  // 0: until stopped
    long delay_s = 1;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto number = [&](long& out, long min) -> bool {
            if (i + 1 >= args.size()) {
                return false;
            }
            const std::string& v = args[++i];
            char* end = nullptr;
            errno = 0;
            const long n = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || errno != 0 || n < min || n > 86400) {
                return false;
            }
            out = n;
            return true;
        };
        if (a == "-b" || a == "--batch") {
            batch = true;
        } else if (a == "-n" || a == "--iterations") {
            if (!number(iterations, 1)) {
                return verb_usage(cli, "top", "-n needs a count from 1");
            }
        } else if (a == "-d" || a == "--delay") {
            if (!number(delay_s, 1)) {
                return verb_usage(cli, "top", "-d needs seconds from 1");
            }
        } else {
            return verb_usage(cli, "top", "unknown argument '" + a + "'");
        }
    }
    if (!batch && ::isatty(0) == 0) {
        cli.err << "hvctl top: standard input is not a terminal (use -b for batch mode)\n";
        return kExitUsage;
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    TopSession session(!batch);
    std::optional<Snapshot> prev;
    for (long n = 0; iterations == 0 || n < iterations; ++n) {
        auto snap = take_snapshot(*c);
        if (!snap) {
            cli.err << "hvctl top: " << snap.error().message() << "\n";
            return kExitFailure;
        }
        if (!batch) {
            cli.out << "\033[H\033[2J";  // home, clear screen
        } else if (n > 0) {
            cli.out << "\n";
        }
        cli.out << format_snapshot(*snap, prev ? &*prev : nullptr);
        if (!batch) {
            cli.out << "\nq or Ctrl-C quits; refreshed every " << delay_s << " s\n";
        }
        cli.out.flush();
        prev = std::move(*snap);
        if (iterations != 0 && n + 1 == iterations) {
            break;
        }
        if (wait_or_quit(!batch, static_cast<int>(delay_s * 1000))) {
            break;
        }
    }
    return kExitOk;
}

}  // namespace hv::tools
