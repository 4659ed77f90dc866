// libblkfront implementation: xenbus handshake, queues (ring + event channel + granted page
// pool), request splitting, response validation and recovery after a backend reconnect.
// Layer: frontends. One thread drives a Device (see blkfront.hpp).
#include "frontends/blkfront.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>

#include "hv/log.hpp"
#include "hv/mapping.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/ring.hpp"
#include "hvmin/client.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::blkfront {

using namespace hv::rings;

namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "hv.blkfront"; }
    std::string message(int c) const override {
        switch (static_cast<Errc>(c)) {
            case Errc::not_connected:
                return "device not connected";
            case Errc::bad_request:
                return "bad request (alignment, range or buffer)";
            case Errc::read_only:
                return "read-only device";
            case Errc::backend_protocol:
                return "backend protocol error";
            case Errc::device_gone:
                return "device removed";
            case Errc::timed_out:
                return "handshake timed out";
        }
        return "unknown blkfront error";
    }
};

constexpr std::uint64_t kPage = XEN_PAGE_SIZE;

}  // namespace

const std::error_category& category() noexcept {
    static const Category c;
    return c;
}
std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), category()}; }

namespace {

/// One piece of a user I/O that fits one ring request.
struct Part {
    std::uint32_t io = 0;  // index of the owning UserIo in Impl::ios
    Op op = Op::read;
    std::uint64_t offset_bytes = 0;
    std::uint64_t length = 0;
    std::byte* buf = nullptr;
};

/// A submitted I/O; a slot of Impl::ios (reused through free_ios: no allocation per I/O).
struct UserIo {
    std::uint64_t cookie = 0;
    unsigned parts_left = 0;
    int status = 0;
    bool live = false;
};

/// Memory from alloc_buffer(): one extent of this domain, used in place by requests whose
/// buffer starts in it at a page boundary. Kept for the Device's life (as the pool).
struct InPlaceBuffer {
    std::byte* base = nullptr;
    std::uint64_t first_frame = 0;
    std::uint32_t pages = 0;
    std::vector<std::optional<GrantRef>> refs;  // persistent mode: each page granted once
};

/// A granted (or grantable) 4 KiB page of this domain.
struct PoolPage {
    std::byte* data = nullptr;
    std::uint64_t frame = 0;
    std::optional<GrantRef> ref;  // persistent mode: kept across requests
};

/// Shadow of one in-flight ring request (xen-abi §5.7), indexed by the request id.
struct Shadow {
    bool busy = false;
    Part part;
    std::uint8_t rsp_op = 0;              // operation the response must carry
    std::vector<std::uint32_t> pages;     // pool page indices holding the data
    bool in_place = false;                // data pages are an InPlaceBuffer's (no pool copy)
    std::optional<std::uint32_t> indirect;  // pool page index of the indirect page
    std::vector<GrantRef> temp_refs;        // non-persistent grants, revoked at the response
};

/// Memory a queue keeps across reconnects (frames are never returned to hv-min).
struct QueueMem {
    std::vector<std::uint64_t> ring_frames;  // one-page extents (isolated backends can map them)
    std::vector<std::byte*> ring_ptrs;
    Mapping ring_view;  // contiguous view of the ring pages (mremap'd duplicates) if > 1 page
    std::vector<PoolPage> pool;
    bool reusable = true;  // false once a grant of it could not be revoked
};

struct Queue {
    QueueMem* mem = nullptr;
    unsigned pages = 1;
    std::span<std::byte> ring_bytes;
    FrontRing<BlkifProtocol> ring;
    std::vector<GrantRef> ring_refs;
    hvmin::EventChannelBinding evt;
    std::vector<Shadow> shadows;
    std::vector<std::uint32_t> free_ids;
    std::vector<std::uint32_t> free_pages;
};

}  // namespace

struct Device::Impl {
    hvmin::Services& hv;
    xs::Client& xs;
    std::uint32_t devid;
    Options opt;
    CompletionFn on_complete;

    std::string fe_dir;
    std::string be_dir;
    DomId be_id{0};
    std::string token;
    xs::ScopedWatch fe_watch;
    xs::ScopedWatch be_watch;

    Phase phase = Phase::waiting;
    bool rings_ready = false;  // keys written, state Initialised (or later)
    DiskInfo info;
    std::vector<std::unique_ptr<QueueMem>> mems;
    std::vector<Queue> queues;  // last data member in use: torn down before mems
    std::deque<Part> backlog;
    std::vector<UserIo> ios;               // slots; free ones listed in free_ios
    std::vector<std::uint32_t> free_ios;
    std::size_t live_ios = 0;
    std::vector<std::unique_ptr<InPlaceBuffer>> buffers;  // alloc_buffer(); never shrinks
    std::vector<blkif_request_segment> seg_scratch;     // place(): one request's segments
    std::vector<std::uint8_t> pushed;                   // issue(): queues with new requests
    unsigned rr = 0;
    unsigned reconnects = 0;
    bool was_connected = false;
    std::vector<GrantRef> deferred;  // grants still mapped by the backend when we revoked them
    SpinPolicy spin;                 // polling mode (opt.spin): spin while responses keep coming
    bool caller_spins = false;       // spin_for_responses() was called: it does the final check

    Impl(hvmin::Services& h, xs::Client& x, std::uint32_t d, Options o, CompletionFn f)
        : hv(h), xs(x), devid(d), opt(o), on_complete(std::move(f)), spin(o.spin) {}

    // ---- completion ----------------------------------------------------------------------

    void complete_part(std::uint32_t io, int status) {
        HV_ASSERT(io < ios.size() && ios[io].live);
        UserIo& u = ios[io];
        if (status != 0 && u.status == 0) {
            u.status = status;
        }
        HV_ASSERT(u.parts_left > 0);
        if (--u.parts_left == 0) {
            const std::uint64_t cookie = u.cookie;
            const int st = u.status;
            u.live = false;
            free_ios.push_back(io);
            --live_ios;
            if (on_complete) {
                on_complete(cookie, st);
            }
        }
    }

    /// Every outstanding I/O ends with `status` (device removed or broken).
    void fail_all(int status) {
        std::vector<Part> parts(backlog.begin(), backlog.end());
        backlog.clear();
        for (auto& q : queues) {
            for (auto& s : q.shadows) {
                if (s.busy) {
                    parts.push_back(s.part);
                    s.busy = false;
                }
            }
        }
        for (const auto& p : parts) {
            complete_part(p.io, status);
        }
    }

    // ---- grants --------------------------------------------------------------------------

    Result<GrantRef> grant_page(PoolPage& pg, bool readonly) {
        if (pg.ref) {
            return *pg.ref;
        }
        auto r = hv.grants().grant_access(be_id, pg.frame, readonly);
        if (!r) {
            return fail(r.error());
        }
        if (info.persistent) {
            pg.ref = *r;  // SPEC: blkif.h feature-persistent: granted RW once, reused
        }
        return *r;
    }

    /// Grants page `pg` of an in-place buffer: as grant_page() (persistent: once, kept).
    Result<GrantRef> grant_buffer_page(InPlaceBuffer& b, std::uint32_t pg, bool readonly) {
        if (b.refs[pg]) {
            return *b.refs[pg];
        }
        auto r = hv.grants().grant_access(be_id, b.first_frame + pg, readonly);
        if (!r) {
            return fail(r.error());
        }
        if (info.persistent) {
            b.refs[pg] = *r;
        }
        return *r;
    }

    /// Revokes a request's grant. In non-persistent mode a grant the backend still maps when
    /// it answered is a protocol violation (xen-abi sharp edge 8).
    /// A grant that could not be revoked is kept in `deferred` and revoked later (Linux's
    /// gnttab deferred list): the entry must not stay granted after the device is gone.
    bool end_grant(QueueMem& mem, GrantRef ref) {
        auto r = hv.grants().end_access(ref);
        if (!r) {
            mem.reusable = false;
            deferred.push_back(ref);
            return false;
        }
        return true;
    }

    /// Retries the deferred revocations; true when none is left.
    bool revoke_deferred() {
        std::erase_if(deferred, [&](GrantRef ref) { return hv.grants().end_access(ref).has_value(); });
        return deferred.empty();
    }

    // ---- setup / teardown ----------------------------------------------------------------

    Result<QueueMem*> queue_mem(unsigned q, unsigned pages) {
        while (mems.size() <= q) {
            mems.push_back(nullptr);
        }
        auto& m = mems[q];
        if (m && (!m->reusable || m->ring_frames.size() < pages)) {
            m.reset();  // its pages stay granted to a backend that would not let go: leak them
        }
        if (!m) {
            auto nm = std::make_unique<QueueMem>();
            const unsigned want_pool = std::max(opt.pool_pages_per_queue,
                                                std::max(opt.max_indirect_segments, 11U) + 1);
            auto first = hv.memory().alloc_extent(want_pool);
            if (!first) {
                return fail(first.error());
            }
            for (unsigned i = 0; i < want_pool; ++i) {
                auto p = hv.memory().frame(*first + i);
                if (!p) {
                    return fail(p.error());
                }
                nm->pool.push_back(PoolPage{*p, *first + i, std::nullopt});
            }
            m = std::move(nm);
        }
        while (m->ring_frames.size() < pages) {
            auto f = hv.memory().alloc_extent(1);  // alone in its extent: isolated backends map it
            if (!f) {
                return fail(f.error());
            }
            auto p = hv.memory().frame(*f);
            if (!p) {
                return fail(p.error());
            }
            m->ring_frames.push_back(*f);
            m->ring_ptrs.push_back(*p);
            m->ring_view.reset();
        }
        if (pages > 1 && (!m->ring_view.valid() || m->ring_view.size() != pages * kPage)) {
            // A multi-page ring must be virtually contiguous; the pages are separate extents,
            // so map a second view of each (mremap with old_size 0 duplicates a shared mapping).
            void* base = ::mmap(nullptr, pages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (base == MAP_FAILED) {
                return fail_errno();
            }
            Mapping view(base, pages * kPage);
            for (unsigned i = 0; i < pages; ++i) {
                void* dst = static_cast<std::byte*>(base) + i * kPage;
                void* r = ::mremap(m->ring_ptrs[i], 0, kPage, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
                if (r == MAP_FAILED) {
                    return fail_errno();
                }
            }
            m->ring_view = std::move(view);
        }
        return m.get();
    }

    Result<void> setup_queue(Queue& q, unsigned idx, unsigned pages) {
        auto m = queue_mem(idx, pages);
        if (!m) {
            return fail(m.error());
        }
        q.mem = *m;
        q.pages = pages;
        q.ring_bytes = pages == 1 ? std::span<std::byte>(q.mem->ring_ptrs[0], kPage)
                                  : q.mem->ring_view.bytes().first(pages * kPage);
        auto ring = FrontRing<BlkifProtocol>::init(q.ring_bytes);
        if (!ring) {
            return fail(ring.error());
        }
        q.ring = *ring;
        for (unsigned i = 0; i < pages; ++i) {
            auto ref = hv.grants().grant_access(be_id, q.mem->ring_frames[i], false);
            if (!ref) {
                return fail(ref.error());
            }
            q.ring_refs.push_back(*ref);
        }
        auto evt = hv.evtchn().alloc_unbound(be_id);
        if (!evt) {
            return fail(evt.error());
        }
        q.evt = std::move(*evt);
        q.shadows.assign(q.ring.size(), Shadow{});
        q.free_ids.clear();
        for (std::uint32_t i = q.ring.size(); i-- > 0;) {
            q.free_ids.push_back(i);
        }
        q.free_pages.clear();
        for (std::uint32_t i = static_cast<std::uint32_t>(q.mem->pool.size()); i-- > 0;) {
            q.free_pages.push_back(i);
        }
        return {};
    }

    /// Drops the rings: in-flight parts go back to the front of the backlog (re-issued whole
    /// after the next connect; nothing is replayed from the old ring), grants are revoked and
    /// the ports closed. Idempotent.
    void teardown_rings() {
        std::vector<Part> again;
        for (auto& q : queues) {
            for (auto& s : q.shadows) {
                if (s.busy) {
                    again.push_back(s.part);
                    s.busy = false;
                }
                for (auto ref : s.temp_refs) {
                    (void)end_grant(*q.mem, ref);
                }
                s.temp_refs.clear();
            }
            for (auto ref : q.ring_refs) {
                (void)end_grant(*q.mem, ref);
            }
            for (auto& pg : q.mem->pool) {
                if (pg.ref && end_grant(*q.mem, *pg.ref)) {
                    pg.ref.reset();
                }
            }
        }
        for (auto& b : buffers) {
            for (auto& ref : b->refs) {
                // Not reusable-tracked per queue: a grant the backend keeps goes to `deferred`.
                if (ref && hv.grants().end_access(*ref)) {
                    ref.reset();
                } else if (ref) {
                    deferred.push_back(*ref);
                    ref.reset();
                }
            }
        }
        queues.clear();  // closes the event channels
        for (auto it = again.rbegin(); it != again.rend(); ++it) {
            backlog.push_front(*it);
        }
        rings_ready = false;
    }

    // ---- handshake -----------------------------------------------------------------------

    Result<std::uint64_t> be_uint(const char* key, std::uint64_t dflt, std::uint64_t max) {
        auto v = xenbus::read_uint(xs, be_dir + "/" + key, max);
        if (!v) {
            if (v.error() == std::error_code(ENOENT, std::system_category())) {
                return dflt;
            }
            return fail(v.error());
        }
        return *v;
    }

    /// talk_to_blkback: rings, grants, ports, keys in one transaction, → Initialised.
    Result<void> talk_to_backend() {
        teardown_rings();
        (void)revoke_deferred();
        auto max_order = be_uint("max-ring-page-order", 0, 64);
        auto max_queues = be_uint("multi-queue-max-queues", 1, 1U << 16);
        if (!max_order || !max_queues) {
            return protocol_error("reading backend transport limits");
        }
        const unsigned order = static_cast<unsigned>(
            std::min<std::uint64_t>({*max_order, opt.max_ring_page_order, 4}));
        const unsigned own_queues =
            opt.max_queues != 0 ? opt.max_queues : std::max(1U, std::thread::hardware_concurrency());
        const unsigned nq = static_cast<unsigned>(
            std::clamp<std::uint64_t>(std::min<std::uint64_t>(*max_queues, own_queues), 1, 64));
        const unsigned pages = 1U << order;
        queues.resize(nq);
        for (unsigned i = 0; i < nq; ++i) {
            auto r = setup_queue(queues[i], i, pages);
            if (!r) {
                HV_ERROR("blkfront %u: queue %u setup failed: %s", devid, i, r.error().message().c_str());
                teardown_rings();
                return fail(r.error());
            }
        }
        info.queues = nq;
        info.ring_pages = pages;
        auto wr = xs.transaction([&](xs::TxId tx) -> Result<void> {
            auto put = [&](const std::string& key, const std::string& val) -> Result<void> {
                return xs.write(fe_dir + "/" + key, val, tx);
            };
            // SPEC: blkif.h ring-ref vs ring-ref%u: ring-page-order only for multi-page rings
            // (its mere presence switches Linux blkback to ring-ref%u — sharp edge 5).
            if (order > 0) {
                HV_TRY(put("ring-page-order", std::to_string(order)));
            } else {
                (void)xs.rm(fe_dir + "/ring-page-order", tx);
            }
            if (nq > 1) {
                HV_TRY(put("multi-queue-num-queues", std::to_string(nq)));
            } else {
                (void)xs.rm(fe_dir + "/multi-queue-num-queues", tx);
            }
            for (unsigned i = 0; i < nq; ++i) {
                const std::string pre = nq > 1 ? "queue-" + std::to_string(i) + "/" : "";
                const Queue& q = queues[i];
                if (order == 0) {
                    HV_TRY(put(pre + "ring-ref", std::to_string(q.ring_refs[0].value)));
                } else {
                    for (unsigned p = 0; p < pages; ++p) {
                        HV_TRY(put(pre + "ring-ref" + std::to_string(p),
                                   std::to_string(q.ring_refs[p].value)));
                    }
                }
                HV_TRY(put(pre + "event-channel", std::to_string(q.evt.port().value)));
            }
            // SPEC: always write protocol (sharp edge 4: Linux blkback defaults to x86_32).
            HV_TRY(put("protocol", std::string(BlkifProtocol::abi)));
            HV_TRY(put("feature-persistent", opt.persistent ? "1" : "0"));
            return {};
        });
        if (!wr) {
            teardown_rings();
            return fail(wr.error());
        }
        auto sw = xenbus::switch_state(xs, fe_dir, XenbusStateInitialised);
        if (!sw) {
            teardown_rings();
            return fail(sw.error());
        }
        rings_ready = true;
        return {};
    }

    /// Backend Connected: read the device properties (mandatory: sectors, info, sector-size).
    Result<void> read_backend_properties() {
        DiskInfo d;
        d.queues = info.queues;
        d.ring_pages = info.ring_pages;
        auto sectors = xenbus::read_uint(xs, be_dir + "/sectors");
        auto inf = xenbus::read_uint(xs, be_dir + "/info", UINT32_MAX);
        auto ss = xenbus::read_uint(xs, be_dir + "/sector-size", 1U << 20);
        if (!sectors || !inf || !ss) {
            return protocol_error("reading sectors/info/sector-size");
        }
        // GUEST-like: the backend is another domain; sizes are checked before use.
        if (*ss < 512 || (*ss & (*ss - 1)) != 0 || *sectors > (UINT64_MAX / 512)) {
            return protocol_error("bad sector-size or sectors");
        }
        d.sectors = *sectors;
        d.info = static_cast<std::uint32_t>(*inf);
        d.sector_size = static_cast<std::uint32_t>(*ss);
        auto pss = be_uint("physical-sector-size", d.sector_size, 1U << 20);
        d.physical_sector_size = pss ? static_cast<std::uint32_t>(*pss) : d.sector_size;
        auto flag = [&](const char* key) {
            auto v = be_uint(key, 0, UINT64_MAX);
            return v && *v != 0;
        };
        auto mode = xenbus::read_optional(xs, be_dir + "/mode");
        d.read_only = (d.info & VDISK_READONLY) != 0 ||
                      (mode && *mode && (*mode)->find('w') == std::string::npos);
        d.flush = flag("feature-flush-cache");
        d.barrier = flag("feature-barrier");
        d.discard = flag("feature-discard");
        d.discard_secure = flag("discard-secure");
        auto gran = be_uint("discard-granularity", d.sector_size, UINT32_MAX);
        auto align = be_uint("discard-alignment", 0, UINT32_MAX);
        d.discard_granularity = gran ? static_cast<std::uint32_t>(*gran) : d.sector_size;
        d.discard_alignment = align ? static_cast<std::uint32_t>(*align) : 0;
        d.persistent = opt.persistent && flag("feature-persistent");
        auto ind = be_uint("feature-max-indirect-segments", 0, UINT32_MAX);
        const std::uint64_t segs = ind ? *ind : 0;
        // SPEC: Linux blkfront uses INDIRECT only if the backend offers more than 11 segments.
        d.indirect_segments = segs > BLKIF_MAX_SEGMENTS_PER_REQUEST
                                  ? static_cast<unsigned>(std::min<std::uint64_t>(
                                        {segs, opt.max_indirect_segments, BLKIF_SEGS_PER_INDIRECT_FRAME}))
                                  : 0;
        if (d.indirect_segments != 0 && d.indirect_segments <= BLKIF_MAX_SEGMENTS_PER_REQUEST) {
            d.indirect_segments = 0;
        }
        // Persistent pages granted before this connect were revoked at teardown.
        info = d;
        return {};
    }

    Result<void> protocol_error(const char* what) {
        HV_LOG_RL(error, "blkfront %u: backend %s: %s", devid, be_dir.c_str(), what);
        xenbus::report_error(xs, hv.domid(), fe_dir, EPROTO, what);
        die(-EIO);
        (void)xenbus::switch_state(xs, fe_dir, XenbusStateClosing);
        return fail(make_error_code(Errc::backend_protocol));
    }

    void die(int status) {
        teardown_rings();
        phase = Phase::dead;
        fail_all(status);
    }

    bool removal_requested() {
        auto fe_state = xs.read(fe_dir + "/state");
        if (!fe_state && fe_state.error() == std::error_code(ENOENT, std::system_category())) {
            return true;
        }
        auto online = xenbus::read_optional(xs, be_dir + "/online");
        if (online && *online && **online == "0") {
            return true;
        }
        auto be_state = xs.read(be_dir + "/state");
        return !be_state && be_state.error() == std::error_code(ENOENT, std::system_category());
    }

    Result<void> on_state_change() {
        if (phase == Phase::dead) {
            return {};
        }
        auto bs = xenbus::read_state(xs, be_dir);
        if (!bs) {
            return fail(bs.error());
        }
        auto fs = xenbus::read_state(xs, fe_dir);
        if (!fs) {
            return fail(fs.error());
        }
        switch (*bs) {
            case XenbusStateInitWait:
                if (*fs == XenbusStateInitialised && rings_ready) {
                    return {};  // our keys are out; wait for Connected
                }
                if (*fs == XenbusStateConnected || rings_ready) {
                    // A restarted backend re-probed while we were connected to its
                    // predecessor: start over through Initialising (xen-abi §4.11 reconnect),
                    // so a backend that bound our old ring lets go of it first.
                    backend_gone();
                    return {};
                }
                return talk_to_backend();
            case XenbusStateConnected:
                if (!rings_ready) {
                    // A backend still Connected from an earlier session: wait for it to
                    // re-probe (InitWait) or close.
                    return {};
                }
                if (*fs == XenbusStateConnected && phase == Phase::connected) {
                    auto s = xenbus::read_uint(xs, be_dir + "/sectors");
                    if (s && *s <= UINT64_MAX / 512) {
                        info.sectors = *s;  // SPEC: re-written Connected = resize
                    }
                    return {};
                }
                HV_TRY(read_backend_properties());
                {
                    auto sw = xenbus::switch_state(xs, fe_dir, XenbusStateConnected);
                    if (!sw) {
                        return fail(sw.error());
                    }
                }
                if (phase == Phase::reconnecting || was_connected) {
                    ++reconnects;
                }
                phase = Phase::connected;
                was_connected = true;
                xenbus::clear_error(xs, hv.domid(), fe_dir);
                issue();
                return {};
            case XenbusStateClosing:
            case XenbusStateClosed:
                if (rings_ready || !queues.empty()) {
                    teardown_rings();
                }
                if (removal_requested()) {
                    die(-ENODEV);
                    (void)xenbus::switch_state(xs, fe_dir, XenbusStateClosed);
                    return {};
                }
                if (phase == Phase::connected || was_connected) {
                    phase = Phase::reconnecting;
                }
                if (*bs == XenbusStateClosing) {
                    (void)xenbus::switch_state(xs, fe_dir, XenbusStateClosed);
                } else {
                    // SPEC: reconnect — backend Closed, frontend back to Initialising → the
                    // backend returns to InitWait.
                    (void)xenbus::switch_state(xs, fe_dir, XenbusStateInitialising);
                }
                return {};
            case XenbusStateUnknown:
                if (removal_requested()) {
                    teardown_rings();
                    die(-ENODEV);
                    return {};
                }
                [[fallthrough]];
            case XenbusStateInitialising:
            case XenbusStateInitialised:
            case XenbusStateReconfiguring:
            case XenbusStateReconfigured:
                if (phase == Phase::connected) {
                    backend_gone();  // the backend restarted without a clean Closing
                }
                return {};
        }
        return {};
    }

    // ---- data path -----------------------------------------------------------------------

    std::uint64_t max_part_bytes() const noexcept {
        const unsigned segs = info.indirect_segments != 0 ? info.indirect_segments
                                                          : BLKIF_MAX_SEGMENTS_PER_REQUEST;
        return std::uint64_t{segs} * kPage;
    }

    Result<void> submit(const Io& io) {
        if (phase == Phase::dead) {
            return fail(make_error_code(Errc::not_connected));
        }
        if (!was_connected) {
            return fail(make_error_code(Errc::not_connected));
        }
        const std::uint64_t ss = info.sector_size;
        if (io.op == Op::read || io.op == Op::write || io.op == Op::discard) {
            if (io.length == 0 || io.offset_bytes % ss != 0 || io.length % ss != 0 ||
                io.offset_bytes > info.size_bytes() || io.length > info.size_bytes() - io.offset_bytes) {
                return fail(make_error_code(Errc::bad_request));
            }
        }
        if ((io.op == Op::read || io.op == Op::write) && io.buf == nullptr) {
            return fail(make_error_code(Errc::bad_request));
        }
        if ((io.op == Op::write || io.op == Op::discard) && info.read_only) {
            return fail(make_error_code(Errc::read_only));
        }
        if (io.op == Op::discard && !info.discard) {
            return fail(std::error_code(EOPNOTSUPP, std::system_category()));
        }
        if (io.op == Op::flush && !info.flush && !info.barrier) {
            return fail(std::error_code(EOPNOTSUPP, std::system_category()));
        }
        if (free_ios.empty()) {
            free_ios.push_back(static_cast<std::uint32_t>(ios.size()));
            ios.emplace_back();
        }
        const std::uint32_t idx = free_ios.back();
        free_ios.pop_back();
        ++live_ios;
        UserIo& u = ios[idx];
        u = UserIo{io.cookie, 0, 0, true};
        if (io.op == Op::read || io.op == Op::write) {
            const std::uint64_t chunk = max_part_bytes();
            for (std::uint64_t off = 0; off < io.length; off += chunk) {
                const std::uint64_t len = std::min(chunk, io.length - off);
                backlog.push_back(Part{idx, io.op, io.offset_bytes + off, len, io.buf + off});
                ++u.parts_left;
            }
        } else {
            backlog.push_back(Part{idx, io.op, io.offset_bytes, io.length, nullptr});
            u.parts_left = 1;
        }
        if (phase == Phase::connected) {
            issue();
        }
        return {};
    }

    /// Pages a part needs from the pool (data, unless in place, + indirect page).
    unsigned pages_needed(const Part& p) const noexcept {
        if (p.op != Op::read && p.op != Op::write) {
            return 0;
        }
        const auto data = static_cast<unsigned>((p.length + kPage - 1) / kPage);
        const unsigned indirect = data > BLKIF_MAX_SEGMENTS_PER_REQUEST ? 1U : 0U;
        return in_place_buffer(p) != nullptr ? indirect : data + indirect;
    }

    /// The alloc_buffer() memory a read/write part uses in place: its buffer starts at a page
    /// boundary of one and lies in it whole. nullptr: the part goes through the pool.
    InPlaceBuffer* in_place_buffer(const Part& p) const noexcept {
        for (const auto& b : buffers) {
            const auto begin = reinterpret_cast<std::uintptr_t>(b->base);
            const auto at = reinterpret_cast<std::uintptr_t>(p.buf);
            const std::uint64_t size = std::uint64_t{b->pages} * kPage;
            if (at >= begin && at - begin < size) {
                const std::uint64_t off = at - begin;
                return off % kPage == 0 && p.length <= size - off ? b.get() : nullptr;
            }
        }
        return nullptr;
    }

    Result<std::span<std::byte>> alloc_buffer(std::size_t bytes) {
        const std::uint64_t pages = (std::uint64_t{bytes} + kPage - 1) / kPage;
        if (pages == 0 || pages > UINT32_MAX) {
            return fail(make_error_code(Errc::bad_request));
        }
        auto first = hv.memory().alloc_extent(static_cast<std::uint32_t>(pages));
        if (!first) {
            return fail(first.error());
        }
        auto base = hv.memory().frame(*first);
        if (!base) {
            return fail(base.error());
        }
        // An extent's frames are one contiguous mapping (libhv maps each extent whole).
        auto last = hv.memory().frame(*first + pages - 1);
        if (!last || *last != *base + (pages - 1) * kPage) {
            return fail(last ? make_error_code(Errc::bad_request) : last.error());
        }
        auto b = std::make_unique<InPlaceBuffer>();
        b->base = *base;
        b->first_frame = *first;
        b->pages = static_cast<std::uint32_t>(pages);
        b->refs.resize(pages);
        buffers.push_back(std::move(b));
        return std::span<std::byte>(*base, pages * kPage);
    }

    /// Moves backlog parts onto rings while slots and pages last; pushes and notifies.
    void issue() {
        if (phase != Phase::connected || queues.empty()) {
            return;
        }
        pushed.assign(queues.size(), 0);
        while (!backlog.empty()) {
            const Part& p = backlog.front();
            if ((p.op == Op::read || p.op == Op::write) && p.length > max_part_bytes()) {
                // Limits shrank across a reconnect: re-split (xen-abi §5.7 "re-split to the new limits").
                Part big = p;
                backlog.pop_front();
                HV_ASSERT(big.io < ios.size() && ios[big.io].live);
                UserIo& u = ios[big.io];
                --u.parts_left;
                std::vector<Part> parts;
                for (std::uint64_t off = 0; off < big.length; off += max_part_bytes()) {
                    parts.push_back(Part{big.io, big.op, big.offset_bytes + off,
                                         std::min(max_part_bytes(), big.length - off), big.buf + off});
                    ++u.parts_left;
                }
                for (auto r = parts.rbegin(); r != parts.rend(); ++r) {
                    backlog.push_front(*r);
                }
                continue;
            }
            const unsigned need = pages_needed(p);
            bool placed = false;
            for (unsigned k = 0; k < queues.size() && !placed; ++k) {
                const unsigned qi = (rr + k) % static_cast<unsigned>(queues.size());
                Queue& q = queues[qi];
                if (q.free_ids.empty() || q.free_pages.size() < need || q.ring.full()) {
                    continue;
                }
                Part part = p;
                backlog.pop_front();
                auto r = place(q, part);
                if (!r) {
                    HV_LOG_RL(error, "blkfront %u: issuing a request failed: %s", devid,
                              r.error().message().c_str());
                    complete_part(part.io, -EIO);
                }
                pushed[qi] = 1;
                rr = qi + 1;
                placed = true;
            }
            if (!placed) {
                break;  // no room anywhere: completions will call issue() again
            }
        }
        for (unsigned qi = 0; qi < queues.size(); ++qi) {
            if (pushed[qi] != 0 && queues[qi].ring.push_requests()) {
                (void)queues[qi].evt.notify();
            }
        }
    }

    /// Gives a request's pages back so that the next request of its size pops the same pages
    /// in the same (ascending) order: place() pops the data pages, then the indirect page. A
    /// part's data pages then stay contiguous in the pool's extent, which lets a trusted
    /// backend do one fixed-buffer I/O for it instead of one iovec per page.
    static void release_pages(Queue& q, Shadow& s) {
        if (s.indirect) {
            q.free_pages.push_back(*s.indirect);
        }
        for (auto it = s.pages.rbegin(); it != s.pages.rend(); ++it) {
            q.free_pages.push_back(*it);
        }
        s.pages.clear();
        s.indirect.reset();
    }

    Result<void> place(Queue& q, const Part& p) {
        const std::uint32_t id = q.free_ids.back();
        Shadow& s = q.shadows[id];
        s.part = p;
        s.pages.clear();
        s.indirect.reset();
        s.in_place = false;
        const auto handle = static_cast<blkif_vdev_t>(devid & 0xFFFF);
        const bool persistent = info.persistent;
        std::vector<GrantRef> temp;  // non-persistent grants made here (revoked on failure)
        auto undo = [&] {
            for (auto ref : temp) {
                (void)end_grant(*q.mem, ref);
            }
            release_pages(q, s);
        };
        if (p.op == Op::discard) {
            blkif_request_discard d{};
            d.operation = BLKIF_OP_DISCARD;
            d.flag = 0;
            d.handle = handle;
            d.id = id;
            d.sector_number = p.offset_bytes / 512;
            d.nr_sectors = p.length / 512;
            blkif_request& slot = q.ring.next_request();
            std::memcpy(static_cast<void*>(&slot), &d, sizeof d);
            s.rsp_op = BLKIF_OP_DISCARD;
        } else if (p.op == Op::flush) {
            blkif_request r{};
            r.operation = info.flush ? BLKIF_OP_FLUSH_DISKCACHE : BLKIF_OP_WRITE_BARRIER;
            r.nr_segments = 0;
            r.handle = handle;
            r.id = id;
            r.sector_number = 0;
            q.ring.next_request() = r;
            s.rsp_op = r.operation;
        } else {
            const bool write = p.op == Op::write;
            const auto nseg = static_cast<unsigned>((p.length + kPage - 1) / kPage);
            seg_scratch.resize(std::max<std::size_t>(seg_scratch.size(), nseg));
            const std::span<blkif_request_segment> segs(seg_scratch.data(), nseg);
            InPlaceBuffer* in_place = in_place_buffer(p);
            s.in_place = in_place != nullptr;
            for (unsigned i = 0; i < nseg; ++i) {
                const std::uint64_t off = std::uint64_t{i} * kPage;
                const std::uint64_t n = std::min<std::uint64_t>(kPage, p.length - off);
                Result<GrantRef> ref = GrantRef(0);
                if (in_place != nullptr) {
                    // The caller's own granted page: no copy in, none out at the response.
                    const auto pg = static_cast<std::uint32_t>(
                        (reinterpret_cast<std::uintptr_t>(p.buf) -
                         reinterpret_cast<std::uintptr_t>(in_place->base)) / kPage + i);
                    ref = grant_buffer_page(*in_place, pg, persistent ? false : write);
                } else {
                    const std::uint32_t pg = q.free_pages.back();
                    q.free_pages.pop_back();
                    s.pages.push_back(pg);
                    PoolPage& page = q.mem->pool[pg];
                    if (write) {
                        std::memcpy(page.data, p.buf + off, n);
                    }
                    // SPEC: persistent grants must be RW (sharp edge 9); others RO for writes.
                    ref = grant_page(page, persistent ? false : write);
                }
                if (!ref) {
                    undo();
                    return fail(ref.error());
                }
                if (!persistent) {
                    temp.push_back(*ref);
                }
                segs[i].gref = ref->value;
                segs[i].first_sect = 0;
                segs[i].last_sect = static_cast<std::uint8_t>(n / 512 - 1);
            }
            if (nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST) {
                blkif_request r{};
                r.operation = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
                r.nr_segments = static_cast<std::uint8_t>(nseg);
                r.handle = handle;
                r.id = id;
                r.sector_number = p.offset_bytes / 512;
                std::copy(segs.begin(), segs.end(), r.seg);
                q.ring.next_request() = r;
                s.rsp_op = r.operation;
            } else {
                const std::uint32_t ip = q.free_pages.back();
                q.free_pages.pop_back();
                s.indirect = ip;
                PoolPage& page = q.mem->pool[ip];
                std::memcpy(page.data, segs.data(), segs.size() * sizeof(blkif_request_segment));
                auto ref = grant_page(page, !persistent);
                if (!ref) {
                    undo();
                    return fail(ref.error());
                }
                if (!persistent) {
                    temp.push_back(*ref);
                }
                blkif_request_indirect r{};
                r.operation = BLKIF_OP_INDIRECT;
                r.indirect_op = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
                r.nr_segments = static_cast<std::uint16_t>(nseg);
                r.id = id;
                r.sector_number = p.offset_bytes / 512;
                r.handle = handle;
                r.indirect_grefs[0] = ref->value;
                blkif_request& slot = q.ring.next_request();
                std::memset(static_cast<void*>(&slot), 0, sizeof slot);
                std::memcpy(static_cast<void*>(&slot), &r, sizeof r);
                s.rsp_op = r.indirect_op;  // SPEC: sharp edge 7
            }
        }
        s.temp_refs = std::move(temp);
        q.free_ids.pop_back();
        s.busy = true;
        q.ring.commit_request();
        return {};
    }

    void poll() {
        if (phase != Phase::connected) {
            return;
        }
        // Polling mode with a caller that spins before sleeping: no final check here, so the
        // backend does not notify responses we take while spinning (and no late event finds
        // the ring empty, which would cost an EVTCHNOP_status round trip); the final check
        // runs in spin_for_responses() when the caller is about to sleep.
        const bool final_check = !(caller_spins && spin.enabled());
        for (unsigned qi = 0; qi < queues.size(); ++qi) {
            const bool event = queues[qi].evt.ack();
            const RING_IDX before = queues[qi].ring.rsp_cons();
            if (!drain(qi, final_check)) {
                return;  // device died
            }
            if (queues[qi].ring.rsp_cons() != before) {
                spin.worked();
            }
            if (event && queues[qi].ring.rsp_cons() == before && !peer_bound(queues[qi])) {
                // The wake-up was the backend's port closing (its process died): hv-min
                // reverted our port to unbound. Re-issue everything after a reconnect.
                HV_WARN("blkfront %u: backend closed queue %u's event channel; reconnecting", devid, qi);
                backend_gone();
                return;
            }
        }
        issue();
    }

    bool spin_for_responses() {
        if (phase != Phase::connected) {
            return false;
        }
        caller_spins = true;
        if (!spin.enabled()) {
            return false;  // poll() did the final check
        }
        const auto budget = spin.budget();
        if (budget.count() > 0 && live_ios != 0) {
            const bool found = spin_until(
                [&] {
                    for (Queue& q : queues) {
                        // GUEST-like: only compared; poll() validates the index before use.
                        if (rings::detail::load_acquire(q.ring.shared().rsp_prod) != q.ring.rsp_cons()) {
                            return true;
                        }
                    }
                    return false;
                },
                budget, SpinYield::every_64);
            if (found) {
                return true;
            }
        }
        // About to sleep: the final check poll() left out (xen-abi §1.5).
        for (Queue& q : queues) {
            auto more = q.ring.final_check_for_responses();
            if (!more || *more) {
                return true;  // responses, or a bad rsp_prod: poll() takes or reports them
            }
        }
        return false;
    }

    bool peer_bound(Queue& q) {
        auto st = hv.evtchn().status(hv.domid(), q.evt.port());
        return !st || st->status == EVTCHNSTAT_interdomain;
    }

    /// The backend went away while we were connected: drop the rings (in-flight parts go back
    /// to the backlog) and ask for a fresh handshake from Initialising.
    void backend_gone() {
        teardown_rings();
        phase = Phase::reconnecting;
        (void)xenbus::switch_state(xs, fe_dir, XenbusStateInitialising);
    }

    /// Takes every response of one queue. False if the backend broke the protocol.
    bool drain(unsigned qi, bool final_check = true) {
        for (;;) {
            Queue& q = queues[qi];
            auto n = q.ring.unconsumed_responses();
            if (!n) {
                (void)protocol_error("impossible rsp_prod");
                return false;
            }
            while (auto rsp = q.ring.take_response()) {
                if (!handle_response(q, *rsp)) {
                    return false;
                }
            }
            if (!final_check) {
                auto left = q.ring.unconsumed_responses();
                if (!left) {
                    (void)protocol_error("impossible rsp_prod");
                    return false;
                }
                if (*left == 0) {
                    return true;
                }
                continue;
            }
            auto more = queues[qi].ring.final_check_for_responses();
            if (!more) {
                (void)protocol_error("impossible rsp_prod");
                return false;
            }
            if (!*more) {
                return true;
            }
        }
    }

    bool handle_response(Queue& q, const blkif_response& rsp) {
        // GUEST-like: the response is a private copy; validate id and operation first.
        if (rsp.id >= q.shadows.size() || !q.shadows[rsp.id].busy) {
            (void)protocol_error("response with an id that is not outstanding");
            return false;
        }
        Shadow& s = q.shadows[rsp.id];
        if (rsp.operation != s.rsp_op) {
            (void)protocol_error("response operation differs from the request's");
            return false;
        }
        bool grants_ok = true;
        for (auto ref : s.temp_refs) {
            grants_ok = end_grant(*q.mem, ref) && grants_ok;
        }
        s.temp_refs.clear();
        if (!grants_ok) {
            // SPEC: sharp edge 8 — a grant still mapped after the response is fatal unless
            // persistent grants were negotiated.
            (void)protocol_error("grant still mapped after its response");
            return false;
        }
        int status = 0;
        if (rsp.status == BLKIF_RSP_OKAY) {
            if (s.part.op == Op::read && !s.in_place) {
                for (std::size_t i = 0; i < s.pages.size(); ++i) {
                    const std::uint64_t off = i * kPage;
                    const std::uint64_t n = std::min<std::uint64_t>(kPage, s.part.length - off);
                    // GUEST-like: the page stays backend-writable; one copy out, no re-read.
                    std::memcpy(s.part.buf + off, q.mem->pool[s.pages[i]].data, n);
                }
            }
        } else if (rsp.status == BLKIF_RSP_EOPNOTSUPP) {
            status = -EOPNOTSUPP;
            if (s.part.op == Op::discard) {
                info.discard = false;
            } else if (s.part.op == Op::flush) {
                info.flush = false;
                info.barrier = false;
            }
        } else {
            status = -EIO;
        }
        release_pages(q, s);
        s.busy = false;
        q.free_ids.push_back(static_cast<std::uint32_t>(rsp.id));
        complete_part(s.part.io, status);
        return true;
    }
};

}  // namespace hv::blkfront

namespace hv::blkfront {

Device::Device(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Device::~Device() {
    if (!impl_) {
        return;
    }
    Impl& d = *impl_;
    if (d.phase != Phase::dead) {
        d.die(-ENODEV);
        (void)xenbus::switch_state(d.xs, d.fe_dir, XenbusStateClosed);
    }
    // A backend that still maps our (persistent) grants lets go once it sees Closed; wait for
    // that (bounded) so the entries return to the table. A grant entry has no wake-up to wait
    // on, so this retries with a growing pause, as Linux's deferred-revocation timer does.
    auto pause = std::chrono::microseconds(200);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!d.revoke_deferred() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(50'000));
    }
    if (!d.deferred.empty()) {
        HV_WARN("blkfront %u: %zu grants still mapped by the backend at close: leaked", d.devid,
                d.deferred.size());
    }
}

Result<std::unique_ptr<Device>> Device::create(hvmin::Services& hv, xs::Client& xs,
                                               std::uint32_t devid, Options o,
                                               CompletionFn on_complete) {
    auto impl = std::make_unique<Impl>(hv, xs, devid, o, std::move(on_complete));
    impl->fe_dir = xenbus::frontend_dir(hv.domid(), "vbd", devid);
    auto be = xs.read(impl->fe_dir + "/backend");
    if (!be) {
        return fail(be.error());
    }
    auto be_id = xenbus::read_uint(xs, impl->fe_dir + "/backend-id", 0x7FEF);
    if (!be_id) {
        return fail(be_id.error());
    }
    impl->be_dir = *be;
    impl->be_id = DomId(static_cast<std::uint16_t>(*be_id));
    impl->token = "blkfront/" + std::to_string(devid);
    auto fw = xs.watch_scoped(impl->fe_dir + "/state", impl->token);
    if (!fw) {
        return fail(fw.error());
    }
    auto bw = xs.watch_scoped(impl->be_dir + "/state", impl->token);
    if (!bw) {
        return fail(bw.error());
    }
    impl->fe_watch = std::move(*fw);
    impl->be_watch = std::move(*bw);
    return std::unique_ptr<Device>(new Device(std::move(impl)));
}

Result<void> Device::on_state_change() { return impl_->on_state_change(); }

Result<void> Device::wait_connected(
    std::chrono::milliseconds timeout,
    const std::function<void(const std::string&, const std::string&)>& other) {
    return xenbus::wait_phase_connected(*impl_, timeout, make_error_code(Errc::device_gone),
                                        make_error_code(Errc::timed_out), other);
}

Result<void> Device::submit(const Io& io) { return impl_->submit(io); }
Result<std::span<std::byte>> Device::alloc_buffer(std::size_t bytes) {
    return impl_->alloc_buffer(bytes);
}
void Device::poll() { impl_->poll(); }

bool Device::spin_for_responses() { return impl_->spin_for_responses(); }

std::vector<int> Device::pollable_fds() const {
    std::vector<int> fds;
    for (const auto& q : impl_->queues) {
        fds.push_back(q.evt.fd());
    }
    return fds;
}

Phase Device::phase() const noexcept { return impl_->phase; }
const DiskInfo& Device::info() const noexcept { return impl_->info; }
std::uint32_t Device::devid() const noexcept { return impl_->devid; }
std::string Device::frontend_dir() const { return impl_->fe_dir; }
std::string Device::backend_dir() const { return impl_->be_dir; }
std::string Device::watch_token() const { return impl_->token; }
std::size_t Device::outstanding() const noexcept { return impl_->live_ios; }
unsigned Device::reconnects() const noexcept { return impl_->reconnects; }

}  // namespace hv::blkfront
