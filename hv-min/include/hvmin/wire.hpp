// The hypercall transport between hv-min and its clients (design §3): one SOCK_SEQPACKET per
// connection; a request is a Header + `count` fixed-size elements; the reply is a ReplyHeader +
// the same elements with their out fields filled in (per-element status), plus fds through
// SCM_RIGHTS; gnttab_copy's reply carries only the statuses (CopyStatus[count]). Shared by
// hv::hvmin_core (decoder) and hv::hvmin_client (encoder).
// Layer: hv-min (L1). Header-only, no syscalls.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "hv/rings/xen/event_channel.hpp"
#include "hv/rings/xen/grant_table.hpp"

namespace hv::hvmin::wire {

inline constexpr std::uint32_t kMagic = 0x314D5648;  // "HVM1" little-endian
/// Largest request or reply datagram. Larger requests are truncated by the kernel and rejected.
inline constexpr std::size_t kMaxMessage = 65536;
/// Largest batch of Xen ops in one message.
inline constexpr std::uint32_t kMaxBatch = 1024;
/// Most fds one reply carries (SCM_MAX_FD is 253).
inline constexpr std::uint32_t kMaxFds = 240;

/// Operation numbers: Xen hypercalls keep their Xen number in the low byte.
enum class Op : std::uint16_t {
    // GNTTABOP_* (batched: count × Xen struct).
    gnttab_map_grant_ref = 0x0100 + rings::GNTTABOP_map_grant_ref,
    gnttab_unmap_grant_ref = 0x0100 + rings::GNTTABOP_unmap_grant_ref,
    gnttab_setup_table = 0x0100 + rings::GNTTABOP_setup_table,
    gnttab_copy = 0x0100 + rings::GNTTABOP_copy,
    gnttab_query_size = 0x0100 + rings::GNTTABOP_query_size,
    // EVTCHNOP_* (count must be 1, as the Xen hypercall takes one struct).
    evtchn_bind_interdomain = 0x0200 + rings::EVTCHNOP_bind_interdomain,
    evtchn_bind_virq = 0x0200 + rings::EVTCHNOP_bind_virq,
    evtchn_close = 0x0200 + rings::EVTCHNOP_close,
    evtchn_send = 0x0200 + rings::EVTCHNOP_send,
    evtchn_status = 0x0200 + rings::EVTCHNOP_status,
    evtchn_alloc_unbound = 0x0200 + rings::EVTCHNOP_alloc_unbound,
    evtchn_unmask = 0x0200 + rings::EVTCHNOP_unmask,
    // hv-min's own (count 0 or 1 as listed).
    attach = 0x0300,             ///< count 0 → AttachInfo; fds [grant table, memory extents…, xenstore?]
    clone_channel = 0x0301,      ///< count 0 → fds [new connection of the same domain]
    mem_alloc_extent = 0x0302,   ///< 1 × ExtentRequest → ExtentInfo; fds [extent memfd]
    mem_register_extent = 0x0303,  ///< dom0: 1 × ExtentRequest + fds [sealed memfd] → ExtentInfo
    console_attach = 0x0304,     ///< count 0 → ConsoleInfo; fds [ring page, wait, notify] (a domain's own)
    // I/O memory (a PCI BAR) granted by a backend to one frontend (XEN_DOMCTL_iomem_permission
    // plus the guest's mapping of those frames).
    iomem_grant = 0x0305,   ///< dom0 / driver domain: 1 × IomemGrant + fds [BAR] → 1 × IomemGrant (handle)
    iomem_map = 0x0306,     ///< 1 × IomemGrant{handle, domid = granter} → 1 × IomemGrant; fds [BAR]
    iomem_revoke = 0x0307,  ///< the granting connection: 1 × IomemGrant{handle} → rc
    /// count 0 → PageInfo; fds [page memfd (sealed), doorbell eventfd]: this
    /// connection's shared hypercall page (see "The hypercall page" below).
    page_setup = 0x0308,
    // Toolstack (dom0 only).
    domain_create = 0x0400,      ///< 1 × CreateRequest + strings → 1 × DomainInfo
    domain_destroy = 0x0401,     ///< 1 × DomainRef → rc
    domain_list = 0x0402,        ///< count 0 → n × DomainInfo
    domain_wait = 0x0403,        ///< 1 × DomainRef → 1 × DeathInfo, sent when the domain is gone
};

struct Header {
    std::uint32_t magic;
    std::uint16_t op;     // Op
    std::uint16_t flags;  // must be 0
    std::uint32_t count;  // number of elements that follow
    std::uint32_t seq;    // echoed in the reply
};
static_assert(sizeof(Header) == 16);

struct ReplyHeader {
    std::uint32_t magic;
    std::uint16_t op;
    std::uint16_t flags;
    std::uint32_t count;  // elements that follow
    std::uint32_t seq;
    std::int32_t rc;      // 0 or -errno: the hypercall's own return value
    std::uint32_t nfds;   // fds attached with SCM_RIGHTS
};
static_assert(sizeof(ReplyHeader) == 24);

/// gnttab_copy's reply element: the op's GNTST_* status (the only out field of gnttab_copy),
/// one per request element, in order.
using CopyStatus = std::int16_t;

inline constexpr std::uint32_t kAttachTrusted = 1u << 0;     ///< may receive extent fds (map mode)
inline constexpr std::uint32_t kAttachPrivileged = 1u << 1;  ///< dom0
inline constexpr std::uint32_t kAttachDriverDomain = 1u << 2;
inline constexpr std::uint32_t kAttachXenstore = 1u << 3;    ///< last fd is a xenstore connection

struct AttachInfo {
    std::uint16_t domid;
    std::uint16_t pad;
    std::uint32_t flags;          // kAttach*
    std::uint32_t gnttab_frames;  // grant table = fds[0], gnttab_frames × 4096 bytes
    std::uint32_t nr_extents;     // memory extents = fds[1 .. nr_extents]
    std::uint64_t mem_pages;
    /// The grant refs this connection may hand out: a domain owns its whole table (from
    /// GNTTAB_NR_RESERVED_ENTRIES); each dom0 connection gets its own slice of dom0's table.
    std::uint32_t gref_first;
    std::uint32_t gref_count;
};
static_assert(sizeof(AttachInfo) == 32);

/// Describes one memory extent; AttachInfo is followed by nr_extents of these.
struct ExtentInfo {
    std::uint64_t first_frame;
    std::uint32_t pages;
    std::uint32_t id;  ///< hv-min-wide extent serial
};
static_assert(sizeof(ExtentInfo) == 16);

/// The domain's primary console (xen-abi §8): its ring page (a one-page extent, granted to dom0
/// as GNTTAB_RESERVED_CONSOLE) and its event channel port, bound by hv-min's console backend.
struct ConsoleInfo {
    std::uint64_t frame;
    std::uint32_t port;
    std::uint32_t pad;
};
static_assert(sizeof(ConsoleInfo) == 16);

inline constexpr std::uint32_t kIomemReadonly = 1u << 0;

/// One I/O-memory grant. iomem_grant: in size, flags, domid = the frontend; out handle.
/// iomem_map: in handle, domid = the granter; out size, flags. iomem_revoke: in handle.
struct IomemGrant {
    std::uint64_t size;    ///< bytes, a multiple of 4096
    std::uint32_t handle;  ///< hv-min-wide, never reused
    std::uint32_t flags;   ///< kIomem*
    std::uint16_t domid;
    std::uint16_t pad;
    std::uint32_t pad2;
};
static_assert(sizeof(IomemGrant) == 24);

struct ExtentRequest {
    std::uint32_t pages;
    std::uint32_t pad;
};
static_assert(sizeof(ExtentRequest) == 8);

/// Follows the array of gnttab_map_grant_ref in a map reply: where the page lives.
struct MapExtra {
    std::uint32_t extent_id;
    std::int32_t fd_index;        ///< index into the reply's fds, or -1 (already sent on this connection)
    std::uint64_t offset_bytes;   ///< page offset inside the extent
    std::uint32_t extent_pages;
    std::uint32_t pad;
};
static_assert(sizeof(MapExtra) == 24);

/// Follows the struct in an evtchn_alloc_unbound / evtchn_bind_interdomain reply that hands the
/// port's descriptors to the caller (fds [receiver, sender to the peer, words page]): where the
/// channel's shared words (hv-min/src/evtchn_signal.hpp) live in the page (a sealed memfd of
/// kEvtchnWordsPageBytes shared by the two domains of the channel only) and which half is the
/// caller's (0: the port alloc_unbound made, 1: the port that bound it).
struct EvtchnWords {
    std::uint32_t offset;  ///< a multiple of kEvtchnWordsSlotBytes, inside the page
    std::uint32_t side;    ///< 0 or 1
};
static_assert(sizeof(EvtchnWords) == 8);
inline constexpr std::uint32_t kEvtchnWordsPageBytes = 4096;
inline constexpr std::uint32_t kEvtchnWordsSlotBytes = 64;  // one cache line per channel

inline constexpr std::uint32_t kCreateTrusted = 1u << 0;
inline constexpr std::uint32_t kCreateDriverDomain = 1u << 1;

/// Followed by strings_len bytes: name\0, argc × arg\0, envc × "K=V"\0.
struct CreateRequest {
    std::uint32_t mem_pages;
    std::uint32_t flags;  // kCreate*
    std::uint32_t argc;
    std::uint32_t envc;
    std::uint32_t gnttab_frames;  // 0 = default
    std::uint32_t strings_len;
};
static_assert(sizeof(CreateRequest) == 24);

struct DomainRef {
    std::uint16_t domid;
    std::uint16_t pad;
    std::uint32_t pad2;
};
static_assert(sizeof(DomainRef) == 8);

enum class DomainState : std::uint16_t { running = 1, dying = 2, dead = 3 };

inline constexpr std::size_t kMaxName = 64;

struct DomainInfo {
    std::uint16_t domid;
    std::uint16_t state;  // DomainState
    std::uint32_t flags;  // kCreate*
    std::uint64_t mem_pages;
    std::uint64_t cpu_time_ns;
    std::int32_t pid;
    std::uint32_t pad;
    char name[kMaxName];  // NUL-terminated
};
static_assert(sizeof(DomainInfo) == 96);

enum class DeathReason : std::uint16_t { exited = 1, killed = 2, destroyed = 3, disconnected = 4 };

struct DeathInfo {
    std::uint16_t domid;
    std::uint16_t reason;   // DeathReason
    std::int32_t status;    // exit code (exited) or signal number (killed)
};
static_assert(sizeof(DeathInfo) == 8);

// ---- The hypercall page ---------------------------------------------------------------------
// A connection's batched grant copies can go through shared memory instead of its socket: a
// region hv-min creates (a sealed memfd: the caller can neither shrink it nor pick its place in
// hv-min), in which the caller writes the ops and then a new request sequence number; hv-min's
// loop sees the number (between its epoll probes while it spins, or after the doorbell when it
// slept), copies the ops out once, validates and runs them exactly as the socket path does,
// writes the int16 statuses and publishes the reply sequence number. The caller spins on that,
// then sleeps in FUTEX_WAIT on it. The wake-ups: the doorbell (caller → hv-min, rung when
// hv-min's loop said it is asleep) is a write to an eventfd hv-min watches edge-triggered and
// never reads or writes (so a caller that makes it blocking or fills it mutes only itself);
// done (hv-min → caller, when the caller said it sleeps) is a FUTEX_WAKE on the reply seq,
// which never blocks. Neither is a "sync" wake-up as a Unix-socket send is (that hint puts the
// woken thread on the waker's CPU).

/// Largest batch through the page; a larger one goes through the socket.
inline constexpr std::uint32_t kPageMaxOps = 256;
inline constexpr std::uint32_t kPageStatusOffset = 128;  ///< CopyStatus[kPageMaxOps]
inline constexpr std::uint32_t kPageOpsOffset = 1024;    ///< gnttab_copy[kPageMaxOps]
inline constexpr std::uint32_t kPageBytes = 12288;       ///< three 4 KiB pages

/// Written by the caller only (hv-min reads it once per request).
struct PageRequest {
    std::uint32_t seq;    ///< new value = a new request; stored last (release)
    std::uint16_t op;     ///< Op::gnttab_copy
    std::uint16_t flags;  ///< 0
    std::uint32_t count;  ///< ≤ kPageMaxOps
    /// Non-zero: the caller sleeps in FUTEX_WAIT on rsp.seq; hv-min reads it (once) after
    /// publishing each reply, and wakes that futex if set.
    std::uint32_t caller_sleeping;
    std::uint8_t pad[48];
};
static_assert(sizeof(PageRequest) == 64);

/// Written by hv-min only (the caller reads it; hv-min never reads it back).
struct PageReply {
    std::uint32_t seq;          ///< the request seq whose statuses and rc are in place
    std::int32_t rc;            ///< 0, or -errno as a socket reply's rc
    std::uint32_t hv_sleeping;  ///< non-zero: hv-min's loop sleeps; ring the doorbell
    /// The CPU hv-min's loop published the last reply on, plus one (0: not known). A caller
    /// on that CPU does not spin for its reply: the spin would only keep hv-min off the CPU.
    std::uint32_t hv_cpu;
    std::uint8_t pad[48];
};
static_assert(sizeof(PageReply) == 64);
static_assert(offsetof(PageReply, hv_cpu) == 12);

struct PageHeader {
    PageRequest req;
    PageReply rsp;
};
static_assert(sizeof(PageHeader) == kPageStatusOffset);
static_assert(kPageStatusOffset + kPageMaxOps * sizeof(std::int16_t) <= kPageOpsOffset);
static_assert(kPageOpsOffset + kPageMaxOps * sizeof(rings::gnttab_copy) <= kPageBytes);

/// page_setup's reply element: the layout constants, so a client can check them.
struct PageInfo {
    std::uint32_t bytes;
    std::uint32_t max_ops;
    std::uint32_t status_offset;
    std::uint32_t ops_offset;
};
static_assert(sizeof(PageInfo) == 16);

/// Size of one request element for `op`, or 0 for an unknown op.
constexpr std::size_t element_size(Op op) noexcept {
    switch (op) {
    case Op::gnttab_map_grant_ref: return sizeof(rings::gnttab_map_grant_ref);
    case Op::gnttab_unmap_grant_ref: return sizeof(rings::gnttab_unmap_grant_ref);
    case Op::gnttab_setup_table: return sizeof(rings::gnttab_setup_table);
    case Op::gnttab_copy: return sizeof(rings::gnttab_copy);
    case Op::gnttab_query_size: return sizeof(rings::gnttab_query_size);
    case Op::evtchn_bind_interdomain: return sizeof(rings::evtchn_bind_interdomain);
    case Op::evtchn_bind_virq: return sizeof(rings::evtchn_bind_virq);
    case Op::evtchn_close: return sizeof(rings::evtchn_close);
    case Op::evtchn_send: return sizeof(rings::evtchn_send);
    case Op::evtchn_status: return sizeof(rings::evtchn_status);
    case Op::evtchn_alloc_unbound: return sizeof(rings::evtchn_alloc_unbound);
    case Op::evtchn_unmask: return sizeof(rings::evtchn_unmask);
    case Op::attach: return 1;
    case Op::clone_channel: return 1;
    case Op::mem_alloc_extent: return sizeof(ExtentRequest);
    case Op::mem_register_extent: return sizeof(ExtentRequest);
    case Op::console_attach: return 1;
    case Op::iomem_grant:
    case Op::iomem_map:
    case Op::iomem_revoke: return sizeof(IomemGrant);
    case Op::page_setup: return 1;
    case Op::domain_create: return sizeof(CreateRequest);
    case Op::domain_destroy: return sizeof(DomainRef);
    case Op::domain_list: return 1;
    case Op::domain_wait: return sizeof(DomainRef);
    }
    return 0;
}

/// A request that passed the structural checks: known op, count within the op's limits and
/// consistent with the datagram length. `body` is the element array (plus trailing strings for
/// domain_create).
struct Decoded {
    Op op;
    std::uint32_t count;
    std::uint32_t seq;
    std::span<const std::byte> body;
};

/// Why a datagram was rejected before any op ran; the reply carries this as -errno in rc.
enum class DecodeError { short_message, bad_magic, bad_flags, unknown_op, bad_count, bad_length };

}  // namespace hv::hvmin::wire

namespace hv::hvmin::wire {

/// Structural checks of one request datagram (the first thing hv-min does with it).
/// GUEST: `msg` is untrusted; nothing past the returned body is read.
inline bool decode(std::span<const std::byte> msg, Decoded& out, DecodeError& err) noexcept {
    if (msg.size() < sizeof(Header)) {
        err = DecodeError::short_message;
        return false;
    }
    Header h;
    __builtin_memcpy(&h, msg.data(), sizeof h);
    if (h.magic != kMagic) {
        err = DecodeError::bad_magic;
        return false;
    }
    if (h.flags != 0) {
        err = DecodeError::bad_flags;
        return false;
    }
    const auto op = static_cast<Op>(h.op);
    const std::size_t esize = element_size(op);
    if (esize == 0) {
        err = DecodeError::unknown_op;
        return false;
    }
    const std::span<const std::byte> body = msg.subspan(sizeof(Header));
    std::uint32_t min_count = 1;
    std::uint32_t max_count = 1;
    switch (op) {
    case Op::gnttab_map_grant_ref:
    case Op::gnttab_unmap_grant_ref:
    case Op::gnttab_copy:
        min_count = 0;
        max_count = kMaxBatch;
        break;
    case Op::attach:
    case Op::clone_channel:
    case Op::console_attach:
    case Op::page_setup:
    case Op::domain_list:
        min_count = 0;
        max_count = 0;
        break;
    default:
        break;
    }
    if (h.count < min_count || h.count > max_count) {
        err = DecodeError::bad_count;
        return false;
    }
    std::size_t expect = max_count == 0 ? 0 : static_cast<std::size_t>(h.count) * esize;
    if (op == Op::domain_create) {
        if (body.size() < sizeof(CreateRequest)) {
            err = DecodeError::bad_length;
            return false;
        }
        CreateRequest cr;
        __builtin_memcpy(&cr, body.data(), sizeof cr);
        expect += cr.strings_len;  // bounded: compared with the datagram's real size below
    }
    if (body.size() != expect) {
        err = DecodeError::bad_length;
        return false;
    }
    out = Decoded{op, h.count, h.seq, body};
    return true;
}

}  // namespace hv::hvmin::wire

namespace hv::hvmin::wire {

/// What take_page_request found.
enum class PageTake { none, request, rejected };

/// A request taken out of a hypercall page: the header fields as read once.
struct PageCall {
    std::uint32_t seq = 0;
    Op op{};
    std::uint32_t count = 0;
};

/// hv-min's read of a hypercall page: `none` if the request seq still equals `last_seq`; else
/// the request line is read once and checked (flags 0 → else bad_flags; op gnttab_copy → else
/// unknown_op; count ≤ kPageMaxOps → else bad_count: `rejected` with `err`), and for a valid
/// request the `count` ops are copied once into `ops` (kPageMaxOps elements): `request`.
/// GUEST: `page` (kPageBytes) is the caller's to write at any moment; nothing is read twice and
/// only `call`/`ops` are used afterwards.
inline PageTake take_page_request(const std::byte* page, std::uint32_t last_seq, PageCall& call,
                                  std::span<rings::gnttab_copy> ops, DecodeError& err) noexcept {
    auto* h = reinterpret_cast<PageHeader*>(const_cast<std::byte*>(page));
    // ORDER: acquire pairs with the caller's release store of req.seq (after its ops).
    const std::uint32_t seq = std::atomic_ref(h->req.seq).load(std::memory_order_acquire);
    if (seq == last_seq) {
        return PageTake::none;
    }
    PageRequest r;
    __builtin_memcpy(&r, &h->req, sizeof r);
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the copy only from here on
    call.seq = seq;  // the one loaded with acquire, not the copy's
    call.op = static_cast<Op>(r.op);
    call.count = r.count;
    if (r.flags != 0) {
        err = DecodeError::bad_flags;
        return PageTake::rejected;
    }
    if (call.op != Op::gnttab_copy) {
        err = DecodeError::unknown_op;
        return PageTake::rejected;
    }
    if (call.count > kPageMaxOps || call.count > ops.size()) {
        err = DecodeError::bad_count;
        return PageTake::rejected;
    }
    if (call.count != 0) {
        __builtin_memcpy(ops.data(), page + kPageOpsOffset,
                         call.count * sizeof(rings::gnttab_copy));
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return PageTake::request;
}

}  // namespace hv::hvmin::wire
