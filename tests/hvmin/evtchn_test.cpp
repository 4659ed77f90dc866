// Event channels: Xen's operations and return codes, eventfd-backed pending/mask semantics.
#include <catch2/catch.hpp>
#include <cstring>

#include "harness.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace hv::rings;
using namespace std::chrono_literals;

namespace {
std::string sys_err(int e) { return "err system " + std::to_string(e); }
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
