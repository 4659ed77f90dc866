// netback against a hostile frontend (xen-abi.md §6.3–6.5, tx_parse.hpp's table): one case per
// rejection, each checking the verdict the guest sees (error responses / the vif disabled with
// an error node) and that the other vifs keep working.
#include <catch2/catch.hpp>

#include <cstring>
#include <thread>

#include "e2e_harness.hpp"

namespace hv::net::test {
namespace {

namespace wire = hv::rings;
using netfront::Packet;

/// The vif still echoes a frame (loop engine).
bool echoes(Vif& v) {
    const auto f = raw_frame(200, 77);
    if (!v.nf->send(0, f)) {
        return false;
    }
    std::vector<Packet> got;
    return v.nf->receive(got, 1, 5s) == 1 && got[0].data == f;
}

wire::netif_tx_request req(const netfront::Device::RawPage& p, std::uint16_t offset,
                           std::uint16_t size, std::uint16_t flags) {
    return {p.gref.get(), offset, flags, p.id, size};
}

wire::netif_tx_request extra_slot(std::uint8_t type, std::uint8_t gso_type = 0,
                                  std::uint16_t gso_size = 0) {
    wire::netif_extra_info x{};
    x.type = type;
    x.u.gso.type = gso_type;
    x.u.gso.size = gso_size;
    wire::netif_tx_request r{};
    std::memcpy(static_cast<void*>(&r), &x, sizeof x);
    return r;
}

/// A fatal rejection: the vif goes Closing with an error node; no response comes.
void check_disabled(Vif& v) {
    CHECK(v.wait_backend(XenbusState::XenbusStateClosing));
    auto e = v.env.xs->read("/local/domain/0/error/backend/vif/" + std::to_string(v.guest.domid.get()) +
                            "/" + std::to_string(v.devid) + "/error");
    REQUIRE(e);
    CHECK(e->starts_with(std::to_string(EPROTO) + " "));
}

struct Two {
    Two() : Two(Env::loop_options()) {}
    explicit Two(BackendOptions o) : env(std::move(o)) {}
    Env env;
    Guest g1{env, "g1"};
    Guest g2{env, "g2"};
    Vif bad{env, g1, 0};
    Vif good{env, g2, 0};
};

}  // namespace

TEST_CASE("a packet shorter than an Ethernet header gets an error response", "[netback][hostile]") {
    Two t;
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 13, 0)}));
    auto r = tx_responses(t.bad, 1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].id == p->id);
    CHECK(r[0].status == wire::NETIF_RSP_ERROR);
    CHECK(echoes(t.bad));
    CHECK(t.bad.wait_backend_key("statistics/tx_errors", "1"));
}

TEST_CASE("a fragment larger than the declared total (a wrapped >64 KiB size) is dropped",
          "[netback][hostile]") {
    Two t;
    auto a = t.bad.nf->raw_tx_page(0);
    auto b = t.bad.nf->raw_tx_page(0);
    auto c = t.bad.nf->raw_tx_page(0);
    REQUIRE((a && b && c));
    // 70000 bytes wrap to 4464 in the 16-bit size; the second fragment then exceeds what is left.
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*a, 0, static_cast<std::uint16_t>(70000 & 0xFFFF),
                                                 wire::NETTXF_more_data),
                                             req(*b, 0, 4096, wire::NETTXF_more_data),
                                             req(*c, 0, 4096, 0)}));
    auto r = tx_responses(t.bad, 3);
    REQUIRE(r.size() == 3);
    for (const auto& x : r) {
        CHECK(x.status == wire::NETIF_RSP_ERROR);
    }
    CHECK(echoes(t.bad));
}

TEST_CASE("a fragment crossing its page disables only that vif", "[netback][hostile]") {
    Two t;
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 4000, 200, 0)}));
    check_disabled(t.bad);
    CHECK(tx_responses(t.bad, 1).empty());
    CHECK(echoes(t.good));
}

TEST_CASE("19 follow-on slots drop the packet, 21 disable the vif", "[netback][hostile]") {
    Two t;
    auto build = [&](unsigned follow) {
        std::vector<wire::netif_tx_request> s;
        for (unsigned i = 0; i <= follow; ++i) {
            auto p = t.bad.nf->raw_tx_page(0);
            REQUIRE(p);
            s.push_back(req(*p, 0, i == 0 ? static_cast<std::uint16_t>(100 * (follow + 1)) : 100,
                            i < follow ? wire::NETTXF_more_data : 0));
        }
        return s;
    };
    REQUIRE(t.bad.nf->raw_tx(0, build(19)));
    auto r = tx_responses(t.bad, 20);
    REQUIRE(r.size() == 20);
    for (const auto& x : r) {
        CHECK(x.status == wire::NETIF_RSP_ERROR);
    }
    CHECK(echoes(t.bad));
    REQUIRE(t.bad.nf->raw_tx(0, build(21)));
    check_disabled(t.bad);
    CHECK(echoes(t.good));
}

TEST_CASE("a grant that does not exist or is granted to another domain gets an error response",
          "[netback][hostile]") {
    // Every data path: hv-min checks the grant in the copy hypercall, or when map mode maps it
    // (per batch, or once to keep it with the persistent pool: a refused one is not kept).
    const int path = GENERATE(0, 1, 2);
    const char* names[] = {"copy", "map", "pool"};
    INFO("path " << names[path]);
    BackendOptions o = Env::loop_options();
    o.mode = path == 0 ? DataMode::copy : DataMode::map;
    o.persistent_pool = path == 2;
    Two t(o);
    CHECK(t.bad.nf->persistent_pool() == (path == 2));
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    SECTION("a ref beyond the grant table") {
        auto r0 = req(*p, 0, 100, 0);
        r0.gref = 1U << 30;
        REQUIRE(t.bad.nf->raw_tx(0, std::vector{r0}));
    }
    SECTION("a ref granted to another domain") {
        auto frame = t.g1.svc->memory().alloc_extent(1);
        REQUIRE(frame);
        auto g = t.g1.svc->grants().grant_access(t.g2.domid, *frame, true);
        REQUIRE(g);
        auto r0 = req(*p, 0, 100, 0);
        r0.gref = g->get();
        REQUIRE(t.bad.nf->raw_tx(0, std::vector{r0}));
    }
    auto r = tx_responses(t.bad, 1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == wire::NETIF_RSP_ERROR);
    CHECK(echoes(t.bad));
    CHECK(t.bad.wait_backend_key("statistics/tx_errors", "1"));
}

TEST_CASE("a pool grant the backend keeps mapped cannot be revoked until the vif disconnects",
          "[netback][hostile][pool]") {
    Two t;  // dom0 netback: map mode with the persistent pool
    REQUIRE(t.bad.nf->persistent_pool());
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    const auto f = raw_frame(100, 9);
    std::memcpy(p->data, f.data(), f.size());
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 100, 0)}));
    auto r = tx_responses(t.bad, 1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == wire::NETIF_RSP_OKAY);
    // SPEC: Xen's gnttab_end_foreign_access_ref fails while the grantee maps the entry.
    auto e = t.g1.svc->grants().end_access(p->gref);
    REQUIRE_FALSE(e);
    CHECK(e.error() == hvmin::Errc::grant_in_use);
    CHECK(echoes(t.bad));
    // The frontend closes: netback unmaps what it kept before it answers Closing.
    REQUIRE(xenbus::switch_state(*t.g1.xs, t.bad.fdir(), XenbusState::XenbusStateClosing));
    REQUIRE(t.bad.wait_backend(XenbusState::XenbusStateClosing));
    CHECK(t.g1.svc->grants().end_access(p->gref));
    CHECK(echoes(t.good));
}

TEST_CASE("a pool grant revoked before the backend mapped it gets an error response",
          "[netback][hostile][pool]") {
    Two t;
    REQUIRE(t.bad.nf->persistent_pool());
    auto p = t.bad.nf->raw_tx_page(0);  // never sent yet: not mapped by the backend
    REQUIRE(p);
    const auto f = raw_frame(100, 10);
    std::memcpy(p->data, f.data(), f.size());
    REQUIRE(t.g1.svc->grants().end_access(p->gref));
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 100, 0)}));
    auto r = tx_responses(t.bad, 1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == wire::NETIF_RSP_ERROR);
    CHECK(t.bad.wait_backend_key("statistics/tx_errors", "1"));
    CHECK(t.bad.backend_key("state") == "4");  // the vif keeps serving
    CHECK(echoes(t.good));
}

TEST_CASE("a frontend dying with its pool mapped leaves the backend serving others",
          "[netback][hostile][pool]") {
    Env env;
    Guest victim(env, "victim");
    Guest other(env, "other");
    Vif good(env, other, 0);
    {
        Vif v(env, victim, 0);
        REQUIRE(v.nf->persistent_pool());
        for (std::uint32_t i = 0; i < 300; ++i) {  // every rx buffer mapped and kept
            const auto f = raw_frame(64, i);
            REQUIRE(v.nf->send(0, f));
            std::vector<Packet> got;
            REQUIRE(v.nf->receive(got, 1, 5s) == 1);
        }
        REQUIRE(v.wait_backend_key("statistics/tx_packets", "300"));
        CHECK(std::stoull(v.backend_key("statistics/pool_maps")) > 256);
        victim.crash();
        // The toolstack removes the dead domain's vif (Vif's destructor): netback disconnects
        // and unmaps what it kept (hv-min dropped the pins at the death already).
    }
    const auto dir = xenbus::backend_dir(DomId(0), "vif", victim.domid, 0);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (env.xs->read(dir + "/state") && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);
    }
    CHECK_FALSE(env.xs->read(dir + "/state"));
    CHECK(echoes(good));
    // A new guest's pool is mapped and kept as before.
    Guest next(env, "next");
    Vif n(env, next, 0);
    REQUIRE(n.nf->persistent_pool());
    CHECK(echoes(n));
    CHECK(n.wait_backend_key("statistics/pool_maps", "2"));
}

TEST_CASE("an unknown extra type disables the vif", "[netback][hostile]") {
    Two t;
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 100, wire::NETTXF_extra_info),
                                             extra_slot(9)}));
    check_disabled(t.bad);
    CHECK(echoes(t.good));
}

TEST_CASE("a GSO extra of an undefined type or with MSS 0 disables the vif", "[netback][hostile]") {
    Two t;
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    SECTION("type 3") {
        REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 100, wire::NETTXF_extra_info),
                                                 extra_slot(wire::XEN_NETIF_EXTRA_TYPE_GSO, 3, 1400)}));
    }
    SECTION("size 0") {
        REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 100, wire::NETTXF_extra_info),
                                                 extra_slot(wire::XEN_NETIF_EXTRA_TYPE_GSO,
                                                            wire::XEN_NETIF_GSO_TYPE_TCPV4, 0)}));
    }
    check_disabled(t.bad);
    CHECK(echoes(t.good));
}

TEST_CASE("offload flags the packet's headers cannot carry get an error response",
          "[netback][hostile]") {
    Two t;
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    // csum_blank on a frame that is not IP: no L4 header to put a checksum in.
    const auto f = raw_frame(100, 1);
    std::memcpy(p->data, f.data(), f.size());
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 100, wire::NETTXF_csum_blank)}));
    auto r = tx_responses(t.bad, 1);
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == wire::NETIF_RSP_ERROR);
    CHECK(echoes(t.bad));
}

TEST_CASE("a tx producer index past the ring disables the vif", "[netback][hostile]") {
    Two t;
    t.bad.nf->raw_tx_req_prod(0, 1000);
    check_disabled(t.bad);
    CHECK(echoes(t.good));
}

TEST_CASE("an rx producer index past the ring disables the vif", "[netback][hostile]") {
    Two t;
    t.bad.nf->raw_rx_hold(true);  // netfront would re-post buffers over our index
    t.bad.nf->raw_rx_req_prod(0, 1000);
    // A frame coming back through the loop engine makes netback read the rx ring.
    REQUIRE(t.bad.nf->send(0, raw_frame(200, 5)));
    check_disabled(t.bad);
    auto e = t.env.xs->read("/local/domain/0/error/backend/vif/" +
                            std::to_string(t.bad.guest.domid.get()) + "/0/error");
    REQUIRE(e);
    CHECK(e->find("rx ring") != std::string::npos);
    CHECK(echoes(t.good));
}

TEST_CASE("a GSO extra of a type the backend did not offer drops the packet, the vif goes on",
          "[netback][hostile][offload]") {
    // netfront refuses to send it (it reads the backend's features), so the slots are written
    // by hand, as by a frontend ignoring the negotiation. Linux netback offers both types and
    // has no such case; hvkit answers it as any packet it will not send: NETIF_RSP_ERROR.
    BackendOptions o = Env::loop_options();
    SECTION("tcpv6 with --no-gso") {
        o.tx_offers.gso_tcpv4 = o.tx_offers.gso_tcpv6 = false;
    }
    SECTION("tcpv6 without IPv6 checksum offload") {
        o.tx_offers.csum6 = false;
    }
    Two t(o);
    CHECK(t.bad.backend_key("feature-gso-tcpv6") == "0");
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    const auto f6 = tcp6_frame(1500, 3);
    std::memcpy(p->data, f6.data(), f6.size());
    REQUIRE(t.bad.nf->raw_tx(
        0, std::vector{req(*p, 0, static_cast<std::uint16_t>(f6.size()),
                           wire::NETTXF_extra_info | wire::NETTXF_csum_blank |
                               wire::NETTXF_data_validated),
                       extra_slot(wire::XEN_NETIF_EXTRA_TYPE_GSO, wire::XEN_NETIF_GSO_TYPE_TCPV6,
                                  1428)}));
    auto r = tx_responses(t.bad, 2);
    REQUIRE(r.size() == 2);
    CHECK(r[0].status == wire::NETIF_RSP_ERROR);
    CHECK(r[1].status == wire::NETIF_RSP_NULL);
    CHECK(t.bad.wait_backend_key("statistics/tx_errors", "1"));
    CHECK(t.bad.backend_key("state") == "4");  // not disabled
    CHECK(echoes(t.bad));
    CHECK(echoes(t.good));
}

TEST_CASE("an extra-info slot is answered with NETIF_RSP_NULL after the first slot's response",
          "[netback][hostile]") {
    Two t;
    auto p = t.bad.nf->raw_tx_page(0);
    REQUIRE(p);
    const auto f = tcp4_frame(3000, 1);
    std::memcpy(p->data, f.data(), f.size());
    REQUIRE(t.bad.nf->raw_tx(0, std::vector{req(*p, 0, 3000,
                                                 wire::NETTXF_extra_info | wire::NETTXF_csum_blank),
                                             extra_slot(wire::XEN_NETIF_EXTRA_TYPE_GSO,
                                                        wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448)}));
    auto r = tx_responses(t.bad, 2);
    REQUIRE(r.size() == 2);
    CHECK(r[0].id == p->id);
    CHECK(r[0].status == wire::NETIF_RSP_OKAY);
    CHECK(r[1].status == wire::NETIF_RSP_NULL);
}

TEST_CASE("an rx ring without buffers holds frames, then drops them, and traffic resumes after",
          "[netback][hostile]") {
    BackendOptions o = Env::loop_options();
    o.rx_drain_timeout = Env::kShortDrain;
    Two t(o);
    t.bad.nf->raw_rx_hold(true);
    std::vector<Packet> got;
    // 256 rx buffers are posted; the 257th frame finds none.
    unsigned sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (sent < 300 && std::chrono::steady_clock::now() < deadline) {
        if (t.bad.nf->send(0, raw_frame(60, sent))) {
            ++sent;
        } else {
            t.bad.nf->receive(got, 1, 10ms);
        }
    }
    REQUIRE(sent == 300);
    // Drain timeout 200 ms here: the held frames are dropped and counted.
    CHECK(t.bad.wait_backend_key("statistics/rx_dropped", "44"));
    t.bad.nf->raw_rx_hold(false);
    t.bad.nf->receive(got, 256, 2s);
    CHECK(got.size() == 256);
    CHECK(echoes(t.bad));
    CHECK(echoes(t.good));
}

TEST_CASE("a frontend without request-rx-copy or with too many queues is refused",
          "[netback][hostile][state]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, {}, {}, false);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    SECTION("no request-rx-copy") {
        REQUIRE(g.xs->write(v.fdir() + "/tx-ring-ref", "8"));
        REQUIRE(g.xs->write(v.fdir() + "/rx-ring-ref", "9"));
        REQUIRE(g.xs->write(v.fdir() + "/event-channel", "1"));
    }
    SECTION("multi-queue-num-queues above the maximum") {
        REQUIRE(g.xs->write(v.fdir() + "/request-rx-copy", "1"));
        REQUIRE(g.xs->write(v.fdir() + "/multi-queue-num-queues", "5"));
    }
    SECTION("ring refs that are not granted") {
        REQUIRE(g.xs->write(v.fdir() + "/request-rx-copy", "1"));
        REQUIRE(g.xs->write(v.fdir() + "/tx-ring-ref", "4000"));
        REQUIRE(g.xs->write(v.fdir() + "/rx-ring-ref", "4001"));
        REQUIRE(g.xs->write(v.fdir() + "/event-channel", "1"));
    }
    REQUIRE(xenbus::switch_state(*g.xs, v.fdir(), XenbusState::XenbusStateConnected));
    CHECK(v.wait_backend(XenbusState::XenbusStateClosing));
    // The host side was ready at probe: the refusal is the frontend's, not a hotplug failure.
    CHECK(v.backend_key("hotplug-status") == "connected");
    CHECK(v.backend_key("hotplug-error") == "<absent>");
}

}  // namespace hv::net::test
