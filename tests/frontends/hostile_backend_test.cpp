// libblkfront against a hostile backend: the test process (dom0) plays the backend by hand —
// keys, ring mapping, event channel, responses — and breaks the protocol in each way the
// frontend must reject. The frontend is hv-guest in a real domain; the test talks NBD to it.
#include <catch2/catch.hpp>
#include <cstring>

#include "frontends/nbd.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/ring.hpp"
#include "hvmin/client.hpp"
#include "nbd_client.hpp"
#include "rig.hpp"

using namespace hv;
using namespace hv::test;
using namespace hv::rings;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kDev = 51712;

/// A hand-driven blkif backend in the test process. One queue, one ring page, no persistent
/// grants, no indirect (none offered).
struct HostileBackend {
    explicit HostileBackend(Rig& r) : rig(r) {
        guest = r.start_guest("victim");
        r.attach_disk(guest, kDev, "xvda", "/nonexistent", "w");
        be = xenbus::backend_dir(DomId(0), "vbd", guest, kDev);
        fe = xenbus::frontend_dir(guest, "vbd", kDev);
    }

    void publish_probe(const std::map<std::string, std::string>& extra = {}) {
        for (const auto& [k, v] : extra) {
            REQUIRE(rig.xs->write(be + "/" + k, v));
        }
        REQUIRE(rig.xs->write(be + "/state", "2"));
    }

    /// Waits for Initialised, maps the ring and binds the port.
    void attach_ring() {
        REQUIRE(rig.wait_value(fe + "/state", "3"));
        auto ref = xenbus::read_uint(*rig.xs, fe + "/ring-ref");
        auto port = xenbus::read_uint(*rig.xs, fe + "/event-channel");
        REQUIRE(ref);
        REQUIRE(port);
        auto& svc = rig.ts->services();
        auto m = svc.grants().map(guest, GrantRef(static_cast<std::uint32_t>(*ref)), false);
        REQUIRE(m);
        ring_page = std::move(*m);
        auto b = BackRing<BlkifProtocol>::attach(ring_page.page());
        REQUIRE(b);
        ring = *b;
        auto e = svc.evtchn().bind_interdomain(guest, EvtchnPort(static_cast<std::uint32_t>(*port)));
        REQUIRE(e);
        evt = std::move(*e);
    }

    void connect(std::map<std::string, std::string> props = {{"sectors", "8192"}, {"info", "0"},
                                                            {"sector-size", "512"},
                                                            {"feature-flush-cache", "1"},
                                                            {"feature-discard", "1"}}) {
        for (const auto& [k, v] : props) {
            REQUIRE(rig.xs->write(be + "/" + k, v));
        }
        REQUIRE(rig.xs->write(be + "/state", "4"));
    }

    /// Waits (bounded) for the next request on the ring.
    blkif_request take() {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            auto n = ring.unconsumed();
            REQUIRE(n);
            if (*n > 0) {
                auto req = ring.take_request();
                REQUIRE(req);
                return *req;
            }
            REQUIRE(std::chrono::steady_clock::now() < deadline);
            (void)evt.wait(100ms);
            evt.ack();
        }
    }

    void respond(std::uint64_t id, std::uint8_t op, std::int16_t status) {
        blkif_response r{};
        r.id = id;
        r.operation = op;
        r.status = status;
        ring.put_response(r);
        (void)ring.push_responses();
        REQUIRE(evt.notify());
    }

    NbdClient nbd() {
        auto c = NbdClient::connect_unix(rig.socket("xvda"), 10000);
        REQUIRE(c);
        REQUIRE(c->greet());
        REQUIRE(c->go(""));
        return std::move(*c);
    }

    /// The frontend gave up on the device: Closing, and an error node under its home.
    void expect_rejected() {
        CHECK(rig.wait_value(fe + "/state", "5"));
        auto err = rig.xs->read(xenbus::domain_path(guest) + "/error/device/vbd/" +
                                std::to_string(kDev) + "/error");
        REQUIRE(err);
        CHECK(err->rfind(std::to_string(EPROTO) + " ", 0) == 0);
    }

    Rig& rig;
    DomId guest{0};
    std::string be, fe;
    hvmin::GrantMapping ring_page;
    BackRing<BlkifProtocol> ring;
    hvmin::EventChannelBinding evt;
};

/// Brings the device to Connected and returns an NBD client with one READ of 4 KiB at sector 8
/// sent; `req` receives the ring request it became.
struct Connected {
    explicit Connected(Rig& r) : hb(r) {
        hb.publish_probe();
        hb.attach_ring();
        hb.connect();
        REQUIRE(hb.rig.wait_value(hb.fe + "/state", "4"));
        client.emplace(hb.nbd());
        REQUIRE(client->send_request(nbd::NBD_CMD_READ, 42, 4096, 4096));
        req = hb.take();
    }
    HostileBackend hb;
    std::optional<NbdClient> client;
    blkif_request req{};
};

}  // namespace

TEST_CASE("a well-behaved hand-made backend serves a read (the hostile rig works)", "[frontends][blkfront]") {
    Rig r({}, false);
    Connected c(r);
    CHECK(c.req.operation == BLKIF_OP_READ);
    CHECK(c.req.sector_number == 8);
    CHECK(c.req.nr_segments == 1);
    CHECK(c.req.seg[0].first_sect == 0);
    CHECK(c.req.seg[0].last_sect == 7);
    CHECK(r.xs->read(c.hb.fe + "/protocol").value_or("") == "x86_64-abi");
    CHECK_FALSE(r.xs->read(c.hb.fe + "/ring-page-order"));  // SPEC: sharp edge 5
    {
        auto m = r.ts->services().grants().map(c.hb.guest, GrantRef(c.req.seg[0].gref), false);
        REQUIRE(m);
        std::memset(m->data(), 0x5A, 4096);
    }  // unmapped before the response (sharp edge 8)
    c.hb.respond(c.req.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    auto rep = c.client->recv_reply(4096);
    REQUIRE(rep);
    CHECK(rep->error == 0);
    CHECK(rep->cookie == 42);
    CHECK(rep->data == std::vector<std::byte>(4096, std::byte{0x5A}));
}

TEST_CASE("responses that break the protocol kill the device and fail its I/O", "[frontends][blkfront][hostile]") {
    Rig r({}, false);
    Connected c(r);
    SECTION("an id that is not outstanding") {
        c.hb.respond(c.req.id + 7, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    }
    SECTION("an operation other than the request's") {
        c.hb.respond(c.req.id, BLKIF_OP_WRITE, BLKIF_RSP_OKAY);
    }
    SECTION("rsp_prod beyond the requests outstanding") {
        std::atomic_ref<RING_IDX>(c.hb.ring.shared().rsp_prod).store(50, std::memory_order_release);
        REQUIRE(c.hb.evt.notify());
    }
    SECTION("a grant still mapped when its response arrives") {
        auto m = r.ts->services().grants().map(c.hb.guest, GrantRef(c.req.seg[0].gref), false);
        REQUIRE(m);
        c.hb.respond(c.req.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
        c.hb.expect_rejected();
        auto rep = c.client->recv_reply(4096);
        REQUIRE(rep);
        CHECK(rep->error == nbd::NBD_EIO);
        return;
    }
    c.hb.expect_rejected();
    auto rep = c.client->recv_reply(4096);
    REQUIRE(rep);
    CHECK(rep->cookie == 42);
    CHECK(rep->error == nbd::NBD_EIO);
    CHECK(r.wait_gone(r.socket("xvda")));
}

TEST_CASE("a response repeated for a completed id is rejected and the I/O completes once", "[frontends][blkfront][hostile]") {
    Rig r({}, false);
    Connected c(r);
    REQUIRE(c.client->send_request(nbd::NBD_CMD_READ, 43, 0, 4096));
    const auto second = c.hb.take();
    REQUIRE(second.id != c.req.id);
    c.hb.respond(c.req.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    auto rep = c.client->recv_reply(4096);
    REQUIRE(rep);
    CHECK(rep->cookie == 42);
    CHECK(rep->error == 0);
    // The second request's slot answered with the first request's id (completed already).
    c.hb.respond(c.req.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    c.hb.expect_rejected();
    rep = c.client->recv_reply(4096);
    REQUIRE(rep);
    CHECK(rep->cookie == 43);
    CHECK(rep->error == nbd::NBD_EIO);
    CHECK(c.client->closed_by_peer());  // and no second reply for cookie 42
}

TEST_CASE("an error status fails only that I/O and EOPNOTSUPP on discard turns discard off", "[frontends][blkfront]") {
    Rig r({}, false);
    Connected c(r);
    c.hb.respond(c.req.id, BLKIF_OP_READ, BLKIF_RSP_ERROR);
    auto rep = c.client->recv_reply(4096);
    REQUIRE(rep);
    CHECK(rep->error == nbd::NBD_EIO);

    REQUIRE(c.client->send_request(nbd::NBD_CMD_TRIM, 43, 0, 4096));
    auto d = c.hb.take();
    const auto disc = blkif_view_as<blkif_request_discard>(d);
    CHECK(disc.operation == BLKIF_OP_DISCARD);
    CHECK(disc.sector_number == 0);
    CHECK(disc.nr_sectors == 8);
    c.hb.respond(disc.id, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP);
    rep = c.client->recv_reply(0);
    REQUIRE(rep);
    CHECK(rep->error == nbd::NBD_ENOTSUP);
    // The next trim is refused by the frontend itself: its reply comes with nothing answered.
    rep.reset();
    CHECK(c.client->trim(0, 4096) == static_cast<int>(nbd::NBD_ENOTSUP));
    CHECK(r.xs->read(c.hb.fe + "/state").value_or("") == "4");
}

TEST_CASE("bad device properties at Connected are rejected before any export", "[frontends][blkfront][hostile]") {
    Rig r({}, false);
    HostileBackend hb(r);
    hb.publish_probe();
    hb.attach_ring();
    std::map<std::string, std::string> props = {{"sectors", "8192"}, {"info", "0"}, {"sector-size", "512"}};
    SECTION("sector-size not a power of two") { props["sector-size"] = "1000"; }
    SECTION("sector-size below 512") { props["sector-size"] = "256"; }
    SECTION("sectors missing") { props.erase("sectors"); }
    SECTION("sectors not a number") { props["sectors"] = "lots"; }
    SECTION("sectors overflowing bytes") { props["sectors"] = "18446744073709551615"; }
    SECTION("info missing") { props.erase("info"); }
    hb.connect(props);
    hb.expect_rejected();
    CHECK_FALSE(std::filesystem::exists(r.socket("xvda")));
}

TEST_CASE("unparseable transport limits at InitWait are rejected", "[frontends][blkfront][hostile]") {
    Rig r({}, false);
    HostileBackend hb(r);
    SECTION("max-ring-page-order") { hb.publish_probe({{"max-ring-page-order", "four"}}); }
    SECTION("multi-queue-max-queues") { hb.publish_probe({{"multi-queue-max-queues", "-1"}}); }
    hb.expect_rejected();
}
