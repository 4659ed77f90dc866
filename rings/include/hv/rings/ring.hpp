// Xen's shared I/O ring (io/ring.h, xen-abi.md §1) as C++ templates: the 64-byte shared header,
// FrontRing (requests out, responses in) and BackRing (requests in, responses out).
// Layer: L0, header-only. A ring object belongs to one thread; the *shared page* is touched
// concurrently by the peer (another thread, process or domain), which may be hostile.
#pragma once

#include <atomic>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "hv/assert.hpp"
#include "hv/expected.hpp"
#include "hv/rings/errc.hpp"
#include "hv/rings/xen/xen.hpp"  // XEN_PAGE_SIZE

namespace hv::rings {

/// Free-running ring index; all arithmetic is modulo 2^32 (io/ring.h RING_IDX).
using RING_IDX = std::uint32_t;

/// Largest multi-page ring we accept (blkback's max-ring-page-order 4).
inline constexpr unsigned max_ring_pages = 16;

/// The shared page header (`<name>_sring` without the entry array). Exactly 64 bytes.
struct SringHeader {
    RING_IDX req_prod;
    RING_IDX req_event;
    RING_IDX rsp_prod;
    RING_IDX rsp_event;
    union {
        struct {
            std::uint8_t smartpoll_active;
        } netif;
        struct {
            std::uint8_t msg;
        } tapif_user;
        std::uint8_t pvt_pad[4];
    } pvt;
    std::uint8_t pad[44];  // Xen: __pad (a reserved name in C++)
};
static_assert(sizeof(SringHeader) == 64);
static_assert(offsetof(SringHeader, req_prod) == 0);
static_assert(offsetof(SringHeader, req_event) == 4);
static_assert(offsetof(SringHeader, rsp_prod) == 8);
static_assert(offsetof(SringHeader, rsp_event) == 12);
static_assert(offsetof(SringHeader, pvt) == 16);
static_assert(offsetof(SringHeader, pad) == 20);
static_assert(std::is_trivially_copyable_v<SringHeader> && std::is_standard_layout_v<SringHeader>);
static_assert(std::atomic_ref<RING_IDX>::required_alignment <= alignof(SringHeader));

/// A ring protocol: two trivially copyable wire types and a name (e.g. "blkif").
template <class P>
concept RingProtocol = requires {
    typename P::request;
    typename P::response;
    { P::name } -> std::convertible_to<std::string_view>;
}
&&std::is_trivially_copyable_v<typename P::request>&&
    std::is_trivially_copyable_v<typename P::response>;

/// One ring slot (`<name>_sring_entry`): a request, later overwritten by its response.
template <RingProtocol P>
union RingEntry {
    typename P::request req;
    typename P::response rsp;
};

template <RingProtocol P>
inline constexpr std::size_t entry_size = sizeof(RingEntry<P>);

/// Slots in a ring of `bytes` total (header included): __RING_SIZE / __CONST_RING_SIZE.
constexpr unsigned ring_entries(std::size_t bytes, std::size_t entry_bytes) noexcept {
    if (bytes <= sizeof(SringHeader) || entry_bytes == 0) {
        return 0;
    }
    return static_cast<unsigned>(std::bit_floor((bytes - sizeof(SringHeader)) / entry_bytes));
}

template <RingProtocol P>
constexpr unsigned ring_entries_for_pages(unsigned pages) noexcept {
    return ring_entries(std::size_t{pages} * XEN_PAGE_SIZE, entry_size<P>);
}

namespace detail {

/// Validates ring memory: 1..16 whole Xen pages, aligned for the header and the entries.
template <RingProtocol P>
hv::Result<unsigned> checked_ring_size(std::span<std::byte> mem) noexcept {
    const std::size_t pages = mem.size() / XEN_PAGE_SIZE;
    if (mem.data() == nullptr || mem.size() % XEN_PAGE_SIZE != 0 || pages == 0 ||
        pages > max_ring_pages) {
        return hv::fail(make_error_code(Errc::bad_ring_size));
    }
    constexpr std::size_t align =
        alignof(RingEntry<P>) > alignof(SringHeader) ? alignof(RingEntry<P>) : alignof(SringHeader);
    if (reinterpret_cast<std::uintptr_t>(mem.data()) % align != 0) {
        return hv::fail(make_error_code(Errc::bad_ring_size));
    }
    const unsigned n = ring_entries(mem.size(), entry_size<P>);
    if (n == 0) {
        return hv::fail(make_error_code(Errc::bad_ring_size));
    }
    return n;
}

inline RING_IDX load_acquire(RING_IDX& field) noexcept {
    return std::atomic_ref<RING_IDX>(field).load(std::memory_order_acquire);
}
inline RING_IDX load_relaxed(RING_IDX& field) noexcept {
    return std::atomic_ref<RING_IDX>(field).load(std::memory_order_relaxed);
}
inline void store_release(RING_IDX& field, RING_IDX v) noexcept {
    std::atomic_ref<RING_IDX>(field).store(v, std::memory_order_release);
}
inline void store_relaxed(RING_IDX& field, RING_IDX v) noexcept {
    std::atomic_ref<RING_IDX>(field).store(v, std::memory_order_relaxed);
}

/// §1.4 producer: publish `next` in `prod`, then decide from `event` whether the peer sleeps.
inline bool publish_and_check_notify(RING_IDX& prod, RING_IDX& event, RING_IDX next) noexcept {
    // ORDER: we are the only writer of prod; relaxed load of our own last store.
    const RING_IDX old = load_relaxed(prod);
    // ORDER: release = Xen's wmb(): slot contents become visible before the index. Pairs with
    // the consumer's acquire load of prod in unconsumed().
    store_release(prod, next);
    // ORDER: full fence = Xen's mb(): our index store is ordered before the event load below.
    // Pairs with the seq_cst fence in the consumer's final check (store event; fence; load
    // prod): at least one side sees the other's store, so no wake-up is lost.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // ORDER: relaxed; ordered by the fence above. GUEST: event is peer-written, any value is
    // harmless (it only decides whether we send a notification).
    const RING_IDX ev = load_relaxed(event);
    return static_cast<RING_IDX>(next - ev) < static_cast<RING_IDX>(next - old);
}

/// §1.5 final check with hold-off: arm event = cons + batch, fence, re-check.
template <class Unconsumed>
hv::Result<bool> final_check(RING_IDX& event, RING_IDX cons, unsigned batch,
                             Unconsumed&& unconsumed) noexcept {
    HV_ASSERT(batch >= 1);
    auto n = unconsumed();
    if (!n) {
        return hv::fail(n.error());
    }
    if (*n >= batch) {
        return true;
    }
    // ORDER: relaxed store, then full fence (Xen's mb) before re-reading the producer
    // index: pairs with the producer's fence between its index store and event load.
    detail::store_relaxed(event, cons + batch);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    auto again = unconsumed();
    if (!again) {
        return hv::fail(again.error());
    }
    return *again >= batch;
}

/// Copies a slot out of shared memory exactly once (RING_COPY_REQUEST / _RESPONSE).
template <class T>
T copy_once(const T* slot) noexcept {
    T copy;
    // GUEST: the slot stays peer-writable; copy once and never read it again.
    std::memcpy(&copy, slot, sizeof copy);
    // ORDER: compiler barrier only: no re-fetch of the slot after this point (XSA-155).
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return copy;
}

}  // namespace detail

/// The requesting side (Xen's `<name>_front_ring`). Owns no memory: `mem` must outlive it.
/// Not thread-safe: one thread drives it; the peer works on the same shared page.
template <RingProtocol P>
class FrontRing {
public:
    using request = typename P::request;
    using response = typename P::response;

    FrontRing() noexcept = default;

    /// SHARED_RING_INIT + FRONT_RING_INIT: the front end owns the page and initialises it.
    /// `start` ≠ 0 is not in Xen's macros: it pre-sets both producers (and events = start+1),
    /// which is what a ring looks like after 2^32-ish traffic; tests use it to cross the wrap.
    static hv::Result<FrontRing> init(std::span<std::byte> mem, RING_IDX start = 0) noexcept {
        auto n = detail::checked_ring_size<P>(mem);
        if (!n) {
            return hv::fail(n.error());
        }
        auto* s = reinterpret_cast<SringHeader*>(mem.data());
        std::memset(static_cast<void*>(s), 0, sizeof(SringHeader));
        s->req_event = start + 1;
        s->rsp_event = start + 1;
        // ORDER: the page is not yet shared (its grant/ref is published later, with its own
        // barrier), so plain stores are enough; release for the indices anyway.
        detail::store_release(s->rsp_prod, start);
        detail::store_release(s->req_prod, start);
        return FrontRing(mem, *n, start);
    }

    /// FRONT_RING_ATTACH: use an initialised page, our private indices starting at `start`.
    static hv::Result<FrontRing> attach(std::span<std::byte> mem, RING_IDX start = 0) noexcept {
        auto n = detail::checked_ring_size<P>(mem);
        if (!n) {
            return hv::fail(n.error());
        }
        return FrontRing(mem, *n, start);
    }

    /// RING_SIZE: slots in the ring (a power of two).
    unsigned size() const noexcept { return size_; }
    /// RING_FREE_REQUESTS: requests we may still queue before responses come back.
    unsigned free_requests() const noexcept { return size_ - (req_prod_pvt_ - rsp_cons_); }
    bool full() const noexcept { return free_requests() == 0; }
    RING_IDX req_prod_pvt() const noexcept { return req_prod_pvt_; }
    RING_IDX rsp_cons() const noexcept { return rsp_cons_; }

    /// The slot for the next request, to fill in place. Call commit_request() when done.
    /// Precondition (our bug otherwise): !full().
    request& next_request() noexcept {
        HV_ASSERT(!full());
        return slot(req_prod_pvt_)->req;
    }
    /// Makes the slot from next_request() part of the next push.
    void commit_request() noexcept {
        HV_ASSERT(!full());
        ++req_prod_pvt_;
    }
    /// Copies `r` into the next slot and commits it. Precondition: !full().
    void put_request(const request& r) noexcept {
        std::memcpy(static_cast<void*>(&next_request()), &r, sizeof r);
        ++req_prod_pvt_;
    }

    /// RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish committed requests; true = kick the peer.
    [[nodiscard]] bool push_requests() noexcept {
        return detail::publish_and_check_notify(shared_->req_prod, shared_->req_event,
                                                req_prod_pvt_);
    }
    /// RING_PUSH_REQUESTS: publish without the notification check.
    void publish_requests() noexcept {
        // ORDER: release = wmb before the index; pairs with the back end's acquire of req_prod.
        detail::store_release(shared_->req_prod, req_prod_pvt_);
    }

    /// Responses ready to take. Error (halt the ring) if the back end published an impossible
    /// rsp_prod: more than we have outstanding (⊇ RING_RESPONSE_PROD_OVERFLOW), or backwards.
    hv::Result<unsigned> unconsumed_responses() noexcept {
        // ORDER: acquire = rmb: response bodies up to prod are visible after this load. Pairs
        // with the back end's release store of rsp_prod in push_responses().
        // GUEST: rsp_prod is peer-written; validated below before it bounds anything.
        const RING_IDX prod = detail::load_acquire(shared_->rsp_prod);
        const RING_IDX avail = prod - rsp_cons_;
        if (avail > req_prod_pvt_ - rsp_cons_) {  // outstanding <= size, so this ⊇ > size
            if (static_cast<RING_IDX>(rsp_cons_ - prod) <= size_) {
                return hv::fail(make_error_code(Errc::producer_regressed));
            }
            return hv::fail(make_error_code(Errc::producer_overflow));
        }
        rsp_prod_seen_ = prod;
        return avail;
    }

    /// Copies the next response out of the ring (once) and consumes it; nullopt when the
    /// responses seen by the last unconsumed_responses() are all taken.
    std::optional<response> take_response() noexcept {
        if (rsp_cons_ == rsp_prod_seen_) {
            return std::nullopt;
        }
        response r = detail::copy_once(&slot(rsp_cons_)->rsp);
        ++rsp_cons_;
        return r;
    }

    /// As take_response() for up to out.size() responses at once: copies them (each slot once)
    /// into `out` in ring order, consumes them and returns how many (0: none seen). One compiler
    /// barrier for the batch instead of one per response.
    unsigned take_responses(std::span<response> out) noexcept {
        const RING_IDX avail = rsp_prod_seen_ - rsp_cons_;
        const unsigned n = avail < out.size() ? avail : static_cast<unsigned>(out.size());
        for (unsigned i = 0; i < n; ++i) {
            // GUEST: the slots stay peer-writable; each is copied once, never read again.
            std::memcpy(static_cast<void*>(&out[i]), &slot(rsp_cons_ + i)->rsp, sizeof(response));
        }
        // ORDER: compiler barrier only: no re-fetch of the slots after this point (XSA-155).
        std::atomic_signal_fence(std::memory_order_seq_cst);
        rsp_cons_ += n;
        return n;
    }

    /// RING_FINAL_CHECK_FOR_RESPONSES with hold-off `batch` (Xen: 1): true = do not sleep,
    /// at least `batch` responses are ready. False: rsp_event = rsp_cons + batch is armed, the
    /// back end will notify when it pushes the batch-th response. Errors as unconsumed_responses().
    hv::Result<bool> final_check_for_responses(unsigned batch = 1) noexcept {
        HV_ASSERT(batch <= size_);
        return detail::final_check(shared_->rsp_event, rsp_cons_, batch,
                                   [this] { return unconsumed_responses(); });
    }

    /// The shared header (tests, diagnostics).
    SringHeader& shared() noexcept { return *shared_; }

private:
    FrontRing(std::span<std::byte> mem, unsigned n, RING_IDX start) noexcept
        : shared_(reinterpret_cast<SringHeader*>(mem.data())),
          ring_(reinterpret_cast<RingEntry<P>*>(mem.data() + sizeof(SringHeader))),
          size_(n),
          req_prod_pvt_(start),
          rsp_cons_(start),
          rsp_prod_seen_(start) {}

    RingEntry<P>* slot(RING_IDX idx) const noexcept { return ring_ + (idx & (size_ - 1)); }

    SringHeader* shared_ = nullptr;
    RingEntry<P>* ring_ = nullptr;
    unsigned size_ = 0;
    RING_IDX req_prod_pvt_ = 0;
    RING_IDX rsp_cons_ = 0;
    RING_IDX rsp_prod_seen_ = 0;  // last validated rsp_prod: take_response() never passes it
};

/// The serving side (Xen's `<name>_back_ring`). Owns no memory: `mem` must outlive it.
/// Not thread-safe: one thread drives it; the peer (possibly hostile) shares the page.
template <RingProtocol P>
class BackRing {
public:
    using request = typename P::request;
    using response = typename P::response;

    BackRing() noexcept = default;

    /// BACK_RING_ATTACH: the page was initialised by the front end; our private indices start
    /// at `start` (non-zero only when reconnecting in place).
    static hv::Result<BackRing> attach(std::span<std::byte> mem, RING_IDX start = 0) noexcept {
        auto n = detail::checked_ring_size<P>(mem);
        if (!n) {
            return hv::fail(n.error());
        }
        return BackRing(mem, *n, start);
    }

    unsigned size() const noexcept { return size_; }
    RING_IDX req_cons() const noexcept { return req_cons_; }
    RING_IDX rsp_prod_pvt() const noexcept { return rsp_prod_pvt_; }
    /// Requests taken but not yet answered with put_response().
    unsigned in_flight() const noexcept { return req_cons_ - rsp_prod_pvt_; }

    /// Requests ready to take (XEN_RING_NR_UNCONSUMED_REQUESTS). Error = halt this ring:
    /// producer_overflow if req_prod - rsp_prod_pvt > size (RING_REQUEST_PROD_OVERFLOW),
    /// producer_regressed if req_prod moved back behind req_cons.
    hv::Result<unsigned> unconsumed() noexcept {
        // ORDER: acquire = rmb: request bodies up to prod are visible after this load. Pairs
        // with the front end's release store of req_prod in push_requests().
        // GUEST: req_prod is frontend-written; validated before it bounds anything.
        const RING_IDX prod = detail::load_acquire(shared_->req_prod);
        const RING_IDX ahead = prod - rsp_prod_pvt_;
        if (ahead > size_) {
            return hv::fail(make_error_code(Errc::producer_overflow));
        }
        if (ahead < in_flight()) {
            return hv::fail(make_error_code(Errc::producer_regressed));
        }
        req_prod_seen_ = prod;
        return prod - req_cons_;
    }

    /// Copies the next request out of the ring once (then fences) and consumes it. nullopt when
    /// the requests seen by the last unconsumed() are all taken, or when taking another would
    /// pass an unanswered slot (RING_REQUEST_CONS_OVERFLOW).
    std::optional<request> take_request() noexcept {
        if (req_cons_ == req_prod_seen_ || in_flight() >= size_) {
            return std::nullopt;
        }
        request r = detail::copy_once(&slot(req_cons_)->req);
        ++req_cons_;
        return r;
    }

    /// As take_request() for up to out.size() requests at once: copies them (each slot once)
    /// into `out` in ring order, consumes them and returns how many; never more than were seen
    /// by the last unconsumed(), nor past an unanswered slot. One compiler barrier for the batch.
    unsigned take_requests(std::span<request> out) noexcept {
        const RING_IDX seen = req_prod_seen_ - req_cons_;  // unconsumed() checked it <= size
        const RING_IDX room = size_ - in_flight();
        RING_IDX n = seen < room ? seen : room;
        if (n > out.size()) {
            n = static_cast<RING_IDX>(out.size());
        }
        for (RING_IDX i = 0; i < n; ++i) {
            // GUEST: the slots stay frontend-writable; each is copied once, never read again.
            std::memcpy(static_cast<void*>(&out[i]), &slot(req_cons_ + i)->req, sizeof(request));
        }
        // ORDER: compiler barrier only: no re-fetch of the slots after this point (XSA-155).
        std::atomic_signal_fence(std::memory_order_seq_cst);
        req_cons_ += n;
        return n;
    }

    /// Writes a response into the next response slot. Precondition (our bug otherwise): a
    /// request is in flight (responses never outnumber requests taken).
    void put_response(const response& r) noexcept {
        HV_ASSERT(in_flight() > 0);
        std::memcpy(static_cast<void*>(&slot(rsp_prod_pvt_)->rsp), &r, sizeof r);
        ++rsp_prod_pvt_;
    }
    /// The slot for the next response, to fill in place; then commit_response().
    response& next_response() noexcept {
        HV_ASSERT(in_flight() > 0);
        return slot(rsp_prod_pvt_)->rsp;
    }
    void commit_response() noexcept {
        HV_ASSERT(in_flight() > 0);
        ++rsp_prod_pvt_;
    }

    /// RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publish responses; true = kick the front end.
    [[nodiscard]] bool push_responses() noexcept {
        return detail::publish_and_check_notify(shared_->rsp_prod, shared_->rsp_event,
                                                rsp_prod_pvt_);
    }
    /// RING_PUSH_RESPONSES: publish without the notification check.
    void publish_responses() noexcept {
        // ORDER: release = wmb before the index; pairs with the front's acquire of rsp_prod.
        detail::store_release(shared_->rsp_prod, rsp_prod_pvt_);
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS with hold-off `batch` (Xen: 1): true = keep working, at
    /// least `batch` requests are ready. False: req_event = req_cons + batch is armed and the
    /// front end will notify when it pushes the batch-th request. Errors as unconsumed().
    hv::Result<bool> final_check_for_requests(unsigned batch = 1) noexcept {
        HV_ASSERT(batch <= size_);
        return detail::final_check(shared_->req_event, req_cons_, batch,
                                   [this] { return unconsumed(); });
    }

    SringHeader& shared() noexcept { return *shared_; }

private:
    BackRing(std::span<std::byte> mem, unsigned n, RING_IDX start) noexcept
        : shared_(reinterpret_cast<SringHeader*>(mem.data())),
          ring_(reinterpret_cast<RingEntry<P>*>(mem.data() + sizeof(SringHeader))),
          size_(n),
          rsp_prod_pvt_(start),
          req_cons_(start),
          req_prod_seen_(start) {}

    RingEntry<P>* slot(RING_IDX idx) const noexcept { return ring_ + (idx & (size_ - 1)); }

    SringHeader* shared_ = nullptr;
    RingEntry<P>* ring_ = nullptr;
    unsigned size_ = 0;
    RING_IDX rsp_prod_pvt_ = 0;
    RING_IDX req_cons_ = 0;
    RING_IDX req_prod_seen_ = 0;  // last validated req_prod: take_request() never passes it
};

}  // namespace hv::rings
