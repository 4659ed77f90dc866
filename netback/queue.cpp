// Queue: one vif queue's worker thread (see queue.hpp). Layer: L2.
// Threads: create()/stop()/set_rate()/stats() on the control thread; run() and the Tx/RxPath
// on the worker thread only.
#include "netback/queue.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "hv/log.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "netback/rx.hpp"

namespace hv::net {

using rings::XEN_PAGE_SIZE;

namespace {
/// Upper bound of one sleep: a lost wakeup costs at most this much.
constexpr int kWaitMs = 500;
/// Without feature-rx-notify the frontend never kicks for new rx buffers: poll this often.
constexpr int kRxPollMs = 5;
/// The engine refused a frame (full): retry tx this soon (the engine has no "writable" fd).
constexpr int kBusyRetryMs = 1;
}  // namespace

struct Queue::Impl {
    Impl(hvmin::Services s, QueueConfig c) : svc(std::move(s)), cfg(std::move(c)) {}
    ~Impl() { stop(); }

    // Members in dependency order, destroyed in reverse: the thread stops first (stop() in the
    // destructor), then the paths, the engine, the channels and last the ring mappings.
    hvmin::Services svc;
    QueueConfig cfg;
    int halt_fd = -1;
    hvmin::GrantMapping tx_map;
    hvmin::GrantMapping rx_map;
    TxRing tx_ring;
    RxRing rx_ring;
    hvmin::EventChannelBinding ev_tx;
    hvmin::EventChannelBinding ev_rx;  // split only
    LocalPages tx_pages;
    LocalPages rx_pages;
    std::unique_ptr<NetEngine> engine;
    VifStats stats;
    std::optional<TxPath> tx;
    std::optional<RxPath> rx;

    std::atomic<bool> halted{false};
    mutable std::mutex mu;  // guards reason, new_rate
    std::string reason;
    RateLimit new_rate;
    std::atomic<bool> rate_changed{false};
    std::atomic<std::uint32_t> new_headroom{UINT32_MAX};  ///< UINT32_MAX: no change

    UniqueFd wake_fd;
    std::atomic<bool> stopping{false};
    std::jthread thread;

    void stop() noexcept {
        stopping.store(true, std::memory_order_release);
        wake();
        if (thread.joinable()) {
            thread.join();
        }
    }
    void wake() const noexcept {
        const std::uint64_t one = 1;
        (void)!::write(wake_fd.get(), &one, sizeof one);
    }
    void halt(const std::string& why) {
        if (halted.exchange(true)) {
            return;
        }
        {
            std::lock_guard lk(mu);
            reason = why;
        }
        HV_ERROR("netback %s: queue disabled: %s", cfg.name.c_str(), why.c_str());
        const std::uint64_t one = 1;
        (void)!::write(halt_fd, &one, sizeof one);
    }
    void notify(bool tx_side, bool rx_side) noexcept {
        if (tx_side) {
            VifStats::add(stats.notify_tx);
        }
        if (rx_side) {
            VifStats::add(stats.notify_rx);
        }
        if (cfg.split) {
            if (tx_side) {
                (void)ev_tx.notify();
            }
            if (rx_side) {
                (void)ev_rx.notify();
            }
        } else if (tx_side || rx_side) {
            (void)ev_tx.notify();
        }
    }
    /// After a poll() (a sleep, or a spin's probe) that returned > 0: reads the wake fd and
    /// acks the channels it found readable, and no other (most reads of every channel after
    /// every wake-up found nothing, issue #5); a readable engine is read by the next pass (a
    /// pass reads it only then, or while frames remain). A notification that comes after the
    /// poll stays readable: the next poll() returns at once and the pass after it takes them.
    void drain_fds(std::span<const pollfd> polled) noexcept {
        for (const pollfd& p : polled) {
            if ((p.revents & (POLLIN | POLLERR | POLLHUP)) == 0) {
                continue;
            }
            if (p.fd == wake_fd.get()) {
                std::uint64_t v = 0;
                (void)!::read(wake_fd.get(), &v, sizeof v);
            } else if (ev_tx.valid() && p.fd == ev_tx.fd()) {
                (void)ev_tx.ack();
            } else if (ev_rx.valid() && p.fd == ev_rx.fd()) {
                (void)ev_rx.ack();
            } else if (p.fd == engine->notify_fd() && rx) {
                rx->engine_readable();
            }
        }
    }
    /// A sleep ran to its timeout: were the requests it was armed for there all along? Then
    /// the notification was lost (the frontend publishes before it checks req_event, and we
    /// armed before sleeping): counted in missed_wakeups and logged, not acted on (the next
    /// pass takes them anyway).
    void note_timeout(bool tx_unarmed, unsigned rx_waiting_for) noexcept {
        auto tx_u = tx_ring.unconsumed();
        auto rx_u = rx_ring.unconsumed();
        const bool tx_missed = !tx_unarmed && tx_u && *tx_u > 0;
        // Without feature-rx-notify the frontend never kicks for rx buffers: we poll for them.
        const bool rx_missed =
            cfg.rx_notify && rx_waiting_for > 0 && rx_u && *rx_u >= rx_waiting_for;
        if (tx_missed || rx_missed) {
            VifStats::add(stats.missed_wakeups);
            HV_LOG_RL(warn,
                      "netback %s: a sleep ran to its timeout with %s requests waiting "
                      "(lost wake-up)",
                      cfg.name.c_str(), tx_missed ? "tx" : "rx");
        }
    }
    void run() noexcept;
};

void Queue::Impl::run() noexcept {
    hv::SpinPolicy spin(cfg.spin);
    rings::RING_IDX taken_awake = 0;  // requests taken since the last sleep (stream spin)
    while (!stopping.load(std::memory_order_acquire)) {
        auto now = Clock::now();
        if (rate_changed.exchange(false)) {
            std::lock_guard lk(mu);
            tx->set_rate(new_rate, now);
        }
        if (const auto h = new_headroom.exchange(UINT32_MAX); h != UINT32_MAX) {
            rx->set_headroom(static_cast<std::uint16_t>(h));
        }
        std::optional<Clock::time_point> throttled;
        bool holding = false;
        bool engine_busy = false;
        unsigned rx_waiting_for = 0;
        if (!halted.load(std::memory_order_relaxed)) {
            const rings::RING_IDX cons_before = tx_ring.req_cons() + rx_ring.req_cons();
            const RxRun rr = rx->run(rx_ring, now);
            const TxRun tr = rr.fatal ? TxRun{} : tx->run(tx_ring, now);
            if (rr.fatal || tr.fatal) {
                notify(tr.notify, rr.notify);
                halt(rr.fatal ? rr.reason : tr.reason);
                continue;
            }
            notify(tr.notify, rr.notify);
            const rings::RING_IDX took = tx_ring.req_cons() + rx_ring.req_cons() - cons_before;
            if (took != 0) {
                spin.worked();  // requests were taken on either ring
                taken_awake += took;
            }
            rx_waiting_for = rr.waiting_for;
            throttled = tr.throttled_until;
            engine_busy = tr.engine_busy;
            holding = rx->holding();
        }
        std::array<pollfd, 4> fds{};
        nfds_t n = 0;
        fds[n++] = {wake_fd.get(), POLLIN, 0};
        if (!halted.load(std::memory_order_relaxed)) {
            fds[n++] = {ev_tx.fd(), POLLIN, 0};
            if (cfg.split) {
                fds[n++] = {ev_rx.fd(), POLLIN, 0};
            }
            if (!holding) {
                fds[n++] = {engine->notify_fd(), POLLIN, 0};
            }
        }
        long long wait_ms = kWaitMs;
        now = Clock::now();
        auto until = [&](Clock::time_point t) {
            const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
            wait_ms = std::clamp<long long>(ms, 0, wait_ms);
        };
        if (throttled) {
            until(*throttled);
        }
        if (engine_busy) {
            wait_ms = std::min<long long>(wait_ms, kBusyRetryMs);
        }
        if (holding) {
            until(rx->hold_deadline());
            if (!cfg.rx_notify) {
                wait_ms = std::min<long long>(wait_ms, kRxPollMs);
            }
        }
        // Polling: while work came within the spin window, watch the ring indices (no syscall)
        // and, every few probes, the fds (engine, channels, wake) before arming anything. The
        // events stay unarmed meanwhile, so a frontend that produces sends no notification (no
        // syscall on either side); the final checks below arm them only before a real sleep.
        // Not while the CPUs are oversubscribed: a spinner that loses its CPU stays runnable
        // and then waits out other tasks' slices instead of being woken at once, and so does
        // a frontend spinning for our responses (measured: queue passes 100-180 ms apart at
        // load ~18 on 2 CPUs, in the runqueue, not asleep; issue #5).
        // The stream spin (QueueConfig::stream_spin) stands in for a window that is off or
        // over, once the frontend has kept this queue busy since its last sleep; it is not
        // counted as a skipped window when the CPUs are oversubscribed.
        auto budget = spin.budget();
        const bool streaming = budget.count() == 0 && cfg.stream_spin.count() > 0 &&
                               taken_awake >= kStreamRequests;
        if (streaming) {
            budget = cfg.stream_spin;
        }
        bool may_spin = budget.count() > 0 && !halted.load(std::memory_order_relaxed) &&
                        !throttled && wait_ms > 0;
        if (may_spin && hv::cpus_oversubscribed()) {
            if (!streaming) {
                VifStats::add(stats.spins_skipped_busy);
            }
            may_spin = false;
        }
        if (may_spin) {
            unsigned probe = 0;
            bool fd_ready = false;
            const bool ready = hv::spin_until(
                [&] {
                    if (!engine_busy) {
                        auto u = tx_ring.unconsumed();
                        if (!u || *u > 0) {
                            return true;  // an error is handled (the queue halted) by the pass
                        }
                    }
                    if (rx_waiting_for > 0) {
                        auto u = rx_ring.unconsumed();
                        if (!u || *u >= rx_waiting_for) {
                            return true;
                        }
                    }
                    fd_ready = (++probe % 8) == 0 && ::poll(fds.data(), n, 0) > 0;
                    return fd_ready;
                },
                std::min<std::chrono::microseconds>(budget, std::chrono::milliseconds(wait_ms)),
                hv::SpinYield::every_64);
            if (ready) {
                VifStats::add(streaming ? stats.stream_spin_hits : stats.poll_wakeups);
                if (fd_ready) {
                    drain_fds({fds.data(), n});  // else nothing was signalled that needs reading
                }
                continue;
            }
        }
        if (!halted.load(std::memory_order_relaxed)) {
            // The final checks (xen-abi §1.5): arm the events, fence, look again. Work found
            // means another pass instead of the sleep.
            bool again = false;
            if (!throttled && !engine_busy) {
                auto f = tx_ring.final_check_for_requests(1);
                if (!f) {
                    halt("tx ring: " + f.error().message());
                    continue;
                }
                again = again || *f;
            }
            if (rx_waiting_for > 0) {
                auto f = rx_ring.final_check_for_requests(rx_waiting_for);
                if (!f) {
                    halt("rx ring: " + f.error().message());
                    continue;
                }
                again = again || *f;
            }
            if (again) {
                continue;
            }
        }
        if (wait_ms > 0) {
            VifStats::add(stats.sleeps);
            taken_awake = 0;
        }
        const int ready = ::poll(fds.data(), n, static_cast<int>(wait_ms));
        if (ready > 0) {
            drain_fds({fds.data(), n});
        } else if (ready == 0 && !halted.load(std::memory_order_relaxed)) {
            note_timeout(throttled.has_value() || engine_busy, rx_waiting_for);
        }
    }
}

Queue::Queue(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Queue::~Queue() { stop(); }
void Queue::stop() noexcept { impl_->stop(); }
bool Queue::halted() const noexcept { return impl_->halted.load(); }
std::string Queue::halt_reason() const {
    std::lock_guard lk(impl_->mu);
    return impl_->reason;
}
VifStatsSnapshot Queue::stats() const noexcept { return impl_->stats.snapshot(); }
void Queue::set_rate(RateLimit r) noexcept {
    {
        std::lock_guard lk(impl_->mu);
        impl_->new_rate = r;
    }
    impl_->rate_changed.store(true);
    impl_->wake();
}

void Queue::set_xdp_headroom(std::uint16_t h) noexcept {
    impl_->new_headroom.store(h);
    impl_->wake();
}

Result<std::unique_ptr<Queue>> Queue::create(hvmin::Services svc, std::unique_ptr<NetEngine> engine,
                                             QueueConfig cfg, int halt_fd) {
    auto impl = std::make_unique<Impl>(std::move(svc), std::move(cfg));
    Impl& q = *impl;
    q.halt_fd = halt_fd;
    q.engine = std::move(engine);
    const DomId fe = q.cfg.frontend;
    auto tx_map = q.svc.grants().map(fe, q.cfg.tx_ring_ref, false);
    if (!tx_map) {
        return fail(tx_map.error());
    }
    q.tx_map = std::move(*tx_map);
    auto rx_map = q.svc.grants().map(fe, q.cfg.rx_ring_ref, false);
    if (!rx_map) {
        return fail(rx_map.error());
    }
    q.rx_map = std::move(*rx_map);
    auto txr = TxRing::attach(q.tx_map.page());
    auto rxr = RxRing::attach(q.rx_map.page());
    if (!txr || !rxr) {
        return fail(!txr ? txr.error() : rxr.error());
    }
    q.tx_ring = *txr;
    q.rx_ring = *rxr;
    auto ev = q.svc.evtchn().bind_interdomain(fe, q.cfg.tx_port);
    if (!ev) {
        return fail(ev.error());
    }
    q.ev_tx = std::move(*ev);
    if (q.cfg.split) {
        auto evr = q.svc.evtchn().bind_interdomain(fe, q.cfg.rx_port);
        if (!evr) {
            return fail(evr.error());
        }
        q.ev_rx = std::move(*evr);
    }
    // Copy pages: this connection's own frames (the DOMID_SELF side of every grant copy), one
    // extent so a packet's linear buffer is contiguous.
    const std::uint32_t pages = TxPath::kPages + RxPath::kPages;
    auto first = q.svc.memory().alloc_extent(pages);
    if (!first) {
        return fail(first.error());
    }
    auto base = q.svc.memory().frame(*first);
    if (!base) {
        return fail(base.error());
    }
    for (std::uint32_t i = 1; i < pages; ++i) {
        auto p = q.svc.memory().frame(*first + i);
        if (!p || *p != *base + std::size_t{i} * XEN_PAGE_SIZE) {
            return fail(std::make_error_code(std::errc::bad_address));  // not one mapping
        }
    }
    q.tx_pages = {*first, *base, TxPath::kPages};
    q.rx_pages = {*first + TxPath::kPages, *base + std::size_t{TxPath::kPages} * XEN_PAGE_SIZE,
                  RxPath::kPages};
    q.tx.emplace(q.svc.grants(), *q.engine, q.stats, fe, q.cfg.tx, q.tx_pages, q.cfg.name,
                 q.cfg.mode, q.cfg.persistent_pool);
    q.rx.emplace(q.svc.grants(), *q.engine, q.stats, fe, q.cfg.rx, q.rx_pages,
                 q.cfg.rx_drain_timeout, q.cfg.name, q.cfg.mode, q.cfg.persistent_pool);
    q.tx->set_rate(q.cfg.rate, Clock::now());
    q.tx->set_mcast(q.cfg.mcast.get());
    q.rx->set_mcast(q.cfg.mcast.get());
    q.rx->set_hash(q.cfg.hash.get());
    q.wake_fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (q.wake_fd.get() < 0) {
        return fail_errno();
    }
    q.thread = std::jthread([&q] { q.run(); });
    // "nb <fe>/<devid>/q<n>" in top -H, perf and /proc/<pid>/task/*/comm (tests find the
    // queue threads by it); the kernel keeps 15 characters.
    (void)::pthread_setname_np(q.thread.native_handle(),
                               ("nb " + q.cfg.name).substr(0, 15).c_str());
    return std::unique_ptr<Queue>(new Queue(std::move(impl)));
}

}  // namespace hv::net
