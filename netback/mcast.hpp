// Per-vif multicast filter (xen-abi.md §6.2, §6.3, §6.6; Linux netback's fe_mcast_addr list):
// the frontend adds and removes addresses with MCAST_ADD / MCAST_DEL extras on its tx ring;
// while it asks for filtering (`request-multicast-control` = 1, read at connect and watched),
// host frames to a multicast address not in the list are not delivered to it (broadcast
// always is). Layer: L2. Threads: add()/del() run on any queue's worker (extras may come on
// every queue), accepts() on every queue's rx path, set_enabled() on the control thread; a
// mutex guards the list, taken only for multicast frames while filtering is on.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>

namespace hv::net {

class McastFilter {
public:
    using Addr = std::array<std::uint8_t, 6>;
    /// Linux XEN_NETBK_MCAST_MAX: an add past it is refused (NETIF_RSP_ERROR) and the list
    /// stays as it is; what to do then is the frontend's choice (e.g. ask for no filtering).
    static constexpr std::size_t kMax = 64;

    /// Appends `a` (as Linux: no check that it is a multicast address, a repeated address
    /// takes another entry). False: the list is full.
    bool add(const Addr& a) noexcept;
    /// Removes one entry equal to `a`; an address not listed is ignored (Linux answers OKAY).
    void del(const Addr& a) noexcept;
    void set_enabled(bool on) noexcept { enabled_.store(on, std::memory_order_relaxed); }
    bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }
    std::size_t size() const noexcept;
    /// Whether a frame with this Ethernet header goes to the frontend: unicast, broadcast,
    /// anything while filtering is off, a listed multicast address. A frame shorter than an
    /// address passes (it is not multicast to anyone).
    bool accepts(std::span<const std::byte> frame) const noexcept;

private:
    mutable std::mutex mu_;
    std::array<Addr, kMax> addrs_{};
    std::size_t n_ = 0;
    std::atomic<bool> enabled_{false};
};

}  // namespace hv::net
