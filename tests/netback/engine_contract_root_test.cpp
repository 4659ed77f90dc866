// Every NetEngine through the same contract (style.md §10). The "far side" of the loop engine is
// the engine itself; the tap engine's far side is a packet socket on the tap inside a private
// namespace (IPv6 off there, so the kernel sends nothing of its own).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

#include "frames.hpp"
#include "netback/netlink.hpp"
#include "netback/tap.hpp"
#include "netns.hpp"
#include "skip.hpp"

using namespace hv::net;
using namespace hv::test::net;

namespace {

bool readable(int fd, int timeout_ms = 0) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

Bytes test_frame(std::size_t len, std::uint8_t tag) {
    Bytes f(len);
    const Mac dst{0x02, 0, 0, 0, 0, 0x99};
    const Mac src{0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(f.data(), dst.data(), 6);
    std::memcpy(f.data() + 6, src.data(), 6);
    f[12] = 0x88;  // local experimental ethertype 0x88b5: no stack reacts to it
    f[13] = 0xb5;
    for (std::size_t i = 14; i < len; ++i) {
        f[i] = static_cast<std::uint8_t>(tag + i);
    }
    return f;
}

struct LoopSide {
    std::unique_ptr<NetEngine> engine;
    LoopSide() {
        auto e = make_loop_engine(8);
        REQUIRE(e.has_value());
        engine = std::move(*e);
    }
    /// The next frame the engine delivered to its far side.
    std::optional<Bytes> far_receive() {
        std::vector<std::byte> b(engine->max_frame_bytes());
        RxBuffer rx{b};
        if (!readable(engine->notify_fd(), 2000) || *engine->receive({&rx, 1}) != 1) {
            return std::nullopt;
        }
        const auto* p = reinterpret_cast<const std::uint8_t*>(b.data());
        return Bytes(p, p + rx.len);
    }
    /// Makes a frame arrive for the engine's receive().
    void far_send(const Bytes& f) {
        const iovec iov{const_cast<std::uint8_t*>(f.data()), f.size()};
        REQUIRE(engine->send({}, {&iov, 1}).has_value());
    }
};

struct TapSide {
    std::optional<hv::test::NetNs> ns;
    hv::UniqueFd pkt;
    std::unique_ptr<NetEngine> engine;
    TapSide() {
        hv::test::require_root();
        auto n = hv::test::NetNs::create();
        REQUIRE(n.has_value());
        ns.emplace(std::move(*n));
        const bool v6off = ns->run([] {
            for (const char* p : {"/proc/sys/net/ipv6/conf/all/disable_ipv6",
                                  "/proc/sys/net/ipv6/conf/default/disable_ipv6"}) {
                std::ofstream f(p);
                f << "1\n";
                if (!f.flush()) {
                    return false;
                }
            }
            return true;
        });
        REQUIRE(v6off);
        TapConfig c;
        c.name = "vif9.0";
        c.netns_fd = ns->fd();
        auto tap = Tap::open(c);
        REQUIRE(tap.has_value());
        auto nl = Netlink::open(ns->fd());
        REQUIRE(nl.has_value());
        REQUIRE(nl->set_up("vif9.0", true).has_value());
        pkt = ns->run([] {
            hv::UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
            sockaddr_ll ll{};
            ll.sll_family = AF_PACKET;
            ll.sll_protocol = htons(ETH_P_ALL);
            ll.sll_ifindex = static_cast<int>(::if_nametoindex("vif9.0"));
            if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) {
                return hv::UniqueFd{};
            }
            return s;
        });
        REQUIRE(pkt.valid());
        auto e = tap->make_engine(0);
        REQUIRE(e.has_value());
        engine = std::move(*e);
    }
    std::optional<Bytes> far_receive() {
        Bytes b(70000);
        for (;;) {
            if (!readable(pkt.get(), 2000)) {
                return std::nullopt;
            }
            sockaddr_ll from{};
            socklen_t fl = sizeof from;
            const ssize_t n = ::recvfrom(pkt.get(), b.data(), b.size(), 0,
                                         reinterpret_cast<sockaddr*>(&from), &fl);
            REQUIRE(n > 0);
            if (from.sll_pkttype == PACKET_OUTGOING) {
                continue;  // our own far_send, seen on its way out
            }
            b.resize(static_cast<std::size_t>(n));
            return b;
        }
    }
    void far_send(const Bytes& f) {
        REQUIRE(::send(pkt.get(), f.data(), f.size(), 0) == static_cast<ssize_t>(f.size()));
    }
};

}  // namespace

TEMPLATE_TEST_CASE("an idle engine has nothing to receive and its notify fd is quiet",
                   "[netback][engine][contract][root]", LoopSide, TapSide) {
    TestType side;
    NetEngine& e = *side.engine;
    CHECK_FALSE(readable(e.notify_fd()));
    std::vector<std::byte> b(e.max_frame_bytes());
    RxBuffer rx{b};
    auto n = e.receive({&rx, 1});
    REQUIRE(n.has_value());
    CHECK(*n == 0);
}

TEMPLATE_TEST_CASE("a sent frame reaches the far side whole", "[netback][engine][contract][root]",
                   LoopSide, TapSide) {
    TestType side;
    const Bytes f = test_frame(1400, 5);
    const iovec iov[3] = {{const_cast<std::uint8_t*>(f.data()), 14},
                          {const_cast<std::uint8_t*>(f.data()) + 14, 0},
                          {const_cast<std::uint8_t*>(f.data()) + 14, f.size() - 14}};
    REQUIRE(side.engine->send({}, iov).has_value());
    const auto got = side.far_receive();
    REQUIRE(got.has_value());
    CHECK(*got == f);
}

TEMPLATE_TEST_CASE("a frame from the far side is received with a plain header",
                   "[netback][engine][contract][root]", LoopSide, TapSide) {
    TestType side;
    const Bytes f = test_frame(200, 9);
    side.far_send(f);
    NetEngine& e = *side.engine;
    REQUIRE(readable(e.notify_fd(), 2000));
    std::vector<std::byte> b(e.max_frame_bytes());
    RxBuffer rx[2] = {RxBuffer{b}, RxBuffer{b}};
    auto n = e.receive(rx);
    REQUIRE(n.has_value());
    REQUIRE(*n == 1);
    CHECK(rx[0].len == f.size());
    CHECK(std::memcmp(b.data(), f.data(), f.size()) == 0);
    CHECK(rx[0].hdr.gso_type == VnetHdr::GSO_NONE);
    CHECK((rx[0].hdr.flags & VnetHdr::F_NEEDS_CSUM) == 0);
}

TEMPLATE_TEST_CASE("hostile offload headers are refused and nothing reaches the far side",
                   "[netback][engine][contract][hostile][root]", LoopSide, TapSide) {
    TestType side;
    NetEngine& e = *side.engine;
    const Bytes f = test_frame(100, 1);
    const iovec iov{const_cast<std::uint8_t*>(f.data()), f.size()};
    VnetHdr h;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = 99;
    h.csum_offset = 0;  // the 2-byte field would end past the frame
    CHECK(e.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h.csum_start = 0xffff;
    h.csum_offset = 0xffff;
    CHECK(e.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h = {};
    h.gso_type = VnetHdr::GSO_TCPV4;
    h.gso_size = 1000;
    CHECK(e.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h.gso_type = 0x7f;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = 34;
    h.csum_offset = 16;
    CHECK(e.send(h, {&iov, 1}).error() == Errc::bad_offload);
    const iovec runt{const_cast<std::uint8_t*>(f.data()), 10};
    CHECK(e.send({}, {&runt, 1}).error() == Errc::frame_too_small);
    // A good frame after the bad ones is the first thing the far side sees.
    REQUIRE(e.send({}, {&iov, 1}).has_value());
    const auto got = side.far_receive();
    REQUIRE(got.has_value());
    CHECK(*got == f);
}

TEMPLATE_TEST_CASE("a receive buffer below max_frame_bytes is refused without losing the frame",
                   "[netback][engine][contract][hostile][root]", LoopSide, TapSide) {
    TestType side;
    NetEngine& e = *side.engine;
    const Bytes f = test_frame(300, 2);
    side.far_send(f);
    REQUIRE(readable(e.notify_fd(), 2000));
    std::vector<std::byte> small(1000);
    RxBuffer bad{small};
    CHECK(e.receive({&bad, 1}).error() == Errc::buffer_too_small);
    std::vector<std::byte> b(e.max_frame_bytes());
    RxBuffer ok{b};
    REQUIRE(*e.receive({&ok, 1}) == 1);
    CHECK(ok.len == f.size());
}

TEMPLATE_TEST_CASE("a frame from the far side is scattered over page buffers in order, and too "
                   "little room is refused without losing it",
                   "[netback][engine][contract][root]", LoopSide, TapSide) {
    TestType side;
    NetEngine& e = *side.engine;
    std::vector<std::byte> pages(18 * 4096);  // the largest frame (64 KiB + 14) in 17, and one
    std::vector<iovec> iov;
    for (std::size_t i = 0; i < 18; ++i) {
        iov.push_back({pages.data() + i * 4096, 4096});
    }
    VnetHdr h{};
    auto none = e.receive_scattered(h, iov);
    REQUIRE(none.has_value());
    CHECK(*none == 0);
    const Bytes f = test_frame(1400, 4);
    side.far_send(f);
    REQUIRE(readable(e.notify_fd(), 2000));
    // Less room than the engine's largest frame (a one-page buffer of a TSO-less tap is
    // enough, so ask with none at all).
    CHECK(e.receive_scattered(h, std::span(iov).first(0)).error() == Errc::buffer_too_small);
    // One byte at the end of the first page, the rest in the second: the order holds.
    std::vector<iovec> split = {{pages.data() + 4095, 1}};
    split.insert(split.end(), iov.begin() + 1, iov.end());
    auto n = e.receive_scattered(h, split);
    REQUIRE(n.has_value());
    REQUIRE(*n == f.size());
    CHECK(std::to_integer<std::uint8_t>(pages[4095]) == f[0]);
    CHECK(std::memcmp(pages.data() + 4096, f.data() + 1, f.size() - 1) == 0);
    CHECK(h.gso_type == VnetHdr::GSO_NONE);
}

TEST_CASE("every queue of a multi-queue tap sends and the device keeps running while one is open",
          "[netback][tap][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    TapConfig c;
    c.name = "vif4.0";
    c.netns_fd = ns->fd();
    c.queues = 2;
    auto tap = Tap::open(c);
    REQUIRE(tap.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    REQUIRE(nl->set_up("vif4.0", true).has_value());
    hv::UniqueFd pkt = ns->run([] {
        hv::UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5)));
        sockaddr_ll ll{};
        ll.sll_family = AF_PACKET;
        ll.sll_protocol = htons(0x88b5);
        ll.sll_ifindex = static_cast<int>(::if_nametoindex("vif4.0"));
        if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) {
            return hv::UniqueFd{};
        }
        return s;
    });
    REQUIRE(pkt.valid());
    auto q0 = tap->make_engine(0);
    auto q1 = tap->make_engine(1);
    REQUIRE(q0.has_value());
    REQUIRE(q1.has_value());
    CHECK(tap->make_engine(1).error() == std::errc::bad_file_descriptor);  // already taken
    CHECK(tap->make_engine(2).error() == std::errc::bad_file_descriptor);
    for (std::uint8_t q = 0; q < 2; ++q) {
        const Bytes f = test_frame(64, q);
        const iovec iov{const_cast<std::uint8_t*>(f.data()), f.size()};
        REQUIRE((q == 0 ? **q0 : **q1).send({}, {&iov, 1}).has_value());
        REQUIRE(readable(pkt.get(), 2000));
        Bytes b(2000);
        const ssize_t n = ::recv(pkt.get(), b.data(), b.size(), 0);
        REQUIRE(n == static_cast<ssize_t>(f.size()));
        b.resize(static_cast<std::size_t>(n));
        CHECK(b == f);
    }
    q0->reset();
    CHECK(nl->get_link("vif4.0").has_value());
    q1->reset();
    CHECK(nl->get_link("vif4.0").error() == std::errc::no_such_device);
}
