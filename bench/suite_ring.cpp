// hvbench suite `ring`: requests/s and round-trip latency through Xen-ABI rings (blkif, netif
// tx) between two threads on different CPUs, with real eventfd notifications and the ring's
// notification hold-off, beside the same messages through a SOCK_SEQPACKET socketpair and a
// pipe pair measured in the same run.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "hv/mapping.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/ring.hpp"
#include "hv/unique_fd.hpp"
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

hv::Result<void> read_exact(int fd, void* p, std::size_t n) {
    auto* b = static_cast<char*>(p);
    std::size_t got = 0;
    while (got < n) {  // pipes may split; seqpacket returns whole messages
        pollfd pfd{fd, POLLIN, 0};
        const int pr = ::poll(&pfd, 1, wait_timeout_ms);
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
    return {};
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

    static hv::Result<RingSetup> create(unsigned pages) {
        RingSetup s;
        auto m = hv::Mapping::anonymous(std::size_t{pages} * rings::XEN_PAGE_SIZE);
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
                           std::uint64_t n) {
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
        auto more = back.final_check_for_requests();
        if (!more) {
            return hv::fail(more.error());
        }
        if (!*more && expect < n) {
            HV_TRY(wait_kick(to_back));
        }
    }
    return {};
}

/// Throughput: the front keeps the ring full; both sides sleep only when they must.
template <class M>
hv::Result<Sample> ring_throughput(unsigned pages, std::uint64_t n) {
    auto setup = RingSetup::create(pages);
    if (!setup) {
        return hv::fail(setup.error());
    }
    auto front = FrontRing<typename M::P>::init(setup->mem.bytes());
    auto back = BackRing<typename M::P>::attach(setup->mem.bytes());
    if (!front || !back) {
        return hv::fail(!front ? front.error() : back.error());
    }
    hv::Result<void> back_rc;
    std::thread back_thread([&] {
        pin_to_cpu(1);
        back_rc = ring_back<M>(*back, setup->to_back.get(), setup->to_front.get(), n);
    });
    hv::Result<void> front_rc;
    double secs = 0;
    std::thread front_thread([&] {
        pin_to_cpu(0);
        const auto t0 = Clock::now();
        front_rc = [&]() -> hv::Result<void> {
            std::uint64_t sent = 0;
            std::uint64_t answered = 0;
            while (answered < n) {
                while (!front->full() && sent < n) {
                    M::make(front->next_request(), sent++);
                    front->commit_request();
                }
                if (front->push_requests()) {
                    HV_TRY(kick(setup->to_back.get()));
                }
                auto ready = front->unconsumed_responses();
                if (!ready) {
                    return hv::fail(ready.error());
                }
                while (auto rsp = front->take_response()) {
                    if (!M::matches(*rsp, answered)) {
                        return hv::fail(bad_data());
                    }
                    ++answered;
                }
                if (answered < n && (front->full() || sent == n)) {
                    auto more = front->final_check_for_responses();
                    if (!more) {
                        return hv::fail(more.error());
                    }
                    if (!*more) {
                        HV_TRY(wait_kick(setup->to_front.get()));
                    }
                }
            }
            return {};
        }();
        secs = std::chrono::duration<double>(Clock::now() - t0).count();
    });
    front_thread.join();
    back_thread.join();
    HV_TRY(front_rc);
    HV_TRY(back_rc);
    return Sample{static_cast<double>(n) / secs};
}

/// Round trip: one request at a time, each side asleep on its eventfd in between.
template <class M>
hv::Result<Sample> ring_rtt(std::uint64_t n) {
    auto setup = RingSetup::create(1);
    if (!setup) {
        return hv::fail(setup.error());
    }
    auto front = FrontRing<typename M::P>::init(setup->mem.bytes());
    auto back = BackRing<typename M::P>::attach(setup->mem.bytes());
    if (!front || !back) {
        return hv::fail(!front ? front.error() : back.error());
    }
    hv::Result<void> back_rc;
    std::thread back_thread([&] {
        pin_to_cpu(1);
        back_rc = ring_back<M>(*back, setup->to_back.get(), setup->to_front.get(), n);
    });
    std::vector<double> ns;
    ns.reserve(n);
    hv::Result<void> front_rc;
    std::thread front_thread([&] {
        pin_to_cpu(0);
        front_rc = [&]() -> hv::Result<void> {
            for (std::uint64_t i = 0; i < n; ++i) {
                const auto t0 = Clock::now();
                M::make(front->next_request(), i);
                front->commit_request();
                if (front->push_requests()) {
                    HV_TRY(kick(setup->to_back.get()));
                }
                for (;;) {
                    auto more = front->final_check_for_responses();
                    if (!more) {
                        return hv::fail(more.error());
                    }
                    if (*more) {
                        break;
                    }
                    HV_TRY(wait_kick(setup->to_front.get()));
                }
                auto rsp = front->take_response();
                if (!rsp || !M::matches(*rsp, i)) {
                    return hv::fail(bad_data());
                }
                ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
            }
            return {};
        }();
    });
    front_thread.join();
    back_thread.join();
    HV_TRY(front_rc);
    HV_TRY(back_rc);
    Sample s;
    s.p50 = percentile(ns, 50);
    s.p99 = percentile(ns, 99);
    s.value = s.p50;
    return s;
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
hv::Result<void> channel_back(Channel& c, std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
        typename M::P::request req;
        HV_TRY(read_exact(c.back_rx.get(), &req, sizeof req));
        if (!M::check(req, i)) {
            return hv::fail(bad_data());
        }
        typename M::P::response rsp;
        M::answer(rsp, req);
        HV_TRY(write_all(c.back_tx.get(), &rsp, sizeof rsp));
    }
    return {};
}

/// Peer throughput: the same messages, `window` outstanding, one syscall per message.
template <class M>
hv::Result<Sample> channel_throughput(hv::Result<Channel> (*make)(), std::uint64_t n,
                                      unsigned window) {
    auto ch = make();
    if (!ch) {
        return hv::fail(ch.error());
    }
    hv::Result<void> back_rc;
    std::thread back_thread([&] {
        pin_to_cpu(1);
        back_rc = channel_back<M>(*ch, n);
    });
    hv::Result<void> front_rc;
    double secs = 0;
    std::thread front_thread([&] {
        pin_to_cpu(0);
        const auto t0 = Clock::now();
        front_rc = [&]() -> hv::Result<void> {
            std::uint64_t sent = 0;
            std::uint64_t answered = 0;
            while (answered < n) {
                while (sent < n && sent - answered < window) {
                    typename M::P::request req;
                    M::make(req, sent++);
                    HV_TRY(write_all(ch->front_tx.get(), &req, sizeof req));
                }
                typename M::P::response rsp;
                HV_TRY(read_exact(ch->front_rx.get(), &rsp, sizeof rsp));
                if (!M::matches(rsp, answered)) {
                    return hv::fail(bad_data());
                }
                ++answered;
            }
            return {};
        }();
        secs = std::chrono::duration<double>(Clock::now() - t0).count();
    });
    front_thread.join();
    if (!front_rc) {
        ch->front_tx.reset();  // unblock the back end
    }
    back_thread.join();
    HV_TRY(front_rc);
    HV_TRY(back_rc);
    return Sample{static_cast<double>(n) / secs};
}

template <class M>
hv::Result<Sample> channel_rtt(hv::Result<Channel> (*make)(), std::uint64_t n) {
    auto ch = make();
    if (!ch) {
        return hv::fail(ch.error());
    }
    hv::Result<void> back_rc;
    std::thread back_thread([&] {
        pin_to_cpu(1);
        back_rc = channel_back<M>(*ch, n);
    });
    std::vector<double> ns;
    ns.reserve(n);
    hv::Result<void> front_rc;
    std::thread front_thread([&] {
        pin_to_cpu(0);
        front_rc = [&]() -> hv::Result<void> {
            for (std::uint64_t i = 0; i < n; ++i) {
                const auto t0 = Clock::now();
                typename M::P::request req;
                M::make(req, i);
                HV_TRY(write_all(ch->front_tx.get(), &req, sizeof req));
                typename M::P::response rsp;
                HV_TRY(read_exact(ch->front_rx.get(), &rsp, sizeof rsp));
                if (!M::matches(rsp, i)) {
                    return hv::fail(bad_data());
                }
                ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
            }
            return {};
        }();
    });
    front_thread.join();
    if (!front_rc) {
        ch->front_tx.reset();
    }
    back_thread.join();
    HV_TRY(front_rc);
    HV_TRY(back_rc);
    Sample s;
    s.p50 = percentile(ns, 50);
    s.p99 = percentile(ns, 99);
    s.value = s.p50;
    return s;
}

template <class M>
std::vector<std::pair<std::string, std::string>> config(unsigned pages) {
    return {{"ring_pages", std::to_string(pages)},
            {"ring_slots", std::to_string(rings::ring_entries_for_pages<typename M::P>(pages))},
            {"request_bytes", std::to_string(sizeof(typename M::P::request))},
            {"response_bytes", std::to_string(sizeof(typename M::P::response))},
            {"peer_window", std::to_string(peer_window)}};
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

    check(ctx.run_case(
        {"blkif_2threads", "req/s", "socketpair_seqpacket", true, config<BlkifMessages>(1)},
        [&] { return ring_throughput<BlkifMessages>(1, ring_n); },
        [&] {
            return channel_throughput<BlkifMessages>(&Channel::socketpair_seqpacket, peer_n,
                                                     peer_window);
        }));
    check(ctx.run_case(
        {"blkif_2threads_4pages", "req/s", "socketpair_seqpacket", true, config<BlkifMessages>(4)},
        [&] { return ring_throughput<BlkifMessages>(4, ring_n); },
        [&] {
            return channel_throughput<BlkifMessages>(&Channel::socketpair_seqpacket, peer_n,
                                                     peer_window);
        }));
    check(ctx.run_case(
        {"netif_tx_2threads", "req/s", "socketpair_seqpacket", true, config<NetifTxMessages>(1)},
        [&] { return ring_throughput<NetifTxMessages>(1, ring_n); },
        [&] {
            return channel_throughput<NetifTxMessages>(&Channel::socketpair_seqpacket, peer_n,
                                                       peer_window);
        }));
    check(ctx.run_case(
        {"netif_tx_2threads_vs_pipe", "req/s", "pipe_pair", true, config<NetifTxMessages>(1)},
        [&] { return ring_throughput<NetifTxMessages>(1, ring_n); },
        [&] { return channel_throughput<NetifTxMessages>(&Channel::pipes, peer_n, peer_window); }));
    check(ctx.run_case(
        {"blkif_rtt", "ns", "socketpair_seqpacket", false, config<BlkifMessages>(1)},
        [&] { return ring_rtt<BlkifMessages>(rtt_n); },
        [&] { return channel_rtt<BlkifMessages>(&Channel::socketpair_seqpacket, rtt_n); }));
    check(ctx.run_case(
        {"blkif_rtt_vs_pipe", "ns", "pipe_pair", false, config<BlkifMessages>(1)},
        [&] { return ring_rtt<BlkifMessages>(rtt_n); },
        [&] { return channel_rtt<BlkifMessages>(&Channel::pipes, rtt_n); }));
    return failures == 0 ? 0 : 1;
}

}  // namespace hv::bench
