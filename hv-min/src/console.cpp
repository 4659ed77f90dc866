// ConsoleBackend (see console.hpp). Core's epoll thread only.
#include "console.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "console_ring.hpp"
#include "evtchn_signal.hpp"
#include "hv/log.hpp"
#include "hv/rings/protocols/xs_wire.hpp"

namespace hv::hvmin {

namespace {

enum class Kind : std::uint64_t { ring = 1, listen = 2, client = 3, xenstore = 4 };
constexpr std::uint64_t key(Kind k, std::uint16_t domid, std::uint64_t cid = 0) {
    return (static_cast<std::uint64_t>(k) << 56) | (static_cast<std::uint64_t>(domid) << 40) |
           (cid & ((1ull << 40) - 1));
}

// The console's port (evtchn_signal.hpp): neither call can block, whatever the guest does to
// its own ends of the port.
void drain_port(int fd) { (void)evtchn_signal::drain(fd); }

void kick(int fd) { (void)evtchn_signal::send(fd); }

}  // namespace

struct ConsoleBackend::Client {
    UniqueFd fd;
    std::string outq;  // bytes not yet written to the socket
};

struct ConsoleBackend::Console {
    std::uint16_t domid = 0;
    // Declared in dependency order (destroyed in reverse): the ring end points into `page`.
    Mapping page;
    std::optional<console::BackEnd> ring;
    UniqueFd wait;    // the guest notified us
    UniqueFd notify;  // wakes the guest
    UniqueFd log;
    std::size_t log_bytes = 0;
    std::filesystem::path log_path;
    std::filesystem::path sock_path;
    UniqueFd listen;
    std::map<std::uint64_t, Client> clients;
    std::string recent;   // the last replay_bytes of output
    std::string pending;  // input read from clients, not yet in the ring
    bool input_paused = false;  // clients' EPOLLIN is off while `pending` is full
    bool live = true;
};

ConsoleBackend::ConsoleBackend(Options o) noexcept : opt_(std::move(o)) {}

ConsoleBackend::~ConsoleBackend() {
    while (!consoles_.empty()) {
        remove(consoles_.begin()->first);
    }
}

Result<std::unique_ptr<ConsoleBackend>> ConsoleBackend::create(Options o) {
    std::error_code ec;
    std::filesystem::create_directories(o.dir, ec);
    if (ec) {
        return fail(ec);
    }
    std::unique_ptr<ConsoleBackend> b(new ConsoleBackend(std::move(o)));
    b->ep_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!b->ep_) {
        return fail_errno();
    }
    return b;
}

Result<void> ConsoleBackend::set_xenstore(UniqueFd fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key(Kind::xenstore, 0);
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
        return fail_errno();
    }
    xs_ = std::move(fd);
    return {};
}

void ConsoleBackend::xs_send(std::uint32_t type, const std::string& payload) noexcept {
    if (!xs_) {
        return;
    }
    rings::xsd_sockmsg h{type, 0, 0, static_cast<std::uint32_t>(payload.size())};
    std::string msg(reinterpret_cast<const char*>(&h), sizeof h);
    msg += payload;
    // A few hundred bytes into an empty local socket buffer: a short write means the server is
    // gone or stuck; the keys are informational, so log and go on.
    const ssize_t n = ::send(xs_.get(), msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(msg.size())) {
        HV_LOG_RL(warn, "hv-min console: xenstore write failed (%zd of %zu bytes)", n, msg.size());
    }
}

void ConsoleBackend::on_xenstore() noexcept {
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(xs_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            // Replies are OK or an error string; a reply of type XS_ERROR is worth a log line.
            if (static_cast<std::size_t>(n) >= sizeof(rings::xsd_sockmsg)) {
                rings::xsd_sockmsg h;
                std::memcpy(&h, buf, sizeof h);
                if (h.type == rings::XS_ERROR) {
                    HV_LOG_RL(warn, "hv-min console: xenstore refused a console key");
                }
            }
            continue;
        }
        if (n == 0) {
            (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, xs_.get(), nullptr);
            xs_.reset();
        }
        return;
    }
}

Result<void> ConsoleBackend::add(std::uint16_t domid, int page_fd, std::uint64_t frame,
                                 std::uint32_t port, UniqueFd wait, UniqueFd notify) {
    remove(domid);
    auto c = std::make_unique<Console>();
    c->domid = domid;
    auto m = Mapping::map_shared(page_fd, 4096);
    if (!m) {
        return fail(m.error());
    }
    c->page = std::move(*m);
    c->ring.emplace(c->page.as<rings::xencons_interface>());
    c->wait = std::move(wait);
    c->notify = std::move(notify);
    const std::string id = std::to_string(domid);
    c->log_path = opt_.dir / (id + ".log");
    c->sock_path = opt_.dir / (id + ".sock");
    c->log = UniqueFd(::open(c->log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
    if (!c->log) {
        return fail_errno();
    }
    c->listen = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!c->listen) {
        return fail_errno();
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    const std::string p = c->sock_path.string();
    if (p.size() >= sizeof sa.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(sa.sun_path, p.c_str(), p.size() + 1);
    ::unlink(p.c_str());
    if (::bind(c->listen.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::chmod(p.c_str(), 0600) != 0 || ::listen(c->listen.get(), 8) != 0) {
        const auto err = errno_code();
        ::unlink(p.c_str());
        return fail(err);
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key(Kind::ring, domid);
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c->wait.get(), &ev) != 0) {
        const auto err = errno_code();
        ::unlink(p.c_str());
        return fail(err);
    }
    ev.data.u64 = key(Kind::listen, domid);
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c->listen.get(), &ev) != 0) {
        const auto err = errno_code();
        (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c->wait.get(), nullptr);
        ::unlink(p.c_str());
        return fail(err);
    }
    c->ring->set_connection(rings::XENCONSOLE_CONNECTED);
    // SPEC: xen-abi §8, primary console keys. ring-ref is the frame (sharp edge 26); the
    // guest may read them, only dom0 writes.
    const std::string dir = "/local/domain/" + id + "/console";
    xs_send(rings::XS_MKDIR, dir + std::string(1, '\0'));
    xs_send(rings::XS_SET_PERMS, dir + std::string(1, '\0') + "n0" + std::string(1, '\0') + "r" +
                                     id + std::string(1, '\0'));
    auto put = [&](const char* k, const std::string& v) {
        xs_send(rings::XS_WRITE, dir + "/" + k + std::string(1, '\0') + v);
    };
    put("ring-ref", std::to_string(frame));
    put("port", std::to_string(port));
    put("type", "xenconsoled");
    put("output", "file:" + c->log_path.string());
    put("limit", std::to_string(opt_.log_limit_bytes));
    put("tty", c->sock_path.string());
    consoles_.emplace(domid, std::move(c));
    return {};
}

bool ConsoleBackend::connected(std::uint16_t domid) const noexcept {
    auto it = consoles_.find(domid);
    return it != consoles_.end() && it->second->live;
}

void ConsoleBackend::close_endpoints(Console& c) noexcept {
    // The socket file goes before the clients see EOF: a client that saw EOF finds no file.
    if (c.listen) {
        (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.listen.get(), nullptr);
        c.listen.reset();
        ::unlink(c.sock_path.c_str());
    }
    for (auto& [cid, cl] : c.clients) {
        (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, cl.fd.get(), nullptr);
    }
    c.clients.clear();
    if (c.wait) {
        (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.wait.get(), nullptr);
    }
    c.live = false;
}

void ConsoleBackend::disconnect(Console& c, const char* why) noexcept {
    HV_LOG_RL(warn, "hv-min console: disconnecting the console of dom%u: %s", c.domid, why);
    c.ring->set_connection(rings::XENCONSOLE_DISCONNECTED);
    close_endpoints(c);
}

void ConsoleBackend::remove(std::uint16_t domid) noexcept {
    auto it = consoles_.find(domid);
    if (it == consoles_.end()) {
        return;
    }
    Console& c = *it->second;
    if (c.live) {
        on_ring(c);  // what the guest wrote before it died
        for (auto& [cid, cl] : c.clients) {
            if (!cl.outq.empty()) {
                (void)!::send(cl.fd.get(), cl.outq.data(), cl.outq.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            }
        }
    }
    close_endpoints(c);
    consoles_.erase(it);
}

void ConsoleBackend::write_log(Console& c, const char* data, std::size_t n) noexcept {
    if (!c.log) {
        return;
    }
    if (c.log_bytes + n > opt_.log_limit_bytes && c.log_bytes > 0) {
        std::filesystem::path old = c.log_path;
        old += ".1";
        (void)::rename(c.log_path.c_str(), old.c_str());
        c.log = UniqueFd(::open(c.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
        c.log_bytes = 0;
        if (!c.log) {
            HV_LOG_RL(warn, "hv-min console: dom%u log reopen failed: %s", c.domid,
                      std::strerror(errno));
            return;
        }
    }
    std::size_t off = 0;
    while (off < n) {
        const ssize_t w = ::write(c.log.get(), data + off, n - off);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            HV_LOG_RL(warn, "hv-min console: dom%u log write failed", c.domid);
            return;
        }
        off += static_cast<std::size_t>(w);
    }
    c.log_bytes += n;
}

void ConsoleBackend::emit(Console& c, const char* data, std::size_t n) noexcept {
    write_log(c, data, n);
    c.recent.append(data, n);
    if (c.recent.size() > opt_.replay_bytes) {
        c.recent.erase(0, c.recent.size() - opt_.replay_bytes);
    }
    std::vector<std::uint64_t> slow;
    for (auto& [cid, cl] : c.clients) {
        cl.outq.append(data, n);
        if (cl.outq.size() > opt_.client_queue_limit) {
            slow.push_back(cid);
            continue;
        }
        flush_client(c, cl);
    }
    for (auto cid : slow) {
        drop_client(c, cid, "does not read its output");
    }
}

void ConsoleBackend::on_ring(Console& c) noexcept {
    drain_port(c.wait.get());
    char buf[console::kOutSize];
    const long n = c.ring->take_output(buf);
    if (n < 0) {
        disconnect(c, "out_prod is beyond the ring (prod - cons > 2048)");
        return;
    }
    if (n > 0) {
        emit(c, buf, static_cast<std::size_t>(n));
        kick(c.notify.get());
    }
    feed_input(c);
}

void ConsoleBackend::feed_input(Console& c) noexcept {
    if (c.pending.empty() || !c.live) {
        return;
    }
    const long n = c.ring->put_input(c.pending);
    if (n < 0) {
        disconnect(c, "in_cons is beyond the ring (prod - cons > 1024)");
        return;
    }
    if (n > 0) {
        c.pending.erase(0, static_cast<std::size_t>(n));
        kick(c.notify.get());
        if (c.input_paused) {
            c.input_paused = false;
            for (auto& [cid, cl] : c.clients) {
                flush_client(c, cl);  // re-arms EPOLLIN
            }
        }
    }
}

void ConsoleBackend::on_listen(Console& c) noexcept {
    for (;;) {
        UniqueFd fd(::accept4(c.listen.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) {
            return;
        }
        const std::uint64_t cid = next_client_++;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = key(Kind::client, c.domid, cid);
        if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
            continue;
        }
        Client& cl = c.clients[cid];
        cl.fd = std::move(fd);
        cl.outq = c.recent;
        flush_client(c, cl);
    }
}

void ConsoleBackend::flush_client(Console& c, Client& cl) noexcept {
    while (!cl.outq.empty()) {
        const ssize_t n = ::send(cl.fd.get(), cl.outq.data(), cl.outq.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) {
            break;
        }
        cl.outq.erase(0, static_cast<std::size_t>(n));
    }
    epoll_event ev{};
    ev.events = EPOLLIN | (cl.outq.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT));
    for (const auto& [cid, other] : c.clients) {
        if (&other == &cl) {
            ev.data.u64 = key(Kind::client, c.domid, cid);
            (void)::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, cl.fd.get(), &ev);
            break;
        }
    }
}

void ConsoleBackend::drop_client(Console& c, std::uint64_t cid, const char* why) noexcept {
    auto it = c.clients.find(cid);
    if (it == c.clients.end()) {
        return;
    }
    if (why != nullptr) {
        HV_LOG_RL(warn, "hv-min console: dropping a client of dom%u: %s", c.domid, why);
    }
    (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, it->second.fd.get(), nullptr);
    c.clients.erase(it);
}

void ConsoleBackend::on_client(Console& c, std::uint64_t cid, std::uint32_t events) noexcept {
    auto it = c.clients.find(cid);
    if (it == c.clients.end()) {
        return;
    }
    if (events & EPOLLOUT) {
        flush_client(c, it->second);
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        // Input is bounded: at most one ring's worth waits here; the rest stays in the socket.
        constexpr std::size_t kMaxPending = 4096;
        if (c.pending.size() >= kMaxPending) {
            feed_input(c);
            if (c.pending.size() >= kMaxPending) {
                // Stop reading clients until the guest consumes (feed_input re-arms them).
                c.input_paused = true;
                epoll_event ev{};
                ev.events = it->second.outq.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT);
                ev.data.u64 = key(Kind::client, c.domid, cid);
                (void)::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, it->second.fd.get(), &ev);
                return;
            }
        }
        char buf[kMaxPending];
        const ssize_t n = ::recv(it->second.fd.get(), buf, kMaxPending - c.pending.size(), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop_client(c, cid, nullptr);
            return;
        }
        if (n > 0) {
            c.pending.append(buf, static_cast<std::size_t>(n));
            feed_input(c);
        }
    }
}

void ConsoleBackend::process() noexcept {
    epoll_event evs[32];
    const int n = ::epoll_wait(ep_.get(), evs, 32, 0);
    for (int i = 0; i < n; ++i) {
        const std::uint64_t k = evs[i].data.u64;
        const auto kind = static_cast<Kind>(k >> 56);
        const auto domid = static_cast<std::uint16_t>((k >> 40) & 0xFFFF);
        if (kind == Kind::xenstore) {
            if (xs_) {
                on_xenstore();
            }
            continue;
        }
        auto it = consoles_.find(domid);
        if (it == consoles_.end() || !it->second->live) {
            continue;
        }
        Console& c = *it->second;
        switch (kind) {
        case Kind::ring:
            on_ring(c);
            break;
        case Kind::listen:
            on_listen(c);
            break;
        case Kind::client:
            on_client(c, k & ((1ull << 40) - 1), evs[i].events);
            break;
        case Kind::xenstore:
            break;
        }
    }
}

}  // namespace hv::hvmin
