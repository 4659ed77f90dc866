// netback end to end over a DPDK vif (its own process: one EAL): libnetfront in a real hv-min
// domain, netback's vhost-user server port, and a dpdk-testpmd switch (io mode) between that
// port and a pcap port, so frames in both directions are compared where they arrive. The vif
// reaches Connected only once the switch is attached.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "e2e_harness.hpp"
#include "frames.hpp"
#include "netback/dpdk.hpp"
#include "skip.hpp"
#include "testpmd.hpp"

namespace hv::net::test {

using netfront::Offload;
using netfront::Packet;

TEST_CASE("a DPDK vif reaches Connected only once a switch is attached, what the frontend "
          "sends at once reaches the switch intact, and what the switch sends reaches the "
          "frontend intact",
          "[netback][e2e][dpdk][root]") {
    hv::test::skip_unless(dpdk_built(), "netback was built without DPDK (no libdpdk-dev)");
    const std::string testpmd = hv::test::find_testpmd();
    hv::test::skip_unless(!testpmd.empty(), "dpdk-testpmd not installed (Debian: dpdk)");
    BackendOptions o = Env::loop_options();
    o.host = HostMode::tap;  // a DPDK vif's host side is its port
    Env env(o);
    Guest g(env, "g");
    const std::string sock = (env.dir / "vif.sock").string();
    Vif v(env, g, 0, {}, {{"script", "vif-dpdk"}, {"bridge", sock}}, /*connect=*/false);
    auto d = netfront::Device::create(*g.svc, *g.xs, 0, v.opt);
    REQUIRE(d);
    v.nf = std::move(*d);
    // netfront goes to Connected; netback connects on it and opens the port: no switch yet,
    // so the handshake stops there.
    REQUIRE(v.nf->on_state_change());
    auto early = v.nf->wait_connected(1s);
    CHECK_FALSE(early);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    struct stat st {};
    while (::stat(sock.c_str(), &st) != 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);  // polled: the socket appears when the port opens
    }
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK(v.backend_key("hotplug-status") == "<absent>");
    CHECK_FALSE(v.wait_backend(XenbusState::XenbusStateConnected, 300ms));

    // The switch: testpmd's io engine between the vif's port and a pcap port ("paired"). What
    // the frontend sends goes out of the pcap port into out.pcap; the frames of in.pcap come
    // in on the pcap port and go to the vif. Both directions are checked byte for byte, with
    // their checksums, on the side that did not build them.
    using hv::test::net::Bytes;
    // Frame i of a direction (the guest's: from 10.9.0.1), its TCP checksum partial or full.
    auto tcp = [](std::uint32_t i, std::size_t payload_len, bool from_guest, bool partial) {
        hv::test::net::TcpSpec t;
        t.src = {0x02, 0, 0, 0, 0, static_cast<std::uint8_t>(from_guest ? 1 : 2)};
        t.dst = {0x02, 0, 0, 0, 0, static_cast<std::uint8_t>(from_guest ? 2 : 1)};
        t.s = hv::test::net::ip4(from_guest ? "10.9.0.1" : "10.9.0.2");
        t.d = hv::test::net::ip4(from_guest ? "10.9.0.2" : "10.9.0.1");
        t.sport = static_cast<std::uint16_t>(1000 + i);
        t.dport = 80;
        t.seq = 0x1000 * i;
        t.flags = hv::test::net::tcpf::ACK;
        Bytes payload(payload_len);
        for (std::size_t k = 0; k < payload_len; ++k) {
            payload[k] = static_cast<std::uint8_t>(k * 13 + i);
        }
        return hv::test::net::tcp_frame(t, payload, partial);
    };
    auto checksums_ok = [](std::span<const std::uint8_t> f) {
        auto p = hv::test::net::parse(f);
        return p && p->ip_csum_ok && p->l4_csum_ok;
    };
    constexpr unsigned kIn = 32;
    std::vector<Bytes> in;
    for (unsigned i = 0; i < kIn; ++i) {
        in.push_back(tcp(i, 6 + 47 * i, false, false));  // 60 .. 1511 bytes
    }
    const std::string in_pcap = (env.dir / "in.pcap").string();
    const std::string out_pcap = (env.dir / "out.pcap").string();
    REQUIRE(hv::test::write_pcap(in_pcap, in));

    struct RunDir {
        ~RunDir() { hv::test::remove_testpmd_rundir(::getpid()); }
    } rundir;
    auto pmd = hv::test::start_testpmd(testpmd, {sock}, "paired",
                                       (env.dir / "testpmd.log").string(), "io", "",
                                       {hv::test::pcap_vdev(in_pcap, out_pcap)});
    REQUIRE(pmd);
    auto log = [&] {
        std::ifstream l(env.dir / "testpmd.log");
        return std::string((std::istreambuf_iterator<char>(l)), {});
    };
    const auto up = v.nf->wait_connected(30s);
    INFO(log());
    REQUIRE(up);
    REQUIRE(v.backend_key("state") == "4");
    CHECK(v.backend_key("hotplug-status") == "connected");

    // Guest -> switch, at once: 64 TCP frames with their checksums left blank (netback
    // completes them for a switch that takes no offload). Every one reaches the switch as
    // the frame with its checksum complete, in order.
    constexpr unsigned kOut = 64;
    for (unsigned i = 0; i < kOut; ++i) {
        const Bytes f = tcp(i, 6 + 23 * i, true, true);
        REQUIRE(v.nf->send(0, std::as_bytes(std::span(f)), Offload{.csum_blank = true}));
    }
    CHECK(v.wait_backend_key("statistics/tx_packets", std::to_string(kOut)));
    CHECK(v.backend_key("statistics/tx_dropped") == "0");
    std::vector<Bytes> out;
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (out.size() < kOut && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(50ms);  // polled: the pcap port writes after each burst
        out = hv::test::read_pcap(out_pcap);
    }
    INFO(log());
    REQUIRE(out.size() == kOut);
    for (unsigned i = 0; i < kOut; ++i) {
        INFO("frame " << i << " to the switch");
        CHECK(out[i] == tcp(i, 6 + 23 * i, true, false));
        CHECK(checksums_ok(out[i]));
    }

    // Switch -> guest: in.pcap's frames, byte for byte and in order, and nothing else.
    std::vector<Packet> got;
    v.nf->receive(got, kIn, 20s);
    REQUIRE(got.size() == kIn);
    for (unsigned i = 0; i < kIn; ++i) {
        INFO("frame " << i << " from the switch");
        const auto* p = reinterpret_cast<const std::uint8_t*>(got[i].data.data());
        const Bytes b(p, p + got[i].data.size());
        CHECK(b == in[i]);
        CHECK(checksums_ok(b));
    }
    v.nf->receive(got, 1, 300ms);
    CHECK(got.size() == kIn);
    CHECK(v.backend_key("statistics/rx_dropped") == "0");
}

}  // namespace hv::net::test
