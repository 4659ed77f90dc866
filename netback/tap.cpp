// Tap device setup: TUNSETIFF with a virtio-net header, TUNSETVNETHDRSZ, TUNSETOFFLOAD,
// O_NONBLOCK. Control path; the returned fds are then used by one engine each.
#include "tap.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cstring>

#include "netlink.hpp"

namespace hv::net {

std::string vif_name(hv::DomId domid, unsigned devid) {
    return "vif" + std::to_string(domid.get()) + "." + std::to_string(devid);
}

namespace {

unsigned tun_offload_bits(const Features& f) noexcept {
    return (f.csum ? TUN_F_CSUM : 0U) | (f.tso4 ? TUN_F_TSO4 : 0U) | (f.tso6 ? TUN_F_TSO6 : 0U);
}

}  // namespace

hv::Result<Tap> Tap::open(const TapConfig& cfg) noexcept {
    if (cfg.name.empty() || cfg.name.size() >= IFNAMSIZ || cfg.queues == 0 || cfg.queues > 256) {
        return hv::fail_errno(EINVAL);
    }
    if ((cfg.offloads.tso4 || cfg.offloads.tso6) && !cfg.offloads.csum) {
        return hv::fail_errno(EINVAL);  // the kernel refuses TSO without checksum offload
    }
    // The device is created in the namespace of the thread that calls TUNSETIFF.
    auto in = ScopedNetns::enter(cfg.netns_fd);
    if (!in) {
        return hv::fail(in.error());
    }
    const unsigned offload = tun_offload_bits(cfg.offloads);
    std::vector<hv::UniqueFd> queues;
    for (unsigned q = 0; q < cfg.queues; ++q) {
        hv::UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
        if (!fd) {
            return hv::fail_errno();
        }
        ifreq ifr{};
        std::memcpy(ifr.ifr_name, cfg.name.data(), cfg.name.size());
        ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                                           (cfg.queues > 1 ? IFF_MULTI_QUEUE : 0));
        if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
            return hv::fail_errno();
        }
        int hdr_len = static_cast<int>(sizeof(VnetHdr));
        if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr_len) != 0) {
            return hv::fail_errno();
        }
        if (::ioctl(fd.get(), TUNSETOFFLOAD, static_cast<unsigned long>(offload)) != 0) {
            return hv::fail_errno();
        }
        queues.push_back(std::move(fd));
    }
    return Tap(cfg.name, std::move(queues), cfg.offloads);
}

hv::Result<std::unique_ptr<NetEngine>> Tap::make_engine(unsigned i, unsigned mtu) noexcept {
    if (i >= queues_.size() || !queues_[i]) {
        return hv::fail_errno(EBADF);
    }
    return make_tap_engine(std::move(queues_[i]), offloads_, mtu);
}

hv::Result<hv::UniqueFd> Tap::dup_queue(unsigned i) const noexcept {
    if (i >= queues_.size() || !queues_[i]) {
        return hv::fail_errno(EBADF);
    }
    hv::UniqueFd fd(::fcntl(queues_[i].get(), F_DUPFD_CLOEXEC, 0));
    if (!fd) {
        return hv::fail_errno();
    }
    return fd;
}

hv::Result<void> Tap::set_offloads(const Features& f) noexcept {
    if ((f.tso4 || f.tso6) && !f.csum) {
        return hv::fail_errno(EINVAL);
    }
    // Device-wide; asked through an attached queue (a detached one has no device).
    for (std::size_t q = 0; q < queues_.size(); ++q) {
        if (queues_[q] && attached_[q]) {
            if (::ioctl(queues_[q].get(), TUNSETOFFLOAD,
                        static_cast<unsigned long>(tun_offload_bits(f))) != 0) {
                return hv::fail_errno();
            }
            offloads_ = f;
            return {};
        }
    }
    return hv::fail_errno(EBADF);
}

hv::Result<void> Tap::set_queue_attached(unsigned i, bool attached) noexcept {
    if (i >= queues_.size() || !queues_[i]) {
        return hv::fail_errno(EBADF);
    }
    if (attached_[i] == attached) {
        return {};
    }
    if (queues_.size() == 1) {
        return hv::fail_errno(EINVAL);  // not IFF_MULTI_QUEUE: the kernel has no TUNSETQUEUE
    }
    ifreq ifr{};
    ifr.ifr_flags = static_cast<short>(attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE);
    if (::ioctl(queues_[i].get(), TUNSETQUEUE, &ifr) != 0) {
        return hv::fail_errno();
    }
    attached_[i] = attached;
    return {};
}

hv::Result<void> Tap::set_steering(int prog_fd) noexcept {
    // Any queue's fd reaches the device; queue 0 stays attached while the vif is connected.
    for (const auto& q : queues_) {
        if (q) {
            int fd = prog_fd;
            if (::ioctl(q.get(), TUNSETSTEERINGEBPF, &fd) != 0) {
                return hv::fail_errno();
            }
            return {};
        }
    }
    return hv::fail_errno(EBADF);
}

}  // namespace hv::net
