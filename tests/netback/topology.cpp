// Builds the root tests' namespaces, switch, tap and veth pair.
#include "topology.hpp"

#include <linux/ethtool.h>

#include <catch2/catch.hpp>

#include "netback/netlink.hpp"
#include "netback/tx_parse.hpp"

namespace hv::test::net {

std::unique_ptr<Topology> Topology::make(SwitchKind kind, bool software_segmentation) {
    auto a = hv::test::NetNs::create("hvt");
    REQUIRE(a.has_value());
    auto b = hv::test::NetNs::create("hvt");
    REQUIRE(b.has_value());
    auto t = std::make_unique<Topology>(std::move(*a), std::move(*b));

    auto nl = hv::net::Netlink::open(t->sw.fd());
    REQUIRE(nl.has_value());
    hv::net::TapConfig tc;
    tc.name = hv::net::vif_name(hv::DomId{1}, 0);
    tc.netns_fd = t->sw.fd();
    auto tap = hv::net::Tap::open(tc);
    REQUIRE(tap.has_value());
    REQUIRE(nl->create_veth("veth0", "veth1").has_value());
    REQUIRE(nl->move_to_netns("veth1", t->peer.fd()).has_value());

    if (kind == SwitchKind::linux_bridge) {
        REQUIRE(nl->create_bridge("br0").has_value());
        REQUIRE(nl->set_master(tc.name, "br0").has_value());
        REQUIRE(nl->set_master("veth0", "br0").has_value());
        REQUIRE(nl->set_up("br0", true).has_value());
    } else {
        hv::net::OvsOptions oo;
        oo.netns_fd = t->sw.fd();
        oo.run_dir = t->dir.str() + "/ovs";
        auto o = hv::net::OvsInstance::start(oo);
        REQUIRE(o.has_value());
        t->ovs.emplace(std::move(*o));
        REQUIRE(t->ovs->add_bridge("br0").has_value());
        REQUIRE(t->ovs->add_port("br0", tc.name).has_value());
        REQUIRE(t->ovs->add_port("br0", "veth0").has_value());
    }
    REQUIRE(nl->set_up(tc.name, true).has_value());
    REQUIRE(nl->set_up("veth0", true).has_value());

    auto nlp = hv::net::Netlink::open(t->peer.fd());
    REQUIRE(nlp.has_value());
    REQUIRE(nlp->add_address_v4("veth1", ip4(peer_ip), 24).has_value());
    REQUIRE(nlp->set_up("veth1", true).has_value());

    if (software_segmentation) {
        const bool sw_ok = t->sw.run([] {
            return ethtool_set("veth0", ETHTOOL_STSO, false) &&
                   ethtool_set("veth0", ETHTOOL_SGSO, false) &&
                   ethtool_set("veth0", ETHTOOL_STXCSUM, false);
        });
        REQUIRE(sw_ok);
        const bool peer_ok = t->peer.run([] { return ethtool_set("veth1", ETHTOOL_SRXCSUM, false); });
        REQUIRE(peer_ok);
    }
    auto eng = tap->make_engine(0);
    REQUIRE(eng.has_value());
    t->engine = std::move(*eng);
    return t;
}

}  // namespace hv::test::net

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace hv::test::net {
namespace {

const Mac guest_mac{0x02, 0x00, 0x00, 0x00, 0x01, 0x00};

}  // namespace

void check_arp_and_ping(Topology& t) {
    Guest g(*t.engine, guest_mac, ip4(Topology::guest_ip));
    const auto peer_mac = g.resolve(ip4(Topology::peer_ip));
    REQUIRE(peer_mac.has_value());
    g.send(icmp_echo(g.mac(), *peer_mac, g.ip(), ip4(Topology::peer_ip), 0x4242, 1, 56));
    const auto reply = g.wait_for([](const Parsed& p) {
        return p.proto == IPPROTO_ICMP && p.icmp_type == 0 && p.icmp_id == 0x4242 &&
               p.icmp_seq == 1;
    });
    REQUIRE(reply.has_value());
    const auto p = parse(*reply);
    CHECK(p->ip_csum_ok);
    CHECK(p->l4_csum_ok);
    CHECK(p->payload_len == 56);
    CHECK(p->dst == guest_mac);
    CHECK(p->ip_src.s_addr == ip4(Topology::peer_ip).s_addr);
}

void check_tso(Topology& t) {
    constexpr std::uint16_t sport = 40000;
    constexpr std::uint16_t dport = 5001;
    Guest g(*t.engine, guest_mac, ip4(Topology::guest_ip));

    hv::UniqueFd lst = t.peer.run(
        [] { return hv::UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)); });
    REQUIRE(lst.valid());
    int big = 4 << 20;
    REQUIRE(::setsockopt(lst.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) == 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(dport);
    sa.sin_addr = ip4(Topology::peer_ip);
    REQUIRE(::bind(lst.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(lst.get(), 1) == 0);

    hv::UniqueFd cap = t.peer.run([] {
        hv::UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_IP)));
        sockaddr_ll ll{};
        ll.sll_family = AF_PACKET;
        ll.sll_protocol = htons(ETH_P_IP);
        ll.sll_ifindex = static_cast<int>(::if_nametoindex("veth1"));
        if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) {
            return hv::UniqueFd{};
        }
        return s;
    });
    REQUIRE(cap.valid());
    int capbuf = 16 << 20;
    REQUIRE(::setsockopt(cap.get(), SOL_SOCKET, SO_RCVBUFFORCE, &capbuf, sizeof capbuf) == 0);

    const auto peer_mac = g.resolve(ip4(Topology::peer_ip));
    REQUIRE(peer_mac.has_value());
    TcpSpec ts;
    ts.src = g.mac();
    ts.dst = *peer_mac;
    ts.s = g.ip();
    ts.d = ip4(Topology::peer_ip);
    ts.sport = sport;
    ts.dport = dport;
    ts.seq = 1000;
    ts.flags = tcpf::SYN;
    ts.mss_option = 1460;
    g.send(tcp_frame(ts, {}, false));
    const auto synack = g.wait_for([&](const Parsed& p) {
        return p.proto == IPPROTO_TCP && p.sport == dport && p.dport == sport &&
               p.tcp_flags == (tcpf::SYN | tcpf::ACK);
    });
    REQUIRE(synack.has_value());
    const auto sp = *parse(*synack);
    const std::uint16_t mss = sp.mss != 0 && sp.mss < 1460 ? sp.mss : 1460;

    ts.seq = 1001;
    ts.ack = sp.seq + 1;
    ts.flags = tcpf::ACK;
    ts.mss_option = 0;
    g.send(tcp_frame(ts, {}, false));
    pollfd pa{lst.get(), POLLIN, 0};
    REQUIRE(::poll(&pa, 1, 5000) == 1);
    hv::UniqueFd conn(::accept4(lst.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn.valid());

    const std::size_t len = std::min<std::size_t>(sp.window, 65000);
    INFO("peer window " << sp.window << ", mss " << mss << ", payload " << len);
    REQUIRE(len >= 32768);  // a real multi-segment frame
    std::vector<std::uint8_t> payload(len);
    for (std::size_t i = 0; i < len; ++i) {
        payload[i] = static_cast<std::uint8_t>(i * 131 + (i >> 8));
    }
    ts.flags = tcpf::ACK | tcpf::PSH;
    Bytes frame = tcp_frame(ts, payload, true);

    // The frame as a netfront would put it on the tx ring: slot 0 (whole size, csum_blank,
    // extra_info, more_data), a GSO extra, then one slot per further 4 KiB page. The parser and
    // the offload mapping turn that into the virtio-net header the tap gets.
    namespace w = hv::rings;
    std::vector<w::netif_tx_request> slots;
    w::netif_tx_request first{};
    first.size = static_cast<std::uint16_t>(frame.size());
    first.flags = w::NETTXF_csum_blank | w::NETTXF_extra_info | w::NETTXF_more_data;
    slots.push_back(first);
    w::netif_extra_info gso{};
    gso.type = w::XEN_NETIF_EXTRA_TYPE_GSO;
    gso.u.gso.size = mss;
    gso.u.gso.type = w::XEN_NETIF_GSO_TYPE_TCPV4;
    w::netif_tx_request gso_slot{};
    std::memcpy(&gso_slot, &gso, sizeof gso);
    slots.push_back(gso_slot);
    for (std::size_t at = 4096; at < frame.size(); at += 4096) {
        w::netif_tx_request r{};
        r.id = static_cast<std::uint16_t>(slots.size());
        r.size = static_cast<std::uint16_t>(std::min<std::size_t>(4096, frame.size() - at));
        r.flags = at + 4096 < frame.size() ? w::NETTXF_more_data : 0;
        slots.push_back(r);
    }
    const hv::net::TxPacket pkt = hv::net::parse_tx(slots, hv::net::TxConfig{});
    REQUIRE(pkt.verdict == hv::net::TxVerdict::forward);
    CHECK(pkt.frags[0].size == 4096);
    auto h = hv::net::tx_offload_header(pkt, frame, frame.size());
    REQUIRE(h.has_value());
    CHECK(h->flags == hv::net::VnetHdr::F_NEEDS_CSUM);
    CHECK(h->gso_type == hv::net::VnetHdr::GSO_TCPV4);
    CHECK(h->gso_size == mss);
    CHECK(h->hdr_len == 54);
    CHECK(h->csum_start == 34);
    CHECK(h->csum_offset == 16);
    g.send(frame, *h);

    std::vector<std::uint8_t> got;
    got.reserve(len);
    std::vector<std::uint8_t> buf(len);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (got.size() < len && std::chrono::steady_clock::now() < deadline) {
        pollfd pc{conn.get(), POLLIN, 0};
        if (::poll(&pc, 1, 200) != 1) {
            continue;
        }
        const ssize_t n = ::recv(conn.get(), buf.data(), buf.size(), MSG_DONTWAIT);
        REQUIRE(n > 0);
        got.insert(got.end(), buf.begin(), buf.begin() + n);
    }
    REQUIRE(got.size() == len);
    CHECK(got == payload);

    // What crossed veth1: MTU-sized segments with correct checksums, adding up to the payload.
    std::size_t segs = 0;
    std::size_t bytes = 0;
    std::vector<std::uint8_t> f(70000);
    for (;;) {
        sockaddr_ll from{};
        socklen_t fl = sizeof from;
        const ssize_t n =
            ::recvfrom(cap.get(), f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n <= 0) {
            break;
        }
        const auto p = parse({f.data(), static_cast<std::size_t>(n)});
        if (!p || p->proto != IPPROTO_TCP || p->sport != sport || p->payload_len == 0) {
            continue;
        }
        ++segs;
        bytes += p->payload_len;
        CHECK(static_cast<std::size_t>(n) <= 1514);
        CHECK(p->ip_csum_ok);
        CHECK(p->l4_csum_ok);
        CHECK(p->payload_len <= mss);
    }
    CHECK(bytes == len);
    CHECK(segs >= (len + mss - 1) / mss);
    std::printf("tso: %zu payload bytes arrived in %zu segments (mss %u)\n", bytes, segs, mss);
}

}  // namespace hv::test::net
