// Tap device and tap engine in a private namespace: vif naming, vnet header, offloads,
// multi-queue, and a frame exchange with the namespace's own stack.
#include <catch2/catch.hpp>

#include <linux/if_tun.h>
#include <net/if.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>

#include "frames.hpp"
#include "netback/netlink.hpp"
#include "netback/tap.hpp"
#include "netns.hpp"
#include "skip.hpp"

using namespace hv::net;
using namespace hv::test::net;

TEST_CASE("a vif tap is named vif<domid>.<devid> and lives as long as its queues",
          "[netback][tap][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    CHECK(vif_name(hv::DomId{7}, 2) == "vif7.2");
    {
        TapConfig c;
        c.name = vif_name(hv::DomId{7}, 2);
        c.netns_fd = ns->fd();
        c.queues = 4;
        auto tap = Tap::open(c);
        REQUIRE(tap.has_value());
        CHECK(tap->queue_count() == 4);
        auto li = nl->get_link("vif7.2");
        REQUIRE(li.has_value());
        CHECK(li->kind == "tun");
        ifreq ifr{};
        REQUIRE(::ioctl(tap->queue_fd(3), TUNGETIFF, &ifr) == 0);
        CHECK((ifr.ifr_flags & IFF_VNET_HDR) != 0);
        CHECK((ifr.ifr_flags & IFF_MULTI_QUEUE) != 0);
        CHECK((ifr.ifr_flags & IFF_NO_PI) != 0);
        int hdr = 0;
        REQUIRE(::ioctl(tap->queue_fd(0), TUNGETVNETHDRSZ, &hdr) == 0);
        CHECK(hdr == 12);
        // The tap does not exist in the caller's namespace.
        auto root = Netlink::open();
        REQUIRE(root.has_value());
        CHECK_FALSE(root->get_link("vif7.2").has_value());
    }
    CHECK(nl->get_link("vif7.2").error() == std::errc::no_such_device);
}

TEST_CASE("a tap refuses bad names and TSO without checksum offload", "[netback][tap][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    TapConfig c;
    c.netns_fd = ns->fd();
    c.name = "a-name-much-too-long";
    CHECK(Tap::open(c).error() == std::errc::invalid_argument);
    c.name = "vif1.0";
    c.queues = 0;
    CHECK(Tap::open(c).error() == std::errc::invalid_argument);
    c.queues = 1;
    c.offloads = Features{false, true, false};
    CHECK(Tap::open(c).error() == std::errc::invalid_argument);
}

TEST_CASE("a tap engine exchanges ARP and ping with its namespace's stack",
          "[netback][tap][engine][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    TapConfig c;
    c.name = "vif3.0";
    c.netns_fd = ns->fd();
    auto tap = Tap::open(c);
    REQUIRE(tap.has_value());
    REQUIRE(nl->add_address_v4("vif3.0", ip4("10.8.0.1"), 24).has_value());
    REQUIRE(nl->set_up("vif3.0", true).has_value());
    auto eng = tap->make_engine(0);
    REQUIRE(eng.has_value());
    CHECK((*eng)->features().tso4);
    CHECK((*eng)->max_frame_bytes() == max_gso_frame_bytes);

    Guest g(**eng, Mac{0x02, 0, 0, 0, 3, 0}, ip4("10.8.0.2"));
    const auto host_mac = g.resolve(ip4("10.8.0.1"));
    REQUIRE(host_mac.has_value());
    CHECK(*host_mac == nl->get_link("vif3.0")->mac);
    g.send(icmp_echo(g.mac(), *host_mac, g.ip(), ip4("10.8.0.1"), 9, 3, 1000));
    auto reply = g.wait_for([](const Parsed& p) {
        return p.proto == IPPROTO_ICMP && p.icmp_type == 0 && p.icmp_id == 9 && p.icmp_seq == 3;
    });
    REQUIRE(reply.has_value());
    CHECK(parse(*reply)->l4_csum_ok);
    CHECK(parse(*reply)->payload_len == 1000);

    // Hostile headers from the frontend side never reach the tap.
    auto f = icmp_echo(g.mac(), *host_mac, g.ip(), ip4("10.8.0.1"), 9, 4, 10);
    const iovec iov{f.data(), f.size()};
    VnetHdr bad;
    bad.flags = VnetHdr::F_NEEDS_CSUM;
    bad.csum_start = static_cast<std::uint16_t>(f.size());
    bad.csum_offset = 6;
    CHECK((*eng)->send(bad, {&iov, 1}).error() == Errc::bad_offload);
    std::vector<std::byte> small(100);
    RxBuffer rx{small};
    CHECK((*eng)->receive({&rx, 1}).error() == Errc::buffer_too_small);
}

TEST_CASE("a frame longer than the engine was built for is dropped, not reported truncated",
          "[netback][tap][engine][hostile][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    TapConfig c;
    c.name = "vif5.0";
    c.netns_fd = ns->fd();
    c.offloads = Features{};  // no TSO: buffers sized for the MTU
    auto tap = Tap::open(c);
    REQUIRE(tap.has_value());
    REQUIRE(nl->set_mtu("vif5.0", 9000).has_value());  // raised behind the engine's back
    REQUIRE(nl->set_up("vif5.0", true).has_value());
    auto eng = tap->make_engine(0, 1500);
    REQUIRE(eng.has_value());
    REQUIRE((*eng)->max_frame_bytes() == 1500 + 18);
    hv::UniqueFd pkt = ns->run([] {
        hv::UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
        sockaddr_ll ll{};
        ll.sll_family = AF_PACKET;
        ll.sll_ifindex = static_cast<int>(::if_nametoindex("vif5.0"));
        if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) {
            return hv::UniqueFd{};
        }
        return s;
    });
    REQUIRE(pkt.valid());
    auto frame = [](std::size_t len, std::uint8_t tag) {
        Bytes f(len, tag);
        const Mac m{0x02, 0, 0, 0, 5, 0};
        std::memcpy(f.data(), m.data(), 6);
        f[12] = 0x88;
        f[13] = 0xb5;
        return f;
    };
    const Bytes big = frame(4000, 1);
    const Bytes small = frame(200, 2);
    REQUIRE(::send(pkt.get(), big.data(), big.size(), 0) == 4000);
    REQUIRE(::send(pkt.get(), small.data(), small.size(), 0) == 200);

    // The kernel may send frames of its own on the new link (IPv6 neighbour discovery):
    // look only at our ethertype.
    std::vector<std::size_t> ours;
    std::vector<std::byte> b((*eng)->max_frame_bytes());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while ((ours.empty() || ours.back() != 200) && std::chrono::steady_clock::now() < deadline) {
        RxBuffer rx{b};
        auto n = (*eng)->receive({&rx, 1});
        REQUIRE(n.has_value());
        if (*n == 0) {
            pollfd p{(*eng)->notify_fd(), POLLIN, 0};
            ::poll(&p, 1, 200);
            continue;
        }
        if (rx.len >= 14 && b[12] == std::byte{0x88} && b[13] == std::byte{0xb5}) {
            ours.push_back(rx.len);
            CHECK(std::memcmp(b.data(), rx.len == 200 ? small.data() : big.data(), rx.len) == 0);
        }
    }
    // The 4000-byte frame was consumed and dropped; the small one after it arrived intact.
    CHECK(ours == std::vector<std::size_t>{200});
}
