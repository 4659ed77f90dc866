// netback end to end with tap vifs in a private network namespace (root): the host side is made
// at probe as Linux netback makes its vif (tap, MAC, MTU, bridge, up, then hotplug-status),
// before any frontend; a vif whose bridge does not exist reports it in hotplug-error and never
// reaches Connected while the other vifs of the same netback connect.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "e2e_harness.hpp"
#include "e2e_tap.hpp"
#include "frames.hpp"
#include "netback/netlink.hpp"
#include "netback/tap.hpp"
#include "netns.hpp"
#include "skip.hpp"

namespace hv::net::test {

TEST_CASE("a vif's tap is made, bridged and up before its frontend connects, and a vif whose "
          "bridge is missing stays in InitWait with hotplug-error while the other connects",
          "[netback][e2e][hotplug][root]") {
    hv::test::require_root();
    SwitchNs sw = switch_ns();
    Netlink* nl = &sw.nl;
    Env env(tap_options(sw.ns));
    Guest g(env, "g1");
    Vif good(env, g, 0, {}, {{"bridge", "br0"}, {"mtu", "1400"}}, /*connect=*/false);
    Vif bad(env, g, 1, {}, {{"bridge", "nosuchbr"}}, /*connect=*/false);
    REQUIRE(good.wait_backend(XenbusState::XenbusStateInitWait));
    REQUIRE(good.wait_backend_key("hotplug-status", "connected"));
    // No frontend yet (its dir has no state beyond Initialising): the tap is there already.
    const std::string name = vif_name(g.domid, 0);
    auto br = nl->link_index("br0");
    REQUIRE(br);
    auto l = nl->get_link(name);
    REQUIRE(l);
    CHECK(l->kind == "tun");
    CHECK(l->master == *br);
    CHECK(l->up());
    CHECK(l->mtu == 1400);
    CHECK(l->mac == Mac{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff});
    CHECK(good.backend_key("state") == "2");

    REQUIRE(bad.wait_backend(XenbusState::XenbusStateInitWait));
    REQUIRE(bad.wait_backend_key("hotplug-status", "error"));
    const std::string why = bad.backend_key("hotplug-error");
    INFO(why);
    CHECK(why.starts_with("host side: bridge nosuchbr: "));
    CHECK_FALSE(nl->get_link(vif_name(g.domid, 1)));  // what was made is taken away again

    good.connect();
    CHECK(good.backend_key("state") == "4");
    bad.start_frontend();  // the frontend is Connected
    CHECK_FALSE(bad.wait_backend(XenbusState::XenbusStateConnected, 1s));
    CHECK(bad.backend_key("state") == "2");
    CHECK(bad.backend_key("hotplug-status") == "error");

    // A reconnect keeps the tap (Linux keeps the vif until the device is removed); removal
    // takes it away.
    REQUIRE(xenbus::switch_state(*g.xs, good.fdir(), XenbusState::XenbusStateClosing));
    REQUIRE(good.wait_backend(XenbusState::XenbusStateClosing));
    CHECK(nl->get_link(name));
    REQUIRE(xenbus::remove_device(*env.xs, DomId(0), "vif", g.domid, 0));
    bool gone = false;
    for (int i = 0; i < 500 && !gone; ++i) {
        gone = !nl->get_link(name);
        if (!gone) {
            std::this_thread::sleep_for(10ms);  // polled: netlink has no wait for a removal here
        }
    }
    CHECK(gone);
}

TEST_CASE("a TCP send of 60 KiB from a namespace on the bridge reaches netfront as GSO packets "
          "with their extra and the bytes sent",
          "[netback][e2e][gso][root]") {
    // The kernel makes the GSO frames: a TCP socket in the peer namespace, put in ESTABLISHED
    // toward the guest without a handshake (TCP_REPAIR; the guest runs no TCP), sends 60 KiB
    // through veth, bridge and the vif's tap, whose TUNSETOFFLOAD (netfront takes TSO4) lets
    // them through unsegmented. No ACK comes, so what leaves is the first flight: one GSO frame
    // of up to the initial window.
    hv::test::require_root();
    SwitchNs sw = switch_ns();
    Netlink* nl = &sw.nl;
    auto peer = hv::test::NetNs::create("hvt");
    REQUIRE(peer);
    REQUIRE(nl->create_veth("veth0", "veth1"));
    REQUIRE(nl->move_to_netns("veth1", peer->fd()));
    REQUIRE(nl->set_master("veth0", "br0"));
    REQUIRE(nl->set_up("veth0", true));
    auto nlp = Netlink::open(peer->fd());
    REQUIRE(nlp);
    REQUIRE(nlp->add_address_v4("veth1", hv::test::net::ip4("10.7.0.2"), 24));
    REQUIRE(nlp->set_up("veth1", true));

    Env env(tap_options(sw.ns));
    Guest g(env, "g1");
    Vif v(env, g, 0, {}, {{"bridge", "br0"}});
    const std::string mac = *env.xs->read(v.bdir() + "/mac");
    auto n = peer->exec({"ip", "neigh", "replace", "10.7.0.1", "lladdr", mac, "dev", "veth1",
                         "nud", "permanent"});
    REQUIRE(n);
    INFO(n->output);
    REQUIRE(n->exit_code == 0);

    constexpr std::uint32_t kSeq = 1000;     // our first byte's sequence number
    constexpr std::uint32_t kPeerSeq = 5000;
    constexpr int kMss = 1448;
    std::vector<std::uint8_t> data(60 * 1024);
    for (std::size_t i = 0; i < data.size(); ++i) {
        data[i] = static_cast<std::uint8_t>(i * 7 + i / 251);
    }
    hv::UniqueFd s = peer->run([&] {
        hv::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd.valid());
        int on = 1;
        REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_REPAIR, &on, sizeof on) == 0);
        sockaddr_in me{};
        me.sin_family = AF_INET;
        me.sin_port = htons(40000);
        me.sin_addr = hv::test::net::ip4("10.7.0.2");
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&me), sizeof me) == 0);
        for (auto [q, seq] : {std::pair{TCP_SEND_QUEUE, kSeq}, std::pair{TCP_RECV_QUEUE, kPeerSeq}}) {
            int qq = q;
            REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_REPAIR_QUEUE, &qq, sizeof qq) == 0);
            REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_QUEUE_SEQ, &seq, sizeof seq) == 0);
        }
        sockaddr_in to = me;
        to.sin_port = htons(5001);
        to.sin_addr = hv::test::net::ip4("10.7.0.1");
        int user_mss = kMss;  // the MSS at connect (else 536: no SYN-ACK told us more)
        REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_MAXSEG, &user_mss, sizeof user_mss) == 0);
        REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
        tcp_repair_opt mss{TCPOPT_MAXSEG, kMss};
        REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_REPAIR_OPTIONS, &mss, sizeof mss) == 0);
        tcp_repair_window w{};
        w.snd_wl1 = kPeerSeq;
        w.snd_wnd = 65535;
        w.max_window = 65535;
        w.rcv_wnd = 65535;
        w.rcv_wup = kPeerSeq;
        REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) == 0);
        int off = 0;
        REQUIRE(::setsockopt(fd.get(), IPPROTO_TCP, TCP_REPAIR, &off, sizeof off) == 0);
        return fd;
    });
    REQUIRE(::send(s.get(), data.data(), data.size(), MSG_DONTWAIT) > 0);

    // The first TCP packet from the peer carrying data: a GSO one, whole.
    std::optional<netfront::Packet> gso;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!gso && std::chrono::steady_clock::now() < deadline) {
        std::vector<netfront::Packet> got;
        v.nf->receive(got, 16, 200ms);
        for (auto& p : got) {
            const auto* b = reinterpret_cast<const std::uint8_t*>(p.data.data());
            if (p.data.size() < 14 + 20 + 20 || b[12] != 0x08 || b[13] != 0x00 || b[23] != 6) {
                continue;  // not IPv4 TCP (ARP, IPv6 neighbour discovery)
            }
            const std::size_t ihl = (b[14] & 0xF) * 4U;
            const std::size_t doff = (b[14 + ihl + 12] >> 4) * 4U;
            if (p.data.size() > 14 + ihl + doff) {
                gso = std::move(p);
                break;
            }
        }
    }
    REQUIRE(gso);
    const auto* b = reinterpret_cast<const std::uint8_t*>(gso->data.data());
    const std::size_t ihl = (b[14] & 0xF) * 4U;
    const std::size_t hdrs = 14 + ihl + (b[14 + ihl + 12] >> 4) * 4U;
    const std::size_t payload = gso->data.size() - hdrs;
    INFO("first data packet: " << gso->data.size() << " bytes, gso_type "
                               << unsigned(gso->offload.gso_type) << " size "
                               << gso->offload.gso_size);
    CHECK(gso->offload.gso_type == hv::rings::XEN_NETIF_GSO_TYPE_TCPV4);
    CHECK(gso->offload.gso_size == kMss);
    CHECK(payload > static_cast<std::size_t>(kMss));  // more than one segment's worth
    CHECK(gso->offload.csum_blank);
    const std::uint32_t seq = (std::uint32_t{b[14 + ihl + 4]} << 24) |
                              (std::uint32_t{b[14 + ihl + 5]} << 16) |
                              (std::uint32_t{b[14 + ihl + 6]} << 8) | b[14 + ihl + 7];
    REQUIRE(seq - kSeq + payload <= data.size());
    CHECK(std::memcmp(b + hdrs, data.data() + (seq - kSeq), payload) == 0);
}

}  // namespace hv::net::test
