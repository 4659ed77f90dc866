// hvbench suite `ring`: requests/s and round-trip latency through Xen-ABI rings (blkif, netif
// tx) between two threads on different CPUs (`*_2threads`, `*_rtt`) and between two processes
// sharing the ring through a memfd (`*_2proc`), with real eventfd notifications and the ring's
// notification hold-off, beside the same messages through a SOCK_SEQPACKET socketpair and a
// pipe pair (between the same two threads or processes) measured in the same run. Each
// two-process case runs sleeping (wait = sleep), adaptive (`*_adaptive`: spin within a window
// after work, hvmin/ring_wait.hpp; the peer spins with MSG_DONTWAIT for the same window) and
// polling (`*_poll`: always poll a fixed budget before sleeping).
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "hv/mapping.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/ring.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/ring_wait.hpp"
#include "procs.hpp"
#include "suites.hpp"

namespace hv::bench {

namespace {

using Clock = std::chrono::steady_clock;
using rings::BackRing;
using rings::FrontRing;

constexpr int wait_timeout_ms = 10000;  // a wait this long means a lost wake-up: fail the run
constexpr unsigned peer_window = 32;    // outstanding messages in the socket/pipe peers

std::error_code timed_out() {
    return std::make_error_code(std::errc::timed_out);
}
std::error_code bad_data() {
    return std::make_error_code(std::errc::bad_message);
}

hv::Result<void> kick(int fd) {
    const std::uint64_t one = 1;
    if (::write(fd, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
        return hv::fail_errno();
    }
    return {};
}

/// How a side waits when it has nothing to do.
///  - sleep: final check, then sleep on the eventfd / socket (poll_us 0, adaptive false);
///  - poll: after the final check, poll the shared indices (ring) or the socket (peer, a
///    non-sleeping poll()) for a fixed `poll_us` before every sleep. Polling briefly catches
///    the peer's next batch without a wake-up, which on a 1-page ring (32 blkif slots) costs
///    more than the whole batch of work;
///  - adaptive: within `poll_us` of the last work, spin before the final check (ring: on the
///    indices through hvmin::wait_for_requests/_responses; peer: recv(MSG_DONTWAIT)), and
///    sleep at once after a quiet window (hv::SpinPolicy).
struct WaitMode {
    unsigned poll_us = 0;
    bool adaptive = false;
    /// The adaptive mode's policy (disabled for the other modes).
    hv::SpinPolicy policy() const {
        return hv::SpinPolicy(std::chrono::microseconds(adaptive ? poll_us : 0));
    }
    /// The poll mode's fixed budget (0 for the other modes).
    unsigned fixed_poll_us() const { return adaptive ? 0 : poll_us; }
};

/// Polls `ready()` (shared-memory reads only, no syscall) for up to `poll_us`.
template <class Ready>
bool poll_briefly(Ready&& ready, unsigned poll_us) {
    return poll_us != 0 && hv::spin_until(ready, std::chrono::microseconds(poll_us));
}

hv::Result<void> wait_kick(int fd) {
    pollfd p{fd, POLLIN, 0};
    int rc;
    do {
        rc = ::poll(&p, 1, wait_timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        return hv::fail_errno();
    }
    if (rc == 0) {
        return hv::fail(timed_out());
    }
    std::uint64_t v;
    if (::read(fd, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) {
        return hv::fail_errno();
    }
    return {};
}

hv::Result<void> write_all(int fd, const void* p, std::size_t n) {
    ssize_t w;
    do {
        w = ::write(fd, p, n);
    } while (w < 0 && errno == EINTR);
    if (w != static_cast<ssize_t>(n)) {
        return hv::fail(w < 0 ? hv::errno_code() : bad_data());
    }
    return {};
}

/// The adaptive peer's spin: recv(MSG_DONTWAIT) until a message comes or `budget` passes.
/// The bytes received (0: none; the caller sleeps), or -1 with errno.
ssize_t recv_spinning(int fd, void* p, std::size_t n, std::chrono::microseconds budget) {
    ssize_t r = -1;
    const bool got = hv::spin_until(
        [&] {
            r = ::recv(fd, p, n, MSG_DONTWAIT);
            return r >= 0 || (errno != EAGAIN && errno != EINTR);
        },
        budget);
    return got ? r : 0;
}

/// `spin` (adaptive peers, sockets only): spin with MSG_DONTWAIT within its window first.
hv::Result<void> read_exact(int fd, void* p, std::size_t n, unsigned poll_us,
                            hv::SpinPolicy* spin = nullptr) {
    auto* b = static_cast<char*>(p);
    std::size_t got = 0;
    if (spin != nullptr && spin->budget().count() > 0) {
        const ssize_t r = recv_spinning(fd, b, n, spin->budget());
        if (r < 0) {
            return hv::fail_errno();
        }
        got = static_cast<std::size_t>(r);
    }
    while (got < n) {  // pipes may split; seqpacket returns whole messages
        pollfd pfd{fd, POLLIN, 0};
        const int pr = hv::spin_poll(&pfd, 1, wait_timeout_ms, std::chrono::microseconds(poll_us));
        if (pr == 0) {
            return hv::fail(timed_out());
        }
        const ssize_t r = ::read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return hv::fail(r < 0 ? hv::errno_code() : bad_data());
        }
        got += static_cast<std::size_t>(r);
    }
    if (spin != nullptr) {
        spin->worked();
    }
    return {};
}

/// The adaptive ring wait's outcome as a Result: work or a consumed event = go on.
hv::Result<void> adaptive_outcome(hv::WaitOutcome w, int fd) {
    switch (w) {
        case hv::WaitOutcome::work:
            return {};
        case hv::WaitOutcome::fd: {
            std::uint64_t v;
            if (::read(fd, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) {
                return hv::fail_errno();
            }
            return {};
        }
        case hv::WaitOutcome::timed_out:
            return hv::fail(timed_out());
        case hv::WaitOutcome::error:
            break;
    }
    return hv::fail_errno();
}

/// The messages of a protocol: how to make request i and answer it, and check the answer.
struct BlkifMessages {
    using P = rings::BlkifProtocol;
    static void make(rings::blkif_request& r, std::uint64_t i) {
        r = rings::blkif_request{};
        r.operation = rings::BLKIF_OP_READ;
        r.nr_segments = 1;
        r.id = i;
        r.sector_number = i * 8;
        r.seg[0].gref = static_cast<std::uint32_t>(i);
        r.seg[0].last_sect = 7;
    }
    static void answer(rings::blkif_response& rsp, const rings::blkif_request& r) {
        rsp = rings::blkif_response{};
        rsp.id = r.id;
        rsp.operation = r.operation;
        rsp.status = rings::BLKIF_RSP_OKAY;
    }
    static bool check(const rings::blkif_request& r, std::uint64_t i) {
        return r.id == i && r.sector_number == i * 8;
    }
    static bool matches(const rings::blkif_response& rsp, std::uint64_t i) { return rsp.id == i; }
};

struct NetifTxMessages {
    using P = rings::NetifTxProtocol;
    static void make(rings::netif_tx_request& r, std::uint64_t i) {
        r = rings::netif_tx_request{};
        r.gref = static_cast<std::uint32_t>(i);
        r.id = static_cast<std::uint16_t>(i);
        r.size = 1514;
    }
    static void answer(rings::netif_tx_response& rsp, const rings::netif_tx_request& r) {
        rsp.id = r.id;
        rsp.status = rings::NETIF_RSP_OKAY;
    }
    static bool check(const rings::netif_tx_request& r, std::uint64_t i) {
        return r.id == static_cast<std::uint16_t>(i) && r.gref == static_cast<std::uint32_t>(i);
    }
    static bool matches(const rings::netif_tx_response& rsp, std::uint64_t i) {
        return rsp.id == static_cast<std::uint16_t>(i);
    }
};

/// Shared ring memory plus one eventfd per direction.
struct RingSetup {
    hv::Mapping mem;
    hv::UniqueFd to_back;
    hv::UniqueFd to_front;

    /// `shared`: the ring lives in a memfd mapped MAP_SHARED, so a forked child shares it
    /// (the two-process cases); otherwise private anonymous memory (the two-thread cases).
    static hv::Result<RingSetup> create(unsigned pages, bool shared = false) {
        RingSetup s;
        const std::size_t len = std::size_t{pages} * rings::XEN_PAGE_SIZE;
        hv::Result<hv::Mapping> m = hv::fail(std::make_error_code(std::errc::invalid_argument));
        if (shared) {
            hv::UniqueFd memfd(::memfd_create("hvbench-ring", MFD_CLOEXEC));
            if (!memfd.valid() || ::ftruncate(memfd.get(), static_cast<off_t>(len)) != 0) {
                return hv::fail_errno();
            }
            m = hv::Mapping::map_shared(memfd.get(), len);
        } else {
            m = hv::Mapping::anonymous(len);
        }
        if (!m) {
            return hv::fail(m.error());
        }
        s.mem = std::move(*m);
        s.to_back.reset(::eventfd(0, EFD_CLOEXEC));
        s.to_front.reset(::eventfd(0, EFD_CLOEXEC));
        if (!s.to_back.valid() || !s.to_front.valid()) {
            return hv::fail_errno();
        }
        return s;
    }
};

/// The back end: answer `n` requests in order; sleep on the eventfd when the ring is empty.
template <class M>
hv::Result<void> ring_back(BackRing<typename M::P>& back, int to_back, int to_front,
                           std::uint64_t n, WaitMode mode) {
    hv::SpinPolicy spin = mode.policy();
    const unsigned poll_us = mode.fixed_poll_us();
    std::uint64_t expect = 0;
    while (expect < n) {
        auto ready = back.unconsumed();
        if (!ready) {
            return hv::fail(ready.error());
        }
        while (auto req = back.take_request()) {
            if (!M::check(*req, expect)) {
                return hv::fail(bad_data());
            }
            ++expect;
            typename M::P::response rsp;
            M::answer(rsp, *req);
            back.put_response(rsp);
        }
        if (back.push_responses()) {
            HV_TRY(kick(to_front));
        }
        if (mode.adaptive) {
            if (expect < n) {
                pollfd p{to_back, POLLIN, 0};
                HV_TRY(adaptive_outcome(
                    hvmin::wait_for_requests(back, std::span<pollfd>(&p, 1), wait_timeout_ms, spin),
                    to_back));
            }
            continue;
        }
        auto more = back.final_check_for_requests();
        if (!more) {
            return hv::fail(more.error());
        }
        if (!*more && expect < n &&
            !poll_briefly([&] { return back.unconsumed().value_or(0) > 0; }, poll_us)) {
            HV_TRY(wait_kick(to_back));
        }
    }
    return {};
}

/// The front end of the throughput cases: keeps the ring full, sleeps only when it must.
template <class M>
hv::Result<void> ring_front(FrontRing<typename M::P>& front, int to_back, int to_front,
                            std::uint64_t n, WaitMode mode) {
    hv::SpinPolicy spin = mode.policy();
    const unsigned poll_us = mode.fixed_poll_us();
    std::uint64_t sent = 0;
    std::uint64_t answered = 0;
    while (answered < n) {
        while (!front.full() && sent < n) {
            M::make(front.next_request(), sent++);
            front.commit_request();
        }
        if (front.push_requests()) {
            HV_TRY(kick(to_back));
        }
        auto ready = front.unconsumed_responses();
        if (!ready) {
            return hv::fail(ready.error());
        }
        while (auto rsp = front.take_response()) {
            if (!M::matches(*rsp, answered)) {
                return hv::fail(bad_data());
            }
            ++answered;
        }
        if (answered < n && (front.full() || sent == n) && mode.adaptive) {
            pollfd p{to_front, POLLIN, 0};
            HV_TRY(adaptive_outcome(
                hvmin::wait_for_responses(front, std::span<pollfd>(&p, 1), wait_timeout_ms, spin),
                to_front));
        } else if (answered < n && (front.full() || sent == n)) {
            auto more = front.final_check_for_responses();
            if (!more) {
                return hv::fail(more.error());
            }
            if (!*more &&
                !poll_briefly([&] { return front.unconsumed_responses().value_or(0) > 0; },
                              poll_us)) {
                HV_TRY(wait_kick(to_front));
            }
        }
    }
    return {};
}

/// The front end of the round-trip cases: one request at a time, asleep until its answer.
template <class M>
hv::Result<void> ring_front_rtt(FrontRing<typename M::P>& front, int to_back, int to_front,
                                std::uint64_t n, std::vector<double>& ns, WaitMode mode) {
    hv::SpinPolicy spin = mode.policy();
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        M::make(front.next_request(), i);
        front.commit_request();
        if (front.push_requests()) {
            HV_TRY(kick(to_back));
        }
        while (mode.adaptive) {
            pollfd p{to_front, POLLIN, 0};
            const auto w =
                hvmin::wait_for_responses(front, std::span<pollfd>(&p, 1), wait_timeout_ms, spin);
            HV_TRY(adaptive_outcome(w, to_front));
            if (w == hv::WaitOutcome::work) {
                break;
            }
        }
        while (!mode.adaptive) {
            auto more = front.final_check_for_responses();
            if (!more) {
                return hv::fail(more.error());
            }
            if (*more) {
                break;
            }
            HV_TRY(wait_kick(to_front));
        }
        if (!front.unconsumed_responses()) {
            return hv::fail(bad_data());
        }
        auto rsp = front.take_response();
        if (!rsp || !M::matches(*rsp, i)) {
            return hv::fail(bad_data());
        }
        ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    }
    return {};
}

/// Where the two sides run: two threads of this process, or this process and a forked child
/// (the back end), the ring in a memfd both map.
enum class Sides { threads, processes };

template <class M>
hv::Result<Sample> ring_case(Sides sides, unsigned pages, std::uint64_t n, bool rtt,
                             WaitMode mode = {}) {
    auto setup = RingSetup::create(pages, sides == Sides::processes);
    if (!setup) {
        return hv::fail(setup.error());
    }
    auto front = FrontRing<typename M::P>::init(setup->mem.bytes());
    if (!front) {
        return hv::fail(front.error());
    }
    auto back_side = [&]() -> hv::Result<void> {
        auto back = BackRing<typename M::P>::attach(setup->mem.bytes());
        if (!back) {
            return hv::fail(back.error());
        }
        return ring_back<M>(*back, setup->to_back.get(), setup->to_front.get(), n, mode);
    };
    std::optional<Child> child;
    hv::Result<void> back_rc;
    std::thread back_thread;
    if (sides == Sides::processes) {
        auto c = Child::fork(back_side);
        if (!c) {
            return hv::fail(c.error());
        }
        child.emplace(std::move(*c));
    } else {
        back_thread = std::thread([&] {
            pin_to_cpu(1);
            back_rc = back_side();
        });
    }
    std::vector<double> ns;
    ns.reserve(rtt ? n : 0);
    hv::Result<void> front_rc;
    double secs = 0;
    std::thread front_thread([&] {
        pin_to_cpu(0);
        const auto t0 = Clock::now();
        front_rc =
            rtt ? ring_front_rtt<M>(*front, setup->to_back.get(), setup->to_front.get(), n, ns,
                                    mode)
                : ring_front<M>(*front, setup->to_back.get(), setup->to_front.get(), n, mode);
        secs = std::chrono::duration<double>(Clock::now() - t0).count();
    });
    front_thread.join();
    if (child) {
        if (!front_rc) {
            return hv::fail(front_rc.error());  // ~Child kills the back end
        }
        back_rc = child->wait();
    } else {
        back_thread.join();
    }
    HV_TRY(front_rc);
    HV_TRY(back_rc);
    return rtt ? latency_sample(ns) : Sample{static_cast<double>(n) / secs};
}

/// A bidirectional byte channel for the peers: a SOCK_SEQPACKET socketpair, or two pipes.
struct Channel {
    hv::UniqueFd front_tx, back_rx, back_tx, front_rx;

    static hv::Result<Channel> socketpair_seqpacket() {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
            return hv::fail_errno();
        }
        Channel c;
        c.front_tx.reset(sv[0]);
        c.back_rx.reset(::dup(sv[1]));
        c.back_tx.reset(sv[1]);
        c.front_rx.reset(::dup(sv[0]));
        if (!c.back_rx.valid() || !c.front_rx.valid()) {
            return hv::fail_errno();
        }
        return c;
    }
    static hv::Result<Channel> pipes() {
        int a[2];
        int b[2];
        if (::pipe2(a, O_CLOEXEC) != 0) {
            return hv::fail_errno();
        }
        if (::pipe2(b, O_CLOEXEC) != 0) {
            ::close(a[0]);
            ::close(a[1]);
            return hv::fail_errno();
        }
        Channel c;
        c.back_rx.reset(a[0]);
        c.front_tx.reset(a[1]);
        c.front_rx.reset(b[0]);
        c.back_tx.reset(b[1]);
        return c;
    }
};

template <class M>
hv::Result<void> channel_back(Channel& c, std::uint64_t n, WaitMode mode) {
    hv::SpinPolicy spin = mode.policy();
    const unsigned poll_us = mode.fixed_poll_us();
    for (std::uint64_t i = 0; i < n; ++i) {
        typename M::P::request req;
        HV_TRY(read_exact(c.back_rx.get(), &req, sizeof req, poll_us, &spin));
        if (!M::check(req, i)) {
            return hv::fail(bad_data());
        }
        typename M::P::response rsp;
        M::answer(rsp, req);
        HV_TRY(write_all(c.back_tx.get(), &rsp, sizeof rsp));
    }
    return {};
}

/// Peer throughput front: the same messages, `window` outstanding, one syscall per message.
template <class M>
hv::Result<void> channel_front(Channel& ch, std::uint64_t n, unsigned window, WaitMode mode) {
    hv::SpinPolicy spin = mode.policy();
    const unsigned poll_us = mode.fixed_poll_us();
    std::uint64_t sent = 0;
    std::uint64_t answered = 0;
    while (answered < n) {
        while (sent < n && sent - answered < window) {
            typename M::P::request req;
            M::make(req, sent++);
            HV_TRY(write_all(ch.front_tx.get(), &req, sizeof req));
        }
        typename M::P::response rsp;
        HV_TRY(read_exact(ch.front_rx.get(), &rsp, sizeof rsp, poll_us, &spin));
        if (!M::matches(rsp, answered)) {
            return hv::fail(bad_data());
        }
        ++answered;
    }
    return {};
}

template <class M>
hv::Result<void> channel_front_rtt(Channel& ch, std::uint64_t n, std::vector<double>& ns,
                                   WaitMode mode) {
    hv::SpinPolicy spin = mode.policy();
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        typename M::P::request req;
        M::make(req, i);
        HV_TRY(write_all(ch.front_tx.get(), &req, sizeof req));
        typename M::P::response rsp;
        HV_TRY(read_exact(ch.front_rx.get(), &rsp, sizeof rsp, 0, &spin));
        if (!M::matches(rsp, i)) {
            return hv::fail(bad_data());
        }
        ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    }
    return {};
}

/// A peer case: throughput with `window` outstanding (rtt == false) or ping-pong latency.
template <class M>
hv::Result<Sample> channel_case(Sides sides, hv::Result<Channel> (*make)(), std::uint64_t n,
                                bool rtt, WaitMode mode = {}) {
    auto ch = make();
    if (!ch) {
        return hv::fail(ch.error());
    }
    std::optional<Child> child;
    hv::Result<void> back_rc;
    std::thread back_thread;
    if (sides == Sides::processes) {
        auto c = Child::fork([&] { return channel_back<M>(*ch, n, mode); });
        if (!c) {
            return hv::fail(c.error());
        }
        child.emplace(std::move(*c));
        // The parent keeps only its own ends, so a dead child is an EOF, not a hang.
        ch->back_rx.reset();
        ch->back_tx.reset();
    } else {
        back_thread = std::thread([&] {
            pin_to_cpu(1);
            back_rc = channel_back<M>(*ch, n, mode);
        });
    }
    std::vector<double> ns;
    ns.reserve(rtt ? n : 0);
    hv::Result<void> front_rc;
    double secs = 0;
    std::thread front_thread([&] {
        pin_to_cpu(0);
        const auto t0 = Clock::now();
        front_rc = rtt ? channel_front_rtt<M>(*ch, n, ns, mode)
                       : channel_front<M>(*ch, n, peer_window, mode);
        secs = std::chrono::duration<double>(Clock::now() - t0).count();
    });
    front_thread.join();
    if (!front_rc) {
        ch->front_tx.reset();  // unblock the back end
    }
    if (child) {
        if (!front_rc) {
            return hv::fail(front_rc.error());
        }
        back_rc = child->wait();
    } else {
        back_thread.join();
    }
    HV_TRY(front_rc);
    HV_TRY(back_rc);
    return rtt ? latency_sample(ns) : Sample{static_cast<double>(n) / secs};
}

template <class M>
std::vector<std::pair<std::string, std::string>> config(unsigned pages, Sides sides,
                                                        WaitMode mode = {}) {
    return {
        {"ring_pages", std::to_string(pages)},
        {"wait", mode.adaptive       ? "adaptive"
                 : mode.poll_us != 0 ? "poll"
                                     : "sleep"},
        {mode.adaptive ? "spin_window_us" : "poll_before_sleep_us", std::to_string(mode.poll_us)},
        {"ring_slots", std::to_string(rings::ring_entries_for_pages<typename M::P>(pages))},
        {"request_bytes", std::to_string(sizeof(typename M::P::request))},
        {"response_bytes", std::to_string(sizeof(typename M::P::response))},
        {"peer_window", std::to_string(peer_window)},
        {"sides", sides == Sides::threads ? "threads" : "processes"}};
}

}  // namespace

int run_ring_suite(Context& ctx) {
    const std::uint64_t ring_n = ctx.scale(500'000, 2'000);
    const std::uint64_t peer_n = ctx.scale(50'000, 500);
    const std::uint64_t rtt_n = ctx.scale(5'000, 100);
    int failures = 0;
    auto check = [&](hv::Result<void> r) {
        if (!r) {
            ++failures;
        }
    };
    using B = BlkifMessages;
    using N = NetifTxMessages;
    constexpr auto T = Sides::threads;
    constexpr auto P = Sides::processes;
    const auto sock = &Channel::socketpair_seqpacket;
    const auto pipe = &Channel::pipes;

    // Two threads of one process (the original cases; names kept).
    check(ctx.run_case(
        {"blkif_2threads", "req/s", "socketpair_seqpacket", true, config<B>(1, T)},
        [&] { return ring_case<B>(T, 1, ring_n, false); },
        [&] { return channel_case<B>(T, sock, peer_n, false); }));
    check(ctx.run_case(
        {"blkif_2threads_4pages", "req/s", "socketpair_seqpacket", true, config<B>(4, T)},
        [&] { return ring_case<B>(T, 4, ring_n, false); },
        [&] { return channel_case<B>(T, sock, peer_n, false); }));
    check(ctx.run_case(
        {"netif_tx_2threads", "req/s", "socketpair_seqpacket", true, config<N>(1, T)},
        [&] { return ring_case<N>(T, 1, ring_n, false); },
        [&] { return channel_case<N>(T, sock, peer_n, false); }));
    check(ctx.run_case(
        {"netif_tx_2threads_vs_pipe", "req/s", "pipe_pair", true, config<N>(1, T)},
        [&] { return ring_case<N>(T, 1, ring_n, false); },
        [&] { return channel_case<N>(T, pipe, peer_n, false); }));
    check(ctx.run_case(
        {"blkif_rtt", "ns", "socketpair_seqpacket", false, config<B>(1, T)},
        [&] { return ring_case<B>(T, 1, rtt_n, true); },
        [&] { return channel_case<B>(T, sock, rtt_n, true); }));
    check(ctx.run_case(
        {"blkif_rtt_vs_pipe", "ns", "pipe_pair", false, config<B>(1, T)},
        [&] { return ring_case<B>(T, 1, rtt_n, true); },
        [&] { return channel_case<B>(T, pipe, rtt_n, true); }));

    // Two processes: this one (front) and a forked child (back), the ring in a shared memfd;
    // the peer is the same two processes over a SOCK_SEQPACKET socketpair / pipe pair.
    check(ctx.run_case(
        {"blkif_2proc", "req/s", "socketpair_seqpacket", true, config<B>(1, P)},
        [&] { return ring_case<B>(P, 1, ring_n, false); },
        [&] { return channel_case<B>(P, sock, peer_n, false); }));
    check(ctx.run_case(
        {"blkif_2proc_4pages", "req/s", "socketpair_seqpacket", true, config<B>(4, P)},
        [&] { return ring_case<B>(P, 4, ring_n, false); },
        [&] { return channel_case<B>(P, sock, peer_n, false); }));
    check(ctx.run_case(
        {"netif_tx_2proc", "req/s", "socketpair_seqpacket", true, config<N>(1, P)},
        [&] { return ring_case<N>(P, 1, ring_n, false); },
        [&] { return channel_case<N>(P, sock, peer_n, false); }));
    check(ctx.run_case(
        {"netif_tx_2proc_vs_pipe", "req/s", "pipe_pair", true, config<N>(1, P)},
        [&] { return ring_case<N>(P, 1, ring_n, false); },
        [&] { return channel_case<N>(P, pipe, peer_n, false); }));
    check(ctx.run_case(
        {"blkif_rtt_2proc", "ns", "socketpair_seqpacket", false, config<B>(1, P)},
        [&] { return ring_case<B>(P, 1, rtt_n, true); },
        [&] { return channel_case<B>(P, sock, rtt_n, true); }));

    // The cases above sleep whenever they wait: a 1-page blkif ring (32 slots) then alternates
    // the two sides, each waking the other once per 32 requests, and wake-ups are its whole
    // cost. Here both sides first poll for a short while before they sleep — the ring its
    // shared indices, the peer its socket (non-sleeping poll()) — with the same budget.
    constexpr WaitMode poll{10, false};
    check(ctx.run_case(
        {"blkif_2proc_poll", "req/s", "socketpair_seqpacket_poll", true, config<B>(1, P, poll)},
        [&] { return ring_case<B>(P, 1, ring_n, false, poll); },
        [&] { return channel_case<B>(P, sock, peer_n, false, poll); }));

    // Adaptive: spin only within a window after work (hvmin/ring_wait.hpp on the ring; the
    // peer spins with recv(MSG_DONTWAIT) for the same window before its blocking wait).
    constexpr WaitMode adaptive{50, true};
    check(ctx.run_case(
        {"blkif_2proc_adaptive", "req/s", "socketpair_seqpacket_adaptive", true,
         config<B>(1, P, adaptive)},
        [&] { return ring_case<B>(P, 1, ring_n, false, adaptive); },
        [&] { return channel_case<B>(P, sock, peer_n, false, adaptive); }));
    check(ctx.run_case(
        {"blkif_2proc_4pages_adaptive", "req/s", "socketpair_seqpacket_adaptive", true,
         config<B>(4, P, adaptive)},
        [&] { return ring_case<B>(P, 4, ring_n, false, adaptive); },
        [&] { return channel_case<B>(P, sock, peer_n, false, adaptive); }));
    check(ctx.run_case(
        {"netif_tx_2proc_adaptive", "req/s", "socketpair_seqpacket_adaptive", true,
         config<N>(1, P, adaptive)},
        [&] { return ring_case<N>(P, 1, ring_n, false, adaptive); },
        [&] { return channel_case<N>(P, sock, peer_n, false, adaptive); }));
    check(ctx.run_case(
        {"blkif_rtt_2proc_adaptive", "ns", "socketpair_seqpacket_adaptive", false,
         config<B>(1, P, adaptive)},
        [&] { return ring_case<B>(P, 1, rtt_n, true, adaptive); },
        [&] { return channel_case<B>(P, sock, rtt_n, true, adaptive); }));
    return failures == 0 ? 0 : 1;
}

}  // namespace hv::bench
