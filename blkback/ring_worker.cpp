// RingWorker: one blkif ring's data plane on its own thread (style.md §9). Layer: L2.
// Threads: create()/stop()/destructor run on the device's control thread; run() and everything
// it calls run on the worker thread only; halted()/stats() are read from anywhere.
#include "blkback/ring_worker.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/intrusive/list.hpp>
#include <boost/intrusive/unordered_set.hpp>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "hv/assert.hpp"
#include "hv/log.hpp"
#include "hv/rings/ring.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/errc.hpp"
#include "hvmin/wire.hpp"

namespace hv::blk {

namespace bi = boost::intrusive;
using rings::RING_IDX;
using rings::XEN_PAGE_SIZE;

namespace {

constexpr std::size_t kHeaderBytes = sizeof(rings::SringHeader);
constexpr std::int16_t kOkay = rings::BLKIF_RSP_OKAY;
constexpr std::int16_t kError = rings::BLKIF_RSP_ERROR;
/// How long stop() waits for in-flight storage I/O before giving up on it (logged).
constexpr auto kDrainTimeout = std::chrono::seconds(10);
/// The worker sleeps until an fd wakes it: no timeout, so a lost wake-up would hang the ring
/// (and the stress tests would catch it) instead of hiding behind a periodic poll. Every path
/// that goes to sleep either armed req_event with the final check (more_requests) or waits for
/// an engine completion that it knows is coming (retry/ordered need I/O in flight).
constexpr int kWaitForever = -1;

/// A cached persistent grant: mapped read-write once, reused by gref.
struct PGrant : bi::list_base_hook<>, bi::unordered_set_base_hook<> {
    std::uint32_t gref = 0;
    hvmin::GrantMapping map;
    unsigned users = 0;
    std::chrono::steady_clock::time_point last_used;
    friend bool operator==(const PGrant& a, const PGrant& b) noexcept { return a.gref == b.gref; }
    friend std::size_t hash_value(const PGrant& g) noexcept { return g.gref * 2654435761U; }
};
struct GrefHash {
    std::size_t operator()(std::uint32_t g) const noexcept { return g * 2654435761U; }
};
struct GrefEqual {
    bool operator()(std::uint32_t g, const PGrant& p) const noexcept { return g == p.gref; }
};

enum class Stage : std::uint8_t {
    free,
    wait_drain,  ///< flush/barrier waiting for every earlier request to finish
    flushing,    ///< queue_flush in flight
    ready,       ///< on the ready list: queue_* (or bounce pages) refused with busy
    copy_in,     ///< copy mode write: its grant copies wait in the batch, then the write
    data,        ///< read/write/discard in flight
    copy_out,    ///< copy mode read done: its grant copies wait in the batch, then the response
    indirect,    ///< copy mode: its indirect page waits in the pass's batched copy, then parse
};

/// Copy mode: indirect pages of one drain pass fetched by one GNTTABOP_copy (at most this many;
/// draining resumes after the batch), instead of one hypercall round trip per request.
constexpr std::uint32_t kIndirectBatch = 32;

/// Fixed-buffer I/O is used when a request's pages form at most this many contiguous runs
/// (each run is one SQE; a scattered 1 MiB request stays one readv/writev).
constexpr std::size_t kMaxFixedRuns = 8;

/// A frontend extent registered with the engine as a fixed buffer (index = position).
struct FixedExtent {
    std::uint32_t id;
    std::byte* base;
    std::size_t bytes;
};

/// One preallocated request slot per ring slot (LX pending_req): no allocation per request.
struct Slot : bi::list_base_hook<> {
    std::uint32_t index = 0;
    Stage stage = Stage::free;
    Request req;
    std::vector<Segment> ind_segs;              // indirect segments (capacity fixed at create)
    std::vector<iovec> iov;                     // one per segment
    std::vector<hvmin::GrantMapping> maps;      // non-persistent mappings of this request
    std::vector<PGrant*> pgrants;               // persistent grants this request uses
    std::vector<std::uint32_t> bounce;          // copy mode: bounce page indices
    std::vector<FixedIovec> fixed;              // map mode: the iovecs as fixed-buffer runs
    std::uint32_t copy_first = 0;               // copy mode: its ops in the batch
    bool copied = false;                        // copy mode write: data is in the bounce pages
};

}  // namespace

struct RingWorker::Impl {
    Impl(hvmin::Services s, RingConfig c) : svc(std::move(s)), cfg(std::move(c)) {}
    // Members in dependency order: destroyed in reverse, so the thread stops first (its
    // destructor is stop()), then the engine (which waits for its I/O) goes before the grant
    // mappings, bounce pages, ring mapping and channel it may still reference.
    hvmin::Services svc;
    RingConfig cfg;
    int halt_fd = -1;
    hvmin::EventChannelBinding evtchn;
    std::vector<hvmin::GrantMapping> ring_maps;
    std::vector<std::byte*> ring_pages;
    unsigned size = 0;
    std::size_t entry_bytes = 0;
    std::size_t rsp_bytes = 0;
    RING_IDX req_cons = 0;
    RING_IDX rsp_prod_pvt = 0;

    // copy mode: bounce pages in this connection's own frame space (DOMID_SELF side of copies)
    std::uint64_t bounce_first_frame = 0;
    std::vector<std::byte*> bounce_pages;
    std::vector<std::uint32_t> bounce_free;
    // Bounce pages indirect pages are copied through (kIndirectBatch of them, never in
    // bounce_free): one per request in ind_slots, whose copy ops are ind_ops.
    std::uint32_t indirect_bounce = 0;
    std::vector<rings::gnttab_copy> ind_ops;
    std::vector<Slot*> ind_slots;
    // Grant copies of every request handled in one pass of the loop go to hv-min together
    // (one GNTTABOP_copy per wire::kMaxBatch ops), not one hypercall per request.
    std::vector<rings::gnttab_copy> copy_ops;
    std::vector<Slot*> copy_slots;

    // persistent grants (map mode): LRU list of unused-or-used entries, bounded by capacity
    std::unique_ptr<PGrant[]> pgrant_store;
    std::size_t pgrant_cap = 0;
    std::vector<bi::unordered_set<PGrant>::bucket_type> pgrant_buckets;
    std::optional<bi::unordered_set<PGrant>> pgrant_set;
    bi::list<PGrant> pgrant_lru;   // cached, most recently used at the back
    bi::list<PGrant> pgrant_free;  // unused storage
    std::atomic<std::size_t> pgrant_count{0};
    std::vector<hvmin::GrantMapping> pgrant_purged;  // unmapped together (one hypercall)
    UniqueFd purge_timer;          // fires when the least recently used grant may be idle
    bool purge_armed = false;
    std::chrono::steady_clock::time_point pass_time;  // start of the current loop pass

    // map mode zero copy: the frontend's extents as io_uring fixed buffers (design §4, §8)
    std::vector<FixedExtent> fixed_extents;  // registered; buf_index = position
    std::vector<FixedExtent> fixed_wanted;   // seen in mappings, registered once I/O drained
    bool fixed_ok = false;                   // map mode, and registering has not failed
    std::vector<iovec> fixed_reg;            // register_buffers argument
    std::array<int, 256> seg_buf{};          // prepare_map scratch: buf_index per segment

    std::unique_ptr<Slot[]> slots;
    std::size_t nslots = 0;
    bi::list<Slot> free_slots;
    unsigned busy = 0;                 // slots not free
    Slot* ordered = nullptr;           // a flush/barrier waiting for the drain
    bi::list<Slot> ready;              // requests refused with busy, retried in order
    std::array<std::byte, XEN_PAGE_SIZE> indirect_copy{};  // private copy of one indirect page
    std::array<IoCompletion, 64> completions{};
    std::array<std::byte, 128> slot_copy{};

    RingStats stats;
    SpinPolicy spin;  // polling mode (cfg.spin): spin while work keeps arriving
    std::atomic<bool> halted{false};
    mutable std::mutex reason_mu;
    std::string reason;
    bool need_notify = false;

    UniqueFd stop_fd;
    std::atomic<bool> stopping{false};
    std::jthread thread;

    std::unique_ptr<BlockEngine> engine;  // declared after slots: destroyed (waits I/O) first

    // ---- ring access across pages (pages need not be contiguous) ----
    rings::SringHeader& header() const noexcept {
        return *reinterpret_cast<rings::SringHeader*>(ring_pages[0]);
    }
    void ring_read(std::size_t off, std::byte* dst, std::size_t len) const noexcept {
        while (len > 0) {
            const std::size_t page = off / XEN_PAGE_SIZE;
            const std::size_t in = off % XEN_PAGE_SIZE;
            const std::size_t n = std::min(len, XEN_PAGE_SIZE - in);
            // GUEST: frontend-writable; copied once into private memory.
            std::memcpy(dst, ring_pages[page] + in, n);
            dst += n;
            off += n;
            len -= n;
        }
    }
    void ring_write(std::size_t off, const std::byte* src, std::size_t len) const noexcept {
        while (len > 0) {
            const std::size_t page = off / XEN_PAGE_SIZE;
            const std::size_t in = off % XEN_PAGE_SIZE;
            const std::size_t n = std::min(len, XEN_PAGE_SIZE - in);
            std::memcpy(ring_pages[page] + in, src, n);
            src += n;
            off += n;
            len -= n;
        }
    }
    std::size_t slot_offset(RING_IDX idx) const noexcept {
        return kHeaderBytes + std::size_t{idx & (size - 1)} * entry_bytes;
    }

    void halt(const std::string& why) {
        if (halted.exchange(true)) {
            return;
        }
        {
            std::lock_guard lk(reason_mu);
            reason = why;
        }
        HV_ERROR("blkback %s: ring halted: %s", cfg.name.c_str(), why.c_str());
        const std::uint64_t one = 1;
        if (halt_fd >= 0) {
            (void)!::write(halt_fd, &one, sizeof one);
        }
    }

    // ---- responses ----
    void respond(std::uint64_t id, std::uint8_t op, std::int16_t status) noexcept {
        if (status != kOkay) {
            stats.add(stats.errors);
        }
        if (halted.load(std::memory_order_relaxed)) {
            return;  // the ring is no longer trusted: nothing more is written to it
        }
        HV_ASSERT(req_cons - rsp_prod_pvt > 0);
        std::array<std::byte, 16> buf{};
        if (cfg.abi == BlkifAbi::native) {
            rings::blkif_response r{};
            r.id = id;
            r.operation = op;
            r.status = status;
            std::memcpy(buf.data(), &r, sizeof r);
        } else {
            rings::blkif_x86_32_response r{};
            r.id = id;
            r.operation = op;
            r.status = status;
            std::memcpy(buf.data(), &r, sizeof r);
        }
        ring_write(slot_offset(rsp_prod_pvt), buf.data(), rsp_bytes);
        ++rsp_prod_pvt;
        need_notify = true;
    }

    void push_responses() noexcept {
        if (!need_notify || halted.load(std::memory_order_relaxed)) {
            return;
        }
        need_notify = false;
        auto& h = header();
        // ORDER: release store of rsp_prod pairs with the frontend's acquire load; the fence
        // inside pairs with its rsp_event store + fence in its final check (xen-abi §1.4).
        if (rings::detail::publish_and_check_notify(h.rsp_prod, h.rsp_event, rsp_prod_pvt)) {
            (void)evtchn.notify();
        }
    }

    // ---- slots ----
    Slot* take_slot() noexcept {
        if (free_slots.empty()) {
            return nullptr;
        }
        Slot& s = free_slots.front();
        free_slots.pop_front();
        ++busy;
        return &s;
    }
    void release_data(Slot& s) noexcept {
        s.iov.clear();
        s.fixed.clear();
        for (auto& m : s.maps) {
            (void)m.reset();  // unmap before the response (sharp edge 8)
        }
        s.maps.clear();
        for (PGrant* g : s.pgrants) {
            --g->users;
            g->last_used = pass_time;
        }
        s.pgrants.clear();
        for (std::uint32_t b : s.bounce) {
            bounce_free.push_back(b);
        }
        s.bounce.clear();
    }
    void finish(Slot& s, std::int16_t status) noexcept {
        release_data(s);
        s.copied = false;
        respond(s.req.id, s.req.operation, status);
        s.stage = Stage::free;
        --busy;
        free_slots.push_back(s);
    }

    // ---- persistent grants ----
    PGrant* pgrant_find(std::uint32_t gref) noexcept {
        auto it = pgrant_set->find(gref, GrefHash{}, GrefEqual{});
        if (it == pgrant_set->end()) {
            return nullptr;
        }
        pgrant_lru.erase(pgrant_lru.iterator_to(*it));
        pgrant_lru.push_back(*it);
        it->last_used = pass_time;
        return &*it;
    }
    PGrant* pgrant_slot() noexcept {
        if (!pgrant_free.empty()) {
            PGrant& g = pgrant_free.front();
            pgrant_free.pop_front();
            return &g;
        }
        // Evict the least recently used grant that no request is using.
        for (auto it = pgrant_lru.begin(); it != pgrant_lru.end(); ++it) {
            if (it->users == 0) {
                PGrant& g = *it;
                pgrant_lru.erase(it);
                pgrant_set->erase(pgrant_set->iterator_to(g));
                (void)g.map.reset();
                pgrant_count.fetch_sub(1, std::memory_order_relaxed);
                return &g;
            }
        }
        return nullptr;  // every cached grant is in use: map this one non-persistently
    }

    /// Caches a fresh mapping as a persistent grant in a slot from pgrant_slot().
    void pgrant_add(PGrant& g, std::uint32_t gref, hvmin::GrantMapping m, unsigned users) {
        g.gref = gref;
        g.map = std::move(m);
        g.users = users;
        g.last_used = pass_time;
        pgrant_set->insert(g);
        pgrant_lru.push_back(g);
        pgrant_count.fetch_add(1, std::memory_order_relaxed);
    }

    /// Map mode with persistent grants: the indirect page through the persistent grant cache
    /// (Linux blkfront grants indirect pages read-write and reuses them, as data pages), so a
    /// request costs no map/unmap round trip for it. nullptr: not cacheable (cache full of
    /// grants in use, or the frontend granted it read-only): the caller maps it once instead.
    const std::byte* cached_indirect_page(GrantRef ref) {
        if (PGrant* g = pgrant_find(ref.get())) {
            return g->map.data();
        }
        PGrant* g = pgrant_slot();
        if (g == nullptr) {
            return nullptr;
        }
        auto m = svc.grants().map(cfg.frontend, ref, /*readonly=*/false);
        if (!m) {
            pgrant_free.push_back(*g);
            return nullptr;
        }
        pgrant_add(*g, ref.get(), std::move(*m), 0);
        return g->map.data();
    }

    /// Unmaps (in one batch) the cached grants no request has used for persistent_grant_idle,
    /// as Linux blkback's purge of unused persistent grants. The LRU is ordered by last lookup,
    /// so the walk stops at the first grant still fresh.
    void purge_idle() {
        const auto limit = pass_time - cfg.persistent_grant_idle;
        for (auto it = pgrant_lru.begin(); it != pgrant_lru.end();) {
            PGrant& g = *it;
            if (g.last_used > limit) {
                break;
            }
            if (g.users != 0) {
                ++it;
                continue;
            }
            it = pgrant_lru.erase(it);
            pgrant_set->erase(pgrant_set->iterator_to(g));
            pgrant_purged.push_back(std::move(g.map));
            pgrant_free.push_back(g);
            pgrant_count.fetch_sub(1, std::memory_order_relaxed);
            stats.add(stats.pgnt_purged);
        }
        if (!pgrant_purged.empty()) {
            if (auto r = svc.grants().unmap_batch(pgrant_purged); !r) {
                HV_LOG_RL(warn, "blkback %s: unmapping idle persistent grants: %s", cfg.name.c_str(),
                          r.error().message().c_str());
            }
            pgrant_purged.clear();
        }
    }

    /// Arms the purge timer for when the least recently used cached grant turns idle.
    void arm_purge() {
        if (!purge_timer.valid() || purge_armed || pgrant_lru.empty()) {
            return;
        }
        const auto due = pgrant_lru.front().last_used + cfg.persistent_grant_idle - pass_time;
        const auto ns = std::max<std::int64_t>(
            1'000'000, std::chrono::duration_cast<std::chrono::nanoseconds>(due).count());
        itimerspec its{};
        its.it_value.tv_sec = ns / 1'000'000'000;
        its.it_value.tv_nsec = ns % 1'000'000'000;
        if (::timerfd_settime(purge_timer.get(), 0, &its, nullptr) == 0) {
            purge_armed = true;
        }
    }

    // ---- data preparation ----
    /// Map mode: maps (or finds) every segment's grant and builds the iovecs.
    Result<void> prepare_map(Slot& s) {
        const auto segs = s.req.segments();
        HV_ASSERT(segs.size() <= 256);
        const bool to_guest = s.req.kind == RequestKind::read;
        std::array<hvmin::MapRequest, 256> batch{};
        std::array<std::uint16_t, 256> batch_seg{};
        std::size_t nb = 0;
        s.iov.resize(segs.size());
        for (std::size_t i = 0; i < segs.size(); ++i) {
            if (cfg.persistent) {
                if (PGrant* g = pgrant_find(segs[i].gref.get())) {
                    ++g->users;
                    s.pgrants.push_back(g);
                    s.iov[i] = iovec{g->map.data() + segs[i].offset_bytes(), segs[i].len_bytes()};
                    seg_buf[i] = fixed_index(g->map);
                    continue;
                }
            }
            // Persistent grants are mapped read-write always (xen-abi §5.6); others only as
            // the direction needs (a read writes the guest page).
            batch[nb] = hvmin::MapRequest{cfg.frontend, segs[i].gref, !cfg.persistent && !to_guest};
            batch_seg[nb] = static_cast<std::uint16_t>(i);
            ++nb;
        }
        if (nb == 0) {
            build_fixed(s);
            return {};
        }
        auto mapped = svc.grants().map_batch(std::span(batch.data(), nb));
        if (!mapped) {
            return fail(mapped.error());
        }
        std::error_code first_error;
        for (std::size_t k = 0; k < nb; ++k) {
            auto& r = (*mapped)[k];
            const Segment& seg = segs[batch_seg[k]];
            if (!r) {
                if (!first_error) {
                    first_error = r.error();
                }
                continue;
            }
            s.iov[batch_seg[k]] = iovec{r->data() + seg.offset_bytes(), seg.len_bytes()};
            seg_buf[batch_seg[k]] = fixed_index(*r);
            PGrant* g = cfg.persistent ? pgrant_slot() : nullptr;
            if (g != nullptr) {
                pgrant_add(*g, seg.gref.get(), std::move(*r), 1);
                s.pgrants.push_back(g);
            } else {
                s.maps.push_back(std::move(*r));
            }
        }
        if (first_error) {
            return fail(first_error);
        }
        build_fixed(s);
        return {};
    }

    /// The fixed-buffer index of the extent a mapping lies in; -1 if not registered (yet:
    /// the extent is then noted for registration).
    int fixed_index(const hvmin::GrantMapping& m) {
        if (!fixed_ok) {
            return -1;
        }
        const auto e = m.extent();
        if (!e) {
            return -1;
        }
        for (std::size_t i = 0; i < fixed_extents.size(); ++i) {
            if (fixed_extents[i].id == e->id) {
                return static_cast<int>(i);
            }
        }
        if (std::none_of(fixed_wanted.begin(), fixed_wanted.end(),
                         [&](const FixedExtent& w) { return w.id == e->id; })) {
            fixed_wanted.push_back(FixedExtent{e->id, e->base, e->bytes});
        }
        return -1;
    }

    /// Turns the slot's iovecs into fixed-buffer runs (contiguous pages of one extent merged)
    /// when every page is in a registered extent and the runs are few; else leaves it empty.
    void build_fixed(Slot& s) {
        s.fixed.clear();
        if (!fixed_ok) {
            return;
        }
        for (std::size_t i = 0; i < s.iov.size(); ++i) {
            if (seg_buf[i] < 0) {
                s.fixed.clear();
                return;
            }
            auto* base = static_cast<std::byte*>(s.iov[i].iov_base);
            const auto len = static_cast<std::uint32_t>(s.iov[i].iov_len);
            const auto idx = static_cast<std::uint32_t>(seg_buf[i]);
            if (!s.fixed.empty()) {
                FixedIovec& last = s.fixed.back();
                if (last.buf_index == idx && static_cast<std::byte*>(last.base) + last.len == base) {
                    last.len += len;
                    continue;
                }
            }
            if (s.fixed.size() == kMaxFixedRuns) {
                s.fixed.clear();
                return;
            }
            s.fixed.push_back(FixedIovec{base, len, idx});
        }
    }

    /// Registers the extents seen since the last registration (all of them, as io_uring
    /// replaces the table) once nothing is in flight; drain() pauses until then.
    void maybe_register() {
        if (fixed_wanted.empty() || engine->in_flight() != 0) {
            return;
        }
        if (!fixed_ok) {
            fixed_wanted.clear();
            return;
        }
        fixed_reg.clear();
        for (const auto& e : fixed_extents) {
            fixed_reg.push_back(iovec{e.base, e.bytes});
        }
        for (const auto& e : fixed_wanted) {
            fixed_reg.push_back(iovec{e.base, e.bytes});
        }
        if (auto r = engine->register_buffers(fixed_reg); !r) {
            HV_WARN("blkback %s: registering the frontend's memory as fixed buffers: %s; "
                    "plain readv/writev from now on", cfg.name.c_str(), r.error().message().c_str());
            fixed_ok = false;
            fixed_extents.clear();
        } else {
            fixed_extents.insert(fixed_extents.end(), fixed_wanted.begin(), fixed_wanted.end());
        }
        fixed_wanted.clear();
    }
    bool register_pending() const noexcept { return fixed_ok && !fixed_wanted.empty(); }

    /// Copy mode: takes bounce pages; for writes copies the guest's data into them.
    Result<void> prepare_copy(Slot& s) {
        const auto segs = s.req.segments();
        if (bounce_free.size() < segs.size()) {
            return fail(make_error_code(Errc::busy));
        }
        s.iov.resize(segs.size());
        for (std::size_t i = 0; i < segs.size(); ++i) {
            const std::uint32_t b = bounce_free.back();
            bounce_free.pop_back();
            s.bounce.push_back(b);
            s.iov[i] = iovec{bounce_pages[b] + segs[i].offset_bytes(), segs[i].len_bytes()};
        }
        return {};
    }

    /// Adds the GNTTABOP_copy ops between the guest's segment pages and the slot's bounce
    /// pages to the batch; flush_copies() runs them and moves the slot on.
    void queue_copies(Slot& s, bool to_guest) {
        const auto segs = s.req.segments();
        s.copy_first = static_cast<std::uint32_t>(copy_ops.size());
        s.stage = to_guest ? Stage::copy_out : Stage::copy_in;
        copy_slots.push_back(&s);
        for (std::size_t i = 0; i < segs.size(); ++i) {
            rings::gnttab_copy op{};
            rings::gnttab_copy_ptr guest{};
            guest.u.ref = segs[i].gref.get();
            guest.domid = cfg.frontend.get();
            guest.offset = static_cast<std::uint16_t>(segs[i].offset_bytes());
            rings::gnttab_copy_ptr local{};
            local.u.gmfn = bounce_first_frame + s.bounce[i];
            local.domid = rings::DOMID_SELF;
            local.offset = static_cast<std::uint16_t>(segs[i].offset_bytes());
            op.len = static_cast<std::uint16_t>(segs[i].len_bytes());
            if (to_guest) {
                op.source = local;
                op.dest = guest;
                op.flags = rings::GNTCOPY_dest_gref;
            } else {
                op.source = guest;
                op.dest = local;
                op.flags = rings::GNTCOPY_source_gref;
            }
            copy_ops.push_back(op);
        }
    }

    /// Runs the batched copies, then answers the reads and starts the writes that waited.
    void flush_copies() {
        if (copy_slots.empty()) {
            return;
        }
        std::error_code transport;
        for (std::size_t at = 0; at < copy_ops.size(); at += hvmin::wire::kMaxBatch) {
            const std::size_t n = std::min<std::size_t>(hvmin::wire::kMaxBatch, copy_ops.size() - at);
            if (auto r = svc.grants().copy(std::span(copy_ops.data() + at, n)); !r) {
                transport = r.error();
                break;
            }
        }
        for (Slot* sp : copy_slots) {
            Slot& sl = *sp;
            std::error_code err = transport;
            for (std::size_t i = 0; !err && i < sl.req.segments().size(); ++i) {
                const auto st = copy_ops[sl.copy_first + i].status;
                if (st != rings::GNTST_okay) {
                    err = hvmin::gntst_error(st);
                }
            }
            if (err) {
                HV_LOG_RL(warn, "blkback %s: request %llu: grant copy: %s", cfg.name.c_str(),
                          static_cast<unsigned long long>(sl.req.id), err.message().c_str());
                finish(sl, kError);
            } else if (sl.stage == Stage::copy_out) {
                finish(sl, kOkay);
            } else {
                sl.copied = true;
                if (!start_data(sl)) {
                    ready.push_back(sl);
                }
            }
        }
        copy_slots.clear();
        copy_ops.clear();
    }

    /// Map mode: fetches the indirect page once into private memory and parses the segments.
    bool fetch_indirect(Slot& s) {
        HV_ASSERT(s.req.nr_indirect_pages == 1);  // 256 segments max ⇒ one page (xen-abi §5.6)
        const GrantRef ref = s.req.indirect_grefs[0];
        const std::byte* page = cfg.persistent ? cached_indirect_page(ref) : nullptr;
        std::optional<hvmin::GrantMapping> once;  // unmapped on return
        if (page == nullptr) {
            auto m = svc.grants().map(cfg.frontend, ref, /*readonly=*/true);
            if (!m) {
                HV_LOG_RL(warn, "blkback %s: indirect page gref %u: %s", cfg.name.c_str(),
                          ref.get(), m.error().message().c_str());
                return false;
            }
            once.emplace(std::move(*m));
            page = once->data();
        }
        // GUEST: copied once, then only the copy is parsed (never read twice).
        std::memcpy(indirect_copy.data(), page, XEN_PAGE_SIZE);
        return parse_indirect(s);
    }

    bool parse_indirect(Slot& s) {
        auto ok = parse_indirect_segments(s.req, indirect_copy, s.ind_segs, cfg.limits);
        if (!ok) {
            HV_LOG_RL(warn, "blkback %s: indirect segments rejected: %s", cfg.name.c_str(),
                      ok.error().error.message().c_str());
            return false;
        }
        return true;
    }

    /// Copy mode: adds the request's indirect page to the pass's batched copy (into a bounce
    /// page of its own: data pages may all be taken by requests in flight, and the request must
    /// not fail for that; it waits for data pages in start_data instead).
    void queue_indirect(Slot& s) {
        HV_ASSERT(s.req.nr_indirect_pages == 1 && ind_slots.size() < kIndirectBatch);
        rings::gnttab_copy op{};
        op.source.u.ref = s.req.indirect_grefs[0].get();
        op.source.domid = cfg.frontend.get();
        op.dest.u.gmfn = bounce_first_frame + indirect_bounce + ind_slots.size();
        op.dest.domid = rings::DOMID_SELF;
        op.len = static_cast<std::uint16_t>(XEN_PAGE_SIZE);
        op.flags = rings::GNTCOPY_source_gref;
        ind_ops.push_back(op);
        ind_slots.push_back(&s);
        s.stage = Stage::indirect;
    }

    /// Copy mode: runs the batched indirect-page copies (one hypercall), then parses each
    /// request's segments and starts it. Every slot of the batch leaves Stage::indirect.
    void flush_indirect() {
        if (ind_slots.empty()) {
            return;
        }
        std::error_code transport;
        if (auto r = svc.grants().copy(ind_ops); !r) {
            transport = r.error();
        }
        for (std::size_t i = 0; i < ind_slots.size(); ++i) {
            Slot& sl = *ind_slots[i];
            const auto st = ind_ops[i].status;
            if (transport || st != rings::GNTST_okay) {
                HV_LOG_RL(warn, "blkback %s: indirect page gref %u not copied: %s", cfg.name.c_str(),
                          sl.req.indirect_grefs[0].get(),
                          (transport ? transport : hvmin::gntst_error(st)).message().c_str());
                finish(sl, kError);
                continue;
            }
            // GUEST: the bounce page holds the frontend's bytes as copied; copied once more
            // into private memory, then only that copy is parsed.
            std::memcpy(indirect_copy.data(), bounce_pages[indirect_bounce + i], XEN_PAGE_SIZE);
            if (!parse_indirect(sl)) {
                finish(sl, kError);
                continue;
            }
            start_parsed(sl);
        }
        ind_slots.clear();
        ind_ops.clear();
    }

    // ---- starting I/O ----
    /// Queues the slot's data I/O (read, write, discard). Returns false on busy (retry later).
    bool start_data(Slot& s) {
        const std::uint64_t cookie = s.index;
        Result<void> q;
        if (s.req.kind == RequestKind::discard) {
            if (s.req.nr_sectors == 0) {
                finish(s, kOkay);  // Linux answers an empty discard without I/O
                return true;
            }
            q = engine->queue_discard(s.req.offset_bytes(), s.req.len_bytes(), cookie);
        } else {
            if (s.iov.empty()) {
                auto prep = cfg.mode == DataMode::map ? prepare_map(s) : prepare_copy(s);
                if (!prep) {
                    release_data(s);
                    if (prep.error() == Errc::busy) {
                        s.stage = Stage::ready;
                        return false;  // bounce pages exhausted: retry after completions
                    }
                    HV_LOG_RL(warn, "blkback %s: request %llu: grants: %s", cfg.name.c_str(),
                              static_cast<unsigned long long>(s.req.id),
                              prep.error().message().c_str());
                    finish(s, kError);
                    return true;
                }
            }
            const bool write = s.req.kind != RequestKind::read;
            if (write && cfg.mode == DataMode::copy && !s.copied) {
                queue_copies(s, /*to_guest=*/false);
                return true;  // the write starts once flush_copies() has the data
            }
            if (!s.fixed.empty()) {
                q = write ? engine->queue_writev_fixed(s.req.offset_bytes(), s.fixed, cookie)
                          : engine->queue_readv_fixed(s.req.offset_bytes(), s.fixed, cookie);
                if (q) {
                    stats.add(stats.fixed_req);
                }
            } else {
                q = write ? engine->queue_writev(s.req.offset_bytes(), s.iov, cookie)
                          : engine->queue_readv(s.req.offset_bytes(), s.iov, cookie);
            }
        }
        if (!q) {
            if (q.error() == Errc::busy) {
                s.stage = Stage::ready;
                return false;
            }
            finish(s, to_blkif_status(q.error()));
            return true;
        }
        s.stage = Stage::data;
        return true;
    }

    /// Starts a flush/barrier once nothing else is in flight.
    bool start_ordered(Slot& s) {
        auto q = engine->queue_flush(s.index);
        if (!q) {
            if (q.error() == Errc::busy) {
                return false;
            }
            finish(s, to_blkif_status(q.error()));
            return true;
        }
        s.stage = Stage::flushing;
        return true;
    }

    void count(const Request& r) noexcept {
        switch (r.kind) {
            case RequestKind::read:
                stats.add(stats.rd_req);
                stats.add(stats.rd_sect, r.nr_sectors);
                break;
            case RequestKind::write:
                stats.add(stats.wr_req);
                stats.add(stats.wr_sect, r.nr_sectors);
                break;
            case RequestKind::flush:
            case RequestKind::barrier:
                stats.add(stats.f_req);
                stats.add(stats.wr_sect, r.nr_sectors);
                break;
            case RequestKind::discard:
                stats.add(stats.ds_req);
                break;
        }
    }

    /// Takes one request out of the ring and starts it. False: stop draining for now.
    bool take_one() {
        Slot* s = take_slot();
        if (s == nullptr) {
            stats.add(stats.oo_req);
            return false;
        }
        ring_read(slot_offset(req_cons), slot_copy.data(), entry_bytes);
        std::atomic_signal_fence(std::memory_order_seq_cst);  // no re-fetch from the slot
        ++req_cons;
        auto parsed = parse(std::span<const std::byte>(slot_copy.data(), entry_bytes), cfg.abi,
                            cfg.limits);
        if (!parsed) {
            const Rejection& rej = parsed.error();
            HV_LOG_RL(warn, "blkback %s: request %llu rejected: %s", cfg.name.c_str(),
                      static_cast<unsigned long long>(rej.id), rej.error.message().c_str());
            s->req = Request{};
            s->req.id = rej.id;
            s->req.operation = rej.operation;
            finish(*s, to_blkif_status(rej.error));
            return true;
        }
        s->req = *parsed;
        if (s->req.indirect && cfg.mode == DataMode::copy) {
            queue_indirect(*s);
            return ind_slots.size() < kIndirectBatch;  // full: flush_indirect(), then drain on
        }
        if (s->req.indirect && !fetch_indirect(*s)) {
            finish(*s, kError);
            return true;
        }
        return start_parsed(*s);
    }

    /// Starts a parsed request (segments known). False: stop draining for now.
    bool start_parsed(Slot& s) {
        count(s.req);
        if (s.req.kind == RequestKind::flush || s.req.kind == RequestKind::barrier) {
            s.stage = Stage::wait_drain;
            ordered = &s;
            return false;  // nothing new starts until the flush has been issued
        }
        if (!start_data(s)) {
            ready.push_back(s);
            stats.add(stats.oo_req);
            return false;
        }
        return true;
    }

    /// Drains the ring; copy mode's indirect pages go in batches of kIndirectBatch.
    void drain() {
        for (;;) {
            drain_ring();
            const bool batch_full = ind_slots.size() == kIndirectBatch;
            flush_indirect();
            if (!batch_full) {
                return;
            }
        }
    }

    /// Takes requests until the ring is empty, or halted, or a request has to wait.
    void drain_ring() {
        if (halted.load(std::memory_order_relaxed)) {
            return;
        }
        for (;;) {
            if (ordered != nullptr || !ready.empty() || register_pending()) {
                return;
            }
            auto& h = header();
            // ORDER: acquire pairs with the frontend's release store of req_prod (its wmb).
            const RING_IDX prod = rings::detail::load_acquire(h.req_prod);
            if (static_cast<RING_IDX>(prod - rsp_prod_pvt) > size) {
                char why[128];
                std::snprintf(why, sizeof why,
                              "producer index overflow (req_prod %u, rsp_prod_pvt %u, ring %u)",
                              prod, rsp_prod_pvt, size);
                halt(why);
                return;
            }
            if (prod == req_cons) {
                return;
            }
            while (req_cons != prod && static_cast<RING_IDX>(req_cons - rsp_prod_pvt) < size) {
                if (!take_one()) {
                    return;
                }
            }
        }
    }

    void progress_blocked() {
        maybe_register();
        // Every waiting request is tried, not just the first: one waiting for bounce pages
        // must not block one behind it that holds pages and waits for the engine.
        for (auto it = ready.begin(); it != ready.end();) {
            Slot& s = *it;
            it = ready.erase(it);
            if (!start_data(s)) {
                ready.insert(it, s);
            }
        }
        if (ordered != nullptr && ordered->stage == Stage::wait_drain && busy == 1) {
            if (!start_ordered(*ordered)) {
                return;
            }
            if (ordered->stage == Stage::free) {
                ordered = nullptr;
            }
        }
    }

    void complete(Slot& s, std::int32_t result) {
        if (s.stage == Stage::flushing) {
            if (result < 0 || s.req.segments().empty()) {
                if (ordered == &s) {
                    ordered = nullptr;
                }
                finish(s, to_blkif_status(result));
                return;
            }
            // Flush done: now the request's own data (REQ_PREFLUSH semantics).
            if (ordered == &s) {
                ordered = nullptr;
            }
            if (!start_data(s)) {
                ready.push_back(s);
            }
            return;
        }
        std::int16_t status = to_blkif_status(result);
        if (result >= 0 && s.req.kind != RequestKind::discard &&
            static_cast<std::uint64_t>(result) != s.req.len_bytes()) {
            status = kError;  // short transfer
        }
        if (status == kOkay && cfg.mode == DataMode::copy && s.req.kind == RequestKind::read) {
            queue_copies(s, /*to_guest=*/true);  // answered by flush_copies()
            return;
        }
        finish(s, status);
    }

    unsigned reap() {
        unsigned total = 0;
        for (;;) {
            const unsigned n = engine->reap(completions);
            for (unsigned i = 0; i < n; ++i) {
                const auto idx = completions[i].cookie;
                HV_ASSERT(idx < nslots && slots[idx].stage != Stage::free);
                complete(slots[idx], completions[i].result);
            }
            total += n;
            if (n < completions.size()) {
                flush_copies();
                return total;
            }
        }
    }

    void submit() {
        if (auto r = engine->submit(); !r) {
            HV_LOG_RL(error, "blkback %s: submit: %s", cfg.name.c_str(), r.error().message().c_str());
        }
    }

    /// Polling mode: spins (within the policy's window) until a request is on the ring or a
    /// completion waits. Done before the final check, so req_event stays where the last check
    /// left it and the frontend need not notify requests that arrive while we spin. True: work.
    bool spin_for_work() {
        const auto budget = spin.budget();
        if (budget.count() <= 0 || halted.load(std::memory_order_relaxed)) {
            return false;
        }
        const bool want_requests = ordered == nullptr && ready.empty() && !register_pending();
        const bool want_io = engine->in_flight() > 0;
        if (!want_requests && !want_io) {
            return false;
        }
        auto& h = header();
        const bool found = spin_until(
            [&] {
                return (want_requests && rings::detail::load_acquire(h.req_prod) != req_cons) ||
                       (want_io && engine->has_completions()) ||
                       stopping.load(std::memory_order_relaxed);
            },
            budget, SpinYield::every_64);
        if (found) {
            stats.add(stats.spin_hits);
        }
        return found;
    }

    /// Final check (xen-abi §1.5): true if more requests arrived meanwhile.
    bool more_requests() {
        if (halted.load(std::memory_order_relaxed) || ordered != nullptr || !ready.empty() ||
            register_pending()) {
            return false;
        }
        auto& h = header();
        if (rings::detail::load_acquire(h.req_prod) != req_cons) {
            return true;
        }
        rings::detail::store_relaxed(h.req_event, req_cons + 1);
        // ORDER: full fence between publishing req_event and re-reading req_prod, pairing with
        // the frontend's fence between its req_prod store and its req_event load.
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return rings::detail::load_acquire(h.req_prod) != req_cons;
    }

    void run() {
        std::array<pollfd, 4> fds{};
        fds[0] = {evtchn.fd(), POLLIN, 0};
        fds[1] = {engine->notify_fd(), POLLIN, 0};
        fds[2] = {stop_fd.get(), POLLIN, 0};
        fds[3] = {purge_timer.valid() ? purge_timer.get() : -1, POLLIN, 0};
        while (!stopping.load(std::memory_order_acquire)) {
            pass_time = std::chrono::steady_clock::now();
            if (purge_armed && (fds[3].revents & POLLIN) != 0) {
                std::uint64_t expirations = 0;
                (void)!::read(purge_timer.get(), &expirations, sizeof expirations);
                purge_armed = false;
                purge_idle();
            }
            fds[3].revents = 0;
            // Acked at every pass, not only when poll() saw it readable: a notify that lands
            // while a pass runs would otherwise leave the eventfd readable, and the next poll()
            // would return at once for a pass that finds nothing and re-arms req_event, so the
            // frontend notifies again (tried: 4 KiB QD32 runs then all showed the high end of
            // the loaded machine's 0.3-2 syscalls per I/O; not a saving worth that risk).
            (void)evtchn.ack();
            const RING_IDX cons_before = req_cons;
            drain();
            flush_copies();
            progress_blocked();
            flush_copies();
            submit();
            const unsigned reaped = reap();
            progress_blocked();
            flush_copies();
            submit();
            push_responses();
            arm_purge();
            if (req_cons != cons_before || reaped > 0) {
                spin.worked();
            }
            if (spin_for_work() || more_requests()) {
                continue;
            }
            if (::poll(fds.data(), fds.size(), kWaitForever) < 0 && errno != EINTR) {
                HV_ERROR("blkback %s: poll: %s", cfg.name.c_str(), std::strerror(errno));
                break;
            }
        }
        // Drain: the I/O in flight may target guest pages, which stay mapped until it is done.
        const auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
        while (engine->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
            submit();
            pollfd p{engine->notify_fd(), POLLIN, 0};
            (void)::poll(&p, 1, 100);
            reap();
        }
        if (engine->in_flight() > 0) {
            HV_ERROR("blkback %s: %u requests still in flight at stop", cfg.name.c_str(),
                     engine->in_flight());
        }
        push_responses();
    }
};

RingWorker::RingWorker(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

RingWorker::~RingWorker() {
    stop();
    if (impl_) {
        // Teardown order: engine (its I/O already drained by run()), then data mappings, then
        // persistent grants, the ring and the channel (members destroyed in reverse order).
        impl_->engine.reset();
        for (std::size_t i = 0; i < impl_->nslots; ++i) {
            impl_->release_data(impl_->slots[i]);
        }
        impl_->pgrant_lru.clear();
        impl_->pgrant_free.clear();
        if (impl_->pgrant_set) {
            impl_->pgrant_set->clear();
        }
    }
}

void RingWorker::stop() noexcept {
    if (!impl_ || !impl_->thread.joinable()) {
        return;
    }
    impl_->stopping.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(impl_->stop_fd.get(), &one, sizeof one);
    impl_->thread.join();
}

bool RingWorker::halted() const noexcept { return impl_->halted.load(std::memory_order_acquire); }

std::string RingWorker::halt_reason() const {
    std::lock_guard lk(impl_->reason_mu);
    return impl_->reason;
}

RingStatsSnapshot RingWorker::stats() const noexcept { return impl_->stats.snapshot(); }
unsigned RingWorker::ring_size() const noexcept { return impl_->size; }
std::size_t RingWorker::persistent_grants() const noexcept {
    return impl_->pgrant_count.load(std::memory_order_relaxed);
}

Result<std::unique_ptr<RingWorker>> RingWorker::create(hvmin::Services svc,
                                                       std::unique_ptr<BlockEngine> engine,
                                                       RingConfig cfg, int halt_fd) {
    const std::size_t pages = cfg.ring_refs.size();
    if (pages == 0 || pages > rings::max_ring_pages || (pages & (pages - 1)) != 0 || !engine) {
        return fail(make_error_code(Errc::invalid_argument));
    }
    auto impl = std::make_unique<Impl>(std::move(svc), std::move(cfg));
    Impl& w = *impl;
    w.halt_fd = halt_fd;
    w.engine = std::move(engine);
    if (w.cfg.mode == DataMode::copy) {
        w.cfg.persistent = false;
    }
    w.fixed_ok = w.cfg.mode == DataMode::map && w.cfg.fixed_buffers;
    w.spin = SpinPolicy(w.cfg.spin);

    // Ring pages: mapped read-write; each stays where libhv put it (ring_read/write span pages).
    std::vector<hvmin::MapRequest> reqs;
    for (GrantRef r : w.cfg.ring_refs) {
        reqs.push_back({w.cfg.frontend, r, false});
    }
    auto mapped = w.svc.grants().map_batch(reqs);
    if (!mapped) {
        return fail(mapped.error());
    }
    for (auto& m : *mapped) {
        if (!m) {
            return fail(m.error());
        }
        w.ring_pages.push_back(m->data());
        w.ring_maps.push_back(std::move(*m));
    }
    w.entry_bytes = blkif_entry_size(w.cfg.abi);
    w.rsp_bytes = w.cfg.abi == BlkifAbi::native ? sizeof(rings::blkif_response)
                                                : sizeof(rings::blkif_x86_32_response);
    w.size = rings::ring_entries(pages * XEN_PAGE_SIZE, w.entry_bytes);
    // The frontend initialised the ring (SHARED_RING_INIT); we start where it says we are
    // (0 on a fresh ring). GUEST: a hostile value only makes our indices odd, never unsafe.
    w.rsp_prod_pvt = rings::detail::load_acquire(w.header().rsp_prod);
    w.req_cons = w.rsp_prod_pvt;

    auto bound = w.svc.evtchn().bind_interdomain(w.cfg.frontend, w.cfg.port);
    if (!bound) {
        return fail(bound.error());
    }
    w.evtchn = std::move(*bound);

    const unsigned max_segs = std::max<unsigned>(rings::BLKIF_MAX_SEGMENTS_PER_REQUEST,
                                                 w.cfg.limits.max_indirect_segments);
    w.slots = std::make_unique<Slot[]>(w.size);
    w.nslots = w.size;
    for (std::uint32_t i = 0; i < w.size; ++i) {
        Slot& s = w.slots[i];
        s.index = i;
        s.ind_segs.resize(max_segs);
        s.iov.reserve(max_segs);
        s.maps.reserve(max_segs);
        s.pgrants.reserve(max_segs);
        s.bounce.reserve(max_segs);
        s.fixed.reserve(kMaxFixedRuns);
        w.free_slots.push_back(s);
    }
    w.copy_slots.reserve(w.size);

    if (w.cfg.mode == DataMode::copy) {
        const auto nbounce = static_cast<std::uint32_t>(
            std::max<std::size_t>(std::size_t{w.size} * rings::BLKIF_MAX_SEGMENTS_PER_REQUEST,
                                  max_segs + 1));
        // kIndirectBatch pages more than the data pages: the indirect pages' own (never in
        // bounce_free), after the data pages.
        const std::uint32_t total = nbounce + kIndirectBatch;
        auto first = w.svc.memory().alloc_extent(total);
        if (!first) {
            return fail(first.error());
        }
        w.bounce_first_frame = *first;
        w.bounce_pages.resize(total);
        w.bounce_free.reserve(nbounce);
        w.copy_ops.reserve(nbounce);  // at most one op per bounce page in use
        w.indirect_bounce = nbounce;
        w.ind_ops.reserve(kIndirectBatch);
        w.ind_slots.reserve(kIndirectBatch);
        for (std::uint32_t i = 0; i < total; ++i) {
            auto p = w.svc.memory().frame(*first + i);
            if (!p) {
                return fail(p.error());
            }
            w.bounce_pages[i] = *p;
        }
        for (std::uint32_t i = 0; i < nbounce; ++i) {
            w.bounce_free.push_back(nbounce - 1 - i);
        }
    }
    if (w.cfg.persistent) {
        // Bounded by the option, else by the ring: as many grants as its requests can name directly.
        const std::size_t cap = w.cfg.max_persistent_grants != 0
                                    ? std::size_t{w.cfg.max_persistent_grants}
                                    : std::size_t{w.size} * rings::BLKIF_MAX_SEGMENTS_PER_REQUEST;
        w.pgrant_store = std::make_unique<PGrant[]>(cap);
        w.pgrant_cap = cap;
        w.pgrant_buckets.resize(std::bit_ceil(cap));
        w.pgrant_set.emplace(bi::unordered_set<PGrant>::bucket_traits(w.pgrant_buckets.data(),
                                                                      w.pgrant_buckets.size()));
        for (std::size_t i = 0; i < cap; ++i) {
            w.pgrant_free.push_back(w.pgrant_store[i]);
        }
        w.pgrant_purged.reserve(cap);
        w.purge_timer = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
        if (!w.purge_timer.valid()) {
            return fail_errno();
        }
    }

    w.stop_fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (w.stop_fd.get() < 0) {
        return fail_errno();
    }
    w.thread = std::jthread([&w] { w.run(); });
    // Named so perf/top tell the data plane apart from the control thread (15 chars at most).
    (void)::pthread_setname_np(w.thread.native_handle(), "blkback-ring");
    return std::unique_ptr<RingWorker>(new RingWorker(std::move(impl)));
}

}  // namespace hv::blk
