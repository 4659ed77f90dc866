// Rx side: slots a packet needs and the layout of its responses (xen-abi.md §6.4).
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "netback/engine.hpp"
#include "netback/tx_parse.hpp"

namespace {

using namespace hv::net;
namespace w = hv::rings;

std::vector<w::netif_rx_request> requests(unsigned n) {
    std::vector<w::netif_rx_request> v(n);
    for (unsigned i = 0; i < n; ++i) {
        v[i].id = static_cast<std::uint16_t>(i + 10);
        v[i].gref = 500 + i;
    }
    return v;
}

RxFrontend gso_frontend() {
    RxFrontend fe;
    fe.gso_tcpv4 = true;
    fe.gso_tcpv6 = true;
    return fe;
}

}  // namespace

TEST_CASE("a packet needs one rx slot per started page", "[netback][rx]") {
    const RxFrontend fe;
    RxPacketInfo p;
    p.len = 1;
    CHECK(*rx_slots_needed(p, fe) == 1);
    p.len = 4096;
    CHECK(*rx_slots_needed(p, fe) == 1);
    p.len = 4097;
    CHECK(*rx_slots_needed(p, fe) == 2);
    p.len = max_gso_frame_bytes;
    CHECK(*rx_slots_needed(p, fe) == 17);
}

TEST_CASE("a GSO extra and a hash extra take one rx slot each", "[netback][rx]") {
    RxPacketInfo p;
    p.len = 9000;
    p.gso_type = w::XEN_NETIF_GSO_TYPE_TCPV4;
    p.gso_size = 1448;
    CHECK(*rx_slots_needed(p, gso_frontend()) == 4);
    p.has_hash = true;
    CHECK(*rx_slots_needed(p, gso_frontend()) == 5);
}

TEST_CASE("a frontend without feature-sg gets only one-slot packets", "[netback][rx]") {
    RxFrontend fe;
    fe.sg = false;
    RxPacketInfo p;
    p.len = 1514;
    CHECK(rx_slots_needed(p, fe).has_value());
    p.len = 5000;
    CHECK(rx_slots_needed(p, fe).error() == Errc::frame_too_big);
}

TEST_CASE("GSO of a type the frontend did not advertise is refused", "[netback][rx]") {
    RxFrontend fe;
    fe.gso_tcpv4 = true;
    RxPacketInfo p;
    p.len = 9000;
    p.gso_size = 1448;
    p.gso_type = w::XEN_NETIF_GSO_TYPE_TCPV6;
    CHECK(rx_slots_needed(p, fe).error() == Errc::frame_too_big);
    p.gso_type = 9;
    CHECK(rx_slots_needed(p, fe).error() == Errc::bad_offload);
    p.gso_type = w::XEN_NETIF_GSO_TYPE_TCPV4;
    p.gso_size = 0;
    CHECK(rx_slots_needed(p, fe).error() == Errc::frame_too_big);
}

TEST_CASE("an empty or oversized rx packet is refused", "[netback][rx]") {
    RxPacketInfo p;
    p.len = 0;
    CHECK(rx_slots_needed(p, RxFrontend{}).error() == Errc::frame_too_big);
    p.len = max_gso_frame_bytes + 1;
    CHECK(rx_slots_needed(p, RxFrontend{}).error() == Errc::frame_too_big);
    RxFrontend small;
    small.max_slots = 2;
    p.len = 3 * 4096;
    CHECK(rx_slots_needed(p, small).error() == Errc::frame_too_big);
}

TEST_CASE("rx responses put extras right after the first data slot", "[netback][rx]") {
    RxPacketInfo p;
    p.len = 10000;
    p.csum_blank = true;
    p.gso_type = w::XEN_NETIF_GSO_TYPE_TCPV4;
    p.gso_size = 1448;
    p.has_hash = true;
    p.hash_type = w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
    p.hash_value = 0xA1B2C3D4;
    const auto reqs = requests(8);
    std::vector<RxSlot> out(8);
    auto n = build_rx_slots(p, gso_frontend(), reqs, out);
    REQUIRE(n.has_value());
    REQUIRE(*n == 5);

    CHECK_FALSE(out[0].extra);
    CHECK(out[0].rsp.id == 10);
    CHECK(out[0].gref == 500);
    CHECK(out[0].rsp.status == 4096);
    CHECK(out[0].rsp.flags == (w::NETRXF_csum_blank | w::NETRXF_data_validated |
                               w::NETRXF_extra_info | w::NETRXF_more_data));

    w::netif_extra_info e{};
    REQUIRE(out[1].extra);
    std::memcpy(&e, &out[1].rsp, sizeof e);
    CHECK(e.type == w::XEN_NETIF_EXTRA_TYPE_GSO);
    CHECK(e.flags == w::XEN_NETIF_EXTRA_FLAG_MORE);
    CHECK(e.u.gso.size == 1448);
    CHECK(e.u.gso.type == w::XEN_NETIF_GSO_TYPE_TCPV4);
    REQUIRE(out[2].extra);
    std::memcpy(&e, &out[2].rsp, sizeof e);
    CHECK(e.type == w::XEN_NETIF_EXTRA_TYPE_HASH);
    CHECK(e.flags == 0);
    CHECK(e.u.hash.value[0] == 0xD4);
    CHECK(e.u.hash.value[3] == 0xA1);

    CHECK(out[3].rsp.id == 13);
    CHECK(out[3].gref == 503);
    CHECK(out[3].src_offset == 4096);
    CHECK(out[3].rsp.flags == w::NETRXF_more_data);
    CHECK(out[4].rsp.status == 10000 - 2 * 4096);
    CHECK(out[4].rsp.flags == 0);
    CHECK(out[4].src_offset == 8192);
    int sum = 0;
    for (unsigned i = 0; i < *n; ++i) {
        if (!out[i].extra) {
            sum += out[i].rsp.status;
            CHECK(out[i].copy_len == out[i].rsp.status);
            CHECK(out[i].rsp.offset == 0);
        }
    }
    CHECK(sum == 10000);
}

TEST_CASE("a verified packet carries data_validated only", "[netback][rx]") {
    RxPacketInfo p;
    p.len = 60;
    p.data_validated = true;
    const auto reqs = requests(1);
    std::vector<RxSlot> out(1);
    REQUIRE(*build_rx_slots(p, RxFrontend{}, reqs, out) == 1);
    CHECK(out[0].rsp.flags == w::NETRXF_data_validated);
    CHECK(out[0].rsp.status == 60);
}

TEST_CASE("too few posted rx requests means wait, nothing planned", "[netback][rx]") {
    RxPacketInfo p;
    p.len = 9000;
    const auto reqs = requests(2);
    std::vector<RxSlot> out(4);
    CHECK(build_rx_slots(p, RxFrontend{}, reqs, out).error() == Errc::busy);
    const auto enough = requests(3);
    std::vector<RxSlot> small(2);
    CHECK(build_rx_slots(p, RxFrontend{}, enough, small).error() == Errc::busy);
}

TEST_CASE("an xdp-headroom puts the first slot's data at that offset and leaves it less room",
          "[netback][rx][xdp]") {
    RxFrontend fe;
    fe.headroom = 256;
    RxPacketInfo p;
    p.len = 4096 - 256;
    CHECK(*rx_slots_needed(p, fe) == 1);
    p.len = 4096 - 255;  // one byte more than the first slot holds
    CHECK(*rx_slots_needed(p, fe) == 2);
    p.len = 9000;
    REQUIRE(*rx_slots_needed(p, fe) == 3);
    const auto reqs = requests(3);
    std::vector<RxSlot> out(3);
    REQUIRE(*build_rx_slots(p, fe, reqs, out) == 3);
    CHECK(out[0].rsp.offset == 256);
    CHECK(out[0].rsp.status == 4096 - 256);
    CHECK(out[0].copy_len == 4096 - 256);
    CHECK(out[0].src_offset == 0);
    // Only the first slot: the others start at 0 and take whole pages.
    CHECK(out[1].rsp.offset == 0);
    CHECK(out[1].src_offset == 4096 - 256);
    CHECK(out[1].rsp.status == 4096);
    CHECK(out[2].rsp.offset == 0);
    CHECK(out[2].src_offset == 2 * 4096 - 256);
    CHECK(out[2].rsp.status == 9000 - (2 * 4096 - 256));
    CHECK((out[1].rsp.flags & w::NETRXF_more_data) != 0);
    CHECK((out[2].rsp.flags & w::NETRXF_more_data) == 0);
    // Without sg a packet must fit the first slot after the headroom.
    fe.sg = false;
    p.len = 4096 - 256;
    CHECK(*rx_slots_needed(p, fe) == 1);
    p.len = 4096 - 255;
    CHECK(rx_slots_needed(p, fe).error() == Errc::frame_too_big);
}

TEST_CASE("an xdp-headroom with a GSO extra: the extra still follows the first data slot",
          "[netback][rx][xdp]") {
    RxFrontend fe = gso_frontend();
    fe.headroom = 512;
    RxPacketInfo p;
    p.len = max_gso_frame_bytes;
    p.gso_type = w::XEN_NETIF_GSO_TYPE_TCPV4;
    p.gso_size = 1448;
    // 65549 + 512 bytes of pages: 17 data slots, and the extra.
    REQUIRE(*rx_slots_needed(p, fe) == 18);
    const auto reqs = requests(18);
    std::vector<RxSlot> out(18);
    REQUIRE(*build_rx_slots(p, fe, reqs, out) == 18);
    CHECK(out[0].rsp.offset == 512);
    CHECK(out[0].copy_len == 4096 - 512);
    CHECK(out[1].extra);
    std::size_t total = 0;
    for (const RxSlot& s : out) {
        if (!s.extra) {
            CHECK(std::size_t{s.rsp.offset} + s.copy_len <= 4096);
            total += s.copy_len;
        }
    }
    CHECK(total == max_gso_frame_bytes);
}

TEST_CASE("a headroom that leaves no room in the first slot refuses every packet",
          "[netback][rx][xdp][hostile]") {
    RxFrontend fe;
    RxPacketInfo p;
    p.len = 60;
    fe.headroom = 4095;
    CHECK(*rx_slots_needed(p, fe) == 2);  // one byte in the first page, the rest in the next
    for (std::uint16_t h : {std::uint16_t{4096}, std::uint16_t{w::XEN_NETIF_MAX_XDP_HEADROOM}}) {
        fe.headroom = h;
        CHECK(rx_slots_needed(p, fe).error() == Errc::frame_too_big);
    }
}
