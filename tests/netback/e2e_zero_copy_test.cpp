// netback end to end, netfront's zero-copy interface (what hv-guest's NICs use): frames read
// straight into lent tx pages (tx_pages / send_pages) and received packets lent as the slots of
// their rx pages (Options::lend_slots), with the loop engine echoing each frame back.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>

#include "e2e_harness.hpp"
#include "hv/rings/netif_l4.hpp"

namespace hv::net::test {
namespace {

using netfront::Offload;
using netfront::Packet;
namespace wire = hv::rings;

/// Writes `frame` into the pages lent by tx_pages(): page f holds bytes [f*4096, (f+1)*4096).
void fill(std::span<const iovec> pages, const std::vector<std::byte>& frame) {
    for (std::size_t at = 0, f = 0; at < frame.size(); at += 4096, ++f) {
        REQUIRE(f < pages.size());
        REQUIRE(pages[f].iov_len == 4096);
        std::memcpy(pages[f].iov_base, frame.data() + at, std::min<std::size_t>(4096, frame.size() - at));
    }
}

/// One lent packet as it was seen in the callback: its parts joined, and the view's shape.
struct Seen {
    std::vector<std::byte> bytes;
    std::size_t parts = 0;
    bool data_empty = false;
    Offload off;
};

/// Sends `frame` through lent pages and waits for it to come back, lent.
Seen echo_lent(Vif& v, const std::vector<std::byte>& frame, const Offload& off = {}) {
    auto pages = v.nf->tx_pages(0, 65536);
    REQUIRE(pages);
    CHECK(pages->size() == 16);
    fill(*pages, frame);
    REQUIRE(v.nf->send_pages(0, frame.size(), off));
    std::vector<Seen> got;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (got.empty() && std::chrono::steady_clock::now() < deadline) {
        v.nf->poll_each([&](const netfront::PacketView& p) {
            Seen s;
            for (const iovec& part : p.parts) {
                const auto* b = static_cast<const std::byte*>(part.iov_base);
                s.bytes.insert(s.bytes.end(), b, b + part.iov_len);
            }
            s.parts = p.parts.size();
            s.data_empty = p.data.empty();
            s.off = p.offload;
            if (!p.data.empty()) {
                CHECK(std::equal(p.data.begin(), p.data.end(), s.bytes.begin(), s.bytes.end()));
            }
            got.push_back(std::move(s));
        });
        std::this_thread::sleep_for(1ms);
    }
    REQUIRE(got.size() == 1);
    return got[0];
}

netfront::Options lending() {
    netfront::Options o;
    o.lend_slots = true;
    return o;
}

/// A loop backend taking no IPv6 partial checksums (nor TSO6): netfront completes them.
BackendOptions no_csum6() {
    BackendOptions bo = Env::loop_options();
    bo.tx_offers.csum6 = false;
    bo.tx_offers.gso_tcpv6 = false;
    return bo;
}

}  // namespace

TEST_CASE("frames in lent tx pages go out whole, and multi-slot packets come back lent as their "
          "rx slots", "[netback][e2e][zerocopy]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, lending());
    for (std::size_t len : {14U, 60U, 4096U, 4097U, 20000U, 65535U}) {
        const auto f = raw_frame(len, static_cast<std::uint32_t>(len));
        const Seen s = echo_lent(v, f);
        CHECK(s.bytes == f);
        CHECK(s.parts == (len + 4095) / 4096);
        CHECK(s.data_empty == (len > 4096));  // one slot is lent as data too
    }
    // A 64 KiB TSO frame: its checksum place is found in the first slot.
    const auto f = tcp4_frame(65535, 3);
    const Seen s = echo_lent(v, f, Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448});
    CHECK(s.bytes == f);
    CHECK(s.data_empty);
    CHECK(s.off.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4);
    CHECK(s.off.gso_size == 1448);
    CHECK(s.off.csum_start == 14 + 20);
    CHECK(s.off.csum_offset == 16);
    // poll(out) still hands whole packets to a lending device.
    REQUIRE(v.nf->send(0, f, Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448}));
    std::vector<Packet> got;
    REQUIRE(v.nf->receive(got, 1, 5s) == 1);
    CHECK(got[0].data == f);
    CHECK(v.nf->counters().tx_errors == 0);
    CHECK(v.nf->tx_outstanding() == 0);
}

TEST_CASE("a checksum the backend does not take is completed in the lent pages",
          "[netback][e2e][zerocopy][offload]") {
    Env env(no_csum6());
    Guest g(env, "g1");
    Vif v(env, g, 0, lending());
    const auto f6 = tcp6_frame(9000, 5);  // 3 pages: the sum runs over all of them
    const Seen s = echo_lent(v, f6, Offload{true, false, 0, 0});
    CHECK_FALSE(s.off.csum_blank);
    CHECK(s.off.data_validated);
    CHECK(tcp6_checksum_completed(s.bytes, f6));
    // An odd-length frame: the last page's odd byte is summed padded, as in one piece.
    const auto odd = tcp6_frame(5001, 6);
    CHECK(tcp6_checksum_completed(echo_lent(v, odd, Offload{true, false, 0, 0}).bytes, odd));
}

TEST_CASE("tx_pages and send_pages refuse what send refuses and misuse, and give the pages back",
          "[netback][e2e][zerocopy][hostile]") {
    Env env(no_csum6());
    Guest g(env, "g1");
    Vif v(env, g, 0, lending());
    const auto einval = std::make_error_code(std::errc::invalid_argument);
    const auto bad = netfront::make_error_code(netfront::Errc::bad_packet);
    CHECK(v.nf->tx_pages(0, 0).error() == einval);
    CHECK(v.nf->tx_pages(0, 65537).error() == einval);
    CHECK(v.nf->tx_pages(7, 100).error() == netfront::make_error_code(netfront::Errc::not_connected));
    CHECK(v.nf->send_pages(0, 60).error() == einval);  // no lease
    auto pages = v.nf->tx_pages(0, 5000);
    REQUIRE(pages);
    REQUIRE(pages->size() == 2);
    const void* first = (*pages)[0].iov_base;
    // Asked again, the same lease; lent pages are not outstanding at the backend.
    auto again = v.nf->tx_pages(0, 100);
    REQUIRE(again);
    CHECK(again->size() == 2);
    CHECK((*again)[0].iov_base == first);
    CHECK(v.nf->tx_outstanding() == 0);
    CHECK(v.nf->send_pages(0, 8193).error() == einval);  // beyond the lease: kept
    CHECK(v.nf->send_pages(0, 13).error() == bad);       // shorter than Ethernet: lease ends
    CHECK(v.nf->send_pages(0, 60).error() == einval);
    // A GSO type the backend did not offer, and a partial checksum netfront must complete on a
    // frame without a TCP/UDP header in its first page: refused, nothing sent.
    pages = v.nf->tx_pages(0, 65536);
    REQUIRE(pages);
    fill(*pages, tcp6_frame(20000, 1));
    CHECK(v.nf->send_pages(0, 20000, Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV6, 1428})
              .error() == bad);
    pages = v.nf->tx_pages(0, 65536);
    REQUIRE(pages);
    auto junk = raw_frame(200, 2);
    junk[12] = std::byte{0x86};  // IPv6 ethertype, but the IPv6 header is cut short
    junk[13] = std::byte{0xdd};
    junk.resize(40);
    fill(*pages, junk);
    CHECK(v.nf->send_pages(0, junk.size(), Offload{true, false, 0, 0}).error() == bad);
    CHECK(v.nf->counters().tx_packets == 0);
    CHECK(v.nf->tx_outstanding() == 0);
    // Every page came back: a whole ring of leases and sends still works.
    for (int i = 0; i < 300; ++i) {
        const auto f = raw_frame(6000, static_cast<std::uint32_t>(i));
        const Seen s = echo_lent(v, f);
        REQUIRE(s.bytes == f);
    }
}

}  // namespace hv::net::test
