// Event channels: Xen's operations and return codes, pending/mask semantics, and a domain that
// abuses its ports' descriptors.
#include <catch2/catch.hpp>
#include <atomic>
#include <cstring>
#include <memory>
#include <thread>

#include "harness.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace hv::rings;
using namespace std::chrono_literals;

namespace {
std::string sys_err(int e) { return "err system " + std::to_string(e); }

/// Runs `f` on its own thread and says whether it returned within `limit`. A call that blocks
/// for good leaves its thread behind (detached) instead of hanging the test.
template <class F>
bool returns_within(std::chrono::milliseconds limit, F f) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread([done, f]() mutable {
        f();
        done->store(true);
    }).detach();
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done->load() && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(1ms);
    }
    return done->load();
}
}  // namespace

TEST_CASE("an interdomain channel notifies both ways without hv-min and starts pending", "[hvmin][evtchn]") {
    Harness h;
    Puppet g(h, "guest");
    auto& ev = h.dom0().evtchn();
    auto b = ev.alloc_unbound(g.domid);
    REQUIRE(b);
    CHECK(b->port().get() >= 1);
    const long lp = g.num("bind 0 " + std::to_string(b->port().get()));
    // The binder's new port is pending at once.
    CHECK(g.cmd("wait " + std::to_string(lp) + " 1000") == "ok");
    CHECK(g.cmd("ack " + std::to_string(lp)) == "ok 1");
    CHECK(g.cmd("ack " + std::to_string(lp)) == "ok 0");
    CHECK_FALSE(b->pending());
    REQUIRE(g.cmd("notify " + std::to_string(lp)) == "ok");
    REQUIRE(b->wait(1000ms));
    CHECK(b->ack());
    REQUIRE(b->notify());
    CHECK(g.cmd("wait " + std::to_string(lp) + " 1000") == "ok");
    auto st = ev.status(DomId(DOMID_SELF), b->port());
    REQUIRE(st);
    CHECK(st->status == EVTCHNSTAT_interdomain);
    CHECK(st->u.interdomain.dom == g.domid.get());
    CHECK(st->u.interdomain.port == static_cast<std::uint32_t>(lp));
}

TEST_CASE("sends coalesce into one pending event", "[hvmin][evtchn]") {
    Harness h;
    auto& ev = h.dom0().evtchn();
    auto a = ev.alloc_unbound(DomId(0));
    REQUIRE(a);
    auto b = ev.bind_interdomain(DomId(DOMID_SELF), a->port());  // loopback
    REQUIRE(b);
    CHECK(b->ack());  // initial pending of the new binding
    for (int i = 0; i < 5; ++i) {
        REQUIRE(b->notify());
    }
    CHECK(a->pending());
    CHECK(a->ack());
    CHECK_FALSE(a->ack());
    CHECK_FALSE(a->pending());
}

TEST_CASE("a masked port stays pending and unmask re-checks", "[hvmin][evtchn]") {
    Harness h;
    auto& ev = h.dom0().evtchn();
    auto a = ev.alloc_unbound(DomId(0));
    REQUIRE(a);
    auto b = ev.bind_interdomain(DomId(0), a->port());
    REQUIRE(b);
    a->mask();
    REQUIRE(b->notify());
    CHECK_FALSE(a->ack());   // masked: not consumed
    CHECK(a->pending());     // but still pending
    CHECK(a->unmask());      // unmask sees it
    CHECK(a->ack());
    CHECK_FALSE(a->unmask());
    CHECK(ev.unmask(a->port()));
    CHECK(ev.unmask(EvtchnPort(5000)).error() == std::errc::invalid_argument);
}

TEST_CASE("closing one end turns the peer unbound and wakes it", "[hvmin][evtchn]") {
    Harness h;
    Puppet g(h, "guest");
    auto& ev = h.dom0().evtchn();
    auto b = ev.alloc_unbound(g.domid);
    REQUIRE(b);
    const long lp = g.num("bind 0 " + std::to_string(b->port().get()));
    CHECK(g.cmd("ack " + std::to_string(lp)) == "ok 1");
    REQUIRE(b->close());
    CHECK(g.cmd("wait " + std::to_string(lp) + " 1000") == "ok");
    CHECK(g.cmd("status " + std::to_string(lp)) == "ok 1 0 0");  // unbound, earmarked for dom0
    // The freed port is reused: lowest free port first.
    auto again = ev.alloc_unbound(g.domid);
    REQUIRE(again);
    CHECK(again->port() == b->port());
    // The reverted port can be bound again by the domain it is earmarked for.
    auto rebind = ev.bind_interdomain(g.domid, EvtchnPort(static_cast<std::uint32_t>(lp)));
    REQUIRE(rebind);
    CHECK(g.cmd("status " + std::to_string(lp)) ==
          "ok 2 0 " + std::to_string(rebind->port().get()));
}

TEST_CASE("a domain's death wakes its peers and leaves their ports unbound", "[hvmin][evtchn]") {
    Harness h;
    Puppet g(h, "guest");
    auto& ev = h.dom0().evtchn();
    auto b = ev.alloc_unbound(g.domid);
    REQUIRE(b);
    g.num("bind 0 " + std::to_string(b->port().get()));
    CHECK_FALSE(b->pending());
    g.cmd("crash");
    REQUIRE(b->wait(5000ms));
    (void)h.ts->wait_for_death(g.domid, 5000ms);
    auto st = ev.status(DomId(DOMID_SELF), b->port());
    REQUIRE(st);
    CHECK(st->status == EVTCHNSTAT_unbound);
    CHECK(st->u.unbound.dom == g.domid.get());
}

TEST_CASE("event channel operations return Xen's error codes", "[hvmin][evtchn][hostile]") {
    Harness h;
    Puppet g(h, "guest");
    auto& ev = h.dom0().evtchn();
    auto mine = ev.alloc_unbound(DomId(0));
    REQUIRE(mine);
    const std::string gd = std::to_string(g.domid.get());
    SECTION("bind to a port earmarked for someone else is EINVAL") {
        auto other = ev.alloc_unbound(DomId(42));
        REQUIRE(other);
        CHECK(g.cmd("bind 0 " + std::to_string(other->port().get())) == sys_err(EINVAL));
    }
    SECTION("bind to a free, reserved or bound port is EINVAL; to an unknown domain ESRCH") {
        CHECK(g.cmd("bind 0 0") == sys_err(EINVAL));
        CHECK(g.cmd("bind 0 4000") == sys_err(EINVAL));
        CHECK(g.cmd("bind 0 99999") == sys_err(EINVAL));
        CHECK(g.cmd("bind 999 1") == sys_err(ESRCH));
        CHECK(g.cmd("bind " + std::to_string(DOMID_IO) + " 1") == sys_err(ESRCH));
        auto p = ev.alloc_unbound(g.domid);
        REQUIRE(p);
        g.num("bind 0 " + std::to_string(p->port().get()));
        CHECK(g.cmd("bind 0 " + std::to_string(p->port().get())) == sys_err(EINVAL));
    }
    SECTION("VIRQs: range, vCPU, global ownership, double binding") {
        CHECK(ev.bind_virq(NR_VIRQS).error() == std::errc::invalid_argument);
        CHECK(ev.bind_virq(VIRQ_DOM_EXC, 1).error() == std::errc::invalid_argument);
        CHECK(ev.bind_virq(VIRQ_TIMER, 1).error() == std::errc::no_such_file_or_directory);
        auto v = ev.bind_virq(VIRQ_DOM_EXC);
        REQUIRE(v);
        CHECK(ev.bind_virq(VIRQ_DOM_EXC).error() == std::errc::file_exists);
        CHECK(g.cmd("virq " + std::to_string(VIRQ_DOM_EXC)) == sys_err(EBUSY));
        auto st = ev.status(DomId(0), v->port());
        REQUIRE(st);
        CHECK(st->status == EVTCHNSTAT_virq);
        CHECK(st->u.virq == VIRQ_DOM_EXC);
        CHECK(ev.send(v->port()).error() == std::errc::invalid_argument);
    }
    SECTION("close, send and status of bad ports") {
        CHECK(ev.close(EvtchnPort(0)).error() == std::errc::invalid_argument);
        CHECK(ev.close(EvtchnPort(3000)).error() == std::errc::invalid_argument);
        CHECK(ev.send(EvtchnPort(0)).error() == std::errc::invalid_argument);
        CHECK(ev.send(EvtchnPort(77)).error() == std::errc::invalid_argument);
        CHECK(ev.send(mine->port()));  // unbound: dropped, returns 0
        CHECK(ev.status(DomId(0), EvtchnPort(4096)).error() == std::errc::invalid_argument);
        auto st = ev.status(DomId(0), EvtchnPort(0));
        REQUIRE(st);
        CHECK(st->status == EVTCHNSTAT_closed);
        CHECK(ev.status(DomId(999), EvtchnPort(1)).error() == std::errc::no_such_process);
    }
    SECTION("a domain cannot allocate in or inspect another domain; dom0 can") {
        CHECK(g.cmd("allocin 0 0") == "ok " + std::to_string(-EPERM));
        CHECK(g.cmd("status 1 0") == sys_err(EPERM));
        CHECK(g.cmd("status 0") == "ok 0 0 0");
        CHECK(g.cmd("allocin " + std::to_string(DOMID_SELF) + " 0") == "ok 0");
        auto st = ev.status(g.domid, EvtchnPort(2));  // port 1 is its console's
        REQUIRE(st);
        CHECK(st->status == EVTCHNSTAT_unbound);
        // dom0 allocates a port in the guest, earmarked for dom0, and binds it.
        evtchn_alloc_unbound a{g.domid.get(), 0, 0};
        auto r = h.dom0().channel().call(wire::Op::evtchn_alloc_unbound, 1, std::as_bytes(std::span(&a, 1)));
        REQUIRE(r);
        CHECK(r->hdr.rc == 0);
        CHECK(r->fds.empty());
        std::memcpy(&a, r->body.data(), sizeof a);
        auto b = ev.bind_interdomain(g.domid, EvtchnPort(a.port));
        REQUIRE(b);
        CHECK(g.cmd("status " + std::to_string(a.port)) == "ok 2 0 " + std::to_string(b->port().get()));
        evtchn_alloc_unbound bad{999, 0, 0};
        r = h.dom0().channel().call(wire::Op::evtchn_alloc_unbound, 1, std::as_bytes(std::span(&bad, 1)));
        REQUIRE(r);
        CHECK(r->hdr.rc == -ESRCH);
    }
    SECTION("sends on the slow path reach the peer") {
        auto p = ev.alloc_unbound(g.domid);
        REQUIRE(p);
        const long lp = g.num("bind 0 " + std::to_string(p->port().get()));
        CHECK(g.cmd("ack " + std::to_string(lp)) == "ok 1");
        REQUIRE(ev.send(p->port()));
        CHECK(g.cmd("wait " + std::to_string(lp) + " 1000") == "ok");
    }
}

TEST_CASE("a domain that sets its ports' descriptors blocking and fills them blocks neither hv-min nor a peer",
          "[hvmin][evtchn][hostile][issue-2]") {
    // The eventfd hole: every holder shared one file description, so clearing O_NONBLOCK and
    // saturating the counter made the next raise by hv-min (or send by the peer) block.
    Harness h;
    Puppet g(h, "hostile");
    Puppet o(h, "bystander");
    auto& ev = h.dom0().evtchn();
    auto to_g = ev.alloc_unbound(g.domid);  // dom0 <-> g
    REQUIRE(to_g);
    const long g_dom0 = g.num("bind 0 " + std::to_string(to_g->port().get()));
    const long g_o = g.num("unbound " + std::to_string(o.domid.get()));  // g <-> o
    const long o_g = o.num("bind " + std::to_string(g.domid.get()) + " " + std::to_string(g_o));
    CHECK(o.cmd("ack " + std::to_string(o_g)) == "ok 1");
    // Every descriptor g holds for both ports set blocking, the peers' queues filled, threads
    // of g parked in the kernel on them (a blocking write to the full queue, a splice of its
    // own receiver into a full pipe).
    CHECK(g.num("sabotage " + std::to_string(g_dom0)) > 0);
    CHECK(g.num("sabotage " + std::to_string(g_o)) > 0);
    CHECK(to_g->pending());

    // The peers' sends return at once: dom0's (libhv in this process) and o's (a domain).
    CHECK(returns_within(5000ms, [b = &*to_g] {
        for (int i = 0; i < 1000; ++i) {
            (void)b->notify();
        }
    }));
    for (int i = 0; i < 20; ++i) {
        REQUIRE(o.cmd("notify " + std::to_string(o_g)) == "ok");
    }
    CHECK(to_g->ack());  // what g sent is there to consume (g refills it at once)

    // hv-min serves everyone else: a new channel between dom0 and o works both ways.
    auto to_o = ev.alloc_unbound(o.domid);
    REQUIRE(to_o);
    const long o_dom0 = o.num("bind 0 " + std::to_string(to_o->port().get()));
    CHECK(o.cmd("ack " + std::to_string(o_dom0)) == "ok 1");
    auto ping = [&] {
        REQUIRE(o.cmd("notify " + std::to_string(o_dom0)) == "ok");
        REQUIRE(to_o->wait(2000ms));
        CHECK(to_o->ack());
        REQUIRE(to_o->notify());
        CHECK(o.cmd("wait " + std::to_string(o_dom0) + " 2000") == "ok");
        CHECK(o.cmd("ack " + std::to_string(o_dom0)) == "ok 1");
    };
    ping();

    // Closing the peers of g's ports makes hv-min raise them (their queues full, a splice
    // sitting on one): it goes on serving.
    REQUIRE(to_g->close());
    CHECK(o.cmd("close " + std::to_string(o_g)) == "ok");
    CHECK(g.cmd("status " + std::to_string(g_dom0)) == "ok 1 0 0");  // unbound, for dom0
    ping();

    // A VIRQ on g's death, and g's destruction with its threads still in the kernel.
    auto virq = ev.bind_virq(VIRQ_DOM_EXC);
    REQUIRE(virq);
    REQUIRE(h.ts->destroy(g.domid));
    REQUIRE(virq->wait(5000ms));
    CHECK(h.ts->wait_for_death(g.domid, 5000ms));
    ping();
}
