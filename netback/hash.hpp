// The rx flow hash a frontend configured over the control ring (xen-abi.md §6.7; Linux netback
// hash.c xenvif_set_skb_hash, interface.c xenvif_select_queue): which bytes of a host frame are
// hashed for the enabled types, the Toeplitz value and type that go into the rx HASH extra, and
// the queue the mapping names. Layer: L2. Threads: HashState is written by the control thread
// (the one serving the control ring) and read by every queue's rx path; the other functions are
// pure.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "netback/ctrl.hpp"

namespace hv::net {

/// What hashing one frame gives: the hash type's bit number (_XEN_NETIF_CTRL_HASH_TYPE_*, the
/// HASH extra's `type`) and the Toeplitz value.
struct FlowHash {
    std::uint8_t type = 0;
    std::uint32_t value = 0;
};

/// Largest hash input: IPv6 source and destination addresses, then TCP source and dest ports.
inline constexpr std::size_t kMaxHashInput = 36;

/// The bytes Linux hashes for this frame under `flags` (XEN_NETIF_CTRL_HASH_TYPE_* masks) into
/// `in`, and the type: untagged Ethernet + IPv4 (IHL >= 5) or IPv6; source then destination
/// address, then the TCP source and destination ports (as on the wire) for the TCP types when
/// the packet is TCP and not a fragment (ports past the frame's end count as 0, as Linux's
/// flow dissector reads them). A TCP packet whose TCP type is off, or a UDP/other packet, gets
/// the address-only type if that one is on. 0: nothing to hash (not IP, VLAN-tagged, truncated
/// IP header, no enabled type fits). GUEST/HOST: `frame` is any bytes; every offset is checked.
std::size_t flow_hash_input(std::uint32_t flags, std::span<const std::uint8_t> frame,
                            std::span<std::uint8_t, kMaxHashInput> in, std::uint8_t& type) noexcept;

/// The HASH extra for this frame, or nullopt when the algorithm is NONE or no enabled type
/// applies (Linux clears the skb's hash: no extra).
std::optional<FlowHash> flow_hash(const HashSettings& s,
                                  std::span<const std::uint8_t> frame) noexcept;

/// The rx queue of a frame whose hash is `hash` (0 for a frame no enabled type applies to, as
/// Linux's cleared hash): mapping[hash % mapping_size] with a table, else hash % queues.
/// `queues` > 0. Only meaningful with algorithm TOEPLITZ.
unsigned flow_queue(const HashSettings& s, std::uint32_t hash, unsigned queues) noexcept;

/// A vif's settings as the control thread last published them, read by the queues' rx paths.
/// publish() after each batch of control requests; readers compare generation() with the one
/// they copied and copy again (under the mutex) only when it moved: one relaxed-cost atomic
/// load per rx pass when nothing changed.
class HashState {
public:
    void publish(const HashSettings& s) noexcept;
    std::uint64_t generation() const noexcept { return gen_.load(std::memory_order_acquire); }
    /// Copies the settings into `out`; returns their generation.
    std::uint64_t read(HashSettings& out) const noexcept;

private:
    mutable std::mutex mu_;
    HashSettings s_;
    std::atomic<std::uint64_t> gen_{0};
};

}  // namespace hv::net
