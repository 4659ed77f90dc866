// libhv implementation: channels, the domain's own memory and grant table, grant mapping and
// copy, event channels. Layer: hv-min (L1).
#include "hvmin/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "hv/log.hpp"
#include "hvmin/console.hpp"
#include "evtchn_signal.hpp"
#include "transport.hpp"

namespace hv::hvmin {

using namespace hv::rings;

// ---- error categories -------------------------------------------------------------------------

namespace {
class HvminCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "hvmin"; }
    std::string message(int v) const override {
        switch (static_cast<Errc>(v)) {
        case Errc::protocol: return "hv-min protocol error";
        case Errc::timed_out: return "timed out";
        case Errc::grant_in_use: return "grant still in use";
        case Errc::grant_table_full: return "grant table full";
        case Errc::bad_frame: return "frame outside the domain's memory";
        case Errc::not_attached: return "not started by hv-min (HV_HYPERCALL_FD)";
        case Errc::disconnected: return "hv-min closed the connection";
        }
        return "unknown hvmin error";
    }
};
class GntstCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "gntst"; }
    std::string message(int v) const override {
        static const char* const names[] = {
            "okay",           "general_error",   "bad_domain",      "bad_gntref",
            "bad_handle",     "bad_virt_addr",   "bad_dev_addr",    "no_device_space",
            "permission_denied", "bad_page",     "bad_copy_arg",    "address_too_big",
            "eagain",         "no_space"};
        if (v >= 0 && v < static_cast<int>(std::size(names))) {
            return std::string("GNTST_") + names[v];
        }
        return "GNTST_" + std::to_string(-v);
    }
};
}  // namespace

const std::error_category& category() noexcept {
    static const HvminCategory c;
    return c;
}
const std::error_category& gntst_category() noexcept {
    static const GntstCategory c;
    return c;
}

std::filesystem::path default_rundir() {
    const char* e = std::getenv("HV_RUNDIR");
    return (e != nullptr && *e != '\0') ? std::filesystem::path(e) : std::filesystem::path("/run/hvkit");
}

namespace detail {

struct ExtentMap {
    Mapping map;
    std::uint64_t first_frame = 0;
    std::uint32_t pages = 0;
    std::uint32_t id = 0;
};

/// What all channels of one attached domain share: identity, memory, grant table.
class Session {
public:
    std::uint16_t domid = 0;
    std::uint32_t flags = 0;
    std::uint32_t gnt_frames = 0;
    std::uint64_t mem_pages = 0;
    Mapping gnttab;
    UniqueFd xs_fd;

    std::shared_ptr<Channel> primary;  // the attached connection; never used for calls here

    mutable std::mutex mu;
    std::vector<std::shared_ptr<ExtentMap>> extents;  // sorted by first_frame
    std::vector<std::uint32_t> free_refs;
    std::vector<bool> granted;

    std::uint32_t nr_entries() const { return gnt_frames * GRANT_ENTRIES_PER_FRAME; }
    grant_entry_v1* entry(std::uint32_t ref) const { return gnttab.as<grant_entry_v1>() + ref; }

    void add_extent(std::shared_ptr<ExtentMap> e) {
        std::lock_guard lk(mu);
        auto pos = std::upper_bound(extents.begin(), extents.end(), e->first_frame,
                                    [](std::uint64_t f, const std::shared_ptr<ExtentMap>& x) {
                                        return f < x->first_frame;
                                    });
        extents.insert(pos, std::move(e));
    }
    std::byte* frame(std::uint64_t f) const {
        std::lock_guard lk(mu);
        auto it = std::upper_bound(extents.begin(), extents.end(), f,
                                   [](std::uint64_t v, const std::shared_ptr<ExtentMap>& x) {
                                       return v < x->first_frame;
                                   });
        if (it == extents.begin()) {
            return nullptr;
        }
        const auto& e = *std::prev(it);
        if (f >= e->first_frame + e->pages) {
            return nullptr;
        }
        return e->map.data() + (f - e->first_frame) * XEN_PAGE_SIZE;
    }
    std::uint64_t nr_frames() const {
        std::lock_guard lk(mu);
        std::uint64_t n = 0;
        for (const auto& e : extents) {
            n = std::max<std::uint64_t>(n, e->first_frame + e->pages);
        }
        return n;
    }
};

}  // namespace detail

namespace {

Result<std::shared_ptr<detail::ExtentMap>> map_extent(int fd, const wire::ExtentInfo& info) {
    auto m = Mapping::map_shared(fd, static_cast<std::size_t>(info.pages) * XEN_PAGE_SIZE);
    if (!m) {
        return fail(m.error());
    }
    auto e = std::make_shared<detail::ExtentMap>();
    e->map = std::move(*m);
    e->first_frame = info.first_frame;
    e->pages = info.pages;
    e->id = info.id;
    return e;
}

template <class T>
std::span<const std::byte> as_bytes_of(const T& v) {
    return {reinterpret_cast<const std::byte*>(&v), sizeof v};
}

}  // namespace

// ---- Channel ----------------------------------------------------------------------------------

Result<Channel::Reply> Channel::receive(std::uint32_t seq, int timeout_ms) {
    // No spin while the CPUs are oversubscribed: hv-min's loop would wait for a CPU.
    auto spin = cpus_oversubscribed() ? std::chrono::microseconds{0} : reply_spin();
    for (;;) {
        // While spinning, the probe is the nonblocking receive itself (as a ring consumer
        // probes its producer index): a poll(2) per probe, then a recvmsg for the reply, and a
        // sched_yield between probes, cost two more syscalls and up to a probe's delay per call.
        Result<transport::Received> msg = fail_errno(EAGAIN);
        if (spin.count() > 0) {
            if (!hv::spin_until(
                    [&] {
                        msg = transport::receive(fd_.get());
                        return msg || msg.error() != std::errc::resource_unavailable_try_again;
                    },
                    spin, SpinYield::every_64)) {
                spin = std::chrono::microseconds{0};  // a quiet window: sleep from now on
            }
        }
        if (!msg && msg.error() == std::errc::resource_unavailable_try_again) {
            pollfd p{fd_.get(), POLLIN, 0};
            const int n = ::poll(&p, 1, timeout_ms);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return fail_errno();
            }
            if (n == 0) {
                return fail(make_error_code(Errc::timed_out));
            }
            msg = transport::receive(fd_.get());
        }
        if (!msg) {
            if (msg.error() == std::errc::resource_unavailable_try_again) {
                continue;
            }
            return fail(msg.error());
        }
        if (msg->eof) {
            return fail(make_error_code(Errc::disconnected));
        }
        if (msg->truncated || msg->bytes.size() < sizeof(wire::ReplyHeader)) {
            return fail(make_error_code(Errc::protocol));
        }
        Reply r;
        std::memcpy(&r.hdr, msg->bytes.data(), sizeof r.hdr);
        if (r.hdr.magic != wire::kMagic || r.hdr.nfds != msg->fds.size()) {
            return fail(make_error_code(Errc::protocol));
        }
        if (r.hdr.seq != seq) {
            continue;  // the late reply of a call that timed out
        }
        r.body.assign(msg->bytes.begin() + sizeof r.hdr, msg->bytes.end());
        r.fds = std::move(msg->fds);
        return r;
    }
}

Result<Channel::Reply> Channel::call(wire::Op op, std::uint32_t count,
                                     std::span<const std::byte> body, std::span<const int> fds,
                                     int timeout_ms) {
    std::lock_guard lk(mu_);
    return call_locked(op, count, body, fds, timeout_ms);
}

Result<Channel::Reply> Channel::call_locked(wire::Op op, std::uint32_t count,
                                            std::span<const std::byte> body,
                                            std::span<const int> fds, int timeout_ms) {
    wire::Header h{wire::kMagic, static_cast<std::uint16_t>(op), 0, count, ++seq_};
    out_.resize(sizeof h + body.size());  // no allocation once it has held a batch this big
    std::memcpy(out_.data(), &h, sizeof h);
    if (!body.empty()) {
        std::memcpy(out_.data() + sizeof h, body.data(), body.size());
    }
    const std::span<const std::byte> msg(out_);
    for (;;) {
        auto s = transport::send_raw_fds(fd_.get(), msg, fds);
        if (s) {
            break;
        }
        if (s.error() != std::errc::resource_unavailable_try_again) {
            if (s.error() == std::errc::broken_pipe || s.error() == std::errc::connection_reset) {
                return fail(make_error_code(Errc::disconnected));
            }
            return fail(s.error());
        }
        pollfd p{fd_.get(), POLLOUT, 0};
        if (::poll(&p, 1, timeout_ms) == 0) {
            return fail(make_error_code(Errc::timed_out));
        }
    }
    auto r = receive(h.seq, timeout_ms);
    if (r && r->hdr.op != h.op) {
        return fail(make_error_code(Errc::protocol));
    }
    return r;
}

Result<Channel::Reply> Channel::call_raw(std::span<const std::byte> datagram, int timeout_ms) {
    std::lock_guard lk(mu_);
    HV_TRY(transport::send_raw_fds(fd_.get(), datagram, {}));
    std::uint32_t seq = 0;
    if (datagram.size() >= sizeof(wire::Header)) {
        std::memcpy(&seq, datagram.data() + offsetof(wire::Header, seq), sizeof seq);
    }
    return receive(seq, timeout_ms);
}

// ---- the hypercall page -----------------------------------------------------------------------

bool Channel::default_use_page() noexcept {
    const char* e = std::getenv("HV_HYPERCALL_PAGE");
    return e == nullptr || std::strcmp(e, "off") != 0;
}

Result<HypercallPage> HypercallPage::create(const wire::PageInfo& info,
                                            std::vector<UniqueFd>& fds) {
    if (fds.size() != 2 || info.bytes != wire::kPageBytes || info.max_ops != wire::kPageMaxOps ||
        info.status_offset != wire::kPageStatusOffset || info.ops_offset != wire::kPageOpsOffset) {
        return fail(make_error_code(Errc::protocol));
    }
    auto m = Mapping::map_shared(fds[0].get(), wire::kPageBytes);
    if (!m) {
        return fail(m.error());
    }
    return HypercallPage(std::move(*m), std::move(fds[1]));
}

void HypercallPage::ring() const noexcept {
    const std::uint64_t one = 1;
    // An eventfd's write wakes hv-min's epoll without the "sync" hint a socket send gives (that
    // hint pulls the woken loop onto this CPU). EAGAIN (a count near 2^64, never reached by
    // one bell a call) would only mute this caller's own doorbell.
    (void)!::write(bell_.get(), &one, sizeof one);
}

Result<std::int32_t> HypercallPage::call(wire::Op op, std::uint32_t count,
                                         std::span<const std::byte> body,
                                         std::span<wire::CopyStatus> statuses,
                                         std::chrono::microseconds spin, int timeout_ms,
                                         int sock_fd) {
    wire::PageHeader* h = header();
    if (!body.empty()) {
        std::memcpy(data() + wire::kPageOpsOffset, body.data(), body.size());
    }
    h->req.op = static_cast<std::uint16_t>(op);
    h->req.flags = 0;
    h->req.count = count;
    const std::uint32_t seq = ++seq_;
    // ORDER: release pairs with hv-min's acquire load of req.seq (take_page_request): the ops
    // and the request line are in place first. The seq_cst fence pairs with hv-min's fence
    // between its store of hv_sleeping and its last look at the pages before it sleeps.
    std::atomic_ref(h->req.seq).store(seq, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ++stats_.calls;
    if (std::atomic_ref(h->rsp.hv_sleeping).load(std::memory_order_relaxed) != 0) {
        ring();
        ++stats_.doorbells;
    }
    // Not on the CPU hv-min's loop last answered from: the two would take turns on it, each
    // spinning while the other waits for the CPU (the Unix-socket wake-ups of a sleep are
    // "sync" ones and pull hv-min's loop and its caller onto one CPU, where they may stay).
    if (spin.count() > 0) {
        const std::uint32_t hv_cpu = std::atomic_ref(h->rsp.hv_cpu).load(std::memory_order_relaxed);
        const int me = ::sched_getcpu();
        if (hv_cpu != 0 && me >= 0 && hv_cpu == static_cast<std::uint32_t>(me) + 1) {
            spin = std::chrono::microseconds{0};
        }
    }
    // ORDER: acquire pairs with hv-min's release store of rsp.seq after the statuses and rc.
    auto done = [&] { return std::atomic_ref(h->rsp.seq).load(std::memory_order_acquire) == seq; };
    if (!hv::spin_until(done, spin, SpinYield::every_64)) {
        bool slept = false;
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        auto fail_with = [&](Errc e) {
            std::atomic_ref(h->req.caller_sleeping).store(0, std::memory_order_relaxed);
            return fail(make_error_code(e));
        };
        for (;;) {
            // ORDER: the seq_cst fence pairs with hv-min's between its store of rsp.seq and its
            // load of caller_sleeping: either we see the reply now or it wakes the futex (and
            // FUTEX_WAIT compares rsp.seq with `v`, so a wake after this load is not lost).
            std::atomic_ref(h->req.caller_sleeping).store(1, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            const std::uint32_t v = std::atomic_ref(h->rsp.seq).load(std::memory_order_acquire);
            if (v == seq) {
                break;
            }
            const auto left = deadline - std::chrono::steady_clock::now();
            if (left <= left.zero()) {
                return fail_with(Errc::timed_out);
            }
            if (!slept) {
                slept = true;
                ++stats_.sleeps;
            }
            // In slices: a futex cannot watch hv-min's end of the hypercall socket, so it is
            // looked at after each slice that ran out.
            if (!evtchn_signal::futex_wait(&h->rsp.seq, v, std::min<std::chrono::nanoseconds>(
                                                               left, kSleepSlice))) {
                pollfd p{sock_fd, 0, 0};
                if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR)) != 0 && !done()) {
                    return fail_with(Errc::disconnected);
                }
            }
        }
        std::atomic_ref(h->req.caller_sleeping).store(0, std::memory_order_relaxed);
    }
    const int cpu = ::sched_getcpu();
    if (cpu >= 0 && std::atomic_ref(h->rsp.hv_cpu).load(std::memory_order_relaxed) ==
                        static_cast<std::uint32_t>(cpu) + 1) {
        ++stats_.same_cpu;
    }
    if (count != 0) {
        std::memcpy(statuses.data(), data() + wire::kPageStatusOffset,
                    count * sizeof(wire::CopyStatus));
    }
    return std::atomic_ref(h->rsp.rc).load(std::memory_order_relaxed);
}

Result<void> Channel::setup_page() {
    std::lock_guard lk(mu_);
    return setup_page_locked();
}

Result<void> Channel::setup_page_locked() {
    if (page_) {
        return {};
    }
    auto r = call_locked(wire::Op::page_setup, 0, {}, {}, kDefaultTimeoutMs);
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    wire::PageInfo info;
    if (r->body.size() != sizeof info) {
        return fail(make_error_code(Errc::protocol));
    }
    std::memcpy(&info, r->body.data(), sizeof info);
    auto p = HypercallPage::create(info, r->fds);
    if (!p) {
        return fail(p.error());
    }
    page_.emplace(std::move(*p));
    return {};
}

Result<bool> Channel::call_page(wire::Op op, std::uint32_t count, std::span<const std::byte> body,
                                std::span<wire::CopyStatus> statuses, int timeout_ms) {
    if (!use_page() || count > wire::kPageMaxOps || statuses.size() < count) {
        return false;
    }
    std::lock_guard lk(mu_);
    if (!page_) {
        if (page_refused_) {
            return false;
        }
        if (auto s = setup_page_locked(); !s) {
            // An hv-min without pages (ENOSYS), out of fds, or with another layout: the
            // socket from now on. A lost connection is the caller's to see.
            if (s.error() == Errc::disconnected || s.error() == Errc::timed_out) {
                return fail(s.error());
            }
            HV_DEBUG("libhv: no hypercall page (%s): copies go through the socket",
                     s.error().message().c_str());
            page_refused_ = true;
            return false;
        }
    }
    // No spin while the CPUs are oversubscribed: hv-min's loop would wait for a CPU.
    const auto spin = cpus_oversubscribed() ? std::chrono::microseconds{0} : reply_spin();
    auto rc = page_->call(op, count, body, statuses, spin, timeout_ms, fd_.get());
    if (!rc) {
        return fail(rc.error());
    }
    if (*rc != 0) {
        return fail_errno(-*rc);
    }
    return true;
}

std::shared_ptr<detail::ExtentMap> Channel::extent(std::uint32_t id) {
    std::lock_guard lk(mu_);
    auto it = extents_.find(id);
    return it == extents_.end() ? nullptr : it->second;
}

void Channel::add_extent(std::uint32_t id, std::shared_ptr<detail::ExtentMap> e) {
    std::lock_guard lk(mu_);
    extents_[id] = std::move(e);
}

// ---- GrantMapping -----------------------------------------------------------------------------

GrantMapping::GrantMapping(GrantMapping&& o) noexcept
    : ch_(std::move(o.ch_)),
      extent_(std::move(o.extent_)),
      own_(std::move(o.own_)),
      data_(std::exchange(o.data_, nullptr)),
      handle_(o.handle_) {}

GrantMapping& GrantMapping::operator=(GrantMapping&& o) noexcept {
    if (this != &o) {
        (void)reset();
        ch_ = std::move(o.ch_);
        extent_ = std::move(o.extent_);
        own_ = std::move(o.own_);
        data_ = std::exchange(o.data_, nullptr);
        handle_ = o.handle_;
    }
    return *this;
}

GrantMapping::~GrantMapping() {
    auto r = reset();
    if (!r) {
        HV_WARN("libhv: unmap of grant handle %u failed: %s", handle_, r.error().message().c_str());
    }
}

Result<void> GrantMapping::reset() noexcept {
    if (!ch_) {
        return {};
    }
    // Drop our view first: after the unmap the granter may reuse the page.
    own_.reset();
    extent_.reset();
    data_ = nullptr;
    auto ch = std::move(ch_);
    gnttab_unmap_grant_ref op{};
    op.handle = handle_;
    auto r = ch->call(wire::Op::gnttab_unmap_grant_ref, 1, as_bytes_of(op));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->body.size() != sizeof op) {
        return fail(make_error_code(Errc::protocol));
    }
    std::memcpy(&op, r->body.data(), sizeof op);
    if (op.status != GNTST_okay) {
        return fail(gntst_error(op.status));
    }
    return {};
}

// ---- Grants -----------------------------------------------------------------------------------

std::uint32_t Grants::nr_entries() const noexcept { return s_->nr_entries(); }
grant_entry_v1* Grants::entry_for_test(grant_ref_t ref) const noexcept {
    return ref < s_->nr_entries() ? s_->entry(ref) : nullptr;
}

Result<GrantRef> Grants::grant_access(DomId to, std::uint64_t frame, bool readonly) {
    if (frame > 0xFFFFFFFFull || s_->frame(frame) == nullptr) {
        return fail(make_error_code(Errc::bad_frame));
    }
    std::uint32_t ref = 0;
    {
        std::lock_guard lk(s_->mu);
        if (s_->free_refs.empty()) {
            return fail(make_error_code(Errc::grant_table_full));
        }
        ref = s_->free_refs.back();
        s_->free_refs.pop_back();
        s_->granted[ref] = true;
    }
    grant_entry_v1* e = s_->entry(ref);
    // SPEC: grant_table.h: write domid and frame, wmb, then flags.
    std::atomic_ref<std::uint16_t>(e->domid).store(to.get(), std::memory_order_relaxed);
    std::atomic_ref<std::uint32_t>(e->frame).store(static_cast<std::uint32_t>(frame),
                                                   std::memory_order_relaxed);
    // ORDER: release pairs with hv-min's acquire load of the flags word in set_status.
    std::atomic_ref<std::uint16_t>(e->flags).store(
        static_cast<std::uint16_t>(GTF_permit_access | (readonly ? GTF_readonly : 0)),
        std::memory_order_release);
    return GrantRef(ref);
}

Result<void> Grants::end_access(GrantRef ref) {
    const std::uint32_t r = ref.get();
    {
        std::lock_guard lk(s_->mu);
        if (r >= s_->nr_entries() || !s_->granted[r]) {
            return fail_errno(EINVAL);
        }
    }
    std::atomic_ref<std::uint16_t> flags(s_->entry(r)->flags);
    // ORDER: seq_cst cmpxchg pairs with hv-min's cmpxchg that sets GTF_reading/writing.
    std::uint16_t cur = flags.load(std::memory_order_seq_cst);
    do {
        if (cur & (GTF_reading | GTF_writing)) {
            return fail(make_error_code(Errc::grant_in_use));
        }
    } while (!flags.compare_exchange_weak(cur, 0, std::memory_order_seq_cst));
    std::lock_guard lk(s_->mu);
    s_->granted[r] = false;
    s_->free_refs.push_back(r);
    return {};
}

std::uint16_t Grants::entry_flags(GrantRef ref) const noexcept {
    if (ref.get() >= s_->nr_entries()) {
        return 0;
    }
    return std::atomic_ref<std::uint16_t>(s_->entry(ref.get())->flags).load(std::memory_order_acquire);
}

Result<void> Grants::map_raw(std::span<gnttab_map_grant_ref> ops) {
    auto r = ch_->call(wire::Op::gnttab_map_grant_ref, static_cast<std::uint32_t>(ops.size()),
                       std::as_bytes(ops));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    const std::size_t need = ops.size() * (sizeof(gnttab_map_grant_ref) + sizeof(wire::MapExtra));
    if (r->body.size() != need) {
        return fail(make_error_code(Errc::protocol));
    }
    std::memcpy(ops.data(), r->body.data(), ops.size_bytes());
    // The raw caller cannot use the pages: it only learns the statuses and handles. Extents sent
    // along are cached so that later map() calls on this channel find them.
    const auto* x = reinterpret_cast<const wire::MapExtra*>(r->body.data() + ops.size_bytes());
    for (std::size_t i = 0; i < ops.size(); ++i) {
        wire::MapExtra e;
        std::memcpy(&e, x + i, sizeof e);
        if (ops[i].status == GNTST_okay && e.fd_index >= 0 && (s_->flags & wire::kAttachTrusted) &&
            static_cast<std::size_t>(e.fd_index) < r->fds.size()) {
            auto m = map_extent(r->fds[e.fd_index].get(),
                                wire::ExtentInfo{0, e.extent_pages, e.extent_id});
            if (m) {
                ch_->add_extent(e.extent_id, *m);
            }
        }
    }
    return {};
}

Result<void> Grants::unmap_raw(std::span<gnttab_unmap_grant_ref> ops) {
    auto r = ch_->call(wire::Op::gnttab_unmap_grant_ref, static_cast<std::uint32_t>(ops.size()),
                       std::as_bytes(ops));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->body.size() != ops.size_bytes()) {
        return fail(make_error_code(Errc::protocol));
    }
    std::memcpy(ops.data(), r->body.data(), ops.size_bytes());
    return {};
}

std::optional<GrantMapping::Extent> GrantMapping::extent() const noexcept {
    if (!extent_ || data_ == nullptr) {
        return std::nullopt;
    }
    return Extent{extent_->map.data(), std::size_t{extent_->pages} * XEN_PAGE_SIZE, extent_->id};
}

Result<GrantMapping> Grants::finish_map(const gnttab_map_grant_ref& op, const wire::MapExtra& x,
                                        std::vector<UniqueFd>& fds, bool readonly) {
    if (op.status != GNTST_okay) {
        return fail(gntst_error(op.status));
    }
    GrantMapping gm;
    gm.ch_ = ch_;  // from here on the destructor unmaps, whatever fails below
    gm.handle_ = op.handle;
    const bool have_fd = x.fd_index >= 0 && static_cast<std::size_t>(x.fd_index) < fds.size();
    if (s_->flags & wire::kAttachTrusted) {
        std::shared_ptr<detail::ExtentMap> e;
        if (have_fd) {
            auto m = map_extent(fds[x.fd_index].get(), wire::ExtentInfo{0, x.extent_pages, x.extent_id});
            if (!m) {
                return fail(m.error());
            }
            e = *m;
            ch_->add_extent(x.extent_id, e);
        } else {
            e = ch_->extent(x.extent_id);
        }
        if (!e || x.offset_bytes + XEN_PAGE_SIZE > static_cast<std::uint64_t>(e->pages) * XEN_PAGE_SIZE) {
            return fail(make_error_code(Errc::protocol));
        }
        gm.data_ = e->map.data() + x.offset_bytes;
        gm.extent_ = std::move(e);
        return gm;
    }
    if (!have_fd) {
        return fail(make_error_code(Errc::protocol));
    }
    // Isolated: the fd reaches only this page (a one-page extent); map it and close the fd.
    UniqueFd fd = std::move(fds[x.fd_index]);
    auto m = Mapping::map_shared(fd.get(), XEN_PAGE_SIZE, x.offset_bytes,
                                 readonly ? PROT_READ : PROT_READ | PROT_WRITE);
    if (!m) {
        return fail(m.error());
    }
    gm.data_ = m->data();
    gm.own_ = std::move(*m);
    return gm;
}

Result<GrantMapping> Grants::map(DomId granter, GrantRef ref, bool readonly) {
    MapRequest req{granter, ref, readonly};
    auto v = map_batch(std::span<const MapRequest>(&req, 1));
    if (!v) {
        return fail(v.error());
    }
    return std::move((*v)[0]);
}

Result<std::vector<Result<GrantMapping>>> Grants::map_batch(std::span<const MapRequest> reqs) {
    std::vector<gnttab_map_grant_ref> ops(reqs.size());
    for (std::size_t i = 0; i < reqs.size(); ++i) {
        ops[i] = gnttab_map_grant_ref{};
        ops[i].flags = GNTMAP_host_map | (reqs[i].readonly ? GNTMAP_readonly : 0);
        ops[i].ref = reqs[i].ref.get();
        ops[i].dom = reqs[i].granter.get();
    }
    auto r = ch_->call(wire::Op::gnttab_map_grant_ref, static_cast<std::uint32_t>(ops.size()),
                       std::as_bytes(std::span(ops)));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    const std::size_t opsz = ops.size() * sizeof(gnttab_map_grant_ref);
    if (r->body.size() != opsz + ops.size() * sizeof(wire::MapExtra)) {
        return fail(make_error_code(Errc::protocol));
    }
    std::memcpy(ops.data(), r->body.data(), opsz);
    std::vector<Result<GrantMapping>> out;
    out.reserve(ops.size());
    for (std::size_t i = 0; i < ops.size(); ++i) {
        wire::MapExtra x;
        std::memcpy(&x, r->body.data() + opsz + i * sizeof x, sizeof x);
        out.push_back(finish_map(ops[i], x, r->fds, reqs[i].readonly));
    }
    return out;
}

Result<void> Grants::unmap_batch(std::span<GrantMapping> maps) {
    std::vector<gnttab_unmap_grant_ref> ops;
    ops.reserve(maps.size());
    for (auto& m : maps) {
        if (!m.ch_) {
            continue;
        }
        // Drop our view first: after the unmap the granter may reuse the page.
        m.own_.reset();
        m.extent_.reset();
        m.data_ = nullptr;
        m.ch_.reset();
        gnttab_unmap_grant_ref op{};
        op.handle = m.handle_;
        ops.push_back(op);
    }
    std::error_code first;
    for (std::size_t off = 0; off < ops.size(); off += wire::kMaxBatch) {
        const auto chunk = std::span(ops).subspan(off, std::min<std::size_t>(wire::kMaxBatch, ops.size() - off));
        auto r = unmap_raw(chunk);
        if (!r) {
            if (!first) {
                first = r.error();
            }
            continue;
        }
        for (const auto& op : chunk) {
            if (op.status != GNTST_okay && !first) {
                first = gntst_error(op.status);
            }
        }
    }
    if (first) {
        return fail(first);
    }
    return {};
}

Result<void> Grants::copy(std::span<gnttab_copy> ops) {
    if (ops.size() <= wire::kPageMaxOps) {
        std::array<wire::CopyStatus, wire::kPageMaxOps> st;
        auto paged = ch_->call_page(wire::Op::gnttab_copy, static_cast<std::uint32_t>(ops.size()),
                                    std::as_bytes(ops), st);
        if (!paged) {
            return fail(paged.error());
        }
        if (*paged) {
            for (std::size_t i = 0; i < ops.size(); ++i) {
                ops[i].status = st[i];
            }
            return {};
        }
    }
    auto r = ch_->call(wire::Op::gnttab_copy, static_cast<std::uint32_t>(ops.size()),
                       std::as_bytes(ops));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    // The reply is one wire::CopyStatus per op (its only out field).
    if (r->hdr.count != ops.size() || r->body.size() != ops.size() * sizeof(wire::CopyStatus)) {
        return fail(make_error_code(Errc::protocol));
    }
    for (std::size_t i = 0; i < ops.size(); ++i) {
        wire::CopyStatus st;
        std::memcpy(&st, r->body.data() + i * sizeof st, sizeof st);
        ops[i].status = st;
    }
    return {};
}

// ---- event channels ---------------------------------------------------------------------------

EventChannelBinding& EventChannelBinding::operator=(EventChannelBinding&& o) noexcept {
    if (this != &o) {
        (void)close();
        ch_ = std::move(o.ch_);
        port_ = o.port_;
        wait_ = std::move(o.wait_);
        notify_ = std::move(o.notify_);
        masked_ = o.masked_;
        spin_ = o.spin_;
        words_ = std::move(o.words_);
        words_at_ = o.words_at_;
        words_peer_ = o.words_peer_;
    }
    return *this;
}

EventChannelBinding::~EventChannelBinding() { (void)close(); }

Result<void> EventChannelBinding::notify() noexcept {
    if (!notify_.valid()) {
        return {};
    }
    // Never blocks: MSG_DONTWAIT per call; a full queue (EAGAIN) means pending already. With
    // shared words, a peer in wait() gets no datagram at all (spinning: nothing; asleep: a
    // futex wake).
    auto* peer = words_at<evtchn_signal::Words>(words_peer_);
    const int e = peer != nullptr ? evtchn_signal::notify_words(*peer, notify_.get())
                                  : evtchn_signal::send(notify_.get());
    if (e != 0) {
        return fail_errno(e);
    }
    return {};
}

bool EventChannelBinding::pending() const noexcept {
    if (auto* mine = words_at<evtchn_signal::Words>(words_at_);
        mine != nullptr && evtchn_signal::word_pending(*mine)) {
        return true;
    }
    pollfd p{wait_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

bool EventChannelBinding::ack() noexcept {
    if (masked_ || !wait_.valid()) {
        return false;
    }
    // Never blocks: MSG_DONTWAIT per call.
    auto* mine = words_at<evtchn_signal::Words>(words_at_);
    return mine != nullptr ? evtchn_signal::consume_words(*mine, wait_.get())
                           : evtchn_signal::drain(wait_.get());
}

bool EventChannelBinding::unmask() noexcept {
    masked_ = false;
    return pending();
}

Result<void> EventChannelBinding::wait(std::chrono::milliseconds timeout) const noexcept {
    auto spin = spin_;
    if (auto* mine = words_at<evtchn_signal::Words>(words_at_); mine != nullptr) {
        if (evtchn_signal::word_pending(*mine)) {
            return {};
        }
        if (spin.count() > 0) {
            const auto start = std::chrono::steady_clock::now();
            if (evtchn_signal::spin_words(*mine, wait_.get(), spin)) {
                return {};
            }
            const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start);
            timeout = timeout.count() < 0 ? timeout : std::max(timeout - spent, timeout.zero());
        }
        // Nothing came: sleep on the word (every raise of this port sets it, hv-min's too), so
        // the peer's notify costs a futex wake, not a datagram.
        if (evtchn_signal::sleep_words(*mine, timeout)) {
            return {};
        }
        return fail(make_error_code(Errc::timed_out));
    }
    pollfd p{wait_.get(), POLLIN, 0};
    for (;;) {
        const int n = hv::spin_poll(&p, 1, static_cast<int>(timeout.count()), spin);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return fail_errno();
        }
        if (n == 0) {
            return fail(make_error_code(Errc::timed_out));
        }
        return {};
    }
}

Result<void> EventChannelBinding::close() noexcept {
    if (!ch_) {
        return {};
    }
    auto ch = std::move(ch_);
    wait_.reset();
    notify_.reset();
    words_.reset();
    evtchn_close c{port_.get()};
    auto r = ch->call(wire::Op::evtchn_close, 1, as_bytes_of(c));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    return {};
}

EvtchnPort EventChannelBinding::release() noexcept {
    ch_.reset();
    wait_.reset();
    notify_.reset();
    words_.reset();
    return port_;
}

Result<int> EventChannels::call1(wire::Op op, void* s, std::size_t size, std::vector<UniqueFd>* fds,
                                 wire::EvtchnWords* words) {
    auto r = ch_->call(op, 1, std::span<const std::byte>(static_cast<const std::byte*>(s), size));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->body.size() != size + (words != nullptr ? sizeof *words : 0)) {
        return fail(make_error_code(Errc::protocol));
    }
    std::memcpy(s, r->body.data(), size);
    if (words != nullptr) {
        std::memcpy(words, r->body.data() + size, sizeof *words);
    }
    if (fds != nullptr) {
        *fds = std::move(r->fds);
    }
    return 0;
}

Result<EventChannelBinding> EventChannels::make_binding(EvtchnPort port, std::vector<UniqueFd>& fds,
                                                        const wire::EvtchnWords& words) {
    constexpr std::uint32_t kSlot = wire::kEvtchnWordsSlotBytes;
    static_assert(2 * sizeof(evtchn_signal::Words) <= kSlot);
    if (fds.size() != 3 || words.side > 1 || words.offset % kSlot != 0 ||
        words.offset > wire::kEvtchnWordsPageBytes - kSlot) {
        return fail(make_error_code(Errc::protocol));
    }
    // The page is sealed (its size never changes) and shared with the peer domain only; its fd
    // is not kept (a domain holds no memfd of its own for it).
    auto map = Mapping::map_shared(fds[2].get(), wire::kEvtchnWordsPageBytes);
    if (!map) {
        return fail(map.error());
    }
    EventChannelBinding b;
    b.ch_ = ch_;
    b.port_ = port;
    b.wait_ = std::move(fds[0]);
    b.notify_ = std::move(fds[1]);
    b.words_ = std::move(*map);
    constexpr std::uint32_t kHalf = sizeof(evtchn_signal::Words);
    b.words_at_ = words.offset + words.side * kHalf;
    b.words_peer_ = words.offset + (1 - words.side) * kHalf;
    return b;
}

Result<EventChannelBinding> EventChannels::alloc_unbound(DomId remote) {
    evtchn_alloc_unbound a{DOMID_SELF, remote.get(), 0};
    std::vector<UniqueFd> fds;
    wire::EvtchnWords words{};
    HV_TRY(call1(wire::Op::evtchn_alloc_unbound, &a, sizeof a, &fds, &words));
    return make_binding(EvtchnPort(a.port), fds, words);
}

Result<EventChannelBinding> EventChannels::bind_interdomain(DomId remote, EvtchnPort remote_port) {
    evtchn_bind_interdomain bi{remote.get(), remote_port.get(), 0};
    std::vector<UniqueFd> fds;
    wire::EvtchnWords words{};
    HV_TRY(call1(wire::Op::evtchn_bind_interdomain, &bi, sizeof bi, &fds, &words));
    return make_binding(EvtchnPort(bi.local_port), fds, words);
}

Result<EventChannelBinding> EventChannels::bind_virq(std::uint32_t virq, std::uint32_t vcpu) {
    evtchn_bind_virq bv{virq, vcpu, 0};
    std::vector<UniqueFd> fds;
    HV_TRY(call1(wire::Op::evtchn_bind_virq, &bv, sizeof bv, &fds));
    if (fds.size() != 1) {
        return fail(make_error_code(Errc::protocol));
    }
    EventChannelBinding b;
    b.ch_ = ch_;
    b.port_ = EvtchnPort(bv.port);
    b.wait_ = std::move(fds[0]);
    return b;
}

Result<evtchn_status> EventChannels::status(DomId dom, EvtchnPort port) {
    evtchn_status s{};
    s.dom = dom.get();
    s.port = port.get();
    HV_TRY(call1(wire::Op::evtchn_status, &s, sizeof s, nullptr));
    return s;
}

Result<void> EventChannels::send(EvtchnPort port) {
    evtchn_send s{port.get()};
    HV_TRY(call1(wire::Op::evtchn_send, &s, sizeof s, nullptr));
    return {};
}

Result<void> EventChannels::close(EvtchnPort port) {
    evtchn_close c{port.get()};
    HV_TRY(call1(wire::Op::evtchn_close, &c, sizeof c, nullptr));
    return {};
}

Result<void> EventChannels::unmask(EvtchnPort port) {
    evtchn_unmask u{port.get()};
    HV_TRY(call1(wire::Op::evtchn_unmask, &u, sizeof u, nullptr));
    return {};
}

// ---- Memory -----------------------------------------------------------------------------------

Result<std::byte*> Memory::frame(std::uint64_t f) const {
    std::byte* p = s_->frame(f);
    if (p == nullptr) {
        return fail(make_error_code(Errc::bad_frame));
    }
    return p;
}

std::uint64_t Memory::nr_frames() const { return s_->nr_frames(); }
std::uint64_t Memory::initial_frames() const { return s_->mem_pages; }

Result<std::uint64_t> Memory::alloc_extent(std::uint32_t pages) {
    wire::ExtentRequest req{pages, 0};
    auto r = ch_->call(wire::Op::mem_alloc_extent, 1, as_bytes_of(req));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->body.size() != sizeof(wire::ExtentInfo) || r->fds.size() != 1) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::ExtentInfo info;
    std::memcpy(&info, r->body.data(), sizeof info);
    auto e = map_extent(r->fds[0].get(), info);
    if (!e) {
        return fail(e.error());
    }
    s_->add_extent(*e);
    return info.first_frame;
}

Result<std::uint64_t> Memory::register_extent(UniqueFd memfd, std::uint32_t pages) {
    wire::ExtentRequest req{pages, 0};
    const int fd = memfd.get();
    auto r = ch_->call(wire::Op::mem_register_extent, 1, as_bytes_of(req), std::span<const int>(&fd, 1));
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->body.size() != sizeof(wire::ExtentInfo)) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::ExtentInfo info;
    std::memcpy(&info, r->body.data(), sizeof info);
    auto e = map_extent(memfd.get(), info);
    if (!e) {
        return fail(e.error());
    }
    s_->add_extent(*e);
    return info.first_frame;
}

// ---- Iomem ------------------------------------------------------------------------------------

namespace {

Result<wire::IomemGrant> iomem_call(Channel& ch, wire::Op op, const wire::IomemGrant& req,
                                    std::span<const int> fds, std::vector<UniqueFd>* out_fds) {
    auto r = ch.call(op, 1, as_bytes_of(req), fds);
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (op == wire::Op::iomem_revoke) {
        return req;
    }
    if (r->body.size() != sizeof(wire::IomemGrant)) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::IomemGrant out;
    std::memcpy(&out, r->body.data(), sizeof out);
    if (out_fds != nullptr) {
        *out_fds = std::move(r->fds);
    }
    return out;
}

}  // namespace

Result<std::uint32_t> Iomem::grant(int fd, std::uint64_t size, DomId frontend, bool readonly) {
    wire::IomemGrant req{};
    req.size = size;
    req.flags = readonly ? wire::kIomemReadonly : 0;
    req.domid = frontend.get();
    auto r = iomem_call(*ch_, wire::Op::iomem_grant, req, std::span<const int>(&fd, 1), nullptr);
    if (!r) {
        return fail(r.error());
    }
    return r->handle;
}

Result<void> Iomem::revoke(std::uint32_t handle) {
    wire::IomemGrant req{};
    req.handle = handle;
    return iomem_call(*ch_, wire::Op::iomem_revoke, req, {}, nullptr).transform([](auto&&) {});
}

Result<UniqueFd> Iomem::open(DomId granter, std::uint32_t handle, std::uint64_t* size,
                             bool* readonly) {
    wire::IomemGrant req{};
    req.handle = handle;
    req.domid = granter.get();
    std::vector<UniqueFd> fds;
    auto r = iomem_call(*ch_, wire::Op::iomem_map, req, {}, &fds);
    if (!r) {
        return fail(r.error());
    }
    if (fds.size() != 1 || r->size == 0 || r->size % XEN_PAGE_SIZE != 0) {
        return fail(make_error_code(Errc::protocol));
    }
    if (size != nullptr) {
        *size = r->size;
    }
    if (readonly != nullptr) {
        *readonly = (r->flags & wire::kIomemReadonly) != 0;
    }
    return std::move(fds[0]);
}

Result<IomemMapping> Iomem::map(DomId granter, std::uint32_t handle) {
    std::uint64_t size = 0;
    bool ro = true;
    auto fd = open(granter, handle, &size, &ro);
    if (!fd) {
        return fail(fd.error());
    }
    auto m = Mapping::map_shared(fd->get(), size, 0, ro ? PROT_READ : PROT_READ | PROT_WRITE);
    if (!m) {
        return fail(m.error());
    }
    return IomemMapping(std::move(*m), handle, !ro);  // the fd closes here: only the mapping stays
}

// ---- Services ---------------------------------------------------------------------------------

Result<Services> Services::attach_channel(std::shared_ptr<Channel> ch) {
    auto r = ch->call(wire::Op::attach, 0, {});
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->body.size() < sizeof(wire::AttachInfo)) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::AttachInfo info;
    std::memcpy(&info, r->body.data(), sizeof info);
    const bool has_xs = (info.flags & wire::kAttachXenstore) != 0;
    if (r->body.size() != sizeof info + info.nr_extents * sizeof(wire::ExtentInfo) ||
        r->fds.size() != 1 + info.nr_extents + (has_xs ? 1 : 0)) {
        return fail(make_error_code(Errc::protocol));
    }
    auto s = std::make_shared<detail::Session>();
    s->domid = info.domid;
    s->flags = info.flags;
    s->gnt_frames = info.gnttab_frames;
    s->mem_pages = info.mem_pages;
    auto g = Mapping::map_shared(r->fds[0].get(), static_cast<std::size_t>(info.gnttab_frames) * XEN_PAGE_SIZE);
    if (!g) {
        return fail(g.error());
    }
    s->gnttab = std::move(*g);
    for (std::uint32_t i = 0; i < info.nr_extents; ++i) {
        wire::ExtentInfo ei;
        std::memcpy(&ei, r->body.data() + sizeof info + i * sizeof ei, sizeof ei);
        auto e = map_extent(r->fds[1 + i].get(), ei);
        if (!e) {
            return fail(e.error());
        }
        s->add_extent(*e);
    }
    if (has_xs) {
        s->xs_fd = std::move(r->fds.back());
    }
    s->granted.assign(s->nr_entries(), false);
    if (static_cast<std::uint64_t>(info.gref_first) + info.gref_count > s->nr_entries()) {
        return fail(make_error_code(Errc::protocol));
    }
    for (std::uint32_t ref = info.gref_first + info.gref_count; ref > info.gref_first; --ref) {
        if (ref - 1 >= GNTTAB_NR_RESERVED_ENTRIES) {
            s->free_refs.push_back(ref - 1);  // lowest ref handed out first
        }
    }
    s->primary = ch;  // keeps this connection (and its grant slice) alive while clones live
    return Services(std::move(s), std::move(ch));
}

Result<Services> Services::attach_fd(UniqueFd fd) {
    if (!fd) {
        return fail(make_error_code(Errc::not_attached));
    }
    (void)::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);  // the domain's own children do not inherit it
    return attach_channel(std::make_shared<Channel>(std::move(fd)));
}

Result<Services> Services::attach() {
    const char* e = std::getenv("HV_HYPERCALL_FD");
    if (e == nullptr || *e == '\0') {
        return fail(make_error_code(Errc::not_attached));
    }
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (*end != '\0' || v < 0 || v > 65535 || ::fcntl(static_cast<int>(v), F_GETFD) < 0) {
        return fail(make_error_code(Errc::not_attached));
    }
    // The fd is close-on-exec from here on; its number must not mislead the program's children.
    ::unsetenv("HV_HYPERCALL_FD");
    auto svc = attach_fd(UniqueFd(static_cast<int>(v)));
    const char* con = std::getenv("HV_CONSOLE");
    if (svc && (con == nullptr || std::strcmp(con, "off") != 0)) {
        // The program's ordinary output goes to its console (xen-abi §8); a domain without one
        // (ENOENT) keeps the fds it inherited.
        if (auto r = redirect_stdio_to_console(*svc); !r && r.error() != std::errc::no_such_file_or_directory) {
            HV_WARN("libhv: console unavailable: %s", r.error().message().c_str());
        }
    }
    return svc;
}

Result<Services> Services::connect_dom0(const std::filesystem::path& rundir) {
    auto fd = transport::connect_control(rundir);
    if (!fd) {
        return fail(fd.error());
    }
    return attach_channel(std::make_shared<Channel>(std::move(*fd)));
}

Result<Services> Services::clone() const {
    auto r = ch_->call(wire::Op::clone_channel, 0, {});
    if (!r) {
        return fail(r.error());
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    if (r->fds.size() != 1) {
        return fail(make_error_code(Errc::protocol));
    }
    Services s(s_, std::make_shared<Channel>(std::move(r->fds[0])));
    s.store = store;
    return s;
}

DomId Services::domid() const noexcept { return DomId(s_->domid); }
bool Services::trusted() const noexcept { return (s_->flags & wire::kAttachTrusted) != 0; }
bool Services::privileged() const noexcept { return (s_->flags & wire::kAttachPrivileged) != 0; }

UniqueFd Services::take_xenstore_fd() {
    std::lock_guard lk(s_->mu);
    return std::move(s_->xs_fd);
}

}  // namespace hv::hvmin
