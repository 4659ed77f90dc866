// libhv: the client side of hv-min, linked by every domain program and backend (style.md §3).
// Services bundles the hypercall channel, the domain's own memory, Grants and EventChannels.
// Layer: hv-min (L1). A Services object (and what it hands out) is used by one thread at a
// time; give each worker thread its own with Services::clone(). Every call returns hv::Result;
// every asynchronous event is a readable fd.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "hv/expected.hpp"
#include "hv/mapping.hpp"
#include "hv/spin.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/errc.hpp"
#include "hvmin/wire.hpp"

namespace hv::hvmin {

namespace detail {
struct ExtentMap;  // one mapped memory extent (own or, for trusted backends, a peer's)
class Session;     // per-domain state shared by all channels of one attach
}  // namespace detail

/// $HV_RUNDIR, or /run/hvkit.
std::filesystem::path default_rundir();

/// A connection's shared hypercall page (wire.hpp "The hypercall page"): batched grant copies
/// through shared memory; for the sleeping cases a doorbell eventfd (to hv-min) and a futex on
/// the reply seq (from hv-min). Owned by its Channel and used under the Channel's mutex.
class HypercallPage {
public:
    /// From page_setup's reply: the PageInfo and fds [memfd, doorbell eventfd]. Errc::protocol
    /// if the layout is not this library's.
    static Result<HypercallPage> create(const wire::PageInfo& info, std::vector<UniqueFd>& fds);

    /// Posts one request (`count` elements of `body`, count ≤ wire::kPageMaxOps) and waits for
    /// its reply: spins on the reply seq for `spin`, then sleeps in FUTEX_WAIT on it (looking
    /// at `sock_fd` hanging up every kSleepSlice), at most `timeout_ms`. Copies the statuses into `statuses` and
    /// returns the reply's rc (0 / -errno). Errors: Errc::timed_out, Errc::disconnected.
    Result<std::int32_t> call(wire::Op op, std::uint32_t count, std::span<const std::byte> body,
                              std::span<wire::CopyStatus> statuses, std::chrono::microseconds spin,
                              int timeout_ms, int sock_fd);

    /// The shared bytes (wire::kPageBytes) and their header: tests that play a hostile caller.
    std::byte* data() const noexcept { return map_.data(); }
    wire::PageHeader* header() const noexcept { return map_.as<wire::PageHeader>(); }
    /// The caller's descriptor of the doorbell eventfd (tests).
    int bell_fd() const noexcept { return bell_.get(); }
    /// Rings hv-min's doorbell (adds 1 to the eventfd).
    void ring() const noexcept;
    /// How long one FUTEX_WAIT of call() lasts at most: how late it sees hv-min go.
    static constexpr std::chrono::milliseconds kSleepSlice{10};

    /// How calls waited (benchmarks, tests): where the caller and hv-min's loop ran.
    struct Stats {
        std::uint64_t calls = 0;
        std::uint64_t doorbells = 0;  ///< calls that found hv-min asleep and rang
        std::uint64_t sleeps = 0;     ///< calls whose reply wait slept (once or more)
        std::uint64_t same_cpu = 0;   ///< replies read on the CPU hv-min answered from
    };
    const Stats& stats() const noexcept { return stats_; }

private:
    HypercallPage(Mapping m, UniqueFd bell) noexcept : map_(std::move(m)), bell_(std::move(bell)) {}
    Mapping map_;
    UniqueFd bell_;
    std::uint32_t seq_ = 0;
    Stats stats_;
};

/// One hypercall socket. Calls are synchronous request/reply; a mutex makes a shared Channel
/// safe, but each thread should own one (Services::clone) so calls do not serialise.
class Channel {
public:
    struct Reply {
        wire::ReplyHeader hdr{};
        std::vector<std::byte> body;
        std::vector<UniqueFd> fds;
    };
    static constexpr int kDefaultTimeoutMs = 10000;

    explicit Channel(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    /// Sends one request and waits (bounded) for its reply. Errors: socket errors,
    /// Errc::timed_out, Errc::disconnected, Errc::protocol.
    Result<Reply> call(wire::Op op, std::uint32_t count, std::span<const std::byte> body,
                       std::span<const int> fds = {}, int timeout_ms = kDefaultTimeoutMs);
    /// Sends raw bytes as one datagram and waits for one reply (tests of hostile input).
    Result<Reply> call_raw(std::span<const std::byte> datagram, int timeout_ms = kDefaultTimeoutMs);
    int fd() const noexcept { return fd_.get(); }
    /// How long call() probes (nonblocking receives) for its reply before it sleeps; 0 = sleep
    /// at once. Default: hv::default_spin() (HVKIT_POLL_US, else 0). Any thread.
    void set_reply_spin(std::chrono::microseconds spin) noexcept {
        reply_spin_us_.store(spin.count(), std::memory_order_relaxed);
    }
    std::chrono::microseconds reply_spin() const noexcept {
        return std::chrono::microseconds(reply_spin_us_.load(std::memory_order_relaxed));
    }

    /// Batched gnttab_copy (`count` ≤ wire::kPageMaxOps) through this connection's hypercall
    /// page, set up at the first such call: true and the statuses filled in, or false when
    /// there is no page (page use off, the batch too large, or hv-min refused the set-up) and
    /// the caller must use the socket. A non-zero reply rc is returned as that errno.
    Result<bool> call_page(wire::Op op, std::uint32_t count, std::span<const std::byte> body,
                           std::span<wire::CopyStatus> statuses,
                           int timeout_ms = kDefaultTimeoutMs);
    /// Whether call_page may use a hypercall page. Default: on, unless the environment has
    /// HV_HYPERCALL_PAGE=off (then every batch goes through the socket). Any thread.
    void set_use_page(bool on) noexcept { use_page_.store(on, std::memory_order_relaxed); }
    bool use_page() const noexcept { return use_page_.load(std::memory_order_relaxed); }
    /// Sets the page up now if there is none (tests). Errors: page_setup's rc, transport errors.
    Result<void> setup_page();
    /// The page once set up, else nullptr (tests that play a hostile caller).
    HypercallPage* page() noexcept { return page_ ? &*page_ : nullptr; }

    /// Trusted map mode: peers' extents this connection has received (hv-min sends each once).
    std::shared_ptr<detail::ExtentMap> extent(std::uint32_t id);
    void add_extent(std::uint32_t id, std::shared_ptr<detail::ExtentMap> e);

private:
    Result<Reply> receive(std::uint32_t seq, int timeout_ms);
    Result<Reply> call_locked(wire::Op op, std::uint32_t count, std::span<const std::byte> body,
                              std::span<const int> fds, int timeout_ms);
    Result<void> setup_page_locked();
    std::mutex mu_;
    UniqueFd fd_;
    std::uint32_t seq_ = 0;
    std::vector<std::byte> out_;  // call()'s request datagram, reused (under mu_)
    std::atomic<std::chrono::microseconds::rep> reply_spin_us_{hv::default_spin().count()};
    std::unordered_map<std::uint32_t, std::shared_ptr<detail::ExtentMap>> extents_;
    std::atomic<bool> use_page_{default_use_page()};
    bool page_refused_ = false;  // page_setup failed once: the socket from now on
    std::optional<HypercallPage> page_;
    static bool default_use_page() noexcept;
};

class Grants;

/// A mapped grant. Unmaps (GNTTABOP_unmap_grant_ref) and unmaps memory in its destructor.
class GrantMapping {
public:
    GrantMapping() noexcept = default;
    GrantMapping(GrantMapping&& o) noexcept;
    GrantMapping& operator=(GrantMapping&& o) noexcept;
    GrantMapping(const GrantMapping&) = delete;
    GrantMapping& operator=(const GrantMapping&) = delete;
    ~GrantMapping();

    /// The granted 4096-byte page. GUEST: the granter may write it at any time.
    std::byte* data() const noexcept { return data_; }
    std::span<std::byte> page() const noexcept { return {data_, rings::XEN_PAGE_SIZE}; }
    rings::grant_handle_t handle() const noexcept { return handle_; }
    bool valid() const noexcept { return data_ != nullptr; }
    /// Trusted map mode: the granter's whole extent this page lies in, as mapped in this
    /// process (it stays mapped while the Services that mapped it lives), so a backend can
    /// register it once (e.g. as an io_uring fixed buffer). nullopt for isolated mappings.
    struct Extent {
        std::byte* base;
        std::size_t bytes;
        std::uint32_t id;  ///< hv-min's extent id (unique per granter)
    };
    std::optional<Extent> extent() const noexcept;
    /// Unmaps now; the error of the unmap hypercall, if any.
    Result<void> reset() noexcept;

private:
    friend class Grants;
    std::shared_ptr<Channel> ch_;
    std::shared_ptr<detail::ExtentMap> extent_;  // trusted: the granter's whole extent
    Mapping own_;                                 // isolated: this page only
    std::byte* data_ = nullptr;
    rings::grant_handle_t handle_ = 0;
};

/// One request of Grants::map_batch.
struct MapRequest {
    DomId granter;
    GrantRef ref;
    bool readonly = false;
};

/// Grant tables: this domain's own table (granter side, no hypercall, Xen's flag protocol)
/// and map/unmap/copy of others' grants (hypercalls).
class Grants {
public:
    /// Grants `to` access to this domain's `frame`. Errors: Errc::grant_table_full, Errc::bad_frame.
    Result<GrantRef> grant_access(DomId to, std::uint64_t frame, bool readonly);
    /// Revokes an entry (Linux gnttab_end_foreign_access_ref). Errc::grant_in_use while the
    /// grantee has it mapped or a copy is running; the entry stays granted then.
    Result<void> end_access(GrantRef ref);
    /// The entry's current flags (GTF_*), for inspection.
    std::uint16_t entry_flags(GrantRef ref) const noexcept;
    std::uint32_t nr_entries() const noexcept;
    /// The raw shared entry (tests that play a hostile granter). GUEST-shared memory.
    rings::grant_entry_v1* entry_for_test(rings::grant_ref_t ref) const noexcept;

    /// Maps one grant. Errors: gntst_error(status) or transport errors.
    Result<GrantMapping> map(DomId granter, GrantRef ref, bool readonly);
    /// Maps many grants in one hypercall; each element is its own Result.
    Result<std::vector<Result<GrantMapping>>> map_batch(std::span<const MapRequest> reqs);
    /// Unmaps many mappings in one hypercall (per 1024); each is left empty. The first failed
    /// status (or the transport error) is returned; all are attempted.
    Result<void> unmap_batch(std::span<GrantMapping> maps);
    /// Batched GNTTABOP_copy: fills each op's status; the Result is the transport's.
    Result<void> copy(std::span<rings::gnttab_copy> ops);
    /// Raw batched ops (status fields filled in). Results are transport errors only.
    Result<void> map_raw(std::span<rings::gnttab_map_grant_ref> ops);
    Result<void> unmap_raw(std::span<rings::gnttab_unmap_grant_ref> ops);

private:
    friend class Services;
    Grants(std::shared_ptr<detail::Session> s, std::shared_ptr<Channel> ch) noexcept
        : s_(std::move(s)), ch_(std::move(ch)) {}
    Result<GrantMapping> finish_map(const rings::gnttab_map_grant_ref& op, const wire::MapExtra& x,
                                    std::vector<UniqueFd>& fds, bool readonly);
    std::shared_ptr<detail::Session> s_;
    std::shared_ptr<Channel> ch_;
};

/// A bound event channel port: notify() is one send() of a datagram to the peer port's receiver
/// socket; fd() (this port's receiver) becomes readable when the port is pending. Neither
/// notify() nor ack() can block, whatever the peer does to the sockets it holds (design §5,
/// README "Event channels"). An interdomain port also has a slot of shared words with its peer
/// (hv-min/src/evtchn_signal.hpp): while wait() spins on it, the peer's notify() only sets a
/// word and sends nothing; while wait() sleeps (in FUTEX_WAIT on the word), it sets the word and
/// wakes the futex. fd() is still made readable by every event that comes while no wait() runs.
/// Closes the port (EVTCHNOP_close) in its destructor.
class EventChannelBinding {
public:
    EventChannelBinding() noexcept = default;
    EventChannelBinding(EventChannelBinding&&) noexcept = default;
    EventChannelBinding& operator=(EventChannelBinding&& o) noexcept;
    EventChannelBinding(const EventChannelBinding&) = delete;
    EventChannelBinding& operator=(const EventChannelBinding&) = delete;
    ~EventChannelBinding();

    EvtchnPort port() const noexcept { return port_; }
    /// Readable (POLLIN) while the port is pending: a Unix datagram socket only this binding
    /// (and hv-min) holds. Poll it; ack() consumes. Do not read it directly.
    int fd() const noexcept { return wait_.get(); }
    /// The sender to the peer's port (-1 for a VIRQ): for tests that play a hostile domain.
    int notify_fd() const noexcept { return notify_.get(); }
    /// Sets the remote port pending. No hv-min hop. A port that is not (or no longer) bound
    /// to a peer drops the event, as Xen does for unbound ports.
    Result<void> notify() noexcept;
    /// True if an event is pending (does not consume it).
    bool pending() const noexcept;
    /// Consumes the pending event (sends coalesce into one). While masked, returns false and
    /// leaves the event pending.
    bool ack() noexcept;
    void mask() noexcept { masked_ = true; }
    /// Unmasks and re-checks: true if an event is pending now.
    bool unmask() noexcept;
    bool masked() const noexcept { return masked_; }
    /// Waits (bounded) until the port is pending: spins for up to spin() first (on the shared
    /// word, the fd probed now and then; without shared words, zero-timeout polls of the fd),
    /// then sleeps: on the shared word (a futex) if the port has one, else on the fd.
    /// Errc::timed_out otherwise. One thread at a time waits on a binding (as one vCPU takes a
    /// port's upcalls): the wait publishes how it waits in a word of its own. A ring user does
    /// better with hvmin/ring_wait.hpp, which spins on the ring's indices (no syscall per probe).
    Result<void> wait(std::chrono::milliseconds timeout) const noexcept;
    /// The spin budget of wait(). Default: hv::default_spin() (HVKIT_POLL_US, else 0).
    void set_spin(std::chrono::microseconds spin) noexcept { spin_ = spin; }
    std::chrono::microseconds spin() const noexcept { return spin_; }
    /// EVTCHNOP_close now.
    Result<void> close() noexcept;
    /// Gives up the binding without closing the port (its fds are closed); the port stays
    /// bound until closed by number or until this connection closes.
    EvtchnPort release() noexcept;
    bool valid() const noexcept { return ch_ != nullptr; }

private:
    friend class EventChannels;
    std::shared_ptr<Channel> ch_;
    EvtchnPort port_{0};
    UniqueFd wait_;    // this port's receiver socket (its pending state)
    UniqueFd notify_;  // a sender to the peer port's receiver (interdomain only)
    bool masked_ = false;
    std::chrono::microseconds spin_ = hv::default_spin();
    Mapping words_;                // the channel's page of shared words (none for a VIRQ)
    std::uint32_t words_at_ = 0;   // this port's half: words_at_; the peer's: words_peer_
    std::uint32_t words_peer_ = 0;
    template <class W>
    W* words_at(std::uint32_t at) const noexcept {
        return words_.data() == nullptr ? nullptr : reinterpret_cast<W*>(words_.data() + at);
    }
};

/// Event channel operations (xen-abi §3) with Xen's return codes (as system errors).
class EventChannels {
public:
    /// A port in this domain that `remote` may bind. Errors: ESRCH, ENOSPC, EPERM.
    Result<EventChannelBinding> alloc_unbound(DomId remote);
    /// Binds `remote_port` of `remote` (must be unbound and earmarked for us: else EINVAL).
    /// The new port starts pending.
    Result<EventChannelBinding> bind_interdomain(DomId remote, EvtchnPort remote_port);
    /// Binds a VIRQ (VIRQ_DOM_EXC: dom0 learns that a domain died).
    Result<EventChannelBinding> bind_virq(std::uint32_t virq, std::uint32_t vcpu = 0);
    Result<rings::evtchn_status> status(DomId dom, EvtchnPort port);
    /// EVTCHNOP_send through hv-min (slow path; bindings notify directly).
    Result<void> send(EvtchnPort port);
    Result<void> close(EvtchnPort port);
    Result<void> unmask(EvtchnPort port);

private:
    friend class Services;
    explicit EventChannels(std::shared_ptr<Channel> ch) noexcept : ch_(std::move(ch)) {}
    Result<int> call1(wire::Op op, void* op_struct, std::size_t size, std::vector<UniqueFd>* fds,
                      wire::EvtchnWords* words = nullptr);
    /// A binding of `port` from the fds of alloc_unbound / bind_interdomain and their words.
    Result<EventChannelBinding> make_binding(EvtchnPort port, std::vector<UniqueFd>& fds,
                                             const wire::EvtchnWords& words);
    std::shared_ptr<Channel> ch_;
};

/// This domain's own memory: frames across its extents.
class Memory {
public:
    /// Pointer to one of this domain's frames. Errc::bad_frame if out of range.
    Result<std::byte*> frame(std::uint64_t frame) const;
    /// Total frames (initial memory + extents allocated since).
    std::uint64_t nr_frames() const;
    /// Frames of the initial memory (extent 0).
    std::uint64_t initial_frames() const;
    /// A new extent of `pages` frames (pages == 1: a page alone in its extent, which an
    /// isolated backend may map: use it for rings and shared pages). Returns its first frame.
    Result<std::uint64_t> alloc_extent(std::uint32_t pages);
    /// dom0: registers a sealed memfd of this process as frames (copy-mode buffers).
    Result<std::uint64_t> register_extent(UniqueFd memfd, std::uint32_t pages);

private:
    friend class Services;
    Memory(std::shared_ptr<detail::Session> s, std::shared_ptr<Channel> ch) noexcept
        : s_(std::move(s)), ch_(std::move(ch)) {}
    std::shared_ptr<detail::Session> s_;
    std::shared_ptr<Channel> ch_;
};

/// A frontend's mapping of an I/O-memory grant (a PCI BAR): MAP_SHARED, writable only for a
/// read/write grant. Unmapped in its destructor.
class IomemMapping {
public:
    IomemMapping() noexcept = default;
    IomemMapping(Mapping m, std::uint32_t handle, bool writable) noexcept
        : map_(std::move(m)), handle_(handle), writable_(writable) {}
    std::byte* data() const noexcept { return map_.data(); }
    std::size_t size() const noexcept { return map_.size(); }
    std::span<std::byte> bytes() const noexcept { return map_.bytes(); }
    bool valid() const noexcept { return map_.valid(); }
    bool writable() const noexcept { return writable_; }
    std::uint32_t handle() const noexcept { return handle_; }
    void reset() noexcept { map_.reset(); }

private:
    Mapping map_;
    std::uint32_t handle_ = 0;
    bool writable_ = false;
};

/// I/O memory (PCI BARs): a backend grants an fd of one BAR to one frontend domain, which maps
/// it. Revoking is verified by hv-min: a frontend process that still holds an fd or a mapping
/// of it after CoreConfig::iomem_revoke_grace_ms gets its domain destroyed.
class Iomem {
public:
    /// dom0 or a driver domain: grants the first `size` bytes (a multiple of 4096, at most the
    /// file's size) of the regular file `fd` (a memfd, a sysfs resourceN) to `frontend`,
    /// read-only or read/write (then `fd` must be O_RDWR). Returns the handle. Errors: EPERM
    /// (not a backend domain), EINVAL, ESRCH (no such frontend), EACCES, ENOSPC.
    Result<std::uint32_t> grant(int fd, std::uint64_t size, DomId frontend, bool readonly);
    /// The granting connection revokes. Errors: ENOENT (never issued), ESTALE (already
    /// revoked), EPERM (another connection's).
    Result<void> revoke(std::uint32_t handle);
    /// The frontend receives the fd of grant `handle` made by `granter` (O_RDONLY for a
    /// read-only grant); `size`/`readonly` are filled in. Errors: ENOENT (unknown handle or
    /// another granter's), ESTALE (revoked), EPERM (granted to another domain).
    Result<UniqueFd> open(DomId granter, std::uint32_t handle, std::uint64_t* size = nullptr,
                          bool* readonly = nullptr);
    /// open() and mmap with at most the granted access.
    Result<IomemMapping> map(DomId granter, std::uint32_t handle);

private:
    friend class Services;
    explicit Iomem(std::shared_ptr<Channel> ch) noexcept : ch_(std::move(ch)) {}
    std::shared_ptr<Channel> ch_;
};

class Store;  // the XenStore client (xenstore/) fills Services::store

/// Everything a domain program or backend needs from hv-min.
class Services {
public:
    /// The program was started by hv-min: attach through $HV_HYPERCALL_FD (then unset, and the
    /// fd made close-on-exec, so the program's own children do not inherit the domain).
    static Result<Services> attach();
    static Result<Services> attach_fd(UniqueFd fd);
    /// A root process: connect to $rundir/hv-min.sock as a dom0 connection.
    static Result<Services> connect_dom0(const std::filesystem::path& rundir = default_rundir());
    /// A new hypercall channel of the same domain, for another thread.
    Result<Services> clone() const;

    DomId domid() const noexcept;
    bool trusted() const noexcept;
    bool privileged() const noexcept;
    Grants& grants() noexcept { return grants_; }
    EventChannels& evtchn() noexcept { return evtchn_; }
    Memory& memory() noexcept { return memory_; }
    Iomem& iomem() noexcept { return iomem_; }
    Channel& channel() noexcept { return *ch_; }
    /// The xenstore connection hv-min made for this domain, if any (taken once).
    UniqueFd take_xenstore_fd();

    Store* store = nullptr;

private:
    Services(std::shared_ptr<detail::Session> s, std::shared_ptr<Channel> ch) noexcept
        : s_(s), ch_(ch), grants_(s, ch), evtchn_(ch), memory_(s, ch), iomem_(ch) {}
    static Result<Services> attach_channel(std::shared_ptr<Channel> ch);
    std::shared_ptr<detail::Session> s_;
    std::shared_ptr<Channel> ch_;
    Grants grants_;
    EventChannels evtchn_;
    Memory memory_;
    Iomem iomem_;
};

inline Result<Services> attach() { return Services::attach(); }
inline Result<Services> connect_dom0(const std::filesystem::path& rundir = default_rundir()) {
    return Services::connect_dom0(rundir);
}

}  // namespace hv::hvmin
