// hv-guest's skeleton: what every device kind (disks now, NICs later) plugs into. The Guest
// owns one poll loop over XenStore watch events, the device kinds' fds and the child command.
// Layer: frontends (program). Threads: everything runs on the main thread.
#pragma once

#include <poll.h>

#include <span>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "xenstore/client.hpp"

namespace hv::hvmin {
class Services;
}

namespace hv::guest {

class MountNamespace;  // fuse_file.hpp

/// What a device kind gets from the program.
struct Context {
    hvmin::Services& hv;
    xs::Client& xs;
    DomId domid;
    std::string home;                 ///< /local/domain/<domid>
    std::filesystem::path socket_dir; ///< where exports live (NBD sockets)
    unsigned wait_disks = 0;          ///< --wait-disks: disks that must be connected before the command
    std::filesystem::path fuse_dir;   ///< --fuse-dir: each disk also as the file <dir>/<dev> (empty: off)
    MountNamespace* mount_ns = nullptr;  ///< with --fuse-dir/--pci-sysfs: the domain's mount namespace
    std::filesystem::path pci_sysfs;  ///< --pci-sysfs: the PCI devices as a /sys/bus/pci tree (empty: off)
    unsigned wait_pci = 0;            ///< --wait-pci: PCI devices that must be connected before the command
};

/// One kind of device (`device/<type>/*`): one file pair per kind (disk.cpp, nic.cpp...).
class DeviceKind {
public:
    virtual ~DeviceKind() = default;
    virtual const char* name() const noexcept = 0;
    /// Registers watches and connects the devices present now.
    virtual Result<void> start() = 0;
    /// A XenStore watch event; true if it was this kind's.
    virtual bool on_watch(const xs::WatchEvent& ev) = 0;
    /// Adds the fds this kind wants polled.
    virtual void poll_fds(std::vector<pollfd>& out) = 0;
    /// Called once per poll round with every polled fd (the kind picks its own).
    virtual void handle(std::span<const pollfd> fds) = 0;
    /// True when every device present at start() is connected (or has failed).
    virtual bool ready() const = 0;
    /// NAME=VALUE entries for the command's environment (e.g. NBD socket paths).
    virtual void env(std::vector<std::string>& out) const = 0;
};

std::unique_ptr<DeviceKind> make_disks(Context& ctx);
std::unique_ptr<DeviceKind> make_nics(Context& ctx);  ///< nic.cpp
std::unique_ptr<DeviceKind> make_pci(Context& ctx);   ///< pci.cpp

}  // namespace hv::guest
