// PCI pass-through on the toolstack side: addresses, registry, backend keys, assignments and
// sysfs binding. Layer: tools. One thread.
#include "pci.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>

#include "devices.hpp"
#include "hv/unique_fd.hpp"

namespace hv::tools {

namespace {

std::string slot_key(std::string_view key, unsigned i) {
    return std::string(key) + "-" + std::to_string(i);
}

std::string registry_path(std::string_view dir, const PciAddr& a) {
    return std::string(dir) + "/" + registry_name(a);
}

}  // namespace

std::string pci_opts(const PciSpec& s) {
    // SPEC: xen-abi §7.3 opts-<i>; libxl's default rdm_policy for a device is relaxed.
    return "msitranslate=" + std::to_string(s.msitranslate ? 1 : 0) +
           ",power_mgmt=" + std::to_string(s.power_mgmt ? 1 : 0) +
           ",permissive=" + std::to_string(s.permissive ? 1 : 0) +
           ",rdm_policy=" + (s.rdm_policy.empty() ? std::string("relaxed") : s.rdm_policy);
}

std::map<std::string, std::string> pci_slot_keys(const PciSpec& s, unsigned i) {
    const std::string bdf = to_string(pci_addr(s));
    std::map<std::string, std::string> keys = {{slot_key("dev", i), bdf},
                                               {slot_key("key", i), bdf},
                                               {slot_key("opts", i), pci_opts(s)},
                                               {slot_key("state", i), "1"}};
    if (s.vslot) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%x", static_cast<unsigned>(*s.vslot) << 3);
        keys[slot_key("vdevfn", i)] = buf;
    }
    return keys;
}

DeviceReq pci_device(std::span<const PciSpec> specs, const std::string& domain_name,
                     const std::string& backend_domain) {
    DeviceReq r;
    r.type = "pci";
    r.backend_domain = backend_domain;
    r.devid = 0;  // SPEC: §7.3 one pci device instance per guest
    r.backend_keys = {{"domain", domain_name}, {"num_devs", std::to_string(specs.size())}};
    for (unsigned i = 0; i < specs.size(); ++i) {
        r.backend_keys.merge(pci_slot_keys(specs[i], i));
    }
    return r;
}

std::vector<StoreOp> pci_attach_ops(const std::string& bdir, const PciSpec& s, unsigned n) {
    std::vector<StoreOp> ops = {{StoreOp::Kind::expect, bdir + "/state", "4"},
                                {StoreOp::Kind::expect, bdir + "/num_devs", std::to_string(n)}};
    for (const auto& [k, v] : pci_slot_keys(s, n)) {
        ops.push_back({StoreOp::Kind::write, bdir + "/" + k, v});
    }
    ops.push_back({StoreOp::Kind::write, bdir + "/num_devs", std::to_string(n + 1)});
    ops.push_back({StoreOp::Kind::write, bdir + "/state", "7"});  // Reconfiguring
    return ops;
}

std::vector<StoreOp> pci_undo_attach_ops(const std::string& bdir, const PciSpec& s, unsigned n) {
    std::vector<StoreOp> ops = {
        {StoreOp::Kind::expect, bdir + "/state", "7"},
        {StoreOp::Kind::expect, bdir + "/num_devs", std::to_string(n + 1)},
        {StoreOp::Kind::expect, bdir + "/" + slot_key("dev", n), to_string(pci_addr(s))},
        {StoreOp::Kind::expect, bdir + "/" + slot_key("state", n), "1"}};
    for (std::string_view k : kPciSlotKeys) {
        ops.push_back({StoreOp::Kind::remove, bdir + "/" + slot_key(k, n), {}});
    }
    ops.push_back({StoreOp::Kind::write, bdir + "/num_devs", std::to_string(n)});
    ops.push_back({StoreOp::Kind::write, bdir + "/state", "4"});  // Connected, as before
    return ops;
}

std::vector<StoreOp> pci_detach_request_ops(const std::string& bdir, unsigned i,
                                            const PciAddr& a) {
    return {{StoreOp::Kind::expect, bdir + "/state", "4"},
            {StoreOp::Kind::expect, bdir + "/" + slot_key("dev", i), to_string(a)},
            {StoreOp::Kind::write, bdir + "/" + slot_key("state", i), "5"},  // Closing
            {StoreOp::Kind::write, bdir + "/state", "7"}};
}

std::vector<StoreOp> pci_remove_slot_ops(const std::string& bdir,
                                         const std::map<std::string, std::string>& keys,
                                         unsigned i, unsigned n) {
    std::vector<StoreOp> ops = {{StoreOp::Kind::expect, bdir + "/num_devs", std::to_string(n)}};
    for (std::string_view k : kPciSlotKeys) {
        ops.push_back({StoreOp::Kind::remove, bdir + "/" + slot_key(k, i), {}});
    }
    // Upwards: by the time slot j moves to j-1, slot j-1's keys are gone already.
    for (unsigned j = i + 1; j < n; ++j) {
        for (std::string_view k : kPciSlotKeys) {
            auto it = keys.find(slot_key(k, j));
            if (it == keys.end()) {
                continue;
            }
            ops.push_back({StoreOp::Kind::expect, bdir + "/" + it->first, it->second});
            ops.push_back({StoreOp::Kind::write, bdir + "/" + slot_key(k, j - 1), it->second});
            ops.push_back({StoreOp::Kind::remove, bdir + "/" + it->first, {}});
        }
    }
    ops.push_back({StoreOp::Kind::write, bdir + "/num_devs", std::to_string(n == 0 ? 0 : n - 1)});
    return ops;
}

std::optional<PciBackend> read_pci_backend(Control& c, std::uint16_t backend,
                                           std::uint16_t frontend) {
    PciBackend b;
    b.frontend = frontend;
    b.backend = backend;
    b.dir = backend_dir(backend, "pci", frontend, 0);
    if (!c.read_store(b.dir)) {
        return std::nullopt;
    }
    b.state = read_number(c, b.dir + "/state");
    const long long n = std::min(read_number(c, b.dir + "/num_devs"), 256LL);
    for (long long i = 0; i < n; ++i) {
        const auto u = static_cast<unsigned>(i);
        PciSlot s;
        s.index = u;
        if (auto v = read_node(c, b.dir + "/" + slot_key("dev", u))) {
            s.addr = parse_bdf_key(*v);
        }
        // GUEST: the backend writes vdev-i; only a well-formed address is kept.
        if (auto v = read_node(c, b.dir + "/" + slot_key("vdev", u))) {
            s.vdev = parse_vdev_key(*v);
        }
        s.state = read_number(c, b.dir + "/" + slot_key("state", u));
        b.slots.push_back(s);
    }
    return b;
}

std::optional<PciBackend> find_pci_backend(Control& c, std::span<const DomainRow> rows,
                                           std::uint16_t frontend) {
    for (const DomainRow& r : rows) {
        if (auto b = read_pci_backend(c, r.domid, frontend)) {
            return b;
        }
    }
    return std::nullopt;
}

std::map<PciAddr, PciBackend> pci_assignments(Control& c, std::span<const DomainRow> rows) {
    std::map<PciAddr, PciBackend> out;
    auto alive_in = [](std::span<const DomainRow> list, std::uint16_t id) {
        return std::any_of(list.begin(), list.end(),
                           [&](const DomainRow& r) { return r.domid == id && r.state != 's'; });
    };
    std::vector<std::pair<std::string, std::string>> dead;  // backend dir, frontend dir
    for (const DomainRow& be : rows) {
        const std::string base = "/local/domain/" + std::to_string(be.domid) + "/backend/pci";
        auto fes = c.list_store(base);
        if (!fes) {
            continue;
        }
        for (const std::string& name : *fes) {
            const long long fe = read_number(c, base + "/" + name + "/0/frontend-id");
            if (fe < 0 || fe > 0x7fef || std::to_string(fe) != name) {
                continue;  // not a device directory the toolstack wrote
            }
            const auto fe_id = static_cast<std::uint16_t>(fe);
            if (!alive_in(rows, fe_id)) {
                dead.emplace_back(base + "/" + name, "/local/domain/" + name + "/device/pci");
                continue;
            }
            auto b = read_pci_backend(c, be.domid, fe_id);
            if (!b) {
                continue;
            }
            for (const PciSlot& s : b->slots) {
                if (s.addr) {
                    out.emplace(*s.addr, *b);
                }
            }
        }
    }
    // A domain that died without `destroy`: its devices go with it. Checked against a fresh
    // list: the toolstack writes a domain's directories only after creating it, so a
    // directory seen before that list belongs to a domain the list would show if alive.
    if (!dead.empty()) {
        if (auto now = c.list()) {
            for (const auto& [bdir, fdir] : dead) {
                const auto fe = static_cast<std::uint16_t>(
                    std::stoul(bdir.substr(bdir.rfind('/') + 1)));
                if (!alive_in(*now, fe)) {
                    (void)c.remove_store(bdir);
                    (void)c.remove_store(fdir);
                }
            }
        }
    }
    return out;
}

std::optional<std::string> assignable_driver(Control& c, const PciAddr& a) {
    return read_node(c, registry_path(kPciAssignableDir, a));
}

std::vector<PciAddr> assignable_devices(Control& c) {
    std::vector<PciAddr> out;
    auto names = c.list_store(std::string(kPciAssignableDir));
    if (!names) {
        return out;
    }
    for (const std::string& n : *names) {
        if (auto a = parse_registry_name(n)) {
            out.push_back(*a);
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool is_emulated(Control& c, const PciAddr& a) {
    prune_emulated_registry(c);
    return read_node(c, registry_path(kPciEmulatedDir, a)).has_value();
}

void prune_emulated_registry(Control& c) {
    const std::string dir(kPciEmulatedDir);
    auto names = c.list_store(dir);
    if (!names) {
        return;
    }
    std::vector<std::pair<std::string, long long>> recorded;  // entry, backend-id
    for (const std::string& n : *names) {
        const long long id = read_number(c, dir + "/" + n + "/backend-id");
        if (id > 0) {
            recorded.emplace_back(dir + "/" + n, id);
        }
    }
    // Listed after the entries were read: create records them only once the domain exists,
    // so a live one is on this list.
    auto rows = recorded.empty() ? Result<std::vector<DomainRow>>() : c.list();
    if (!rows) {
        return;
    }
    for (const auto& [path, id] : recorded) {
        const bool alive = std::any_of(rows->begin(), rows->end(), [&](const DomainRow& r) {
            return r.domid == id && r.state != 's';
        });
        if (!alive) {
            (void)c.remove_store(path);
        }
    }
}

// ---- driver domains ----

std::optional<DomainRow> pci_backend_domain(Cli& cli, std::string_view verb,
                                            std::span<const DomainRow> rows,
                                            const std::string& name) {
    DomainRow be;
    const BackendCheck why = check_backend(rows, name, &be);
    if (why == BackendCheck::ok) {
        return be;
    }
    cli.err << "hvctl " << verb << ": pci: " << backend_refusal(why, name, "pci") << "\n";
    return std::nullopt;
}

StoreOp pci_registry_perms(const PciAddr& a, std::uint16_t backend) {
    // SPEC: xen-abi §4.5: first entry = owner + everyone else's access; dom0 always reads.
    std::string perms = "n0";
    if (backend != 0) {
        perms += " r" + std::to_string(backend);
    }
    return {StoreOp::Kind::set_perms, registry_path(kPciAssignableDir, a), perms};
}

std::vector<std::pair<PciAddr, std::string>> pciback_emulated(std::span<const std::string> argv) {
    std::vector<std::pair<PciAddr, std::string>> out;
    for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
        if (argv[i] != "--emulate") {
            continue;
        }
        const std::string& arg = argv[++i];
        const auto eq = arg.find('=');
        if (eq == std::string::npos) {
            continue;
        }
        auto a = parse_bdf_arg(std::string_view(arg).substr(0, eq));
        const std::string model = arg.substr(eq + 1, arg.find(',', eq) - eq - 1);
        if (a && !model.empty()) {
            out.emplace_back(*a, model);
        }
    }
    return out;
}

std::optional<PciAddr> emulated_already(Control& c,
                                        std::span<const std::pair<PciAddr, std::string>> devs) {
    prune_emulated_registry(c);
    for (const auto& [a, model] : devs) {
        if (read_node(c, registry_path(kPciEmulatedDir, a))) {
            return a;
        }
    }
    return std::nullopt;
}

Result<void> declare_emulated_registry(Control& c, std::uint16_t domid,
                                       std::span<const std::pair<PciAddr, std::string>> devs) {
    if (devs.empty()) {
        return {};
    }
    const std::string id = std::to_string(domid);
    std::vector<StoreOp> ops;
    for (const auto& [a, model] : devs) {
        const std::string path = registry_path(kPciEmulatedDir, a);
        // SPEC: xen-abi §4.5: dom0 owns it (the driver domain can neither change nor remove
        // it), the domain that emulates the device reads it, nobody else sees it; the
        // backend-id child inherits that.
        ops.push_back({StoreOp::Kind::write, path, model});
        ops.push_back({StoreOp::Kind::set_perms, path, "n0 r" + id});
        ops.push_back({StoreOp::Kind::write, path + "/backend-id", id});
    }
    return c.store_transaction(ops);
}

void revoke_emulated_registry(Control& c, std::uint16_t domid) {
    const std::string dir(kPciEmulatedDir);
    auto names = c.list_store(dir);
    if (!names) {
        return;
    }
    const std::string id = std::to_string(domid);
    for (const std::string& n : *names) {
        if (read_node(c, dir + "/" + n + "/backend-id") == id) {
            (void)c.remove_store(dir + "/" + n);
        }
    }
}

// ---- sysfs ----

bool PciHost::exists(const PciAddr& a) const {
    const std::string p = root_ + "/devices/" + to_string(a);
    return ::access(p.c_str(), F_OK) == 0;
}

Result<std::string> PciHost::driver(const PciAddr& a) const {
    const std::string link = root_ + "/devices/" + to_string(a) + "/driver";
    char buf[PATH_MAX];
    const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n < 0) {
        if (errno == ENOENT) {
            return std::string();
        }
        return fail_errno();
    }
    const std::string target(buf, static_cast<std::size_t>(n));
    return target.substr(target.rfind('/') + 1);
}

Result<void> PciHost::write_attr(const std::string& path, std::string_view value) const {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) {
        return fail_errno();
    }
    const ssize_t n = ::write(fd.get(), value.data(), value.size());
    if (n < 0) {
        return fail_errno();
    }
    if (static_cast<std::size_t>(n) != value.size()) {
        return fail_errno(EIO);
    }
    return {};
}

Result<void> PciHost::unbind(const PciAddr& a, const std::string& driver) const {
    const std::string dev = root_ + "/devices/" + to_string(a);
    // A driver built with suppress_bind_attrs (virtio-pci on some kernels) has no unbind file:
    // refuse before the override is touched, so the device is left exactly as it was.
    if (!driver.empty() && ::access((dev + "/driver/unbind").c_str(), F_OK) != 0) {
        return fail_errno(errno == ENOENT ? EOPNOTSUPP : errno);
    }
    // Override first, so nothing re-probes the device between the unbind and our record.
    HV_TRY(write_attr(dev + "/driver_override", kPciOverride));
    if (!driver.empty()) {
        if (auto r = write_attr(dev + "/driver/unbind", to_string(a)); !r) {
            (void)write_attr(dev + "/driver_override", "\n");
            return r;
        }
    }
    return {};
}

Result<void> PciHost::rebind(const PciAddr& a, const std::string& driver) const {
    if (driver == "." || driver == ".." || driver.find('/') != std::string::npos) {
        return fail_errno(EINVAL);
    }
    const std::string dev = root_ + "/devices/" + to_string(a);
    HV_TRY(write_attr(dev + "/driver_override", "\n"));  // a lone newline clears it
    if (driver.empty()) {
        return {};
    }
    return write_attr(root_ + "/drivers/" + driver + "/bind", to_string(a));
}

}  // namespace hv::tools
