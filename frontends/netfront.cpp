// libnetfront (see include/frontends/netfront.hpp). Layer: frontends. One thread per Device.
#include "frontends/netfront.hpp"

#include <poll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <thread>
#include <utility>

#include "hv/log.hpp"
#include "hv/rings/netif_l4.hpp"
#include "hv/rings/ring.hpp"
#include "hvmin/client.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::netfront {

namespace {

using rings::XEN_PAGE_SIZE;
using xenbus::XenbusState;
using TxFront = rings::FrontRing<rings::NetifTxProtocol>;
using RxFront = rings::FrontRing<rings::NetifRxProtocol>;
using CtrlFront = rings::FrontRing<rings::NetifCtrlProtocol>;

constexpr unsigned kRingSize = rings::ring_entries_for_pages<rings::NetifTxProtocol>(1);
static_assert(kRingSize == rings::ring_entries_for_pages<rings::NetifRxProtocol>(1));
/// Slots a received packet may use (netfront: XEN_NETIF_NR_SLOTS_MIN data slots + extras).
constexpr unsigned kMaxRxSlots = rings::XEN_NETIF_NR_SLOTS_MIN + 4;
/// Pages of the largest frame (XEN_NETIF_MAX_TX_SIZE, or a lease of 64 KiB).
constexpr unsigned kMaxTxFrags = 16;
/// rx buffers are posted again once this many are free (and at the end of every poll pass):
/// one req_prod update, fence and notify check per batch instead of per small packet.
constexpr unsigned kRepostBatch = 16;
/// take_tx_responses() keeps at most this many (the oldest half goes when it is full).
constexpr std::size_t kTxLogMax = 4096;

class Category : public std::error_category {
public:
    const char* name() const noexcept override { return "hv.netfront"; }
    std::string message(int c) const override {
        switch (static_cast<Errc>(c)) {
            case Errc::not_connected: return "vif not connected";
            case Errc::busy: return "tx ring full";
            case Errc::bad_packet: return "packet cannot be sent";
            case Errc::backend_protocol: return "backend protocol error";
            case Errc::device_gone: return "vif removed";
            case Errc::timed_out: return "timed out";
            case Errc::not_supported: return "not offered by the backend";
            case Errc::refused: return "refused by the backend";
        }
        return "unknown netfront error";
    }
};

bool flag(xs::Client& xs, const std::string& path) {
    auto v = xenbus::read_uint(xs, path, UINT32_MAX);
    return v && *v != 0;
}

}  // namespace

const std::error_category& category() noexcept {
    static const Category c;
    return c;
}
std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), category()}; }

struct Queue {
    std::byte* tx_mem = nullptr;
    std::byte* rx_mem = nullptr;
    GrantRef tx_ref{0}, rx_ref{0};
    TxFront tx;
    RxFront rx;
    hvmin::EventChannelBinding ev_tx;
    hvmin::EventChannelBinding ev_rx;  // split only
    std::byte* tx_pages = nullptr;      // kRingSize pages, granted read-only
    std::byte* rx_pages = nullptr;      // kRingSize pages, granted writable
    std::vector<GrantRef> tx_grefs, rx_grefs;
    std::vector<std::uint16_t> tx_free;  // free tx page ids
    std::vector<std::uint16_t> lent;     // tx page ids lent by tx_pages(), in frame order
    std::vector<iovec> lent_iov;         // their pages
    std::vector<std::uint8_t> tx_busy;   // per id: 1 while its request is outstanding
    std::vector<rings::netif_rx_response> rx_pending;  // copies, a packet may be incomplete
    int mcast_id = -1;                   // the tx id of a multicast request awaiting its answer
    std::int16_t mcast_status = 0;       // its answer, once mcast_id went back to -1
};

struct Device::Impl {
    Impl(hvmin::Services& h, xs::Client& x) : hv(h), xs(x) {}
    hvmin::Services& hv;
    xs::Client& xs;
    Options opt;
    std::uint32_t devid = 0;
    std::string fdir, bdir, token;
    DomId backend{0};
    Phase phase = Phase::waiting;
    bool split = false;
    bool pool = false;  // feature-hvkit-persistent-pool negotiated
    bool mcast = false;          // the backend offers feature-multicast-control
    bool mcast_dynamic = false;  // ... and feature-dynamic-multicast-control
    bool mcast_on = false;       // request-multicast-control as written
    bool xdp = false;            // the backend offers feature-xdp-headroom
    // The control ring (Options::ctrl_ring and feature-ctrl-ring): its page, a data page
    // granted read-only (keys, mapping tables), their grants and the channel.
    struct Ctrl {
        std::byte* ring_mem = nullptr;
        std::byte* data = nullptr;
        GrantRef ring_ref{0}, data_ref{0};
        CtrlFront ring;
        hvmin::EventChannelBinding ev;
        std::uint16_t next_id = 0;
    };
    std::optional<Ctrl> ctrl;
    TxOffloads tx_off;  // what the backend takes (setup())
    bool set_up = false;
    bool rx_hold = false;
    std::optional<std::uint32_t> rx_gref_override;  // test hook: a hostile frontend's rx grefs
    hv::SpinPolicy spin;
    Counters counters;
    /// take_tx_responses(): a ring of the last kTxLogMax responses; tx_log_n counts every one
    /// ever logged, tx_log_taken those handed out.
    std::vector<rings::netif_tx_response> tx_log = std::vector<rings::netif_tx_response>(kTxLogMax);
    std::uint64_t tx_log_n = 0, tx_log_taken = 0;
    std::vector<std::byte> rx_scratch;  // a multi-slot packet, made contiguous for its view
    std::array<iovec, kMaxRxSlots + 2> rx_parts{};  // the lent packet's data slots
    std::vector<xs::ScopedWatch> watches;
    std::vector<Queue> queues;

    Result<void> setup();
    void teardown() noexcept;
    void die(const char* why) {
        HV_LOG_RL(warn, "netfront %s: %s", fdir.c_str(), why);
        teardown();
        phase = Phase::dead;
        (void)xenbus::switch_state(xs, fdir, XenbusState::XenbusStateClosing);
    }
    Result<void> on_state_change();
    Result<void> send(unsigned q, std::span<const std::byte> frame, const Offload& off);
    Result<std::size_t> send_burst(unsigned q, std::span<const std::span<const std::byte>> frames);
    /// Ring slots and pages a frame takes.
    struct FrameShape {
        unsigned frags = 0;  ///< pages (data slots)
        unsigned slots = 0;  ///< ring slots: the pages and a GSO extra
    };
    /// send()'s checks of a frame of `len` bytes with `off`. Errors: bad_packet.
    Result<FrameShape> check_frame(std::size_t len, const Offload& off) const;
    /// True when `q` has the ring slots and free pages `f` needs (tx responses taken first
    /// if not). False also when that found a broken ring (phase is no longer connected).
    bool room(Queue& q, const FrameShape& f);
    /// Writes one frame's slots (no push). Errors: bad_packet, busy.
    Result<void> put_frame(Queue& q, std::span<const std::byte> frame, const Offload& off);
    /// Writes the slots of a frame of `len` bytes already in the pages `ids` (taken off the
    /// free list; given back on failure), completing a checksum the backend does not take.
    /// No push. Room was checked. Errors: bad_packet.
    Result<void> put_pages(Queue& q, std::span<const std::uint16_t> ids, std::size_t len,
                           const Offload& off);
    Result<std::span<const iovec>> tx_pages(unsigned q, std::size_t max_bytes);
    Result<void> send_pages(unsigned q, std::size_t len, const Offload& off);
    /// Gives the pages lent by tx_pages() back to the free list.
    void end_lease(Queue& q) noexcept;
    std::size_t poll(Device::PacketFn fn, void* ctx, Device::Arm arm);
    bool arm() noexcept;
    bool tx_responses(Queue& q);
    /// mcast_add/mcast_del: one request with an MCAST_ADD/DEL extra on queue 0, answered.
    Result<void> mcast_request(std::uint8_t type, const Device::MacAddr& addr,
                               std::chrono::milliseconds timeout);
    std::size_t rx_packets(Queue& q, unsigned qi, Device::PacketFn fn, void* ctx);
    /// Posts rx requests for every free page but those of the last `pending` responses taken.
    void repost(Queue& q, unsigned pending);
    void kick_tx(Queue& q) {
        ++counters.tx_kicks;
        (void)q.ev_tx.notify();
    }
    void kick_rx(Queue& q) {
        ++counters.rx_kicks;
        (void)(split ? q.ev_rx.notify() : q.ev_tx.notify());
    }
};

Result<void> Device::Impl::setup() {
    if (!flag(xs, bdir + "/feature-rx-copy")) {
        return fail(make_error_code(Errc::backend_protocol));
    }
    split = opt.split && flag(xs, bdir + "/feature-split-event-channels");
    pool = opt.persistent_pool && flag(xs, bdir + "/feature-hvkit-persistent-pool");
    // SPEC: netif.h "Offload"; Linux xennet_fix_features(): the backend's keys say what it
    // takes from us. feature-no-csum-offload absent = IPv4 partial checksums taken;
    // feature-ipv6-csum-offload absent = not taken; TSO needs sg and its checksum offload.
    mcast = flag(xs, bdir + "/feature-multicast-control");
    mcast_dynamic = mcast && flag(xs, bdir + "/feature-dynamic-multicast-control");
    mcast_on = mcast && opt.multicast_control;
    xdp = flag(xs, bdir + "/feature-xdp-headroom");
    tx_off.sg = opt.sg && flag(xs, bdir + "/feature-sg");
    tx_off.csum4 = !flag(xs, bdir + "/feature-no-csum-offload");
    tx_off.csum6 = flag(xs, bdir + "/feature-ipv6-csum-offload");
    tx_off.gso_tcpv4 = tx_off.sg && tx_off.csum4 && flag(xs, bdir + "/feature-gso-tcpv4");
    tx_off.gso_tcpv6 = tx_off.sg && tx_off.csum6 && flag(xs, bdir + "/feature-gso-tcpv6");
    unsigned nq = 1;
    if (auto m = xenbus::read_uint(xs, bdir + "/multi-queue-max-queues", 1024); m && *m > 0) {
        nq = std::min<unsigned>(std::max(1U, opt.max_queues), static_cast<unsigned>(*m));
    }
    queues.clear();
    queues.resize(nq);
    auto& mem = hv.memory();
    auto& gnt = hv.grants();
    for (auto& q : queues) {
        // Rings alone in their extents (an isolated backend may map only those).
        auto txf = mem.alloc_extent(1);
        auto rxf = mem.alloc_extent(1);
        auto data = mem.alloc_extent(2 * kRingSize);
        if (!txf || !rxf || !data) {
            return fail(!txf ? txf.error() : (!rxf ? rxf.error() : data.error()));
        }
        q.tx_mem = *mem.frame(*txf);
        q.rx_mem = *mem.frame(*rxf);
        auto tx = TxFront::init({q.tx_mem, XEN_PAGE_SIZE});
        auto rx = RxFront::init({q.rx_mem, XEN_PAGE_SIZE});
        if (!tx || !rx) {
            return fail(!tx ? tx.error() : rx.error());
        }
        q.tx = *tx;
        q.rx = *rx;
        auto tref = gnt.grant_access(backend, *txf, false);
        auto rref = gnt.grant_access(backend, *rxf, false);
        if (!tref || !rref) {
            return fail(!tref ? tref.error() : rref.error());
        }
        q.tx_ref = *tref;
        q.rx_ref = *rref;
        auto base = mem.frame(*data);
        if (!base) {
            return fail(base.error());
        }
        q.tx_pages = *base;
        q.rx_pages = *base + std::size_t{kRingSize} * XEN_PAGE_SIZE;
        for (unsigned i = 0; i < 2 * kRingSize; ++i) {
            auto p = mem.frame(*data + i);
            if (!p || *p != *base + std::size_t{i} * XEN_PAGE_SIZE) {
                return fail(std::make_error_code(std::errc::bad_address));
            }
            auto g = gnt.grant_access(backend, *data + i, i < kRingSize);
            if (!g) {
                return fail(g.error());
            }
            (i < kRingSize ? q.tx_grefs : q.rx_grefs).push_back(*g);
        }
        q.tx_busy.assign(kRingSize, 0);
        q.tx_free.clear();
        q.tx_free.reserve(kRingSize);
        for (unsigned i = kRingSize; i > 0; --i) {
            q.tx_free.push_back(static_cast<std::uint16_t>(i - 1));
        }
        auto e1 = hv.evtchn().alloc_unbound(backend);
        if (!e1) {
            return fail(e1.error());
        }
        q.ev_tx = std::move(*e1);
        if (split) {
            auto e2 = hv.evtchn().alloc_unbound(backend);
            if (!e2) {
                return fail(e2.error());
            }
            q.ev_rx = std::move(*e2);
        }
        // Post every rx buffer: request at ring index i names page i & (size-1), so the
        // response in that index (sharp edge 12) is found in that page.
        for (unsigned i = 0; i < kRingSize; ++i) {
            auto& r = q.rx.next_request();
            r.id = static_cast<std::uint16_t>(i);
            r.gref = q.rx_grefs[i].get();
            q.rx.commit_request();
        }
        q.rx.publish_requests();
    }
    ctrl.reset();
    if (opt.ctrl_ring && flag(xs, bdir + "/feature-ctrl-ring")) {
        auto f = mem.alloc_extent(2);
        if (!f) {
            return fail(f.error());
        }
        Ctrl c;
        c.ring_mem = *mem.frame(*f);
        c.data = *mem.frame(*f + 1);
        auto r = CtrlFront::init({c.ring_mem, XEN_PAGE_SIZE});
        if (!r) {
            return fail(r.error());
        }
        c.ring = *r;
        auto rref = gnt.grant_access(backend, *f, false);
        if (!rref) {
            return fail(rref.error());
        }
        c.ring_ref = *rref;
        auto dref = gnt.grant_access(backend, *f + 1, true);
        if (!dref) {
            (void)gnt.end_access(c.ring_ref);
            return fail(dref.error());
        }
        c.data_ref = *dref;
        auto e = hv.evtchn().alloc_unbound(backend);
        if (!e) {
            (void)gnt.end_access(c.ring_ref);
            (void)gnt.end_access(c.data_ref);
            return fail(e.error());
        }
        c.ev = std::move(*e);
        ctrl.emplace(std::move(c));
    }
    auto w = xs.transaction([&](xs::TxId tx) -> Result<void> {
        if (ctrl) {
            HV_TRY(xs.write(fdir + "/ctrl-ring-ref", std::to_string(ctrl->ring_ref.get()), tx));
            HV_TRY(xs.write(fdir + "/event-channel-ctrl", std::to_string(ctrl->ev.port().get()), tx));
        }
        for (unsigned i = 0; i < queues.size(); ++i) {
            const Queue& q = queues[i];
            const std::string d = queues.size() == 1 ? fdir : fdir + "/queue-" + std::to_string(i);
            HV_TRY(xs.write(d + "/tx-ring-ref", std::to_string(q.tx_ref.get()), tx));
            HV_TRY(xs.write(d + "/rx-ring-ref", std::to_string(q.rx_ref.get()), tx));
            if (split) {
                HV_TRY(xs.write(d + "/event-channel-tx", std::to_string(q.ev_tx.port().get()), tx));
                HV_TRY(xs.write(d + "/event-channel-rx", std::to_string(q.ev_rx.port().get()), tx));
            } else {
                HV_TRY(xs.write(d + "/event-channel", std::to_string(q.ev_tx.port().get()), tx));
            }
        }
        if (queues.size() > 1) {
            HV_TRY(xs.write(fdir + "/multi-queue-num-queues", std::to_string(queues.size()), tx));
        }
        HV_TRY(xs.write(fdir + "/request-rx-copy", "1", tx));
        HV_TRY(xs.write(fdir + "/feature-rx-notify", opt.rx_notify ? "1" : "0", tx));
        HV_TRY(xs.write(fdir + "/feature-sg", opt.sg ? "1" : "0", tx));
        HV_TRY(xs.write(fdir + "/feature-gso-tcpv4", opt.gso_tcpv4 ? "1" : "0", tx));
        HV_TRY(xs.write(fdir + "/feature-gso-tcpv6", opt.gso_tcpv6 ? "1" : "0", tx));
        HV_TRY(xs.write(fdir + "/feature-no-csum-offload", opt.csum ? "0" : "1", tx));
        HV_TRY(xs.write(fdir + "/feature-ipv6-csum-offload", opt.csum ? "1" : "0", tx));
        // Our buffer pages are a fixed pool granted until teardown (always so; the key lets a
        // mapping backend rely on it).
        HV_TRY(xs.write(fdir + "/feature-hvkit-persistent-pool", pool ? "1" : "0", tx));
        if (mcast) {
            HV_TRY(xs.write(fdir + "/request-multicast-control", mcast_on ? "1" : "0", tx));
        }
        if (xdp && opt.xdp_headroom != 0) {
            HV_TRY(xs.write(fdir + "/xdp-headroom", std::to_string(opt.xdp_headroom), tx));
        }
        return {};
    });
    if (!w) {
        return fail(w.error());
    }
    set_up = true;
    // SPEC: netfront skips Initialised and goes straight to Connected (sharp edge 16).
    HV_TRY(xenbus::switch_state(xs, fdir, XenbusState::XenbusStateConnected));
    return {};
}

void Device::Impl::teardown() noexcept {
    auto& gnt = hv.grants();
    if (ctrl) {
        ctrl->ev = {};
        (void)gnt.end_access(ctrl->ring_ref);
        (void)gnt.end_access(ctrl->data_ref);
        ctrl.reset();
    }
    for (auto& q : queues) {
        q.ev_tx = {};
        q.ev_rx = {};
        for (auto g : q.tx_grefs) {
            (void)gnt.end_access(g);
        }
        for (auto g : q.rx_grefs) {
            (void)gnt.end_access(g);
        }
        if (q.tx_mem != nullptr) {
            (void)gnt.end_access(q.tx_ref);
            (void)gnt.end_access(q.rx_ref);
        }
    }
    queues.clear();
    set_up = false;
}

Result<void> Device::Impl::on_state_change() {
    if (phase == Phase::dead) {
        return fail(make_error_code(Errc::device_gone));
    }
    auto state = xenbus::backend_state_unless_removed(xs, fdir, bdir);
    if (!state) {
        return fail(state.error());
    }
    if (!*state) {
        teardown();
        phase = Phase::dead;
        return fail(make_error_code(Errc::device_gone));
    }
    const XenbusState bs = **state;
    switch (bs) {
        case XenbusState::XenbusStateInitWait:
            if (!set_up) {
                if (auto r = setup(); !r) {
                    HV_WARN("netfront %s: connect: %s", fdir.c_str(), r.error().message().c_str());
                    die("connect failed");
                    return fail(r.error());
                }
            }
            break;
        case XenbusState::XenbusStateConnected:
            if (set_up) {
                phase = Phase::connected;
            }
            break;
        case XenbusState::XenbusStateReconfigured:
            // The backend took a new xdp-headroom (set_xdp_headroom): back to Connected.
            if (set_up && xenbus::read_state(xs, fdir).value_or(XenbusState::XenbusStateUnknown) ==
                              XenbusState::XenbusStateReconfiguring) {
                HV_TRY(xenbus::switch_state(xs, fdir, XenbusState::XenbusStateConnected));
            }
            break;
        case XenbusState::XenbusStateClosing:
        case XenbusState::XenbusStateClosed:
        case XenbusState::XenbusStateUnknown:
            if (set_up || phase == Phase::connected) {
                teardown();
            }
            phase = bs == XenbusState::XenbusStateUnknown ? Phase::dead : Phase::closed;
            (void)xenbus::switch_state(xs, fdir, bs == XenbusState::XenbusStateClosing
                                                     ? XenbusState::XenbusStateClosed
                                                     : XenbusState::XenbusStateInitialising);
            break;
        default:
            break;
    }
    return {};
}

Result<void> Device::Impl::send(unsigned qi, std::span<const std::byte> frame, const Offload& off) {
    if (phase != Phase::connected || qi >= queues.size()) {
        return fail(make_error_code(Errc::not_connected));
    }
    Queue& q = queues[qi];
    HV_TRY(put_frame(q, frame, off));  // on failure nothing of this frame was written
    if (q.tx.push_requests()) {
        kick_tx(q);
    }
    return {};
}

Result<std::size_t> Device::Impl::send_burst(unsigned qi,
                                             std::span<const std::span<const std::byte>> frames) {
    if (phase != Phase::connected || qi >= queues.size()) {
        return fail(make_error_code(Errc::not_connected));
    }
    Queue& q = queues[qi];
    std::size_t n = 0;
    // Ring slots and pages known free: room() (which takes tx responses when short) is asked
    // when they run out, not per frame; a plain frame takes one of each.
    unsigned avail = 0;
    for (; n < frames.size(); ++n) {
        const std::span<const std::byte> f = frames[n];
        if (f.size() < 14 || f.size() > XEN_PAGE_SIZE) {
            avail = 0;  // put_frame() takes what the frame needs
            if (!put_frame(q, f, {})) {  // several pages, or refused (it is the first not queued)
                break;
            }
            continue;
        }
        // A plain one-page frame: what put_frame() makes of it (check_frame passes it: one
        // slot, one page; put_pages without offload: no flags), without the general steps.
        if (avail == 0) {
            if (!room(q, FrameShape{1, 1})) {
                break;  // busy, or the device died (below)
            }
            avail = std::min<unsigned>(q.tx.free_requests(),
                                       static_cast<unsigned>(q.tx_free.size()));
        }
        --avail;
        const std::uint16_t id = q.tx_free.back();
        q.tx_free.pop_back();
        q.tx_busy[id] = 1;
        std::memcpy(q.tx_pages + std::size_t{id} * XEN_PAGE_SIZE, f.data(), f.size());
        rings::netif_tx_request& r = q.tx.next_request();
        r.gref = q.tx_grefs[id].get();
        r.offset = 0;
        r.flags = 0;
        r.id = id;
        r.size = static_cast<std::uint16_t>(f.size());
        q.tx.commit_request();
    }
    if (phase != Phase::connected) {
        return fail(make_error_code(Errc::not_connected));  // died meanwhile: `q` is gone
    }
    // ORDER: one release store of req_prod and one fence for the whole burst (push_requests).
    if (n > 0 && q.tx.push_requests()) {
        kick_tx(q);
    }
    return n;
}

Result<Device::Impl::FrameShape> Device::Impl::check_frame(std::size_t len,
                                                          const Offload& off) const {
    const bool gso = off.gso_type != rings::XEN_NETIF_GSO_TYPE_NONE;
    const bool gso_offered = off.gso_type == rings::XEN_NETIF_GSO_TYPE_TCPV4 ? tx_off.gso_tcpv4
                             : off.gso_type == rings::XEN_NETIF_GSO_TYPE_TCPV6 ? tx_off.gso_tcpv6
                                                                              : false;
    if (len < 14 || len > rings::XEN_NETIF_MAX_TX_SIZE || (!tx_off.sg && len > XEN_PAGE_SIZE) ||
        (gso && (off.gso_size == 0 || !gso_offered))) {
        return fail(make_error_code(Errc::bad_packet));
    }
    FrameShape f;
    f.frags = static_cast<unsigned>((len + XEN_PAGE_SIZE - 1) / XEN_PAGE_SIZE);
    f.slots = f.frags + (gso ? 1U : 0U);
    return f;
}

bool Device::Impl::room(Queue& q, const FrameShape& f) {
    if (q.tx.free_requests() >= f.slots && q.tx_free.size() >= f.frags) {
        return true;
    }
    // tx_responses() fails (and kills the device) only on a broken ring: callers then see
    // phase != connected.
    return tx_responses(q) && q.tx.free_requests() >= f.slots && q.tx_free.size() >= f.frags;
}

Result<void> Device::Impl::put_frame(Queue& q, std::span<const std::byte> frame, const Offload& off) {
    const std::size_t len = frame.size();
    auto checked = check_frame(len, off);
    if (!checked) {
        return fail(checked.error());
    }
    const FrameShape shape = *checked;
    if (!room(q, shape)) {
        return fail(make_error_code(phase == Phase::connected ? Errc::busy : Errc::not_connected));
    }
    std::array<std::uint16_t, kMaxTxFrags> ids{};
    for (unsigned f = 0; f < shape.frags; ++f) {
        ids[f] = q.tx_free.back();
        q.tx_free.pop_back();
        const std::size_t at = std::size_t{f} * XEN_PAGE_SIZE;
        std::memcpy(q.tx_pages + std::size_t{ids[f]} * XEN_PAGE_SIZE, frame.data() + at,
                    std::min<std::size_t>(XEN_PAGE_SIZE, len - at));
    }
    return put_pages(q, {ids.data(), shape.frags}, len, off);
}

Result<void> Device::Impl::put_pages(Queue& q, std::span<const std::uint16_t> ids, std::size_t len,
                                     const Offload& off) {
    const bool gso = off.gso_type != rings::XEN_NETIF_GSO_TYPE_NONE;
    auto page = [&](std::size_t f) { return q.tx_pages + std::size_t{ids[f]} * XEN_PAGE_SIZE; };
    // A partial checksum the backend does not take for this IP version is completed here
    // (Linux: skb_checksum_help once the feature is off): its value goes into the page.
    // The headers are looked for in the first page (Linux pulls at most 256 bytes of IPv6
    // headers for its checksum setup).
    bool csum_blank = off.csum_blank;
    if (csum_blank && !gso && !(tx_off.csum4 && tx_off.csum6)) {
        const std::span<const std::uint8_t> head(reinterpret_cast<const std::uint8_t*>(page(0)),
                                                 std::min<std::size_t>(len, XEN_PAGE_SIZE));
        const auto l4 = rings::netif_find_l4(head);
        const std::size_t at = l4 ? rings::netif_l4_csum_offset(*l4, head.size()) : 0;
        if (at == 0) {
            for (auto id : ids) {
                q.tx_free.push_back(id);
            }
            return fail(make_error_code(Errc::bad_packet));
        }
        if (!(l4->ipv6 ? tx_off.csum6 : tx_off.csum4)) {
            // Sum from csum_start to the end, page by page: csum_start is even and every page
            // but the last is whole, so each piece starts on an even offset of the frame.
            std::uint32_t sum = 0;
            for (std::size_t f = 0; f < ids.size(); ++f) {
                const std::size_t from = f == 0 ? l4->off : 0;
                const std::size_t to = std::min<std::size_t>(XEN_PAGE_SIZE, len - f * XEN_PAGE_SIZE);
                sum = rings::netif_sum16(
                    {reinterpret_cast<const std::uint8_t*>(page(f)) + from, to - from}, sum);
            }
            const std::uint16_t v = rings::netif_fold_csum(sum);
            // The field's offset is even and within the first page (checked above).
            page(0)[l4->off + at] = static_cast<std::byte>(v >> 8);
            page(0)[l4->off + at + 1] = static_cast<std::byte>(v & 0xff);
            csum_blank = false;
        }
    }
    for (std::size_t f = 0; f < ids.size(); ++f) {
        const std::uint16_t id = ids[f];
        q.tx_busy[id] = 1;
        const std::size_t n = std::min<std::size_t>(XEN_PAGE_SIZE, len - f * XEN_PAGE_SIZE);
        rings::netif_tx_request r{};
        r.gref = q.tx_grefs[id].get();
        r.offset = 0;
        r.id = id;
        r.size = static_cast<std::uint16_t>(f == 0 ? len : n);
        if (f == 0) {
            r.flags = static_cast<std::uint16_t>(
                (csum_blank ? rings::NETTXF_csum_blank : 0) |
                (off.data_validated || off.csum_blank ? rings::NETTXF_data_validated : 0) |
                (gso ? rings::NETTXF_extra_info : 0));
        }
        if (f + 1 < ids.size()) {
            r.flags = static_cast<std::uint16_t>(r.flags | rings::NETTXF_more_data);
        }
        q.tx.put_request(r);
        if (f == 0 && gso) {
            rings::netif_extra_info x{};
            x.type = rings::XEN_NETIF_EXTRA_TYPE_GSO;
            x.u.gso.size = off.gso_size;
            x.u.gso.type = off.gso_type;
            std::memcpy(static_cast<void*>(&q.tx.next_request()), &x, sizeof x);
            q.tx.commit_request();
        }
    }
    return {};
}

Result<std::span<const iovec>> Device::Impl::tx_pages(unsigned qi, std::size_t max_bytes) {
    if (phase != Phase::connected || qi >= queues.size()) {
        return fail(make_error_code(Errc::not_connected));
    }
    if (max_bytes == 0 || max_bytes > kMaxTxFrags * XEN_PAGE_SIZE) {
        return fail(std::make_error_code(std::errc::invalid_argument));
    }
    Queue& q = queues[qi];
    const auto frags = static_cast<unsigned>((max_bytes + XEN_PAGE_SIZE - 1) / XEN_PAGE_SIZE);
    if (q.lent.size() >= frags) {
        return std::span<const iovec>(q.lent_iov.data(), q.lent_iov.size());
    }
    end_lease(q);
    if (!room(q, FrameShape{frags, frags + 1})) {
        return fail(make_error_code(phase == Phase::connected ? Errc::busy : Errc::not_connected));
    }
    for (unsigned f = 0; f < frags; ++f) {
        const std::uint16_t id = q.tx_free.back();
        q.tx_free.pop_back();
        q.lent.push_back(id);
        q.lent_iov.push_back({q.tx_pages + std::size_t{id} * XEN_PAGE_SIZE, XEN_PAGE_SIZE});
    }
    return std::span<const iovec>(q.lent_iov.data(), q.lent_iov.size());
}

void Device::Impl::end_lease(Queue& q) noexcept {
    for (auto id : q.lent) {
        q.tx_free.push_back(id);
    }
    q.lent.clear();
    q.lent_iov.clear();
}

Result<void> Device::Impl::send_pages(unsigned qi, std::size_t len, const Offload& off) {
    if (phase != Phase::connected || qi >= queues.size()) {
        return fail(make_error_code(Errc::not_connected));
    }
    Queue& q = queues[qi];
    if (q.lent.empty() || len > q.lent.size() * XEN_PAGE_SIZE) {
        return fail(std::make_error_code(std::errc::invalid_argument));
    }
    auto shape = check_frame(len, off);
    if (!shape) {
        end_lease(q);
        return fail(shape.error());
    }
    if (q.tx.free_requests() < shape->slots && !room(q, *shape)) {
        return fail(make_error_code(phase == Phase::connected ? Errc::busy : Errc::not_connected));
    }
    std::array<std::uint16_t, kMaxTxFrags> ids{};
    std::copy_n(q.lent.begin(), shape->frags, ids.begin());
    q.lent.erase(q.lent.begin(), q.lent.begin() + shape->frags);
    end_lease(q);  // the pages the frame did not need
    HV_TRY(put_pages(q, {ids.data(), shape->frags}, len, off));
    if (q.tx.push_requests()) {
        kick_tx(q);
    }
    return {};
}

bool Device::Impl::tx_responses(Queue& q) {
    auto n = q.tx.unconsumed_responses();
    if (!n) {
        die("tx ring: impossible rsp_prod");
        return false;
    }
    std::array<rings::netif_tx_response, 64> rs;  // copied out in batches (each slot once)
    for (unsigned got; (got = q.tx.take_responses(rs)) > 0;) {
        for (unsigned i = 0; i < got; ++i) {
            const rings::netif_tx_response r = rs[i];
            tx_log[tx_log_n++ % kTxLogMax] = r;
            if (r.status == rings::NETIF_RSP_NULL) {
                continue;  // an extra-info slot
            }
            // GUEST-like: the backend is not trusted with our ids either.
            if (r.id >= kRingSize || q.tx_busy[r.id] == 0) {
                die("tx response for an id not outstanding");
                return false;
            }
            q.tx_busy[r.id] = 0;
            q.tx_free.push_back(r.id);
            if (r.id == q.mcast_id) {
                q.mcast_id = -1;  // a multicast request's answer: mcast_request() reads it
                q.mcast_status = r.status;
                continue;
            }
            if (r.status == rings::NETIF_RSP_OKAY) {
                ++counters.tx_packets;
            } else {
                ++counters.tx_errors;
            }
        }
    }
    return true;
}

Result<void> Device::Impl::mcast_request(std::uint8_t type, const Device::MacAddr& addr,
                                         std::chrono::milliseconds timeout) {
    if (phase != Phase::connected || queues.empty()) {
        return fail(make_error_code(Errc::not_connected));
    }
    if (!mcast) {
        return fail(make_error_code(Errc::not_supported));
    }
    Queue& q = queues[0];
    if ((q.tx.free_requests() < 2 || q.tx_free.empty()) && !tx_responses(q)) {
        return fail(make_error_code(Errc::backend_protocol));
    }
    if (q.tx.free_requests() < 2 || q.tx_free.empty() || q.mcast_id >= 0) {
        return fail(make_error_code(Errc::busy));
    }
    // SPEC: netif.h "multicast control": a dummy request whose only content is the extra
    // (Linux netback answers it before looking at size or grant; the id is a tx page's, so
    // the answer frees it as any other).
    const std::uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    q.tx_busy[id] = 1;
    q.mcast_id = id;
    rings::netif_tx_request first{};
    first.gref = q.tx_grefs[id].get();
    first.flags = rings::NETTXF_extra_info;
    first.id = id;
    rings::netif_extra_info x{};
    x.type = type;
    std::memcpy(x.u.mcast.addr, addr.data(), addr.size());
    rings::netif_tx_request second{};
    std::memcpy(static_cast<void*>(&second), &x, sizeof x);
    q.tx.put_request(first);
    q.tx.put_request(second);
    q.tx.publish_requests();
    kick_tx(q);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (!tx_responses(q)) {
            return fail(make_error_code(Errc::backend_protocol));
        }
        if (q.mcast_id < 0) {
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            q.mcast_id = -1;  // a late answer is then counted as a packet's
            return fail(make_error_code(Errc::timed_out));
        }
        // A rare control request: a short sleep rather than taking the channel's events
        // (they stay for the caller's receive()).
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (q.mcast_status != rings::NETIF_RSP_OKAY) {
        return fail(make_error_code(Errc::refused));
    }
    return {};
}

bool locate_csum(std::span<const std::byte> frame, Offload& off) noexcept {
    const std::span<const std::uint8_t> f(reinterpret_cast<const std::uint8_t*>(frame.data()),
                                          frame.size());
    const auto l4 = rings::netif_find_l4(f);
    if (!l4 || l4->off > 0xffff) {
        return false;
    }
    const std::size_t at = rings::netif_l4_csum_offset(*l4, f.size());
    if (at == 0) {
        return false;
    }
    if (off.gso_type != rings::XEN_NETIF_GSO_TYPE_NONE &&
        (l4->proto != rings::netif_ipproto_tcp ||
         l4->ipv6 != (off.gso_type == rings::XEN_NETIF_GSO_TYPE_TCPV6))) {
        return false;
    }
    off.csum_start = static_cast<std::uint16_t>(l4->off);
    off.csum_offset = static_cast<std::uint16_t>(at);
    return true;
}

std::size_t Device::Impl::rx_packets(Queue& q, unsigned qi, Device::PacketFn fn, void* ctx) {
    auto n = q.rx.unconsumed_responses();
    if (!n) {
        die("rx ring: impossible rsp_prod");
        return 0;
    }
    // The response at index i belongs to page i & (size-1); remember indices with the copies.
    const std::uint32_t first_idx = q.rx.rsp_cons() - static_cast<std::uint32_t>(q.rx_pending.size());
    while (auto r = q.rx.take_response()) {
        q.rx_pending.push_back(*r);
    }
    std::size_t got = 0;
    std::size_t pos = 0;
    while (pos < q.rx_pending.size()) {
        // Find the packet's extent: slot 0, its extras, its data slots.
        std::size_t i = pos;
        const auto r0 = q.rx_pending[i++];
        PacketView p;
        p.queue = qi;
        bool bad = false;
        bool complete = true;
        if ((r0.flags & rings::NETRXF_extra_info) != 0) {
            bool more = true;
            while (more) {
                if (i >= q.rx_pending.size()) {
                    complete = false;
                    break;
                }
                rings::netif_extra_info x{};
                std::memcpy(&x, &q.rx_pending[i++], sizeof x);
                more = (x.flags & rings::XEN_NETIF_EXTRA_FLAG_MORE) != 0;
                if (x.type == rings::XEN_NETIF_EXTRA_TYPE_GSO) {
                    p.offload.gso_type = x.u.gso.type;
                    p.offload.gso_size = x.u.gso.size;
                } else if (x.type == rings::XEN_NETIF_EXTRA_TYPE_HASH) {
                    p.offload.has_hash = true;
                    p.offload.hash_type = x.u.hash.type;
                    p.offload.hash_algorithm = x.u.hash.algorithm;
                    p.offload.hash_value = 0;
                    for (unsigned b = 0; b < 4; ++b) {
                        p.offload.hash_value |= std::uint32_t{x.u.hash.value[b]} << (8 * b);
                    }
                } else if (x.type == rings::XEN_NETIF_EXTRA_TYPE_NONE ||
                           x.type >= rings::XEN_NETIF_EXTRA_TYPE_MAX) {
                    bad = true;
                }
                if (i - pos > kMaxRxSlots) {
                    bad = true;
                    more = false;
                }
            }
        }
        // Data slots: slot 0 then, while the previous data slot had more_data, the next ones.
        // At most kMaxRxSlots + 1 entries (the loop stops past the limit): no heap per packet.
        std::array<std::size_t, kMaxRxSlots + 2> slot_at{};
        std::size_t nslots = 0;
        slot_at[nslots++] = pos;
        bool more = (r0.flags & rings::NETRXF_more_data) != 0;
        while (complete && more) {
            if (i >= q.rx_pending.size()) {
                complete = false;
                break;
            }
            if (nslots == slot_at.size()) {
                bad = true;
                break;
            }
            slot_at[nslots++] = i;
            more = (q.rx_pending[i++].flags & rings::NETRXF_more_data) != 0;
            if (i - pos > kMaxRxSlots) {
                bad = true;
                break;
            }
        }
        if (!complete) {
            if (q.rx_pending.size() - pos >= kMaxRxSlots) {
                die("rx packet longer than the slot limit");
                return got;
            }
            break;  // wait for the rest
        }
        // The data: one slot is lent in place, several are joined in the scratch buffer (its
        // capacity kept, so no allocation once it has held the largest packet) unless the
        // caller takes them as parts (Options::lend_slots).
        const std::span<const std::size_t> data_slots(slot_at.data(), nslots);
        for (std::size_t k = 0; !bad && k < nslots; ++k) {
            const auto& r = q.rx_pending[data_slots[k]];
            if (r.status < 0 ||
                std::size_t{r.offset} + static_cast<std::size_t>(r.status) > XEN_PAGE_SIZE) {
                bad = true;
                break;
            }
            const std::uint32_t idx = first_idx + static_cast<std::uint32_t>(data_slots[k]);
            std::byte* page = q.rx_pages + std::size_t{idx & (kRingSize - 1)} * XEN_PAGE_SIZE;
            rx_parts[k] = {page + r.offset, static_cast<std::size_t>(r.status)};
        }
        auto join = [&] {
            rx_scratch.clear();
            for (std::size_t k = 0; k < nslots; ++k) {
                const auto* b = static_cast<const std::byte*>(rx_parts[k].iov_base);
                rx_scratch.insert(rx_scratch.end(), b, b + rx_parts[k].iov_len);
            }
            return std::span<const std::byte>(rx_scratch);
        };
        if (!bad) {
            p.parts = {rx_parts.data(), nslots};
            if (nslots == 1) {
                p.data = {static_cast<const std::byte*>(rx_parts[0].iov_base), rx_parts[0].iov_len};
            } else if (!opt.lend_slots) {
                p.data = join();
            }
        }
        p.offload.csum_blank = (r0.flags & rings::NETRXF_csum_blank) != 0;
        p.offload.data_validated = (r0.flags & rings::NETRXF_data_validated) != 0;
        if (!bad && (p.offload.csum_blank || p.offload.gso_type != rings::XEN_NETIF_GSO_TYPE_NONE)) {
            // The headers: the first slot holds them whole but for freak packets, which are
            // joined to be looked at (the same answer as for the whole packet either way).
            const std::span<const std::byte> first(
                static_cast<const std::byte*>(rx_parts[0].iov_base), rx_parts[0].iov_len);
            bad = !locate_csum(p.data.empty() ? first : p.data, p.offload);
            if (bad && p.data.empty()) {
                bad = !locate_csum(join(), p.offload);
            }
        }
        if (bad) {
            ++counters.rx_errors;
        } else {
            ++counters.rx_packets;
            fn(ctx, p);  // its slots are re-posted only after the callback
            ++got;
        }
        pos = i;
        // Its pages are free again: post them as soon as kRepostBatch slots are free, so the
        // backend can fill them while the callback hands the next packets on (hv-guest's tap
        // write runs the guest's whole stack per packet; holding them until the end of a batch
        // of 64 KiB packets left the ring empty and the backend holding frames: 4-stream
        // iperf3 fell to 0.4 Gbit/s). A 64 KiB packet frees more than a batch, so it is
        // posted at once; small ones share one req_prod update and fence per batch.
        const auto pending = static_cast<unsigned>(q.rx_pending.size() - pos);
        if (q.rx.free_requests() >= pending + kRepostBatch) {
            repost(q, pending);
        }
    }
    q.rx_pending.erase(q.rx_pending.begin(), q.rx_pending.begin() + static_cast<std::ptrdiff_t>(pos));
    // End of the pass: everything handed on goes back, so no buffer stays unposted while the
    // caller sleeps or does other work (the backend never waits for the last few of a batch).
    repost(q, static_cast<unsigned>(q.rx_pending.size()));
    return got;
}

void Device::Impl::repost(Queue& q, unsigned pending) {
    // Only slots whose packet was handed on are re-posted: the `pending` responses taken last
    // still hold data in their pages, and request index j names page j & (size-1).
    bool any = false;
    while (!rx_hold && q.rx.free_requests() > pending) {
        const unsigned k = q.rx.req_prod_pvt() & (kRingSize - 1);
        auto& r = q.rx.next_request();
        r.id = static_cast<std::uint16_t>(k);
        r.gref = rx_gref_override ? *rx_gref_override : q.rx_grefs[k].get();
        q.rx.commit_request();
        any = true;
    }
    if (any && q.rx.push_requests() && opt.rx_notify) {
        kick_rx(q);
    }
}

std::size_t Device::Impl::poll(Device::PacketFn fn, void* ctx, Device::Arm mode) {
    const bool arm = mode != Device::Arm::no;
    const bool ack = mode == Device::Arm::yes;
    std::size_t got = 0;
    for (unsigned qi = 0; qi < queues.size() && phase == Phase::connected; ++qi) {
        Queue& q = queues[qi];
        for (int round = 0; round < 64; ++round) {
            if (ack) {
                (void)q.ev_tx.ack();
                if (split) {
                    (void)q.ev_rx.ack();
                }
            }
            if (!tx_responses(q)) {
                return got;
            }
            got += rx_packets(q, qi, fn, ctx);
            if (phase != Phase::connected) {
                return got;
            }
            if (!arm) {
                break;  // a spinning caller comes back; arm() before it sleeps
            }
            auto a = q.tx.final_check_for_responses();
            auto b = q.rx.final_check_for_responses();
            if (!a || !b) {
                die("impossible rsp_prod");
                return got;
            }
            if (!*a && !*b) {
                break;
            }
        }
    }
    return got;
}

bool Device::Impl::arm() noexcept {
    bool more = false;
    for (auto& q : queues) {
        // Stale notifications first: one that comes after the arming below stays readable.
        (void)q.ev_tx.ack();
        if (split) {
            (void)q.ev_rx.ack();
        }
        auto a = q.tx.final_check_for_responses();
        auto b = q.rx.final_check_for_responses();
        if (!a || !b) {
            return true;  // poll() finds the impossible index and fails the device
        }
        more = more || *a || *b;
    }
    return more;
}

// ---- Device ----------------------------------------------------------------------------------

Device::Device(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Device::~Device() {
    if (impl_->phase != Phase::dead) {
        // The backend keeps our pool mapped while connected (revoking a mapped grant fails
        // and would leave it granted): unless it has let go already (Closing, Closed, gone),
        // ask it to close first, as Linux's xennet_remove waits for the backend, bounded.
        auto let_go = [&] {
            auto st = xenbus::read_uint(impl_->xs, impl_->bdir + "/state", 0xff);
            return !st || *st >= static_cast<std::uint64_t>(XenbusState::XenbusStateClosing);
        };
        if (impl_->pool && impl_->set_up && !let_go()) {
            (void)xenbus::switch_state(impl_->xs, impl_->fdir, XenbusState::XenbusStateClosing);
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
            while (!let_go() && std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        }
        impl_->teardown();
        (void)xenbus::switch_state(impl_->xs, impl_->fdir, XenbusState::XenbusStateClosed);
    }
}

Result<std::unique_ptr<Device>> Device::create(hvmin::Services& hv, xs::Client& xs,
                                               std::uint32_t devid, Options o) {
    auto impl = std::make_unique<Impl>(hv, xs);
    impl->opt = o;
    impl->spin = hv::SpinPolicy(o.spin);
    impl->devid = devid;
    impl->fdir = xenbus::frontend_dir(hv.domid(), "vif", devid);
    impl->token = "netfront/" + std::to_string(devid);
    auto b = xs.read(impl->fdir + "/backend");
    auto bid = xenbus::read_uint(xs, impl->fdir + "/backend-id", 0x7FEF);
    if (!b || !bid) {
        return fail(!b ? b.error() : bid.error());
    }
    impl->bdir = *b;
    impl->backend = DomId(static_cast<std::uint16_t>(*bid));
    for (const std::string& p : {impl->fdir + "/state", impl->bdir + "/state"}) {
        auto w = xs.watch_scoped(p, impl->token);
        if (!w) {
            return fail(w.error());
        }
        impl->watches.push_back(std::move(*w));
    }
    return std::unique_ptr<Device>(new Device(std::move(impl)));
}

Result<void> Device::on_state_change() { return impl_->on_state_change(); }

Result<void> Device::wait_connected(
    std::chrono::milliseconds timeout,
    const std::function<void(const std::string&, const std::string&)>& other) {
    return xenbus::wait_phase_connected(*impl_, timeout, make_error_code(Errc::device_gone),
                                        make_error_code(Errc::timed_out), other);
}

Result<void> Device::send(unsigned queue, std::span<const std::byte> frame, const Offload& off) {
    return impl_->send(queue, frame, off);
}

Result<std::span<const iovec>> Device::tx_pages(unsigned queue, std::size_t max_bytes) {
    return impl_->tx_pages(queue, max_bytes);
}

Result<void> Device::send_pages(unsigned queue, std::size_t len, const Offload& off) {
    return impl_->send_pages(queue, len, off);
}

Result<std::size_t> Device::send_burst(unsigned queue,
                                       std::span<const std::span<const std::byte>> frames) {
    return impl_->send_burst(queue, frames);
}

std::size_t Device::poll(PacketFn fn, void* ctx, Arm arm) {
    return impl_->poll(fn, ctx, arm);
}

void Device::ack_ready(std::span<const pollfd> polled) noexcept {
    for (const pollfd& p : polled) {
        if ((p.revents & POLLIN) == 0) {
            continue;
        }
        for (auto& q : impl_->queues) {
            if (q.ev_tx.valid() && p.fd == q.ev_tx.fd()) {
                (void)q.ev_tx.ack();
            } else if (impl_->split && q.ev_rx.valid() && p.fd == q.ev_rx.fd()) {
                (void)q.ev_rx.ack();
            }
        }
    }
}

bool Device::arm() noexcept { return impl_->phase == Phase::connected && impl_->arm(); }

std::size_t Device::poll(std::vector<Packet>& out) {
    return poll_each([&out](const PacketView& v) {
        Packet& p = out.emplace_back(Packet{{v.data.begin(), v.data.end()}, v.offload, v.queue});
        if (v.data.empty()) {  // Options::lend_slots: join the parts
            for (const iovec& part : v.parts) {
                const auto* b = static_cast<const std::byte*>(part.iov_base);
                p.data.insert(p.data.end(), b, b + part.iov_len);
            }
        }
    });
}

std::size_t Device::receive(std::vector<Packet>& out, std::size_t n,
                            std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t got = poll(out);
    if (got > 0) {
        impl_->spin.worked();
    }
    while (got < n && impl_->phase == Phase::connected) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            break;
        }
        // Polling: within the spin window, watch the response indices before sleeping (poll()
        // armed rsp_event, so the sleep below still wakes on the next response).
        if (const auto b = impl_->spin.budget();
            b.count() > 0 && hv::spin_until([&] { return responses_pending(); }, b,
                                                   hv::SpinYield::every_64)) {
            const std::size_t k = poll(out);
            if (k > 0) {
                impl_->spin.worked();
                got += k;
            }
            continue;
        }
        std::vector<pollfd> fds;
        for (int fd : pollable_fds()) {
            fds.push_back({fd, POLLIN, 0});
        }
        (void)::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left.count(), 50)));
        const std::size_t k = poll(out);
        if (k > 0) {
            impl_->spin.worked();
            got += k;
        }
    }
    return got;
}

bool Device::responses_pending() noexcept {
    if (impl_->phase != Phase::connected) {
        return false;
    }
    for (auto& q : impl_->queues) {
        auto a = q.tx.unconsumed_responses();
        auto b = q.rx.unconsumed_responses();
        if (!a || !b || *a > 0 || *b > 0) {
            return true;
        }
    }
    return false;
}

std::vector<int> Device::pollable_fds() const {
    std::vector<int> fds;
    for (const auto& q : impl_->queues) {
        fds.push_back(q.ev_tx.fd());
        if (impl_->split) {
            fds.push_back(q.ev_rx.fd());
        }
    }
    return fds;
}

Result<void> Device::mcast_add(const MacAddr& addr, std::chrono::milliseconds timeout) {
    return impl_->mcast_request(rings::XEN_NETIF_EXTRA_TYPE_MCAST_ADD, addr, timeout);
}

Result<void> Device::mcast_del(const MacAddr& addr, std::chrono::milliseconds timeout) {
    return impl_->mcast_request(rings::XEN_NETIF_EXTRA_TYPE_MCAST_DEL, addr, timeout);
}

Result<void> Device::set_multicast_control(bool on) {
    Impl& d = *impl_;
    if (!d.set_up) {
        d.opt.multicast_control = on;  // written by setup()
        return {};
    }
    if (!d.mcast || (d.phase == Phase::connected && !d.mcast_dynamic)) {
        return fail(make_error_code(Errc::not_supported));
    }
    HV_TRY(d.xs.write(d.fdir + "/request-multicast-control", on ? "1" : "0"));
    d.mcast_on = on;
    d.opt.multicast_control = on;
    return {};
}

bool Device::multicast_control() const noexcept { return impl_->mcast_on; }

Result<void> Device::set_xdp_headroom(std::uint16_t headroom) {
    Impl& d = *impl_;
    if (!d.set_up) {
        d.opt.xdp_headroom = headroom;
        return {};
    }
    if (!d.xdp) {
        return fail(make_error_code(Errc::not_supported));
    }
    // SPEC: Linux xennet_xdp_set(): the key, then Reconfiguring; the backend reads it again.
    HV_TRY(d.xs.write(d.fdir + "/xdp-headroom", std::to_string(headroom)));
    d.opt.xdp_headroom = headroom;
    HV_TRY(xenbus::switch_state(d.xs, d.fdir, XenbusState::XenbusStateReconfiguring));
    return {};
}

Result<rings::xen_netif_ctrl_response> Device::ctrl_request(std::uint16_t type, std::uint32_t d0,
                                                            std::uint32_t d1, std::uint32_t d2,
                                                            std::chrono::milliseconds timeout) {
    Impl& d = *impl_;
    if (d.phase != Phase::connected) {
        return fail(make_error_code(Errc::not_connected));
    }
    if (!d.ctrl) {
        return fail(make_error_code(Errc::not_supported));
    }
    Impl::Ctrl& c = *d.ctrl;
    const rings::xen_netif_ctrl_request req{++c.next_id, type, {d0, d1, d2}};
    c.ring.put_request(req);
    c.ring.publish_requests();
    (void)c.ev.notify();
    // One request at a time, so the next response is its answer.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto n = c.ring.unconsumed_responses();
        if (!n) {
            d.die("ctrl ring: impossible rsp_prod");
            return fail(make_error_code(Errc::backend_protocol));
        }
        if (*n > 0) {
            auto r = c.ring.take_response();
            if (!r || r->id != req.id) {  // GUEST-like: the backend is not trusted either
                d.die("ctrl ring: response for another request");
                return fail(make_error_code(Errc::backend_protocol));
            }
            return *r;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return fail(make_error_code(Errc::timed_out));
        }
        (void)c.ev.wait(std::chrono::milliseconds(10));
        (void)c.ev.ack();
    }
}

Result<void> Device::set_hash_key(std::span<const std::uint8_t> key) {
    if (!impl_->ctrl) {
        return fail(make_error_code(impl_->phase == Phase::connected ? Errc::not_supported
                                                                     : Errc::not_connected));
    }
    if (key.size() > XEN_PAGE_SIZE) {
        return fail(make_error_code(Errc::bad_packet));
    }
    std::memcpy(impl_->ctrl->data, key.data(), key.size());
    auto r = ctrl_request(rings::XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, impl_->ctrl->data_ref.get(),
                          static_cast<std::uint32_t>(key.size()));
    if (!r) {
        return fail(r.error());
    }
    if (r->status != rings::XEN_NETIF_CTRL_STATUS_SUCCESS) {
        return fail(make_error_code(Errc::refused));
    }
    return {};
}

Result<void> Device::set_hash_mapping(std::span<const std::uint32_t> entries,
                                      std::uint32_t offset) {
    if (!impl_->ctrl) {
        return fail(make_error_code(impl_->phase == Phase::connected ? Errc::not_supported
                                                                     : Errc::not_connected));
    }
    if (entries.size() > XEN_PAGE_SIZE / sizeof(std::uint32_t)) {
        return fail(make_error_code(Errc::bad_packet));
    }
    std::memcpy(impl_->ctrl->data, entries.data(), entries.size_bytes());
    auto r = ctrl_request(rings::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, impl_->ctrl->data_ref.get(),
                          static_cast<std::uint32_t>(entries.size()), offset);
    if (!r) {
        return fail(r.error());
    }
    if (r->status != rings::XEN_NETIF_CTRL_STATUS_SUCCESS) {
        return fail(make_error_code(Errc::refused));
    }
    return {};
}

TxOffloads Device::tx_offloads() const noexcept { return impl_->tx_off; }
Phase Device::phase() const noexcept { return impl_->phase; }
unsigned Device::queues() const noexcept { return static_cast<unsigned>(impl_->queues.size()); }
bool Device::split() const noexcept { return impl_->split; }
bool Device::persistent_pool() const noexcept { return impl_->pool; }
std::uint32_t Device::devid() const noexcept { return impl_->devid; }
std::string Device::mac() const {
    auto m = impl_->xs.read(impl_->fdir + "/mac");
    return m ? *m : std::string();
}
std::string Device::frontend_dir() const { return impl_->fdir; }
std::string Device::backend_dir() const { return impl_->bdir; }
std::string Device::watch_token() const { return impl_->token; }
Counters Device::counters() const noexcept { return impl_->counters; }
unsigned Device::tx_outstanding() const noexcept {
    unsigned n = 0;
    for (const auto& q : impl_->queues) {
        n += static_cast<unsigned>(kRingSize - q.tx_free.size() - q.lent.size());
    }
    return n;
}

std::string Device::ring_state() {
    std::string out;
    auto ring = [&out](const char* name, rings::SringHeader& h, std::uint32_t req_prod_pvt,
                       std::uint32_t rsp_cons, bool pending) {
        auto ld = [](std::uint32_t& f) {
            return std::atomic_ref<std::uint32_t>(f).load(std::memory_order_acquire);
        };
        char buf[192];
        std::snprintf(buf, sizeof buf,
                      " %s: req_prod %u (pvt %u) req_event %u rsp_prod %u rsp_event %u rsp_cons %u "
                      "evtchn %s;",
                      name, ld(h.req_prod), req_prod_pvt, ld(h.req_event), ld(h.rsp_prod),
                      ld(h.rsp_event), rsp_cons, pending ? "pending" : "idle");
        out += buf;
    };
    for (std::size_t i = 0; i < impl_->queues.size(); ++i) {
        Queue& q = impl_->queues[i];
        out += "queue " + std::to_string(i) + ":";
        ring("tx", q.tx.shared(), q.tx.req_prod_pvt(), q.tx.rsp_cons(), q.ev_tx.pending());
        ring("rx", q.rx.shared(), q.rx.req_prod_pvt(), q.rx.rsp_cons(),
             impl_->split ? q.ev_rx.pending() : q.ev_tx.pending());
        out += " tx pages free " + std::to_string(q.tx_free.size()) + ", rx responses held " +
               std::to_string(q.rx_pending.size()) + "\n";
    }
    return out;
}

Result<Device::RawPage> Device::raw_tx_page(unsigned qi) {
    if (qi >= impl_->queues.size() || impl_->queues[qi].tx_free.empty()) {
        return fail(make_error_code(Errc::busy));
    }
    Queue& q = impl_->queues[qi];
    const std::uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    q.tx_busy[id] = 1;
    return RawPage{id, q.tx_grefs[id], q.tx_pages + std::size_t{id} * XEN_PAGE_SIZE};
}

Result<void> Device::raw_tx(unsigned qi, std::span<const rings::netif_tx_request> slots) {
    if (qi >= impl_->queues.size()) {
        return fail(make_error_code(Errc::not_connected));
    }
    Queue& q = impl_->queues[qi];
    if (q.tx.free_requests() < slots.size()) {
        return fail(make_error_code(Errc::busy));
    }
    for (const auto& s : slots) {
        q.tx.put_request(s);
    }
    q.tx.publish_requests();
    impl_->kick_tx(q);
    return {};
}

void Device::raw_tx_req_prod(unsigned qi, std::uint32_t value) {
    Queue& q = impl_->queues.at(qi);
    std::atomic_ref<std::uint32_t>(q.tx.shared().req_prod).store(value, std::memory_order_release);
    impl_->kick_tx(q);
}

void Device::raw_rx_req_prod(unsigned qi, std::uint32_t value) {
    Queue& q = impl_->queues.at(qi);
    std::atomic_ref<std::uint32_t>(q.rx.shared().req_prod).store(value, std::memory_order_release);
    impl_->kick_rx(q);
}

void Device::raw_rx_gref(std::optional<std::uint32_t> gref) { impl_->rx_gref_override = gref; }

void Device::raw_rx_hold(bool hold) {
    impl_->rx_hold = hold;  // the next poll() re-posts what was held back
}

std::vector<rings::netif_tx_response> Device::take_tx_responses() {
    Impl& d = *impl_;
    std::vector<rings::netif_tx_response> out;
    std::uint64_t from = std::max(d.tx_log_taken, d.tx_log_n > kTxLogMax ? d.tx_log_n - kTxLogMax : 0);
    out.reserve(static_cast<std::size_t>(d.tx_log_n - from));
    for (; from < d.tx_log_n; ++from) {
        out.push_back(d.tx_log[from % kTxLogMax]);
    }
    d.tx_log_taken = d.tx_log_n;
    return out;
}

}  // namespace hv::netfront
