// hvctl destroy NAME|ID (closing the domain's devices, and those it serves as a driver
// domain, first), and the same clean-up of a domain that died on its own (domain_watch.cpp).
// Layer: tools.
#include <algorithm>
#include <chrono>
#include <map>
#include <vector>
#include <ostream>

#include "cli.hpp"
#include "pci.hpp"

namespace hv::tools {

int verb_destroy(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 1) {
        return verb_usage(cli, "destroy", args.empty() ? "which domain?" : "too many arguments");
    }
    if (!args[0].empty() && args[0][0] == '-') {
        return verb_usage(cli, "destroy", "unknown option '" + args[0] + "'");
    }
    const auto dom = lookup_domain(cli, "destroy", args[0]);
    if (!dom) {
        return kExitFailure;
    }
    if (dom->domid == 0) {
        cli.err << "hvctl destroy: Domain-0 cannot be destroyed\n";
        return kExitFailure;
    }
    return destroy_domain(cli, *cli.control(), *dom, true);  // connected by lookup_domain
}

int destroy_domain(Cli& cli, Control& c, const DomainRow& dom, bool alive) {
    // libxl's order: ask the devices to close (bounded), destroy the domain, then remove the
    // device directories whether or not their backends reached Closed.
    auto devs = c.devices(dom.domid);
    if (!devs) {
        cli.err << "warning: " << dom.name << ": devices: " << devs.error().message() << "\n";
    } else if (!devs->empty()) {
        // A device whose backend domain died (it left hv-min's list) has nobody to answer: it
        // is asked to close like the others, but not waited for.
        std::vector<AttachedDevice> orphaned, served_live;
        auto rows = c.list();
        for (const AttachedDevice& d : *devs) {
            const bool gone = rows && std::none_of(rows->begin(), rows->end(),
                                                   [&](const DomainRow& r) {
                                                       return r.domid == d.backend;
                                                   });
            (gone ? orphaned : served_live).push_back(d);
        }
        (void)c.close_devices(dom.domid, orphaned, std::chrono::seconds(0));
        const std::size_t open =
            c.close_devices(dom.domid, served_live, std::chrono::seconds(5));
        if (open != 0) {
            cli.err << "warning: " << dom.name << ": " << open
                    << " device(s) did not reach Closed; removing them anyway\n";
        }
    }
    // A driver domain: the devices it serves for other domains close first (their frontends
    // see Closing and let go), then go away with it, so no guest keeps a dead backend's device.
    std::map<std::uint16_t, std::vector<AttachedDevice>> served;
    if (auto s = c.served_devices(dom.domid); !s) {
        cli.err << "warning: " << dom.name << ": served devices: " << s.error().message() << "\n";
    } else {
        for (const auto& [fe, dev] : *s) {
            served[fe].push_back(dev);
        }
    }
    for (const auto& [fe, list] : served) {
        const std::size_t open = c.close_devices(fe, list, std::chrono::seconds(5));
        if (open != 0) {
            cli.err << "warning: " << dom.name << ": " << open << " device(s) it serves to domain "
                    << fe << " did not reach Closed; removing them anyway\n";
        }
    }
    // A dead domain (the watcher's clean-up) has nothing left in hv-min to destroy.
    auto r = alive ? c.destroy(dom.domid, std::chrono::seconds(10)) : Result<void>{};
    if (dom.driver_domain) {
        revoke_emulated_registry(c, dom.domid);  // a pciback domain's emulated devices
    }
    for (const auto& [fe, list] : served) {
        if (auto rm = c.remove_devices(fe, list); !rm) {
            cli.err << "warning: " << dom.name << ": removing devices of domain " << fe << ": "
                    << rm.error().message() << "\n";
        }
    }
    if (devs) {
        auto rm = c.remove_devices(dom.domid, *devs);
        if (!rm) {
            cli.err << "warning: " << dom.name << ": removing devices: "
                    << rm.error().message() << "\n";
        }
    }
    if (r) {
        // libxl__destroy_domid: the domain's XenStore home goes with it.
        auto home = c.remove_store("/local/domain/" + std::to_string(dom.domid));
        if (!home && home.error() != std::errc::no_such_file_or_directory) {
            cli.err << "warning: " << dom.name << ": removing its XenStore home: "
                    << home.error().message() << "\n";
        }
    }
    if (!r) {
        cli.err << "hvctl destroy: " << dom.name << " (" << dom.domid
                << "): " << r.error().message() << "\n";
        return kExitFailure;
    }
    return kExitOk;
}

}  // namespace hv::tools
