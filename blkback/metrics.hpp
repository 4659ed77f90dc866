// Per-ring request counters (Linux blkback's statistics/ nodes). Layer: L2. Written by one
// RingWorker thread (relaxed atomics), read by the device's control thread for the
// `statistics/` keys and by tests.
#pragma once

#include <atomic>
#include <cstdint>

namespace hv::blk {

/// A plain snapshot, summed over rings by the device.
struct RingStatsSnapshot {
    std::uint64_t rd_req = 0;   ///< READ (and indirect READ) requests
    std::uint64_t wr_req = 0;   ///< WRITE (and indirect WRITE) requests
    std::uint64_t f_req = 0;    ///< FLUSH_DISKCACHE and WRITE_BARRIER requests
    std::uint64_t ds_req = 0;   ///< DISCARD requests
    std::uint64_t oo_req = 0;   ///< times draining stopped because the engine was full
    std::uint64_t rd_sect = 0;  ///< 512-byte sectors read
    std::uint64_t wr_sect = 0;  ///< 512-byte sectors written
    std::uint64_t errors = 0;   ///< responses other than BLKIF_RSP_OKAY
    std::uint64_t pgnt_purged = 0;  ///< cached persistent grants unmapped because idle
    std::uint64_t fixed_req = 0;    ///< map mode: requests done straight into guest pages as io_uring fixed buffers
    std::uint64_t spin_hits = 0;    ///< polling mode: spins that found a request or a completion (no sleep)
    friend bool operator==(const RingStatsSnapshot&, const RingStatsSnapshot&) = default;
    RingStatsSnapshot& operator+=(const RingStatsSnapshot& o) noexcept {
        rd_req += o.rd_req;
        wr_req += o.wr_req;
        f_req += o.f_req;
        ds_req += o.ds_req;
        oo_req += o.oo_req;
        rd_sect += o.rd_sect;
        wr_sect += o.wr_sect;
        errors += o.errors;
        pgnt_purged += o.pgnt_purged;
        fixed_req += o.fixed_req;
        spin_hits += o.spin_hits;
        return *this;
    }
};

/// Counters of one ring. Single writer (the ring's worker thread); readers take snapshot().
class RingStats {
public:
    // ORDER: relaxed everywhere: the counters are independent and only read for reporting.
    void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    RingStatsSnapshot snapshot() const noexcept {
        RingStatsSnapshot s;
        s.rd_req = rd_req.load(std::memory_order_relaxed);
        s.wr_req = wr_req.load(std::memory_order_relaxed);
        s.f_req = f_req.load(std::memory_order_relaxed);
        s.ds_req = ds_req.load(std::memory_order_relaxed);
        s.oo_req = oo_req.load(std::memory_order_relaxed);
        s.rd_sect = rd_sect.load(std::memory_order_relaxed);
        s.wr_sect = wr_sect.load(std::memory_order_relaxed);
        s.errors = errors.load(std::memory_order_relaxed);
        s.pgnt_purged = pgnt_purged.load(std::memory_order_relaxed);
        s.fixed_req = fixed_req.load(std::memory_order_relaxed);
        s.spin_hits = spin_hits.load(std::memory_order_relaxed);
        return s;
    }

    std::atomic<std::uint64_t> rd_req{0};
    std::atomic<std::uint64_t> wr_req{0};
    std::atomic<std::uint64_t> f_req{0};
    std::atomic<std::uint64_t> ds_req{0};
    std::atomic<std::uint64_t> oo_req{0};
    std::atomic<std::uint64_t> rd_sect{0};
    std::atomic<std::uint64_t> wr_sect{0};
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> pgnt_purged{0};
    std::atomic<std::uint64_t> fixed_req{0};
    std::atomic<std::uint64_t> spin_hits{0};
};

}  // namespace hv::blk
