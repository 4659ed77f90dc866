// netback's guest-TX path (frontend → host) for one queue (xen-abi.md §6.3, §6.5, §6.8): take the
// tx requests, parse them (tx_parse.hpp), batch-copy the fragments out of the frontend's
// grants into this queue's own pages, build the virtio-net header and hand frames to the engine,
// then answer every consumed slot. Also the `rate` token bucket. Layer: L2.
// Threads: a TxPath belongs to its Queue's worker thread.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <tuple>
#include <string>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"
#include "hv/rings/ring.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/strong.hpp"
#include "netback/engine.hpp"
#include "netback/map_copy.hpp"
#include "netback/mcast.hpp"
#include "netback/metrics.hpp"
#include "netback/tx_parse.hpp"

namespace hv::hvmin {
class Grants;
}

namespace hv::net {

using Clock = std::chrono::steady_clock;
using TxRing = rings::BackRing<rings::NetifTxProtocol>;

/// `rate = "<bytes>,<usec>"` (xen-abi §6.6): credit per window. bytes == 0: unlimited.
struct RateLimit {
    std::uint64_t credit_bytes = 0;
    std::uint64_t credit_usec = 0;
    bool unlimited() const noexcept { return credit_bytes == 0; }
    friend bool operator==(const RateLimit&, const RateLimit&) = default;
};
/// Parses the `rate` key. GUEST-proof (the toolstack writes it, but it is still text):
/// EINVAL for anything but two unsigned decimals separated by one comma, usec > 0.
Result<RateLimit> parse_rate(std::string_view text) noexcept;

/// Linux netback's token bucket (xen-abi §6.8 "Rate limiting").
class CreditBucket {
public:
    void configure(RateLimit r, Clock::time_point now) noexcept;
    /// True and the credit is taken if `bytes` may go now; false: wait until retry_at().
    bool take(std::uint64_t bytes, Clock::time_point now) noexcept {
        return rate_.unlimited() || take_limited(bytes, now);
    }
    Clock::time_point retry_at() const noexcept { return window_end_; }
    const RateLimit& limit() const noexcept { return rate_; }

private:
    bool take_limited(std::uint64_t bytes, Clock::time_point now) noexcept;
    RateLimit rate_{};
    std::uint64_t remaining_ = 0;
    Clock::time_point window_end_{};
};

/// What one TxPath::run() did.
struct TxRun {
    bool notify = false;                       ///< responses pushed and the frontend asked for an event
    bool fatal = false;                        ///< disable the vif (reason says why)
    std::string reason;
    std::optional<Clock::time_point> throttled_until;  ///< out of credit: resume then
    bool engine_busy = false;  ///< the engine refused a frame (backpressure): retry shortly
};

class TxPath {
public:
    /// Copy area: packets are packed one after the other (64-byte aligned), each contiguous,
    /// so one GNTTABOP_copy batch carries a whole ring of small packets or 16 of 64 KiB.
    static constexpr unsigned kPages = 256;
    static constexpr unsigned kBatchPackets = 256;  ///< at most this many packets per batch
    /// A batch is flushed (copied, sent and answered) at this many packets when its data moves
    /// through kept mappings (map mode, persistent pool: a flush costs no hypercall), as Linux's
    /// NAPI budget: the frontend gets its first responses (and slots) back while the rest of
    /// what was taken is still being handled, so both sides work at once instead of in turns
    /// (a frontend keeping the ring full waited for all 256; issue #5). A grant copy or a map
    /// batch is one hypercall per flush: there a flush waits for kBatchPackets.
    static constexpr unsigned kKeptFlushPackets = 64;
    static constexpr std::size_t kAlign = 64;
    static constexpr std::size_t kArea = std::size_t{kPages} * rings::XEN_PAGE_SIZE;
    /// Private copies of taken requests: a whole ring (256) and a packet's worth left over.
    static constexpr std::size_t kPend = 512;

    TxPath(hvmin::Grants& grants, NetEngine& engine, VifStats& stats, DomId frontend,
           TxConfig cfg, LocalPages pages, std::string name, DataMode mode = DataMode::copy,
           bool persistent = false);
    /// Kept mappings (persistent pool) are unmapped here.
    ~TxPath();
    TxPath(const TxPath&) = delete;
    TxPath& operator=(const TxPath&) = delete;

    /// Drains the tx ring as far as credit allows. Never blocks.
    TxRun run(TxRing& ring, Clock::time_point now) noexcept;
    void set_rate(RateLimit r, Clock::time_point now) noexcept { bucket_.configure(r, now); }
    /// The vif's multicast filter MCAST_ADD/MCAST_DEL extras update (nullptr: answered OKAY,
    /// nothing kept). Not owned; outlives this path.
    void set_mcast(McastFilter* f) noexcept { mcast_ = f; }
    /// Requests copied out of the ring but not answered (waiting for credit).
    unsigned pending() const noexcept { return static_cast<unsigned>(pend_n_ - pend_head_); }

private:
    /// A packet longer than this whose pages are all kept mappings (map mode, persistent pool)
    /// is sent from them: only its first tx_offload_header_bytes are copied (the headers that
    /// are parsed and that the host sees), the rest goes to the engine straight from the
    /// frontend's pages (one copy less per byte: the tap's writev is the only one).
    static constexpr std::size_t kDirectMin = 2048;

    struct Entry {
        TxPacket pkt;
        std::int16_t status = rings::NETIF_RSP_ERROR;
        int buf = -1;             ///< byte offset in the copy area, forward only
        std::uint32_t head = 0;   ///< bytes of the packet in the copy area (all, unless direct)
        unsigned iov_first = 0, iov_count = 0;  ///< direct: the rest, in iovs_
        unsigned op_first = 0, op_count = 0;
        bool copied = false;      ///< grant copy done (status known)
        bool done = false;        ///< status final (sent, or refused)
    };
    /// Copies, sends and answers the batch in ring order. False: the engine is busy and the
    /// entries from the refused one on stay (their data already copied) for the next call.
    bool flush(TxRing& ring, TxRun& out) noexcept;
    /// Every fragment's grant is a kept mapping (so the packet can be sent direct).
    bool all_kept(const TxPacket& p) const noexcept;
    /// Appends the op copying `len` bytes at `goff` of the frontend's `gref` to byte `pos` of the
    /// copy area (within one local page). The caller made room in ops_.
    void add_copy_op(std::uint32_t gref, std::size_t goff, std::size_t pos,
                     std::size_t len) noexcept {
        rings::gnttab_copy& op = ops_[ops_n_++];
        op.source.u.gmfn = gref;  // the whole union: no stale upper half
        op.source.domid = frontend_.get();
        op.source.offset = static_cast<std::uint16_t>(goff);
        op.dest.u.gmfn = pages_.first_frame + pos / rings::XEN_PAGE_SIZE;
        op.dest.domid = rings::DOMID_SELF;
        op.dest.offset = static_cast<std::uint16_t>(pos % rings::XEN_PAGE_SIZE);
        op.len = static_cast<std::uint16_t>(len);
        op.flags = rings::GNTCOPY_source_gref;
        op.status = rings::GNTST_okay;
    }

    hvmin::Grants& grants_;
    NetEngine& engine_;
    VifStats& stats_;
    DomId frontend_;
    TxConfig cfg_;
    LocalPages pages_;
    std::string name_;
    DataMode mode_;
    MapCopier mapper_;  ///< map mode only
    CreditBucket bucket_;
    McastFilter* mcast_ = nullptr;
    std::vector<rings::netif_tx_request> pend_;  ///< kPend private copies of taken requests:
    std::size_t pend_head_ = 0;                  ///< [pend_head_, pend_n_) not parsed yet
    std::size_t pend_n_ = 0;
    std::vector<Entry> batch_;    ///< kBatchPackets entries; [0, batch_n_) in use (reused)
    std::size_t batch_n_ = 0;
    std::size_t flush_at_ = kBatchPackets;  ///< batch_n_ that flushes (kKeptFlushPackets or all)
    std::vector<rings::gnttab_copy> ops_;  ///< [0, ops_n_) this batch's ops (storage reused)
    std::size_t ops_n_ = 0;
    std::vector<iovec> iovs_;     ///< direct packets' bytes past their head, in kept mappings
    std::array<iovec, 1 + std::tuple_size_v<decltype(TxPacket::frags)>> send_iov_{};  ///< one send
    std::vector<rings::netif_tx_response> rsp_;
    std::size_t area_used_ = 0;   ///< bytes of the copy area the batch's packets take
    std::uint64_t kept_pieces_ = 0;  ///< copied by run() through kept mappings, not yet counted
    /// Slots whose kept page run() looks up and prefetches ahead of the packet it parses.
    static constexpr std::size_t kAhead = 8;
    std::array<const std::byte*, kPend> ahead_{};  ///< per pend_ slot: its kept page or nullptr
};

}  // namespace hv::net
