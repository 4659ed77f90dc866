// The netif control ring's requests (xen-abi.md §6.7; Linux netback hash.c and
// process_ctrl_request): hash algorithm, flags, key and mapping table of one vif, and the
// Toeplitz hash they configure. Layer: L2. A CtrlHandler is a plain value used by one thread
// (the one serving the vif's control ring); every request is a private copy of the slot.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "hv/rings/protocols/netif.hpp"

namespace hv::net {

/// Copies `out.size()` bytes from offset 0 of the frontend's grant `gref` into `out`: the
/// GNTST status of the copy (GNTST_okay or its failure). The serving thread's GNTTABOP_copy.
using CtrlCopyFn = std::function<std::int16_t(std::uint32_t gref, std::span<std::byte> out)>;

/// A vif's hash configuration as the frontend set it.
struct HashSettings {
    static constexpr std::size_t kMaxKey = 40;       ///< Linux XEN_NETBK_MAX_HASH_KEY_SIZE
    static constexpr std::size_t kMaxMapping = 128;  ///< XEN_NETBK_MAX_HASH_MAPPING_SIZE
    /// All hash types netback computes (GET_HASH_FLAGS).
    static constexpr std::uint32_t kAllTypes =
        rings::XEN_NETIF_CTRL_HASH_TYPE_IPV4 | rings::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP |
        rings::XEN_NETIF_CTRL_HASH_TYPE_IPV6 | rings::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;
    std::uint32_t algorithm = rings::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE;
    std::uint32_t flags = 0;  ///< XEN_NETIF_CTRL_HASH_TYPE_* masks
    std::array<std::uint8_t, kMaxKey> key{};
    std::uint32_t mapping_size = 0;  ///< 0: no table (queue = hash % queues)
    std::array<std::uint32_t, kMaxMapping> mapping{};
};

class CtrlHandler {
public:
    /// `queues`: the vif's number of queues (mapping entries must be below it).
    explicit CtrlHandler(unsigned queues) noexcept : queues_(queues) {}

    /// Serves one request: the response (id and type echoed, status, data). Unknown types and
    /// the gref-mapping types get NOT_SUPPORTED; a bad parameter, or a grant copy that failed,
    /// INVALID_PARAMETER (as Linux) and nothing changes.
    rings::xen_netif_ctrl_response handle(const rings::xen_netif_ctrl_request& req,
                                          const CtrlCopyFn& copy) noexcept;
    const HashSettings& settings() const noexcept { return s_; }

private:
    std::uint32_t set_key(std::uint32_t gref, std::uint32_t len, const CtrlCopyFn& copy) noexcept;
    std::uint32_t set_mapping(std::uint32_t gref, std::uint32_t len, std::uint32_t off,
                              const CtrlCopyFn& copy) noexcept;

    unsigned queues_;
    HashSettings s_;
};

/// The Toeplitz hash of `input` under `key` (Microsoft RSS; bits of `input` past what the key
/// covers use zero key bits).
std::uint32_t toeplitz_hash(std::span<const std::uint8_t> key,
                            std::span<const std::uint8_t> input) noexcept;

}  // namespace hv::net
