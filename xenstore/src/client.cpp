// XenStore client: request/reply matching by req_id, a reader thread, a watch-event queue
// signalled through an eventfd. Layer: L1 (xenstore). Threads: callers (any number) and the
// reader thread; `mu` guards the pending table, the event queue and the connection state;
// `rx_mu` the socket's read side, taken by the reader or by a caller spinning for its reply.
#include "xenstore/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "hv/log.hpp"

namespace hv::xs {

Result<Permission> parse_permission(std::string_view s) {
    if (s.size() < 2) {
        return fail_errno(EINVAL);
    }
    Permission p;
    switch (s[0]) {
        case 'n':
            p.access = Access::none;
            break;
        case 'r':
            p.access = Access::read;
            break;
        case 'w':
            p.access = Access::write;
            break;
        case 'b':
            p.access = Access::both;
            break;
        default:
            return fail_errno(EINVAL);
    }
    unsigned id = 0;
    auto [ptr, ec] = std::from_chars(s.data() + 1, s.data() + s.size(), id);
    if (ec != std::errc() || ptr != s.data() + s.size() || id > 0xffff) {
        return fail_errno(EINVAL);
    }
    p.domid = DomId{static_cast<std::uint16_t>(id)};
    return p;
}

std::string to_string(Permission p) {
    static constexpr char letters[4] = {'n', 'r', 'w', 'b'};
    return letters[static_cast<unsigned>(p.access) & 3] + std::to_string(p.domid.get());
}

namespace {

std::vector<std::string> split_nul(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        const auto nul = s.find('\0');
        if (nul == std::string_view::npos) {
            out.emplace_back(s);
            break;
        }
        out.emplace_back(s.substr(0, nul));
        s.remove_prefix(nul + 1);
    }
    return out;
}

std::string with_nul(std::string_view s) {
    std::string p(s);
    p += '\0';
    return p;
}

}  // namespace

struct Client::Impl {
    struct Pending {
        // ORDER: `result` is written before the release store of `done`; a spinning waiter
        // reads `done` with acquire and only then the result.
        std::atomic<bool> done{false};
        Result<std::string> result{std::string()};
    };

    ClientOptions opts;
    UniqueFd fd;        // non-blocking: the reader thread and spinning callers both read it
    UniqueFd stop_fd;   // eventfd: tells the reader to exit
    UniqueFd event_fd;  // eventfd: readable while events are queued
    UniqueFd ep;        // the reader's wait set: fd (unless callers spin) and stop_fd
    std::atomic<bool> stopping{false};
    mutable std::mutex mu;
    std::condition_variable cv;
    std::unordered_map<std::uint32_t, Pending*> pending;
    std::deque<WatchEvent> events;
    std::uint32_t next_req = 1;
    bool alive = true;
    unsigned spinners = 0;    // callers reading the socket themselves (fd out of `ep` meanwhile)
    SpinPolicy event_spin;    // wait_event(): spin while events keep coming (under mu)
    std::mutex write_mu;
    // Receiving: whoever holds rx_mu reads the socket and parses (lock order: rx_mu, then mu).
    std::mutex rx_mu;
    std::string rxbuf;
    std::thread reader;

    void fail_all() {
        std::lock_guard lk(mu);
        alive = false;
        for (auto& [id, p] : pending) {
            p->result = fail_errno(ECONNRESET);
            p->done.store(true, std::memory_order_release);
        }
        pending.clear();
        cv.notify_all();
    }

    void deliver(const xsd_sockmsg& h, std::string payload) {
        std::lock_guard lk(mu);
        if (h.type == static_cast<std::uint32_t>(MsgType::XS_WATCH_EVENT)) {
            auto parts = split_nul(payload);
            if (parts.size() < 2) {
                HV_LOG_RL(warn, "xenstore client: malformed watch event ignored");
                return;
            }
            events.push_back(WatchEvent{std::move(parts[0]), std::move(parts[1])});
            event_spin.worked();
            const std::uint64_t one = 1;
            (void)!::write(event_fd.get(), &one, sizeof one);
            cv.notify_all();
            return;
        }
        auto it = pending.find(h.req_id);
        if (it == pending.end()) {
            HV_LOG_RL(warn, "xenstore client: reply to unknown req_id %u ignored", h.req_id);
            return;
        }
        Pending* p = it->second;
        pending.erase(it);
        if (h.type == static_cast<std::uint32_t>(MsgType::XS_ERROR)) {
            std::string_view name(payload);
            if (!name.empty() && name.back() == '\0') {
                name.remove_suffix(1);
            }
            p->result = fail_errno(xsd_error_errno(name));
        } else {
            p->result = std::move(payload);
        }
        p->done.store(true, std::memory_order_release);
        cv.notify_all();
    }

    /// One non-blocking read and delivery of every complete message. Caller holds rx_mu.
    /// 1: something was read; 0: nothing there; -1: the connection is finished (EOF, error or a
    /// malformed header): everyone waiting was failed and the fd left the reader's wait set.
    int pump() {
        char chunk[8192];
        ssize_t n = -1;
        bool bad = !alive_now();  // a failed send already declared the connection broken
        if (!bad) {
            n = ::read(fd.get(), chunk, sizeof chunk);
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
                return 0;
            }
            bad = n <= 0;
        }
        if (!bad) {
            rxbuf.append(chunk, static_cast<std::size_t>(n));
            std::size_t off = 0;
            while (rxbuf.size() - off >= sizeof(xsd_sockmsg)) {
                xsd_sockmsg h;
                std::memcpy(&h, rxbuf.data() + off, sizeof h);
                if (h.len > XENSTORE_PAYLOAD_MAX) {
                    HV_LOG_RL(warn, "xenstore client: server sent %u-byte payload", h.len);
                    bad = true;
                    break;
                }
                if (rxbuf.size() - off < sizeof h + h.len) {
                    break;
                }
                deliver(h, rxbuf.substr(off + sizeof h, h.len));
                off += sizeof h + h.len;
            }
            rxbuf.erase(0, off);
        }
        if (bad) {
            (void)::epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd.get(), nullptr);
            fail_all();
            return -1;
        }
        return 1;
    }

    bool alive_now() {
        std::lock_guard lk(mu);
        return alive;
    }

    /// Reader thread: sleeps until the socket (while no caller spins) or stop_fd is readable;
    /// after receiving something it keeps polling for one spin window before sleeping again.
    void read_loop() {
        SpinPolicy policy(opts.spin);
        pollfd p{ep.get(), POLLIN, 0};
        while (!stopping.load(std::memory_order_acquire)) {
            const auto budget =
                cpus_oversubscribed() ? std::chrono::microseconds{0} : policy.budget();
            if (spin_poll(&p, 1, -1, budget) < 0 && errno != EINTR) {
                break;
            }
            if (stopping.load(std::memory_order_acquire)) {
                break;
            }
            int r;
            {
                std::lock_guard rl(rx_mu);
                r = pump();
            }
            if (r < 0) {
                return;  // pump failed everyone already
            }
            if (r > 0) {
                policy.worked();
            }
        }
        fail_all();
    }

    /// Spins for up to `budget` reading the socket itself until `done()`; the reader thread is
    /// kept off the socket meanwhile, so a reply costs neither thread a wake-up. True: done.
    template <class Done>
    bool spin_reading(std::chrono::microseconds budget, Done&& done) {
        if (budget.count() <= 0) {
            return done();
        }
        set_spinning(+1);
        const bool ok = spin_until(
            [&] {
                if (done()) {
                    return true;
                }
                int r = 0;
                if (rx_mu.try_lock()) {
                    r = pump();
                    rx_mu.unlock();
                    if (r < 0 || done()) {
                        return true;
                    }
                }
                if (r == 0) {
                    // Nothing yet: let the server run if it shares this CPU (a loaded machine),
                    // rather than spinning through its time slice.
                    sched_yield();
                }
                return false;
            },
            budget);
        set_spinning(-1);
        return ok;
    }

    void set_spinning(int delta) {
        std::lock_guard lk(mu);
        const unsigned before = spinners;
        spinners = static_cast<unsigned>(static_cast<int>(spinners) + delta);
        if ((before == 0) != (spinners == 0) && alive) {
            // Level-triggered: when the fd comes back, anything still unread wakes the reader.
            epoll_event ev{};
            ev.events = spinners == 0 ? std::uint32_t{EPOLLIN} : 0u;
            (void)::epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd.get(), &ev);
        }
    }

    Result<void> send_all(std::string_view bytes) {
        while (!bytes.empty()) {
            ssize_t n = ::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == ENOTSOCK) {
                n = ::write(fd.get(), bytes.data(), bytes.size());
            }
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    pollfd p{fd.get(), POLLOUT, 0};  // the fd is non-blocking: wait for room
                    (void)::poll(&p, 1, -1);
                    continue;
                }
                return fail_errno(ECONNRESET);
            }
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return {};
    }

    Result<std::string> request(MsgType type, std::string_view payload, std::uint32_t tx) {
        if (payload.size() > XENSTORE_PAYLOAD_MAX) {
            return fail_errno(EMSGSIZE);
        }
        Pending p;
        std::uint32_t id = 0;
        {
            std::lock_guard lk(mu);
            if (!alive) {
                return fail_errno(ECONNRESET);
            }
            do {
                id = next_req++;
            } while (id == 0 || pending.count(id) != 0);
            pending.emplace(id, &p);
        }
        std::string msg;
        msg.resize(sizeof(xsd_sockmsg));
        xsd_sockmsg h{static_cast<std::uint32_t>(type), id, tx,
                      static_cast<std::uint32_t>(payload.size())};
        std::memcpy(msg.data(), &h, sizeof h);
        msg.append(payload);
        Result<void> sent;
        {
            std::lock_guard wl(write_mu);
            sent = send_all(msg);
        }
        if (sent) {
            // The reply is on its way: wait for it awake for one window (deliver() erased it).
            const auto done = [&] { return p.done.load(std::memory_order_acquire); };
            const auto budget = cpus_oversubscribed() ? std::chrono::microseconds{0} : opts.spin;
            if (spin_reading(budget, done) && done()) {
                return std::move(p.result);
            }
        }
        std::unique_lock lk(mu);
        if (!sent) {
            // The connection is broken; say so now rather than when the reader sees EOF.
            pending.erase(id);
            alive = false;
            cv.notify_all();
            return fail(sent.error());
        }
        if (!cv.wait_for(lk, opts.timeout,
                         [&] { return p.done.load(std::memory_order_acquire); })) {
            pending.erase(id);
            return fail_errno(ETIMEDOUT);
        }
        return std::move(p.result);
    }
};

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Client::~Client() {
    impl_->stopping.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(impl_->stop_fd.get(), &one, sizeof one);
    if (impl_->reader.joinable()) {
        impl_->reader.join();
    }
}

Result<std::unique_ptr<Client>> Client::connect(const std::string& path, ClientOptions o) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        return fail_errno();
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        return fail_errno();
    }
    return from_fd(std::move(fd), o);
}

Result<std::unique_ptr<Client>> Client::from_fd(UniqueFd fd, ClientOptions o) {
    if (!fd.valid()) {
        return fail_errno(EINVAL);
    }
    const int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) != 0) {
        return fail_errno();
    }
    auto impl = std::make_unique<Impl>();
    impl->opts = o;
    impl->event_spin = SpinPolicy(o.spin);
    impl->fd = std::move(fd);
    impl->stop_fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    impl->event_fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    impl->ep = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!impl->stop_fd.valid() || !impl->event_fd.valid() || !impl->ep.valid()) {
        return fail_errno();
    }
    for (const int f : {impl->fd.get(), impl->stop_fd.get()}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        if (::epoll_ctl(impl->ep.get(), EPOLL_CTL_ADD, f, &ev) != 0) {
            return fail_errno();
        }
    }
    Impl* raw = impl.get();
    impl->reader = std::thread([raw] { raw->read_loop(); });
    return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Result<std::string> Client::request(MsgType type, std::string_view payload, TxId tx) {
    return impl_->request(type, payload, tx.get());
}

Result<std::string> Client::read(std::string_view path, TxId tx) {
    return request(MsgType::XS_READ, with_nul(path), tx);
}

Result<void> Client::write(std::string_view path, std::string_view value, TxId tx) {
    std::string p = with_nul(path);
    p.append(value);
    HV_TRY(request(MsgType::XS_WRITE, p, tx));
    return {};
}

Result<void> Client::mkdir(std::string_view path, TxId tx) {
    HV_TRY(request(MsgType::XS_MKDIR, with_nul(path), tx));
    return {};
}

Result<void> Client::rm(std::string_view path, TxId tx) {
    HV_TRY(request(MsgType::XS_RM, with_nul(path), tx));
    return {};
}

Result<std::vector<std::string>> Client::directory(std::string_view path, TxId tx) {
    auto r = request(MsgType::XS_DIRECTORY, with_nul(path), tx);
    if (!r) {
        return fail(r.error());
    }
    return split_nul(*r);
}

Result<std::vector<Permission>> Client::get_perms(std::string_view path, TxId tx) {
    auto r = request(MsgType::XS_GET_PERMS, with_nul(path), tx);
    if (!r) {
        return fail(r.error());
    }
    std::vector<Permission> out;
    for (const auto& s : split_nul(*r)) {
        auto p = parse_permission(s);
        if (!p) {
            return fail_errno(EIO);
        }
        out.push_back(*p);
    }
    return out;
}

Result<void> Client::set_perms(std::string_view path, const std::vector<Permission>& perms,
                               TxId tx) {
    std::string p = with_nul(path);
    for (const auto& e : perms) {
        p += to_string(e);
        p += '\0';
    }
    HV_TRY(request(MsgType::XS_SET_PERMS, p, tx));
    return {};
}

Result<void> Client::watch(std::string_view path, std::string_view token,
                           std::optional<unsigned> depth) {
    std::string p = with_nul(path);
    p += token;
    p += '\0';
    if (depth) {
        p += std::to_string(*depth);
        p += '\0';
    }
    HV_TRY(request(MsgType::XS_WATCH, p, {}));
    return {};
}

Result<void> Client::unwatch(std::string_view path, std::string_view token) {
    std::string p = with_nul(path);
    p += token;
    p += '\0';
    HV_TRY(request(MsgType::XS_UNWATCH, p, {}));
    return {};
}

Result<ScopedWatch> Client::watch_scoped(std::string_view path, std::string_view token,
                                         std::optional<unsigned> depth) {
    HV_TRY(watch(path, token, depth));
    return ScopedWatch(this, std::string(path), std::string(token));
}

void ScopedWatch::reset() noexcept {
    if (client_ != nullptr) {
        (void)client_->unwatch(path_, token_);
        client_ = nullptr;
    }
}

Result<TxId> Client::transaction_start() {
    auto r = request(MsgType::XS_TRANSACTION_START, std::string_view("", 1), {});
    if (!r) {
        return fail(r.error());
    }
    std::uint32_t id = 0;
    const char* b = r->data();
    const char* e = b + r->size();
    if (!r->empty() && r->back() == '\0') {
        --e;
    }
    auto [ptr, ec] = std::from_chars(b, e, id);
    if (ec != std::errc() || ptr != e || id == 0) {
        return fail_errno(EIO);
    }
    return TxId{id};
}

Result<void> Client::transaction_end(TxId tx, bool commit) {
    HV_TRY(request(MsgType::XS_TRANSACTION_END, std::string_view(commit ? "T" : "F", 2), tx));
    return {};
}

Result<std::string> Client::get_domain_path(DomId domid) {
    auto r = request(MsgType::XS_GET_DOMAIN_PATH, with_nul(std::to_string(domid.get())), {});
    if (r && !r->empty() && r->back() == '\0') {
        r->pop_back();
    }
    return r;
}

int Client::watch_fd() const noexcept { return impl_->event_fd.get(); }

std::optional<WatchEvent> Client::next_event() {
    std::lock_guard lk(impl_->mu);
    if (impl_->events.empty()) {
        return std::nullopt;
    }
    WatchEvent e = std::move(impl_->events.front());
    impl_->events.pop_front();
    if (impl_->events.empty()) {
        std::uint64_t v = 0;
        (void)!::read(impl_->event_fd.get(), &v, sizeof v);
    }
    return e;
}

Result<WatchEvent> Client::wait_event(std::chrono::milliseconds timeout) {
    Impl& m = *impl_;
    std::chrono::microseconds budget;
    {
        std::lock_guard lk(m.mu);
        // Events came recently: the next is likely close.
        budget = cpus_oversubscribed() ? std::chrono::microseconds{0} : m.event_spin.budget();
    }
    m.spin_reading(budget, [&] {
        std::lock_guard lk(m.mu);
        return !m.events.empty() || !m.alive;
    });
    {
        std::unique_lock lk(m.mu);
        if (!m.cv.wait_for(lk, timeout, [&] { return !m.events.empty() || !m.alive; })) {
            return fail_errno(ETIMEDOUT);
        }
        if (m.events.empty()) {
            return fail_errno(ECONNRESET);
        }
    }
    auto e = next_event();
    if (!e) {
        return fail_errno(ETIMEDOUT);  // another thread took it
    }
    return std::move(*e);
}

bool Client::connected() const noexcept {
    std::lock_guard lk(impl_->mu);
    return impl_->alive;
}

}  // namespace hv::xs
