// XenStore server configuration: quotas (xen-abi.md §4.8) and transport limits.
// Layer: L1 (xenstore). Plain data; copied into the server at creation.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"

namespace hv::xs {

/// Per-domain limits. Privileged connections (dom0) are exempt, as in C xenstored.
/// Exceeding one gives ENOSPC. Defaults are C xenstored's.
struct Quotas {
    std::uint32_t nodes = 1000;              ///< nodes owned by one domain
    std::uint32_t watches = 128;             ///< watches held by one domain
    std::uint32_t transactions = 10;         ///< open transactions of one domain
    std::uint32_t outstanding = 20;          ///< requests in flight per connection (see README)
    std::uint32_t transaction_nodes = 1024;  ///< distinct nodes read or written by a transaction
    std::uint32_t permissions = 5;           ///< entries in a node's permission list
    std::uint32_t path_max = 2048;           ///< path length below /local/domain/<id>/
    std::uint32_t node_size = 2048;          ///< value + perms + child names of one node, bytes
    std::uint32_t memory = 2560 * 1024;      ///< bytes of paths + values owned by one domain

    /// Quota names as used by --quota, GET_QUOTA and SET_QUOTA.
    static const std::vector<std::string_view>& names();
    /// Pointer to the field called `name`, or nullptr.
    std::uint32_t* field(std::string_view name) noexcept;
    const std::uint32_t* field(std::string_view name) const noexcept;
    /// Applies "name=value". Errors: EINVAL (unknown name or not a number).
    Result<void> apply(std::string_view assignment) noexcept;
};

struct ServerConfig {
    Quotas quotas;
    /// Reply and event bytes queued for one connection before it is disconnected as a client
    /// that does not read.
    std::size_t max_output_bytes = 1024 * 1024;
    /// A started but incomplete message older than this disconnects its connection.
    std::chrono::milliseconds partial_message_timeout{5000};
    /// Connections (sockets) beyond this are refused at accept().
    std::size_t max_connections = 1024;
    /// After serving something, run() keeps polling without sleeping for this long before it
    /// blocks again: a client's next request (or a watcher's) arriving within the window costs
    /// the server no wake-up. 0 disables it. process() itself never spins.
    std::chrono::microseconds busy_poll{0};
    /// Each round reads every ready connection in one io_uring_enter(2) and sends every
    /// queued reply and event in another (hv::SockBatch), instead of one read(2) and one
    /// send(2) per connection. false, or io_uring unavailable: one syscall each.
    bool batch_io = true;
};

}  // namespace hv::xs
