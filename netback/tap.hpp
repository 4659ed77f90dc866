// Tap: opens a tap `vif<domid>.<devid>` with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (and IFF_MULTI_QUEUE
// for several queues), sets the 12-byte virtio-net header and the offloads, non-blocking.
// Layer: L3 (netback engines), control path. The device lives as long as one queue fd is open.
#pragma once

#include <string>
#include <vector>

#include "engine.hpp"
#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"

namespace hv::net {

/// "vif<domid>.<devid>", the Xen toolstack's name for a vif's host-side device.
std::string vif_name(hv::DomId domid, unsigned devid);

struct TapConfig {
    std::string name;        // <= 15 bytes
    unsigned queues = 1;     // > 1 opens with IFF_MULTI_QUEUE, one fd per queue
    Features offloads{true, true, true};  // TUNSETOFFLOAD: what the kernel may hand us
    int netns_fd = -1;       // create the device in this network namespace (-1: the caller's)
};

class Tap {
public:
    /// Creates (or attaches to) the tap. Errors: EINVAL (name), the open/ioctl errno.
    static hv::Result<Tap> open(const TapConfig& cfg) noexcept;

    const std::string& name() const noexcept { return name_; }
    unsigned queue_count() const noexcept { return static_cast<unsigned>(queues_.size()); }
    const Features& offloads() const noexcept { return offloads_; }
    /// The fd of queue i (still owned by the Tap).
    int queue_fd(unsigned i) const noexcept { return queues_[i].get(); }
    /// Hands queue i's fd to the caller (e.g. make_tap_engine); the Tap keeps the others.
    hv::UniqueFd take_queue(unsigned i) noexcept { return std::move(queues_[i]); }
    /// An engine on queue i (takes the queue's fd).
    hv::Result<std::unique_ptr<NetEngine>> make_engine(unsigned i, unsigned mtu = 1500) noexcept;
    /// A second fd of queue i (the same open file: closing it leaves the queue attached), for
    /// an engine while the Tap keeps the device (a vif's tap lives from probe to removal).
    hv::Result<hv::UniqueFd> dup_queue(unsigned i) const noexcept;
    /// TUNSETOFFLOAD: what the kernel may hand us from now on. Errors: EINVAL (TSO without
    /// csum), the ioctl errno.
    hv::Result<void> set_offloads(const Features& f) noexcept;
    /// A multi-queue tap: queue i takes part in the kernel's queue selection (TUNSETQUEUE
    /// attach) or not (detach: frames are no longer steered to it). No-op when already so;
    /// a single-queue tap's queue stays attached (EINVAL for false).
    hv::Result<void> set_queue_attached(unsigned i, bool attached) noexcept;
    /// TUNSETSTEERINGEBPF: the eBPF program `prog_fd` chooses the queue of each frame the
    /// kernel sends to the tap (its answer modulo the attached queues); -1 detaches it (the
    /// kernel's own flow choice again). The kernel holds its own reference to the program.
    hv::Result<void> set_steering(int prog_fd) noexcept;

private:
    Tap(std::string name, std::vector<hv::UniqueFd> q, Features f) noexcept
        : name_(std::move(name)), queues_(std::move(q)), offloads_(f),
          attached_(queues_.size(), true) {}
    std::string name_;
    std::vector<hv::UniqueFd> queues_;
    Features offloads_;
    std::vector<bool> attached_;
};

}  // namespace hv::net
