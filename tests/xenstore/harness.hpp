// Test harness for the XenStore: a real Server on a private Unix socket, run in its own thread,
// plus a raw wire connection that speaks xsd_sockmsg byte by byte (no client library), so tests
// see exactly what the server sends.
#pragma once

#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "hv/unique_fd.hpp"
#include "temp_dir.hpp"
#include "xenstore/server.hpp"
#include "xenstore/wire.hpp"

namespace hv::xs::test {

using namespace std::string_literals;

struct Msg {
    MsgType type = MsgType::XS_INVALID;
    std::uint32_t req_id = 0;
    std::uint32_t tx_id = 0;
    std::string payload;

    bool is_error(std::string_view name) const {
        return type == MsgType::XS_ERROR && payload == std::string(name) + '\0';
    }
};

/// "a\0b\0" from {"a","b"}.
inline std::string nul_join(std::initializer_list<std::string_view> parts) {
    std::string s;
    for (auto p : parts) {
        s += p;
        s += '\0';
    }
    return s;
}

/// One raw connection. Every wait is bounded (default 5 s) so a broken server fails the test
/// instead of hanging it.
class RawConn {
public:
    explicit RawConn(UniqueFd fd) : fd_(std::move(fd)) {}

    static RawConn connect_unix(const std::string& path) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd.valid());
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        return RawConn(std::move(fd));
    }

    int fd() const { return fd_.get(); }

    /// Sends raw bytes. False if the peer is gone.
    bool send_bytes(std::string_view b) {
        while (!b.empty()) {
            const ssize_t n = ::send(fd_.get(), b.data(), b.size(), MSG_NOSIGNAL);
            if (n <= 0) {
                return false;
            }
            b.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    static std::string frame(MsgType type, std::string_view payload, std::uint32_t tx,
                             std::uint32_t req_id, std::optional<std::uint32_t> len = {}) {
        xsd_sockmsg h{static_cast<std::uint32_t>(type), req_id, tx,
                      len.value_or(static_cast<std::uint32_t>(payload.size()))};
        std::string s(reinterpret_cast<const char*>(&h), sizeof h);
        s += payload;
        return s;
    }

    bool send(MsgType type, std::string_view payload, std::uint32_t tx = 0,
              std::uint32_t req_id = 0) {
        return send_bytes(frame(type, payload, tx, req_id ? req_id : next_req_++));
    }

    /// The next message from the server, or nullopt on timeout / EOF.
    std::optional<Msg> recv(int timeout_ms = 5000) {
        while (true) {
            if (buf_.size() >= sizeof(xsd_sockmsg)) {
                xsd_sockmsg h;
                std::memcpy(&h, buf_.data(), sizeof h);
                if (buf_.size() >= sizeof h + h.len) {
                    Msg m{static_cast<MsgType>(h.type), h.req_id, h.tx_id,
                          buf_.substr(sizeof h, h.len)};
                    buf_.erase(0, sizeof h + h.len);
                    return m;
                }
            }
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, timeout_ms) <= 0) {
                return std::nullopt;
            }
            char tmp[65536];
            const ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
            if (n <= 0) {
                eof_ = true;
                return std::nullopt;
            }
            buf_.append(tmp, static_cast<std::size_t>(n));
        }
    }

    /// Sends a request and returns its reply; watch events that arrive first are kept in
    /// events().
    Msg call(MsgType type, std::string_view payload, std::uint32_t tx = 0) {
        const std::uint32_t id = next_req_++;
        REQUIRE(send_bytes(frame(type, payload, tx, id)));
        while (true) {
            auto m = recv();
            REQUIRE(m.has_value());
            if (m->type == MsgType::XS_WATCH_EVENT) {
                events_.push_back(*m);
                continue;
            }
            CHECK(m->req_id == id);
            CHECK(m->tx_id == tx);
            return *m;
        }
    }

    // Shorthands returning the reply.
    Msg read(std::string_view p, std::uint32_t tx = 0) { return call(MsgType::XS_READ, nul_join({p}), tx); }
    Msg write(std::string_view p, std::string_view v, std::uint32_t tx = 0) {
        std::string pl(p);
        pl += '\0';
        pl += v;
        return call(MsgType::XS_WRITE, pl, tx);
    }
    Msg mkdir(std::string_view p, std::uint32_t tx = 0) { return call(MsgType::XS_MKDIR, nul_join({p}), tx); }
    Msg rm(std::string_view p, std::uint32_t tx = 0) { return call(MsgType::XS_RM, nul_join({p}), tx); }
    Msg dir(std::string_view p, std::uint32_t tx = 0) { return call(MsgType::XS_DIRECTORY, nul_join({p}), tx); }
    Msg get_perms(std::string_view p) { return call(MsgType::XS_GET_PERMS, nul_join({p})); }
    Msg set_perms(std::string_view p, std::initializer_list<std::string_view> perms) {
        std::string pl(p);
        pl += '\0';
        for (auto x : perms) {
            pl += x;
            pl += '\0';
        }
        return call(MsgType::XS_SET_PERMS, pl);
    }
    Msg watch(std::string_view p, std::string_view token) {
        return call(MsgType::XS_WATCH, nul_join({p, token}));
    }
    Msg unwatch(std::string_view p, std::string_view token) {
        return call(MsgType::XS_UNWATCH, nul_join({p, token}));
    }
    std::uint32_t tx_start() {
        Msg m = call(MsgType::XS_TRANSACTION_START, std::string_view("", 1));
        REQUIRE(m.type == MsgType::XS_TRANSACTION_START);
        return static_cast<std::uint32_t>(std::stoul(m.payload));
    }
    Msg tx_end(std::uint32_t tx, bool commit) {
        return call(MsgType::XS_TRANSACTION_END, commit ? "T"s + '\0' : "F"s + '\0', tx);
    }

    /// The next watch event (kept from call() or read now), or nullopt within the timeout.
    std::optional<std::pair<std::string, std::string>> event(int timeout_ms = 5000) {
        if (events_.empty()) {
            auto m = recv(timeout_ms);
            if (!m) {
                return std::nullopt;
            }
            REQUIRE(m->type == MsgType::XS_WATCH_EVENT);
            events_.push_back(*m);
        }
        Msg m = events_.front();
        events_.pop_front();
        const auto nul = m.payload.find('\0');
        REQUIRE(nul != std::string::npos);
        std::string token = m.payload.substr(nul + 1);
        REQUIRE(!token.empty());
        REQUIRE(token.back() == '\0');
        token.pop_back();
        return std::make_pair(m.payload.substr(0, nul), token);
    }

    /// No event is pending: round-trips a request so anything queued before it has arrived.
    bool no_event() {
        if (!events_.empty()) {
            return false;
        }
        (void)call(MsgType::XS_GET_DOMAIN_PATH, nul_join({"0"}));
        return events_.empty();
    }

    /// True once the server has closed this connection (reads until EOF, bounded).
    bool closed_by_server(int timeout_ms = 5000) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (!eof_ && std::chrono::steady_clock::now() < deadline) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, 100) > 0) {
                char tmp[65536];
                const ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
                if (n <= 0) {
                    eof_ = true;
                }
            }
        }
        return eof_;
    }

private:
    UniqueFd fd_;
    std::string buf_;
    std::deque<Msg> events_;
    std::uint32_t next_req_ = 1;
    bool eof_ = false;
};

inline bool ok(const Msg& m) { return m.type != MsgType::XS_ERROR && m.payload == "OK"s + '\0'; }

/// A server on a private socket, served by its own thread until the harness dies.
class Harness {
public:
    /// HV_XS_TEST_BATCH_IO=0 (the `xenstore_tests_unbatched.` ctest entries): the server does
    /// one read(2)/send(2) per connection instead of io_uring batches (ServerConfig::batch_io),
    /// so both transports pass the same tests.
    explicit Harness(ServerConfig cfg = {}) : dir_("hvkit-xs") {
        if (const char* e = std::getenv("HV_XS_TEST_BATCH_IO"); e != nullptr && *e == '0') {
            cfg.batch_io = false;
        }
        auto s = Server::create(cfg);
        REQUIRE(s.has_value());
        server_ = std::move(*s);
        path_ = dir_.str() + "/socket";
        REQUIRE(server_->listen_unix(path_).has_value());
        thread_ = std::thread([this] {
            tid_.store(static_cast<pid_t>(::gettid()));
            (void)server_->run();
        });
        while (tid_.load() == 0) {
            std::this_thread::yield();
        }
    }
    ~Harness() {
        server_->stop();
        thread_.join();
    }
    Harness(const Harness&) = delete;
    Harness& operator=(const Harness&) = delete;

    Server& server() { return *server_; }
    const std::string& socket_path() const { return path_; }
    /// The scheduler state of the thread running run(): 'R' running or runnable (spinning),
    /// 'S' asleep (in epoll_wait), as /proc shows it.
    char server_state() const {
        std::FILE* f = std::fopen(("/proc/self/task/" + std::to_string(tid_.load()) + "/stat").c_str(), "r");
        REQUIRE(f != nullptr);
        char line[512] = {};
        const bool got = std::fgets(line, sizeof line, f) != nullptr;
        std::fclose(f);
        REQUIRE(got);
        const char* close = std::strrchr(line, ')');  // the name may hold spaces and ')'
        REQUIRE(close != nullptr);
        return close[2];
    }
    /// CPU time the thread running run() has used so far.
    std::chrono::nanoseconds server_cpu() {
        clockid_t id;
        REQUIRE(::pthread_getcpuclockid(thread_.native_handle(), &id) == 0);
        timespec ts{};
        REQUIRE(::clock_gettime(id, &ts) == 0);
        return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    }
    const hv::test::TempDir& dir() const { return dir_; }

    /// A dom0 (privileged) connection through the listening socket.
    RawConn dom0() { return RawConn::connect_unix(path_); }

    /// A connection bound to `domid` through add_connection() (as hv-min does).
    RawConn domain(std::uint16_t domid) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        REQUIRE(server_->add_connection(UniqueFd(sv[0]), DomId{domid}).has_value());
        return RawConn(UniqueFd(sv[1]));
    }

    /// Toolstack set-up for a guest: introduce it and give it its home directory.
    void make_domain_home(std::uint16_t domid) {
        RawConn c = dom0();
        const std::string home = "/local/domain/" + std::to_string(domid);
        REQUIRE(ok(c.mkdir(home)));
        const std::string owner = "n" + std::to_string(domid);
        REQUIRE(ok(c.set_perms(home, {owner})));
        REQUIRE(server_->introduce_domain(DomId{domid}).has_value());
    }

private:
    hv::test::TempDir dir_;
    std::unique_ptr<Server> server_;
    std::string path_;
    std::thread thread_;
    std::atomic<pid_t> tid_{0};
};

}  // namespace hv::xs::test
