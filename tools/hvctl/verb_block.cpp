// hvctl block-attach / block-detach / block-list (xl's verbs and table). Layer: tools.
#include <algorithm>
#include <chrono>
#include <ostream>

#include "cli.hpp"
#include "devices.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

namespace {

constexpr auto kAttachTimeout = std::chrono::seconds(10);
constexpr auto kDetachTimeout = std::chrono::seconds(10);  // libxl's LIBXL_DESTROY_TIMEOUT

BlockRow block_row(Control& c, std::uint16_t domid, const AttachedDevice& d) {
    const std::string fe =
        "/local/domain/" + std::to_string(domid) + "/device/vbd/" + std::to_string(d.devid);
    BlockRow r;
    r.vdev = d.devid;
    r.backend = d.backend;
    r.handle = domid;
    r.state = static_cast<int>(read_number(c, fe + "/state"));
    // xl reads the single-queue keys; a multi-queue or multi-page frontend keeps its first
    // ring under queue-0/ or ring-ref0: show that one rather than -1.
    for (const char* k : {"/event-channel", "/queue-0/event-channel"}) {
        if ((r.evtch = read_number(c, fe + k)) >= 0) {
            break;
        }
    }
    for (const char* k : {"/ring-ref", "/ring-ref0", "/queue-0/ring-ref", "/queue-0/ring-ref0"}) {
        if ((r.ring_ref = read_number(c, fe + k)) >= 0) {
            break;
        }
    }
    r.be_path = backend_dir(d.backend, "vbd", domid, d.devid);  // not the guest's `backend` node
    return r;
}

}  // namespace

int verb_block_attach(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 2) {
        return verb_usage(cli, "block-attach",
                          args.size() < 2 ? "needs a domain and a disk spec" : "too many arguments");
    }
    if (args[0].size() > 1 && args[0][0] == '-') {
        return verb_usage(cli, "block-attach", "unknown option '" + args[0] + "'");
    }
    auto spec = parse_disk_spec(args[1]);
    if (!spec) {
        return verb_usage(cli, "block-attach", "bad disk spec '" + args[1] + "': " + spec.error().text);
    }
    if (spec->target.empty()) {
        return verb_usage(cli, "block-attach", "disk spec '" + args[1] +
                                                  "' names no target (empty cdrom drives are not supported)");
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto dom = lookup_domain(cli, *c, "block-attach", args[0]);
    if (!dom) {
        return kExitFailure;
    }
    auto vbds = devices_of(cli, *c, "block-attach", dom->domid, "vbd");
    if (!vbds) {
        return kExitFailure;
    }
    if (std::any_of(vbds->begin(), vbds->end(),
                    [&](const AttachedDevice& d) { return d.devid == spec->virtual_device; })) {
        cli.err << "hvctl block-attach: " << dom->name << ": vdev " << spec->vdev << " ("
                << spec->virtual_device << ") is already in use\n";
        return kExitFailure;
    }
    return attach_device(cli, *c, "block-attach", *dom, disk_device(*spec), kAttachTimeout);
}

int verb_block_detach(Cli& cli, std::span<const std::string> args) {
    const DetachArgs a = split_detach_args(args);
    if (!a.bad.empty()) {
        return verb_usage(cli, "block-detach", "unknown option '" + a.bad + "'");
    }
    if (a.positional.size() != 2) {
        return verb_usage(cli, "block-detach", a.positional.size() < 2
                                                   ? "needs a domain and a vdev"
                                                   : "too many arguments");
    }
    auto devid = vdev_to_number(a.positional[1]);
    if (!devid) {
        return verb_usage(cli, "block-detach",
                          "bad vdev '" + a.positional[1] + "': " + devid.error().text);
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto dom = lookup_domain(cli, *c, "block-detach", a.positional[0]);
    if (!dom) {
        return kExitFailure;
    }
    auto vbds = devices_of(cli, *c, "block-detach", dom->domid, "vbd");
    if (!vbds) {
        return kExitFailure;
    }
    auto it = std::find_if(vbds->begin(), vbds->end(),
                           [&](const AttachedDevice& d) { return d.devid == *devid; });
    if (it == vbds->end()) {
        cli.err << "hvctl block-detach: " << dom->name << ": device " << a.positional[1] << " ("
                << *devid << ") not connected\n";
        return kExitFailure;
    }
    return detach_device(cli, *c, "block-detach", *dom, *it, a.force, kDetachTimeout);
}

int verb_block_list(Cli& cli, std::span<const std::string> args) {
    return list_devices_verb<BlockRow>(cli, "block-list", "vbd", args, block_row, format_block_list);
}

}  // namespace hv::tools
