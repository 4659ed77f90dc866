// netback end to end over a DPDK vif (its own process: one EAL): libnetfront in a real hv-min
// domain, netback's vhost-user server port, and a dpdk-testpmd switch (io mode) counting what
// it receives. The vif reaches Connected only once the switch is attached.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "e2e_harness.hpp"
#include "netback/dpdk.hpp"
#include "skip.hpp"
#include "testpmd.hpp"

namespace hv::net::test {

TEST_CASE("a DPDK vif reaches Connected only once a switch is attached, and what the frontend "
          "sends at once is not lost",
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

    struct RunDir {
        ~RunDir() { hv::test::remove_testpmd_rundir(::getpid()); }
    } rundir;
    auto pmd = hv::test::start_testpmd(testpmd, {sock}, "loop",
                                       (env.dir / "testpmd.log").string());
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

    // At once: every frame reaches the switch (its own receive counter, printed every second).
    constexpr unsigned kFrames = 64;
    for (unsigned i = 0; i < kFrames; ++i) {
        REQUIRE(v.nf->send(0, raw_frame(60 + i, i), {}));
    }
    CHECK(v.wait_backend_key("statistics/tx_packets", std::to_string(kFrames)));
    CHECK(v.backend_key("statistics/tx_dropped") == "0");
    const auto until = std::chrono::steady_clock::now() + 10s;
    bool arrived = false;
    while (!arrived && std::chrono::steady_clock::now() < until) {
        const std::string l = log();
        const auto at = l.rfind("RX-packets:");
        arrived = at != std::string::npos && std::stoul(l.substr(at + 11)) == kFrames;
        if (!arrived) {
            std::this_thread::sleep_for(100ms);  // testpmd prints its counters once a second
        }
    }
    INFO(log());
    CHECK(arrived);
}

}  // namespace hv::net::test
