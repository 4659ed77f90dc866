// hvbench suite `grant`: batched GNTTABOP_copy from a granting domain's pages into a dom0
// connection's own extent (GB/s, batches of 1/16/64 pages) beside memcpy of the same bytes in
// one process; the hypercall round trip (EVTCHNOP_status) beside a SOCK_SEQPACKET echo; and a
// trusted grant map + unmap beside mmap + munmap of one memfd page. Copies go through dom0's
// hypercall page (libhv's default; HV_HYPERCALL_PAGE=off: the socket). hv-min runs in-process;
// the granter is a real domain (an hvbench helper process). Each case runs sleeping (hv-min's
// loop and the caller's reply wait never spin) and adaptive (`*_adaptive`: both spin within
// hvmin::kCoreSpinWindow after work, as deployed; the echo peer spins the same way).
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "hv/mapping.hpp"
#include "hv/rings/xen/event_channel.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"
#include "procs.hpp"
#include "suites.hpp"

namespace hv::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPage = 4096;
constexpr std::uint32_t kPages = 64;  // granted pages = dest extent pages = largest batch

/// The byte at `i` of the granter's frame `f` (the granter writes it, the bench checks copies).
std::uint8_t pattern(std::uint64_t f, std::size_t i) {
    return static_cast<std::uint8_t>((f * 37 + i * 11 + 1) & 0xff);
}

}  // namespace

/// Commands: "grant DOMID COUNT" → fills frames 0..COUNT-1 with pattern() and grants them
/// read-only to DOMID: "ok REF...".
Result<std::string> grant_helper(hvmin::Services& svc, const std::vector<std::string>& w,
                                 ControlLine& /*ctl*/) {
    if (w[0] == "grant" && w.size() == 3) {
        auto dom = parse_u64(w[1]);
        auto count = parse_u64(w[2]);
        if (!dom || !count || *count > svc.memory().nr_frames()) {
            return fail_errno(EINVAL);
        }
        std::string reply = "ok";
        for (std::uint64_t f = 0; f < *count; ++f) {
            auto page = svc.memory().frame(f);
            if (!page) {
                return fail(page.error());
            }
            for (std::size_t i = 0; i < kPage; ++i) {
                (*page)[i] = std::byte{pattern(f, i)};
            }
            auto ref = svc.grants().grant_access(DomId(static_cast<std::uint16_t>(*dom)), f, true);
            if (!ref) {
                return fail(ref.error());
            }
            reply += " " + std::to_string(ref->get());
        }
        return reply;
    }
    return fail_errno(EINVAL);
}

namespace {

struct GrantSetup {
    std::unique_ptr<BenchHost> host;
    std::optional<BenchHost::Domain> granter;
    std::vector<rings::grant_ref_t> refs;
    std::uint64_t dest_frame = 0;  // first frame of dom0's own extent (kPages frames)
    std::optional<hvmin::EventChannelBinding> port;  // a real port for EVTCHNOP_status
    bool verified[2] = {false, false};  // contiguous, scattered

    /// `spin`: hv-min's loop window and dom0's reply spin (0 = sleeping).
    static Result<GrantSetup> create(std::chrono::microseconds spin) {
        GrantSetup g;
        auto h = BenchHost::create(false, spin);
        if (!h) {
            return fail(h.error());
        }
        g.host = std::move(*h);
        auto d = g.host->spawn("bench-granter", "grant", kPages * 2, false);
        if (!d) {
            return fail(d.error());
        }
        g.granter.emplace(std::move(*d));
        auto refs = g.granter->ctl.call("grant 0 " + std::to_string(kPages));
        if (!refs) {
            return fail(refs.error());
        }
        if (refs->size() != kPages + 1) {
            return fail(bad_data_error());
        }
        for (std::size_t i = 1; i < refs->size(); ++i) {
            auto r = parse_u64((*refs)[i]);
            if (!r) {
                return fail(r.error());
            }
            g.refs.push_back(static_cast<rings::grant_ref_t>(*r));
        }
        auto f = g.host->dom0().memory().alloc_extent(kPages);
        if (!f) {
            return fail(f.error());
        }
        g.dest_frame = *f;
        auto p = g.host->dom0().evtchn().alloc_unbound(g.granter->domid);
        if (!p) {
            return fail(p.error());
        }
        g.port.emplace(std::move(*p));
        return g;
    }

    /// Copies `total` pages in hypercalls of `batch` ops; GB/s (1e9 bytes/s). `scattered`:
    /// granted page i goes to dest frame (i * 7) % kPages, so no op's bytes continue the
    /// previous op's on either side and hv-min cannot copy two ops in one memmove.
    Result<Sample> copy(std::uint32_t batch, std::uint64_t total, bool scattered = false) {
        std::vector<rings::gnttab_copy> ops(batch);
        auto& grants = host->dom0().grants();
        const auto t0 = Clock::now();
        std::uint64_t next = 0;
        for (std::uint64_t done = 0; done < total; done += batch) {
            for (auto& op : ops) {
                const std::uint64_t i = next++ % kPages;
                op = rings::gnttab_copy{};
                op.source.u.ref = refs[i];
                op.source.domid = granter->domid.get();
                op.dest.u.gmfn = dest_frame + (scattered ? (i * 7) % kPages : i);
                op.dest.domid = rings::DOMID_SELF;
                op.len = kPage;
                op.flags = rings::GNTCOPY_source_gref;
            }
            HV_TRY(grants.copy(ops));
            for (const auto& op : ops) {
                if (op.status != rings::GNTST_okay) {
                    std::fprintf(stderr, "hvbench grant: copy status %d\n", op.status);
                    return fail(bad_data_error());
                }
            }
        }
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!verified[scattered ? 1 : 0]) {  // the copies really moved the granter's bytes
            for (std::uint64_t i = 0; i < std::min<std::uint64_t>(total, kPages); ++i) {
                auto page =
                    host->dom0().memory().frame(dest_frame + (scattered ? (i * 7) % kPages : i));
                if (!page) {
                    return fail(page.error());
                }
                for (std::size_t b = 0; b < kPage; ++b) {
                    if ((*page)[b] != std::byte{pattern(i, b)}) {
                        return fail(bad_data_error());
                    }
                }
            }
            verified[scattered ? 1 : 0] = true;
        }
        return Sample{static_cast<double>(total * kPage) / secs / 1e9};
    }

    /// How the page calls since the last print waited: the load-independent part of the
    /// copy cases (on stderr): the fraction of calls whose reply was read on the CPU hv-min's
    /// loop answered from, and wake-ups per call (the caller's sleeps, hv-min's doorbells).
    void print_waits(const std::string& name) {
        const hvmin::HypercallPage* p = host->dom0().channel().page();
        if (p == nullptr) {
            return;
        }
        const auto s = p->stats();
        const auto l = host->core().loop_stats();
        const double calls = static_cast<double>(std::max<std::uint64_t>(s.calls - waits.calls, 1));
        std::fprintf(stderr,
                     "hvbench grant: %s: %llu page calls, same CPU as hv-min %.1f %%, caller "
                     "sleeps %.3f, doorbells %.3f, hv-min sleeps %.3f, spin hits %.3f per call\n",
                     name.c_str(), static_cast<unsigned long long>(s.calls - waits.calls),
                     100.0 * static_cast<double>(s.same_cpu - waits.same_cpu) / calls,
                     static_cast<double>(s.sleeps - waits.sleeps) / calls,
                     static_cast<double>(s.doorbells - waits.doorbells) / calls,
                     static_cast<double>(l.sleeps - loop.sleeps) / calls,
                     static_cast<double>(l.spin_hits - loop.spin_hits) / calls);
        waits = s;
        loop = l;
    }
    hvmin::HypercallPage::Stats waits;
    hvmin::LoopStats loop;

    /// EVTCHNOP_status round trips through hv-min's transport.
    Result<Sample> hypercall_rtt(std::uint64_t n) {
        auto& ev = host->dom0().evtchn();
        std::vector<double> ns;
        ns.reserve(n);
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto t0 = Clock::now();
            auto st = ev.status(DomId(rings::DOMID_SELF), port->port());
            if (!st) {
                return fail(st.error());
            }
            ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
            if (st->status != rings::EVTCHNSTAT_unbound) {
                return fail(bad_data_error());
            }
        }
        return latency_sample(ns);
    }

    /// Trusted map + unmap of one granted page (two hypercalls); pairs per second.
    Result<Sample> map_unmap(std::uint64_t n) {
        auto& grants = host->dom0().grants();
        const auto t0 = Clock::now();
        for (std::uint64_t i = 0; i < n; ++i) {
            const std::uint64_t f = i % kPages;
            auto m = grants.map(granter->domid, GrantRef(refs[f]), true);
            if (!m) {
                return fail(m.error());
            }
            if (m->data()[5] != std::byte{pattern(f, 5)}) {
                return fail(bad_data_error());
            }
            HV_TRY(m->reset());
        }
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        return Sample{static_cast<double>(n) / secs};
    }
};

/// The copy peer: memcpy of the same pages, 4 KiB at a time, between two 64-page buffers in
/// one process. Like the grant side's (the granter's memory, dom0's extent) both buffers are
/// memfd pages mapped shared, and both stay hot in cache across runs (the same 64 pages are
/// copied over and over on both sides).
struct MemcpyPeer {
    Mapping src, dst;
    static Result<Mapping> memfd_pages(const char* name) {
        UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
        if (!fd.valid() || ::ftruncate(fd.get(), kPages * kPage) != 0) {
            return fail_errno();
        }
        return Mapping::map_shared(fd.get(), kPages * kPage);
    }
    static Result<MemcpyPeer> create() {
        auto s = memfd_pages("hvbench-memcpy-src");
        auto d = memfd_pages("hvbench-memcpy-dst");
        if (!s || !d) {
            return fail(!s ? s.error() : d.error());
        }
        for (std::size_t i = 0; i < kPages * kPage; ++i) {
            s->data()[i] = std::byte{pattern(i / kPage, i % kPage)};
        }
        std::memset(d->data(), 0, kPages * kPage);
        return MemcpyPeer{std::move(*s), std::move(*d)};
    }
    Result<Sample> copy(std::uint32_t batch, std::uint64_t total, bool scattered = false) {
        const auto t0 = Clock::now();
        std::uint64_t next = 0;
        for (std::uint64_t done = 0; done < total; done += batch) {
            for (std::uint32_t j = 0; j < batch; ++j) {
                const std::uint64_t i = next++ % kPages;
                const std::uint64_t to = scattered ? (i * 7) % kPages : i;
                std::memcpy(dst.data() + to * kPage, src.data() + i * kPage, kPage);
            }
        }
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        if (std::memcmp(dst.data(), src.data(), kPage) != 0) {
            return fail(bad_data_error());
        }
        return Sample{static_cast<double>(total * kPage) / secs / 1e9};
    }
};

/// recv(2) that first spins with MSG_DONTWAIT for `spin`, then blocks (`spin` 0: blocks). Like
/// hv-min's loop and its client, it does not spin while the CPUs are oversubscribed.
ssize_t recv_spin(int fd, void* buf, std::size_t len, std::chrono::microseconds spin) {
    if (cpus_oversubscribed()) {
        spin = std::chrono::microseconds{0};
    }
    ssize_t r = -1;
    if (hv::spin_until(
            [&] {
                r = ::recv(fd, buf, len, MSG_DONTWAIT);
                return r >= 0 || (errno != EAGAIN && errno != EINTR);
            },
            spin)) {
        return r;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kWaitTimeoutMs) != 1) {
        errno = ETIMEDOUT;
        return -1;
    }
    return ::recv(fd, buf, len, 0);
}

/// The hypercall peer: a request of the same size through a SOCK_SEQPACKET socketpair to an
/// echo thread that answers with a reply of the same size. Both ends wait as hv-min and its
/// client do: spinning with MSG_DONTWAIT for `spin` first (0: blocking recv at once).
Result<Sample> seqpacket_echo_rtt(std::uint64_t n, std::chrono::microseconds spin) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        return fail_errno();
    }
    UniqueFd mine(sv[0]);
    UniqueFd theirs(sv[1]);
    constexpr std::size_t req_bytes = 16 + sizeof(rings::evtchn_status);  // header + op
    constexpr std::size_t rsp_bytes = 24 + sizeof(rings::evtchn_status);  // reply header + op
    std::thread echo([&] {
        char buf[256];
        for (;;) {
            const ssize_t r = spin.count() > 0 ? recv_spin(theirs.get(), buf, sizeof buf, spin)
                                               : ::recv(theirs.get(), buf, sizeof buf, 0);
            if (r <= 0 || ::send(theirs.get(), buf, rsp_bytes, MSG_NOSIGNAL) < 0) {
                return;
            }
        }
    });
    std::vector<double> ns;
    ns.reserve(n);
    Result<void> rc;
    char req[req_bytes] = {};
    char rsp[256];
    for (std::uint64_t i = 0; i < n && rc; ++i) {
        const auto t0 = Clock::now();
        if (::send(mine.get(), req, sizeof req, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof req)) {
            rc = fail_errno();
            break;
        }
        const ssize_t got = recv_spin(mine.get(), rsp, sizeof rsp, spin);
        if (got < 0 && errno == ETIMEDOUT) {
            rc = fail(timed_out_error());
            break;
        }
        if (got != static_cast<ssize_t>(rsp_bytes)) {
            rc = fail(bad_data_error());
            break;
        }
        ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    }
    ::shutdown(mine.get(), SHUT_RDWR);
    echo.join();
    HV_TRY(rc);
    return latency_sample(ns);
}

/// The map peer: mmap + munmap of one page of a memfd (what a native page mapping costs).
Result<Sample> mmap_munmap(std::uint64_t n) {
    UniqueFd fd(::memfd_create("hvbench-map", MFD_CLOEXEC));
    if (!fd.valid() || ::ftruncate(fd.get(), kPages * kPage) != 0) {
        return fail_errno();
    }
    const auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
        auto m = Mapping::map_shared(fd.get(), kPage, (i % kPages) * kPage, PROT_READ);
        if (!m) {
            return fail(m.error());
        }
        if (m->data()[5] != std::byte{0}) {
            return fail(bad_data_error());
        }
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return Sample{static_cast<double>(n) / secs};
}

bool selected(const Context& ctx, const std::string& name) {
    return ctx.options().selects(name);
}

}  // namespace

int run_grant_suite(Context& ctx) {
    const std::uint64_t copy_pages = ctx.scale(16'384, 128);  // 64 MiB per run (quick: 512 KiB)
    const std::uint64_t rtt_n = ctx.scale(20'000, 200);
    const std::uint64_t map_n = ctx.scale(20'000, 200);
    auto peer = MemcpyPeer::create();
    if (!peer) {
        std::fprintf(stderr, "hvbench grant: %s\n", peer.error().message().c_str());
        return 1;
    }
    int failures = 0;
    // Sleeping (the original cases, names kept), then adaptive: hv-min's loop and the
    // caller's reply wait spin within hv-min's default window after work.
    struct Mode {
        const char* suffix;
        std::chrono::microseconds spin;
    };
    for (const Mode mode :
         {Mode{"", std::chrono::microseconds{0}}, Mode{"_adaptive", hvmin::kCoreSpinWindow}}) {
        const std::string sfx = mode.suffix;
        const bool any =
            selected(ctx, "copy_batch1" + sfx) || selected(ctx, "copy_batch16" + sfx) ||
            selected(ctx, "copy_batch64" + sfx) || selected(ctx, "copy_batch64_scattered" + sfx) ||
            selected(ctx, "hypercall_rtt" + sfx) ||
            selected(ctx, "map_unmap_trusted" + sfx);
        if (!any) {
            continue;
        }
        auto setup = GrantSetup::create(mode.spin);
        if (!setup) {
            std::fprintf(stderr, "hvbench grant: cannot set up a granting domain: %s\n",
                         setup.error().message().c_str());
            return 1;
        }
        const std::string wait = mode.spin.count() > 0 ? "adaptive" : "sleep";
        const std::string spin_us = std::to_string(mode.spin.count());
        struct CopyCase {
            std::uint32_t batch;
            bool scattered;
        };
        for (const CopyCase cc : {CopyCase{1, false}, CopyCase{16, false}, CopyCase{64, false},
                                  CopyCase{64, true}}) {
            const std::string name = "copy_batch" + std::to_string(cc.batch) +
                                     (cc.scattered ? "_scattered" : "") + sfx;
            if (!selected(ctx, name)) {
                continue;
            }
            auto rc = ctx.run_case(
                {name,
                 "GB/s",
                 "memcpy",
                 true,
                 {{"batch_ops", std::to_string(cc.batch)},
                  {"bytes_per_op", std::to_string(kPage)},
                  {"pages_per_run", std::to_string(copy_pages)},
                  {"working_set_pages", std::to_string(kPages)},
                  {"dest_order", cc.scattered ? "page i -> frame (7 i) mod 64" : "page i -> frame i"},
                  {"wait", wait},
                  {"spin_window_us", spin_us},
                  {"transport", setup->host->dom0().channel().use_page() ? "page" : "socket"}}},
                [&] { return setup->copy(cc.batch, copy_pages, cc.scattered); },
                [&] { return peer->copy(cc.batch, copy_pages, cc.scattered); });
            failures += rc ? 0 : 1;
            setup->print_waits(name);
        }
        if (selected(ctx, "hypercall_rtt" + sfx)) {
            auto rc = ctx.run_case(
                {"hypercall_rtt" + sfx,
                 "ns",
                 "seqpacket_echo_thread" + sfx,
                 false,
                 {{"op", "EVTCHNOP_status"},
                  {"calls_per_run", std::to_string(rtt_n)},
                  {"wait", wait},
                  {"spin_window_us", spin_us}}},
                [&] { return setup->hypercall_rtt(rtt_n); },
                [&] { return seqpacket_echo_rtt(rtt_n, mode.spin); });
            failures += rc ? 0 : 1;
        }
        if (selected(ctx, "map_unmap_trusted" + sfx)) {
            auto rc = ctx.run_case(
                {"map_unmap_trusted" + sfx,
                 "op/s",
                 "mmap_munmap_memfd_page",
                 true,
                 {{"op", "GNTTABOP_map_grant_ref + unmap_grant_ref, read-only"},
                  {"ops_per_run", std::to_string(map_n)},
                  {"wait", wait},
                  {"spin_window_us", spin_us}}},
                [&] { return setup->map_unmap(map_n); }, [&] { return mmap_munmap(map_n); });
            failures += rc ? 0 : 1;
        }
    }
    return failures == 0 ? 0 : 1;
}

}  // namespace hv::bench
