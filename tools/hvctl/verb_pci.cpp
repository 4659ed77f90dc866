// hvctl pci-assignable-add/-remove/-list and pci-attach/-detach/-list (xl's verbs and tables;
// the hot-plug transactions of xen-abi §7.4). Layer: tools.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ostream>
#include <system_error>

#include "cli.hpp"
#include "devices.hpp"
#include "pci.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

namespace {

constexpr auto kPciTimeout = std::chrono::seconds(10);  // libxl's backend waits
constexpr unsigned kTransactionRetries = 20;
constexpr long long kConnected = 4;
constexpr long long kClosing = 5;
constexpr long long kClosed = 6;

std::optional<std::vector<DomainRow>> domains(Cli& cli, Control& c, std::string_view verb) {
    auto rows = c.list();
    if (!rows) {
        cli.err << "hvctl " << verb << ": " << rows.error().message() << "\n";
        return std::nullopt;
    }
    return std::move(*rows);
}

/// The start of a verb on one device: its BDF, the connection and the live domains.
struct DeviceVerb {
    PciAddr addr;
    Control* c = nullptr;
    std::vector<DomainRow> rows;
};
/// nullopt after printing why, with `rc` set: 2 for a bad BDF, 1 when hv-min fails.
std::optional<DeviceVerb> start_device_verb(Cli& cli, std::string_view verb,
                                            const std::string& bdf, int& rc) {
    auto a = parse_bdf_arg(bdf);
    if (!a) {
        rc = verb_usage(cli, verb, "bad BDF '" + bdf + "': " + a.error());
        return std::nullopt;
    }
    rc = kExitFailure;
    Control* c = cli.control();
    auto rows = c != nullptr ? domains(cli, *c, verb) : std::nullopt;
    if (!rows) {
        return std::nullopt;
    }
    return DeviceVerb{*a, c, std::move(*rows)};
}

std::string holder_name(std::span<const DomainRow> rows, std::uint16_t domid) {
    for (const DomainRow& r : rows) {
        if (r.domid == domid) {
            return r.name + " (id " + std::to_string(domid) + ")";
        }
    }
    return "id " + std::to_string(domid);
}

/// Runs the transaction `build()` returns until it commits; ECANCELED (a guard failed:
/// something moved meanwhile) builds it again from a fresh read, a bounded number of times.
/// `build` returns nullopt when the fresh read shows the operation no longer applies.
Result<void> run_guarded(Control& c,
                         const std::function<std::optional<std::vector<StoreOp>>()>& build) {
    for (unsigned attempt = 0; attempt < kTransactionRetries; ++attempt) {
        auto ops = build();
        if (!ops) {
            return fail_errno(ECANCELED);
        }
        auto r = c.store_transaction(*ops);
        if (r || r.error() != std::errc::operation_canceled) {
            return r;
        }
    }
    return fail_errno(EAGAIN);
}

/// The backend dir's nodes (name -> value), for renumbering.
std::map<std::string, std::string> backend_nodes(Control& c, const std::string& dir) {
    std::map<std::string, std::string> keys;
    if (auto names = c.list_store(dir)) {
        for (const std::string& n : *names) {
            if (auto v = read_node(c, dir + "/" + n)) {
                keys.emplace(n, std::move(*v));
            }
        }
    }
    return keys;
}

long long backend_state(Control& c, const std::string& bdir) {
    return read_number(c, bdir + "/state");
}

/// Waits (bounded) for both ends of the bus at `bdir` to be Connected; false after printing
/// why. The frontend too: after a withdrawn hot-plug it may still be in Reconfiguring (it
/// answered our 7 and rescans once the backend answers its ops again); a new request's 7 would
/// then find it there, the backend would take that stale answer for the new round and go to
/// Reconfigured before the frontend came back to Connected, which then never rescans (Linux
/// pcifront too rescans on Reconfigured only from Reconfiguring).
bool wait_connected(Cli& cli, Control& c, std::string_view verb, const std::string& bdir) {
    long long st = -1;
    long long fst = -1;
    const auto fdir = read_node(c, bdir + "/frontend");
    const bool both = poll_until(
        [&] {
            st = backend_state(c, bdir);
            fst = fdir ? read_number(c, *fdir + "/state") : -1;
            return st == kConnected && fst == kConnected;
        },
        kPciTimeout);
    if (both) {
        return true;
    }
    cli.err << "hvctl " << verb << ": pci bus at " << bdir << " is not ready (backend state "
            << st << ", frontend state " << fst << ", not both Connected within "
            << std::chrono::duration_cast<std::chrono::seconds>(kPciTimeout).count()
            << " s: is the guest's pcifront connected?)\n";
    return false;
}

int hotplug_attach(Cli& cli, Control& c, const DomainRow& dom, const PciSpec& spec,
                   const PciBackend& found) {
    const std::string& bdir = found.dir;
    if (!wait_connected(cli, c, "pci-attach", bdir)) {
        return kExitFailure;
    }
    unsigned slot = 0;
    auto done = run_guarded(c, [&]() -> std::optional<std::vector<StoreOp>> {
        const long long n = read_number(c, bdir + "/num_devs");
        if (n < 0 || n >= 256) {
            return std::nullopt;
        }
        slot = static_cast<unsigned>(n);
        return pci_attach_ops(bdir, spec, slot);
    });
    if (!done) {
        cli.err << "hvctl pci-attach: " << dom.name << ": " << bdir << ": "
                << done.error().message() << "\n";
        return kExitFailure;
    }
    // §7.4: the backend exports it (state-N = 3) and goes 7 -> 8 -> 4 with the frontend.
    const std::string st_n = bdir + "/state-" + std::to_string(slot);
    long long st = -1;
    if (poll_until(
            [&] {
                st = backend_state(c, bdir);
                return (st == kConnected && read_number(c, st_n) == 3) || st == kClosing ||
                       st == kClosed;
            },
            kPciTimeout) &&
        st == kConnected) {
        return kExitOk;
    }
    const long long slot_state = read_number(c, st_n);
    // No answer: take back what the request wrote (slot N, the num_devs bump, state 7), so
    // the bus is as before and a later attach works. Guarded: if the backend moved meanwhile
    // (it exported the slot after all, or closed), the slot stays for pci-list/pci-detach.
    auto undo = run_guarded(c, [&]() -> std::optional<std::vector<StoreOp>> {
        if (read_number(c, bdir + "/num_devs") != slot + 1 || backend_state(c, bdir) != 7 ||
            read_number(c, st_n) != 1) {
            return std::nullopt;
        }
        return pci_undo_attach_ops(bdir, spec, slot);
    });
    cli.err << "hvctl pci-attach: " << dom.name << ": " << to_string(pci_addr(spec))
            << ": the backend did not complete the hot-plug within "
            << std::chrono::duration_cast<std::chrono::seconds>(kPciTimeout).count()
            << " s (backend state " << st << ", slot " << slot << " state " << slot_state
            << (undo ? "); the request was withdrawn\n"
                     : "); see pci-list, pci-detach -f\n");
    return kExitFailure;
}

}  // namespace

bool pci_check_free(Cli& cli, Control& c, std::string_view verb,
                std::span<const DomainRow> rows, const std::map<PciAddr, PciBackend>& held,
                const PciAddr& a) {
    if (!assignable_driver(c, a)) {
        cli.err << "hvctl " << verb << ": " << to_string(a)
                << " is not assignable (see hvctl pci-assignable-add)\n";
        return false;
    }
    if (auto it = held.find(a); it != held.end()) {
        cli.err << "hvctl " << verb << ": " << to_string(a) << " is already assigned to domain "
                << holder_name(rows, it->second.frontend) << "\n";
        return false;
    }
    return true;
}

int make_pci_assignable(Cli& cli, Control& c, std::string_view verb, const PciAddr& a) {
    const std::string key = std::string(kPciAssignableDir) + "/" + registry_name(a);
    const PciHost host;
    std::string driver;
    // A host device takes precedence over an emulated one of the same address, so a
    // device some driver uses is never recorded without being unbound first.
    if (host.exists(a)) {
        auto d = host.driver(a);
        if (!d) {
            cli.err << "hvctl " << verb << ": " << to_string(a) << ": its driver: "
                    << d.error().message() << "\n";
            return kExitFailure;
        }
        driver = *d;
        if (auto u = host.unbind(a, driver); !u) {
            cli.err << "hvctl " << verb << ": " << to_string(a) << ": unbinding it from "
                    << (driver.empty() ? "<none>" : driver) << ": " << u.error().message()
                    << (u.error() == std::errc::operation_not_supported
                            ? " (the driver allows no unbinding through sysfs)"
                            : "")
                    << "\n";
            return kExitFailure;
        }
    } else if (!is_emulated(c, a)) {
        cli.err << "hvctl " << verb << ": no PCI device " << to_string(a)
                << " on this host (and pciback emulates none at that address)\n";
        return kExitFailure;
    }
    if (auto w = c.store_transaction({{StoreOp::Kind::write, key, driver}}); !w) {
        cli.err << "hvctl " << verb << ": " << to_string(a) << ": recording it: "
                << w.error().message() << "\n";
        if (host.exists(a)) {
            (void)host.rebind(a, driver);
        }
        return kExitFailure;
    }
    return kExitOk;
}

int verb_pci_assignable_add(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 1 || (args[0].size() > 1 && args[0][0] == '-')) {
        return verb_usage(cli, "pci-assignable-add",
                          args.empty()      ? "which device?"
                          : args.size() > 1 ? "too many arguments"
                                            : "unknown option '" + args[0] + "'");
    }
    int rc = kExitUsage;
    auto v = start_device_verb(cli, "pci-assignable-add", args[0], rc);
    if (!v) {
        return rc;
    }
    const PciAddr* a = &v->addr;
    Control* c = v->c;
    const auto* rows = &v->rows;
    const auto held = pci_assignments(*c, *rows);
    if (auto it = held.find(*a); it != held.end()) {
        cli.err << "hvctl pci-assignable-add: " << to_string(*a) << " is assigned to domain "
                << holder_name(*rows, it->second.frontend) << "\n";
        return kExitFailure;
    }
    if (assignable_driver(*c, *a)) {
        cli.err << "warning: " << to_string(*a) << " is already assignable\n";  // xl: not an error
        return kExitOk;
    }
    return make_pci_assignable(cli, *c, "pci-assignable-add", *a);
}

int verb_pci_assignable_remove(Cli& cli, std::span<const std::string> args) {
    bool rebind = false;
    std::vector<std::string> pos;
    for (const std::string& s : args) {
        if (s == "-r") {
            rebind = true;
        } else if (s.size() > 1 && s[0] == '-') {
            return verb_usage(cli, "pci-assignable-remove", "unknown option '" + s + "'");
        } else {
            pos.push_back(s);
        }
    }
    if (pos.size() != 1) {
        return verb_usage(cli, "pci-assignable-remove",
                          pos.empty() ? "which device?" : "too many arguments");
    }
    int rc = kExitUsage;
    auto v = start_device_verb(cli, "pci-assignable-remove", pos[0], rc);
    if (!v) {
        return rc;
    }
    const PciAddr* a = &v->addr;
    Control* c = v->c;
    const auto* rows = &v->rows;
    const auto driver = assignable_driver(*c, *a);
    if (!driver) {
        cli.err << "hvctl pci-assignable-remove: " << to_string(*a) << " is not assignable\n";
        return kExitFailure;
    }
    const auto held = pci_assignments(*c, *rows);
    if (auto it = held.find(*a); it != held.end()) {
        cli.err << "hvctl pci-assignable-remove: " << to_string(*a) << " is assigned to domain "
                << holder_name(*rows, it->second.frontend) << " (pci-detach it first)\n";
        return kExitFailure;
    }
    const PciHost host;
    if (host.exists(*a)) {
        // Without -r the device is given back with no driver, as xl leaves it.
        if (auto r = host.rebind(*a, rebind ? *driver : std::string()); !r) {
            cli.err << "hvctl pci-assignable-remove: " << to_string(*a) << ": rebinding "
                    << (driver->empty() ? "<none>" : *driver) << ": " << r.error().message()
                    << "; it stays assignable\n";
            return kExitFailure;
        }
    }
    const std::string key = std::string(kPciAssignableDir) + "/" + registry_name(*a);
    if (auto r = c->store_transaction({{StoreOp::Kind::remove, key, {}}}); !r) {
        cli.err << "hvctl pci-assignable-remove: " << to_string(*a) << ": "
                << r.error().message() << "\n";
        return kExitFailure;
    }
    return kExitOk;
}

int verb_pci_assignable_list(Cli& cli, std::span<const std::string> args) {
    if (!args.empty()) {
        return verb_usage(cli, "pci-assignable-list",
                          args[0].size() > 1 && args[0][0] == '-'
                              ? "unknown option '" + args[0] + "'"
                              : std::string("takes no arguments"));
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    for (const PciAddr& a : assignable_devices(*c)) {
        cli.out << to_string(a) << "\n";
    }
    return kExitOk;
}

int verb_pci_attach(Cli& cli, std::span<const std::string> args) {
    // `DOM BDF backend=NAME` is `DOM BDF,backend=NAME`.
    const bool backend_arg = args.size() == 3 && args[2].starts_with("backend=");
    if ((args.size() != 2 && !backend_arg) || (args[0].size() > 1 && args[0][0] == '-')) {
        return verb_usage(cli, "pci-attach",
                          args.size() < 2   ? "needs a domain and a BDF"
                          : args.size() > 2 ? "too many arguments"
                                            : "unknown option '" + args[0] + "'");
    }
    const std::string text = backend_arg ? args[1] + "," + args[2] : args[1];
    auto spec = parse_pci_spec(text);
    if (!spec) {
        return verb_usage(cli, "pci-attach", "bad pci spec '" + text + "': " + spec.error().text);
    }
    if (spec->all_functions) {
        return verb_usage(cli, "pci-attach", "'" + args[1] + "': attach each function (.F) by itself");
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto rows = domains(cli, *c, "pci-attach");
    auto dom = rows ? lookup_domain(cli, *c, "pci-attach", args[0]) : std::nullopt;
    if (!dom) {
        return kExitFailure;
    }
    if (dom->domid == 0) {
        cli.err << "hvctl pci-attach: Domain-0 owns the host's devices already\n";
        return kExitFailure;
    }
    const PciAddr a = pci_addr(*spec);
    if (spec->seize && !assignable_driver(*c, a)) {  // xl's seize=1: make it assignable first
        if (const int r = make_pci_assignable(cli, *c, "pci-attach", a); r != kExitOk) {
            return r;
        }
    }
    if (!pci_check_free(cli, *c, "pci-attach", *rows, pci_assignments(*c, *rows), a)) {
        return kExitFailure;
    }
    const auto be = pci_backend_domain(cli, "pci-attach", *rows, spec->backend);
    if (!be) {
        return kExitFailure;
    }
    const auto found = find_pci_backend(*c, *rows, dom->domid);
    if (found && !spec->backend.empty() && found->backend != be->domid) {
        // SPEC: §7.3 one pci backend directory per guest.
        cli.err << "hvctl pci-attach: " << dom->name << "'s PCI bus is served by "
                << holder_name(*rows, found->backend) << ", not " << be->name
                << ": one backend serves a domain's PCI bus\n";
        return kExitFailure;
    }
    // The backend checks the registry before it exports the device: it must be able to read
    // this entry (and, in a driver domain, no other).
    if (auto r = c->store_transaction({pci_registry_perms(a, found ? found->backend : be->domid)});
        !r) {
        cli.err << "hvctl pci-attach: " << to_string(a) << ": registry permissions: "
                << r.error().message() << "\n";
        return kExitFailure;
    }
    if (found) {
        return hotplug_attach(cli, *c, *dom, *spec, *found);
    }
    // The domain's first device: its pci device is created with it, and the backend exports
    // it (state-0 = 3) before the frontend connects.
    const PciSpec one[] = {*spec};
    return attach_device(cli, *c, "pci-attach", *dom, pci_device(one, dom->name, spec->backend),
                         kPciTimeout, [](Control& cc, const std::string& bdir, long long st) {
                             return st >= 2 && st <= kConnected &&
                                    read_number(cc, bdir + "/state-0") == 3;
                         });
}

int verb_pci_detach(Cli& cli, std::span<const std::string> args) {
    const DetachArgs d = split_detach_args(args);
    if (!d.bad.empty()) {
        return verb_usage(cli, "pci-detach", "unknown option '" + d.bad + "'");
    }
    if (d.positional.size() != 2) {
        return verb_usage(cli, "pci-detach", d.positional.size() < 2 ? "needs a domain and a BDF"
                                                                     : "too many arguments");
    }
    int rc = kExitUsage;
    auto v = start_device_verb(cli, "pci-detach", d.positional[1], rc);
    if (!v) {
        return rc;
    }
    const PciAddr* a = &v->addr;
    Control* c = v->c;
    const auto* rows = &v->rows;
    auto dom = lookup_domain(cli, *c, "pci-detach", d.positional[0]);
    if (!dom) {
        return kExitFailure;
    }
    const auto found = find_pci_backend(*c, *rows, dom->domid);
    auto slot_of = [&](const PciBackend& b) -> std::optional<unsigned> {
        for (const PciSlot& s : b.slots) {
            if (s.addr == *a) {
                return s.index;
            }
        }
        return std::nullopt;
    };
    if (!found || !slot_of(*found)) {
        cli.err << "hvctl pci-detach: " << to_string(*a) << " is not assigned to " << dom->name
                << "\n";
        return kExitFailure;
    }
    const std::string& bdir = found->dir;
    bool reconfigured = false;
    if (wait_connected(cli, *c, "pci-detach", bdir)) {
        auto req = run_guarded(*c, [&]() -> std::optional<std::vector<StoreOp>> {
            auto b = read_pci_backend(*c, found->backend, dom->domid);
            auto i = b ? slot_of(*b) : std::nullopt;
            if (!i) {
                return std::nullopt;
            }
            return pci_detach_request_ops(bdir, *i, *a);
        });
        // §7.4: the toolstack waits for the backend to be back at Connected (7 -> 8 -> 4).
        reconfigured = req && poll_until([&] { return backend_state(*c, bdir) == kConnected; },
                                         kPciTimeout);
        if (!reconfigured) {
            cli.err << "hvctl pci-detach: " << dom->name << ": " << to_string(*a) << ": "
                    << (req ? "the backend did not finish the unplug" : req.error().message())
                    << (d.force ? "; removing it anyway (--force)\n"
                                : "; the device is left in place (use --force to remove it "
                                  "anyway)\n");
        }
    } else if (d.force) {
        cli.err << "warning: " << dom->name << ": removing " << to_string(*a)
                << " without the backend (--force)\n";
    }
    if (!reconfigured && !d.force) {
        return kExitFailure;
    }
    auto rm = run_guarded(*c, [&]() -> std::optional<std::vector<StoreOp>> {
        auto b = read_pci_backend(*c, found->backend, dom->domid);
        auto i = b ? slot_of(*b) : std::nullopt;
        if (!i) {
            return std::nullopt;
        }
        return pci_remove_slot_ops(bdir, backend_nodes(*c, bdir), *i,
                                   static_cast<unsigned>(b->slots.size()));
    });
    if (!rm) {
        cli.err << "hvctl pci-detach: " << dom->name << ": removing " << to_string(*a)
                << "'s keys: " << rm.error().message() << "\n";
        return kExitFailure;
    }
    if (found->backend != 0 && assignable_driver(*c, *a)) {
        // The driver domain no longer serves it: its registry entry is dom0's alone again.
        (void)c->store_transaction({pci_registry_perms(*a, 0)});
    }
    return kExitOk;
}

int verb_pci_list(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 1 || (args[0].size() > 1 && args[0][0] == '-')) {
        return verb_usage(cli, "pci-list",
                          args.empty()      ? "which domain?"
                          : args.size() > 1 ? "too many arguments"
                                            : "unknown option '" + args[0] + "'");
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto rows = domains(cli, *c, "pci-list");
    auto dom = rows ? lookup_domain(cli, *c, "pci-list", args[0]) : std::nullopt;
    if (!dom) {
        return kExitFailure;
    }
    std::vector<PciSlot> slots;
    if (auto b = find_pci_backend(*c, *rows, dom->domid)) {
        slots = std::move(b->slots);
    }
    cli.out << format_pci_list(slots);
    return kExitOk;
}

std::string format_pci_list(std::span<const PciSlot> slots) {
    std::string out = "Vdev Device\n";
    char line[64];
    for (const PciSlot& s : slots) {
        if (!s.addr) {
            continue;  // not a device the toolstack wrote
        }
        if (s.vdev) {
            std::snprintf(line, sizeof line, "%02x.%01x %s\n", s.vdev->dev, s.vdev->func,
                          to_string(*s.addr).c_str());
        } else {
            std::snprintf(line, sizeof line, "--.- %s\n", to_string(*s.addr).c_str());
        }
        out += line;
    }
    return out;
}

}  // namespace hv::tools
