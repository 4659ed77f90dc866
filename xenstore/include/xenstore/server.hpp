// hv::xs::Server — the XenStore server on sockets: a Unix listening socket for dom0 tools
// plus already-connected fds bound to a domain id (hv-min hands one end of a socketpair per
// domain). Layer: L1 (xenstore). Thread-safety: every public member may be called from any
// thread; one internal mutex serialises them with the event processing.
//
// Two ways to drive it (pick one per Server):
//   (a) own thread:   std::jthread t([&]{ (void)srv->run(); });  ... srv->stop(); t.join();
//   (b) foreign loop: add srv->fd() (an epoll fd: readable when work is pending) to your own
//                     epoll/poll set with EPOLLIN, and call srv->process(0) whenever it is
//                     readable. Partial-message timeouts are armed as a timerfd inside, so
//                     they fire through fd() too; no periodic call is needed.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"
#include "xenstore/config.hpp"

namespace hv::xs {

class Core;

class Server {
public:
    /// Creates the store (with /, /local, /local/domain, /tool) and the epoll set.
    /// Errors: epoll/eventfd/timerfd creation errno.
    static Result<std::unique_ptr<Server>> create(ServerConfig cfg = {});
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    /// Listens on a SOCK_STREAM Unix socket at `path` (a stale socket file is replaced).
    /// The path appears only once the socket accepts connections (it is bound as `path`.new
    /// and renamed), so a client may wait for the file. Every connection accepted there is
    /// dom0 (privileged). May be called more than once. At destruction the file is removed
    /// unless another server has replaced it since.
    /// Errors: socket/bind/listen/rename errno; EEXIST (`path` exists and is not a socket);
    /// ENAMETOOLONG (`path`.new does not fit sun_path).
    Result<void> listen_unix(const std::string& path);

    /// Serves an already-connected stream socket (e.g. one end of a socketpair) as domain
    /// `domid`. The server owns `fd` from now on and closes it on disconnect. The domid is fixed:
    /// the peer cannot claim another. domid 0 is privileged, any other is not.
    /// Errors: EINVAL (bad fd or domid >= DOMID_FIRST_RESERVED), epoll errno.
    Result<void> add_connection(UniqueFd fd, DomId domid);

    /// Marks `domid` introduced and fires @introduceDomain (as XS_INTRODUCE does). Idempotent:
    /// introducing an introduced domain succeeds without a second event. Errors: EINVAL (domid).
    Result<void> introduce_domain(DomId domid);

    /// The domain is gone: fires @releaseDomain (and @releaseDomain/<domid> for depth watchers),
    /// forgets it, closes its connections and drops their watches and transactions.
    /// Its nodes stay (the toolstack removes them). Errors: EINVAL (domid), ENOENT (not introduced;
    /// its connections are still closed).
    Result<void> release_domain(DomId domid);

    /// Creates the domain's home as libxl does when it builds a domain: `/local/domain/<id>`
    /// (and device/, control/, memory/) owned by dom0 and readable by the domain; data/,
    /// drivers/, feature/, attr/, error/ owned by the domain; `domid` and `name` written.
    /// Call it before the domain's program runs. Errors: EINVAL (domid 0 or reserved), EIO.
    Result<void> make_domain_home(DomId domid, std::string_view name);

    /// True if `domid` was introduced and not released (dom0 always is).
    bool is_introduced(DomId domid) const;

    /// The epoll fd: readable when process() has something to do. Valid for the Server's life.
    int fd() const noexcept;

    /// Handles everything that is ready, waiting at most `timeout_ms` (0: do not wait, -1: wait
    /// for something). Never blocks on one client. Errors: epoll_wait errno other than EINTR.
    Result<void> process(int timeout_ms = 0);

    /// Calls process(-1) until stop(). Errors: as process().
    Result<void> run();

    /// Makes run() return (also when called before run()). Async-signal-safe: one write(2).
    void stop() noexcept;

    /// Open client connections (accepted or added, not yet closed).
    std::size_t connection_count() const;

    /// Connections closed by the server for misbehaviour (oversized payload, slow reader, stuck
    /// partial message). For tests and metrics.
    std::uint64_t protocol_disconnects() const;

    /// Times a connection stopped being read because its domain reached the `outstanding`
    /// quota (replies and watch events it had not consumed). For tests and metrics.
    std::uint64_t throttle_events() const;

private:
    struct Impl;
    explicit Server(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::xs
