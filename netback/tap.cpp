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
    unsigned offload = 0;
    if (cfg.offloads.csum) {
        offload |= TUN_F_CSUM;
    }
    if (cfg.offloads.tso4) {
        offload |= TUN_F_TSO4;
    }
    if (cfg.offloads.tso6) {
        offload |= TUN_F_TSO6;
    }
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

}  // namespace hv::net
