// libhv: the domain's console (console.hpp). The pump thread is the only user of the ring's
// guest end; the program's threads only write to fds 1/2 and read fd 0.
#include "hvmin/console.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <optional>
#include <thread>

#include "console_ring.hpp"
#include "evtchn_signal.hpp"
#include "hv/log.hpp"
#include "hvmin/client.hpp"

namespace hv::hvmin {

Result<GuestConsole> console_attach(Services& svc) {
    auto r = svc.channel().call(wire::Op::console_attach, 0, {});
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->hdr.count != 1 || r->body.size() != sizeof(wire::ConsoleInfo) || r->fds.size() != 3) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::ConsoleInfo info;
    std::memcpy(&info, r->body.data(), sizeof info);
    auto m = Mapping::map_shared(r->fds[0].get(), rings::XEN_PAGE_SIZE);
    if (!m) {
        return fail(m.error());
    }
    GuestConsole c;
    c.page = std::move(*m);
    c.frame = info.frame;
    c.port = EvtchnPort(info.port);
    c.wait = std::move(r->fds[1]);
    c.notify = std::move(r->fds[2]);
    return c;
}

namespace {

/// The process-wide pump. Never destroyed: the detached thread may run until the process ends.
struct Pump {
    // The domain's hypercall session stays open while the pump lives: a program that drops its
    // Services before exit would otherwise die (primary connection closed) before its last
    // output is in the ring.
    std::optional<Services> session;
    GuestConsole con;
    std::optional<console::FrontEnd> ring;
    UniqueFd out_r;  // what the program writes to fds 1 and 2
    UniqueFd in_w;   // what the program reads from fd 0
    UniqueFd stop;   // eventfd: exit has begun
    UniqueFd done;   // eventfd: the pump pushed everything it will
    std::atomic<bool> stopping{false};

    void kick() { (void)evtchn_signal::send(con.notify.get()); }

    void run() {
        std::string in_buf;
        bool out_eof = false;
        char buf[console::kOutSize];
        for (;;) {
            // ORDER: acquire pairs with the backend's release store of `connection`.
            const bool disconnected =
                std::atomic_ref(con.intf()->connection).load(std::memory_order_acquire) ==
                rings::XENCONSOLE_DISCONNECTED;
            const long room = disconnected ? static_cast<long>(sizeof buf) : ring->out_room();
            if (out_eof && stopping.load()) {
                break;
            }
            pollfd p[4] = {{out_r.get(), static_cast<short>(!out_eof && room > 0 ? POLLIN : 0), 0},
                           {con.wait.get(), POLLIN, 0},
                           {in_w.get(), static_cast<short>(in_buf.empty() ? 0 : POLLOUT), 0},
                           {stop.get(), POLLIN, 0}};
            if (::poll(p, 4, -1) < 0 && errno != EINTR) {
                break;
            }
            if (p[1].revents & POLLIN) {
                (void)evtchn_signal::drain(con.wait.get());
            }
            if (p[3].revents & POLLIN) {
                std::uint64_t v;
                (void)!::read(stop.get(), &v, sizeof v);
            }
            if (!out_eof && room > 0) {
                const ssize_t n = ::read(out_r.get(), buf, static_cast<std::size_t>(room));
                if (n == 0) {
                    out_eof = true;
                } else if (n > 0 && !disconnected) {
                    ring->put_output({buf, static_cast<std::size_t>(n)});  // fits: n <= room
                    kick();
                }  // disconnected: the backend is gone; output is dropped, writers never block
            }
            if (in_buf.size() < console::kInSize && !disconnected) {
                char ib[console::kInSize];
                const long n = ring->take_input({ib, console::kInSize - in_buf.size()});
                if (n > 0) {
                    in_buf.append(ib, static_cast<std::size_t>(n));
                    kick();
                }
            }
            if (!in_buf.empty()) {
                const ssize_t n = ::write(in_w.get(), in_buf.data(), in_buf.size());
                if (n > 0) {
                    in_buf.erase(0, static_cast<std::size_t>(n));
                } else if (n < 0 && errno == EPIPE) {
                    in_buf.clear();  // nobody reads fd 0 any more
                }
            }
        }
        const std::uint64_t one = 1;
        (void)!::write(done.get(), &one, sizeof one);
    }
};

Pump* g_pump = nullptr;

void flush_console_at_exit() {
    Pump* p = g_pump;
    if (p == nullptr) {
        return;
    }
    std::fflush(nullptr);
    // Our ends of the output pipe go; the pump sees EOF once no child holds them either.
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, 1);
        ::dup2(null, 2);
        ::close(null);
    }
    p->stopping.store(true);
    const std::uint64_t one = 1;
    (void)!::write(p->stop.get(), &one, sizeof one);
    pollfd d{p->done.get(), POLLIN, 0};
    (void)::poll(&d, 1, 2000);  // bounded: a child may still hold the pipe, hv-min may be stuck
}

}  // namespace

Result<void> redirect_stdio_to_console(Services& svc) {
    if (g_pump != nullptr) {
        return {};
    }
    auto con = console_attach(svc);
    if (!con) {
        return fail(con.error());
    }
    int out[2];
    int in[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
        return fail_errno();
    }
    UniqueFd out_r(out[0]);
    UniqueFd out_w(out[1]);
    if (::pipe2(in, O_CLOEXEC) != 0) {
        return fail_errno();
    }
    UniqueFd in_r(in[0]);
    UniqueFd in_w(in[1]);
    UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    UniqueFd done(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop || !done || ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK) != 0 ||
        ::fcntl(in_w.get(), F_SETFL, O_NONBLOCK) != 0) {
        return fail_errno();
    }
    std::fflush(nullptr);
    // dup2 clears FD_CLOEXEC on the copies: the program's children share its console.
    if (::dup2(out_w.get(), 1) < 0 || ::dup2(out_w.get(), 2) < 0 || ::dup2(in_r.get(), 0) < 0) {
        return fail_errno();
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a console is line-buffered, like a tty
    auto* p = new Pump;  // never freed: see Pump
    p->session.emplace(svc);
    p->con = std::move(*con);
    p->ring.emplace(p->con.intf());
    p->out_r = std::move(out_r);
    p->in_w = std::move(in_w);
    p->stop = std::move(stop);
    p->done = std::move(done);
    g_pump = p;
    std::thread([p] { p->run(); }).detach();
    std::atexit(flush_console_at_exit);
    return {};
}

}  // namespace hv::hvmin
