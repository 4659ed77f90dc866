// tx_offload_header(): netif checksum/GSO flags + the packet's own headers -> virtio-net header,
// Linux checksum_setup's rules; every rejection is a [hostile] case.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "frames.hpp"
#include "hv/rings/netif_l4.hpp"
#include "netback/tx_parse.hpp"

namespace {

using namespace hv::net;
using namespace hv::test::net;
namespace w = hv::rings;

TxPacket meta(std::uint16_t flags, std::uint8_t gso = w::XEN_NETIF_GSO_TYPE_NONE,
              std::uint16_t mss = 0) {
    TxPacket p;
    p.verdict = TxVerdict::forward;
    p.flags = flags;
    p.gso_type = gso;
    p.gso_size = mss;
    return p;
}

Bytes tcp4(std::size_t payload = 100) {
    TcpSpec t;
    t.s = ip4("10.0.0.1");
    t.d = ip4("10.0.0.2");
    t.sport = 1;
    t.dport = 2;
    t.flags = tcpf::ACK;
    std::vector<std::uint8_t> pl(payload, 0x5a);
    return tcp_frame(t, pl, true);
}

/// Ethernet + IPv6 (+ extension headers) + a transport header of `l4_len` bytes.
Bytes ip6(std::uint8_t first_next, const std::vector<std::vector<std::uint8_t>>& ext,
          std::uint8_t l4_proto, std::size_t l4_len) {
    Bytes f(14 + 40, 0);
    f[12] = 0x86;
    f[13] = 0xdd;
    f[14] = 0x60;
    f[14 + 6] = first_next;
    f[14 + 7] = 64;
    f[14 + 8] = 0xfe;  // source fe80::1, destination fe80::2
    f[14 + 8 + 15] = 1;
    f[14 + 24] = 0xfe;
    f[14 + 24 + 15] = 2;
    for (const auto& e : ext) {
        f.insert(f.end(), e.begin(), e.end());
    }
    (void)l4_proto;
    f.resize(f.size() + l4_len, 0);
    if (l4_len >= 13) {
        f[f.size() - l4_len + 12] = 0x50;  // TCP data offset 5
    }
    const std::size_t plen = f.size() - 54;
    f[14 + 4] = static_cast<std::uint8_t>(plen >> 8);
    f[14 + 5] = static_cast<std::uint8_t>(plen);
    return f;
}

std::vector<std::uint8_t> ext_hdr(std::uint8_t next, std::uint8_t len8 = 0) {
    std::vector<std::uint8_t> e((len8 + 1) * 8u, 0);
    e[0] = next;
    e[1] = len8;
    return e;
}

}  // namespace

TEST_CASE("a packet without csum_blank or GSO needs no offload", "[netback][offload]") {
    auto f = tcp4();
    auto h = tx_offload_header(meta(0), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->flags == 0);
    h = tx_offload_header(meta(w::NETTXF_data_validated), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->flags == VnetHdr::F_DATA_VALID);
    CHECK(h->gso_type == VnetHdr::GSO_NONE);
}

TEST_CASE("csum_blank on IPv4 TCP points the offload at the TCP checksum", "[netback][offload]") {
    auto f = tcp4();
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->flags == VnetHdr::F_NEEDS_CSUM);
    CHECK(h->csum_start == 34);
    CHECK(h->csum_offset == 16);
}

TEST_CASE("IPv4 options move the transport header", "[netback][offload]") {
    auto f = tcp4();
    f.insert(f.begin() + 34, 4, 0x01);  // 4 bytes of NOP options
    f[14] = 0x46;
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->csum_start == 38);
}

TEST_CASE("csum_blank on UDP uses the UDP checksum offset", "[netback][offload]") {
    auto f = tcp4();
    f[23] = 17;
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->csum_offset == 6);
}

TEST_CASE("IPv6 extension headers are walked to the transport header", "[netback][offload]") {
    auto f = ip6(0, {ext_hdr(60, 1), ext_hdr(6)}, 6, 20);  // hop-by-hop (16) + dest (8) + TCP
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->csum_start == 14 + 40 + 16 + 8);
    CHECK(h->csum_offset == 16);
    auto g = tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV6, 1400), f,
                               f.size());
    REQUIRE(g.has_value());
    CHECK(g->gso_type == VnetHdr::GSO_TCPV6);
    CHECK(g->hdr_len == 14 + 40 + 24 + 20);
}

TEST_CASE("an atomic IPv6 fragment header is not a fragment", "[netback][offload]") {
    auto frag = ext_hdr(17);
    auto f = ip6(44, {frag}, 17, 8);
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size());
    REQUIRE(h.has_value());
    CHECK(h->csum_offset == 6);
}

TEST_CASE("checksum offload on a packet that is not IP is dropped", "[netback][offload][hostile]") {
    const Mac m{2, 0, 0, 0, 0, 1};
    auto arp = arp_request(m, ip4("10.0.0.1"), ip4("10.0.0.2"));
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), arp, arp.size()).error() ==
          TxError::csum_setup_failed);
    auto vlan = tcp4();
    vlan[12] = 0x81;
    vlan[13] = 0x00;
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), vlan, vlan.size()).error() ==
          TxError::csum_setup_failed);
    Bytes runt(10, 0);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), runt, runt.size()).error() ==
          TxError::csum_setup_failed);
}

TEST_CASE("checksum offload on an IPv4 fragment is dropped", "[netback][offload][hostile]") {
    auto f = tcp4();
    f[14 + 6] = 0x20;  // MF
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
    f[14 + 6] = 0x00;
    f[14 + 7] = 0x10;  // offset 16
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
}

TEST_CASE("a bad IPv4 header length is dropped", "[netback][offload][hostile]") {
    auto f = tcp4(0);
    f[14] = 0x44;  // ihl 4 < 5
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
    f[14] = 0x4f;  // 60 bytes of IP header: past the end of this 54-byte frame
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
    f[14] = 0x65;  // version 6 in an IPv4 ethertype
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
}

TEST_CASE("checksum offload on ICMP is dropped", "[netback][offload][hostile]") {
    const Mac m{2, 0, 0, 0, 0, 1};
    auto f = icmp_echo(m, m, ip4("10.0.0.1"), ip4("10.0.0.2"), 1, 1, 10);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
}

TEST_CASE("a transport header cut short by the frame is dropped", "[netback][offload][hostile]") {
    auto f = tcp4(0);
    f.resize(34 + 10);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
    // The buffer is big enough but the packet (frame_len) ends inside the TCP header.
    auto g = tcp4(0);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), g, 40).error() ==
          TxError::csum_setup_failed);
}

TEST_CASE("IPv6 headers that run past the payload, or a real fragment, are dropped",
          "[netback][offload][hostile]") {
    auto lying = ext_hdr(6);
    lying[1] = 200;  // a hop-by-hop header claiming 1608 bytes in a much shorter packet
    auto f = ip6(0, {lying}, 6, 20);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f, f.size()).error() ==
          TxError::csum_setup_failed);
    auto frag = ext_hdr(6);
    frag[3] = 1;  // MF
    auto g = ip6(44, {frag}, 6, 20);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), g, g.size()).error() ==
          TxError::csum_setup_failed);
    auto routing_cut = ip6(43, {}, 6, 4);  // a routing header with only 4 bytes left
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), routing_cut, routing_cut.size()).error() ==
          TxError::csum_setup_failed);
}

TEST_CASE("a long but well-formed IPv6 extension chain is walked to its end", "[netback][offload]") {
    std::vector<std::vector<std::uint8_t>> chain(20, ext_hdr(60));
    chain.back()[0] = 6;
    auto h = ip6(60, chain, 6, 20);
    auto r = tx_offload_header(meta(w::NETTXF_csum_blank), h, h.size());
    REQUIRE(r.has_value());
    CHECK(r->csum_start == 14 + 40 + 20 * 8);
}

TEST_CASE("a GSO extra on a TCPv4 packet becomes a TSO header", "[netback][offload]") {
    auto f = tcp4(3000);
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV4, 1448), f,
                               f.size());
    REQUIRE(h.has_value());
    CHECK(h->flags == VnetHdr::F_NEEDS_CSUM);
    CHECK(h->gso_type == VnetHdr::GSO_TCPV4);
    CHECK(h->gso_size == 1448);
    CHECK(h->hdr_len == 54);
    CHECK(h->csum_start == 34);
}

TEST_CASE("a GSO type that does not match the packet is dropped", "[netback][offload][hostile]") {
    auto f = tcp4(3000);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV6, 1448), f,
                            f.size())
              .error() == TxError::gso_not_tcp);
    f[23] = 17;  // UDP
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV4, 1448), f,
                            f.size())
              .error() == TxError::gso_not_tcp);
    auto g = tcp4(3000);
    g[34 + 12] = 0x40;  // TCP data offset 4 < 5
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV4, 1448), g,
                            g.size())
              .error() == TxError::csum_setup_failed);
}

TEST_CASE("GSO without csum_blank gets Linux's checksum fixup", "[netback][offload]") {
    TcpSpec t;
    t.s = ip4("10.0.0.1");
    t.d = ip4("10.0.0.2");
    t.sport = 5;
    t.dport = 6;
    std::vector<std::uint8_t> pl(5000, 0x11);
    const Bytes partial = tcp_frame(t, pl, true);
    Bytes full = tcp_frame(t, pl, false);  // what a frontend may send: a complete checksum
    REQUIRE(full != partial);
    auto h = tx_offload_header(meta(0, w::XEN_NETIF_GSO_TYPE_TCPV4, 1448), full, full.size());
    REQUIRE(h.has_value());
    CHECK(h->flags == VnetHdr::F_NEEDS_CSUM);
    CHECK(full == partial);  // the checksum field now holds the pseudo-header sum
}

TEST_CASE("a partial checksum of an IP version the backend did not offer is dropped",
          "[netback][offload][hostile]") {
    auto f4 = tcp4();
    auto f6 = ip6(6, {}, 6, 20);
    TxConfig no6;
    no6.csum6 = false;
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f6, f6.size(), no6).error() ==
          TxError::csum_not_offered);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f4, f4.size(), no6).has_value());
    // A validated packet of that version needs no offload and still goes through.
    CHECK(tx_offload_header(meta(w::NETTXF_data_validated), f6, f6.size(), no6).has_value());
    TxConfig no4;
    no4.csum4 = false;
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f4, f4.size(), no4).error() ==
          TxError::csum_not_offered);
    // GSO is partial-checksum traffic: refused too (even when the GSO type itself passed).
    CHECK(tx_offload_header(meta(0, w::XEN_NETIF_GSO_TYPE_TCPV4, 1448), f4, f4.size(), no4)
              .error() == TxError::csum_not_offered);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), f6, f6.size(), no4).has_value());
}

TEST_CASE("netif_partial_csum completes a partial checksum into the full one",
          "[netback][offload]") {
    TcpSpec t;
    t.s = ip4("10.0.0.1");
    t.d = ip4("10.0.0.2");
    t.sport = 7;
    t.dport = 8;
    for (std::size_t n : {0U, 1U, 777U, 5000U}) {
        std::vector<std::uint8_t> pl(n);
        for (std::size_t i = 0; i < n; ++i) {
            pl[i] = static_cast<std::uint8_t>(i * 31 + 3);
        }
        Bytes partial = tcp_frame(t, pl, true);
        const Bytes full = tcp_frame(t, pl, false);
        const std::uint16_t v = w::netif_partial_csum(partial, 34);
        partial[34 + 16] = static_cast<std::uint8_t>(v >> 8);
        partial[34 + 17] = static_cast<std::uint8_t>(v);
        CHECK(partial == full);
    }
}

TEST_CASE("to_string names every tx error", "[netback][tx]") {
    for (int e = 0; e <= static_cast<int>(TxError::host_dropped); ++e) {
        CHECK(to_string(static_cast<TxError>(e)) != "?");
    }
}

TEST_CASE("offload headers must end within tx_offload_header_bytes of the frame's start",
          "[netback][offload][hostile]") {
    // Destination options of 200 bytes: TCP header at 254..274, within the limit; of 328 bytes
    // (more than Linux's 256 bytes of IPv6 headers): TCP header at 382..402, beyond it. The
    // frame's bytes past the limit do not count: only the first 384 are copied privately
    // by a backend sending the rest from the frontend's pages.
    auto fits = ip6(60, {ext_hdr(6, 24)}, 6, 20);
    fits.resize(fits.size() + 2000, 0x33);
    auto h = tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV6, 1400),
                               fits, fits.size());
    REQUIRE(h.has_value());
    CHECK(h->csum_start == 14 + 40 + 200);
    CHECK(h->hdr_len == 14 + 40 + 200 + 20);
    auto beyond = ip6(60, {ext_hdr(6, 40)}, 6, 20);
    beyond.resize(beyond.size() + 2000, 0x33);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), beyond, beyond.size()).error() ==
          TxError::csum_setup_failed);
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank, w::XEN_NETIF_GSO_TYPE_TCPV6, 1400), beyond,
                            beyond.size())
              .error() == TxError::csum_setup_failed);
    // Only the copied head is passed in: the same answers.
    CHECK(tx_offload_header(meta(w::NETTXF_csum_blank), std::span(fits).first(tx_offload_header_bytes),
                            fits.size())
              .has_value());
}
