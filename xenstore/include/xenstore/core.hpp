// hv::xs::Core — the XenStore server without a transport: bytes in, bytes out, per connection.
// Store, permissions, watches, transactions, quotas and the table-driven dispatcher live behind
// it. Layer: L1 (xenstore). Not thread-safe: one thread (or one lock) at a time; Server wraps it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "xenstore/config.hpp"

namespace hv::xs {

using ConnId = std::uint64_t;

class Core {
public:
    using Clock = std::chrono::steady_clock;

    explicit Core(ServerConfig cfg = {});
    ~Core();
    Core(const Core&) = delete;
    Core& operator=(const Core&) = delete;

    /// A new connection for domain `domid` (0 = privileged). Never fails.
    ConnId connect(DomId domid);
    /// Forgets the connection: drops its watches, aborts its transactions, discards its queues.
    void disconnect(ConnId id) noexcept;

    /// Takes bytes the peer sent and handles every complete message in them, queueing replies
    /// and watch events. An error means the peer broke the protocol (payload over 4096 bytes);
    /// the reason is logged and the caller must disconnect. Unknown ids are ignored.
    Result<void> feed(ConnId id, std::string_view bytes);

    /// Bytes queued for the peer (replies and watch events, whole messages, in order).
    std::string_view output(ConnId id) const noexcept;
    /// Marks the first `n` bytes of output() as sent.
    void consume_output(ConnId id, std::size_t n) noexcept;

    /// True if the connection's requests may be read now. False when its domain has
    /// `outstanding` replies and watch events queued and not yet consumed (dom0: never): the
    /// caller stops reading it, and it is listed by take_resumed() once it may read again.
    /// feed() applies the same rule: requests past the quota stay buffered, unhandled.
    bool admit(ConnId id);
    /// Connections that were stopped by the `outstanding` quota and may read again; clears the
    /// list. The caller calls feed(id, {}) to handle what they had already sent, then reads.
    std::vector<ConnId> take_resumed();
    /// Times a connection was stopped by the `outstanding` quota.
    std::uint64_t throttle_events() const noexcept;

    /// When the connection's unfinished message started, if it has one.
    std::optional<Clock::time_point> partial_since(ConnId id) const noexcept;

    /// Connections the core wants closed (slow readers, released domains); clears the list.
    /// The caller must still call disconnect() for each.
    std::vector<ConnId> take_doomed();
    /// Connections whose output grew since the last call; clears the list.
    std::vector<ConnId> take_dirty();
    /// The same into `into` (its old contents dropped), reusing its storage.
    void take_dirty(std::vector<ConnId>& into);

    /// See Server::introduce_domain / release_domain / is_introduced.
    Result<void> introduce_domain(DomId domid);
    Result<void> release_domain(DomId domid);
    /// See Server::make_domain_home.
    Result<void> make_domain_home(DomId domid, std::string_view name);
    bool is_introduced(DomId domid) const noexcept;

    std::size_t connection_count() const noexcept;
    /// Connections doomed because their output queue overflowed.
    std::uint64_t slow_reader_disconnects() const noexcept;
    /// Verifies the store's invariants (parents exist, child lists agree, usage counters match).
    /// Errors: EIO with the first inconsistency logged.
    Result<void> check() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::xs
