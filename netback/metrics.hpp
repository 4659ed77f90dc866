// Per-vif counters (the `statistics/` nodes netback writes, xen-abi.md §6.6 plus Linux's
// ethtool names). Layer: L2. Each Queue thread writes its own VifStats with relaxed atomics;
// the Device's control thread sums snapshots for XenStore and tests.
#pragma once

#include <atomic>
#include <cstdint>

namespace hv::net {

/// A plain snapshot, summed over queues by the device.
struct VifStatsSnapshot {
    std::uint64_t tx_packets = 0;  ///< frontend → host packets handed to the engine
    std::uint64_t tx_bytes = 0;
    std::uint64_t rx_packets = 0;  ///< host → frontend packets delivered into rx buffers
    std::uint64_t rx_bytes = 0;
    std::uint64_t tx_dropped = 0;  ///< good tx packets the host dropped (engine full/refused)
    std::uint64_t rx_dropped = 0;  ///< host frames not delivered (no buffers, too big, bad grant)
    std::uint64_t tx_errors = 0;   ///< tx packets refused for a guest fault (parse drop, bad grant)
    /// Grant operations by data path (which one ran): GNTTABOP_copy elements, or page-sized
    /// pieces moved through a mapping (map mode).
    std::uint64_t tx_grant_copies = 0;
    std::uint64_t tx_grant_maps = 0;
    std::uint64_t rx_grant_copies = 0;
    std::uint64_t rx_grant_maps = 0;
    /// Map mode with the frontend's persistent pool: pieces moved through kept mappings, and
    /// the grants mapped (and kept) to do so: once per pool grant while connected.
    std::uint64_t tx_grant_pool = 0;
    std::uint64_t rx_grant_pool = 0;
    std::uint64_t pool_maps = 0;
    /// tx packets sent straight from kept mappings (only their headers copied; TxPath).
    std::uint64_t tx_direct = 0;
    /// rx packets read by the engine straight into kept rx pages (RxPath).
    std::uint64_t rx_direct = 0;
    std::uint64_t poll_wakeups = 0;  ///< waits ended by spinning (polling), without a sleep
    /// Waits ended by the stream spin (QueueConfig::stream_spin: a frontend streaming requests
    /// published more while the queue looked), without a sleep.
    std::uint64_t stream_spin_hits = 0;
    std::uint64_t sleeps = 0;  ///< waits that slept (armed the events, poll(2) with a timeout)
    /// Waits with a spin window that did not spin because more threads were runnable than
    /// there are CPUs (hv::cpus_oversubscribed()): they slept at once.
    std::uint64_t spins_skipped_busy = 0;
    /// Sleeps that ran to their timeout although the requests they were armed for had been
    /// published: a notification that never came (a lost wake-up; should stay 0).
    std::uint64_t missed_wakeups = 0;
    /// Event-channel notifications sent to the frontend for tx / rx responses (the frontend
    /// asked through rsp_event: xen-abi §4 RING_PUSH_RESPONSES_AND_CHECK_NOTIFY). On a shared
    /// channel one send for both counts in both.
    std::uint64_t notify_tx = 0;
    std::uint64_t notify_rx = 0;
    friend bool operator==(const VifStatsSnapshot&, const VifStatsSnapshot&) = default;
    VifStatsSnapshot& operator+=(const VifStatsSnapshot& o) noexcept {
        tx_packets += o.tx_packets;
        tx_bytes += o.tx_bytes;
        rx_packets += o.rx_packets;
        rx_bytes += o.rx_bytes;
        tx_dropped += o.tx_dropped;
        rx_dropped += o.rx_dropped;
        tx_errors += o.tx_errors;
        tx_grant_copies += o.tx_grant_copies;
        tx_grant_maps += o.tx_grant_maps;
        rx_grant_copies += o.rx_grant_copies;
        rx_grant_maps += o.rx_grant_maps;
        tx_grant_pool += o.tx_grant_pool;
        rx_grant_pool += o.rx_grant_pool;
        pool_maps += o.pool_maps;
        tx_direct += o.tx_direct;
        rx_direct += o.rx_direct;
        poll_wakeups += o.poll_wakeups;
        stream_spin_hits += o.stream_spin_hits;
        sleeps += o.sleeps;
        spins_skipped_busy += o.spins_skipped_busy;
        missed_wakeups += o.missed_wakeups;
        notify_tx += o.notify_tx;
        notify_rx += o.notify_rx;
        return *this;
    }
};

/// Counters of one queue. Single writer (the queue's thread); readers take snapshot().
class VifStats {
public:
    // ORDER: relaxed everywhere: independent counters, read only for reporting.
    static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    VifStatsSnapshot snapshot() const noexcept {
        VifStatsSnapshot s;
        s.tx_packets = tx_packets.load(std::memory_order_relaxed);
        s.tx_bytes = tx_bytes.load(std::memory_order_relaxed);
        s.rx_packets = rx_packets.load(std::memory_order_relaxed);
        s.rx_bytes = rx_bytes.load(std::memory_order_relaxed);
        s.tx_dropped = tx_dropped.load(std::memory_order_relaxed);
        s.rx_dropped = rx_dropped.load(std::memory_order_relaxed);
        s.tx_errors = tx_errors.load(std::memory_order_relaxed);
        s.tx_grant_copies = tx_grant_copies.load(std::memory_order_relaxed);
        s.tx_grant_maps = tx_grant_maps.load(std::memory_order_relaxed);
        s.rx_grant_copies = rx_grant_copies.load(std::memory_order_relaxed);
        s.rx_grant_maps = rx_grant_maps.load(std::memory_order_relaxed);
        s.tx_grant_pool = tx_grant_pool.load(std::memory_order_relaxed);
        s.rx_grant_pool = rx_grant_pool.load(std::memory_order_relaxed);
        s.pool_maps = pool_maps.load(std::memory_order_relaxed);
        s.tx_direct = tx_direct.load(std::memory_order_relaxed);
        s.rx_direct = rx_direct.load(std::memory_order_relaxed);
        s.poll_wakeups = poll_wakeups.load(std::memory_order_relaxed);
        s.stream_spin_hits = stream_spin_hits.load(std::memory_order_relaxed);
        s.sleeps = sleeps.load(std::memory_order_relaxed);
        s.spins_skipped_busy = spins_skipped_busy.load(std::memory_order_relaxed);
        s.missed_wakeups = missed_wakeups.load(std::memory_order_relaxed);
        s.notify_tx = notify_tx.load(std::memory_order_relaxed);
        s.notify_rx = notify_rx.load(std::memory_order_relaxed);
        return s;
    }

    std::atomic<std::uint64_t> tx_packets{0};
    std::atomic<std::uint64_t> tx_bytes{0};
    std::atomic<std::uint64_t> rx_packets{0};
    std::atomic<std::uint64_t> rx_bytes{0};
    std::atomic<std::uint64_t> tx_dropped{0};
    std::atomic<std::uint64_t> rx_dropped{0};
    std::atomic<std::uint64_t> tx_errors{0};
    std::atomic<std::uint64_t> tx_grant_copies{0};
    std::atomic<std::uint64_t> tx_grant_maps{0};
    std::atomic<std::uint64_t> rx_grant_copies{0};
    std::atomic<std::uint64_t> rx_grant_maps{0};
    std::atomic<std::uint64_t> tx_grant_pool{0};
    std::atomic<std::uint64_t> rx_grant_pool{0};
    std::atomic<std::uint64_t> pool_maps{0};
    std::atomic<std::uint64_t> tx_direct{0};
    std::atomic<std::uint64_t> rx_direct{0};
    std::atomic<std::uint64_t> poll_wakeups{0};
    std::atomic<std::uint64_t> stream_spin_hits{0};
    std::atomic<std::uint64_t> sleeps{0};
    std::atomic<std::uint64_t> spins_skipped_busy{0};
    std::atomic<std::uint64_t> missed_wakeups{0};
    std::atomic<std::uint64_t> notify_tx{0};
    std::atomic<std::uint64_t> notify_rx{0};
};

}  // namespace hv::net
