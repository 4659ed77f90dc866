// Rtnetlink without shell-outs: bridges, veths, link state, MTU, MAC, master, namespace moves and
// IPv4 addresses. Layer: L3 (netback engines), control path only. A Netlink socket acts in the
// network namespace it was opened in, for its whole life. Not thread-safe (one owner).
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::net {

using Mac = std::array<std::uint8_t, 6>;

/// Moves the calling thread into a network namespace until destruction, then back. Control path
/// only; a failed return to the original namespace aborts (the thread would be lost otherwise).
class ScopedNetns {
public:
    /// netns_fd < 0: no-op.
    static hv::Result<ScopedNetns> enter(int netns_fd) noexcept;
    ScopedNetns(ScopedNetns&& o) noexcept : saved_(std::move(o.saved_)) {}
    ScopedNetns& operator=(ScopedNetns&&) = delete;
    ~ScopedNetns();

private:
    explicit ScopedNetns(hv::UniqueFd saved) noexcept : saved_(std::move(saved)) {}
    hv::UniqueFd saved_;
};

struct LinkInfo {
    int index = 0;
    std::string name;
    unsigned mtu = 0;
    unsigned flags = 0;   // IFF_*
    int master = 0;       // ifindex of the bridge, 0 if none
    Mac mac{};
    std::string kind;     // IFLA_INFO_KIND ("bridge", "veth", "tun", … or empty)
    bool up() const noexcept;
};

class Netlink {
public:
    /// A NETLINK_ROUTE socket in `netns_fd` (-1: the caller's namespace).
    static hv::Result<Netlink> open(int netns_fd = -1) noexcept;

    hv::Result<LinkInfo> get_link(std::string_view name) noexcept;
    hv::Result<int> link_index(std::string_view name) noexcept;

    hv::Result<void> create_bridge(std::string_view name) noexcept;
    /// Creates the pair `name` <-> `peer` in this namespace.
    hv::Result<void> create_veth(std::string_view name, std::string_view peer) noexcept;
    hv::Result<void> delete_link(std::string_view name) noexcept;

    /// Enslaves `link` to bridge `master`; an empty `master` releases it.
    hv::Result<void> set_master(std::string_view link, std::string_view master) noexcept;
    hv::Result<void> set_up(std::string_view link, bool up) noexcept;
    hv::Result<void> set_mtu(std::string_view link, unsigned mtu) noexcept;
    hv::Result<void> set_mac(std::string_view link, const Mac& mac) noexcept;
    /// Moves `link` into the namespace `netns_fd` (it disappears from this one).
    hv::Result<void> move_to_netns(std::string_view link, int netns_fd) noexcept;
    hv::Result<void> add_address_v4(std::string_view link, in_addr addr,
                                    unsigned prefix_len) noexcept;

private:
    explicit Netlink(hv::UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    /// Sends one request (NLM_F_ACK added) and waits (bounded) for its ack; returns the kernel's
    /// errno as an error, or the reply payload of a GET into `reply`.
    hv::Result<void> transact(std::vector<std::uint8_t>& msg,
                              std::vector<std::uint8_t>* reply = nullptr) noexcept;
    hv::Result<void> set_link(std::string_view link, std::uint16_t attr, const void* data,
                              std::size_t len, unsigned flags, unsigned change) noexcept;

    hv::UniqueFd fd_;
    std::uint32_t seq_ = 1;
};

/// Parses "aa:bb:cc:dd:ee:ff"; Errc::protocol on bad input.
hv::Result<Mac> parse_mac(std::string_view text) noexcept;
std::string format_mac(const Mac& mac);

}  // namespace hv::net
