// netback's guest-RX path (host → frontend) for one queue (xen-abi.md §6.4, §6.8): frames from
// the engine (virtio-net header → csum flags / GSO extra) are copied with batched grant copy
// into the frontend's posted rx buffers; each response goes into the ring index of the request
// it consumed, extras right after the first slot. A frame that finds too few rx requests is
// held (the engine is not read meanwhile) and dropped after `drain_timeout`. Layer: L2.
// Threads: an RxPath belongs to its Queue's worker thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "hv/rings/ring.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/strong.hpp"
#include "netback/engine.hpp"
#include "netback/hash.hpp"
#include "netback/mcast.hpp"
#include "netback/metrics.hpp"
#include "netback/tx.hpp"
#include "netback/tx_parse.hpp"

namespace hv::net {

using RxRing = rings::BackRing<rings::NetifRxProtocol>;

/// What one RxPath::run() did.
struct RxRun {
    bool notify = false;      ///< responses pushed and the frontend asked for an event
    bool fatal = false;       ///< rx ring broken (hostile producer index): disable the vif
    std::string reason;
    unsigned waiting_for = 0; ///< > 0: a frame is held until this many rx requests are posted
};

/// Maps an engine frame's header onto the netif rx view of it.
RxPacketInfo rx_info_from_vnet(const VnetHdr& h, std::size_t len) noexcept;

class RxPath {
public:
    /// Copy area: frames are read from the engine one after the other into it (64-byte
    /// aligned), each into the rest of the area while a largest frame still fits, so one
    /// GNTTABOP_copy batch carries hundreds of small frames or 8 of 64 KiB.
    static constexpr unsigned kPages = 8 * 17;
    static constexpr std::size_t kAlign = 64;
    static constexpr std::size_t kMaxOps = 512;  ///< copy ops per batch (hv-min takes 1024)
    /// Frames dropped in one run() once a stalled frontend's held frame expired (bounded so a
    /// flood cannot keep the worker in one call).
    static constexpr unsigned kMaxDropsPerRun = 256;

    RxPath(hvmin::Grants& grants, NetEngine& engine, VifStats& stats, DomId frontend,
           RxFrontend fe, LocalPages pages, std::chrono::milliseconds drain_timeout,
           std::string name, DataMode mode = DataMode::copy, bool persistent = false);
    /// Kept mappings (persistent pool) are unmapped here.
    ~RxPath();
    RxPath(const RxPath&) = delete;
    RxPath& operator=(const RxPath&) = delete;

    /// Delivers frames while rx requests last. Never blocks.
    RxRun run(RxRing& ring, Clock::time_point now) noexcept;
    /// A frame read from the engine and not yet delivered or dropped.
    bool holding() const noexcept { return have_; }
    /// When the held frame expires (valid while holding()).
    Clock::time_point hold_deadline() const noexcept { return held_since_ + drain_timeout_; }
    /// The engine's notify_fd() was found readable. run() reads the engine only while it may
    /// hold frames: until a read finds nothing, then again after this (a pass the event
    /// channel woke for tx or rx requests does not start with an empty engine read).
    void engine_readable() noexcept { engine_ready_ = true; }
    /// The vif's multicast filter (nullptr: every frame goes to the frontend). Not owned;
    /// outlives this path.
    void set_mcast(const McastFilter* f) noexcept { mcast_ = f; }
    /// The vif's hash settings (nullptr: no control ring). With algorithm TOEPLITZ, frames of an
    /// enabled type carry a HASH extra (after the GSO one). Not owned; outlives this path.
    void set_hash(const HashState* h) noexcept { hash_ = h; }
    /// The frontend's xdp-headroom (read again when it reconfigures): applies from the next
    /// frame planned.
    void set_headroom(std::uint16_t h) noexcept { fe_.headroom = h; }

private:
    /// Largest frame read straight into rx pages: 17 pages (a 64 KiB TSO frame + Ethernet).
    static constexpr unsigned kMaxDirectPages = 17;
    enum class Direct { unavailable, nothing, delivered, dropped };
    /// Map mode with the persistent pool: reads the next frame from the engine straight into
    /// the frontend's kept rx pages (receive_scattered), when requests for the largest frame
    /// are posted and all their pages are kept writable. The first request's page takes the
    /// frame's first 4096 bytes, the next request (two while hashing: GSO and HASH) is left
    /// for the extras, the following ones take the rest (build_rx_slots' layout); a frame over
    /// a page with fewer extras than that room is moved up. Requests taken for it and not used
    /// stay in reserve_ for the next frame. unavailable: use the copy area (also with an
    /// xdp-headroom).
    Direct read_direct(RxRing& ring, RxRun& out) noexcept;
    /// The next rx request: one taken ahead into reserve_ first, else the ring's.
    rings::netif_rx_request next_request(RxRing& ring) noexcept;
    unsigned reserved() const noexcept {
        return static_cast<unsigned>(reserve_.size() - reserve_head_);
    }

    struct Pending {
        unsigned first_rsp = 0, nr_rsp = 0;
        unsigned op_first = 0, op_count = 0;
        std::size_t len = 0;
    };
    void flush(RxRing& ring, RxRun& out) noexcept;
    void drop_held(const char* why) noexcept;
    /// The multicast filter lets this frame (its first bytes) through; else it is counted in
    /// rx_dropped (Linux xenvif_start_xmit: the vif's tx_dropped).
    bool filter_passes(std::span<const std::byte> frame) noexcept;
    /// Copies the vif's hash settings when the control thread published new ones (once per
    /// run(): nothing per frame while hashing is off).
    void refresh_hash() noexcept;
    /// Fills info's hash fields from the frame's first bytes when hashing is on.
    void add_hash(RxPacketInfo& info, std::span<const std::byte> head) const noexcept;

    hvmin::Grants& grants_;
    NetEngine& engine_;
    VifStats& stats_;
    DomId frontend_;
    RxFrontend fe_;
    LocalPages pages_;
    std::chrono::milliseconds drain_timeout_;
    std::string name_;
    DataMode mode_;
    MapCopier mapper_;          ///< map mode only
    const McastFilter* mcast_ = nullptr;
    const HashState* hash_ = nullptr;
    HashSettings hash_settings_{};  ///< hash_'s settings as of hash_gen_
    std::uint64_t hash_gen_ = 0;
    bool hashing_ = false;      ///< TOEPLITZ with some type enabled
    RxBuffer buf_{};            ///< the current frame (in the copy area at area_used_)
    bool have_ = false;         ///< buf_ holds a frame not yet delivered or dropped
    std::size_t area_used_ = 0; ///< bytes of the copy area taken by frames of this batch
    Clock::time_point held_since_{};
    bool held_ = false;
    bool stalled_ = false;      ///< a held frame expired; frames without room are dropped at once
    std::vector<rings::netif_rx_request> reqs_;
    std::vector<RxSlot> slots_;
    std::vector<rings::netif_rx_response> rsps_;
    std::vector<rings::gnttab_copy> ops_;
    std::vector<Pending> pend_;
    /// Rx requests taken from the ring for a direct read and not answered yet (private
    /// copies, in ring order from reserve_head_): answered before any newer request.
    std::vector<rings::netif_rx_request> reserve_;
    std::size_t reserve_head_ = 0;
    std::array<std::byte*, kMaxDirectPages + 2> direct_pages_{};
    std::array<iovec, kMaxDirectPages> direct_iov_{};
    bool direct_unsupported_ = false;  ///< the engine does not scatter (EOPNOTSUPP)
    bool engine_ready_ = true;  ///< no read found the engine empty since engine_readable()
};

}  // namespace hv::net
