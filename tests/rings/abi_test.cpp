// [abi] at run time: what a static_assert cannot check against Xen (its xsd_errors[] table, the
// behaviour of its ring macros; xen_oracle.cpp), plus the numbers of xen-abi.md for what Debian's
// Xen 4.17 lacks. Every size, offset and constant is checked at compile time in
// abi_static_check.cpp.
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "conversation.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/console.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/protocols/pciif.hpp"
#include "hv/rings/protocols/xs_wire.hpp"
#include "hv/rings/ring.hpp"
#include "hv/rings/xen/event_channel.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hv/rings/xenbus.hpp"
#include "xen_oracle.hpp"

using namespace hv::rings;

TEST_CASE("the xenstore error table equals Xen's xsd_errors in order", "[rings][abi]") {
    const auto xen = hv::test::xen::xsd_errors();
    REQUIRE(xen.size() == xsd_error_table.size());
    for (std::size_t i = 0; i < xen.size(); ++i) {
        CHECK(xsd_error_table[i].errnum == xen[i].first);
        CHECK(std::string(xsd_error_table[i].errstring) == xen[i].second);
        CHECK(xsd_error_name(xen[i].first) == xen[i].second);
        CHECK(xsd_errno_from_name(xen[i].second) == xen[i].first);
    }
    CHECK(xsd_error_name(EXDEV) == "EINVAL");
    CHECK_FALSE(xsd_errno_from_name("EXDEV").has_value());
    CHECK_FALSE(xsd_errno_from_name("").has_value());
}

TEST_CASE("xenbus states parse like Linux's xenbus_read_driver_state", "[rings][abi]") {
    CHECK(parse_xenbus_state("4") == XenbusStateConnected);
    CHECK(parse_xenbus_state("8") == XenbusStateReconfigured);
    CHECK(parse_xenbus_state("0") == XenbusStateUnknown);
    CHECK(parse_xenbus_state("") == XenbusStateUnknown);
    CHECK(parse_xenbus_state("9") == XenbusStateUnknown);
    CHECK(parse_xenbus_state("-1") == XenbusStateUnknown);
    CHECK(parse_xenbus_state("4x") == XenbusStateUnknown);
    CHECK(parse_xenbus_state("99999999999999") == XenbusStateUnknown);
    CHECK(to_string(XenbusStateInitWait) == "InitWait");
    CHECK(to_string(static_cast<XenbusState>(42)) == "Invalid");
}

namespace {

/// The conversation of xen_oracle.cpp, written with FrontRing/BackRing.
template <class P, class Fill, class Answer>
std::vector<long long> our_conversation(std::span<std::byte> mem, RING_IDX start,
                                        std::span<const unsigned> rounds, Fill fill,
                                        Answer answer) {
    using hv::test::conv::back_final_checks;
    using hv::test::conv::front_final_checks;
    std::vector<long long> log;
    auto front = FrontRing<P>::init(mem, start);
    REQUIRE(front);
    auto back = BackRing<P>::attach(mem, start);
    REQUIRE(back);
    log.push_back(front->size());
    std::uint32_t seq = 0;
    for (unsigned k = 0; k < rounds.size(); ++k) {
        for (unsigned j = 0; j < rounds[k] && !front->full(); ++j) {
            typename P::request r;
            fill(r, seq++);
            front->put_request(r);
        }
        log.push_back(front->push_requests() ? 1 : 0);

        long long taken = 0;
        for (;;) {
            auto n = back->unconsumed();
            REQUIRE(n);
            while (auto req = back->take_request()) {
                typename P::response rsp;
                answer(rsp, *req);
                back->put_response(rsp);
                ++taken;
            }
            if (!back_final_checks(k)) {
                break;
            }
            auto more = back->final_check_for_requests();
            REQUIRE(more);
            if (!*more) {
                break;
            }
        }
        log.push_back(taken);
        log.push_back(back->push_responses() ? 1 : 0);

        long long got = 0;
        long long sum = 0;
        for (;;) {
            auto n = front->unconsumed_responses();
            REQUIRE(n);
            while (auto rsp = front->take_response()) {
                ++got;
                sum += static_cast<long long>(rsp->id % 1000) + rsp->status;
            }
            if (!front_final_checks(k)) {
                break;
            }
            auto more = front->final_check_for_responses();
            REQUIRE(more);
            if (!*more) {
                break;
            }
        }
        log.push_back(got);
        log.push_back(sum);
    }
    return log;
}

std::vector<unsigned> random_rounds(std::uint32_t seed, unsigned count, unsigned max) {
    std::mt19937 rng(seed);
    std::vector<unsigned> r(count);
    for (auto& v : r) {
        v = static_cast<unsigned>(rng() % (max + 1));
    }
    return r;
}

struct Pages {
    explicit Pages(unsigned n) : bytes(std::size_t{n} * XEN_PAGE_SIZE) {
        ours = static_cast<std::byte*>(std::aligned_alloc(XEN_PAGE_SIZE, bytes));
        xens = static_cast<std::byte*>(std::aligned_alloc(XEN_PAGE_SIZE, bytes));
        std::memset(ours, 0xA5, bytes);  // same garbage on both: init must not depend on it
        std::memset(xens, 0xA5, bytes);
    }
    ~Pages() {
        std::free(ours);
        std::free(xens);
    }
    Pages(const Pages&) = delete;
    Pages& operator=(const Pages&) = delete;
    std::span<std::byte> our_span() { return {ours, bytes}; }
    std::span<std::byte> xen_span() { return {xens, bytes}; }
    bool same() const { return std::memcmp(ours, xens, bytes) == 0; }
    std::size_t bytes;
    std::byte* ours;
    std::byte* xens;
};

}  // namespace

TEST_CASE("blkif rings leave the same bytes and decisions as Xen's ring macros", "[rings][abi]") {
    const std::uint32_t seed = 20261202;
    const unsigned npages = GENERATE(1u, 2u, 4u, 16u);
    const RING_IDX start = GENERATE(0u, 0xFFFFFF00u, 12345u);
    INFO("seed " << seed << " pages " << npages << " start " << start);
    Pages p(npages);
    const unsigned size = ring_entries_for_pages<BlkifProtocol>(npages);
    const auto rounds = random_rounds(seed + npages, 60, size + 3);
    const auto xen = hv::test::xen::blkif_conversation(p.xen_span(), start, rounds);
    const auto ours = our_conversation<BlkifProtocol>(
        p.our_span(), start, rounds,
        [](blkif_request& r, std::uint32_t i) { hv::test::conv::fill_blkif_request(r, i); },
        [](blkif_response& rsp, const blkif_request& req) {
            hv::test::conv::blkif_response_for(rsp, req);
        });
    CHECK(ours == xen);
    CHECK(p.same());
    // The conversation must have exercised both notify outcomes.
    bool saw_kick = false;
    for (std::size_t i = 1; i < xen.size(); i += 5) {
        saw_kick = saw_kick || xen[i] == 1;
    }
    CHECK(saw_kick);
}

TEST_CASE("netif tx rings leave the same bytes and decisions as Xen's ring macros",
          "[rings][abi]") {
    const std::uint32_t seed = 777;
    const RING_IDX start = GENERATE(0u, 0xFFFFFFF0u);
    INFO("seed " << seed << " start " << start);
    Pages p(1);
    const auto rounds = random_rounds(seed, 200, 300);
    const auto xen = hv::test::xen::netif_tx_conversation(p.xen_span(), start, rounds);
    const auto ours = our_conversation<NetifTxProtocol>(
        p.our_span(), start, rounds,
        [](netif_tx_request& r, std::uint32_t i) { hv::test::conv::fill_netif_tx_request(r, i); },
        [](netif_tx_response& rsp, const netif_tx_request& req) {
            hv::test::conv::netif_tx_response_for(rsp, req);
        });
    CHECK(ours == xen);
    CHECK(p.same());
}
