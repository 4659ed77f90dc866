// The rx flow hash (hash.hpp). Layer: L2.
#include "netback/hash.hpp"

#include <algorithm>
#include <cstring>

#include "hv/rings/netif_l4.hpp"

namespace hv::net {

namespace w = hv::rings;

std::size_t flow_hash_input(std::uint32_t flags, std::span<const std::uint8_t> f,
                            std::span<std::uint8_t, kMaxHashInput> in,
                            std::uint8_t& type) noexcept {
    constexpr std::size_t eth = 14;
    if (f.size() < eth + 20) {
        return 0;
    }
    const unsigned ethertype = unsigned{f[12]} << 8 | f[13];
    // SPEC: xenvif_set_skb_hash: the L4 type needs a TCP header that is not a fragment's
    // (skb_flow_dissect: FLOW_DIS_IS_FRAGMENT); otherwise the address-only type if enabled.
    // The ports are the 4 bytes at `l4`, 0 when past the frame (__skb_flow_get_ports).
    auto put_ports = [&](std::size_t at, std::size_t l4) {
        if (l4 + 4 <= f.size()) {
            std::memcpy(&in[at], &f[l4], 4);
        } else {
            std::fill_n(&in[at], 4, std::uint8_t{0});
        }
    };
    if (ethertype == 0x0800) {
        if ((f[eth] >> 4) != 4 || (f[eth] & 0x0f) < 5 ||
            (flags & (w::XEN_NETIF_CTRL_HASH_TYPE_IPV4 | w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP)) ==
                0) {
            return 0;
        }
        std::memcpy(in.data(), &f[eth + 12], 8);  // source, destination
        const bool fragment = ((f[eth + 6] << 8 | f[eth + 7]) & 0x3fff) != 0;  // MF or offset
        if ((flags & w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP) != 0 &&
            f[eth + 9] == w::netif_ipproto_tcp && !fragment) {
            put_ports(8, eth + std::size_t{f[eth] & 0x0fU} * 4);
            type = w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
            return 12;
        }
        if ((flags & w::XEN_NETIF_CTRL_HASH_TYPE_IPV4) != 0) {
            type = w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4;
            return 8;
        }
        return 0;
    }
    if (ethertype == 0x86dd) {
        if (f.size() < eth + 40 || (f[eth] >> 4) != 6 ||
            (flags & (w::XEN_NETIF_CTRL_HASH_TYPE_IPV6 | w::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP)) ==
                0) {
            return 0;
        }
        std::memcpy(in.data(), &f[eth + 8], 32);
        // Extension headers walked, a fragment (or a truncated header) has no L4 here.
        const auto l4 = w::netif_find_l4(f);
        if ((flags & w::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP) != 0 && l4 &&
            l4->proto == w::netif_ipproto_tcp) {
            put_ports(32, l4->off);
            type = w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;
            return 36;
        }
        if ((flags & w::XEN_NETIF_CTRL_HASH_TYPE_IPV6) != 0) {
            type = w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6;
            return 32;
        }
    }
    return 0;
}

std::optional<FlowHash> flow_hash(const HashSettings& s,
                                  std::span<const std::uint8_t> frame) noexcept {
    if (s.algorithm != w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ || s.flags == 0) {
        return std::nullopt;
    }
    std::array<std::uint8_t, kMaxHashInput> in{};
    FlowHash h;
    const std::size_t n = flow_hash_input(s.flags, frame, in, h.type);
    if (n == 0) {
        return std::nullopt;
    }
    h.value = toeplitz_hash(s.key, std::span(in).first(n));
    return h;
}

unsigned flow_queue(const HashSettings& s, std::uint32_t hash, unsigned queues) noexcept {
    // SPEC: xenvif_select_queue: mapping[hash % size], or hash % real_num_tx_queues.
    if (s.mapping_size != 0) {
        return s.mapping[hash % s.mapping_size];
    }
    return hash % queues;
}

void HashState::publish(const HashSettings& s) noexcept {
    std::lock_guard lk(mu_);
    s_ = s;
    gen_.fetch_add(1, std::memory_order_release);
}

std::uint64_t HashState::read(HashSettings& out) const noexcept {
    std::lock_guard lk(mu_);
    out = s_;
    return gen_.load(std::memory_order_relaxed);
}

}  // namespace hv::net
