// hvbench suite `xs`: XenStore throughput and watch latency of our standalone `xenstored`
// beside Debian's own C xenstored and oxenstored (started by the team's
// peers/xenstored-peer script), all three measured in the same run on the same workload by
// one raw-wire client that pipelines requests (xsd_sockmsg framing, replies matched by req_id).
// Each case reports the better peer as `peer` and both peers' medians as cfg_ keys.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "harness.hpp"
#include "hv/rings/protocols/xs_wire.hpp"
#include "hv/sock_batch.hpp"
#include "hv/spin.hpp"
#include "hv/subprocess.hpp"
#include "hv/unique_fd.hpp"
#include "procs.hpp"
#include "suites.hpp"

namespace hv::bench {

namespace {

using Clock = std::chrono::steady_clock;
using rings::xsd_sockmsg;

const std::string kValue = "0123456789abcdef";  // 16 bytes

// ---- servers: pids to kill on SIGINT/SIGTERM as well as on the normal path ----

constexpr int kMaxPids = 8;
std::array<std::atomic<pid_t>, kMaxPids> g_kill_pids{};
struct sigaction g_old_int{}, g_old_term{};

void on_fatal_signal(int sig) {
    for (auto& p : g_kill_pids) {
        const pid_t pid = p.load();
        if (pid > 0) {
            ::kill(pid, SIGKILL);
        }
    }
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

void remember_pid(pid_t pid) {
    for (auto& p : g_kill_pids) {
        pid_t none = 0;
        if (p.compare_exchange_strong(none, pid)) {
            return;
        }
    }
}
void forget_pid(pid_t pid) {
    for (auto& p : g_kill_pids) {
        pid_t same = pid;
        p.compare_exchange_strong(same, 0);
    }
}

/// Installs the SIGINT/SIGTERM handler for the suite's lifetime.
struct SignalGuard {
    SignalGuard() {
        struct sigaction sa{};
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &g_old_int);
        ::sigaction(SIGTERM, &sa, &g_old_term);
    }
    ~SignalGuard() {
        ::sigaction(SIGINT, &g_old_int, nullptr);
        ::sigaction(SIGTERM, &g_old_term, nullptr);
    }
};

Result<UniqueFd> connect_unix(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        return fail_errno();
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return fail_errno();
    }
    return fd;
}

[[noreturn]] void echo_serve(UniqueFd listener);

/// A XenStore server under test, on its own socket in a private directory; killed by pid.
class Server {
public:
    std::string name;
    std::string socket;

    /// Our standalone xenstored, with its default options plus `extra`.
    static Result<std::unique_ptr<Server>> ours(const std::string& bin, const char* name,
                                                std::vector<std::string> extra = {}) {
        auto s = make(name);
        if (!s) {
            return fail(s.error());
        }
        SpawnOptions opt;
        opt.capture_output = false;
        opt.log_path = ((*s)->dir_ / "out.log").string();
        std::vector<std::string> argv{bin, "--socket", (*s)->socket};
        argv.insert(argv.end(), extra.begin(), extra.end());
        auto p = Subprocess::spawn(argv, opt);
        if (!p) {
            return fail(p.error());
        }
        (*s)->ours_.emplace(std::move(*p));
        remember_pid((*s)->ours_->pid());
        HV_TRY((*s)->wait_ready());
        return s;
    }

    /// Debian's daemon through the peer script ("c" or "ocaml"); the script prints its pid.
    static Result<std::unique_ptr<Server>> peer(const std::string& script, const char* kind,
                                                const char* name) {
        auto s = make(name);
        if (!s) {
            return fail(s.error());
        }
        const std::string cmd = "timeout 60 '" + script + "' " + kind + " '" +
                                (*s)->dir_.string() + "' 2>'" + ((*s)->dir_ / "script.err").string() +
                                "'";
        FILE* f = ::popen(cmd.c_str(), "r");
        if (f == nullptr) {
            return fail_errno();
        }
        char line[64] = {};
        const bool got = std::fgets(line, sizeof line, f) != nullptr;
        const int st = ::pclose(f);
        const long pid = got ? std::strtol(line, nullptr, 10) : 0;
        if (pid > 0) {
            (*s)->peer_pid_ = static_cast<pid_t>(pid);
            remember_pid((*s)->peer_pid_);
        }
        if (!got || st != 0 || pid <= 0) {
            std::fprintf(stderr, "hvbench xs: %s did not start (see %s)\n", name, cmd.c_str());
            return fail_errno(ECHILD);
        }
        HV_TRY((*s)->wait_ready());
        return s;
    }

    /// The floor: a child process that frames requests and answers each with a canned reply
    /// (READ: the bench value; WRITE: OK plus an event to every watcher; anything else: OK).
    /// No store, no permissions: what any server could at best do with this client, here.
    static Result<std::unique_ptr<Server>> echo() {
        auto s = make("echo_floor");
        if (!s) {
            return fail(s.error());
        }
        UniqueFd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::memcpy(sa.sun_path, (*s)->socket.c_str(), (*s)->socket.size() + 1);
        if (!l.valid() || ::bind(l.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
            ::listen(l.get(), 128) != 0) {
            return fail_errno();
        }
        const pid_t pid = ::fork();
        if (pid < 0) {
            return fail_errno();
        }
        if (pid == 0) {
            echo_serve(std::move(l));
        }
        (*s)->peer_pid_ = pid;
        (*s)->child_ = true;
        remember_pid(pid);
        HV_TRY((*s)->wait_ready());
        return s;
    }

    /// CPU time the server's process has used so far (all its threads, from schedstat), ns;
    /// NaN if unreadable.
    double cpu_ns() const {
        const pid_t pid = ours_ ? ours_->pid() : peer_pid_;
        double total = 0;
        std::error_code ec;
        const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
        for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
            FILE* f = std::fopen((t.path() / "schedstat").c_str(), "r");
            unsigned long long ns = 0;
            if (f != nullptr) {
                if (std::fscanf(f, "%llu", &ns) == 1) {
                    total += static_cast<double>(ns);
                }
                std::fclose(f);
            }
        }
        return ec ? std::numeric_limits<double>::quiet_NaN() : total;
    }

    ~Server() {
        if (peer_pid_ > 0 && child_) {
            ::kill(peer_pid_, SIGKILL);
            ::waitpid(peer_pid_, nullptr, 0);
            forget_pid(peer_pid_);
        } else if (peer_pid_ > 0) {
            ::kill(peer_pid_, SIGTERM);
            for (int i = 0; i < 100 && ::kill(peer_pid_, 0) == 0; ++i) {
                ::usleep(20'000);  // not our child: nothing to wait on but its disappearance
            }
            ::kill(peer_pid_, SIGKILL);
            forget_pid(peer_pid_);
        }
        if (ours_) {
            forget_pid(ours_->pid());
            ours_->terminate();
        }
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

private:
    static Result<std::unique_ptr<Server>> make(const char* name) {
        std::unique_ptr<Server> s(new Server());
        s->name = name;
        std::string tmpl = (std::filesystem::temp_directory_path() / "hvbench-xs.XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            return fail_errno();
        }
        s->dir_ = tmpl;
        s->socket = (s->dir_ / "socket").string();
        return s;
    }
    /// Polls (bounded, 10 s) until the socket accepts a connection.
    Result<void> wait_ready() {
        const auto deadline = Clock::now() + std::chrono::milliseconds(kWaitTimeoutMs);
        for (;;) {
            if (connect_unix(socket)) {
                return {};
            }
            if (Clock::now() > deadline) {
                return fail(timed_out_error());
            }
            ::usleep(10'000);  // no readiness signal from the daemons but the socket itself
        }
    }
    Server() = default;
    std::filesystem::path dir_;
    std::optional<Subprocess> ours_;
    pid_t peer_pid_ = -1;
    bool child_ = false;  // forked by us (echo floor): reaped, not polled for
};

void echo_serve(UniqueFd listener) {
    struct EConn {
        UniqueFd fd;
        std::string in;
        std::string out;
        std::string watch;  // "path\0token\0" once it watches
    };
    const int ep = ::epoll_create1(0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener.get();
    ::epoll_ctl(ep, EPOLL_CTL_ADD, listener.get(), &ev);
    std::unordered_map<int, EConn> conns;
    const std::string ok("OK", 3);
    auto put = [](std::string& out, std::uint32_t type, std::uint32_t id, std::string_view p) {
        xsd_sockmsg h{type, id, 0, static_cast<std::uint32_t>(p.size())};
        out.append(reinterpret_cast<const char*>(&h), sizeof h);
        out.append(p);
    };
    // As cheap as a server can be: the reads of a pass in one io_uring_enter, the sends in
    // another (hv::SockBatch, as our xenstored does), so the floor bounds ours too.
    auto batch = SockBatch::create(64);
    if (!batch) {
        ::_exit(1);
    }
    std::vector<SockBatch::Completion> done;
    constexpr std::size_t kSlot = 16384;
    std::vector<char> slots(64 * kSlot);
    std::vector<int> ready;
    for (;;) {
        epoll_event evs[64];
        const int n = ::epoll_wait(ep, evs, 64, -1);
        ready.clear();
        for (int i = 0; i < n; ++i) {
            const int fd = evs[i].data.fd;
            if (fd == listener.get()) {
                UniqueFd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (c.valid()) {
                    ev.data.fd = c.get();
                    ::epoll_ctl(ep, EPOLL_CTL_ADD, c.get(), &ev);
                    const int cfd = c.get();
                    conns[cfd].fd = std::move(c);
                }
                continue;
            }
            (void)batch->recv(fd, slots.data() + ready.size() * kSlot, kSlot,
                              static_cast<std::uint64_t>(fd));
            ready.push_back(fd);
        }
        batch->run(done);
        for (std::size_t k = 0; k < done.size(); ++k) {
            const int fd = static_cast<int>(done[k].cookie);
            if (done[k].res == -EAGAIN) {
                continue;
            }
            if (done[k].res <= 0) {
                conns.erase(fd);  // closes it, which also removes it from the epoll set
                continue;
            }
            EConn& c = conns[fd];
            c.in.append(slots.data() + k * kSlot, static_cast<std::size_t>(done[k].res));
            std::size_t off = 0;
            xsd_sockmsg h;
            while (c.in.size() - off >= sizeof h) {
                std::memcpy(&h, c.in.data() + off, sizeof h);
                if (c.in.size() - off < sizeof h + h.len) {
                    break;
                }
                const std::string_view p(c.in.data() + off + sizeof h, h.len);
                if (h.type == rings::XS_READ) {
                    put(c.out, h.type, h.req_id, kValue);
                } else if (h.type == rings::XS_WRITE) {
                    const std::string_view path = p.substr(0, p.find('\0'));
                    for (auto& [ofd, o] : conns) {
                        if (!o.watch.empty() && o.watch.compare(0, path.size(), path) == 0) {
                            std::string e(path);
                            e += o.watch.substr(o.watch.find('\0'));
                            put(o.out, rings::XS_WATCH_EVENT, 0, e);
                        }
                    }
                    put(c.out, h.type, h.req_id, ok);
                } else if (h.type == rings::XS_WATCH) {
                    c.watch.assign(p);
                    put(c.out, h.type, h.req_id, ok);
                    put(c.out, rings::XS_WATCH_EVENT, 0, p);
                } else {
                    put(c.out, h.type, h.req_id, ok);
                }
                off += sizeof h + h.len;
            }
            c.in.erase(0, off);
        }
        for (auto& [fd, c] : conns) {
            if (!c.out.empty() &&
                !batch->send(fd, c.out.data(), c.out.size(), static_cast<std::uint64_t>(fd))) {
                break;  // > 64 with output: cannot happen with this client (<= 64 connections)
            }
        }
        batch->run(done);
        for (const auto& d : done) {
            EConn& c = conns[static_cast<int>(d.cookie)];
            std::size_t sent = d.res > 0 ? static_cast<std::size_t>(d.res) : 0;
            while ((d.res >= 0 || d.res == -EAGAIN) && sent < c.out.size()) {  // full: block
                const ssize_t w = ::send(c.fd.get(), c.out.data() + sent, c.out.size() - sent,
                                         MSG_NOSIGNAL);
                if (w <= 0) {
                    break;
                }
                sent += static_cast<std::size_t>(w);
            }
            c.out.clear();
        }
    }
}

// ---- the raw-wire client ----

/// How long the client polls without sleeping before it blocks (hv::spin_epoll_wait), the same
/// for every server: HV_XS_CLIENT_SPIN_US, else the process default (HVKIT_POLL_US), else
/// kDefaultClientSpin. It takes the client's own wake-up out of every server's figure alike, so
/// what remains is the server's. Like every hvkit waiter it does not spin while the machine's
/// CPUs are oversubscribed (hv::cpus_oversubscribed()).
constexpr unsigned kDefaultClientSpinUs = 50;
std::chrono::microseconds client_spin() {
    static const std::chrono::microseconds us = [] {
        if (const char* e = std::getenv("HV_XS_CLIENT_SPIN_US")) {
            return std::chrono::microseconds(std::strtoul(e, nullptr, 10));
        }
        const auto d = default_spin();
        return d.count() > 0 ? d : std::chrono::microseconds(kDefaultClientSpinUs);
    }();
    return us;
}

/// The client's spin for this wait: none while the CPUs are oversubscribed (as the client
/// library does), where spinning would only hold up the server being waited for.
std::chrono::microseconds client_budget() {
    return cpus_oversubscribed() ? std::chrono::microseconds{0} : client_spin();
}

/// epoll_wait(2) after up to client_budget() of zero-timeout ones (hv::spin_epoll_wait: the
/// probe that finds work also collects it).
int epoll_spin(int ep, epoll_event* evs, int max, int timeout_ms) {
    return spin_epoll_wait(ep, evs, max, timeout_ms, client_budget());
}

int poll_spin(pollfd* fds, nfds_t n, int timeout_ms) {
    return spin_poll(fds, n, timeout_ms, client_budget());
}

std::string message(std::uint32_t type, std::uint32_t req_id, const std::string& payload) {
    xsd_sockmsg h{type, req_id, 0, static_cast<std::uint32_t>(payload.size())};
    std::string m(reinterpret_cast<const char*>(&h), sizeof h);
    return m + payload;
}

struct Reply {
    xsd_sockmsg hdr{};
    std::string payload;
};

/// One connection: pipelined requests out, complete replies in.
class Conn {
public:
    explicit Conn(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    int fd() const noexcept { return fd_.get(); }

    Result<void> send_all(const std::string& bytes) {
        std::size_t done = 0;
        while (done < bytes.size()) {
            const ssize_t w =
                ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w < 0) {
                return fail_errno();
            }
            done += static_cast<std::size_t>(w);
        }
        return {};
    }
    /// Reads what is there (one recv) into the buffer. ECONNRESET on EOF.
    Result<void> fill() {
        char b[16384];
        ssize_t r;
        do {
            r = ::recv(fd_.get(), b, sizeof b, 0);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            return fail_errno();
        }
        if (r == 0) {
            return fail_errno(ECONNRESET);
        }
        buf_.append(b, static_cast<std::size_t>(r));
        return {};
    }
    /// fill()'s bookkeeping for bytes received elsewhere (a SockBatch recv).
    void append(const char* b, std::size_t n) { buf_.append(b, n); }
    /// A message whose payload points into the buffer: valid until the next fill()/take*().
    struct View {
        xsd_sockmsg hdr;
        std::string_view payload;
    };
    std::optional<View> take_view() {
        if (buf_.size() - pos_ < sizeof(xsd_sockmsg)) {
            compact();
            return std::nullopt;
        }
        View v{};
        std::memcpy(&v.hdr, buf_.data() + pos_, sizeof v.hdr);
        if (buf_.size() - pos_ < sizeof v.hdr + v.hdr.len) {
            compact();
            return std::nullopt;
        }
        v.payload = std::string_view(buf_).substr(pos_ + sizeof v.hdr, v.hdr.len);
        pos_ += sizeof v.hdr + v.hdr.len;
        return v;
    }

    /// The next complete message in the buffer, if any.
    std::optional<Reply> take() {
        if (buf_.size() - pos_ < sizeof(xsd_sockmsg)) {
            compact();
            return std::nullopt;
        }
        Reply r;
        std::memcpy(&r.hdr, buf_.data() + pos_, sizeof r.hdr);
        if (buf_.size() - pos_ < sizeof r.hdr + r.hdr.len) {
            compact();
            return std::nullopt;
        }
        r.payload.assign(buf_, pos_ + sizeof r.hdr, r.hdr.len);
        pos_ += sizeof r.hdr + r.hdr.len;
        return r;
    }
    /// Blocks (bounded) for the next message.
    Result<Reply> next() {
        for (;;) {
            if (auto r = take()) {
                return std::move(*r);
            }
            pollfd p{fd_.get(), POLLIN, 0};
            const int pr = poll_spin(&p, 1, kWaitTimeoutMs);
            if (pr == 0) {
                return fail(timed_out_error());
            }
            if (pr < 0 && errno != EINTR) {
                return fail_errno();
            }
            if (pr > 0) {
                HV_TRY(fill());
            }
        }
    }
    /// One request, waiting for its reply; an XS_ERROR reply is EPROTO.
    Result<Reply> call(std::uint32_t type, const std::string& payload) {
        HV_TRY(send_all(message(type, ++req_, payload)));
        for (;;) {
            auto r = next();
            if (!r) {
                return fail(r.error());
            }
            if (r->hdr.type == rings::XS_WATCH_EVENT) {
                continue;
            }
            if (r->hdr.req_id != req_ || r->hdr.type != type) {
                std::fprintf(stderr, "hvbench xs: reply type %u (%s) to type %u\n", r->hdr.type,
                             r->payload.c_str(), type);
                return fail_errno(EPROTO);
            }
            return r;
        }
    }

private:
    void compact() {
        if (pos_ > 0) {
            buf_.erase(0, pos_);
            pos_ = 0;
        }
    }
    UniqueFd fd_;
    std::string buf_;
    std::size_t pos_ = 0;
    std::uint32_t req_ = 0;
};

Result<std::vector<Conn>> open_conns(const std::string& socket, unsigned n) {
    std::vector<Conn> conns;
    for (unsigned i = 0; i < n; ++i) {
        auto fd = connect_unix(socket);
        if (!fd) {
            return fail(fd.error());
        }
        conns.emplace_back(std::move(*fd));
    }
    return conns;
}

enum class Op { read, write };

std::string node(unsigned conn) {
    return "/bench/c" + std::to_string(conn);
}

/// `total` READs or WRITEs of each connection's own node, spread over `conns` connections,
/// each keeping `depth` requests in flight. ops/s.
Result<Sample> pipelined(const std::string& socket, Op op, unsigned nconns, unsigned depth,
                         std::uint64_t total) {
    auto conns = open_conns(socket, nconns);
    if (!conns) {
        return fail(conns.error());
    }
    const std::uint32_t type = op == Op::read ? rings::XS_READ : rings::XS_WRITE;
    std::vector<std::string> req(nconns);
    for (unsigned i = 0; i < nconns; ++i) {
        // The nodes exist before timing (READ needs them; WRITE then overwrites).
        auto w = (*conns)[i].call(rings::XS_WRITE, node(i) + '\0' + kValue);
        if (!w) {
            return fail(w.error());
        }
        req[i] = op == Op::read ? node(i) + '\0' : node(i) + '\0' + kValue;
    }
    const std::uint64_t per_conn = (total + nconns - 1) / nconns;
    std::vector<std::uint64_t> sent(nconns, 0), answered(nconns, 0);
    // epoll, not poll: the client's cost per ready connection must not grow with the number
    // of connections, or with 64 of them the client, not the server, sets the pace.
    UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep.valid()) {
        return fail_errno();
    }
    for (unsigned i = 0; i < nconns; ++i) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = i;
        if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, (*conns)[i].fd(), &ev) != 0) {
            return fail_errno();
        }
    }
    std::vector<std::string> msg(nconns);  // each connection's request, req_id patched in
    for (unsigned i = 0; i < nconns; ++i) {
        msg[i] = message(type, 0, req[i]);
    }
    // The client's own syscalls must not set the pace with 64 connections: the sends of a pass
    // go out in one io_uring_enter and the reads of a pass come in another (hv::SockBatch; a
    // pass with one connection ready is plain send/recv). The same for every server.
    auto batch = SockBatch::create(64);
    if (!batch) {
        return fail(batch.error());
    }
    constexpr std::size_t kSlot = 16384;
    std::vector<char> slots(64 * kSlot);
    std::vector<SockBatch::Completion> done;
    std::vector<std::string> out(nconns);
    std::uint64_t done_conns = 0;
    const std::string ok_reply("OK", 3);
    const auto t0 = Clock::now();
    auto queue_refill = [&](unsigned i) {
        std::string& o = out[i];
        o.clear();
        while (sent[i] < per_conn && sent[i] - answered[i] < depth) {
            // req_id: the sequence number; replies come back in order on one connection.
            const auto id = static_cast<std::uint32_t>(sent[i]++);
            const std::size_t at = o.size();
            o += msg[i];
            std::memcpy(o.data() + at + offsetof(xsd_sockmsg, req_id), &id, sizeof id);
        }
        if (!o.empty()) {
            (void)batch->send((*conns)[i].fd(), o.data(), o.size(), i);  // <= 64 per pass
        }
    };
    // Sends the queued requests; a short send (a full socket buffer) finishes blocking.
    auto send_queued = [&]() -> Result<void> {
        batch->run(done);
        for (const auto& c : done) {
            const auto i = static_cast<unsigned>(c.cookie);
            if (c.res < 0 && c.res != -EAGAIN) {
                return fail_errno(static_cast<int>(-c.res));
            }
            const std::size_t sent_bytes = c.res < 0 ? 0 : static_cast<std::size_t>(c.res);
            if (sent_bytes < out[i].size()) {
                HV_TRY((*conns)[i].send_all(out[i].substr(sent_bytes)));
            }
        }
        return {};
    };
    for (unsigned i = 0; i < nconns; ++i) {
        queue_refill(i);
        if (batch->queued() == 64) {
            HV_TRY(send_queued());
        }
    }
    HV_TRY(send_queued());
    epoll_event evs[64];
    while (done_conns < nconns) {
        int pr;
        do {
            pr = epoll_spin(ep.get(), evs, 64, kWaitTimeoutMs);
        } while (pr < 0 && errno == EINTR);
        if (pr < 0) {
            return fail_errno();
        }
        if (pr == 0) {
            return fail(timed_out_error());
        }
        for (int k = 0; k < pr; ++k) {
            const unsigned i = evs[k].data.u32;
            (void)batch->recv((*conns)[i].fd(), slots.data() + k * kSlot, kSlot, i);
        }
        batch->run(done);
        for (std::size_t k = 0; k < done.size(); ++k) {
            const auto i = static_cast<unsigned>(done[k].cookie);
            auto& c = (*conns)[i];
            if (done[k].res == 0) {
                return fail_errno(ECONNRESET);
            }
            if (done[k].res < 0 && done[k].res != -EAGAIN) {
                return fail_errno(static_cast<int>(-done[k].res));
            }
            if (done[k].res > 0) {
                c.append(slots.data() + k * kSlot, static_cast<std::size_t>(done[k].res));
            }
            while (auto r = c.take_view()) {
                if (r->hdr.type != type || r->hdr.req_id != answered[i] ||
                    r->payload != (op == Op::read ? std::string_view(kValue) : ok_reply)) {
                    std::fprintf(stderr, "hvbench xs: unexpected reply type %u id %u (%.*s)\n",
                                 r->hdr.type, r->hdr.req_id, static_cast<int>(r->payload.size()),
                                 r->payload.data());
                    return fail_errno(EPROTO);
                }
                if (++answered[i] == per_conn) {
                    ++done_conns;
                    (void)::epoll_ctl(ep.get(), EPOLL_CTL_DEL, c.fd(), nullptr);
                }
            }
            queue_refill(i);
        }
        HV_TRY(send_queued());
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return Sample{static_cast<double>(per_conn * nconns) / secs};
}

/// Watch-fire latency: connection A watches a node; B writes it; time from B's write being
/// sent to A receiving the event (p50, p99).
Result<Sample> watch_latency(const std::string& socket, std::uint64_t n) {
    auto conns = open_conns(socket, 2);
    if (!conns) {
        return fail(conns.error());
    }
    auto& watcher = (*conns)[0];
    auto& writer = (*conns)[1];
    const std::string path = "/bench/watched";
    HV_TRY(writer.call(rings::XS_WRITE, path + '\0' + "0"));
    // WATCH's reply and the event every WATCH fires at once, in whichever order they come.
    HV_TRY(watcher.send_all(message(rings::XS_WATCH, 1, path + '\0' + "tok" + '\0')));
    bool replied = false;
    bool fired = false;
    while (!replied || !fired) {
        auto m = watcher.next();
        if (!m) {
            return fail(m.error());
        }
        if (m->hdr.type == rings::XS_WATCH_EVENT) {
            fired = true;
        } else if (m->hdr.type == rings::XS_WATCH && m->hdr.req_id == 1) {
            replied = true;
        } else {
            return fail_errno(EPROTO);
        }
    }
    std::vector<double> ns;
    ns.reserve(n);
    std::uint32_t id = 100;
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        HV_TRY(writer.send_all(message(rings::XS_WRITE, ++id, path + '\0' + std::to_string(i))));
        auto ev = watcher.next();
        if (!ev) {
            return fail(ev.error());
        }
        ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
        if (ev->hdr.type != rings::XS_WATCH_EVENT ||
            ev->payload.compare(0, path.size() + 1, path + '\0') != 0) {
            return fail_errno(EPROTO);
        }
        auto ok = writer.next();
        if (!ok) {
            return fail(ok.error());
        }
        if (ok->hdr.type != rings::XS_WRITE || ok->hdr.req_id != id) {
            return fail_errno(EPROTO);
        }
    }
    return latency_sample(ns);
}

std::string peer_script() {
    if (const char* env = std::getenv("HV_XENSTORED_PEER")) {
        return env;
    }
    return std::string(HV_SHARED_DIR) + "/peers/xenstored-peer";
}

std::string xenstored_bin() {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const auto sibling = self.parent_path() / "xenstored";
        if (std::filesystem::exists(sibling)) {
            return sibling.string();
        }
    }
    return HV_XENSTORED_BIN;
}

struct Series {
    std::vector<Sample> samples;
    Sample median() const {
        auto med = [&](auto get) {
            std::vector<double> v;
            for (const auto& s : samples) {
                v.push_back(get(s));
            }
            return v.empty() ? std::numeric_limits<double>::quiet_NaN() : percentile(v, 50);
        };
        return {med([](const Sample& s) { return s.value; }),
                med([](const Sample& s) { return s.p50; }),
                med([](const Sample& s) { return s.p99; })};
    }
};

}  // namespace

int run_xs_suite(Context& ctx) {
    SignalGuard guard;
    const std::string script = peer_script();
    if (!std::filesystem::exists(script)) {
        std::fprintf(stderr,
                     "hvbench xs: skipped: no peer script at %s (Debian's xenstored peers; set "
                     "HV_XENSTORED_PEER)\n",
                     script.c_str());
        return 0;
    }
    // Ours as the daemon starts by default (its server spin window on, io_uring batches) and in
    // variants, each beside the same peer: the server never spinning, and the server doing one
    // read(2)/send(2) per connection (--no-batch-io). The client is the same for every server.
    auto ours = Server::ours(xenstored_bin(), "hvkit_xenstored");
    if (!ours) {
        std::fprintf(stderr, "hvbench xs: our xenstored (%s) did not start: %s\n",
                     xenstored_bin().c_str(), ours.error().message().c_str());
        return 1;
    }
    struct Variant {
        const char* key;   // cfg_<key>, cfg_<key>_vs_peer
        const char* what;  // for the progress line
        std::unique_ptr<Server> server;
    };
    std::vector<Variant> variants;
    for (const auto& [key, what, flag, arg] :
         {std::tuple{"ours_server_nospin", "with the server not spinning", "--busy-poll-us", "0"},
          std::tuple{"ours_unbatched", "with one syscall per read and send", "--no-batch-io",
                     ""}}) {
        std::vector<std::string> extra{flag};
        if (*arg != '\0') {
            extra.emplace_back(arg);
        }
        auto v = Server::ours(xenstored_bin(), key, extra);
        if (!v) {
            std::fprintf(stderr, "hvbench xs: our xenstored (%s) did not start: %s\n",
                         what, v.error().message().c_str());
            return 1;
        }
        variants.push_back({key, what, std::move(*v)});
    }
    std::vector<std::unique_ptr<Server>> peers;
    for (const auto& [kind, name] : {std::pair{"c", "c_xenstored"}, {"ocaml", "oxenstored"}}) {
        auto p = Server::peer(script, kind, name);
        if (p) {
            peers.push_back(std::move(*p));
        } else {
            std::fprintf(stderr, "hvbench xs: peer %s unavailable: %s\n", name,
                         p.error().message().c_str());
        }
    }
    if (peers.empty()) {
        std::fprintf(stderr, "hvbench xs: skipped: neither Debian peer started\n");
        return 0;
    }
    // Not a peer: the floor any server could reach with this client on this machine (see
    // Server::echo). Its ratio to the better peer bounds the ratio any server can show.
    auto floor = Server::echo();
    if (!floor) {
        std::fprintf(stderr, "hvbench xs: echo floor did not start: %s\n",
                     floor.error().message().c_str());
    }

    struct Case {
        std::string name;
        std::string unit;
        bool higher;
        std::vector<std::pair<std::string, std::string>> config;
        std::function<Result<Sample>(const std::string& socket)> measure;
        std::uint64_t ops;  // requests (or events) one measure() makes: for CPU per op
    };
    std::vector<Case> cases;
    for (const Op op : {Op::read, Op::write}) {
        for (const unsigned nconns : {1u, 64u}) {
            for (const unsigned depth : {1u, 64u}) {
                const std::uint64_t total =
                    depth == 1 && nconns == 1 ? ctx.scale(20'000, 200) : ctx.scale(100'000, 640);
                const char* opname = op == Op::read ? "read" : "write";
                cases.push_back({std::string(opname) + "_" + std::to_string(nconns) + "conn_d" +
                                     std::to_string(depth),
                                 "op/s",
                                 true,
                                 {{"op", op == Op::read ? "XS_READ" : "XS_WRITE"},
                                  {"connections", std::to_string(nconns)},
                                  {"depth_per_connection", std::to_string(depth)},
                                  {"ops_per_run", std::to_string(total)},
                                  {"value_bytes", std::to_string(kValue.size())}},
                                 [=](const std::string& s) {
                                     return pipelined(s, op, nconns, depth, total);
                                 },
                                 (total + nconns - 1) / nconns * nconns});
            }
        }
    }
    const std::uint64_t watch_n = ctx.scale(5'000, 50);
    cases.push_back({"watch_fire_latency", "ns", false,
                     {{"events_per_run", std::to_string(watch_n)}},
                     [=](const std::string& s) { return watch_latency(s, watch_n); },
                     watch_n});

    int failures = 0;
    const unsigned runs = ctx.options().runs == 0 ? 1 : ctx.options().runs;
    for (auto& c : cases) {
        if (!ctx.options().selects(c.name)) {
            continue;
        }
        // Ours and every peer alternately, run by run, on the same workload.
        Series mine;
        std::vector<Series> mine_variants(variants.size());
        Series echo;
        // Each server's CPU time per request (ns) in each run: load-independent where the
        // throughput is not (a loaded machine delays whoever is waited for).
        std::vector<std::pair<std::string, std::vector<double>>> cpu_per_op;
        auto measure_on = [&](const Server& srv, const std::string& key) -> Result<Sample> {
            const double before = srv.cpu_ns();
            auto r = c.measure(srv.socket);
            const double used = srv.cpu_ns() - before;
            if (r && c.ops > 0) {
                auto it = std::find_if(cpu_per_op.begin(), cpu_per_op.end(),
                                       [&](const auto& e) { return e.first == key; });
                if (it == cpu_per_op.end()) {
                    it = cpu_per_op.insert(cpu_per_op.end(), {key, {}});
                }
                it->second.push_back(used / static_cast<double>(c.ops));
            }
            return r;
        };
        std::vector<Series> theirs(peers.size());
        bool ok = true;
        for (unsigned r = 0; r < runs && ok; ++r) {
            if (floor) {
                if (auto e = measure_on(**floor, "echo_floor")) {
                    echo.samples.push_back(*e);
                }
            }
            auto s = measure_on(**ours, "ours");
            if (!s) {
                std::fprintf(stderr, "hvbench xs/%s: ours failed: %s\n", c.name.c_str(),
                             s.error().message().c_str());
                ok = false;
                break;
            }
            mine.samples.push_back(*s);
            for (std::size_t v = 0; v < variants.size() && ok; ++v) {
                auto vs = measure_on(*variants[v].server, variants[v].key);
                if (!vs) {
                    std::fprintf(stderr, "hvbench xs/%s: ours (%s) failed: %s\n", c.name.c_str(),
                                 variants[v].what, vs.error().message().c_str());
                    ok = false;
                    break;
                }
                mine_variants[v].samples.push_back(*vs);
            }
            if (!ok) {
                break;
            }
            for (std::size_t p = 0; p < peers.size(); ++p) {
                auto ps = measure_on(*peers[p], peers[p]->name);
                if (!ps) {
                    std::fprintf(stderr, "hvbench xs/%s: %s failed: %s\n", c.name.c_str(),
                                 peers[p]->name.c_str(), ps.error().message().c_str());
                    ok = false;
                    break;
                }
                theirs[p].samples.push_back(*ps);
            }
        }
        if (!ok) {
            ++failures;
            continue;
        }
        std::size_t best = 0;
        for (std::size_t p = 1; p < peers.size(); ++p) {
            const double v = theirs[p].median().value;
            const double b = theirs[best].median().value;
            if (c.higher ? v > b : v < b) {
                best = p;
            }
        }
        CaseSpec spec{c.name, c.unit, peers[best]->name, c.higher, c.config};
        spec.config.emplace_back("peer_rule", "the better of the peers that ran");
        for (std::size_t p = 0; p < peers.size(); ++p) {
            char v[64];
            std::snprintf(v, sizeof v, "%.6g", theirs[p].median().value);
            spec.config.emplace_back(peers[p]->name, v);
        }
        // A figure beside the same peer: NAME (median) and NAME_vs_peer (ratio, >1 = better).
        const double peer_value = theirs[best].median().value;
        auto beside_peer = [&](const char* name, double v) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%.6g", v);
            spec.config.emplace_back(name, buf);
            std::snprintf(buf, sizeof buf, "%.3g", c.higher ? v / peer_value : peer_value / v);
            spec.config.emplace_back(std::string(name) + "_vs_peer", buf);
            return c.higher ? v / peer_value : peer_value / v;
        };
        for (std::size_t v = 0; v < variants.size(); ++v) {
            const double value = mine_variants[v].median().value;
            const double ratio = beside_peer(variants[v].key, value);
            std::fprintf(stderr, "hvbench xs/%s: ours %s %.4g %s (%.3gx %s)\n", c.name.c_str(),
                         variants[v].what, value, c.unit.c_str(), ratio,
                         peers[best]->name.c_str());
            if (!c.higher) {
                spec.config.emplace_back(std::string(variants[v].key) + "_p99",
                                         std::to_string(mine_variants[v].median().p99));
            }
        }
        spec.config.emplace_back("client_spin_us", std::to_string(client_spin().count()));
        for (auto& [key, v] : cpu_per_op) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.0f", percentile(v, 50));
            spec.config.emplace_back("server_cpu_ns_per_op_" + key, buf);
        }
        if (!echo.samples.empty()) {
            beside_peer("echo_floor", echo.median().value);
        }
        // The measurements are done; the harness takes medians of the recorded runs.
        std::size_t oi = 0;
        std::size_t pi = 0;
        auto rc = ctx.run_case(
            spec, [&]() -> Result<Sample> { return mine.samples.at(oi++); },
            [&]() -> Result<Sample> { return theirs[best].samples.at(pi++); });
        failures += rc ? 0 : 1;
    }
    return failures == 0 ? 0 : 1;
}

}  // namespace hv::bench
