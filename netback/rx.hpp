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
    static constexpr unsigned kFrames = 8;  ///< frames read from the engine per batch
    static constexpr unsigned kPagesPerFrame = 17;  ///< 64 KiB + Ethernet header
    static constexpr unsigned kPages = kFrames * kPagesPerFrame;

    RxPath(hvmin::Grants& grants, NetEngine& engine, VifStats& stats, DomId frontend,
           RxFrontend fe, LocalPages pages, std::chrono::milliseconds drain_timeout,
           std::string name);

    /// Delivers frames while rx requests last. Never blocks.
    RxRun run(RxRing& ring, Clock::time_point now) noexcept;
    /// Frames read from the engine and not yet delivered or dropped.
    bool holding() const noexcept { return pos_ < count_; }
    /// When the held frame expires (valid while holding()).
    Clock::time_point hold_deadline() const noexcept { return held_since_ + drain_timeout_; }

private:
    struct Pending {
        unsigned first_rsp = 0, nr_rsp = 0;
        unsigned op_first = 0, op_count = 0;
        std::size_t len = 0;
    };
    void flush(RxRing& ring, RxRun& out) noexcept;
    void drop_held(const char* why) noexcept;

    hvmin::Grants& grants_;
    NetEngine& engine_;
    VifStats& stats_;
    DomId frontend_;
    RxFrontend fe_;
    LocalPages pages_;
    std::chrono::milliseconds drain_timeout_;
    std::string name_;
    std::array<RxBuffer, kFrames> bufs_{};
    unsigned count_ = 0;  ///< frames in bufs_
    unsigned pos_ = 0;    ///< next frame to deliver
    Clock::time_point held_since_{};
    bool held_ = false;
    std::vector<rings::netif_rx_request> reqs_;
    std::vector<RxSlot> slots_;
    std::vector<rings::netif_rx_response> rsps_;
    std::vector<rings::gnttab_copy> ops_;
    std::vector<Pending> pend_;
};

}  // namespace hv::net
