// Ring semantics: sizes, wrap-around at 2^32, notify decisions, final-check race closure,
// hold-off batching, hostile producer indices, copy-once.
#include "hv/rings/ring.hpp"

#include <catch2/catch.hpp>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/console.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/protocols/xs_wire.hpp"

using namespace hv::rings;

namespace {

struct PageBuf {
    explicit PageBuf(unsigned pages) : bytes(std::size_t{pages} * XEN_PAGE_SIZE) {
        p = static_cast<std::byte*>(std::aligned_alloc(XEN_PAGE_SIZE, bytes));
        std::memset(p, 0, bytes);
    }
    ~PageBuf() { std::free(p); }
    PageBuf(const PageBuf&) = delete;
    PageBuf& operator=(const PageBuf&) = delete;
    std::span<std::byte> span() { return {p, bytes}; }
    std::size_t bytes;
    std::byte* p;
};

/// Front and back of one ring in plain memory.
template <class P>
struct Pair {
    explicit Pair(unsigned pages = 1, RING_IDX start = 0) : mem(pages) {
        auto f = FrontRing<P>::init(mem.span(), start);
        REQUIRE(f);
        front = *f;
        auto b = BackRing<P>::attach(mem.span(), start);
        REQUIRE(b);
        back = *b;
    }
    PageBuf mem;
    FrontRing<P> front;
    BackRing<P> back;
};

netif_tx_request tx(std::uint16_t id) {
    netif_tx_request r{};
    r.id = id;
    r.size = static_cast<std::uint16_t>(id * 3);
    return r;
}

/// Back end takes every ready request and answers each with its own id.
template <class P>
unsigned echo_all(BackRing<P>& back) {
    auto n = back.unconsumed();
    REQUIRE(n);
    unsigned count = 0;
    while (auto req = back.take_request()) {
        netif_tx_response rsp{};
        rsp.id = req->id;
        back.put_response(rsp);
        ++count;
    }
    return count;
}

}  // namespace

TEST_CASE("ring memory must be 1 to 16 aligned whole pages", "[rings]") {
    PageBuf big(17);
    CHECK(FrontRing<BlkifProtocol>::init(big.span().first(XEN_PAGE_SIZE)));
    CHECK(FrontRing<BlkifProtocol>::init(big.span().first(16 * XEN_PAGE_SIZE)));
    CHECK(BackRing<BlkifProtocol>::attach(big.span().first(16 * XEN_PAGE_SIZE)));
    auto expect_bad = [](hv::Result<FrontRing<BlkifProtocol>> r) {
        REQUIRE_FALSE(r);
        CHECK(r.error() == Errc::bad_ring_size);
    };
    expect_bad(FrontRing<BlkifProtocol>::init(big.span().first(0)));
    expect_bad(FrontRing<BlkifProtocol>::init(big.span().first(XEN_PAGE_SIZE - 1)));
    expect_bad(FrontRing<BlkifProtocol>::init(big.span().first(XEN_PAGE_SIZE + 64)));
    expect_bad(FrontRing<BlkifProtocol>::init(big.span()));  // 17 pages
    expect_bad(FrontRing<BlkifProtocol>::init(big.span().subspan(2, XEN_PAGE_SIZE)));
    expect_bad(FrontRing<BlkifProtocol>::attach(std::span<std::byte>()));
    auto b = BackRing<NetifTxProtocol>::attach(big.span().subspan(1, XEN_PAGE_SIZE));
    REQUIRE_FALSE(b);
    CHECK(b.error() == Errc::bad_ring_size);
    CHECK(b.error().message().find("4 KiB") != std::string::npos);
    CHECK(std::string(b.error().category().name()) == "hv.rings");
}

TEST_CASE("a fresh ring is empty with both events armed at 1", "[rings]") {
    Pair<BlkifProtocol> r(4);
    CHECK(r.front.size() == 128);
    CHECK(r.front.free_requests() == 128);
    CHECK(r.mem.span().size() == 4 * XEN_PAGE_SIZE);
    CHECK(r.front.shared().req_event == 1);
    CHECK(r.front.shared().rsp_event == 1);
    CHECK(r.front.shared().req_prod == 0);
    auto n = r.back.unconsumed();
    REQUIRE(n);
    CHECK(*n == 0);
    CHECK_FALSE(r.back.take_request());
    auto m = r.front.unconsumed_responses();
    REQUIRE(m);
    CHECK(*m == 0);
    CHECK_FALSE(r.front.take_response());
}

TEST_CASE("the front end cannot queue more than the ring holds", "[rings]") {
    Pair<NetifTxProtocol> r;
    for (unsigned i = 0; i < 256; ++i) {
        r.front.put_request(tx(static_cast<std::uint16_t>(i)));
    }
    CHECK(r.front.full());
    CHECK(r.front.free_requests() == 0);
    CHECK(r.front.push_requests());
    CHECK(echo_all(r.back) == 256);
    CHECK(r.back.in_flight() == 0);
    (void)r.back.push_responses();
    CHECK(r.front.full());  // still full until responses are taken
    auto n = r.front.unconsumed_responses();
    REQUIRE(n);
    CHECK(*n == 256);
    unsigned got = 0;
    while (auto rsp = r.front.take_response()) {
        CHECK(rsp->id == got);
        ++got;
    }
    CHECK(got == 256);
    CHECK(r.front.free_requests() == 256);
}

TEST_CASE("indices wrap at 2^32 without losing or reordering requests", "[rings]") {
    const RING_IDX start = 0xFFFFFFF0u;
    Pair<NetifTxProtocol> r(1, start);
    std::uint16_t next_id = 0;
    std::uint16_t expect = 0;
    for (int round = 0; round < 8; ++round) {
        for (int i = 0; i < 100; ++i) {
            r.front.put_request(tx(next_id++));
        }
        (void)r.front.push_requests();
        auto n = r.back.unconsumed();
        REQUIRE(n);
        CHECK(*n == 100);
        while (auto req = r.back.take_request()) {
            CHECK(req->id == expect);
            CHECK(req->size == static_cast<std::uint16_t>(expect * 3));
            ++expect;
            netif_tx_response rsp{};
            rsp.id = req->id;
            r.back.put_response(rsp);
        }
        (void)r.back.push_responses();
        auto m = r.front.unconsumed_responses();
        REQUIRE(m);
        CHECK(*m == 100);
        while (r.front.take_response()) {
        }
    }
    CHECK(expect == 800);
    CHECK(r.front.req_prod_pvt() == static_cast<RING_IDX>(start + 800));
    CHECK(r.front.req_prod_pvt() < start);  // really crossed zero
    CHECK(r.back.req_cons() == r.front.req_prod_pvt());
}

TEST_CASE("batch takes copy what was seen, in order, across the wrap, and no further",
          "[rings]") {
    Pair<NetifTxProtocol> r(1, 0xFFFFFF80u);  // the batches below cross 2^32 and the slot array
    std::uint16_t next_id = 0;
    std::uint16_t expect = 0;
    std::array<netif_tx_request, 300> reqs{};
    std::array<netif_tx_response, 300> rsps{};
    for (int round = 0; round < 6; ++round) {
        for (int i = 0; i < 200; ++i) {
            r.front.put_request(tx(next_id++));
        }
        (void)r.front.push_requests();
        // Requests pushed after the back end looked are not taken by this batch.
        auto n = r.back.unconsumed();
        REQUIRE(n);
        REQUIRE(*n == 200);
        r.front.put_request(tx(next_id));
        (void)r.front.push_requests();
        CHECK(r.back.take_requests({reqs.data(), 150}) == 150);  // bounded by out.size()
        CHECK(r.back.take_requests(reqs) == 50);               // then by what was seen
        CHECK(r.back.take_requests(reqs) == 0);
        n = r.back.unconsumed();
        REQUIRE(n);
        CHECK(*n == 1);
        std::array<netif_tx_request, 1> last{};
        CHECK(r.back.take_requests(last) == 1);
        ++next_id;
        for (unsigned i = 0; i < 201; ++i) {
            r.back.put_response(netif_tx_response{static_cast<std::uint16_t>(expect + i), 0});
        }
        (void)r.back.push_responses();
        auto m = r.front.unconsumed_responses();
        REQUIRE(m);
        CHECK(*m == 201);
        CHECK(r.front.take_responses({rsps.data(), 100}) == 100);
        CHECK(r.front.take_responses(std::span(rsps).subspan(100)) == 101);
        CHECK(r.front.take_responses(rsps) == 0);
        for (unsigned i = 0; i < 201; ++i) {
            CHECK(rsps[i].id == static_cast<std::uint16_t>(expect + i));
        }
        expect = static_cast<std::uint16_t>(expect + 201);
    }
    CHECK(r.front.free_requests() == 256);
}

TEST_CASE("a batch take stops at a full ring of unanswered requests", "[rings][hostile]") {
    Pair<NetifTxProtocol> r;
    for (unsigned i = 0; i < 256; ++i) {
        r.front.put_request(tx(static_cast<std::uint16_t>(i)));
    }
    (void)r.front.push_requests();
    REQUIRE(r.back.unconsumed());
    std::array<netif_tx_request, 300> reqs{};
    CHECK(r.back.take_requests(reqs) == 256);
    CHECK(reqs[255].id == 255);
    // A hostile frontend moves req_prod on by a whole ring: refused, nothing more taken.
    r.back.shared().req_prod = 512;
    CHECK_FALSE(r.back.unconsumed());
    CHECK(r.back.take_requests(reqs) == 0);
}

TEST_CASE("attach with a non-zero start index continues an existing ring", "[rings]") {
    PageBuf mem(1);
    auto f = FrontRing<NetifTxProtocol>::init(mem.span(), 1000);
    REQUIRE(f);
    f->put_request(tx(7));
    CHECK(f->push_requests());  // req_event = 1001 lies in (1000, 1001]
    auto back_wrong = BackRing<NetifTxProtocol>::attach(mem.span(), 0);
    REQUIRE(back_wrong);
    auto bad = back_wrong->unconsumed();  // 1001 - 0 > 256: looks like overflow from index 0
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == Errc::producer_overflow);
    auto back = BackRing<NetifTxProtocol>::attach(mem.span(), 1000);
    REQUIRE(back);
    auto n = back->unconsumed();
    REQUIRE(n);
    CHECK(*n == 1);
    auto req = back->take_request();
    REQUIRE(req);
    CHECK(req->id == 7);
    // A second front attached at the same point sees the same outstanding window.
    auto f2 = FrontRing<NetifTxProtocol>::attach(mem.span(), 1000);
    REQUIRE(f2);
    CHECK(f2->free_requests() == 256);
}

TEST_CASE("push notifies exactly when the event index lies after old and at or before new",
          "[rings]") {
    Pair<NetifTxProtocol> r(1, 100);
    auto push_n = [&](unsigned n, RING_IDX event) {
        r.front.shared().req_event = event;
        for (unsigned i = 0; i < n; ++i) {
            r.front.put_request(tx(1));
        }
        const bool kick = r.front.push_requests();
        REQUIRE(echo_all(r.back) == n);
        (void)r.back.push_responses();
        REQUIRE(r.front.unconsumed_responses());
        while (r.front.take_response()) {
        }
        return kick;
    };
    // old = 100, new = 104
    CHECK_FALSE(push_n(4, 100));  // event == old: peer already kicked for it
    CHECK(push_n(4, 105));        // old = 104: event == old + 1
    CHECK(push_n(4, 112));        // event == new
    CHECK_FALSE(push_n(4, 117));  // event == new + 1: peer wants a later one
    CHECK_FALSE(push_n(4, 50));   // stale event far behind
    CHECK_FALSE(push_n(0, 121));  // nothing pushed, never notify
}

TEST_CASE("notify decisions hold across the 2^32 wrap", "[rings]") {
    Pair<NetifTxProtocol> r(1, 0xFFFFFFFEu);
    r.front.shared().req_event = 0;  // lies in (0xFFFFFFFE, 2]
    for (int i = 0; i < 4; ++i) {
        r.front.put_request(tx(1));
    }
    CHECK(r.front.push_requests());
    CHECK(echo_all(r.back) == 4);
    r.back.shared().rsp_event = 0xFFFFFFFFu;  // in (0xFFFFFFFE, 2]
    CHECK(r.back.push_responses());
}

TEST_CASE("the final check closes the race with a producer that saw a stale event", "[rings]") {
    Pair<NetifTxProtocol> r;
    // Back end drains and goes to sleep properly: event armed at cons + 1.
    auto more = r.back.final_check_for_requests();
    REQUIRE(more);
    CHECK_FALSE(*more);
    CHECK(r.back.shared().req_event == r.back.req_cons() + 1);
    r.front.put_request(tx(1));
    CHECK(r.front.push_requests());  // sleeping consumer gets a kick

    // Consumer takes it but has not yet re-armed (event still 1 == old): producer pushes in
    // this window and sends no kick ...
    CHECK(echo_all(r.back) == 1);
    r.front.put_request(tx(2));
    CHECK_FALSE(r.front.push_requests());
    // ... so the consumer's final check must find the request instead of sleeping.
    more = r.back.final_check_for_requests();
    REQUIRE(more);
    CHECK(*more);

    // Same on the response side.
    (void)r.back.push_responses();
    CHECK(echo_all(r.back) == 1);
    auto fm = r.front.final_check_for_responses();  // one response ready: do not sleep
    REQUIRE(fm);
    CHECK(*fm);
    while (r.front.take_response()) {
    }
    fm = r.front.final_check_for_responses();
    REQUIRE(fm);
    CHECK_FALSE(*fm);
    CHECK(r.front.shared().rsp_event == r.front.rsp_cons() + 1);
    CHECK(r.back.push_responses());  // the armed event asks for this kick
}

TEST_CASE("a custom hold-off asks for a kick only at the batch-th request", "[rings]") {
    Pair<NetifTxProtocol> r;
    auto more = r.back.final_check_for_requests(4);
    REQUIRE(more);
    CHECK_FALSE(*more);
    CHECK(r.back.shared().req_event == 4);
    for (int i = 0; i < 3; ++i) {
        r.front.put_request(tx(1));
        CHECK_FALSE(r.front.push_requests());
    }
    more = r.back.final_check_for_requests(4);  // 3 < 4: still sleep
    REQUIRE(more);
    CHECK_FALSE(*more);
    r.front.put_request(tx(1));
    CHECK(r.front.push_requests());  // 4th request crosses req_event
    more = r.back.final_check_for_requests(4);
    REQUIRE(more);
    CHECK(*more);
    CHECK(echo_all(r.back) == 4);
    auto fm = r.front.final_check_for_responses(2);
    REQUIRE(fm);
    CHECK_FALSE(*fm);
    CHECK(r.front.shared().rsp_event == 2);
}

TEST_CASE("a request index beyond the ring is a protocol error", "[rings][hostile]") {
    Pair<NetifTxProtocol> r;
    SECTION("exactly a full ring is fine") {
        r.back.shared().req_prod = 256;
        auto n = r.back.unconsumed();
        REQUIRE(n);
        CHECK(*n == 256);
    }
    SECTION("one past a full ring") {
        r.back.shared().req_prod = 257;
        auto n = r.back.unconsumed();
        REQUIRE_FALSE(n);
        CHECK(n.error() == Errc::producer_overflow);
        CHECK_FALSE(r.back.take_request());  // nothing was validated, nothing is taken
    }
    SECTION("far beyond, near the wrap") {
        r.back.shared().req_prod = 0x80000000u;
        auto n = r.back.unconsumed();
        REQUIRE_FALSE(n);
        CHECK(n.error() == Errc::producer_overflow);
    }
    SECTION("overflow counted from the oldest unanswered request") {
        for (int i = 0; i < 10; ++i) {
            r.front.put_request(tx(1));
        }
        (void)r.front.push_requests();
        REQUIRE(r.back.unconsumed());
        for (int i = 0; i < 10; ++i) {
            REQUIRE(r.back.take_request());
        }
        // 10 taken, none answered: only 246 more may exist.
        r.back.shared().req_prod = 10 + 247;
        auto n = r.back.unconsumed();
        REQUIRE_FALSE(n);
        CHECK(n.error() == Errc::producer_overflow);
        r.back.shared().req_prod = 10 + 246;
        n = r.back.unconsumed();
        REQUIRE(n);
        CHECK(*n == 246);
    }
    SECTION("the final check reports it too") {
        r.back.shared().req_prod = 1000;
        auto more = r.back.final_check_for_requests();
        REQUIRE_FALSE(more);
        CHECK(more.error() == Errc::producer_overflow);
    }
}

TEST_CASE("a request index moved backwards is a protocol error", "[rings][hostile]") {
    Pair<NetifTxProtocol> r;
    for (int i = 0; i < 5; ++i) {
        r.front.put_request(tx(1));
    }
    (void)r.front.push_requests();
    REQUIRE(r.back.unconsumed());
    for (int i = 0; i < 5; ++i) {
        REQUIRE(r.back.take_request());
    }
    r.back.shared().req_prod = 3;  // behind req_cons = 5
    auto n = r.back.unconsumed();
    REQUIRE_FALSE(n);
    CHECK(n.error() == Errc::producer_regressed);
    CHECK(n.error().message().find("backwards") != std::string::npos);
    CHECK_FALSE(r.back.take_request());
}

TEST_CASE("take_request never passes the producer index it validated", "[rings][hostile]") {
    Pair<NetifTxProtocol> r;
    for (int i = 0; i < 3; ++i) {
        r.front.put_request(tx(static_cast<std::uint16_t>(i)));
    }
    (void)r.front.push_requests();
    auto n = r.back.unconsumed();
    REQUIRE(n);
    REQUIRE(*n == 3);
    r.back.shared().req_prod = 200;  // raised after validation: not trusted until re-read
    int taken = 0;
    while (r.back.take_request()) {
        ++taken;
    }
    CHECK(taken == 3);
}

TEST_CASE("a response index beyond what was requested is a protocol error", "[rings][hostile]") {
    Pair<NetifTxProtocol> r;
    for (int i = 0; i < 4; ++i) {
        r.front.put_request(tx(1));
    }
    (void)r.front.push_requests();
    SECTION("more responses than outstanding requests") {
        r.front.shared().rsp_prod = 5;
        auto n = r.front.unconsumed_responses();
        REQUIRE_FALSE(n);
        CHECK(n.error() == Errc::producer_overflow);
        CHECK_FALSE(r.front.take_response());
        auto fm = r.front.final_check_for_responses();
        REQUIRE_FALSE(fm);
    }
    SECTION("more than a ring (RING_RESPONSE_PROD_OVERFLOW)") {
        r.front.shared().rsp_prod = 300;
        auto n = r.front.unconsumed_responses();
        REQUIRE_FALSE(n);
        CHECK(n.error() == Errc::producer_overflow);
    }
    SECTION("backwards") {
        r.front.shared().rsp_prod = 2;
        REQUIRE(r.front.unconsumed_responses());
        REQUIRE(r.front.take_response());
        REQUIRE(r.front.take_response());
        r.front.shared().rsp_prod = 1;
        auto n = r.front.unconsumed_responses();
        REQUIRE_FALSE(n);
        CHECK(n.error() == Errc::producer_regressed);
    }
    SECTION("exactly the outstanding count is fine") {
        r.front.shared().rsp_prod = 4;
        auto n = r.front.unconsumed_responses();
        REQUIRE(n);
        CHECK(*n == 4);
    }
}

TEST_CASE("a taken request is a private copy the peer can no longer change", "[rings][hostile]") {
    Pair<BlkifProtocol> r;
    blkif_request req{};
    req.operation = BLKIF_OP_READ;
    req.nr_segments = 1;
    req.id = 42;
    req.seg[0].last_sect = 7;
    r.front.put_request(req);
    (void)r.front.push_requests();
    REQUIRE(r.back.unconsumed());
    auto copy = r.back.take_request();
    REQUIRE(copy);
    // The hostile front rewrites the slot after the back end took it.
    auto* slot = reinterpret_cast<blkif_request*>(r.mem.p + sizeof(SringHeader));
    slot->nr_segments = 200;
    slot->seg[0].last_sect = 99;
    slot->id = 666;
    CHECK(copy->nr_segments == 1);
    CHECK(copy->seg[0].last_sect == 7);
    CHECK(copy->id == 42);
}

TEST_CASE("requests and responses can be built in place in their slots", "[rings]") {
    Pair<BlkifProtocol> r(2);
    CHECK(r.front.size() == 64);
    auto& slot = r.front.next_request();
    slot = blkif_request{};
    slot.operation = BLKIF_OP_DISCARD;
    slot.id = 9;
    r.front.commit_request();
    (void)r.front.push_requests();
    REQUIRE(r.back.unconsumed());
    auto req = r.back.take_request();
    REQUIRE(req);
    auto d = blkif_view_as<blkif_request_discard>(*req);
    CHECK(d.operation == BLKIF_OP_DISCARD);
    CHECK(d.id == 9);
    auto& rsp = r.back.next_response();
    rsp = blkif_response{};
    rsp.id = req->id;
    rsp.status = BLKIF_RSP_EOPNOTSUPP;
    r.back.commit_response();
    CHECK(r.back.push_responses());
    REQUIRE(r.front.unconsumed_responses());
    auto got = r.front.take_response();
    REQUIRE(got);
    CHECK(got->id == 9);
    CHECK(got->status == BLKIF_RSP_EOPNOTSUPP);
}

TEST_CASE("publish without a notify check still makes requests visible", "[rings]") {
    Pair<NetifTxProtocol> r;
    r.front.put_request(tx(3));
    r.front.publish_requests();
    CHECK(r.front.shared().req_prod == 1);
    CHECK(echo_all(r.back) == 1);
    r.back.publish_responses();
    auto n = r.front.unconsumed_responses();
    REQUIRE(n);
    CHECK(*n == 1);
}

TEST_CASE("an x86_32 blkif ring carries 108-byte requests with id at offset 4", "[rings]") {
    Pair<BlkifX86_32Protocol> r(16);
    CHECK(r.front.size() == 512);
    for (std::uint64_t i = 0; i < 600; ++i) {  // wraps the 512-slot ring
        blkif_x86_32_request req{};
        req.operation = BLKIF_OP_WRITE;
        req.id = 0x1122334455667700ULL + i;
        req.sector_number = i;
        r.front.put_request(req);
        (void)r.front.push_requests();
        REQUIRE(r.back.unconsumed());
        auto got = r.back.take_request();
        REQUIRE(got);
        // Packed (4-aligned) 64-bit fields: read by value, never bind a reference to them.
        const std::uint64_t got_id = got->id;
        const std::uint64_t got_sector = got->sector_number;
        const std::uint64_t want_id = req.id;
        CHECK(got_id == want_id);
        CHECK(got_sector == i);
        // The raw slot bytes hold the id at offset 4 (x86_32), not 8 (x86_64).
        const std::byte* slot =
            r.mem.p + sizeof(SringHeader) + (i % 512) * sizeof(blkif_x86_32_request);
        std::uint64_t raw_id;
        std::memcpy(&raw_id, slot + 4, sizeof raw_id);
        CHECK(raw_id == want_id);
        blkif_x86_32_response rsp{};
        rsp.id = got->id;
        rsp.operation = got->operation;
        rsp.status = BLKIF_RSP_OKAY;
        r.back.put_response(rsp);
        (void)r.back.push_responses();
        REQUIRE(r.front.unconsumed_responses());
        auto back_rsp = r.front.take_response();
        REQUIRE(back_rsp);
        const std::uint64_t rsp_id = back_rsp->id;
        CHECK(rsp_id == want_id);
    }
}

TEST_CASE("byte-ring index masks stay inside their buffers", "[rings]") {
    xencons_interface cons{};
    CHECK(MASK_XENCONS_IDX(1024, cons.in) == 0);
    CHECK(MASK_XENCONS_IDX(1023, cons.in) == 1023);
    CHECK(MASK_XENCONS_IDX(0xFFFFFFFFu, cons.out) == 2047);
    CHECK(MASK_XENCONS_IDX(2048, cons.out) == 0);
    CHECK(MASK_XENSTORE_IDX(0xFFFFFFFFu) == 1023);
    CHECK(MASK_XENSTORE_IDX(1024) == 0);
}
