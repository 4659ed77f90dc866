// The shared hypercall page (wire.hpp "The hypercall page"): batched grant copies through
// shared memory, hv-min's checks of what a caller writes there, and the wake-ups.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "hv/mapping.hpp"
#include "hv/spin.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace hv::rings;
using namespace std::chrono_literals;

namespace {

/// Posts a raw request in `page` (the caller's side of the protocol, by hand) and waits for
/// hv-min's reply: its rc, or 1 if none came within 5 s.
std::int32_t post(HypercallPage& page, std::uint16_t op, std::uint16_t flags, std::uint32_t count,
                  std::span<const gnttab_copy> ops = {}) {
    wire::PageHeader* h = page.header();
    if (!ops.empty()) {
        std::memcpy(page.data() + wire::kPageOpsOffset, ops.data(), ops.size_bytes());
    }
    h->req.op = op;
    h->req.flags = flags;
    h->req.count = count;
    const std::uint32_t seq = std::atomic_ref(h->req.seq).load() + 1;
    std::atomic_ref(h->req.seq).store(seq, std::memory_order_release);
    page.ring();
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (std::atomic_ref(h->rsp.seq).load(std::memory_order_acquire) != seq) {
        if (std::chrono::steady_clock::now() > end) {
            return 1;
        }
        std::this_thread::yield();
    }
    return std::atomic_ref(h->rsp.rc).load();
}

std::int16_t page_status(const HypercallPage& page, std::size_t i) {
    std::int16_t st = 0;
    std::memcpy(&st, page.data() + wire::kPageStatusOffset + i * sizeof st, sizeof st);
    return st;
}

gnttab_copy copy_from_ref(grant_ref_t ref, domid_t dom, std::uint64_t frame, std::uint16_t len) {
    gnttab_copy c{};
    c.source.u.ref = ref;
    c.source.domid = dom;
    c.dest.u.gmfn = frame;
    c.dest.domid = DOMID_SELF;
    c.len = len;
    c.flags = GNTCOPY_source_gref;
    return c;
}

/// A copy between two of the caller's own frames.
gnttab_copy local_copy(std::uint64_t from, std::uint64_t to, std::uint16_t len) {
    gnttab_copy c{};
    c.source.u.gmfn = from;
    c.source.domid = DOMID_SELF;
    c.dest.u.gmfn = to;
    c.dest.domid = DOMID_SELF;
    c.len = len;
    return c;
}

constexpr auto kCopyOp = static_cast<std::uint16_t>(wire::Op::gnttab_copy);

}  // namespace

TEST_CASE("batched copies go through the hypercall page by default, the socket when it is off",
          "[hvmin][page]") {
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    auto local = s.memory().alloc_extent(1);
    REQUIRE(local);
    REQUIRE(g.cmd("write 3 0 viapage!") == "ok");
    const auto ref = static_cast<grant_ref_t>(g.num("grant 0 3 1"));
    const bool use_page = GENERATE(true, false);
    s.channel().set_use_page(use_page);
    const std::uint64_t served = h.core->requests_served();
    std::vector<gnttab_copy> ops = {copy_from_ref(ref, g.domid.get(), *local, 8),
                                    copy_from_ref(ref, g.domid.get(), *local, 4097)};
    REQUIRE(s.grants().copy(ops));
    CHECK(ops[0].status == GNTST_okay);
    CHECK(ops[1].status == GNTST_bad_copy_arg);
    CHECK(std::memcmp(*s.memory().frame(*local), "viapage!", 8) == 0);
    CHECK((s.channel().page() != nullptr) == use_page);
    // The page's set-up is one hypercall of its own; each batch is one request either way.
    CHECK(h.core->requests_served() - served == (use_page ? 2u : 1u));
    // A batch larger than the page holds goes through the socket.
    std::vector<gnttab_copy> big(wire::kPageMaxOps + 1,
                                 copy_from_ref(ref, g.domid.get(), *local, 8));
    REQUIRE(s.grants().copy(big));
    CHECK(big.back().status == GNTST_okay);
}

TEST_CASE("the hypercall page is a sealed memfd of hv-min's, one per connection",
          "[hvmin][page][hostile]") {
    Harness h;
    auto& s = h.dom0();
    auto r = s.channel().call(wire::Op::page_setup, 0, {});
    REQUIRE(r);
    REQUIRE(r->hdr.rc == 0);
    REQUIRE(r->fds.size() == 2);
    REQUIRE(r->body.size() == sizeof(wire::PageInfo));
    const int memfd = r->fds[0].get();
    const int seals = ::fcntl(memfd, F_GET_SEALS);
    CHECK((seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
          (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    CHECK(::ftruncate(memfd, 0) != 0);  // hv-min's mapping can never lose its pages
    CHECK(::ftruncate(memfd, wire::kPageBytes * 2) != 0);
    CHECK(::lseek(memfd, 0, SEEK_END) == wire::kPageBytes);
    // A second page on the same connection is refused; the first keeps working.
    auto again = s.channel().call(wire::Op::page_setup, 0, {});
    REQUIRE(again);
    CHECK(again->hdr.rc == -EEXIST);
    std::vector<UniqueFd> fds = std::move(r->fds);
    wire::PageInfo info;
    std::memcpy(&info, r->body.data(), sizeof info);
    auto page = HypercallPage::create(info, fds);
    REQUIRE(page);
    CHECK(post(*page, kCopyOp, 0, 0) == 0);
}

TEST_CASE("malformed requests in the hypercall page get an error rc and move nothing",
          "[hvmin][page][hostile]") {
    Harness h;
    auto& s = h.dom0();
    auto local = s.memory().alloc_extent(2);
    REQUIRE(local);
    std::memcpy(*s.memory().frame(*local), "original", 8);
    std::memset(*s.memory().frame(*local + 1), 0, 8);
    REQUIRE(s.channel().setup_page());
    HypercallPage& page = *s.channel().page();
    const gnttab_copy op = local_copy(*local, *local + 1, 8);
    std::vector<gnttab_copy> ops(wire::kPageMaxOps, op);
    CHECK(post(page, kCopyOp, 1, 1, ops) == -EINVAL);                      // flags
    CHECK(post(page, 0x0101, 0, 1, ops) == -ENOSYS);                       // unmap: not paged
    CHECK(post(page, 0xffff, 0, 1, ops) == -ENOSYS);                       // no such op
    CHECK(post(page, kCopyOp, 0, wire::kPageMaxOps + 1, ops) == -EINVAL);  // too many ops
    CHECK(post(page, kCopyOp, 0, 0xffffffffu, ops) == -EINVAL);
    CHECK(std::memcmp(*s.memory().frame(*local + 1), "\0\0\0\0\0\0\0\0", 8) == 0);
    // The page still serves a good request, and the whole batch limit.
    CHECK(post(page, kCopyOp, 0, wire::kPageMaxOps, ops) == 0);
    CHECK(page_status(page, 0) == GNTST_okay);
    CHECK(page_status(page, wire::kPageMaxOps - 1) == GNTST_okay);
    CHECK(std::memcmp(*s.memory().frame(*local + 1), "original", 8) == 0);
    // A seq that did not change is no request: hv-min does not answer it again.
    const std::uint64_t served = h.core->requests_served();
    page.ring();
    CHECK(post(page, kCopyOp, 0, 0) == 0);
    CHECK(h.core->requests_served() == served + 1);
}

TEST_CASE("ops rewritten while hv-min reads them are checked as read and reach no other page",
          "[hvmin][page][hostile]") {
    // A caller scribbles on its ops while posting requests: whatever mix of two ops' fields
    // hv-min's one copy of them holds, it is validated like any op, so only the frame the
    // good op names can change and a read-only grant is never written.
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    const auto dom = g.domid.get();
    auto local = s.memory().alloc_extent(2);  // local: target; local + 1: canary
    REQUIRE(local);
    std::memset(*s.memory().frame(*local + 1), 'c', 4096);
    REQUIRE(g.cmd("write 5 0 readonly") == "ok");
    const auto ro = static_cast<grant_ref_t>(g.num("grant 0 5 1"));
    const gnttab_copy good = copy_from_ref(ro, dom, *local, 4096);
    gnttab_copy bad{};  // dom0's target into the read-only grant, at a bad length
    bad.source.u.gmfn = *local;
    bad.source.domid = DOMID_SELF;
    bad.dest.u.ref = ro;
    bad.dest.domid = dom;
    bad.len = 4096;
    bad.flags = GNTCOPY_dest_gref;
    REQUIRE(s.channel().setup_page());
    HypercallPage& page = *s.channel().page();
    std::atomic<bool> stop{false};
    std::thread scribbler([&] {
        std::vector<std::byte> a(64 * sizeof(gnttab_copy));
        std::vector<std::byte> b(a.size());
        for (std::size_t i = 0; i < 64; ++i) {
            std::memcpy(a.data() + i * sizeof good, &good, sizeof good);
            std::memcpy(b.data() + i * sizeof bad, &bad, sizeof bad);
        }
        for (unsigned n = 0; !stop.load(std::memory_order_relaxed); ++n) {
            // Field by field, so hv-min may see any mix.
            const auto& src = (n & 1) ? a : b;
            for (std::size_t off = 0; off < src.size(); off += 8) {
                std::memcpy(page.data() + wire::kPageOpsOffset + off, src.data() + off, 8);
            }
        }
    });
    unsigned answered = 0;
    bool statuses_valid = true;
    for (int i = 0; i < 300; ++i) {
        if (post(page, kCopyOp, 0, 64) != 0) {
            break;
        }
        ++answered;
        for (std::size_t k = 0; k < 64; ++k) {
            const std::int16_t st = page_status(page, k);
            statuses_valid = statuses_valid && st <= 0 && st >= GNTST_no_space;
        }
    }
    stop = true;
    scribbler.join();
    CHECK(answered == 300);
    CHECK(statuses_valid);
    CHECK(g.cmd("read 5 0 8") == "ok readonly");
    const auto* canary = *s.memory().frame(*local + 1);
    CHECK(std::all_of(canary, canary + 4096, [](std::byte c) { return c == std::byte{'c'}; }));
    CHECK(g.num("flags " + std::to_string(ro)) == (GTF_permit_access | GTF_readonly));
}

TEST_CASE("a domain spamming its hypercall page, then dying, does not stop hv-min serving others",
          "[hvmin][page][hostile]") {
    Harness h;
    Puppet spammer(h, "spammer");
    Puppet g(h, "granter");
    auto& s = h.dom0();
    auto local = s.memory().alloc_extent(1);
    REQUIRE(local);
    REQUIRE(g.cmd("write 2 0 served!!") == "ok");
    const auto ref = static_cast<grant_ref_t>(g.num("grant 0 2 1"));
    REQUIRE(spammer.cmd("pagespam") == "ok");
    auto other = s.clone();  // a second dom0 connection that uses the socket
    REQUIRE(other);
    other->channel().set_use_page(false);
    auto copy_ok = [&](Services& svc) {
        std::vector<gnttab_copy> ops(16, copy_from_ref(ref, g.domid.get(), *local, 8));
        return svc.grants().copy(ops) &&
               std::all_of(ops.begin(), ops.end(),
                           [](const gnttab_copy& o) { return o.status == 0; });
    };
    unsigned ok = 0;
    for (int i = 0; i < 200; ++i) {
        ok += copy_ok(s) ? 1 : 0;
        ok += copy_ok(*other) ? 1 : 0;
    }
    CHECK(ok == 400);
    CHECK(std::memcmp(*s.memory().frame(*local), "served!!", 8) == 0);
    // Killed while it posts: its page goes with its connections; the others go on.
    REQUIRE(h.ts->destroy(spammer.domid));
    auto death = h.ts->wait_for_death(spammer.domid, 10s);
    REQUIRE(death);
    CHECK(copy_ok(s));
    CHECK(copy_ok(*other));
    CHECK(h.core->domain_count() == 1);
}

TEST_CASE("a doorbell eventfd filled, made blocking and closed by its caller mutes only its bell",
          "[hvmin][page][hostile]") {
    // The caller shares the eventfd's file with hv-min: hv-min never reads or writes it, so a
    // full, blocking or closed one cannot make hv-min's loop wait; that caller's requests are
    // still served when something else wakes the loop.
    CoreConfig cfg;
    cfg.spin_window = 0us;  // hv-min sleeps between calls: only a doorbell or a socket wakes it
    Harness h(cfg);
    auto& s = h.dom0();
    s.channel().set_reply_spin(0us);
    auto local = s.memory().alloc_extent(2);
    REQUIRE(local);
    auto c = s.clone();
    REQUIRE(c);
    c->channel().set_reply_spin(0us);
    REQUIRE(c->channel().setup_page());
    const int bell = c->channel().page()->bell_fd();
    const std::uint64_t big = 0xfffffffffffffffe;
    REQUIRE(::write(bell, &big, sizeof big) == sizeof big);
    const std::uint64_t one = 1;
    const ssize_t w = ::write(bell, &one, sizeof one);  // full: one more would block
    const int e = errno;
    CHECK(w < 0);
    CHECK(e == EAGAIN);
    REQUIRE(::fcntl(bell, F_SETFL, 0) == 0);  // blocking, for every holder of the file
    const gnttab_copy op = local_copy(*local, *local + 1, 8);
    std::vector<gnttab_copy> ops(16, op);
    for (int i = 0; i < 100; ++i) {  // others' page calls: hv-min sleeps and is rung each time
        REQUIRE(s.grants().copy(ops));
        REQUIRE(ops[0].status == GNTST_okay);
    }
    // Closed on the caller's side (its descriptor now /dev/null, so its rings go nowhere).
    UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    REQUIRE(null);
    REQUIRE(::dup2(null.get(), bell) == bell);
    std::atomic<bool> done{false};
    std::vector<gnttab_copy> cops(1, op);
    std::thread muted([&] {
        auto r = c->grants().copy(cops);
        CHECK(r);
        done = true;
    });
    // Its request waits for the loop to wake for something else: a socket call does.
    auto port = s.evtchn().alloc_unbound(DomId(0));
    REQUIRE(port);
    for (int i = 0; i < 5000 && !done; ++i) {
        REQUIRE(s.evtchn().status(DomId(DOMID_SELF), port->port()));
        std::this_thread::sleep_for(1ms);
    }
    muted.join();
    CHECK(cops[0].status == GNTST_okay);
    REQUIRE(s.grants().copy(ops));
    CHECK(ops[0].status == GNTST_okay);
}

TEST_CASE("a caller that says it sleeps but never waits still gets every reply",
          "[hvmin][page][hostile]") {
    // hv-min wakes the futex on rsp.seq after each reply: with nobody in FUTEX_WAIT the wake
    // finds no one (it never blocks) and the reply is in the page anyway.
    Harness h;
    auto& s = h.dom0();
    REQUIRE(s.channel().setup_page());
    HypercallPage& page = *s.channel().page();
    std::atomic_ref(page.header()->req.caller_sleeping).store(1);
    unsigned answered = 0;
    for (int i = 0; i < 3000; ++i) {
        answered += post(page, kCopyOp, 0, 0) == 0 ? 1 : 0;
    }
    CHECK(answered == 3000);
}

namespace {

/// A page with no hv-min behind it: the test plays hv-min's side by hand.
struct StandInPage {
    UniqueFd memfd;
    UniqueFd server;  // hv-min's descriptor of the doorbell eventfd
    UniqueFd call_sock;   // the caller's hypercall socket (call() watches it for hang-up only)
    UniqueFd hvmin_sock;  // hv-min's end of it
    std::optional<HypercallPage> page;
    Mapping map;  // the stand-in's own view of the page
    StandInPage() {
        memfd = UniqueFd(::memfd_create("test-page", MFD_CLOEXEC));
        REQUIRE(memfd);
        REQUIRE(::ftruncate(memfd.get(), wire::kPageBytes) == 0);
        auto m = Mapping::map_shared(memfd.get(), wire::kPageBytes);
        REQUIRE(m);
        map = std::move(*m);
        server = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        REQUIRE(server);
        int hs[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, hs) == 0);
        call_sock = UniqueFd(hs[0]);
        hvmin_sock = UniqueFd(hs[1]);
        std::vector<UniqueFd> fds;
        fds.emplace_back(::dup(memfd.get()));
        fds.emplace_back(::dup(server.get()));
        auto p = HypercallPage::create(
            {wire::kPageBytes, wire::kPageMaxOps, wire::kPageStatusOffset, wire::kPageOpsOffset},
            fds);
        REQUIRE(p);
        page.emplace(std::move(*p));
    }
    wire::PageHeader* header() { return map.as<wire::PageHeader>(); }
    /// hv-min's side: waits for request `seq`, answers it after `delay` (rc 7), and wakes the
    /// futex on the reply seq if the caller said it sleeps.
    /// `slept`, if given, gets the caller's caller_sleeping as seen just before the answer.
    std::thread answer(std::uint32_t seq, std::chrono::microseconds delay,
                       std::atomic<std::uint32_t>* slept = nullptr) {
        return std::thread([this, seq, delay, slept] {
            while (std::atomic_ref(header()->req.seq).load(std::memory_order_acquire) != seq) {
                std::this_thread::yield();
            }
            std::this_thread::sleep_for(delay);
            if (slept != nullptr) {
                slept->store(std::atomic_ref(header()->req.caller_sleeping).load());
            }
            std::atomic_ref(header()->rsp.rc).store(7);
            std::atomic_ref(header()->rsp.seq).store(seq, std::memory_order_release);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (std::atomic_ref(header()->req.caller_sleeping).load() != 0) {
                (void)::syscall(SYS_futex, &header()->rsp.seq, FUTEX_WAKE, 1, nullptr, nullptr, 0);
            }
        });
    }
};

}  // namespace

TEST_CASE(
    "a page call gets its reply within or after its spin, rings a sleeping hv-min, "
    "and times out or sees hv-min go",
    "[hvmin][page][spin]") {
    IgnoreLoad spin_even_when_loaded;
    StandInPage s;
    std::array<wire::CopyStatus, wire::kPageMaxOps> st{};
    std::uint32_t seq = 0;
    for (const auto spin : {0us, 50us, 100'000us}) {
        for (const auto delay : {0us, 5000us}) {
            for (const bool asleep : {false, true}) {
                INFO("spin " << spin.count() << " us, reply after " << delay.count()
                             << " us, hv-min asleep " << asleep);
                std::atomic_ref(s.header()->rsp.hv_sleeping).store(asleep ? 1u : 0u);
                auto t = s.answer(++seq, delay);
                auto r = s.page->call(wire::Op::gnttab_copy, 0, {}, st, spin, 5000, s.call_sock.get());
                t.join();
                REQUIRE(r);
                CHECK(*r == 7);
                std::uint64_t rings = 0;
                const ssize_t rang = ::read(s.server.get(), &rings, sizeof rings);
                CHECK((rang > 0) == asleep);  // the doorbell rings only for a sleeping hv-min
            }
        }
    }
    // No reply: the call times out.
    const auto t0 = std::chrono::steady_clock::now();
    auto r = s.page->call(wire::Op::gnttab_copy, 0, {}, st, 1ms, 30, s.call_sock.get());
    ++seq;
    REQUIRE_FALSE(r);
    CHECK(r.error() == make_error_code(hvmin::Errc::timed_out));
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    // hv-min's end of the hypercall socket closes: the waiting call ends at once.
    std::thread closer([&] {
        std::this_thread::sleep_for(20ms);
        s.hvmin_sock.reset();
    });
    r = s.page->call(wire::Op::gnttab_copy, 0, {}, st, 0us, 5000, s.call_sock.get());
    closer.join();
    REQUIRE_FALSE(r);
    CHECK(r.error() == make_error_code(hvmin::Errc::disconnected));
}

TEST_CASE(
    "a page caller on the CPU hv-min's loop last answered from sleeps at once instead of "
    "spinning, which it does on another CPU or with that CPU unknown",
    "[hvmin][page][spin]") {
    IgnoreLoad spin_even_when_loaded;
    // This thread stays on one CPU, so "the caller's CPU" is known to the test.
    cpu_set_t saved;
    REQUIRE(::sched_getaffinity(0, sizeof saved, &saved) == 0);
    const int cpu = ::sched_getcpu();
    REQUIRE(cpu >= 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
    StandInPage s;
    std::array<wire::CopyStatus, wire::kPageMaxOps> st{};
    std::uint32_t seq = 0;
    const auto me = static_cast<std::uint32_t>(cpu) + 1;
    for (const std::uint32_t hv_cpu : {me, me + 1, 0u}) {
        INFO("hv-min's loop last answered from CPU+1 = " << hv_cpu << ", the caller is on " << me);
        std::atomic_ref(s.header()->rsp.hv_cpu).store(hv_cpu);
        // hv-min's side answers after 2 ms and notes whether the caller said it sleeps (a
        // caller that spins, here for up to 10 s, is still spinning then).
        std::atomic<std::uint32_t> slept{2};
        auto t = s.answer(++seq, 2ms, &slept);
        auto r = s.page->call(wire::Op::gnttab_copy, 0, {}, st, 10'000'000us, 5000,
                              s.call_sock.get());
        t.join();
        REQUIRE(r);
        CHECK(slept.load() == (hv_cpu == me ? 1u : 0u));
    }
    REQUIRE(::sched_setaffinity(0, sizeof saved, &saved) == 0);
}

TEST_CASE(
    "hv-min's spinning loop serves page requests without a doorbell and sleeps after a "
    "quiet window",
    "[hvmin][page][spin]") {
    IgnoreLoad spin_even_when_loaded;
    CoreConfig cfg;
    cfg.spin_window = 20ms;  // generous: on a loaded machine the next call still comes within it
    Harness h(cfg);
    auto& s = h.dom0();
    auto local = s.memory().alloc_extent(2);
    REQUIRE(local);
    REQUIRE(s.channel().setup_page());
    const gnttab_copy op = local_copy(*local, *local + 1, 8);
    std::vector<gnttab_copy> ops(4, op);
    const auto before = h.core->loop_stats();
    constexpr int calls = 50;
    for (int i = 0; i < calls; ++i) {
        REQUIRE(s.grants().copy(ops));
        std::this_thread::sleep_for(300us);
    }
    const auto busy = h.core->loop_stats();
    CHECK(busy.spin_hits - before.spin_hits >= calls / 2);
    CHECK(busy.sleeps - before.sleeps < calls / 2);
    // A quiet window: the loop sleeps and burns no CPU; the next call rings and is served.
    std::this_thread::sleep_for(100ms);
    const auto idle = h.core->loop_stats();
    const auto cpu0 = process_cpu_time();
    std::this_thread::sleep_for(200ms);
    const auto cpu1 = process_cpu_time();
    CHECK(h.core->loop_stats().sleeps == idle.sleeps);
    CHECK(cpu1 - cpu0 < 50ms);
    CHECK(std::atomic_ref(s.channel().page()->header()->rsp.hv_sleeping).load() == 1);
    s.channel().set_reply_spin(0us);
    std::memcpy(*s.memory().frame(*local), "rungbell", 8);
    REQUIRE(s.grants().copy(ops));
    CHECK(ops[0].status == GNTST_okay);
    CHECK(std::memcmp(*s.memory().frame(*local + 1), "rungbell", 8) == 0);
    // The reply says which CPU the loop answered from (plus one), for the caller's spin.
    const auto hv_cpu = std::atomic_ref(s.channel().page()->header()->rsp.hv_cpu).load();
    CHECK(hv_cpu >= 1);
    CHECK(hv_cpu <= static_cast<std::uint32_t>(::sysconf(_SC_NPROCESSORS_CONF)));
}

TEST_CASE("a caller posting page requests without pause does not starve socket callers",
          "[hvmin][page][hostile]") {
    // Its page has a new request every time hv-min looks: hv-min must still look at the
    // sockets, spinning or asleep.
    IgnoreLoad spin_even_when_loaded;
    const auto window = GENERATE(0us, 20'000us);
    INFO("hv-min spin window " << window.count() << " us");
    CoreConfig cfg;
    cfg.spin_window = window;
    Harness h(cfg);
    auto& s = h.dom0();
    auto spammer = s.clone();
    REQUIRE(spammer);
    REQUIRE(spammer->channel().setup_page());
    HypercallPage& page = *spammer->channel().page();
    std::atomic<bool> stop{false};
    std::thread flood([&] {
        page.header()->req.op = kCopyOp;
        page.header()->req.count = 0;
        for (std::uint32_t seq = 1; !stop.load(std::memory_order_relaxed); ++seq) {
            std::atomic_ref(page.header()->req.seq).store(seq, std::memory_order_release);
            if ((seq & 1023) == 0) {
                page.ring();
            }
        }
    });
    auto a = s.evtchn().alloc_unbound(DomId(0));
    unsigned ok = a ? 1 : 0;
    for (int i = 0; i < 200 && a; ++i) {
        ok += s.evtchn().status(DomId(DOMID_SELF), a->port()) ? 1 : 0;
    }
    stop = true;
    flood.join();
    CHECK(ok == 201);
}
