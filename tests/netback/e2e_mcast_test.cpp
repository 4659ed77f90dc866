// netback multicast control end to end (xen-abi.md §6.2-6.3, §6.6; netback/mcast.hpp): the
// features offered, libnetfront's mcast_add/mcast_del/set_multicast_control, the filter on rx
// (host -> guest) with filtering on, off and switched while connected, the 64-entry limit, and
// hostile MCAST extras written by hand on the tx ring, each vif with its own list. A frame is
// judged filtered when a unicast frame sent after it comes back first (the loop engine keeps
// order), so no case waits for something not to happen.
#include <catch2/catch.hpp>

#include <cstring>

#include "e2e_harness.hpp"
#include "netback/mcast.hpp"

namespace hv::net::test {
namespace {

namespace wire = hv::rings;
using netfront::Packet;
using Mac = netfront::Device::MacAddr;

constexpr Mac kGroup{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};   // mDNS's IPv4 group
constexpr Mac kGroup6{0x33, 0x33, 0x00, 0x00, 0x00, 0x01};  // IPv6 all-nodes
constexpr Mac kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

std::vector<std::byte> frame_to(const Mac& dst, std::uint32_t seed) {
    auto f = raw_frame(120, seed);
    std::memcpy(f.data(), dst.data(), dst.size());
    return f;
}

/// Sends a frame to `dst` on queue `q`, then a unicast frame; true when the `dst` frame came
/// back (ahead of the unicast one), false when only the unicast one did.
bool delivered(Vif& v, const Mac& dst, unsigned q = 0) {
    static std::uint32_t seed = 1;
    const auto f = frame_to(dst, ++seed);
    const auto marker = raw_frame(100, ++seed);
    REQUIRE(v.nf->send(q, f));
    REQUIRE(v.nf->send(q, marker));
    std::vector<Packet> got;
    while (got.empty() || got.back().data != marker) {
        REQUIRE(v.nf->receive(got, got.size() + 1, 5s) > 0);
    }
    REQUIRE(got.size() <= 2);
    if (got.size() == 2) {
        CHECK(got[0].data == f);
        CHECK(got[0].queue == q);
    }
    return got.size() == 2;
}

/// Waits (bounded) until the filter's verdict on `dst` is `want` (a watched key took effect).
bool becomes(Vif& v, const Mac& dst, bool want) {
    for (int i = 0; i < 100; ++i) {
        if (delivered(v, dst) == want) {
            return true;
        }
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

netfront::Options filtering() {
    netfront::Options o;
    o.multicast_control = true;
    return o;
}

/// A hand-written multicast request (slot 0 + the extra), as a hostile frontend may send.
void raw_mcast(Vif& v, std::uint8_t type, const Mac& addr) {
    auto p = v.nf->raw_tx_page(0);
    REQUIRE(p);
    wire::netif_tx_request first{p->gref.get(), 0, wire::NETTXF_extra_info, p->id, 0};
    wire::netif_extra_info x{};
    x.type = type;
    std::memcpy(x.u.mcast.addr, addr.data(), addr.size());
    wire::netif_tx_request second{};
    std::memcpy(static_cast<void*>(&second), &x, sizeof x);
    const wire::netif_tx_request slots[] = {first, second};
    REQUIRE(v.nf->raw_tx(0, slots));
}

}  // namespace

TEST_CASE("netback offers multicast control and reads request-multicast-control",
          "[netback][e2e][mcast]") {
    Env env;
    Guest g(env, "g1");
    Vif on(env, g, 0, filtering());
    CHECK(on.backend_key("feature-multicast-control") == "1");
    CHECK(on.backend_key("feature-dynamic-multicast-control") == "1");
    CHECK(on.nf->multicast_control());
    auto k = env.xs->read(on.fdir() + "/request-multicast-control");
    REQUIRE(k);
    CHECK(*k == "1");
    Vif off(env, g, 1);
    CHECK_FALSE(off.nf->multicast_control());
    k = env.xs->read(off.fdir() + "/request-multicast-control");
    REQUIRE(k);
    CHECK(*k == "0");
}

TEST_CASE("with filtering on only the groups added reach the frontend, unicast and broadcast "
          "always do", "[netback][e2e][mcast]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, filtering());
    CHECK_FALSE(delivered(v, kGroup));
    CHECK(v.wait_backend_key("statistics/rx_dropped", "1"));
    CHECK(delivered(v, kBroadcast));
    REQUIRE(v.nf->mcast_add(kGroup));
    CHECK(delivered(v, kGroup));
    CHECK_FALSE(delivered(v, kGroup6));
    REQUIRE(v.nf->mcast_add(kGroup6));
    CHECK(delivered(v, kGroup6));
    REQUIRE(v.nf->mcast_del(kGroup));
    CHECK_FALSE(delivered(v, kGroup));
    CHECK(delivered(v, kGroup6));
    CHECK(v.wait_backend_key("statistics/rx_dropped", "3"));
    // The multicast requests are not packets: no tx error, no tx packet counted for them.
    CHECK(v.nf->counters().tx_errors == 0);
}

TEST_CASE("with filtering off every multicast frame passes, and the list is still kept",
          "[netback][e2e][mcast]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(delivered(v, kGroup));
    REQUIRE(v.nf->mcast_add(kGroup6));  // answered OKAY: Linux keeps the list regardless
    CHECK(delivered(v, kGroup));
    // Dynamic: turning filtering on while connected applies the list kept so far.
    REQUIRE(v.nf->set_multicast_control(true));
    CHECK(becomes(v, kGroup, false));
    CHECK(delivered(v, kGroup6));
    REQUIRE(v.nf->set_multicast_control(false));
    CHECK(becomes(v, kGroup, true));
}

TEST_CASE("the list holds 64 addresses: the 65th add is refused, the frontend may then turn "
          "filtering off", "[netback][e2e][mcast][hostile]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, filtering());
    auto group = [](unsigned i) { return Mac{0x01, 0x00, 0x5e, 0x01, 0x00, static_cast<std::uint8_t>(i)}; };
    for (unsigned i = 0; i < McastFilter::kMax; ++i) {
        REQUIRE(v.nf->mcast_add(group(i)));
    }
    auto r = v.nf->mcast_add(group(200));
    REQUIRE_FALSE(r);
    CHECK(r.error() == netfront::Errc::refused);
    CHECK(delivered(v, group(0)));
    CHECK(delivered(v, group(63)));
    CHECK_FALSE(delivered(v, group(200)));
    // Room again after a delete.
    REQUIRE(v.nf->mcast_del(group(5)));
    CHECK_FALSE(delivered(v, group(5)));
    REQUIRE(v.nf->mcast_add(group(200)));
    CHECK(delivered(v, group(200)));
    CHECK_FALSE(v.nf->mcast_add(group(201)));
    // A frontend out of room asks for every group instead (feature-dynamic-multicast-control).
    REQUIRE(v.nf->set_multicast_control(false));
    CHECK(becomes(v, group(201), true));
}

TEST_CASE("hostile multicast extras: a unicast address, an unknown delete, duplicates and a "
          "flood are answered as Linux does, the vif keeps working", "[netback][e2e][mcast][hostile]") {
    Env env;
    Guest g1(env, "g1");
    Guest g2(env, "g2");
    Vif bad(env, g1, 0, filtering());
    Vif good(env, g2, 0, filtering());
    const Mac unicast{0x02, 0x02, 0x02, 0x02, 0x02, 0x02};
    // Linux stores a non-multicast address too (it never matches: unicast is not filtered).
    raw_mcast(bad, wire::XEN_NETIF_EXTRA_TYPE_MCAST_ADD, unicast);
    // Deleting an address never added: OKAY, nothing changes.
    raw_mcast(bad, wire::XEN_NETIF_EXTRA_TYPE_MCAST_DEL, kGroup);
    auto rs = tx_responses(bad, 4);
    REQUIRE(rs.size() == 4);
    CHECK(rs[0].status == wire::NETIF_RSP_OKAY);
    CHECK(rs[1].status == wire::NETIF_RSP_NULL);
    CHECK(rs[2].status == wire::NETIF_RSP_OKAY);
    CHECK(rs[3].status == wire::NETIF_RSP_NULL);
    CHECK(delivered(bad, unicast));
    // A duplicate takes another entry, and one delete removes one of them.
    REQUIRE(bad.nf->mcast_add(kGroup));
    REQUIRE(bad.nf->mcast_add(kGroup));
    REQUIRE(bad.nf->mcast_del(kGroup));
    CHECK(delivered(bad, kGroup));
    REQUIRE(bad.nf->mcast_del(kGroup));
    CHECK_FALSE(delivered(bad, kGroup));
    (void)bad.nf->take_tx_responses();  // the frames and requests above
    // A flood of adds (the ring refilled as answers come): the list stops at 64 entries (the
    // unicast one is the first), every add past it is answered ERROR.
    unsigned okay = 0, error = 0;
    for (unsigned i = 0; i < 600; i += 100) {
        for (unsigned j = i; j < i + 100; ++j) {  // 200 of the ring's 256 slots
            const Mac m{0x01, 0x00, 0x5e, 0x02, static_cast<std::uint8_t>(j >> 8),
                        static_cast<std::uint8_t>(j)};
            raw_mcast(bad, wire::XEN_NETIF_EXTRA_TYPE_MCAST_ADD, m);
        }
        for (const auto& r : tx_responses(bad, 200)) {
            okay += r.status == wire::NETIF_RSP_OKAY;
            error += r.status == wire::NETIF_RSP_ERROR;
        }
    }
    CHECK(okay == McastFilter::kMax - 1);
    CHECK(error == 600 - (McastFilter::kMax - 1));
    CHECK(bad.backend_key("state") == "4");
    CHECK(delivered(bad, Mac{0x01, 0x00, 0x5e, 0x02, 0x00, 0x00}));
    CHECK_FALSE(delivered(bad, Mac{0x01, 0x00, 0x5e, 0x02, 0x02, 0x57}));
    // The other vif has its own list: none of bad's groups, room for its own.
    CHECK_FALSE(delivered(good, Mac{0x01, 0x00, 0x5e, 0x02, 0x00, 0x00}));
    REQUIRE(good.nf->mcast_add(kGroup6));
    CHECK(delivered(good, kGroup6));
    CHECK_FALSE(delivered(bad, kGroup6));
}

TEST_CASE("the multicast list is per vif, shared by its queues", "[netback][e2e][mcast]") {
    Env env;
    Guest g(env, "g1");
    netfront::Options o = filtering();
    o.max_queues = 2;
    Vif v(env, g, 0, o);
    REQUIRE(v.nf->queues() == 2);
    CHECK_FALSE(delivered(v, kGroup, 1));
    REQUIRE(v.nf->mcast_add(kGroup));  // sent on queue 0
    CHECK(delivered(v, kGroup, 1));
    CHECK(delivered(v, kGroup, 0));
}

TEST_CASE("a reconnect starts with an empty multicast list", "[netback][e2e][mcast]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, filtering());
    REQUIRE(v.nf->mcast_add(kGroup));
    CHECK(delivered(v, kGroup));
    v.reconnect();
    CHECK_FALSE(delivered(v, kGroup));
}

TEST_CASE("netfront's multicast calls refuse what the backend or the state does not allow",
          "[netback][e2e][mcast]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, filtering(), {}, /*connect=*/false);
    auto d = netfront::Device::create(*g.svc, *g.xs, 0, filtering());
    REQUIRE(d);
    v.nf = std::move(*d);
    auto r = v.nf->mcast_add(kGroup);
    REQUIRE_FALSE(r);
    CHECK(r.error() == netfront::Errc::not_connected);
    // Before the handshake the choice is only recorded.
    REQUIRE(v.nf->set_multicast_control(false));
    REQUIRE(v.nf->wait_connected(10s));
    REQUIRE(v.wait_backend(XenbusState::XenbusStateConnected));
    CHECK_FALSE(v.nf->multicast_control());
    auto k = env.xs->read(v.fdir() + "/request-multicast-control");
    REQUIRE(k);
    CHECK(*k == "0");
    CHECK(delivered(v, kGroup));
    // A backend without multicast control (the key as an older netback writes it).
    Vif old(env, g, 1, filtering(), {}, /*connect=*/false);
    REQUIRE(old.wait_backend(XenbusState::XenbusStateInitWait));
    REQUIRE(env.xs->write(old.bdir() + "/feature-multicast-control", "0"));
    old.connect();
    CHECK_FALSE(old.nf->multicast_control());
    CHECK(env.xs->read(old.fdir() + "/request-multicast-control").error() ==
          std::errc::no_such_file_or_directory);
    r = old.nf->mcast_add(kGroup);
    REQUIRE_FALSE(r);
    CHECK(r.error() == netfront::Errc::not_supported);
    CHECK(old.nf->set_multicast_control(true).error() == netfront::Errc::not_supported);
    CHECK(delivered(old, kGroup));
}

}  // namespace hv::net::test
