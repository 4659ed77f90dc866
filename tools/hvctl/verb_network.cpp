// hvctl network-attach / network-detach / network-list (xl's verbs and table). Layer: tools.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <ostream>

#include "cli.hpp"
#include "devices.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

namespace {

constexpr auto kAttachTimeout = std::chrono::seconds(10);
constexpr auto kDetachTimeout = std::chrono::seconds(10);

std::string vif_fe(std::uint16_t domid, std::uint32_t devid) {
    return "/local/domain/" + std::to_string(domid) + "/device/vif/" + std::to_string(devid);
}

NicRow nic_row(Control& c, std::uint16_t domid, const AttachedDevice& d) {
    const std::string fe = vif_fe(domid, d.devid);
    NicRow r;
    r.idx = d.devid;
    r.backend = d.backend;
    r.handle = static_cast<int>(d.devid);
    r.mac = vif_mac(c, domid, d).value_or("-");
    r.state = static_cast<int>(read_number(c, fe + "/state"));
    for (const char* k : {"/event-channel", "/event-channel-tx", "/queue-0/event-channel",
                          "/queue-0/event-channel-tx"}) {
        if ((r.evtch = read_number(c, fe + k)) >= 0) {
            break;
        }
    }
    r.tx_ref = read_number(c, fe + "/tx-ring-ref");
    r.rx_ref = read_number(c, fe + "/rx-ring-ref");
    if (r.tx_ref < 0 && r.rx_ref < 0) {  // multi-queue: the first queue's rings
        r.tx_ref = read_number(c, fe + "/queue-0/tx-ring-ref");
        r.rx_ref = read_number(c, fe + "/queue-0/rx-ring-ref");
    }
    // Where the toolstack put the backend, not the frontend's `backend` node: nothing the
    // guest writes is printed.
    r.be_path = backend_dir(d.backend, "vif", domid, d.devid);
    // A DPDK vif: its socket. The backend dir is the backend domain's to write (a driver
    // domain): printed only when it is a plain path (printable, no spaces).
    const auto script = read_node(c, r.be_path + "/script");
    if (script && script->find("dpdk") != std::string::npos) {
        auto sock = read_node(c, r.be_path + "/bridge");
        const bool plain = sock && !sock->empty() && sock->size() <= 108 &&
                           std::all_of(sock->begin(), sock->end(),
                                       [](char ch) { return ch > 0x20 && ch < 0x7f; });
        r.host = "vhost-user:" + (plain ? *sock : std::string("?"));
    }
    return r;
}

}  // namespace

int verb_network_attach(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 2) {
        return verb_usage(cli, "network-attach",
                          args.size() < 2 ? "needs a domain and a vif spec" : "too many arguments");
    }
    if (args[0].size() > 1 && args[0][0] == '-') {
        return verb_usage(cli, "network-attach", "unknown option '" + args[0] + "'");
    }
    auto spec = parse_vif_spec(args[1]);
    if (!spec) {
        return verb_usage(cli, "network-attach",
                          "bad vif spec '" + args[1] + "': " + spec.error().text);
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto dom = lookup_domain(cli, *c, "network-attach", args[0]);
    if (!dom) {
        return kExitFailure;
    }
    auto vifs = devices_of(cli, *c, "network-attach", dom->domid, "vif");
    if (!vifs) {
        return kExitFailure;
    }
    // libxl: the next free devid is one past the highest in use.
    std::uint32_t devid = 0;
    for (const AttachedDevice& d : *vifs) {
        devid = std::max(devid, d.devid + 1);
    }
    if (spec->devid) {
        devid = *spec->devid;
        if (std::any_of(vifs->begin(), vifs->end(),
                        [&](const AttachedDevice& d) { return d.devid == devid; })) {
            cli.err << "hvctl network-attach: " << dom->name << ": vif devid " << devid
                    << " is already in use\n";
            return kExitFailure;
        }
    }
    if (spec->mac) {
        const std::string want = spec->mac_string();
        for (const AttachedDevice& d : *vifs) {
            auto m = vif_mac(*c, dom->domid, d);
            if (m && *m == want) {
                cli.err << "hvctl network-attach: " << dom->name << ": mac " << want
                        << " is already in use by vif " << d.devid << "\n";
                return kExitFailure;
            }
        }
    }
    return attach_device(cli, *c, "network-attach", *dom, vif_device(*spec, devid),
                         kAttachTimeout);
}

int verb_network_detach(Cli& cli, std::span<const std::string> args) {
    const DetachArgs a = split_detach_args(args);
    if (!a.bad.empty()) {
        return verb_usage(cli, "network-detach", "unknown option '" + a.bad + "'");
    }
    if (a.positional.size() != 2) {
        return verb_usage(cli, "network-detach", a.positional.size() < 2
                                                     ? "needs a domain and a devid or mac"
                                                     : "too many arguments");
    }
    const std::string& which = a.positional[1];
    const bool numeric = !which.empty() && which.size() <= 9 &&
                         std::all_of(which.begin(), which.end(),
                                     [](char ch) { return ch >= '0' && ch <= '9'; });
    std::string mac;
    if (!numeric) {
        // A lone MAC: through the vif spec parser (which checks its shape), nothing else.
        const bool lone = which.find_first_of(",= \t") == std::string::npos;
        auto probe = parse_vif_spec("mac=" + (lone ? which : std::string("-")));
        if (!probe || !probe->mac) {
            return verb_usage(cli, "network-detach",
                              "'" + which + "' is neither a devid nor a mac address");
        }
        mac = probe->mac_string();
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto dom = lookup_domain(cli, *c, "network-detach", a.positional[0]);
    if (!dom) {
        return kExitFailure;
    }
    auto vifs = devices_of(cli, *c, "network-detach", dom->domid, "vif");
    if (!vifs) {
        return kExitFailure;
    }
    auto it = std::find_if(vifs->begin(), vifs->end(), [&](const AttachedDevice& d) {
        if (numeric) {
            return std::to_string(d.devid) == which;
        }
        auto m = vif_mac(*c, dom->domid, d);
        return m && *m == mac;
    });
    if (it == vifs->end()) {
        cli.err << "hvctl network-detach: " << dom->name << ": no vif " << which << "\n";
        return kExitFailure;
    }
    return detach_device(cli, *c, "network-detach", *dom, *it, a.force, kDetachTimeout);
}

int verb_network_list(Cli& cli, std::span<const std::string> args) {
    return list_devices_verb<NicRow>(cli, "network-list", "vif", args, nic_row, format_network_list);
}

}  // namespace hv::tools
