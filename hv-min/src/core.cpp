// hv-min's core: the epoll loop, domains, memory extents, grant tables (v1) and event channels.
// Layer: hv-min (L1). Everything below runs on the loop thread only, except the atomics read
// by Core's accessors. A guest never makes this loop block: sockets are nonblocking, replies
// are queued, a connection that does not read its replies is dropped.
//
// Races reasoned about:
// * Granter vs hv-min on a grant entry: the granter writes domid/frame then (release) flags;
//   hv-min reads flags|domid as one 32-bit word (acquire) and sets GTF_reading/writing with a
//   cmpxchg on that word, so a concurrent end_access (cmpxchg flags → 0) either sees the pin
//   bits and fails, or wins and hv-min's cmpxchg fails and re-checks (at most 5 times, as Xen).
//   The frame is read once, after the pin; later pins reuse the cached value.
// * A program that exits closes its socket before its pidfd is readable (often well before: a
//   program returning from main drops its Services, then runs destructors and atexit handlers).
//   The EOF kills the domain (its connections close at once), but its process gets
//   CoreConfig::exit_grace_ms to end on its own before the SIGKILL, so the reaped status is the
//   program's own (exited N / killed by a signal somebody else sent); only a program still
//   running when the grace ends is reported "disconnected". What the domain held is released
//   only when its program is reaped and its cgroup is empty (no process of it can still use a
//   mapping whose pin is dropped).
// * Epoll events of one batch may name a connection or domain released earlier in the same
//   batch: ids are looked up each time, connection ids are never reused, and a stale pidfd
//   event for a recycled domid finds waitpid(WNOHANG) == 0 and is ignored.
// * Peers keep their senders after the other end closes: a late notify() lands in a port that
//   is unbound (dropped for the receiver's purposes) or, after a re-bind, is spurious — legal.
// * No descriptor a domain holds is ever written or read here with a call that can sleep:
//   ports are raised through hv-min's own sockets (Signal::raise), with MSG_DONTWAIT, and on a
//   channel's shared words with an atomic OR and a FUTEX_WAKE (neither waits on anything).
// * Mappers keep mmaps of a dead granter's memfd: the memory lives until they unmap it, so no
//   access faults; their maptrack entries name the granter by (domid, serial) and never touch a
//   new domain that reuses the domid.
#include "hvmin/core.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hv/log.hpp"
#include "hv/mapping.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/wire.hpp"
#include "console.hpp"
#include "domain_procs.hpp"
#include "evtchn_signal.hpp"
#include "iomem.hpp"
#include "transport.hpp"

#ifdef HVMIN_WITH_XENSTORE
#include "xenstore/server.hpp"
#endif

extern char** environ;

namespace hv::hvmin {

using namespace hv::rings;
using wire::Op;

namespace {

constexpr std::uint32_t kPage = XEN_PAGE_SIZE;
constexpr std::uint32_t kMaxGnttabFrames = 64;
constexpr std::uint64_t kMaxDomainPages = 1ull << 20;  // 4 GiB
constexpr std::uint32_t kMaxExtentPages = 1u << 18;    // 1 GiB
constexpr std::size_t kMaxExtents = 4096;
constexpr std::size_t kMaxMaptrack = 1u << 16;
// Requests read from one connection per pass of the loop. One: a client waits for each reply
// (Channel::call), so after a request there is almost never a second one queued, and reading on
// until EAGAIN cost a recvmsg per hypercall (hypercall_rtt 4.23 -> 4.00 us without it); a
// connection that pipelines gets one per pass, as every other connection does (fairness).
constexpr int kMessagesPerWakeup = 1;
// While hv-min's loop spins and some connection has a hypercall page, one probe in this many is
// an epoll_wait (a syscall); the others only read the pages' request words.
constexpr unsigned kPageProbesPerEpoll = 4;
constexpr std::uint32_t kMaxPins = 0xFFFF;
// Dom0's grant table is shared by all dom0 processes: each attached connection grants from its
// own slice of one frame (512 refs).
constexpr std::uint32_t kDom0GnttabFrames = 64;
constexpr std::uint32_t kDom0SliceRefs = GRANT_ENTRIES_PER_FRAME;

enum class Tag : std::uint64_t {
    stop = 1,
    listener = 2,
    conn = 3,
    pidfd = 4,
    xenstore = 5,
    console = 6,
    exit_grace = 7,
    cgroup = 8,
    iomem = 9,
    kill_watch = 10,
    page_wake = 11,
};
constexpr std::uint64_t ev_key(Tag t, std::uint64_t id) {
    return (static_cast<std::uint64_t>(t) << 56) | id;
}

Result<UniqueFd> make_memfd(const char* name, std::uint64_t bytes) {
    UniqueFd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) {
        return fail_errno();
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
        return fail_errno();
    }
    // The size can never change again: hv-min maps it and must never take SIGBUS.
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        return fail_errno();
    }
    return fd;
}

/// A nonblocking, close-on-exec AF_UNIX socket pair of `type`: {hv-min's end, the peer's}.
Result<std::pair<UniqueFd, UniqueFd>> socket_pair(int type) {
    int sv[2];
    if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
        return fail_errno();
    }
    return std::pair<UniqueFd, UniqueFd>{UniqueFd(sv[0]), UniqueFd(sv[1])};
}

struct Extent {
    std::uint32_t id = 0;
    std::uint64_t first_frame = 0;
    std::uint32_t pages = 0;
    UniqueFd fd;
    Mapping map;
    std::uint64_t owner_conn = 0;  // 0: the domain's; else the dom0 connection that registered it
};

struct Pin {
    std::uint32_t pins = 0;   // all pins (maps and copies in progress)
    std::uint32_t wpins = 0;  // writable pins
    std::uint16_t mapper = 0;
    std::uint32_t frame = 0;  // read from the entry when the first pin was taken
};

struct MapTrack {
    bool used = false;
    bool writable = false;
    std::uint16_t granter = 0;
    std::uint64_t granter_serial = 0;
    std::uint32_t ref = 0;
    std::uint64_t conn = 0;
    std::uint64_t dev_bus_addr = 0;
};

enum class PortState { free, unbound, interdomain, virq };

/// A page of interdomain channels' shared words (evtchn_signal.hpp), shared by two domains
/// only. hv-min writes zeros into a slot it hands out (a crashed waiter's stale `state` would
/// otherwise mute the next binder), marks a side pending on its raises and never reads the page.
struct WordsPage {
    static constexpr std::uint32_t kSlots = wire::kEvtchnWordsPageBytes / wire::kEvtchnWordsSlotBytes;
    static_assert(kSlots <= 64);
    UniqueFd fd;  // sealed memfd: its size never changes, so nobody takes SIGBUS
    Mapping map;
    std::uint64_t used = 0;  // one bit per slot handed out
    evtchn_signal::Words& words(std::uint32_t slot, std::uint32_t side) noexcept {
        return reinterpret_cast<evtchn_signal::Words*>(map.data() +
                                                       slot * wire::kEvtchnWordsSlotBytes)[side];
    }
    void zero(std::uint32_t slot, std::uint32_t side) noexcept {
        auto& w = words(slot, side);
        std::atomic_ref<std::uint32_t>(w.pending).store(0, std::memory_order_relaxed);
        std::atomic_ref<std::uint32_t>(w.state).store(evtchn_signal::kIdle,
                                                      std::memory_order_seq_cst);
    }
};

/// One channel's slot; freed when the channel's last Signal goes.
struct WordsSlot {
    std::shared_ptr<WordsPage> page;
    std::uint32_t index = 0;
    WordsSlot(std::shared_ptr<WordsPage> p, std::uint32_t i) noexcept : page(std::move(p)), index(i) {}
    WordsSlot(const WordsSlot&) = delete;
    WordsSlot& operator=(const WordsSlot&) = delete;
    ~WordsSlot() { page->used &= ~(std::uint64_t{1} << index); }
};

/// One port's pending state (evtchn_signal.hpp): the port's owner receives on `recv`; `send` is
/// handed to the peer (and to nobody else); `raise` is hv-min's own sender, never handed out, so
/// nothing a domain does to the sockets it holds can touch hv-min's sends.
struct Signal {
    UniqueFd recv;
    UniqueFd send;  // invalid for a VIRQ port: it has no peer
    UniqueFd raise;
    std::shared_ptr<WordsSlot> words;  // interdomain channels made by alloc_unbound only
    std::uint32_t side = 0;            // this port's half of the slot
};

struct Port {
    PortState state = PortState::free;
    std::uint16_t remote_dom = 0;   // unbound: who may bind; interdomain: peer
    std::uint32_t remote_port = 0;  // interdomain
    std::uint32_t virq = 0;
    std::uint64_t conn = 0;  // connection that holds it (released with it)
    std::shared_ptr<Signal> wait;    // this port's pending state
    std::shared_ptr<Signal> notify;  // the peer port's pending state
};

/// Sets the port pending through hv-min's own sender: never blocks (MSG_DONTWAIT); a full queue
/// means it is pending already. A port with shared words gets its word set and a futex wake too.
void raise(const std::shared_ptr<Signal>& sig) {
    if (sig && sig->raise.valid()) {
        (void)evtchn_signal::send(sig->raise.get());
        if (sig->words) {  // a waiter asleep on the word hears no datagram
            evtchn_signal::raise_words(sig->words->page->words(sig->words->index, sig->side));
        }
    }
}

struct Domain {
    std::uint16_t domid = 0;
    std::uint64_t serial = 0;
    std::string name;
    std::uint32_t flags = 0;  // wire::kCreate*
    bool privileged = false;
    wire::DomainState state = wire::DomainState::running;
    std::uint64_t mem_pages = 0;
    std::uint64_t next_frame = 0;
    std::vector<std::unique_ptr<Extent>> extents;  // sorted by first_frame
    UniqueFd gnt_fd;
    Mapping gnt_map;
    std::uint32_t gnt_frames = 0;
    std::unordered_map<std::uint32_t, Pin> pins;  // pins on this domain's grant entries
    /// One bit per ref that has an entry in `pins`: the copy path asks this, not the hash,
    /// whether an entry is pinned (a frontend's ring grants keep `pins` non-empty).
    std::vector<std::uint64_t> pinned_refs;
    std::vector<MapTrack> maptrack;                // this domain's mappings of others' grants
    std::vector<std::uint32_t> maptrack_free;
    std::size_t maptrack_used = 0;
    std::vector<Port> ports;
    pid_t pid = -1;
    UniqueFd pidfd;     // reset once the program is reaped
    procs::Cgroup cg;   // every process of the domain (invalid: hv-min runs without cgroups)
    UniqueFd exit_grace;  // armed when its socket closed first: SIGKILL when it expires
    UniqueFd kill_watch;  // armed at its first SIGKILL: reports and retries if it outlives it
    bool kill_reported = false;
    std::uint64_t primary_conn = 0;
    UniqueFd xs_fd;  // the domain's xenstore end, handed over at its first attach
    std::uint64_t console_frame = 0;    // its console ring page (a one-page extent)
    std::uint32_t console_port = 0;     // its console port, bound by dom0 port console_dom0_port
    std::uint32_t console_dom0_port = 0;
    std::vector<std::pair<std::uint64_t, std::uint32_t>> waiters;  // (conn, seq)
    std::vector<bool> gref_slices;  // dom0: slices in use
    wire::DeathInfo death{};

    std::uint32_t nr_entries() const { return gnt_frames * GRANT_ENTRIES_PER_FRAME; }
    bool has_pin(std::uint32_t ref) const {
        const std::size_t w = ref / 64;
        return w < pinned_refs.size() && ((pinned_refs[w] >> (ref % 64)) & 1U) != 0;
    }
    void mark_pinned(std::uint32_t ref, bool on) {
        const std::size_t w = ref / 64;
        if (w >= pinned_refs.size()) {
            if (!on) {
                return;
            }
            pinned_refs.resize(w + 1);
        }
        const std::uint64_t bit = std::uint64_t{1} << (ref % 64);
        pinned_refs[w] = on ? (pinned_refs[w] | bit) : (pinned_refs[w] & ~bit);
    }
    grant_entry_v1* entry(std::uint32_t ref) const {
        return gnt_map.as<grant_entry_v1>() + ref;
    }
    const Extent* find_extent(std::uint64_t frame) const {
        auto it = std::upper_bound(extents.begin(), extents.end(), frame,
                                   [](std::uint64_t f, const std::unique_ptr<Extent>& e) {
                                       return f < e->first_frame;
                                   });
        if (it == extents.begin()) {
            return nullptr;
        }
        const Extent* e = std::prev(it)->get();
        return frame < e->first_frame + e->pages ? e : nullptr;
    }
    std::byte* frame_ptr(const Extent& e, std::uint64_t frame) const {
        return e.map.data() + (frame - e.first_frame) * kPage;
    }
};

struct OutMsg {
    std::vector<std::byte> bytes;
    std::vector<UniqueFd> fds;
};

struct Conn {
    std::uint64_t id = 0;
    UniqueFd fd;
    std::uint16_t domid = 0;
    bool privileged = false;
    std::deque<OutMsg> outq;
    bool want_out = false;
    std::unordered_set<std::uint32_t> sent_extents;
    std::uint32_t virq_bound[NR_VIRQS] = {};
    int gref_slice = -1;  // dom0: which slice of dom0's grant table this connection grants from
    bool xs_given = false;
    // The shared hypercall page (Op::page_setup), if any: hv-min's mapping of the sealed memfd,
    // its descriptor of the doorbell eventfd (watched edge-triggered, never read or written),
    // and the last request seq it served, kept here and never read back from the page.
    Mapping page;
    UniqueFd page_bell;
    std::uint32_t page_seq = 0;
};

/// Builds one reply datagram.
struct Reply {
    wire::ReplyHeader hdr{};
    std::vector<std::byte> body;
    std::vector<UniqueFd> fds;
    template <class T>
    void add(const T& v) {
        const auto* p = reinterpret_cast<const std::byte*>(&v);
        body.insert(body.end(), p, p + sizeof(T));
    }
    void add_bytes(std::span<const std::byte> b) { body.insert(body.end(), b.begin(), b.end()); }
};

}  // namespace

struct Core::Impl {
    CoreConfig cfg;
    UniqueFd epfd;
    UniqueFd stopfd;
    UniqueFd listener;
    std::filesystem::path sock_path;
    std::map<std::uint16_t, std::unique_ptr<Domain>> domains;  // includes dom0
    /// The last deaths, so that waiting on a domain that already died still answers.
    static constexpr std::size_t kRecentDeaths = 256;
    std::deque<wire::DeathInfo> recent_deaths;
    std::unordered_map<std::uint64_t, std::unique_ptr<Conn>> conns;
    std::uint64_t next_conn = 1;
    std::uint64_t next_serial = 1;
    std::uint32_t next_extent_id = 1;
    std::uint16_t next_domid = 1;
    std::jthread thread;
    std::atomic<std::size_t> n_domains{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> served{0};
    std::atomic<std::uint64_t> sleeps{0};
    std::atomic<std::uint64_t> spin_hits{0};
    std::atomic<bool> stopping{false};
    SpinPolicy spin;  // worked() on every hypercall served; loop thread only
    std::vector<Conn*> paged;   // connections with a hypercall page (removed in drop_conn)
    bool pages_asleep = false;  // hv_sleeping as last written into every page
#ifdef HVMIN_WITH_XENSTORE
    std::unique_ptr<xs::Server> xs;
#endif
    std::unique_ptr<ConsoleBackend> consoles;  // hv-min is every domain's console backend
    std::unique_ptr<procs::CgroupParent> cgroups;  // null: process groups only (logged)
    iomem::Table iomem_grants;                 // BARs granted by backends to frontends
    std::vector<iomem::Pending> iomem_pending;  // revoked, still referred to: checked again
    UniqueFd iomem_timer;                      // armed for the earliest pending deadline
    UniqueFd evtchn_dir;  // <rundir>/evtchn (O_PATH): ports' receivers are named here briefly
    std::string evtchn_dir_path;
    std::uint64_t next_signal = 1;
    /// Pages of channels' shared words per pair of domain ids (lower first); a page lives as
    /// long as one of its slots does. Dropped when either domain is released, so a later
    /// domain with the same id gets pages of its own.
    std::map<std::pair<std::uint16_t, std::uint16_t>, std::vector<std::weak_ptr<WordsPage>>>
        words_pages;

    // ---- set-up ------------------------------------------------------------------------------

    Result<void> init() {
        epfd = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
        if (!epfd) {
            return fail_errno();
        }
        stopfd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!stopfd) {
            return fail_errno();
        }
        HV_TRY(watch(stopfd.get(), EPOLLIN, ev_key(Tag::stop, 0)));
        std::error_code ec;
        std::filesystem::create_directories(cfg.rundir, ec);
        sock_path = cfg.rundir / "hv-min.sock";
        listener = UniqueFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!listener) {
            return fail_errno();
        }
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        const std::string p = sock_path.string();
        if (p.size() >= sizeof sa.sun_path) {
            return fail_errno(ENAMETOOLONG);
        }
        std::memcpy(sa.sun_path, p.c_str(), p.size() + 1);
        ::unlink(p.c_str());
        if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
            ::chmod(p.c_str(), 0600) != 0 || ::listen(listener.get(), 64) != 0) {
            return fail_errno();
        }
        HV_TRY(watch(listener.get(), EPOLLIN, ev_key(Tag::listener, 0)));
        iomem_timer = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
        if (!iomem_timer) {
            return fail_errno();
        }
        HV_TRY(watch(iomem_timer.get(), EPOLLIN, ev_key(Tag::iomem, 0)));
        cgroups = procs::CgroupParent::open(cfg.cgroup);  // also ends what a killed hv-min left
        HV_TRY(open_evtchn_dir());
        // Domain 0: the toolstack's domain. Its memory is what its connections register.
        auto d0 = std::make_unique<Domain>();
        d0->domid = 0;
        d0->serial = next_serial++;
        d0->name = "Domain-0";
        d0->privileged = true;
        d0->flags = wire::kCreateTrusted;
        d0->pid = ::getpid();
        HV_TRY(make_gnttab(*d0, kDom0GnttabFrames));
        d0->gref_slices.assign(kDom0GnttabFrames, false);
        d0->gref_slices[0] = true;  // holds the reserved refs 0..7: never handed out
        domains.emplace(0, std::move(d0));
#ifdef HVMIN_WITH_XENSTORE
        if (cfg.host_xenstore) {
            auto srv = xs::Server::create();
            if (!srv) {
                return fail(srv.error());
            }
            xs = std::move(*srv);
            HV_TRY(xs->listen_unix((cfg.rundir / "xenstored.sock").string()));
            HV_TRY(watch(xs->fd(), EPOLLIN, ev_key(Tag::xenstore, 0)));
        }
#endif
        auto cb = ConsoleBackend::create({.dir = cfg.rundir / "console"});
        if (!cb) {
            return fail(cb.error());
        }
        consoles = std::move(*cb);
        HV_TRY(watch(consoles->fd(), EPOLLIN, ev_key(Tag::console, 0)));
#ifdef HVMIN_WITH_XENSTORE
        if (xs) {
            int sv[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
                return fail_errno();
            }
            UniqueFd mine(sv[0]);
            HV_TRY(xs->add_connection(UniqueFd(sv[1]), DomId(0)));
            HV_TRY(consoles->set_xenstore(std::move(mine)));
        }
#endif
        return {};
    }

    Result<void> watch(int fd, std::uint32_t events, std::uint64_t key) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = key;
        if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
            return fail_errno();
        }
        return {};
    }

    Result<void> make_gnttab(Domain& d, std::uint32_t frames) {
        auto fd = make_memfd("hvmin-gnttab", static_cast<std::uint64_t>(frames) * kPage);
        if (!fd) {
            return fail(fd.error());
        }
        auto m = Mapping::map_shared(fd->get(), static_cast<std::size_t>(frames) * kPage);
        if (!m) {
            return fail(m.error());
        }
        d.gnt_fd = std::move(*fd);
        d.gnt_map = std::move(*m);
        d.gnt_frames = frames;
        return {};
    }

    Result<Extent*> add_extent(Domain& d, UniqueFd fd, std::uint32_t pages, std::uint64_t owner) {
        if (d.extents.size() >= kMaxExtents) {
            return fail_errno(ENOSPC);
        }
        auto m = Mapping::map_shared(fd.get(), static_cast<std::size_t>(pages) * kPage);
        if (!m) {
            return fail(m.error());
        }
        auto e = std::make_unique<Extent>();
        e->id = next_extent_id++;
        e->first_frame = d.next_frame;
        e->pages = pages;
        e->fd = std::move(fd);
        e->map = std::move(*m);
        e->owner_conn = owner;
        d.next_frame += pages;  // frame numbers are never reused within a domain
        d.extents.push_back(std::move(e));
        return d.extents.back().get();
    }

    Domain* find_domain(std::uint16_t domid) {
        auto it = domains.find(domid);
        if (it == domains.end() || it->second->state != wire::DomainState::running) {
            return nullptr;
        }
        return it->second.get();
    }

    // ---- the loop ----------------------------------------------------------------------------

    Result<void> run() {
        epoll_event evs[64];
        spin = SpinPolicy(cfg.spin_window);
        unsigned passes_without_epoll = 0;  // passes that found page work and polled nothing
        while (!stopping.load(std::memory_order_acquire)) {
            if (serve_pages()) {
                spin.worked();
            }
            int n = 0;
            bool page_work = false;
            // Hypercalls arrived within the window: poll (zero timeouts) for the next before
            // sleeping; a quiet window and we sleep at once. Not while more threads are
            // runnable than there are CPUs: the caller would then wait for our spin to end.
            const auto budget =
                cpus_oversubscribed() ? std::chrono::microseconds{0} : spin.budget();
            // Each probe looks at the hypercall pages (memory reads) and is, or with pages
            // every kPageProbesPerEpoll-th probe is, one epoll_wait with a zero timeout;
            // spin_until yields only every 64 probes (a sched_yield after every probe doubled
            // the probe's cost and so the delay before a request is seen).
            unsigned probe = 0;
            if (budget.count() > 0 &&
                spin_until(
                    [&] {
                        if (pages_pending()) {
                            page_work = true;
                            return true;
                        }
                        if (!paged.empty() && ++probe % kPageProbesPerEpoll != 0) {
                            return false;
                        }
                        return (n = ::epoll_wait(epfd.get(), evs, 64, 0)) != 0;
                    },
                    budget, SpinYield::every_64) &&
                (n > 0 || page_work)) {
                spin_hits.fetch_add(1, std::memory_order_relaxed);
            }
            if (!page_work) {
                passes_without_epoll = 0;  // the epoll set was looked at (or will be, asleep)
            } else if (++passes_without_epoll >= kPageProbesPerEpoll) {
                // Pages that always have a new request (a caller posting without pause) must
                // not keep the sockets from being looked at: every few such passes, one look.
                passes_without_epoll = 0;
                n = ::epoll_wait(epfd.get(), evs, 64, 0);
            }
            if (n == 0 && !page_work) {
                // Before sleeping, tell every page's caller to ring the doorbell, then look
                // once more. ORDER: the seq_cst fence pairs with the caller's fence between its
                // release store of req.seq and its load of hv_sleeping (Dekker): either we see
                // its request here or it sees hv_sleeping and rings.
                set_pages_asleep(true);
                std::atomic_thread_fence(std::memory_order_seq_cst);
                page_work = pages_pending();
                if (!page_work) {
                    sleeps.fetch_add(1, std::memory_order_relaxed);
                    n = ::epoll_wait(epfd.get(), evs, 64, -1);
                }
                set_pages_asleep(false);
            }
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return fail_errno();
            }
            for (int i = 0; i < n; ++i) {
                const std::uint64_t key = evs[i].data.u64;
                const auto tag = static_cast<Tag>(key >> 56);
                const std::uint64_t id = key & ((1ull << 56) - 1);
                switch (tag) {
                case Tag::stop:
                    break;
                case Tag::listener:
                    accept_all();
                    break;
                case Tag::conn:
                    on_conn(id, evs[i].events);
                    break;
                case Tag::pidfd:
                    on_pidfd(static_cast<std::uint16_t>(id));
                    break;
                case Tag::exit_grace:
                    on_exit_grace(static_cast<std::uint16_t>(id));
                    break;
                case Tag::cgroup:
                    on_cgroup(static_cast<std::uint16_t>(id));
                    break;
                case Tag::iomem:
                    on_iomem_timer();
                    break;
                case Tag::kill_watch:
                    on_kill_watch(static_cast<std::uint16_t>(id));
                    break;
                case Tag::page_wake:
                    break;  // the doorbell woke the loop; pages are served at the top of a pass
                case Tag::xenstore:
#ifdef HVMIN_WITH_XENSTORE
                    if (xs) {
                        (void)xs->process(0);
                    }
#endif
                    break;
                case Tag::console:
                    consoles->process();
                    break;
                }
            }
        }
        return {};
    }

    void accept_all() {
        for (;;) {
            UniqueFd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!fd) {
                return;  // EAGAIN, or a transient error: the listener stays registered
            }
            ucred cred{};
            socklen_t len = sizeof cred;
            if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
                cred.uid != cfg.dom0_uid) {
                HV_LOG_RL(warn, "hv-min: refused a control connection from uid %u (pid %d)",
                          cred.uid, cred.pid);
                continue;
            }
            (void)add_conn(std::move(fd), 0, true);
        }
    }

    Result<Conn*> add_conn(UniqueFd fd, std::uint16_t domid, bool privileged) {
        auto c = std::make_unique<Conn>();
        c->id = next_conn++;
        c->fd = std::move(fd);
        c->domid = domid;
        c->privileged = privileged;
        HV_TRY(watch(c->fd.get(), EPOLLIN, ev_key(Tag::conn, c->id)));
        Conn* raw = c.get();
        conns.emplace(raw->id, std::move(c));
        return raw;
    }

    void on_conn(std::uint64_t id, std::uint32_t events) {
        auto it = conns.find(id);
        if (it == conns.end()) {
            return;
        }
        Conn* c = it->second.get();
        if (events & EPOLLOUT) {
            flush(*c);
            if (!conns.count(id)) {
                return;
            }
        }
        if (events & EPOLLIN) {
            for (int i = 0; i < kMessagesPerWakeup; ++i) {
                auto msg = transport::receive(c->fd.get());
                if (!msg) {
                    if (msg.error() == std::errc::resource_unavailable_try_again) {
                        break;
                    }
                    conn_gone(id, "receive failed");
                    return;
                }
                if (msg->eof) {
                    conn_gone(id, nullptr);
                    return;
                }
                if (msg->truncated) {
                    dropped.fetch_add(1);
                    conn_gone(id, "sent a truncated datagram or too many fds");
                    return;
                }
                served.fetch_add(1);  // before the reply can go out
                spin.worked();
                handle(*c, *msg);
                if (!conns.count(id)) {
                    return;
                }
            }
        } else if (events & (EPOLLHUP | EPOLLERR)) {
            conn_gone(id, nullptr);
        }
    }

    void send_reply(Conn& c, Reply&& r) {
        r.hdr.magic = wire::kMagic;
        r.hdr.nfds = static_cast<std::uint32_t>(r.fds.size());
        OutMsg m;
        m.bytes.resize(sizeof r.hdr + r.body.size());
        std::memcpy(m.bytes.data(), &r.hdr, sizeof r.hdr);
        if (!r.body.empty()) {
            std::memcpy(m.bytes.data() + sizeof r.hdr, r.body.data(), r.body.size());
        }
        m.fds = std::move(r.fds);
        c.outq.push_back(std::move(m));
        if (c.outq.size() > cfg.max_queued_replies) {
            dropped.fetch_add(1);
            conn_gone(c.id, "does not read its replies");
            return;
        }
        flush(c);
    }

    void flush(Conn& c) {
        while (!c.outq.empty()) {
            OutMsg& m = c.outq.front();
            auto r = transport::send(c.fd.get(), m.bytes, m.fds);
            if (!r) {
                if (r.error() == std::errc::resource_unavailable_try_again) {
                    break;
                }
                conn_gone(c.id, nullptr);  // peer gone (EPIPE/ECONNRESET)
                return;
            }
            c.outq.pop_front();
        }
        const bool want = !c.outq.empty();
        if (want != c.want_out) {
            epoll_event ev{};
            ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
            ev.data.u64 = ev_key(Tag::conn, c.id);
            (void)::epoll_ctl(epfd.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
            c.want_out = want;
        }
    }

    // ---- dispatch ----------------------------------------------------------------------------

    void handle(Conn& c, transport::Received& msg) {
        const std::uint64_t cid = c.id;
        wire::Decoded d{};
        wire::DecodeError derr{};
        Reply r;
        if (!wire::decode(msg.bytes, d, derr)) {
            HV_LOG_RL(warn, "hv-min: dom%u sent a malformed request (%d)", c.domid,
                      static_cast<int>(derr));
            if (msg.bytes.size() >= sizeof(wire::Header)) {
                wire::Header h;
                std::memcpy(&h, msg.bytes.data(), sizeof h);
                r.hdr.op = h.op;
                r.hdr.seq = h.seq;
            }
            r.hdr.rc = derr == wire::DecodeError::unknown_op ? -ENOSYS : -EINVAL;
            send_reply(c, std::move(r));
            return;
        }
        r.hdr.op = static_cast<std::uint16_t>(d.op);
        r.hdr.seq = d.seq;
        if (d.op != Op::mem_register_extent && d.op != Op::iomem_grant) {
            msg.fds.clear();  // nothing else takes fds: close what came
        }
        Domain* self = find_domain(c.domid);
        if (self == nullptr) {
            r.hdr.rc = -ESRCH;
            send_reply(c, std::move(r));
            return;
        }
        const bool is_toolstack_op = static_cast<std::uint16_t>(d.op) >= 0x0400;
        if (is_toolstack_op && !c.privileged) {
            r.hdr.rc = -EPERM;
            send_reply(c, std::move(r));
            return;
        }
        switch (d.op) {
        case Op::gnttab_map_grant_ref:
            op_map(c, *self, d, r);
            break;
        case Op::gnttab_unmap_grant_ref:
            op_unmap(*self, d, r);
            break;
        case Op::gnttab_copy:
            op_copy(*self, d, r);
            break;
        case Op::gnttab_setup_table:
        case Op::gnttab_query_size:
            op_gnttab_size(c, *self, d, r);
            break;
        case Op::evtchn_alloc_unbound:
        case Op::evtchn_bind_interdomain:
        case Op::evtchn_bind_virq:
        case Op::evtchn_close:
        case Op::evtchn_send:
        case Op::evtchn_status:
        case Op::evtchn_unmask:
            op_evtchn(c, *self, d, r);
            break;
        case Op::attach:
            op_attach(c, *self, r);
            break;
        case Op::clone_channel:
            op_clone(c, r);
            break;
        case Op::console_attach:
            op_console_attach(c, *self, r);
            break;
        case Op::mem_alloc_extent:
        case Op::mem_register_extent:
            op_extent(c, *self, d, msg.fds, r);
            break;
        case Op::iomem_grant:
            op_iomem_grant(c, *self, d, msg.fds, r);
            break;
        case Op::iomem_map:
            op_iomem_map(c, *self, d, r);
            break;
        case Op::iomem_revoke:
            op_iomem_revoke(c, d, r);
            break;
        case Op::page_setup:
            op_page_setup(c, r);
            break;
        case Op::domain_create:
            op_create(d, r);
            break;
        case Op::domain_destroy:
            op_destroy(d, r);
            break;
        case Op::domain_list:
            op_list(r);
            break;
        case Op::domain_wait:
            if (!op_wait(c, d, r)) {
                return;  // the reply comes when the domain is gone
            }
            break;
        }
        if (conns.count(cid)) {
            send_reply(c, std::move(r));
        }
    }

    template <class T>
    static std::vector<T> elements(const wire::Decoded& d) {
        std::vector<T> v(d.count);
        if (d.count != 0) {
            // GUEST: copied once out of the datagram; only the copy is used.
            std::memcpy(v.data(), d.body.data(), sizeof(T) * d.count);
        }
        return v;
    }
    template <class T>
    static void put_elements(Reply& r, const std::vector<T>& v) {
        r.hdr.count = static_cast<std::uint32_t>(v.size());
        r.add_bytes(std::as_bytes(std::span(v)));
    }

    // ---- grant tables ------------------------------------------------------------------------

    /// Resolves the granting side of a map/copy: DOMID_SELF is the caller.
    Domain* granter_of(Domain& self, domid_t dom) {
        if (dom == DOMID_SELF) {
            return &self;
        }
        if (dom >= DOMID_FIRST_RESERVED) {
            return nullptr;
        }
        return find_domain(dom);
    }

    /// Xen's _set_status_v1: the entry must permit access to `mapper`; sets GTF_reading and,
    /// unless read-only, GTF_writing, racing the granter with cmpxchg (at most 5 tries).
    static std::int16_t set_status(Domain& g, std::uint32_t ref, std::uint16_t mapper,
                                   bool readonly) {
        auto* word = reinterpret_cast<std::uint32_t*>(g.entry(ref));
        std::atomic_ref<std::uint32_t> w(*word);
        const std::uint32_t set = GTF_reading | (readonly ? 0u : GTF_writing);
        for (int tries = 0; tries < 5; ++tries) {
            // GUEST: flags|domid read as one word; the granter may change it at any time.
            // ORDER: acquire pairs with the granter's release store of flags (after domid/frame).
            std::uint32_t cur = w.load(std::memory_order_acquire);
            const auto flags = static_cast<std::uint16_t>(cur & 0xFFFF);
            const auto domid = static_cast<std::uint16_t>(cur >> 16);
            if ((flags & (GTF_type_mask | GTF_sub_page)) != GTF_permit_access || domid != mapper) {
                return GNTST_general_error;
            }
            if (!readonly && (flags & GTF_readonly)) {
                return GNTST_general_error;
            }
            // ORDER: seq_cst cmpxchg pairs with the granter's cmpxchg in end_access.
            if (w.compare_exchange_strong(cur, cur | set, std::memory_order_seq_cst)) {
                return GNTST_okay;
            }
        }
        return GNTST_general_error;
    }

    static void clear_flags(Domain& g, std::uint32_t ref, std::uint16_t bits) {
        std::atomic_ref<std::uint16_t> f(g.entry(ref)->flags);
        // ORDER: seq_cst pairs with the granter's cmpxchg in end_access.
        f.fetch_and(static_cast<std::uint16_t>(~bits), std::memory_order_seq_cst);
    }

    /// Takes a pin on g's entry `ref` for `mapper` (maps and copies). Fills *frame.
    std::int16_t pin(Domain& g, std::uint32_t ref, std::uint16_t mapper, bool writable,
                     std::uint32_t* frame) {
        auto it = g.pins.find(ref);
        const bool pinned = it != g.pins.end() && it->second.pins > 0;
        if (pinned) {
            Pin& p = it->second;
            if (p.mapper != mapper || p.pins >= kMaxPins || p.wpins >= kMaxPins) {
                return GNTST_general_error;
            }
            if (writable && p.wpins == 0) {
                const std::int16_t st = set_status(g, ref, mapper, false);
                if (st != GNTST_okay) {
                    return st;
                }
            }
            p.pins++;
            p.wpins += writable ? 1 : 0;
            *frame = p.frame;
            return GNTST_okay;
        }
        const std::int16_t st = set_status(g, ref, mapper, !writable);
        if (st != GNTST_okay) {
            return st;
        }
        Pin& p = g.pins[ref];
        g.mark_pinned(ref, true);
        p.pins = 1;
        p.wpins = writable ? 1 : 0;
        p.mapper = mapper;
        // GUEST: the frame is read once, after the pin; later pins reuse this value.
        p.frame = std::atomic_ref<std::uint32_t>(g.entry(ref)->frame).load(std::memory_order_acquire);
        *frame = p.frame;
        return GNTST_okay;
    }

    static void unpin(Domain& g, std::uint32_t ref, bool writable) {
        auto it = g.pins.find(ref);
        if (it == g.pins.end() || it->second.pins == 0) {
            return;
        }
        Pin& p = it->second;
        p.pins--;
        if (writable && p.wpins > 0) {
            p.wpins--;
        }
        std::uint16_t clear = 0;
        if (p.wpins == 0) {
            clear |= GTF_writing;
        }
        if (p.pins == 0) {
            clear |= GTF_reading;
        }
        if (clear != 0) {
            clear_flags(g, ref, clear);
        }
        if (p.pins == 0) {
            g.pins.erase(it);
            g.mark_pinned(ref, false);
        }
    }

    std::uint32_t alloc_maptrack(Domain& d) {
        if (!d.maptrack_free.empty()) {
            const std::uint32_t h = d.maptrack_free.back();
            d.maptrack_free.pop_back();
            return h;
        }
        d.maptrack.emplace_back();
        return static_cast<std::uint32_t>(d.maptrack.size() - 1);
    }

    void release_maptrack(Domain& d, std::uint32_t handle) {
        MapTrack& m = d.maptrack[handle];
        auto it = domains.find(m.granter);
        if (it != domains.end() && it->second->serial == m.granter_serial &&
            it->second->state == wire::DomainState::running) {
            unpin(*it->second, m.ref, m.writable);
        }
        m = MapTrack{};
        d.maptrack_free.push_back(handle);
        d.maptrack_used--;
    }

    bool conn_trusted(const Conn& c, const Domain& self) const {
        return c.privileged || (self.flags & wire::kCreateTrusted) != 0;
    }

    void op_map(Conn& c, Domain& self, const wire::Decoded& d, Reply& r) {
        auto ops = elements<gnttab_map_grant_ref>(d);
        std::vector<wire::MapExtra> extra(ops.size());
        const bool trusted = conn_trusted(c, self);
        for (std::size_t i = 0; i < ops.size(); ++i) {
            extra[i] = wire::MapExtra{0, -1, 0, 0, 0};
            ops[i].status = map_one(c, self, ops[i], extra[i], r.fds, trusted);
        }
        put_elements(r, ops);
        for (const auto& x : extra) {
            r.add(x);
        }
    }

    std::int16_t map_one(Conn& c, Domain& self, gnttab_map_grant_ref& op, wire::MapExtra& x,
                         std::vector<UniqueFd>& fds, bool trusted) {
        op.handle = 0;
        op.dev_bus_addr = 0;
        // SPEC: xen/common/grant_table.c map_grant_ref, checks in Xen's order.
        if ((op.flags & (GNTMAP_device_map | GNTMAP_host_map)) == 0) {
            return GNTST_bad_gntref;
        }
        Domain* g = granter_of(self, op.dom);
        if (g == nullptr) {
            return GNTST_bad_domain;
        }
        if (self.maptrack_used >= kMaxMaptrack) {
            return GNTST_no_space;
        }
        if (op.ref >= g->nr_entries()) {
            return GNTST_bad_gntref;
        }
        const bool writable = (op.flags & GNTMAP_readonly) == 0;
        std::uint32_t frame = 0;
        const std::int16_t st = pin(*g, op.ref, self.domid, writable, &frame);
        if (st != GNTST_okay) {
            return st;
        }
        const Extent* e = g->find_extent(frame);
        if (e == nullptr) {
            unpin(*g, op.ref, writable);
            return GNTST_bad_page;
        }
        // Isolation: a backend that is not trusted only ever receives an fd of a one-page extent.
        if (!trusted && e->pages != 1) {
            unpin(*g, op.ref, writable);
            return GNTST_permission_denied;
        }
        int fd_index = -1;
        if (trusted) {
            if (!c.sent_extents.count(e->id)) {
                if (fds.size() >= wire::kMaxFds) {
                    unpin(*g, op.ref, writable);
                    return GNTST_eagain;
                }
                UniqueFd dup(::fcntl(e->fd.get(), F_DUPFD_CLOEXEC, 0));
                if (!dup) {
                    unpin(*g, op.ref, writable);
                    return GNTST_general_error;
                }
                fd_index = static_cast<int>(fds.size());
                fds.push_back(std::move(dup));
                c.sent_extents.insert(e->id);
            }
        } else {
            if (fds.size() >= wire::kMaxFds) {
                unpin(*g, op.ref, writable);
                return GNTST_eagain;
            }
            // A read-only grant reaches an isolated mapper as a read-only file: it cannot
            // mmap it writable.
            const std::string path = "/proc/self/fd/" + std::to_string(e->fd.get());
            UniqueFd reopened(::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC));
            if (!reopened) {
                unpin(*g, op.ref, writable);
                return GNTST_general_error;
            }
            fd_index = static_cast<int>(fds.size());
            fds.push_back(std::move(reopened));
        }
        const std::uint32_t h = alloc_maptrack(self);
        MapTrack& m = self.maptrack[h];
        m.used = true;
        m.writable = writable;
        m.granter = g->domid;
        m.granter_serial = g->serial;
        m.ref = op.ref;
        m.conn = c.id;
        m.dev_bus_addr = (op.flags & GNTMAP_device_map) ? (static_cast<std::uint64_t>(frame) << 12) : 0;
        self.maptrack_used++;
        op.handle = h;
        op.dev_bus_addr = m.dev_bus_addr;
        x.extent_id = e->id;
        x.fd_index = fd_index;
        x.offset_bytes = (frame - e->first_frame) * kPage;
        x.extent_pages = e->pages;
        return GNTST_okay;
    }

    void op_unmap(Domain& self, const wire::Decoded& d, Reply& r) {
        auto ops = elements<gnttab_unmap_grant_ref>(d);
        for (auto& op : ops) {
            // SPEC: grant_table.c unmap_common.
            if (op.handle >= self.maptrack.size() || !self.maptrack[op.handle].used) {
                op.status = GNTST_bad_handle;
                continue;
            }
            const MapTrack& m = self.maptrack[op.handle];
            if (op.dev_bus_addr != 0 && op.dev_bus_addr != m.dev_bus_addr) {
                op.status = GNTST_bad_dev_addr;
                continue;
            }
            release_maptrack(self, op.handle);
            op.status = GNTST_okay;
        }
        put_elements(r, ops);
    }

    /// One side of one copy op: what was checked and claimed in phase 1 of op_copy.
    struct CopySide {
        Domain* dom = nullptr;
        bool gref = false;
        /// How the grant is held until the batch's copies are done: `pin` (the entry was
        /// already pinned by a mapping: one more pin, released by unpin), `flags` (no pin:
        /// only GTF_reading/GTF_writing set in the entry, cleared again), or not at all.
        enum class Hold : std::uint8_t { none, pin, flags } hold = Hold::none;
        bool writable = false;
        std::uint32_t ref = 0;
        std::byte* page = nullptr;
    };
    struct CopyClaim {
        CopySide src;
        CopySide dst;
    };
    /// Per-batch lookups of one side (sources or destinations) that stay valid for the whole
    /// hypercall (the loop thread is the only one that changes domains and extents).
    struct CopyCache {
        domid_t domid = DOMID_INVALID;
        Domain* dom = nullptr;
        const Domain* ext_dom = nullptr;
        const Extent* ext = nullptr;
        /// The grant entry this side claimed last, held until the batch's copies are done: the
        /// next op of the same side naming the same entry of the same domain goes on that claim
        /// and its frame (Xen's gnttab_copy keeps its source and destination buffers across
        /// consecutive ops the same way), so it takes no second pin or flag update.
        const Domain* held_dom = nullptr;
        std::uint32_t held_ref = 0;
        std::uint32_t held_frame = 0;
    };
    std::vector<gnttab_copy> copy_ops;   // the batch's ops: scratch reused, never shrunk
    std::vector<CopyClaim> copy_claims;  // and what each op claimed

    std::int16_t lock_side(Domain& self, const gnttab_copy_ptr& p, bool gref, CopySide& s,
                           CopyCache& cache) {
        if (!gref && p.domid != DOMID_SELF) {
            return GNTST_permission_denied;
        }
        if (p.domid != cache.domid || cache.dom == nullptr) {
            cache.domid = p.domid;
            cache.dom = granter_of(self, p.domid);
        }
        s.dom = cache.dom;
        s.gref = gref;
        return s.dom == nullptr ? GNTST_bad_domain : GNTST_okay;
    }

    /// Claims entry `ref` of `g` for a copy by `mapper` and reads its frame. An entry that a
    /// mapping has pinned takes one more pin; otherwise (the common case) the entry's flags
    /// alone say "in use" to the granter, as a pin would, without a pin record.
    [[gnu::always_inline]] std::int16_t claim_grant(Domain& g, std::uint32_t ref,
                                                    std::uint16_t mapper, bool writable,
                                                    CopySide& s, std::uint32_t* frame) {
        if (g.has_pin(ref)) {
            auto it = g.pins.find(ref);
            if (it != g.pins.end() && it->second.pins > 0) {
                const std::int16_t st = pin(g, ref, mapper, writable, frame);
                if (st == GNTST_okay) {
                    s.hold = CopySide::Hold::pin;
                }
                return st;
            }
        }
        const std::int16_t st = set_status(g, ref, mapper, !writable);
        if (st != GNTST_okay) {
            return st;
        }
        s.hold = CopySide::Hold::flags;
        // GUEST: the frame is read once, after the flags are set.
        *frame = std::atomic_ref<std::uint32_t>(g.entry(ref)->frame).load(std::memory_order_acquire);
        return GNTST_okay;
    }

    static void release_side(CopySide& s) {
        if (s.hold == CopySide::Hold::pin) {
            unpin(*s.dom, s.ref, s.writable);
        } else if (s.hold == CopySide::Hold::flags) {
            clear_flags(*s.dom, s.ref,
                        static_cast<std::uint16_t>(GTF_reading | (s.writable ? GTF_writing : 0)));
        }
        s.hold = CopySide::Hold::none;
    }

    /// Inlined (with claim_grant) in claim_copy's two calls: calls of their own cost ~40 of
    /// the ~135 instructions the two sides of a pkt64_rings_tx frame took (callgrind).
    [[gnu::always_inline]] std::int16_t claim_side(Domain& self, const gnttab_copy_ptr& p,
                                                   bool writable, CopySide& s, CopyCache& cache) {
        std::uint64_t frame = 0;
        if (s.gref) {
            if (p.u.ref >= s.dom->nr_entries()) {
                return GNTST_bad_gntref;
            }
            s.ref = p.u.ref;
            s.writable = writable;
            if (cache.held_dom == s.dom && cache.held_ref == p.u.ref) {
                // Still held by an earlier op of this batch (this side: same access); this
                // side's hold stays `none`, the earlier one is released with the batch.
                frame = cache.held_frame;
            } else {
                std::uint32_t f = 0;
                const std::int16_t st = claim_grant(*s.dom, p.u.ref, self.domid, writable, s, &f);
                if (st != GNTST_okay) {
                    return st;
                }
                cache.held_dom = s.dom;
                cache.held_ref = p.u.ref;
                cache.held_frame = f;
                frame = f;
            }
        } else {
            frame = p.u.gmfn;
        }
        const Extent* e = cache.ext;
        if (cache.ext_dom != s.dom || e == nullptr || frame < e->first_frame ||
            frame - e->first_frame >= e->pages) {
            e = s.dom->find_extent(frame);
            if (e == nullptr) {
                return GNTST_bad_page;
            }
            cache.ext_dom = s.dom;
            cache.ext = e;
        }
        s.page = s.dom->frame_ptr(*e, frame);
        return GNTST_okay;
    }

    /// GNTTABOP_copy in three phases: (1) every op is checked and its grants claimed, in order,
    /// as Xen's gnttab_copy_one does, giving each op its status; (2) the copies of the ops that
    /// passed, in order, where consecutive ops whose source and destination bytes both continue
    /// the previous ones (and do not overlap) go as one memmove; (3) every claim is released.
    /// Holding the claims for the whole batch is one of the orders Xen's sequential loop could
    /// have run in; it keeps the locked flag updates out of the copy loop. An op naming the
    /// entry its side's previous claim took (frames of one granted page) goes on that claim,
    /// as Xen's op loop keeps its buffers; every op still gets its own checks and status.
    void op_copy(Domain& self, const wire::Decoded& d, Reply& r) {
        // GUEST: copied once out of the datagram (into scratch reused across calls).
        if (copy_ops.size() < d.count) {
            copy_ops.resize(d.count);
        }
        const std::span<gnttab_copy> ops = std::span(copy_ops).first(d.count);
        if (d.count != 0) {
            std::memcpy(ops.data(), d.body.data(), sizeof(gnttab_copy) * d.count);
        }
        run_copy(self, ops);
        put_copy_statuses(r, ops);
    }

    /// Runs a batch already copied out of guest memory; fills each op's status.
    void run_copy(Domain& self, std::span<gnttab_copy> ops) {
        if (copy_claims.size() < ops.size()) {
            copy_claims.resize(ops.size());
        }
        const std::span<CopyClaim> claims = std::span(copy_claims).first(ops.size());
        CopyCache src_cache;
        CopyCache dst_cache;
        for (std::size_t i = 0; i < ops.size(); ++i) {
            CopyClaim& c = claims[i];
            c.src.hold = CopySide::Hold::none;  // what the release below reads first
            c.dst.hold = CopySide::Hold::none;
            ops[i].status = claim_copy(self, ops[i], c, src_cache, dst_cache);
        }
        const std::byte* from = nullptr;
        std::byte* to = nullptr;
        std::size_t run = 0;
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const gnttab_copy& op = ops[i];
            if (op.status != GNTST_okay || op.len == 0) {
                continue;
            }
            const std::byte* f = claims[i].src.page + op.source.offset;
            std::byte* t = claims[i].dst.page + op.dest.offset;
            if (run != 0 && f == from + run && t == to + run &&
                disjoint(from, to, run + op.len)) {
                run += op.len;
                continue;
            }
            if (run != 0) {
                // GUEST: both pages stay writable by their owners during the copy.
                std::memmove(to, from, run);
            }
            from = f;
            to = t;
            run = op.len;
        }
        if (run != 0) {
            std::memmove(to, from, run);
        }
        for (CopyClaim& c : claims) {
            release_side(c.src);
            release_side(c.dst);
        }
    }

    /// The copy reply: one int16 status per op, in order (wire::CopyStatus), not the 40-byte
    /// structs: nothing else in them changes, and the reply of a 64-op batch shrinks from
    /// 2584 to 152 bytes, which both sides send and receive on every batch.
    static void put_copy_statuses(Reply& r, std::span<const gnttab_copy> ops) {
        r.hdr.count = static_cast<std::uint32_t>(ops.size());
        r.body.resize(ops.size() * sizeof(wire::CopyStatus));
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const wire::CopyStatus st = ops[i].status;
            std::memcpy(r.body.data() + i * sizeof st, &st, sizeof st);
        }
    }

    static bool disjoint(const std::byte* a, const std::byte* b, std::size_t n) {
        const auto x = reinterpret_cast<std::uintptr_t>(a);
        const auto y = reinterpret_cast<std::uintptr_t>(b);
        return x + n <= y || y + n <= x;
    }

    std::int16_t claim_copy(Domain& self, const gnttab_copy& op, CopyClaim& c,
                            CopyCache& src_cache, CopyCache& dst_cache) {
        // SPEC: grant_table.c gnttab_copy_one: lock domains, claim source, claim dest, bounds.
        if (op.len == 0) {
            return GNTST_okay;
        }
        std::int16_t st =
            lock_side(self, op.source, (op.flags & GNTCOPY_source_gref) != 0, c.src, src_cache);
        if (st == GNTST_okay) {
            st = lock_side(self, op.dest, (op.flags & GNTCOPY_dest_gref) != 0, c.dst, dst_cache);
        }
        if (st == GNTST_okay) {
            st = claim_side(self, op.source, false, c.src, src_cache);
        }
        if (st == GNTST_okay) {
            st = claim_side(self, op.dest, true, c.dst, dst_cache);
        }
        if (st == GNTST_okay &&
            (op.source.offset + op.len > kPage || op.dest.offset + op.len > kPage)) {
            st = GNTST_bad_copy_arg;
        }
        return st;
    }

    void op_gnttab_size(Conn& c, Domain& self, const wire::Decoded& d, Reply& r) {
        if (d.op == Op::gnttab_query_size) {
            auto ops = elements<gnttab_query_size>(d);
            auto& q = ops[0];
            Domain* t = (q.dom == DOMID_SELF || q.dom == self.domid) ? &self
                        : c.privileged && q.dom < DOMID_FIRST_RESERVED ? find_domain(q.dom)
                                                                        : nullptr;
            if (t == nullptr) {
                q.status = c.privileged || q.dom == DOMID_SELF ? GNTST_bad_domain
                                                               : GNTST_permission_denied;
            } else {
                q.nr_frames = t->gnt_frames;
                q.max_nr_frames = t->gnt_frames;
                q.status = GNTST_okay;
            }
            put_elements(r, ops);
            return;
        }
        auto ops = elements<gnttab_setup_table>(d);
        auto& s = ops[0];
        // The frames themselves reach the domain as the grant-table fd at attach.
        if (s.dom != DOMID_SELF && s.dom != self.domid) {
            s.status = GNTST_permission_denied;
        } else if (s.nr_frames > self.gnt_frames) {
            s.status = GNTST_general_error;
        } else {
            s.status = GNTST_okay;
        }
        put_elements(r, ops);
    }

    // ---- event channels ----------------------------------------------------------------------

    Result<void> open_evtchn_dir() {
        const auto dir = cfg.rundir / "evtchn";
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
            return fail_errno();
        }
        evtchn_dir = UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!evtchn_dir) {
            return fail_errno();
        }
        evtchn_dir_path = dir.string();
        return {};
    }

    /// A port's pending state (Signal, evtchn_signal.hpp). The receiver is bound to a name in
    /// hv-min's own directory only while its senders connect; once the name is unlinked no other
    /// socket can ever reach it. `peer`: also a sender to hand to the peer (not for a VIRQ).
    Result<std::shared_ptr<Signal>> new_signal(bool peer) {
        const std::string name =
            std::to_string(::getpid()) + "." + std::to_string(next_signal++);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::string path = evtchn_dir_path + "/" + name;
        if (path.size() >= sizeof sa.sun_path) {  // a long rundir: reach it through our fd
            path = "/proc/self/fd/" + std::to_string(evtchn_dir.get()) + "/" + name;
        }
        if (path.size() >= sizeof sa.sun_path) {
            return fail_errno(ENAMETOOLONG);
        }
        std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
        const auto* addr = reinterpret_cast<const sockaddr*>(&sa);
        auto sig = std::make_shared<Signal>();
        const int type = SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK;
        sig->recv = UniqueFd(::socket(AF_UNIX, type, 0));
        if (!sig->recv || ::bind(sig->recv.get(), addr, sizeof sa) != 0) {
            return fail_errno();
        }
        sig->raise = UniqueFd(::socket(AF_UNIX, type, 0));
        if (peer) {
            sig->send = UniqueFd(::socket(AF_UNIX, type, 0));
        }
        const bool ok = sig->raise && ::connect(sig->raise.get(), addr, sizeof sa) == 0 &&
                        (!peer || (sig->send && ::connect(sig->send.get(), addr, sizeof sa) == 0));
        const int e = errno;
        (void)::unlinkat(evtchn_dir.get(), name.c_str(), 0);
        if (!ok) {
            return fail_errno(e);
        }
        return sig;
    }

    /// A slot of shared words for a new channel between domains `a` and `b`, in a page only
    /// channels between these two share.
    Result<std::shared_ptr<WordsSlot>> new_words(std::uint16_t a, std::uint16_t b) {
        auto& pages = words_pages[{std::min(a, b), std::max(a, b)}];
        std::erase_if(pages, [](const std::weak_ptr<WordsPage>& w) { return w.expired(); });
        std::shared_ptr<WordsPage> page;
        for (const auto& w : pages) {
            auto p = w.lock();
            if (p->used != ~std::uint64_t{0} >> (64 - WordsPage::kSlots)) {
                page = std::move(p);
                break;
            }
        }
        if (!page) {
            auto fd = make_memfd("hvmin-evtchn", wire::kEvtchnWordsPageBytes);
            if (!fd) {
                return fail(fd.error());
            }
            auto map = Mapping::map_shared(fd->get(), wire::kEvtchnWordsPageBytes);
            if (!map) {
                return fail(map.error());
            }
            page = std::make_shared<WordsPage>();
            page->fd = std::move(*fd);
            page->map = std::move(*map);
            pages.push_back(page);
        }
        const auto index = static_cast<std::uint32_t>(std::countr_one(page->used));
        page->used |= std::uint64_t{1} << index;
        page->zero(index, 0);
        page->zero(index, 1);
        return std::make_shared<WordsSlot>(std::move(page), index);
    }

    /// Hands the owner of `p` its descriptors: its receiver, a sender to the peer and, when the
    /// channel has shared words, their page and where its half is (`words`).
    static void hand_port(const Port& p, std::vector<UniqueFd>& fds,
                          std::optional<wire::EvtchnWords>& words) {
        fds.emplace_back(::fcntl(p.wait->recv.get(), F_DUPFD_CLOEXEC, 0));
        fds.emplace_back(::fcntl(p.notify->send.get(), F_DUPFD_CLOEXEC, 0));
        if (const auto& slot = p.wait->words) {
            fds.emplace_back(::fcntl(slot->page->fd.get(), F_DUPFD_CLOEXEC, 0));
            words = wire::EvtchnWords{slot->index * wire::kEvtchnWordsSlotBytes, p.wait->side};
        }
    }

    void forget_words_pages(std::uint16_t domid) {
        std::erase_if(words_pages, [domid](const auto& kv) {
            return kv.first.first == domid || kv.first.second == domid;
        });
    }

    static bool virq_is_global(std::uint32_t virq) {
        return virq != VIRQ_TIMER && virq != VIRQ_DEBUG && virq != VIRQ_XENOPROF &&
               virq != VIRQ_XENPMU;
    }

    static Port* port_of(Domain& d, std::uint32_t port) {
        if (port == 0 || port >= d.ports.size() || d.ports[port].state == PortState::free) {
            return nullptr;
        }
        return &d.ports[port];
    }

    static Result<std::uint32_t> alloc_port(Domain& d) {
        for (std::uint32_t p = 1; p < d.ports.size(); ++p) {
            if (d.ports[p].state == PortState::free) {
                return p;
            }
        }
        if (d.ports.size() >= EVTCHN_2L_NR_CHANNELS) {
            return fail_errno(ENOSPC);
        }
        if (d.ports.empty()) {
            d.ports.resize(1);  // port 0 is reserved and never handed out
        }
        d.ports.emplace_back();
        return static_cast<std::uint32_t>(d.ports.size() - 1);
    }

    /// Frees `port` of `d`; an interdomain peer reverts to unbound (earmarked for d) and is woken.
    void close_port(Domain& d, std::uint32_t port) {
        Port& p = d.ports[port];
        if (p.state == PortState::interdomain) {
            Domain* peer = find_domain(p.remote_dom);
            if (peer != nullptr) {
                Port* pp = port_of(*peer, p.remote_port);
                if (pp != nullptr && pp->state == PortState::interdomain &&
                    pp->remote_dom == d.domid && pp->remote_port == port) {
                    pp->state = PortState::unbound;
                    pp->remote_dom = d.domid;
                    pp->remote_port = 0;
                    raise(pp->wait);
                }
            }
        }
        if (p.state == PortState::virq) {
            auto it = conns.find(p.conn);
            if (it != conns.end() && p.virq < NR_VIRQS) {
                it->second->virq_bound[p.virq] = 0;
            }
        }
        p = Port{};
    }

    void op_evtchn(Conn& c, Domain& self, const wire::Decoded& d, Reply& r) {
        std::vector<std::byte> buf(d.body.begin(), d.body.end());  // GUEST: one copy
        int rc = 0;
        std::optional<wire::EvtchnWords> words;  // follows the struct when fds are handed
        switch (d.op) {
        case Op::evtchn_alloc_unbound: {
            evtchn_alloc_unbound a;
            std::memcpy(&a, buf.data(), sizeof a);
            rc = ev_alloc_unbound(c, self, a, r.fds, words);
            std::memcpy(buf.data(), &a, sizeof a);
            break;
        }
        case Op::evtchn_bind_interdomain: {
            evtchn_bind_interdomain b;
            std::memcpy(&b, buf.data(), sizeof b);
            rc = ev_bind_interdomain(c, self, b, r.fds, words);
            std::memcpy(buf.data(), &b, sizeof b);
            break;
        }
        case Op::evtchn_bind_virq: {
            evtchn_bind_virq b;
            std::memcpy(&b, buf.data(), sizeof b);
            rc = ev_bind_virq(c, self, b, r.fds);
            std::memcpy(buf.data(), &b, sizeof b);
            break;
        }
        case Op::evtchn_close: {
            evtchn_close cl;
            std::memcpy(&cl, buf.data(), sizeof cl);
            if (port_of(self, cl.port) == nullptr) {
                rc = -EINVAL;
            } else {
                close_port(self, cl.port);
            }
            break;
        }
        case Op::evtchn_send: {
            evtchn_send s;
            std::memcpy(&s, buf.data(), sizeof s);
            Port* p = port_of(self, s.port);
            if (p == nullptr || p->state == PortState::virq) {
                rc = -EINVAL;
            } else if (p->state == PortState::interdomain) {
                raise(p->notify);
            }  // unbound: silently dropped
            break;
        }
        case Op::evtchn_status: {
            evtchn_status s;
            std::memcpy(&s, buf.data(), sizeof s);
            rc = ev_status(c, self, s);
            std::memcpy(buf.data(), &s, sizeof s);
            break;
        }
        case Op::evtchn_unmask: {
            evtchn_unmask u;
            std::memcpy(&u, buf.data(), sizeof u);
            // Pending state lives in the port's eventfd; the mask is the client's, so unmask
            // only validates the port (Xen: -EINVAL beyond the port space).
            rc = u.port >= EVTCHN_2L_NR_CHANNELS ? -EINVAL : 0;
            break;
        }
        default:
            rc = -ENOSYS;
            break;
        }
        r.hdr.rc = rc;
        r.hdr.count = 1;
        r.add_bytes(buf);
        if (rc == 0 && words) {
            r.add(*words);
        }
    }

    int ev_alloc_unbound(Conn& c, Domain& self, evtchn_alloc_unbound& a,
                         std::vector<UniqueFd>& fds, std::optional<wire::EvtchnWords>& words) {
        Domain* t = &self;
        if (a.dom != DOMID_SELF && a.dom != self.domid) {
            if (!c.privileged) {
                return -EPERM;
            }
            t = a.dom < DOMID_FIRST_RESERVED ? find_domain(a.dom) : nullptr;
            if (t == nullptr) {
                return -ESRCH;
            }
        }
        const std::uint16_t rdom = a.remote_dom == DOMID_SELF ? self.domid : a.remote_dom;
        auto port = alloc_port(*t);
        if (!port) {
            return -port.error().value();
        }
        auto w = new_signal(true);
        auto n = new_signal(true);
        auto slot = new_words(t->domid, rdom);
        if (!w || !n || !slot) {
            return -ENOMEM;
        }
        (*w)->words = *slot;
        (*w)->side = 0;
        (*n)->words = *slot;
        (*n)->side = 1;
        Port& p = t->ports[*port];
        p.state = PortState::unbound;
        p.remote_dom = rdom;
        p.conn = t == &self ? c.id : 0;
        p.wait = *w;
        p.notify = *n;
        a.port = *port;
        if (t == &self) {
            hand_port(p, fds, words);
        }
        return 0;
    }

    int ev_bind_interdomain(Conn& c, Domain& self, evtchn_bind_interdomain& b,
                            std::vector<UniqueFd>& fds, std::optional<wire::EvtchnWords>& words) {
        const std::uint16_t rd = b.remote_dom == DOMID_SELF ? self.domid : b.remote_dom;
        Domain* remote = rd < DOMID_FIRST_RESERVED ? find_domain(rd) : nullptr;
        if (remote == nullptr) {
            return -ESRCH;
        }
        Port* rp = port_of(*remote, b.remote_port);
        if (rp == nullptr || rp->state != PortState::unbound || rp->remote_dom != self.domid) {
            return -EINVAL;
        }
        auto lport = alloc_port(self);
        if (!lport) {
            return -lport.error().value();
        }
        rp = &remote->ports[b.remote_port];  // alloc_port may have grown self.ports (== remote)
        Port& lp = self.ports[*lport];
        lp.state = PortState::interdomain;
        lp.remote_dom = remote->domid;
        lp.remote_port = b.remote_port;
        lp.conn = c.id;
        lp.wait = rp->notify;
        lp.notify = rp->wait;
        rp->state = PortState::interdomain;
        rp->remote_dom = self.domid;
        rp->remote_port = *lport;
        b.local_port = *lport;
        if (const auto& slot = lp.wait->words) {
            // A binder before it (this domain's, now closed) may have died in wait().
            slot->page->zero(slot->index, lp.wait->side);
        }
        hand_port(lp, fds, words);
        raise(lp.wait);  // covers sends made while the remote port was unbound
        return 0;
    }

    int ev_bind_virq(Conn& c, Domain& self, evtchn_bind_virq& b, std::vector<UniqueFd>& fds) {
        // SPEC: event_channel.c evtchn_bind_virq, checks in Xen's order.
        if (b.virq >= NR_VIRQS) {
            return -EINVAL;
        }
        if (virq_is_global(b.virq) && b.vcpu != 0) {
            return -EINVAL;
        }
        if (b.vcpu != 0) {
            return -ENOENT;  // one vCPU per connection
        }
        if (virq_is_global(b.virq) && self.domid != 0) {
            return -EBUSY;  // global VIRQs are handled by dom0
        }
        if (c.virq_bound[b.virq] != 0) {
            return -EEXIST;
        }
        auto port = alloc_port(self);
        if (!port) {
            return -port.error().value();
        }
        auto w = new_signal(false);
        if (!w) {
            return -ENOMEM;
        }
        Port& p = self.ports[*port];
        p.state = PortState::virq;
        p.virq = b.virq;
        p.conn = c.id;
        p.wait = *w;
        c.virq_bound[b.virq] = *port;
        b.port = *port;
        fds.emplace_back(::fcntl(p.wait->recv.get(), F_DUPFD_CLOEXEC, 0));
        return 0;
    }

    int ev_status(Conn& c, Domain& self, evtchn_status& s) {
        Domain* t = &self;
        if (s.dom != DOMID_SELF && s.dom != self.domid) {
            if (!c.privileged) {
                return -EPERM;
            }
            t = s.dom < DOMID_FIRST_RESERVED ? find_domain(s.dom) : nullptr;
            if (t == nullptr) {
                return -ESRCH;
            }
        }
        if (s.port >= EVTCHN_2L_NR_CHANNELS) {
            return -EINVAL;
        }
        std::memset(&s.u, 0, sizeof s.u);
        s.vcpu = 0;
        const Port* p = s.port < t->ports.size() ? &t->ports[s.port] : nullptr;
        if (p == nullptr || s.port == 0 || p->state == PortState::free) {
            s.status = EVTCHNSTAT_closed;
        } else if (p->state == PortState::unbound) {
            s.status = EVTCHNSTAT_unbound;
            s.u.unbound.dom = p->remote_dom;
        } else if (p->state == PortState::interdomain) {
            s.status = EVTCHNSTAT_interdomain;
            s.u.interdomain.dom = p->remote_dom;
            s.u.interdomain.port = p->remote_port;
        } else {
            s.status = EVTCHNSTAT_virq;
            s.u.virq = p->virq;
        }
        return 0;
    }

    void raise_virq(std::uint32_t virq) {
        Domain* d0 = find_domain(0);
        if (d0 == nullptr) {
            return;
        }
        for (Port& p : d0->ports) {
            if (p.state == PortState::virq && p.virq == virq) {
                raise(p.wait);
            }
        }
    }

    // ---- attach, clone, memory ---------------------------------------------------------------

    void op_attach(Conn& c, Domain& self, Reply& r) {
        wire::AttachInfo info{};
        info.domid = self.domid;
        info.flags = (conn_trusted(c, self) ? wire::kAttachTrusted : 0) |
                     (c.privileged ? wire::kAttachPrivileged : 0) |
                     ((self.flags & wire::kCreateDriverDomain) ? wire::kAttachDriverDomain : 0);
        info.gnttab_frames = self.gnt_frames;
        info.mem_pages = self.mem_pages;
        if (c.privileged) {
            if (c.gref_slice < 0) {
                for (std::size_t i = 0; i < self.gref_slices.size(); ++i) {
                    if (!self.gref_slices[i]) {
                        self.gref_slices[i] = true;
                        c.gref_slice = static_cast<int>(i);
                        break;
                    }
                }
            }
            if (c.gref_slice >= 0) {
                info.gref_first = static_cast<std::uint32_t>(c.gref_slice) * kDom0SliceRefs;
                info.gref_count = kDom0SliceRefs;
            }  // else: dom0's table is exhausted; this connection cannot grant
        } else {
            info.gref_first = GNTTAB_NR_RESERVED_ENTRIES;
            info.gref_count = self.nr_entries() - GNTTAB_NR_RESERVED_ENTRIES;
        }
        std::vector<const Extent*> mine;
        for (const auto& e : self.extents) {
            if (e->owner_conn == 0 || e->owner_conn == c.id) {
                mine.push_back(e.get());
            }
        }
        info.nr_extents = static_cast<std::uint32_t>(mine.size());
        if (mine.size() + 2 > wire::kMaxFds) {
            r.hdr.rc = -E2BIG;
            return;
        }
        r.fds.emplace_back(::fcntl(self.gnt_fd.get(), F_DUPFD_CLOEXEC, 0));
        for (const Extent* e : mine) {
            r.fds.emplace_back(::fcntl(e->fd.get(), F_DUPFD_CLOEXEC, 0));
        }
        if (self.xs_fd.valid() && self.primary_conn == c.id) {
            info.flags |= wire::kAttachXenstore;
            r.fds.push_back(std::move(self.xs_fd));
        }
        for (const auto& f : r.fds) {
            if (!f.valid()) {
                r.fds.clear();
                r.hdr.rc = -EMFILE;
                return;
            }
        }
        r.hdr.count = 1;
        r.add(info);
        for (const Extent* e : mine) {
            r.add(wire::ExtentInfo{e->first_frame, e->pages, e->id});
        }
    }

    // ---- the hypercall page (wire.hpp "The hypercall page") ----------------------------------

    static wire::PageHeader* page_header(const Conn& c) {
        return c.page.as<wire::PageHeader>();
    }

    /// Gives the connection its hypercall page: a sealed memfd hv-min made and maps (the caller
    /// cannot resize it, so hv-min never faults on it), and the doorbell: an eventfd the caller
    /// writes and hv-min's epoll set watches edge-triggered. hv-min never reads or writes it
    /// (the caller shares its file description and could make either block), so nothing the
    /// caller does to it reaches hv-min: a full, blocking or closed one only mutes its own bell.
    void op_page_setup(Conn& c, Reply& r) {
        if (c.page.valid()) {
            r.hdr.rc = -EEXIST;
            return;
        }
        auto fd = make_memfd("hvmin-hcpage", wire::kPageBytes);
        if (!fd) {
            r.hdr.rc = -fd.error().value();
            return;
        }
        auto m = Mapping::map_shared(fd->get(), wire::kPageBytes);
        if (!m) {
            r.hdr.rc = -m.error().value();
            return;
        }
        UniqueFd bell(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        UniqueFd theirs(bell ? ::fcntl(bell.get(), F_DUPFD_CLOEXEC, 0) : -1);
        if (!bell || !theirs) {
            r.hdr.rc = -errno;
            return;
        }
        // Edge-triggered: each write is one event whatever the count, so hv-min never has to
        // read the counter to quiet it (an honest caller's count never nears 2^64 - 2).
        if (auto w = watch(bell.get(), EPOLLIN | EPOLLET, ev_key(Tag::page_wake, c.id)); !w) {
            r.hdr.rc = -w.error().value();
            return;
        }
        c.page = std::move(*m);
        c.page_bell = std::move(bell);
        c.page_seq = 0;
        std::atomic_ref(page_header(c)->rsp.hv_sleeping)
            .store(pages_asleep ? 1u : 0u, std::memory_order_relaxed);
        paged.push_back(&c);
        const wire::PageInfo info{wire::kPageBytes, wire::kPageMaxOps, wire::kPageStatusOffset,
                                  wire::kPageOpsOffset};
        r.hdr.count = 1;
        r.add(info);
        r.fds.push_back(std::move(*fd));
        r.fds.push_back(std::move(theirs));
    }

    /// True if some page holds a request not served yet (one load per page).
    bool pages_pending() const {
        for (const Conn* c : paged) {
            // GUEST: a hint only; serve_page reads the request properly.
            if (std::atomic_ref(page_header(*c)->req.seq).load(std::memory_order_relaxed) !=
                c->page_seq) {
                return true;
            }
        }
        return false;
    }

    void set_pages_asleep(bool asleep) {
        if (paged.empty() || asleep == pages_asleep) {
            pages_asleep = asleep;
            return;
        }
        pages_asleep = asleep;
        for (const Conn* c : paged) {
            std::atomic_ref(page_header(*c)->rsp.hv_sleeping)
                .store(asleep ? 1u : 0u, std::memory_order_relaxed);
        }
    }

    /// Serves at most one request per page (as one datagram per connection per pass).
    bool serve_pages() {
        bool any = false;
        // Serving a page never drops a connection, so `paged` does not change meanwhile.
        for (Conn* c : paged) {
            any |= serve_page(*c);
        }
        return any;
    }

    bool serve_page(Conn& c) {
        wire::PageCall call;
        wire::DecodeError err{};
        // Sized once: a resize up to kPageMaxOps per request zeroed up to 10 KB each time.
        std::vector<gnttab_copy>& ops = copy_ops;
        if (ops.size() < wire::kPageMaxOps) {
            ops.resize(wire::kPageMaxOps);
        }
        const wire::PageTake t = wire::take_page_request(c.page.data(), c.page_seq, call, ops, err);
        if (t == wire::PageTake::none) {
            return false;
        }
        c.page_seq = call.seq;
        served.fetch_add(1);
        wire::PageHeader* h = page_header(c);
        std::int32_t rc = 0;
        Domain* self = find_domain(c.domid);
        if (t == wire::PageTake::rejected) {
            HV_LOG_RL(warn, "hv-min: dom%u posted a malformed request in its hypercall page (%d)",
                      c.domid, static_cast<int>(err));
            rc = err == wire::DecodeError::unknown_op ? -ENOSYS : -EINVAL;
        } else if (self == nullptr) {
            rc = -ESRCH;
        } else {
            run_copy(*self, std::span(ops).first(call.count));
            std::byte* st = c.page.data() + wire::kPageStatusOffset;
            for (std::size_t i = 0; i < call.count; ++i) {
                const wire::CopyStatus v = ops[i].status;
                std::memcpy(st + i * sizeof v, &v, sizeof v);
            }
        }
        std::atomic_ref(h->rsp.rc).store(rc, std::memory_order_relaxed);
        const int cpu = ::sched_getcpu();
        const std::uint32_t hv_cpu = cpu < 0 ? 0u : static_cast<std::uint32_t>(cpu) + 1;
        std::atomic_ref(h->rsp.hv_cpu).store(hv_cpu, std::memory_order_relaxed);
        // ORDER: release pairs with the caller's acquire load of rsp.seq (statuses, rc first);
        // the seq_cst fence with the caller's fence between its store of caller_sleeping and
        // its re-check of rsp.seq: either it sees the reply or we see that it sleeps.
        std::atomic_ref(h->rsp.seq).store(call.seq, std::memory_order_release);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        // GUEST: only decides whether to wake the futex (a lie costs hv-min one FUTEX_WAKE,
        // which never blocks, on its own mapping). A futex wake, not a socket send: a socket's
        // wake-up is "sync" and makes the scheduler pull the caller onto this CPU, where the
        // two then take turns (bench/README.md, "Why copy_batch64 is bimodal").
        if (std::atomic_ref(h->req.caller_sleeping).load(std::memory_order_relaxed) != 0) {
            evtchn_signal::futex_wake(&h->rsp.seq);
        }
        return true;
    }

    void op_clone(Conn& c, Reply& r) {
        auto pair = socket_pair(SOCK_SEQPACKET);
        if (!pair) {
            r.hdr.rc = -pair.error().value();
            return;
        }
        auto& [mine, theirs] = *pair;
        const int fl = ::fcntl(theirs.get(), F_GETFL);
        (void)::fcntl(theirs.get(), F_SETFL, fl & ~O_NONBLOCK);
        auto added = add_conn(std::move(mine), c.domid, c.privileged);
        if (!added) {
            r.hdr.rc = -added.error().value();
            return;
        }
        r.fds.push_back(std::move(theirs));
    }

    void op_extent(Conn& c, Domain& self, const wire::Decoded& d, std::vector<UniqueFd>& in_fds,
                   Reply& r) {
        const auto req = elements<wire::ExtentRequest>(d)[0];
        if (req.pages == 0 || req.pages > kMaxExtentPages || req.pad != 0) {
            r.hdr.rc = -EINVAL;
            return;
        }
        UniqueFd fd;
        if (d.op == Op::mem_register_extent) {
            if (!c.privileged) {
                r.hdr.rc = -EPERM;
                return;
            }
            if (in_fds.size() != 1) {
                r.hdr.rc = -EINVAL;
                return;
            }
            fd = std::move(in_fds[0]);
            struct stat st {};
            if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
                static_cast<std::uint64_t>(st.st_size) != static_cast<std::uint64_t>(req.pages) * kPage) {
                r.hdr.rc = -EINVAL;
                return;
            }
            // The size must be sealed: hv-min maps it and must never fault on a shrink.
            const int seals = ::fcntl(fd.get(), F_GET_SEALS);
            if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
                r.hdr.rc = -EINVAL;
                return;
            }
        } else {
            if (!c.privileged && self.mem_pages + req.pages > kMaxDomainPages) {
                r.hdr.rc = -ENOMEM;
                return;
            }
            auto m = make_memfd("hvmin-extent", static_cast<std::uint64_t>(req.pages) * kPage);
            if (!m) {
                r.hdr.rc = -m.error().value();
                return;
            }
            fd = std::move(*m);
        }
        auto e = add_extent(self, std::move(fd), req.pages, c.privileged ? c.id : 0);
        if (!e) {
            r.hdr.rc = -e.error().value();
            return;
        }
        if (!c.privileged) {
            self.mem_pages += req.pages;
        }
        if (d.op == Op::mem_alloc_extent) {
            r.fds.emplace_back(::fcntl((*e)->fd.get(), F_DUPFD_CLOEXEC, 0));
        }
        r.hdr.count = 1;
        r.add(wire::ExtentInfo{(*e)->first_frame, (*e)->pages, (*e)->id});
    }

    // ---- I/O memory (PCI BARs) ---------------------------------------------------------------

    /// A backend grants one BAR (an fd and its size) to one frontend. Only dom0 and driver
    /// domains serve devices, so only they may grant I/O memory.
    void op_iomem_grant(Conn& c, Domain& self, const wire::Decoded& d,
                        std::vector<UniqueFd>& in_fds, Reply& r) {
        auto req = elements<wire::IomemGrant>(d)[0];
        if (!c.privileged && (self.flags & wire::kCreateDriverDomain) == 0) {
            r.hdr.rc = -EPERM;
            return;
        }
        if (in_fds.size() != 1 || req.handle != 0 || req.pad != 0 || req.pad2 != 0 ||
            (req.flags & ~wire::kIomemReadonly) != 0 || req.size == 0 || req.size % kPage != 0 ||
            req.size > (std::uint64_t{1} << 40)) {
            r.hdr.rc = -EINVAL;
            return;
        }
        struct stat st {};
        if (::fstat(in_fds[0].get(), &st) != 0 || !S_ISREG(st.st_mode) ||
            static_cast<std::uint64_t>(st.st_size) < req.size) {
            r.hdr.rc = -EINVAL;
            return;
        }
        Domain* fe = req.domid < DOMID_FIRST_RESERVED ? find_domain(req.domid) : nullptr;
        if (fe == nullptr || fe->domid == 0 || fe->domid == self.domid) {
            r.hdr.rc = -ESRCH;
            return;
        }
        const bool ro = (req.flags & wire::kIomemReadonly) != 0;
        auto fd = iomem::reopen(in_fds[0].get(), ro);
        auto id = fd ? iomem::file_id(fd->get()) : Result<iomem::FileId>(fail(fd.error()));
        if (!id) {
            r.hdr.rc = -id.error().value();
            return;
        }
        iomem::Grant g;
        g.granter = self.domid;
        g.granter_conn = c.id;
        g.frontend = fe->domid;
        g.frontend_serial = fe->serial;
        g.size = req.size;
        g.readonly = ro;
        g.fd = std::move(*fd);
        g.id = *id;
        auto h = iomem_grants.add(std::move(g));
        if (!h) {
            r.hdr.rc = -h.error().value();
            return;
        }
        req.handle = *h;
        r.hdr.count = 1;
        r.add(req);
    }

    /// The frontend named in a grant receives its fd (opened with the granted access only).
    void op_iomem_map(Conn& c, Domain& self, const wire::Decoded& d, Reply& r) {
        auto req = elements<wire::IomemGrant>(d)[0];
        if (req.pad != 0 || req.pad2 != 0 || req.flags != 0 || req.size != 0) {
            r.hdr.rc = -EINVAL;
            return;
        }
        iomem::Grant* g = iomem_grants.find(req.handle);
        if (g == nullptr || g->granter != req.domid) {
            r.hdr.rc = g == nullptr && iomem_grants.issued(req.handle) ? -ESTALE : -ENOENT;
            return;
        }
        if (g->frontend != c.domid || g->frontend_serial != self.serial) {
            r.hdr.rc = -EPERM;
            return;
        }
        UniqueFd dup(::fcntl(g->fd.get(), F_DUPFD_CLOEXEC, 0));
        if (!dup) {
            r.hdr.rc = -errno;
            return;
        }
        g->mapped = true;
        r.fds.push_back(std::move(dup));
        req.size = g->size;
        req.flags = g->readonly ? wire::kIomemReadonly : 0;
        r.hdr.count = 1;
        r.add(req);
    }

    /// The connection that granted (or, for a driver domain, any of its connections) revokes.
    void op_iomem_revoke(Conn& c, const wire::Decoded& d, Reply& r) {
        const auto req = elements<wire::IomemGrant>(d)[0];
        if (req.pad != 0 || req.pad2 != 0 || req.flags != 0 || req.size != 0 || req.domid != 0) {
            r.hdr.rc = -EINVAL;
            return;
        }
        const iomem::Grant* g = iomem_grants.find(req.handle);
        if (g == nullptr) {
            r.hdr.rc = iomem_grants.issued(req.handle) ? -ESTALE : -ENOENT;
            return;
        }
        if (g->granter_conn != c.id && (c.domid == 0 || g->granter != c.domid)) {
            r.hdr.rc = -EPERM;
            return;
        }
        revoke_iomem(req.handle, "revoked by its backend");
    }

    /// Every process of a domain: its cgroup's members (without a cgroup, its program only).
    std::vector<pid_t> domain_pids(const Domain& d) {
        if (d.cg.valid()) {
            std::ifstream f(d.cg.dir() / "cgroup.procs");
            std::stringstream ss;
            ss << f.rdbuf();
            return iomem::parse_pids(ss.str());
        }
        return d.pid > 0 && d.pidfd.valid() ? std::vector<pid_t>{d.pid} : std::vector<pid_t>{};
    }

    /// Revokes the grants `pred` selects. A frontend that received one must no longer hold an
    /// fd of it or map it once CoreConfig::iomem_revoke_grace_ms is over (a cooperating guest
    /// unmaps when its backend reconfigures or closes); if it still does, it is destroyed.
    template <class Pred>
    void revoke_iomem_if(Pred pred, const char* why) {
        for (auto& g : iomem_grants.take_if(pred)) {
            Domain* fe = find_domain(g.frontend);
            if (!g.mapped || fe == nullptr || fe->serial != g.frontend_serial) {
                continue;  // never handed out, or its frontend is gone: nothing to check
            }
            // Checked now (logged) and again when the grace ends, whatever this check finds:
            // an fd that was in flight in a socket of the domain now may be received later.
            pid_t who = 0;
            if (iomem::referenced(domain_pids(*fe), g.id, &who)) {
                HV_INFO("hv-min: iomem %u of dom%u %s; dom%u (pid %d) still refers to it: %u ms "
                        "to let go", g.handle, g.granter, why, g.frontend, who,
                        cfg.iomem_revoke_grace_ms);
            }
            iomem_pending.push_back(iomem::Pending{
                g.handle, g.frontend, g.frontend_serial, std::move(g.fd), g.id,
                std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(cfg.iomem_revoke_grace_ms)});
        }
        arm_iomem_timer();
    }
    void revoke_iomem(std::uint32_t handle, const char* why) {
        revoke_iomem_if([handle](const iomem::Grant& g) { return g.handle == handle; }, why);
    }

    void arm_iomem_timer() {
        itimerspec its{};
        if (!iomem_pending.empty()) {
            auto first = iomem_pending.front().deadline;
            for (const auto& p : iomem_pending) {
                first = std::min(first, p.deadline);
            }
            const auto ns = std::max<std::int64_t>(
                1, std::chrono::duration_cast<std::chrono::nanoseconds>(
                       first - std::chrono::steady_clock::now()).count());
            its.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
            its.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
        }
        (void)::timerfd_settime(iomem_timer.get(), 0, &its, nullptr);
    }

    /// Grace over for some revoked grants: a frontend that still holds one is destroyed.
    void on_iomem_timer() {
        std::uint64_t n = 0;
        (void)!::read(iomem_timer.get(), &n, sizeof n);
        const auto now = std::chrono::steady_clock::now();
        std::vector<iomem::Pending> due;
        for (auto it = iomem_pending.begin(); it != iomem_pending.end();) {
            if (it->deadline <= now) {
                due.push_back(std::move(*it));
                it = iomem_pending.erase(it);
            } else {
                ++it;
            }
        }
        for (const auto& p : due) {
            Domain* fe = find_domain(p.frontend);
            if (fe == nullptr || fe->serial != p.frontend_serial) {
                continue;
            }
            pid_t who = 0;
            if (iomem::referenced(domain_pids(*fe), p.id, &who)) {
                HV_WARN("hv-min: domain %u (%s): pid %d kept a revoked BAR mapping (iomem %u): "
                        "destroyed", fe->domid, fe->name.c_str(), who, p.handle);
                kill_domain(*fe, wire::DeathReason::destroyed, 0, "kept a revoked BAR mapping");
            }
        }
        arm_iomem_timer();
    }

    // ---- domains -----------------------------------------------------------------------------

    void op_create(const wire::Decoded& d, Reply& r) {
        wire::CreateRequest cr;
        std::memcpy(&cr, d.body.data(), sizeof cr);
        const auto strings = d.body.subspan(sizeof cr);
        std::vector<std::string> parts;
        std::size_t start = 0;
        for (std::size_t i = 0; i < strings.size(); ++i) {
            if (strings[i] == std::byte{0}) {
                parts.emplace_back(reinterpret_cast<const char*>(strings.data()) + start, i - start);
                start = i + 1;
            }
        }
        const std::uint64_t want = 1ull + cr.argc + cr.envc;
        if (start != strings.size() || parts.size() != want || cr.argc == 0 || cr.mem_pages == 0 ||
            cr.mem_pages > kMaxDomainPages || cr.gnttab_frames > kMaxGnttabFrames ||
            (cr.flags & ~(wire::kCreateTrusted | wire::kCreateDriverDomain)) != 0 ||
            parts[0].empty() || parts[0].size() >= wire::kMaxName) {
            r.hdr.rc = -EINVAL;
            return;
        }
        for (const auto& [id, dom] : domains) {
            if (dom->name == parts[0] && dom->state == wire::DomainState::running) {
                r.hdr.rc = -EEXIST;
                return;
            }
        }
        std::uint16_t domid = 0;
        for (int tries = 0; tries < DOMID_FIRST_RESERVED; ++tries) {
            const std::uint16_t cand = next_domid;
            next_domid = static_cast<std::uint16_t>(next_domid + 1 >= DOMID_FIRST_RESERVED ? 1 : next_domid + 1);
            if (!domains.count(cand)) {
                domid = cand;
                break;
            }
        }
        if (domid == 0) {
            r.hdr.rc = -ENOSPC;
            return;
        }
        auto dom = std::make_unique<Domain>();
        dom->domid = domid;
        dom->serial = next_serial++;
        dom->name = parts[0];
        dom->flags = cr.flags;
        dom->mem_pages = cr.mem_pages;
        auto rc = build_domain(*dom, cr, parts);
        if (!rc) {
            r.hdr.rc = -rc.error().value();
            return;
        }
        wire::DomainInfo info = info_of(*dom);
        domains.emplace(domid, std::move(dom));
        n_domains.store(domains.size() - 1);
        HV_INFO("hv-min: created domain %u (%s, %u pages, pid %d)", domid, info.name,
                cr.mem_pages, info.pid);
        r.hdr.count = 1;
        r.add(info);
    }

    Result<void> build_domain(Domain& dom, const wire::CreateRequest& cr,
                              const std::vector<std::string>& parts) {
        HV_TRY(make_gnttab(dom, cr.gnttab_frames == 0 ? cfg.default_gnttab_frames : cr.gnttab_frames));
        auto mem = make_memfd("hvmin-mem", static_cast<std::uint64_t>(cr.mem_pages) * kPage);
        if (!mem) {
            return fail(mem.error());
        }
        auto ext = add_extent(dom, std::move(*mem), cr.mem_pages, 0);
        if (!ext) {
            return fail(ext.error());
        }
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
            return fail_errno();
        }
        UniqueFd mine(sv[0]);
        UniqueFd child(sv[1]);
        const int fl = ::fcntl(mine.get(), F_GETFL);
        (void)::fcntl(mine.get(), F_SETFL, fl | O_NONBLOCK);
#ifdef HVMIN_WITH_XENSTORE
        if (xs) {
            int xv[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, xv) != 0) {
                return fail_errno();
            }
            UniqueFd xs_mine(xv[0]);
            dom.xs_fd = UniqueFd(xv[1]);
            HV_TRY(xs->add_connection(std::move(xs_mine), DomId(dom.domid)));
            (void)xs->introduce_domain(DomId(dom.domid));
            // The domain must be able to read its own home before its program looks.
            if (auto h = xs->make_domain_home(DomId(dom.domid), dom.name); !h) {
                HV_WARN("domain %u: cannot create its XenStore home: %s", dom.domid,
                        h.error().message().c_str());
            }
        }
#endif
        // argv/envp for the program: only the configured environment + the hypercall fd.
        std::vector<std::string> env(parts.begin() + 1 + cr.argc, parts.end());
        env.push_back("HV_HYPERCALL_FD=" + std::to_string(child.get()));
        std::vector<char*> argv;
        for (std::uint32_t i = 0; i < cr.argc; ++i) {
            argv.push_back(const_cast<char*>(parts[1 + i].c_str()));
        }
        argv.push_back(nullptr);
        std::vector<char*> envp;
        for (auto& e : env) {
            envp.push_back(e.data());
        }
        envp.push_back(nullptr);
        if (cgroups) {
            auto cg = cgroups->make("d" + std::to_string(dom.domid) + "." + std::to_string(dom.serial));
            if (cg) {
                dom.cg = std::move(*cg);
            } else {
                HV_WARN("hv-min: domain %u: no cgroup (%s): its process group only", dom.domid,
                        cg.error().message().c_str());
            }
        }
        auto sp = procs::spawn(argv, envp, child.get(), dom.cg);
        if (!sp) {
            dom.cg.remove();
            release_xenstore(dom.domid);
            return fail(sp.error());
        }
        if (!sp->in_cgroup) {
            dom.cg.remove();
        }
        const pid_t pid = sp->pid;
        dom.pid = pid;
        dom.pidfd = std::move(sp->pidfd);
        auto undo = [&](std::error_code ec) -> Result<void> {
            consoles->remove(dom.domid);
            kill_procs(dom);
            ::waitpid(pid, nullptr, 0);  // SIGKILLed: bounded
            wait_cgroup_empty(dom);
            dom.cg.remove();
            release_xenstore(dom.domid);
            return fail(ec);
        };
        if (dom.cg.valid()) {
            if (auto wc = watch(dom.cg.events_fd(), EPOLLPRI, ev_key(Tag::cgroup, dom.domid)); !wc) {
                return undo(wc.error());
            }
        }
        auto w = watch(dom.pidfd.get(), EPOLLIN, ev_key(Tag::pidfd, dom.domid));
        if (!w) {
            return undo(w.error());
        }
        auto c = add_conn(std::move(mine), dom.domid, false);
        if (!c) {
            return undo(c.error());
        }
        dom.primary_conn = (*c)->id;
        if (auto cr2 = setup_console(dom); !cr2) {
            return undo(cr2.error());
        }
        return {};
    }

    /// What Xen's domain builder does for the primary console (xen-abi §8): a ring page of its
    /// own, granted to dom0 as GNTTAB_RESERVED_CONSOLE, and a port for dom0, which hv-min's
    /// console backend binds at once (as xenconsoled would).
    Result<void> setup_console(Domain& dom) {
        auto pg = make_memfd("hvmin-console", kPage);
        if (!pg) {
            return fail(pg.error());
        }
        auto ext = add_extent(dom, std::move(*pg), 1, 0);
        if (!ext) {
            return fail(ext.error());
        }
        const std::uint64_t frame = (*ext)->first_frame;
        grant_entry_v1* e = dom.entry(GNTTAB_RESERVED_CONSOLE);
        e->domid = 0;
        e->frame = static_cast<std::uint32_t>(frame);
        // ORDER: domid and frame before flags (sharp edge 11); pairs with a mapper's acquire.
        std::atomic_ref(e->flags).store(GTF_permit_access, std::memory_order_release);
        Domain* d0 = find_domain(0);
        auto gport = alloc_port(dom);
        if (!gport || d0 == nullptr) {
            return fail_errno(ENOSPC);
        }
        auto w = new_signal(true);
        auto n = new_signal(true);
        if (!w || !n) {
            return fail_errno(ENOMEM);
        }
        auto bport = alloc_port(*d0);
        if (!bport) {
            return fail(bport.error());
        }
        Port& gp = dom.ports[*gport];
        gp.state = PortState::interdomain;
        gp.remote_dom = 0;
        gp.remote_port = *bport;
        gp.conn = 0;  // the domain's own: released at its death only
        gp.wait = *w;
        gp.notify = *n;
        Port& bp = d0->ports[*bport];
        bp.state = PortState::interdomain;
        bp.remote_dom = dom.domid;
        bp.remote_port = *gport;
        bp.conn = 0;  // hv-min's console backend (no connection has id 0)
        bp.wait = *n;
        bp.notify = *w;
        dom.console_frame = frame;
        dom.console_port = *gport;
        dom.console_dom0_port = *bport;
        UniqueFd bw(::fcntl(bp.wait->recv.get(), F_DUPFD_CLOEXEC, 0));
        UniqueFd bn(::fcntl(bp.notify->send.get(), F_DUPFD_CLOEXEC, 0));
        auto added = bw && bn ? consoles->add(dom.domid, (*ext)->fd.get(), frame, *gport,
                                              std::move(bw), std::move(bn))
                              : Result<void>(fail_errno(EMFILE));
        if (!added) {
            d0->ports[*bport] = Port{};
            return fail(added.error());
        }
        return {};
    }

    void op_console_attach(Conn& c, Domain& self, Reply& r) {
        const Extent* e = self.console_frame != 0 || self.console_port != 0
                              ? self.find_extent(self.console_frame)
                              : nullptr;
        if (c.privileged || e == nullptr || self.console_port >= self.ports.size()) {
            r.hdr.rc = -ENOENT;
            return;
        }
        const Port& p = self.ports[self.console_port];
        if (!p.wait || !p.notify) {
            r.hdr.rc = -ENOENT;
            return;
        }
        r.fds.emplace_back(::fcntl(e->fd.get(), F_DUPFD_CLOEXEC, 0));
        r.fds.emplace_back(::fcntl(p.wait->recv.get(), F_DUPFD_CLOEXEC, 0));
        r.fds.emplace_back(::fcntl(p.notify->send.get(), F_DUPFD_CLOEXEC, 0));
        for (const auto& f : r.fds) {
            if (!f.valid()) {
                r.fds.clear();
                r.hdr.rc = -EMFILE;
                return;
            }
        }
        r.hdr.count = 1;
        r.add(wire::ConsoleInfo{self.console_frame, self.console_port, 0});
    }

    void release_xenstore([[maybe_unused]] std::uint16_t domid) {
#ifdef HVMIN_WITH_XENSTORE
        if (xs) {
            (void)xs->release_domain(DomId(domid));
        }
#endif
    }

    static std::uint64_t cpu_time_ns(pid_t pid) {
        std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
        std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        const auto rp = s.rfind(')');
        if (rp == std::string::npos) {
            return 0;
        }
        // Fields after "(comm)": state is field 3; utime and stime are 14 and 15.
        std::vector<std::string> fields;
        std::size_t i = rp + 2;
        while (i < s.size() && fields.size() < 13) {
            const auto sp = s.find(' ', i);
            fields.push_back(s.substr(i, sp - i));
            if (sp == std::string::npos) {
                break;
            }
            i = sp + 1;
        }
        if (fields.size() < 13) {
            return 0;
        }
        const long hz = ::sysconf(_SC_CLK_TCK);
        const std::uint64_t ticks = std::stoull(fields[11]) + std::stoull(fields[12]);
        return hz > 0 ? ticks * (1000000000ull / static_cast<std::uint64_t>(hz)) : 0;
    }

    static wire::DomainInfo info_of(const Domain& d) {
        wire::DomainInfo i{};
        i.domid = d.domid;
        i.state = static_cast<std::uint16_t>(d.state);
        i.flags = d.flags;
        i.mem_pages = d.mem_pages;
        i.pid = d.pid;
        i.cpu_time_ns = d.domid == 0 || d.state != wire::DomainState::running ? 0 : cpu_time_ns(d.pid);
        std::snprintf(i.name, sizeof i.name, "%s", d.name.c_str());
        return i;
    }

    void op_list(Reply& r) {
        for (const auto& [id, d] : domains) {
            r.add(info_of(*d));
            r.hdr.count++;
        }
    }

    void op_destroy(const wire::Decoded& d, Reply& r) {
        const auto ref = elements<wire::DomainRef>(d)[0];
        if (ref.domid == 0) {
            r.hdr.rc = -EPERM;
            return;
        }
        if (auto it = domains.find(ref.domid); it != domains.end() && it->second->exit_grace.valid()) {
            // Dead already but its program is still within the exit grace: end it now.
            Domain& dying = *it->second;
            disarm_exit_grace(dying);
            dying.death.reason = static_cast<std::uint16_t>(wire::DeathReason::destroyed);
            dying.death.status = SIGKILL;
            kill_procs(dying);
            return;
        }
        Domain* dom = ref.domid < DOMID_FIRST_RESERVED ? find_domain(ref.domid) : nullptr;
        if (dom == nullptr) {
            r.hdr.rc = -ESRCH;
            return;
        }
        kill_domain(*dom, wire::DeathReason::destroyed, SIGKILL, "destroyed");
    }

    bool op_wait(Conn& c, const wire::Decoded& d, Reply& r) {
        const auto ref = elements<wire::DomainRef>(d)[0];
        auto it = ref.domid == 0 ? domains.end() : domains.find(ref.domid);
        if (it == domains.end()) {
            // A domain that died before the toolstack asked: answer from the recent deaths
            // (newest first), as a Xen toolstack still finds a dying domain to reap.
            for (auto rit = recent_deaths.rbegin(); rit != recent_deaths.rend(); ++rit) {
                if (rit->domid == ref.domid) {
                    r.hdr.count = 1;
                    r.add(*rit);
                    return true;
                }
            }
            r.hdr.rc = -ESRCH;
            return true;
        }
        it->second->waiters.emplace_back(c.id, d.seq);
        return false;
    }

    /// A domain dies: its processes are killed (or, with `grace`, its program may finish
    /// exiting), its connections close and its console goes now; everything else it held is
    /// released once every process of it is gone (release_domain, from finish_domain), so
    /// nothing of it can still touch a page whose pin was dropped or see a port reused.
    /// `grace`: the program closed its own socket; let it finish exiting (see the file head).
    void kill_domain(Domain& d, wire::DeathReason reason, int status, const char* why,
                     bool grace = false) {
        if (d.state != wire::DomainState::running) {
            return;
        }
        HV_INFO("hv-min: domain %u (%s) dies: %s", d.domid, d.name.c_str(), why);
        d.state = wire::DomainState::dying;
        d.death = wire::DeathInfo{d.domid, static_cast<std::uint16_t>(reason), status};
        if (!grace || !arm_exit_grace(d)) {
            kill_procs(d);
        }
        // Its console: a last drain into the log, then the socket goes; dom0's port with it.
        consoles->remove(d.domid);
        if (Domain* d0 = find_domain(0); d0 != nullptr && d.console_dom0_port != 0 &&
                                          d.console_dom0_port < d0->ports.size()) {
            close_port(*d0, d.console_dom0_port);
            d.console_dom0_port = 0;
        }
        // Its connections (primary and clones): closed, their holdings wait for release_domain.
        std::vector<std::uint64_t> ids;
        for (const auto& [id, c] : conns) {
            if (c->domid == d.domid) {
                ids.push_back(id);
            }
        }
        for (auto id : ids) {
            drop_conn(id);
        }
        maybe_finish(d);
    }

    /// SIGKILLs every process of the domain: its cgroup, and its process group while its
    /// program is not reaped (the fallback without cgroups; a no-op with one).
    void kill_procs(Domain& d) {
        d.cg.kill();
        if (d.pid > 0 && d.pidfd.valid()) {
            ::kill(-d.pid, SIGKILL);
        }
        if (d.state != wire::DomainState::running) {
            arm_kill_watch(d);
        }
    }

    /// After CoreConfig::kill_report_ms, then every second: is the dying domain gone yet?
    void arm_kill_watch(Domain& d) {
        if (d.kill_watch.valid() || cfg.kill_report_ms == 0) {
            return;
        }
        UniqueFd t(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
        if (!t) {
            return;
        }
        itimerspec its{};
        its.it_value.tv_sec = cfg.kill_report_ms / 1000;
        its.it_value.tv_nsec = static_cast<long>(cfg.kill_report_ms % 1000) * 1000000;
        its.it_interval.tv_sec = 1;
        if (::timerfd_settime(t.get(), 0, &its, nullptr) != 0 ||
            !watch(t.get(), EPOLLIN, ev_key(Tag::kill_watch, d.domid))) {
            return;
        }
        d.kill_watch = std::move(t);
    }

    /// A dying domain outlived its SIGKILL by kill_report_ms (or one more second): a process
    /// blocked in the kernel (state D: a FUSE request its server never answers, I/O to a
    /// suspended device) cannot die until that wait ends. Say once which processes remain and
    /// where they wait; kill again (a process that forked meanwhile is caught too).
    void on_kill_watch(std::uint16_t domid) {
        auto it = domains.find(domid);
        if (it == domains.end() || !it->second->kill_watch.valid()) {
            return;
        }
        Domain& d = *it->second;
        std::uint64_t expirations = 0;
        if (::read(d.kill_watch.get(), &expirations, sizeof expirations) != sizeof expirations) {
            return;  // not expired: a stale event for a recycled domid
        }
        if (!d.kill_reported) {
            d.kill_reported = true;
            std::string left;
            for (const pid_t p : domain_pids(d)) {
                left += (left.empty() ? "" : "; ") + procs::describe_process(p);
            }
            HV_WARN("hv-min: domain %u (%s) is still dying %u ms after SIGKILL: %s; killing it "
                    "again every second",
                    d.domid, d.name.c_str(), cfg.kill_report_ms,
                    left.empty() ? "its program is not reaped yet" : left.c_str());
        }
        kill_procs(d);
        maybe_finish(d);
    }

    /// Shutdown only: waits (bounded) until the domain's cgroup holds no process.
    void wait_cgroup_empty(Domain& d) {
        if (!d.cg.wait_empty(10000)) {
            HV_WARN("hv-min: domain %u: processes left in %s after 10 s", d.domid,
                    d.cg.dir().c_str());
        }
    }

    /// A dying domain whose program is reaped and whose cgroup is empty is finished.
    void maybe_finish(Domain& d) {
        if (d.state != wire::DomainState::running && !d.pidfd.valid() && !d.cg.populated()) {
            finish_domain(d.domid);
        }
    }

    /// The cgroup of a domain changed (populated 1 → 0 after its processes died).
    void on_cgroup(std::uint16_t domid) {
        auto it = domains.find(domid);
        if (it == domains.end()) {
            return;  // its cgroup.events fd closed with it
        }
        Domain& d = *it->second;
        (void)d.cg.populated();  // reading cgroup.events rearms its notification
        maybe_finish(d);
    }

    /// Everything a dead domain held, once none of its processes runs any more.
    void release_domain(Domain& d) {
        // I/O memory: grants to it end with it; grants it made (a driver domain's backend)
        // are revoked and checked in their frontends.
        (void)iomem_grants.take_if([&d](const iomem::Grant& g) {
            return g.frontend == d.domid && g.frontend_serial == d.serial;
        });
        std::erase_if(iomem_pending, [&d](const iomem::Pending& p) {
            return p.frontend == d.domid && p.frontend_serial == d.serial;
        });
        revoke_iomem_if([&d](const iomem::Grant& g) { return g.granter == d.domid; },
                        "revoked: its backend domain died");
        // Its mappings of others' grants: unpinned (GTF_reading/writing cleared).
        for (std::uint32_t h = 0; h < d.maptrack.size(); ++h) {
            if (d.maptrack[h].used) {
                release_maptrack(d, h);
            }
        }
        // Its event channels: peers revert to unbound and are woken. Pages of shared words live
        // on with the peers' unbound ports; new channels with its id get new pages.
        for (std::uint32_t p = 1; p < d.ports.size(); ++p) {
            if (d.ports[p].state != PortState::free) {
                close_port(d, p);
            }
        }
        forget_words_pages(d.domid);
        // Pins others hold on its grants: the mappers keep their (memfd-backed) pages; their
        // maptrack entries find the granter gone and just drop on unmap.
        d.pins.clear();
        d.pinned_refs.clear();
        d.extents.clear();
        d.gnt_map.reset();
        d.gnt_fd.reset();
        d.cg.remove();
        if (d.kill_watch.valid()) {
            (void)::epoll_ctl(epfd.get(), EPOLL_CTL_DEL, d.kill_watch.get(), nullptr);
            d.kill_watch.reset();
        }
        if (d.kill_reported) {
            HV_INFO("hv-min: domain %u (%s): its last process is gone", d.domid, d.name.c_str());
        }
        release_xenstore(d.domid);
        raise_virq(VIRQ_DOM_EXC);
    }

    bool arm_exit_grace(Domain& d) {
        if (cfg.exit_grace_ms == 0) {
            return false;
        }
        UniqueFd t(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
        if (!t) {
            return false;
        }
        itimerspec its{};
        its.it_value.tv_sec = cfg.exit_grace_ms / 1000;
        its.it_value.tv_nsec = static_cast<long>(cfg.exit_grace_ms % 1000) * 1000000;
        if (::timerfd_settime(t.get(), 0, &its, nullptr) != 0 ||
            !watch(t.get(), EPOLLIN, ev_key(Tag::exit_grace, d.domid))) {
            return false;
        }
        d.exit_grace = std::move(t);
        return true;
    }

    void disarm_exit_grace(Domain& d) {
        if (d.exit_grace.valid()) {
            (void)::epoll_ctl(epfd.get(), EPOLL_CTL_DEL, d.exit_grace.get(), nullptr);
            d.exit_grace.reset();
        }
    }

    /// The grace of a domain whose socket closed has run out and its program still runs.
    void on_exit_grace(std::uint16_t domid) {
        auto it = domains.find(domid);
        if (it == domains.end() || !it->second->exit_grace.valid()) {
            return;  // reaped meanwhile (a stale event of this batch)
        }
        Domain& d = *it->second;
        std::uint64_t expirations = 0;
        if (::read(d.exit_grace.get(), &expirations, sizeof expirations) != sizeof expirations) {
            return;  // not expired: a stale event for a recycled domid
        }
        disarm_exit_grace(d);
        HV_INFO("hv-min: domain %u (%s) closed its hypercall socket but still runs: killed",
                d.domid, d.name.c_str());
        kill_procs(d);
    }

    void on_pidfd(std::uint16_t domid) {
        auto it = domains.find(domid);
        if (it == domains.end()) {
            return;
        }
        Domain& d = *it->second;
        int st = 0;
        const pid_t r = ::waitpid(d.pid, &st, WNOHANG);
        if (r == 0) {
            return;  // spurious
        }
        if (d.state == wire::DomainState::running) {
            if (WIFSIGNALED(st)) {
                kill_domain(d, wire::DeathReason::killed, WTERMSIG(st), "killed by a signal");
            } else {
                kill_domain(d, wire::DeathReason::exited, WEXITSTATUS(st), "program exited");
            }
        } else {
            kill_procs(d);  // what is left of it: daemons, children
            const bool ended_in_grace = d.exit_grace.valid();
            disarm_exit_grace(d);
            if (ended_in_grace) {
                // Its socket closed and then the program ended by itself: hv-min sent no
                // signal, so the status is entirely the program's.
                if (WIFEXITED(st)) {
                    d.death.reason = static_cast<std::uint16_t>(wire::DeathReason::exited);
                    d.death.status = WEXITSTATUS(st);
                    HV_INFO("hv-min: domain %u (%s): program exited with status %d", d.domid,
                            d.name.c_str(), d.death.status);
                } else if (WIFSIGNALED(st)) {
                    d.death.reason = static_cast<std::uint16_t>(wire::DeathReason::killed);
                    d.death.status = WTERMSIG(st);
                    HV_INFO("hv-min: domain %u (%s): program killed by signal %d", d.domid,
                            d.name.c_str(), d.death.status);
                }
            } else if (d.death.reason ==
                       static_cast<std::uint16_t>(wire::DeathReason::disconnected)) {
                // Grace disabled or over: only a status that our SIGKILL cannot explain is
                // the program's own.
                if (WIFEXITED(st)) {
                    d.death.reason = static_cast<std::uint16_t>(wire::DeathReason::exited);
                    d.death.status = WEXITSTATUS(st);
                } else if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL) {
                    d.death.reason = static_cast<std::uint16_t>(wire::DeathReason::killed);
                    d.death.status = WTERMSIG(st);
                }
            }
        }
        (void)::epoll_ctl(epfd.get(), EPOLL_CTL_DEL, d.pidfd.get(), nullptr);
        d.pidfd.reset();
        maybe_finish(d);  // else when its cgroup empties (on_cgroup)
    }

    void finish_domain(std::uint16_t domid) {
        auto it = domains.find(domid);
        if (it == domains.end()) {
            return;
        }
        release_domain(*it->second);
        auto dom = std::move(it->second);
        domains.erase(it);
        forget_words_pages(domid);  // none made for its id while it was dying
        n_domains.store(domains.size() - 1);
        recent_deaths.push_back(dom->death);
        if (recent_deaths.size() > kRecentDeaths) {
            recent_deaths.pop_front();
        }
        for (const auto& [cid, seq] : dom->waiters) {
            auto c = conns.find(cid);
            if (c == conns.end()) {
                continue;
            }
            Reply r;
            r.hdr.op = static_cast<std::uint16_t>(Op::domain_wait);
            r.hdr.seq = seq;
            r.hdr.count = 1;
            r.add(dom->death);
            send_reply(*c->second, std::move(r));
        }
    }

    // ---- connections going away --------------------------------------------------------------

    /// A connection closed or was dropped. The primary connection of a domain is the domain:
    /// losing it kills the domain.
    void conn_gone(std::uint64_t id, const char* why) {
        auto it = conns.find(id);
        if (it == conns.end()) {
            return;
        }
        const std::uint16_t domid = it->second->domid;
        if (why != nullptr) {
            HV_LOG_RL(warn, "hv-min: dropping a connection of dom%u: %s", domid, why);
        }
        Domain* d = find_domain(domid);
        if (d != nullptr && domid != 0 && d->primary_conn == id) {
            // A socket the program closed itself gets the exit grace; one hv-min dropped
            // (misbehaviour) ends the domain at once.
            kill_domain(*d, wire::DeathReason::disconnected, 0,
                        why != nullptr ? why : "hypercall socket closed", why == nullptr);
            return;
        }
        drop_conn(id);
    }

    /// Releases what one connection held (mappings, ports, dom0 extents) and closes it.
    void drop_conn(std::uint64_t id) {
        auto it = conns.find(id);
        if (it == conns.end()) {
            return;
        }
        std::unique_ptr<Conn> c = std::move(it->second);
        conns.erase(it);
        (void)::epoll_ctl(epfd.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
        if (c->page_bell) {
            // Before the close: the caller still holds the eventfd's file, so closing our
            // descriptor alone would leave it in the epoll set.
            (void)::epoll_ctl(epfd.get(), EPOLL_CTL_DEL, c->page_bell.get(), nullptr);
            std::erase(paged, c.get());
        }
        // The I/O memory it granted (its backend ended, or was dropped) is revoked.
        revoke_iomem_if([id](const iomem::Grant& g) { return g.granter_conn == id; },
                        "revoked: its backend's connection closed");
        auto dit = domains.find(c->domid);
        if (dit == domains.end()) {
            return;
        }
        Domain& d = *dit->second;
        if (d.state != wire::DomainState::running) {
            return;  // a dead domain's holdings go all at once in release_domain
        }
        for (std::uint32_t h = 0; h < d.maptrack.size(); ++h) {
            if (d.maptrack[h].used && d.maptrack[h].conn == id) {
                release_maptrack(d, h);
            }
        }
        for (std::uint32_t p = 1; p < d.ports.size(); ++p) {
            if (d.ports[p].state != PortState::free && d.ports[p].conn == id) {
                close_port(d, p);
            }
        }
        std::erase_if(d.extents, [id](const std::unique_ptr<Extent>& e) { return e->owner_conn == id; });
        if (c->gref_slice >= 0 && d.gnt_map.valid()) {
            // Its grants end with it: the entries are cleared and the slice is free again.
            // Pages others still map stay valid for them (memfd-backed).
            const std::uint32_t first = static_cast<std::uint32_t>(c->gref_slice) * kDom0SliceRefs;
            for (std::uint32_t r = first; r < first + kDom0SliceRefs; ++r) {
                std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(d.entry(r)))
                    .store(0, std::memory_order_seq_cst);
            }
            d.gref_slices[static_cast<std::size_t>(c->gref_slice)] = false;
        }
    }

    void shutdown() {
        std::vector<std::uint16_t> ids;
        for (const auto& [id, d] : domains) {
            if (id != 0) {
                ids.push_back(id);
            }
        }
        for (auto id : ids) {
            auto it = domains.find(id);
            if (it == domains.end()) {
                continue;
            }
            Domain& d = *it->second;
            kill_domain(d, wire::DeathReason::destroyed, SIGKILL, "hv-min stops");
            if (!domains.contains(id)) {
                continue;  // it was finished at once
            }
            kill_procs(d);  // also one that was dying within its exit grace
            if (d.pidfd.valid()) {
                ::waitpid(d.pid, nullptr, 0);  // SIGKILLed: bounded
                d.pidfd.reset();
            }
            wait_cgroup_empty(d);
            finish_domain(id);
        }
        paged.clear();
        conns.clear();
    }
};

Core::Core(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Core::~Core() {
    stop();
    impl_->shutdown();
}

Result<std::unique_ptr<Core>> Core::create(CoreConfig cfg) {
    auto impl = std::make_unique<Impl>();
    impl->cfg = std::move(cfg);
    if (impl->cfg.default_gnttab_frames == 0 || impl->cfg.default_gnttab_frames > kMaxGnttabFrames) {
        return fail_errno(EINVAL);
    }
    HV_TRY(impl->init());
    return std::unique_ptr<Core>(new Core(std::move(impl)));
}

Result<void> Core::run() { return impl_->run(); }

Result<void> Core::start() {
    if (impl_->thread.joinable()) {
        return fail_errno(EBUSY);
    }
    impl_->thread = std::jthread([this] {
        auto r = impl_->run();
        if (!r) {
            HV_ERROR("hv-min: loop failed: %s", r.error().message().c_str());
        }
    });
    return {};
}

void Core::stop() noexcept {
    impl_->stopping.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(impl_->stopfd.get(), &one, sizeof one);
    if (impl_->thread.joinable()) {
        impl_->thread.join();
    }
}

std::filesystem::path Core::socket_path() const { return impl_->sock_path; }
std::size_t Core::domain_count() const { return impl_->n_domains.load(); }
std::uint64_t Core::dropped_connections() const { return impl_->dropped.load(); }
std::uint64_t Core::requests_served() const { return impl_->served.load(); }
LoopStats Core::loop_stats() const {
    return {impl_->sleeps.load(std::memory_order_relaxed),
            impl_->spin_hits.load(std::memory_order_relaxed)};
}

}  // namespace hv::hvmin
