// netback's control ring end to end (xen-abi.md §6.7; netback/ctrl.hpp): a frontend domain
// sets one up by hand (ring page, a data page granted read-only, an unbound channel, the two
// keys) and drives it; every answer type and rejection, a vif without a control ring, a
// ref without its channel refused, and an overproducing frontend disabled.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <thread>

#include "e2e_harness.hpp"
#include "hv/rings/ring.hpp"

namespace hv::net::test {
namespace {

namespace wire = hv::rings;
using CtrlFront = wire::FrontRing<wire::NetifCtrlProtocol>;

/// The frontend half of a control ring, its keys written before netfront connects.
struct Ctrl {
    Ctrl(Vif& vif, bool with_channel = true) : v(vif) {
        auto& mem = v.guest.svc->memory();
        auto f = mem.alloc_extent(2);
        REQUIRE(f);
        ring_page = *mem.frame(*f);
        data = *mem.frame(*f + 1);
        auto r = CtrlFront::init({ring_page, wire::XEN_PAGE_SIZE});
        REQUIRE(r);
        ring = *r;
        auto rref = v.guest.svc->grants().grant_access(DomId(0), *f, false);
        auto dref = v.guest.svc->grants().grant_access(DomId(0), *f + 1, true);
        REQUIRE(rref);
        REQUIRE(dref);
        data_ref = dref->get();
        auto e = v.guest.svc->evtchn().alloc_unbound(DomId(0));
        REQUIRE(e);
        ev = std::move(*e);
        REQUIRE(v.guest.xs->write(v.fdir() + "/ctrl-ring-ref", std::to_string(rref->get())));
        if (with_channel) {
            REQUIRE(v.guest.xs->write(v.fdir() + "/event-channel-ctrl",
                                      std::to_string(ev.port().get())));
        }
    }
    /// One request, its response (≤ 5 s).
    wire::xen_netif_ctrl_response call(std::uint16_t type, std::uint32_t d0 = 0,
                                       std::uint32_t d1 = 0, std::uint32_t d2 = 0) {
        const wire::xen_netif_ctrl_request req{++id, type, {d0, d1, d2}};
        ring.put_request(req);
        ring.publish_requests();
        REQUIRE(ev.notify());
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        for (;;) {
            auto n = ring.unconsumed_responses();
            REQUIRE(n);
            if (*n > 0) {
                auto r = ring.take_response();
                REQUIRE(r);
                CHECK(r->id == req.id);
                CHECK(r->type == req.type);
                return *r;
            }
            REQUIRE(std::chrono::steady_clock::now() < deadline);
            (void)ev.wait(20ms);
            (void)ev.ack();
        }
    }
    Vif& v;
    std::byte* ring_page = nullptr;
    std::byte* data = nullptr;
    std::uint32_t data_ref = 0;
    CtrlFront ring;
    hvmin::EventChannelBinding ev;
    std::uint16_t id = 0;
};

}  // namespace

TEST_CASE("the control ring answers hash requests, rejections as Linux netback",
          "[netback][e2e][ctrl][hostile]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, {}, {}, /*connect=*/false);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    CHECK(v.backend_key("feature-ctrl-ring") == "1");
    Ctrl c(v);
    v.connect();
    using namespace wire;
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS).status == XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, 7).status ==
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ)
              .status == XEN_NETIF_CTRL_STATUS_SUCCESS);
    auto f = c.call(XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
    CHECK(f.status == XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(f.data == 0xfU);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, 0x10).status ==
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP).status ==
          XEN_NETIF_CTRL_STATUS_SUCCESS);
    // The key comes by grant copy from the frontend's page.
    std::memset(c.data, 0x5a, 64);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, c.data_ref, 40).status ==
          XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, c.data_ref, 41).status ==
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, 4000, 40).status ==  // no such grant
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    auto sz = c.call(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
    CHECK(sz.status == XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(sz.data == 128);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 129).status ==
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 8).status ==
          XEN_NETIF_CTRL_STATUS_SUCCESS);
    std::memset(c.data, 0, 64);  // every entry queue 0: the vif has one queue
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, c.data_ref, 8, 0).status ==
          XEN_NETIF_CTRL_STATUS_SUCCESS);
    c.data[4] = std::byte(1);  // entry 1 names queue 1, which does not exist
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, c.data_ref, 8, 0).status ==
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, c.data_ref, 2, 7).status ==
          XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);  // past the size
    CHECK(c.call(XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING, c.data_ref, 1).status ==
          XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    CHECK(c.call(77).status == XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    // The data path is untouched.
    const auto fr = raw_frame(100, 3);
    REQUIRE(v.nf->send(0, fr));
    std::vector<netfront::Packet> got;
    REQUIRE(v.nf->receive(got, 1, 5s) == 1);
    CHECK(got[0].data == fr);
}

TEST_CASE("a control ring ref without its channel is refused, an overproducing control ring "
          "disables only that vif", "[netback][e2e][ctrl][hostile]") {
    Env env;
    Guest g1(env, "g1");
    Guest g2(env, "g2");
    {
        Vif v(env, g1, 1, {}, {}, /*connect=*/false);
        REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
        Ctrl c(v, /*with_channel=*/false);
        auto d = netfront::Device::create(*g1.svc, *g1.xs, 1, {});
        REQUIRE(d);
        v.nf = std::move(*d);
        (void)v.nf->wait_connected(2s);
        // Refused at every attempt (netfront starts over after each Closing): the error node
        // says why and the backend never publishes Connected.
        auto e = env.xs->read("/local/domain/0/error/backend/vif/" +
                              std::to_string(g1.domid.get()) + "/1/error");
        REQUIRE(e);
        CHECK(e->find("connecting") != std::string::npos);
        CHECK(v.backend_key("state") != "4");
        v.nf.reset();
    }
    Vif bad(env, g1, 0, {}, {}, /*connect=*/false);
    REQUIRE(bad.wait_backend(XenbusState::XenbusStateInitWait));
    Ctrl c(bad);
    bad.connect();
    Vif good(env, g2, 0);
    CHECK(c.call(wire::XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE).data == 128);
    std::atomic_ref<std::uint32_t>(c.ring.shared().req_prod)
        .store(c.ring.shared().req_prod + 1000, std::memory_order_release);
    REQUIRE(c.ev.notify());
    CHECK(bad.wait_backend(XenbusState::XenbusStateClosing));
    auto e = env.xs->read("/local/domain/0/error/backend/vif/" + std::to_string(g1.domid.get()) +
                          "/0/error");
    REQUIRE(e);
    CHECK(e->starts_with(std::to_string(EPROTO) + " "));
    const auto fr = raw_frame(100, 4);
    REQUIRE(good.nf->send(0, fr));
    std::vector<netfront::Packet> got;
    REQUIRE(good.nf->receive(got, 1, 5s) == 1);
    CHECK(got[0].data == fr);
}

}  // namespace hv::net::test

namespace hv::net::test {

TEST_CASE("netfront's control ring client: hash algorithm, key and mapping set end to end",
          "[netback][e2e][ctrl]") {
    Env env;
    Guest g(env, "g1");
    netfront::Options o;
    o.ctrl_ring = true;
    o.max_queues = 2;
    Vif v(env, g, 0, o);
    REQUIRE(v.nf->queues() == 2);
    auto k = env.xs->read(v.fdir() + "/ctrl-ring-ref");
    REQUIRE(k);
    using namespace hv::rings;
    auto a = v.nf->ctrl_request(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
                                XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
    REQUIRE(a);
    CHECK(a->status == XEN_NETIF_CTRL_STATUS_SUCCESS);
    const std::vector<std::uint8_t> key(40, 0x6d);
    CHECK(v.nf->set_hash_key(key));
    const std::vector<std::uint8_t> long_key(41, 0x6d);
    auto r = v.nf->set_hash_key(long_key);
    REQUIRE_FALSE(r);
    CHECK(r.error() == netfront::Errc::refused);
    auto s = v.nf->ctrl_request(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 4);
    REQUIRE(s);
    CHECK(s->status == XEN_NETIF_CTRL_STATUS_SUCCESS);
    const std::vector<std::uint32_t> ok{0, 1, 1, 0}, bad{0, 2};
    CHECK(v.nf->set_hash_mapping(ok, 0));
    r = v.nf->set_hash_mapping(bad, 0);  // queue 2 does not exist
    REQUIRE_FALSE(r);
    CHECK(r.error() == netfront::Errc::refused);
    // Without the option there is no control ring.
    Vif plain(env, g, 1);
    CHECK(env.xs->read(plain.fdir() + "/ctrl-ring-ref").error() ==
          std::errc::no_such_file_or_directory);
    auto n = plain.nf->ctrl_request(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
    REQUIRE_FALSE(n);
    CHECK(n.error() == netfront::Errc::not_supported);
}

}  // namespace hv::net::test
