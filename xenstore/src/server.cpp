// Socket transport for the XenStore core: epoll over a Unix listening socket, domain-bound fds,
// an eventfd (stop/wake) and a timerfd (partial-message deadlines). Layer: L1 (xenstore).
// Threads: any thread may call the public members; `mu` serialises them with process().
#include "xenstore/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hv/log.hpp"
#include "hv/sock_batch.hpp"
#include "hv/spin.hpp"
#include "xenstore/core.hpp"
#include "xenstore/wire.hpp"

namespace hv::xs {

namespace {

// epoll data: kind in the top byte, value below.
constexpr std::uint64_t kKindShift = 56;
enum Kind : std::uint64_t { kConn = 0, kListen = 1, kWake = 2, kTimer = 3 };
constexpr std::uint64_t tag(Kind k, std::uint64_t v) { return (std::uint64_t{k} << kKindShift) | v; }

constexpr std::size_t kReadChunk = 16384;
constexpr std::size_t kReadBudget = 256 * 1024;  // per connection per round: fairness
constexpr int kMaxEvents = 64;                  // per epoll_wait
// Batched rounds (ServerConfig::batch_io): each ready connection's first read lands in its own
// slot of this size; a connection that fills its slot is read on with plain reads. As large as
// a plain read, so a SOCK_SEQPACKET connection's packets arrive whole either way.
constexpr std::size_t kSlotBytes = kReadChunk;
constexpr unsigned kBatchEntries = kMaxEvents;

}  // namespace

struct Server::Impl {
    struct Sock {
        UniqueFd fd;
        std::uint32_t armed = EPOLLIN;  // the events epoll watches for on this fd
        std::uint64_t send_round = 0;   // the batched round that last listed it for sending
        std::uint64_t read_round = 0;   // the batched round that last read it
    };

    ServerConfig cfg;
    mutable std::mutex mu;
    Core core;
    UniqueFd ep;
    UniqueFd wake;
    UniqueFd timer;
    std::vector<UniqueFd> listeners;
    std::vector<std::pair<std::string, ino_t>> listen_paths;  // removed at exit if still ours
    std::unordered_map<ConnId, Sock> socks;
    std::unordered_set<ConnId> partial;  // connections holding an unfinished message
    std::optional<Core::Clock::time_point> armed_deadline;
    std::vector<ConnId> fed_dirty;     // feed()'s scratch
    std::vector<ConnId> settle_dirty;  // settle()'s scratch
    std::atomic<bool> stopping{false};
    std::uint64_t protocol_disconnects = 0;
    char buf[kReadChunk];
    // Batched rounds: the io_uring batch (absent: batch_io off, or io_uring unavailable), the
    // read slots, and scratch lists reused every round.
    std::optional<SockBatch> batch;
    std::unique_ptr<char[]> slots;  // kMaxEvents slots; pages are touched only as reads fill them
    std::uint64_t round = 0;
    std::vector<ConnId> recv_ids;
    std::vector<ConnId> send_ids;
    std::vector<ConnId> out_ready;  // EPOLLOUT this round
    std::vector<std::uint64_t> deferred;  // listener/wake/timer events, handled after the I/O
    std::vector<SockBatch::Completion> done;

    explicit Impl(ServerConfig c) : cfg(c), core(std::move(c)) {}

    ~Impl() {
        for (const auto& [p, ino] : listen_paths) {
            struct stat st {};
            if (::lstat(p.c_str(), &st) == 0 && st.st_ino == ino) {  // not a successor's socket
                ::unlink(p.c_str());
            }
        }
    }

    Result<void> watch_fd(int fd, std::uint32_t events, std::uint64_t data, int op = EPOLL_CTL_ADD) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = data;
        if (::epoll_ctl(ep.get(), op, fd, &ev) != 0) {
            return fail_errno();
        }
        return {};
    }

    /// Watches for input unless the core throttles the connection, for output while some is
    /// queued; one epoll_ctl only when that changes.
    void rearm(ConnId id, Sock& s) {
        const std::uint32_t want = (core.admit(id) ? std::uint32_t{EPOLLIN} : 0u) |
                                   (core.output(id).empty() ? 0u : std::uint32_t{EPOLLOUT});
        if (want != s.armed) {
            s.armed = want;
            (void)watch_fd(s.fd.get(), want, tag(kConn, id), EPOLL_CTL_MOD);
        }
    }

    Result<void> add(UniqueFd fd, DomId domid) {
        const int fl = ::fcntl(fd.get(), F_GETFL);
        if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) != 0) {
            return fail_errno(EINVAL);
        }
        const ConnId id = core.connect(domid);
        if (auto r = watch_fd(fd.get(), EPOLLIN, tag(kConn, id)); !r) {
            core.disconnect(id);
            return r;
        }
        socks.emplace(id, Sock{std::move(fd)});
        return {};
    }

    void close_conn(ConnId id) {
        auto it = socks.find(id);
        if (it != socks.end()) {
            ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, it->second.fd.get(), nullptr);
            socks.erase(it);
        }
        partial.erase(id);
        core.disconnect(id);
    }

    void accept_all(int lfd) {
        for (;;) {
            UniqueFd fd(::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
            if (!fd.valid()) {
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                    HV_LOG_RL(warn, "xenstore: accept: %s", std::strerror(errno));
                }
                if (errno == EINTR || errno == ECONNABORTED) {
                    continue;
                }
                return;
            }
            if (socks.size() >= cfg.max_connections) {
                HV_LOG_RL(warn, "xenstore: %zu connections; refusing another", socks.size());
                continue;  // fd closes here
            }
            if (auto r = add(std::move(fd), DomId{0}); !r) {
                HV_LOG_RL(warn, "xenstore: cannot serve accepted connection: %s",
                          r.error().message().c_str());
            }
        }
    }

    /// Hands bytes (possibly none: input buffered while throttled) to the core and sends the
    /// replies. False: close the connection.
    bool feed(ConnId id, Sock& s, std::string_view bytes) {
        if (!feed_core(id, bytes)) {
            return false;
        }
        // Watch events for other connections go out before this one's replies: a watcher
        // learns of a change one send(2) sooner. (Order matters only within a connection.)
        core.take_dirty(fed_dirty);
        for (ConnId other : fed_dirty) {
            if (other == id) {
                continue;  // flushed below
            }
            auto it = socks.find(other);
            if (it != socks.end() && !flush(other, it->second)) {
                close_conn(other);
            }
        }
        return flush(id, s);
    }

    /// feed() without sending: replies and events stay queued (batched rounds send them all at
    /// once). False: close the connection.
    bool feed_core(ConnId id, std::string_view bytes) {
        if (auto r = core.feed(id, bytes); !r) {
            ++protocol_disconnects;
            return false;
        }
        if (core.partial_since(id)) {
            partial.insert(id);
        } else {
            partial.erase(id);
        }
        return true;
    }

    /// Reads what the peer sent, sending replies as they are produced. False: close it.
    bool read_conn(ConnId id, Sock& s) {
        std::size_t total = 0;
        while (total < kReadBudget) {
            if (!core.admit(id)) {
                break;  // over the outstanding quota: the rest stays in the socket
            }
            const ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
            if (n == 0) {
                return false;
            }
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return errno == EAGAIN || errno == EWOULDBLOCK;
            }
            total += static_cast<std::size_t>(n);
            if (!feed(id, s, std::string_view(buf, static_cast<std::size_t>(n)))) {
                return false;
            }
            if (static_cast<std::size_t>(n) < sizeof buf) {
                break;  // drained; level-triggered epoll reports anything that arrives later
            }
        }
        rearm(id, s);
        return true;
    }

    /// Writes queued output. False: close the connection.
    bool flush(ConnId id, Sock& s) {
        for (;;) {
            const std::string_view out = core.output(id);
            if (out.empty()) {
                break;
            }
            const ssize_t n = ::send(s.fd.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == ENOTSOCK) {
                    const ssize_t w = ::write(s.fd.get(), out.data(), out.size());
                    if (w > 0) {
                        core.consume_output(id, static_cast<std::size_t>(w));
                        continue;
                    }
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    break;
                }
                return false;
            }
            core.consume_output(id, static_cast<std::size_t>(n));
        }
        rearm(id, s);
        return true;
    }

    /// Closes doomed connections, sends queued output, lets throttled connections that may
    /// read again handle what they had sent, re-arms the partial-message timer.
    void settle() {
        for (;;) {
            for (ConnId id : core.take_doomed()) {
                close_conn(id);
            }
            core.take_dirty(settle_dirty);
            auto resumed = core.take_resumed();
            if (settle_dirty.empty() && resumed.empty()) {
                break;
            }
            for (ConnId id : settle_dirty) {
                auto it = socks.find(id);
                if (it != socks.end() && !flush(id, it->second)) {
                    close_conn(id);
                }
            }
            for (ConnId id : resumed) {
                auto it = socks.find(id);
                if (it != socks.end() && !feed(id, it->second, {})) {
                    close_conn(id);
                }
            }
        }
        arm_timer();
    }

    void arm_timer() {
        std::optional<Core::Clock::time_point> earliest;
        for (ConnId id : partial) {
            if (auto t = core.partial_since(id); t && (!earliest || *t < *earliest)) {
                earliest = t;
            }
        }
        if (earliest == armed_deadline) {
            return;  // the timer already says this: no syscall
        }
        armed_deadline = earliest;
        itimerspec its{};
        if (earliest) {
            const auto deadline = *earliest + cfg.partial_message_timeout;
            auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
                deadline - Core::Clock::now());
            if (left.count() <= 0) {
                left = std::chrono::nanoseconds(1);
            }
            its.it_value.tv_sec = static_cast<time_t>(left.count() / 1000000000);
            its.it_value.tv_nsec = static_cast<long>(left.count() % 1000000000);
        }
        ::timerfd_settime(timer.get(), 0, &its, nullptr);
    }

    /// One epoll_wait (preceded by up to `spin` of zero-timeout ones) and everything it
    /// reported. The number of events handled.
    Result<int> process(int timeout_ms, std::chrono::microseconds spin = {});
    /// process()'s work on connections, one syscall per read and per send.
    void serve_each(const epoll_event* evs, int n);
    /// The same in batches: every ready connection read in one io_uring_enter, every
    /// connection with output written in another (SockBatch), then the other events.
    void serve_batched(const epoll_event* evs, int n);
    void handle_other(Kind kind, std::uint64_t val);
    void send_batch();

    void expire_partials() {
        std::uint64_t ticks = 0;
        (void)!::read(timer.get(), &ticks, sizeof ticks);
        armed_deadline.reset();  // fired (or disarmed): settle() arms it afresh
        const auto now = Core::Clock::now();
        std::vector<ConnId> stale;
        for (ConnId id : partial) {
            if (auto t = core.partial_since(id); t && now - *t >= cfg.partial_message_timeout) {
                stale.push_back(id);
            }
        }
        for (ConnId id : stale) {
            HV_LOG_RL(warn, "xenstore: conn %llu left a message unfinished for %lld ms;"
                            " disconnecting", static_cast<unsigned long long>(id),
                      static_cast<long long>(cfg.partial_message_timeout.count()));
            ++protocol_disconnects;
            close_conn(id);
        }
    }
};

Server::Server(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::create(ServerConfig cfg) {
    auto impl = std::make_unique<Impl>(std::move(cfg));
    impl->ep = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!impl->ep.valid()) {
        return fail_errno();
    }
    impl->wake = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!impl->wake.valid()) {
        return fail_errno();
    }
    impl->timer = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!impl->timer.valid()) {
        return fail_errno();
    }
    HV_TRY(impl->watch_fd(impl->wake.get(), EPOLLIN, tag(kWake, 0)));
    HV_TRY(impl->watch_fd(impl->timer.get(), EPOLLIN, tag(kTimer, 0)));
    if (impl->cfg.batch_io) {
        if (auto b = SockBatch::create(kBatchEntries)) {
            impl->batch.emplace(std::move(*b));
            impl->slots.reset(new char[std::size_t{kMaxEvents} * kSlotBytes]);
        } else {
            HV_LOG(warn, "xenstore: io_uring unavailable (%s): one syscall per read and send",
                   b.error().message().c_str());
        }
    }
    return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Result<void> Server::listen_unix(const std::string& path) {
    // Bind under a temporary name and rename once listening, so the path only ever names a
    // socket that accepts connections (clients polling for the file never see ECONNREFUSED).
    const std::string tmp = path + ".new";
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || tmp.size() >= sizeof addr.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(addr.sun_path, tmp.c_str(), tmp.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        return fail_errno();
    }
    struct stat st {};
    if (::lstat(tmp.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        ::unlink(tmp.c_str());
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        return fail_errno();
    }
    struct stat bound {};
    if (::listen(fd.get(), 128) != 0 || ::lstat(tmp.c_str(), &bound) != 0) {
        const auto ec = errno_code();
        ::unlink(tmp.c_str());
        return fail(ec);
    }
    if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
        ::unlink(tmp.c_str());
        return fail_errno(EEXIST);  // never replace something that is not a socket
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const auto ec = errno_code();
        ::unlink(tmp.c_str());
        return fail(ec);
    }
    std::lock_guard lk(impl_->mu);
    const auto idx = impl_->listeners.size();
    HV_TRY(impl_->watch_fd(fd.get(), EPOLLIN, tag(kListen, idx)));
    impl_->listeners.push_back(std::move(fd));
    impl_->listen_paths.emplace_back(path, bound.st_ino);
    return {};
}

Result<void> Server::add_connection(UniqueFd fd, DomId domid) {
    if (!fd.valid() || domid.get() >= DOMID_FIRST_RESERVED) {
        return fail_errno(EINVAL);
    }
    std::lock_guard lk(impl_->mu);
    return impl_->add(std::move(fd), domid);
}

Result<void> Server::introduce_domain(DomId domid) {
    std::lock_guard lk(impl_->mu);
    auto r = impl_->core.introduce_domain(domid);
    impl_->settle();
    return r;
}

Result<void> Server::make_domain_home(DomId domid, std::string_view name) {
    std::lock_guard lk(impl_->mu);
    auto r = impl_->core.make_domain_home(domid, name);
    impl_->settle();
    return r;
}

Result<void> Server::release_domain(DomId domid) {
    std::lock_guard lk(impl_->mu);
    auto r = impl_->core.release_domain(domid);
    impl_->settle();
    return r;
}

bool Server::is_introduced(DomId domid) const {
    std::lock_guard lk(impl_->mu);
    return impl_->core.is_introduced(domid);
}

int Server::fd() const noexcept { return impl_->ep.get(); }

Result<void> Server::process(int timeout_ms) {
    auto n = impl_->process(timeout_ms);
    if (!n) {
        return fail(n.error());
    }
    return {};
}

Result<int> Server::Impl::process(int timeout_ms, std::chrono::microseconds spin) {
    epoll_event evs[kMaxEvents];
    const int n = spin_epoll_wait(ep.get(), evs, kMaxEvents, timeout_ms, spin);
    if (n < 0) {
        if (errno == EINTR) {
            return 0;
        }
        return fail_errno();
    }
    if (n == 0) {
        return 0;  // nothing happened: nothing to settle either
    }
    std::lock_guard lk(mu);
    if (batch) {
        serve_batched(evs, n);
    } else {
        serve_each(evs, n);
    }
    settle();
    return n;
}

void Server::Impl::handle_other(Kind kind, std::uint64_t val) {
    switch (kind) {
        case kListen:
            if (val < listeners.size()) {
                accept_all(listeners[val].get());
            }
            break;
        case kWake: {
            std::uint64_t v = 0;
            (void)!::read(wake.get(), &v, sizeof v);
            break;
        }
        case kTimer:
            expire_partials();
            break;
        case kConn:
            break;
    }
}

void Server::Impl::serve_each(const epoll_event* evs, int n) {
    for (int i = 0; i < n; ++i) {
        const std::uint64_t data = evs[i].data.u64;
        const auto kind = static_cast<Kind>(data >> kKindShift);
        const std::uint64_t val = data & ((std::uint64_t{1} << kKindShift) - 1);
        if (kind != kConn) {
            handle_other(kind, val);
            continue;
        }
        auto it = socks.find(val);
        if (it == socks.end()) {
            continue;  // closed earlier in this round
        }
        bool keep = true;
        const std::uint32_t ev = evs[i].events;
        if ((ev & (EPOLLHUP | EPOLLERR)) && !(it->second.armed & EPOLLIN)) {
            keep = false;  // throttled and the peer is gone: nothing left to serve
        } else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            keep = read_conn(val, it->second);
        }
        if (keep && (ev & EPOLLOUT)) {
            it = socks.find(val);
            keep = it != socks.end() && flush(val, it->second);
        }
        if (!keep) {
            close_conn(val);
        }
    }
}

void Server::Impl::serve_batched(const epoll_event* evs, int n) {
    ++round;
    recv_ids.clear();
    out_ready.clear();
    deferred.clear();
    // 1. One read per ready, admitted connection, all in one batch. Accepting and timer expiry
    //    wait until it ran: they close and open fds, which a queued read must not meet.
    for (int i = 0; i < n; ++i) {
        const std::uint64_t data = evs[i].data.u64;
        const auto kind = static_cast<Kind>(data >> kKindShift);
        const std::uint64_t val = data & ((std::uint64_t{1} << kKindShift) - 1);
        if (kind != kConn) {
            deferred.push_back(data);
            continue;
        }
        auto it = socks.find(val);
        if (it == socks.end()) {
            continue;
        }
        const std::uint32_t ev = evs[i].events;
        if ((ev & (EPOLLHUP | EPOLLERR)) && !(it->second.armed & EPOLLIN)) {
            close_conn(val);  // throttled and the peer is gone: nothing left to serve
            continue;
        }
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            if (core.admit(val)) {
                char* slot = slots.get() + recv_ids.size() * kSlotBytes;
                (void)batch->recv(it->second.fd.get(), slot, kSlotBytes, val);  // <= 64 reads
                recv_ids.push_back(val);
                it->second.read_round = round;
            } else {
                rearm(val, it->second);  // over the outstanding quota: stop watching input
            }
        }
        if (ev & EPOLLOUT) {
            out_ready.push_back(val);
        }
    }
    batch->run(done);
    // 2. Hand what was read to the core; replies and events stay queued.
    for (std::size_t k = 0; k < done.size(); ++k) {
        const ConnId id = done[k].cookie;
        const ssize_t res = done[k].res;
        auto it = socks.find(id);
        if (it == socks.end()) {
            continue;
        }
        if (res == -EAGAIN || res == -EWOULDBLOCK) {
            continue;  // spurious readiness: rearmed below
        }
        if (res <= 0) {
            close_conn(id);  // EOF or a socket error
            continue;
        }
        const char* slot = slots.get() + k * kSlotBytes;
        if (!feed_core(id, std::string_view(slot, static_cast<std::size_t>(res)))) {
            close_conn(id);
            continue;
        }
        if (static_cast<std::size_t>(res) == kSlotBytes && !read_conn(id, it->second)) {
            close_conn(id);  // the slot was full: read on (and answer) as serve_each does
        }
    }
    // 3. Send everything queued, in one batch: other connections' watch events before the
    //    replies of the connections that were read (a watcher learns of a change sooner).
    send_batch();
    for (std::uint64_t data : deferred) {
        handle_other(static_cast<Kind>(data >> kKindShift),
                     data & ((std::uint64_t{1} << kKindShift) - 1));
    }
}

void Server::Impl::send_batch() {
    core.take_dirty(fed_dirty);
    send_ids.clear();
    auto list = [&](ConnId id) {
        auto it = socks.find(id);
        if (it != socks.end() && it->second.send_round != round) {
            it->second.send_round = round;
            send_ids.push_back(id);
        }
    };
    for (ConnId id : fed_dirty) {
        auto it = socks.find(id);
        if (it != socks.end() && it->second.read_round != round) {
            list(id);
        }
    }
    for (ConnId id : out_ready) {
        list(id);
    }
    for (ConnId id : recv_ids) {
        list(id);  // also those with nothing to send: rearmed below
    }
    for (std::size_t from = 0; from < send_ids.size();) {
        std::size_t to = from;
        for (; to < send_ids.size(); ++to) {
            const ConnId id = send_ids[to];
            auto it = socks.find(id);
            const std::string_view out = core.output(id);
            if (it != socks.end() && !out.empty() &&
                !batch->send(it->second.fd.get(), out.data(), out.size(), id)) {
                break;  // the batch is full: send these, then go on from here
            }
        }
        batch->run(done);
        for (const auto& c : done) {
            auto it = socks.find(c.cookie);
            if (it == socks.end()) {
                continue;
            }
            if (c.res > 0) {
                core.consume_output(c.cookie, static_cast<std::size_t>(c.res));
            } else if (c.res == -ENOTSOCK) {
                if (!flush(c.cookie, it->second)) {  // write(2) there
                    close_conn(c.cookie);
                }
            } else if (c.res != -EAGAIN && c.res != -EWOULDBLOCK) {
                close_conn(c.cookie);  // the peer is gone (EPIPE, ECONNRESET, ...)
            }
        }
        for (std::size_t k = from; k < to; ++k) {
            auto it = socks.find(send_ids[k]);
            if (it != socks.end()) {
                rearm(send_ids[k], it->second);  // EPOLLOUT while output is left; EPOLLIN per quota
            }
        }
        from = to;
    }
}

Result<void> Server::run() {
    // Adaptive busy poll (hv::SpinPolicy): while work arrived within the last `busy_poll` (and
    // the machine has a CPU to spare), the wait for the next event first polls the epoll fd
    // without sleeping for that long, then sleeps; after a quiet window it sleeps at once, so an
    // idle server never spins.
    // The spin probes are the epoll_wait itself (hv::spin_epoll_wait): the probe that finds
    // work also collects it, with no separate poll(2) first.
    SpinPolicy policy(impl_->cfg.busy_poll);
    while (!impl_->stopping.load(std::memory_order_acquire)) {
        const auto budget = cpus_oversubscribed() ? std::chrono::microseconds{0} : policy.budget();
        auto n = impl_->process(-1, budget);
        if (!n) {
            return fail(n.error());
        }
        if (*n > 0) {
            policy.worked();
        }
    }
    return {};
}

void Server::stop() noexcept {
    // ORDER: release pairs with the acquire load in run(); the eventfd write wakes epoll_wait.
    impl_->stopping.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(impl_->wake.get(), &one, sizeof one);
}

std::size_t Server::connection_count() const {
    std::lock_guard lk(impl_->mu);
    return impl_->socks.size();
}

std::uint64_t Server::protocol_disconnects() const {
    std::lock_guard lk(impl_->mu);
    return impl_->protocol_disconnects + impl_->core.slow_reader_disconnects();
}

std::uint64_t Server::throttle_events() const {
    std::lock_guard lk(impl_->mu);
    return impl_->core.throttle_events();
}

}  // namespace hv::xs
