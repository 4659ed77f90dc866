// Device keys, xl's device tables, and the attach/detach sequences shared by the verbs.
// Layer: tools. One thread.
#include <cctype>
#include "devices.hpp"

#include <cstdio>
#include <ostream>
#include <random>
#include <thread>

namespace hv::tools {

namespace {

/// 00:16:3e (Xen's OUI) and three random bytes, as libxl does for a vif without `mac`.
std::string random_xen_mac() {
    std::random_device rd;
    char buf[18];
    const unsigned v = rd();
    std::snprintf(buf, sizeof buf, "00:16:3e:%02x:%02x:%02x", (v >> 16) & 0x7fu, (v >> 8) & 0xffu,
                  v & 0xffu);
    return buf;
}

constexpr int kInitWait = 2;
constexpr int kConnected = 4;
constexpr int kClosing = 5;
constexpr int kClosed = 6;

}  // namespace

std::string backend_dir(std::uint16_t be, std::string_view type, std::uint16_t fe,
                        std::uint32_t devid) {
    return "/local/domain/" + std::to_string(be) + "/backend/" + std::string(type) + "/" +
           std::to_string(fe) + "/" + std::to_string(devid);
}

std::optional<std::string> vif_mac(Control& c, std::uint16_t domid, const AttachedDevice& d) {
    auto m = read_node(c, backend_dir(d.backend, "vif", domid, d.devid) + "/mac");
    if (!m || m->size() != 17) {
        return std::nullopt;
    }
    for (std::size_t i = 0; i < m->size(); ++i) {
        const char ch = (*m)[i];
        const bool ok = i % 3 == 2 ? ch == ':' : std::isxdigit(static_cast<unsigned char>(ch)) != 0;
        if (!ok) {
            return std::nullopt;
        }
    }
    std::string lowered = *m;
    for (char& ch : lowered) {
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    return lowered;
}

DeviceReq disk_device(const DiskSpec& d) {
    DeviceReq r;
    r.type = "vbd";
    r.backend_domain = d.backend;
    r.devid = d.virtual_device;
    r.backend_keys = {{"params", d.target},
                      {"type", d.format == DiskFormat::raw ? "phy" : to_string(d.format)},
                      {"mode", d.mode()},
                      {"dev", d.vdev},
                      {"device-type", d.device_type()},
                      {"removable", "0"},
                      {"bootable", "1"}};
    if (d.discard) {
        r.backend_keys["discard-enable"] = *d.discard ? "1" : "0";
    }
    r.frontend_keys = {{"virtual-device", std::to_string(d.virtual_device)},
                       {"device-type", d.device_type()}};
    return r;
}

DeviceReq vif_device(const VifSpec& v, std::uint32_t devid) {
    DeviceReq r;
    r.type = "vif";
    r.backend_domain = v.backend;
    r.devid = devid;
    const std::string mac = v.mac ? v.mac_string() : random_xen_mac();
    const std::string handle = std::to_string(devid);
    // The script names the host side for netback: vif-bridge (default), vif-openvswitch
    // (also the default for type=ovs, so the backend dir reads as with xl's script), or
    // vif-dpdk (then `bridge` is the vhost-user socket path).
    const char* default_script = v.is_ovs() ? "vif-openvswitch" : "vif-bridge";
    r.backend_keys = {{"mac", mac},
                      {"handle", handle},
                      {"script", v.script.empty() ? default_script : v.script}};
    if (!v.bridge.empty()) {
        r.backend_keys["bridge"] = v.bridge;
    }
    r.backend_keys["type"] = v.type.empty() ? "vif" : v.type;
    if (v.rate) {
        r.backend_keys["rate"] = std::to_string(v.rate->bytes_per_interval) + "," +
                                 std::to_string(v.rate->interval_usecs);
    }
    if (v.mtu) {
        r.backend_keys["mtu"] = std::to_string(*v.mtu);
    }
    if (!v.vifname.empty()) {
        r.backend_keys["vifname"] = v.vifname;
    }
    r.frontend_keys = {{"mac", mac}, {"handle", handle}};
    return r;
}

std::string format_block_list(std::span<const BlockRow> rows) {
    std::string out;
    char line[512];
    std::snprintf(line, sizeof line, "%-5s %-3s %-6s %-5s %-6s %-8s %-30s\n", "Vdev", "BE",
                  "handle", "state", "evt-ch", "ring-ref", "BE-path");
    out += line;
    for (const BlockRow& r : rows) {
        std::snprintf(line, sizeof line, "%-5u %-3d %-6d %-5d %-6lld %-8lld %-30s\n", r.vdev,
                      r.backend, r.handle, r.state, r.evtch, r.ring_ref, r.be_path.c_str());
        out += line;
    }
    return out;
}

std::string format_network_list(std::span<const NicRow> rows) {
    std::string out;
    char line[512];
    std::snprintf(line, sizeof line, "%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s\n", "Idx",
                  "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref",
                  "BE-path");
    out += line;
    for (const NicRow& r : rows) {
        // As xl: the MAC runs straight into the right-aligned handle column.
        std::snprintf(line, sizeof line, "%-3u %-2d %-17s%6d %5d %6lld %5lld/%-11lld %-30s",
                      r.idx, r.backend, r.mac.c_str(), r.handle, r.state, r.evtch, r.tx_ref,
                      r.rx_ref, r.be_path.c_str());
        out += line;
        if (!r.host.empty()) {
            out += " " + r.host;
        }
        out += "\n";
    }
    return out;
}

std::optional<std::vector<AttachedDevice>> devices_of(Cli& cli, Control& c, std::string_view verb,
                                                      std::uint16_t domid, std::string_view type) {
    auto devs = c.devices(domid);
    if (!devs) {
        cli.err << "hvctl " << verb << ": devices of domain " << domid << ": "
                << devs.error().message() << "\n";
        return std::nullopt;
    }
    std::vector<AttachedDevice> out;
    for (const AttachedDevice& d : *devs) {
        if (d.type == type) {
            out.push_back(d);
        }
    }
    return out;
}

std::optional<std::string> read_node(Control& c, const std::string& path) {
    auto v = c.read_store(path);
    if (!v) {
        return std::nullopt;
    }
    return std::move(*v);
}

long long read_number(Control& c, const std::string& path) {
    auto v = read_node(c, path);
    if (!v || v->empty() || v->size() > 18) {
        return -1;
    }
    long long n = 0;
    for (char ch : *v) {
        if (ch < '0' || ch > '9') {
            return -1;
        }
        n = n * 10 + (ch - '0');
    }
    return n;
}

BackendCheck check_backend(std::span<const DomainRow> rows, const std::string& name,
                           DomainRow* found) {
    const bool dom0 = name.empty() || name == "Domain-0";
    for (const DomainRow& r : rows) {
        if (dom0 ? r.domid != 0 : r.name != name) {
            continue;
        }
        if (found != nullptr) {
            *found = r;
        }
        return r.domid == 0 || r.driver_domain ? BackendCheck::ok
                                               : BackendCheck::not_driver_domain;
    }
    return BackendCheck::missing;
}

std::string backend_refusal(BackendCheck why, const std::string& name, std::string_view type) {
    const std::string who = "backend domain '" + (name.empty() ? "Domain-0" : name) + "'";
    if (why != BackendCheck::not_driver_domain) {
        return who + " does not exist";
    }
    const std::string_view kernel = type == "vbd"   ? "blkback"
                                    : type == "vif" ? "netback"
                                                    : "pciback";
    return who + " is not a driver domain (create it with driver_domain = 1 and kernel = " +
           std::string(kernel) + ")";
}

bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

int attach_device(Cli& cli, Control& c, std::string_view verb, const DomainRow& dom,
                  const DeviceReq& req, std::chrono::milliseconds timeout,
                  const AttachReady& ready) {
    auto added = c.add_device(dom.domid, req);
    if (!added) {
        cli.err << "hvctl " << verb << ": " << dom.name << ": " << req.type << " " << req.devid
                << ": ";
        if (added.error() == std::errc::no_such_file_or_directory) {
            cli.err << backend_refusal(BackendCheck::missing, req.backend_domain, req.type) << "\n";
        } else if (added.error() == std::errc::operation_not_permitted) {
            cli.err << backend_refusal(BackendCheck::not_driver_domain, req.backend_domain,
                                       req.type)
                    << "\n";
        } else if (added.error() == std::errc::file_exists) {
            cli.err << "already exists\n";
        } else {
            cli.err << added.error().message() << "\n";
        }
        return kExitFailure;
    }
    // The backend's domid, as add_device resolved it (the frontend's `backend-id`).
    const std::string fe = "/local/domain/" + std::to_string(dom.domid) + "/device/" + req.type +
                           "/" + std::to_string(req.devid);
    const long long be = read_number(c, fe + "/backend-id");
    const std::uint16_t be_id = be >= 0 && be < 0x7ff0 ? static_cast<std::uint16_t>(be) : 0;
    const std::string bdir = backend_dir(be_id, req.type, dom.domid, req.devid);
    bool taken = false;
    bool refused = false;
    (void)poll_until(
        [&] {
            const long long st = read_number(c, bdir + "/state");
            taken = ready ? ready(c, bdir, st) : st == kInitWait || st == kConnected;
            refused = !taken && (st == kClosing || st == kClosed);
            return taken || refused;
        },
        timeout);
    if (taken) {
        return kExitOk;
    }
    std::string why;
    if (refused) {
        // The backend refused the device (xenbus_dev_fatal): its reason, if it left one.
        auto e = read_node(c, "/local/domain/" + std::to_string(be_id) + "/error/backend/" +
                                  req.type + "/" + std::to_string(dom.domid) + "/" +
                                  std::to_string(req.devid) + "/error");
        why = "the backend refused it";
        if (e && !e->empty()) {
            why += ": " + *e;
        }
    } else {
        const char* program = req.type == "vbd" ? "blkback" : req.type == "vif" ? "netback" : "pciback";
        why = "no backend answered within " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
              " s (is " + program + " running in domain " + std::to_string(be_id) + "?)";
    }
    cli.err << "hvctl " << verb << ": " << dom.name << ": " << req.type << " " << req.devid << ": "
            << why << "; device removed\n";
    const std::vector<AttachedDevice> devs{AttachedDevice{req.type, be_id, req.devid}};
    (void)c.close_devices(dom.domid, devs, std::chrono::seconds(2));
    (void)c.remove_devices(dom.domid, devs);
    return kExitFailure;
}

int detach_device(Cli& cli, Control& c, std::string_view verb, const DomainRow& dom,
                  const AttachedDevice& dev, bool force, std::chrono::milliseconds timeout) {
    const std::vector<AttachedDevice> devs{dev};
    const std::size_t open = c.close_devices(dom.domid, devs, timeout);
    if (open != 0 && !force) {
        cli.err << "hvctl " << verb << ": " << dom.name << ": " << dev.type << " " << dev.devid
                << ": the backend did not reach Closed within "
                << std::chrono::duration_cast<std::chrono::seconds>(timeout).count()
                << " s; the device is left in place (use --force to remove it anyway)\n";
        return kExitFailure;
    }
    if (open != 0) {
        cli.err << "warning: " << dom.name << ": " << dev.type << " " << dev.devid
                << " did not reach Closed; removing it anyway (--force)\n";
    }
    auto rm = c.remove_devices(dom.domid, devs);
    if (!rm) {
        cli.err << "hvctl " << verb << ": " << dom.name << ": removing " << dev.type << " "
                << dev.devid << ": " << rm.error().message() << "\n";
        return kExitFailure;
    }
    return kExitOk;
}

DetachArgs split_detach_args(std::span<const std::string> args) {
    DetachArgs a;
    for (const std::string& s : args) {
        if (s == "-f" || s == "--force") {
            a.force = true;
        } else if (s.size() > 1 && s[0] == '-') {
            a.bad = s;
        } else {
            a.positional.push_back(s);
        }
    }
    return a;
}

}  // namespace hv::tools
