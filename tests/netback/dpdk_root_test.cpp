// The DPDK engine (netback/dpdk.hpp) against real peers: a vhost-user server port with a
// dpdk-testpmd virtio-user peer forwarding every frame back (io mode, loop topology), and an
// af_packet port on a veth inside the test's own namespace. Each test case is its own process
// (one EAL each).
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "frames.hpp"
#include "netback/dpdk.hpp"
#include "netback/netlink.hpp"
#include "netns.hpp"
#include "skip.hpp"
#include "temp_dir.hpp"
#include "testpmd.hpp"

using namespace hv::net;
using namespace hv::test::net;
using namespace std::chrono_literals;

namespace {

const Mac kA{0x02, 0, 0, 0, 0, 0x0a};
const Mac kB{0x02, 0, 0, 0, 0, 0x0b};

void skip_without_dpdk() {
    hv::test::skip_unless(dpdk_built(), "netback was built without DPDK (no libdpdk-dev)");
}

hv::Result<void> send_bytes(NetEngine& e, const Bytes& f, const VnetHdr& h = {}) {
    iovec iov{const_cast<std::uint8_t*>(f.data()), f.size()};
    return e.send(h, std::span<const iovec>(&iov, 1));
}

/// Frames received within `timeout` (waiting on notify_fd), until `want` arrived. Their
/// headers go to `hdrs` when given; otherwise each must be flags 0 (a complete checksum).
std::vector<Bytes> receive_frames(NetEngine& e, std::size_t want,
                                  std::chrono::milliseconds timeout,
                                  std::vector<VnetHdr>* hdrs = nullptr) {
    std::vector<Bytes> got;
    std::vector<std::byte> store(e.max_frame_bytes() * 8);
    std::array<RxBuffer, 8> bufs;
    for (std::size_t i = 0; i < bufs.size(); ++i) {
        bufs[i].data =
            std::span<std::byte>(store).subspan(i * e.max_frame_bytes(), e.max_frame_bytes());
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
        auto n = e.receive(bufs);
        REQUIRE(n.has_value());
        for (unsigned i = 0; i < *n; ++i) {
            const auto* p = reinterpret_cast<const std::uint8_t*>(bufs[i].data.data());
            got.emplace_back(p, p + bufs[i].len);
            if (hdrs != nullptr) {
                hdrs->push_back(bufs[i].hdr);
            } else {
                CHECK(bufs[i].hdr.flags == 0);
            }
        }
        if (*n == 0) {
            pollfd pfd{e.notify_fd(), POLLIN, 0};
            (void)::poll(&pfd, 1, 50);
        }
    }
    return got;
}

/// 10.9.0.1:4000 -> 10.9.0.2:5000, sequence number 1000.
TcpSpec tcp_spec(std::uint8_t flags = tcpf::ACK | tcpf::PSH) {
    TcpSpec t;
    t.src = kA;
    t.dst = kB;
    t.s = ip4("10.9.0.1");
    t.d = ip4("10.9.0.2");
    t.sport = 4000;
    t.dport = 5000;
    t.seq = 1000;
    t.flags = flags;
    return t;
}

/// A TCP/IPv4 frame of `payload` with a partial checksum, as a guest's TSO hands it over.
Bytes tso_frame_v4(const Bytes& payload, std::uint8_t flags = tcpf::ACK | tcpf::PSH) {
    return tcp_frame(tcp_spec(flags), payload, true);
}

/// The same over IPv6 (fd00::1 -> fd00::2), built here: frames.hpp speaks IPv4 only.
Bytes tso_frame_v6(const Bytes& payload) {
    Bytes f(14 + 40 + 20);
    std::memcpy(f.data(), kB.data(), 6);
    std::memcpy(f.data() + 6, kA.data(), 6);
    f[12] = 0x86;
    f[13] = 0xdd;
    std::uint8_t* ip = f.data() + 14;
    ip[0] = 0x60;
    const std::size_t plen = 20 + payload.size();
    ip[4] = static_cast<std::uint8_t>(plen >> 8);
    ip[5] = static_cast<std::uint8_t>(plen);
    ip[6] = 6;
    ip[7] = 64;
    ip[8] = 0xfd;
    ip[23] = 1;
    ip[24] = 0xfd;
    ip[39] = 2;
    std::uint8_t* tcp = ip + 40;
    tcp[1] = 0x10;  // sport 16 -> dport 32
    tcp[3] = 0x20;
    tcp[4] = 0x12;  // seq 0x12000000
    tcp[12] = 0x50;
    tcp[13] = tcpf::ACK;
    tcp[14] = 0xff;
    tcp[15] = 0xff;
    f.insert(f.end(), payload.begin(), payload.end());
    return f;
}

/// The TCP checksum of an IPv6 frame is right (pseudo-header: addresses, length, next header).
bool tcp6_csum_ok(const Bytes& f) {
    const std::span<const std::uint8_t> tcp(f.data() + 54, f.size() - 54);
    std::uint32_t ps = 0;
    for (std::size_t i = 0; i < 32; i += 2) {
        ps += static_cast<std::uint32_t>(f[22 + i] << 8 | f[23 + i]);
    }
    ps += 6 + static_cast<std::uint32_t>(tcp.size());
    return inet_checksum(tcp, ps) == 0;
}

VnetHdr tso_hdr(std::uint8_t type, std::uint16_t l4, std::uint16_t mss) {
    VnetHdr h;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.gso_type = type;
    h.gso_size = mss;
    h.csum_start = l4;
    h.csum_offset = 16;
    h.hdr_len = static_cast<std::uint16_t>(l4 + 20);
    return h;
}

bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!cond()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

Bytes numbered_frame(std::uint32_t n, std::size_t len) {
    Bytes f = icmp_echo(kA, kB, ip4("10.9.0.1"), ip4("10.9.0.2"), 7, static_cast<std::uint16_t>(n),
                        len > 42 ? len - 42 : 0);
    return f;
}

}  // namespace

TEST_CASE("a DPDK vhost-user port exchanges frames with a testpmd peer", "[netback][dpdk][root]") {
    skip_without_dpdk();
    const std::string testpmd = hv::test::find_testpmd();
    hv::test::skip_unless(!testpmd.empty(), "dpdk-testpmd not installed (Debian: dpdk)");
    hv::test::TempDir dir("hvkit-dpdk");
    const std::string sock = (dir / "vif.sock").string();

    DpdkPortConfig c;
    c.name = "net_vhost_t0";
    c.args = vhost_server_args(sock, 1);
    auto port = DpdkPort::open(c);
    REQUIRE(port.has_value());
    CHECK(dpdk_eal_running());
    struct stat st {};
    REQUIRE(::lstat(sock.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    auto eng = (*port)->make_engine(0);
    REQUIRE(eng.has_value());
    NetEngine& e = **eng;
    CHECK(e.features().csum);
    CHECK(e.features().tso4);
    CHECK(e.features().tso6);
    CHECK(e.max_frame_bytes() == 1500 + 18);

    // No peer yet: the link is down and a frame is dropped with ENETDOWN (not busy: netback
    // must not hold the guest's tx ring for a switch that is not there).
    CHECK_FALSE((*port)->link_up());
    auto down = send_bytes(e, numbered_frame(0, 60));
    REQUIRE_FALSE(down.has_value());
    CHECK(down.error() == std::errc::network_down);

    struct RunDir {
        ~RunDir() { hv::test::remove_testpmd_rundir(::getpid()); }
    } rundir;
    auto pmd = hv::test::start_testpmd(testpmd, {sock}, "loop", (dir / "testpmd.log").string());
    REQUIRE(pmd.has_value());
    const bool up = wait_for([&] { return (*port)->link_up(); }, 30s);
    if (!up) {
        std::ifstream log(dir / "testpmd.log");
        std::string s((std::istreambuf_iterator<char>(log)), {});
        FAIL("testpmd never connected:\n" << s);
    }

    SECTION("frames of every size come back byte-exact, in order") {
        std::vector<Bytes> sent;
        for (std::size_t len : {60UL, 61UL, 128UL, 1000UL, 1514UL, 1518UL}) {
            sent.push_back(numbered_frame(static_cast<std::uint32_t>(sent.size()), len));
        }
        // testpmd starts forwarding a moment after the link is up: retry the first frame.
        std::vector<Bytes> got;
        for (int attempt = 0; attempt < 50 && got.empty(); ++attempt) {
            auto s = send_bytes(e, sent[0]);
            INFO(attempt << ": " << (s ? "sent" : s.error().message()));
            REQUIRE((s.has_value() || s.error() == Errc::busy));
            got = receive_frames(e, 1, 200ms);
        }
        REQUIRE(got.size() >= 1);
        (void)receive_frames(e, 1000, 300ms);  // the retries' echoes
        for (const Bytes& f : sent) {
            REQUIRE(send_bytes(e, f).has_value());
        }
        got = receive_frames(e, sent.size(), 5s);
        REQUIRE(got.size() == sent.size());
        for (std::size_t i = 0; i < sent.size(); ++i) {
            CHECK(got[i] == sent[i]);
        }
        // 2000 frames in batches of 32, each batch received back before the next.
        std::uint32_t next = 100;
        std::size_t lost = 0;
        for (int batch = 0; batch < 62; ++batch) {
            std::vector<Bytes> b;
            for (int i = 0; i < 32; ++i) {
                b.push_back(numbered_frame(next++, 60 + 23 * static_cast<std::size_t>(i)));
                auto s = send_bytes(e, b.back());
                REQUIRE(s.has_value());
            }
            auto r = receive_frames(e, b.size(), 5s);
            lost += b.size() - std::min(b.size(), r.size());
            for (std::size_t i = 0; i < std::min(b.size(), r.size()); ++i) {
                CHECK(r[i] == b[i]);
            }
        }
        CHECK(lost == 0);
    }

    SECTION("a TSO frame leaves as MSS-sized segments with their own headers and checksums") {
        Bytes payload(20000);
        for (std::size_t i = 0; i < payload.size(); ++i) {
            payload[i] = static_cast<std::uint8_t>(i * 7 + 3);
        }
        // Wait for forwarding with small frames first.
        std::vector<Bytes> got;
        for (int attempt = 0; attempt < 50 && got.empty(); ++attempt) {
            auto s = send_bytes(e, numbered_frame(0, 60));
            REQUIRE((s.has_value() || s.error() == Errc::busy));
            got = receive_frames(e, 1, 200ms);
        }
        REQUIRE(got.size() == 1);
        (void)receive_frames(e, 1000, 300ms);

        REQUIRE(send_bytes(e, tso_frame_v4(payload, tcpf::ACK | tcpf::PSH | tcpf::FIN),
                           tso_hdr(VnetHdr::GSO_TCPV4, 34, 1448))
                    .has_value());
        got = receive_frames(e, 14, 5s);  // ceil(20000 / 1448)
        REQUIRE(got.size() == 14);
        Bytes joined;
        for (std::size_t i = 0; i < got.size(); ++i) {
            auto p = parse(got[i]);
            REQUIRE(p.has_value());
            CHECK(p->ip_csum_ok);
            CHECK(p->l4_csum_ok);
            CHECK(p->seq == 1000 + 1448 * i);
            CHECK(p->payload_len == (i + 1 < got.size() ? 1448 : 20000 - 13 * 1448));
            CHECK(((p->tcp_flags & (tcpf::FIN | tcpf::PSH)) != 0) == (i + 1 == got.size()));
            joined.insert(joined.end(), got[i].begin() + static_cast<long>(p->payload_off),
                          got[i].begin() + static_cast<long>(p->payload_off + p->payload_len));
        }
        CHECK(joined == payload);

        REQUIRE(send_bytes(e, tso_frame_v6(payload), tso_hdr(VnetHdr::GSO_TCPV6, 54, 1400))
                    .has_value());
        got = receive_frames(e, 15, 5s);  // ceil(20000 / 1400)
        REQUIRE(got.size() == 15);
        joined.clear();
        for (std::size_t i = 0; i < got.size(); ++i) {
            const Bytes& g = got[i];
            CHECK(tcp6_csum_ok(g));
            CHECK(static_cast<std::size_t>(g[18] << 8 | g[19]) == g.size() - 54);
            const std::uint32_t seq =
                static_cast<std::uint32_t>(g[58] << 24 | g[59] << 16 | g[60] << 8 | g[61]);
            CHECK(seq == 0x12000000U + 1400 * i);
            joined.insert(joined.end(), g.begin() + 74, g.end());
        }
        CHECK(joined == payload);
    }

    SECTION("a frame with F_NEEDS_CSUM leaves with its checksum completed") {
        const Bytes payload(333, 0x5a);
        const Bytes partial = tso_frame_v4(payload);
        const Bytes full = tcp_frame(tcp_spec(), payload, false);
        REQUIRE(partial != full);
        VnetHdr h;
        h.flags = VnetHdr::F_NEEDS_CSUM;
        h.csum_start = 14 + 20;
        h.csum_offset = 16;
        std::vector<Bytes> got;
        for (int attempt = 0; attempt < 50 && got.empty(); ++attempt) {
            auto s = send_bytes(e, partial, h);
            INFO(attempt << ": " << (s ? "sent" : s.error().message()));
            REQUIRE((s.has_value() || s.error() == Errc::busy));
            got = receive_frames(e, 1, 200ms);
        }
        REQUIRE(got.size() >= 1);
        CHECK(got[0] == full);
        auto p = parse(got[0]);
        REQUIRE(p.has_value());
        CHECK(p->l4_csum_ok);
    }

    // The peer goes away: the link drops and frames are refused with ENETDOWN again.
    pmd->terminate();
    REQUIRE(wait_for([&] { return !(*port)->link_up(); }, 10s));
    auto after = send_bytes(e, numbered_frame(1, 60));
    REQUIRE_FALSE(after.has_value());
    CHECK(after.error() == std::errc::network_down);
    eng->reset();
    port->reset();
    CHECK_FALSE(std::filesystem::exists(sock));  // the server's socket goes with the port
}

TEST_CASE("a frame the switch sends with a partial checksum reaches the frontend marked blank, "
          "or completed for one that takes no blank checksums",
          "[netback][dpdk][root]") {
    skip_without_dpdk();
    const std::string testpmd = hv::test::find_testpmd();
    hv::test::skip_unless(!testpmd.empty(), "dpdk-testpmd not installed (Debian: dpdk)");
    const bool blank = GENERATE(true, false);  // whether the frontend takes blank checksums
    INFO("frontend takes blank checksums: " << blank);
    hv::test::TempDir dir("hvkit-dpdk");
    const std::string sock = (dir / "vif.sock").string();
    DpdkPortConfig c;
    c.name = "net_vhost_t2";
    c.args = vhost_server_args(sock, 1);
    c.rx_csum = blank;
    auto port = DpdkPort::open(c);
    REQUIRE(port.has_value());
    auto eng = (*port)->make_engine(0, Features{blank, false, false});
    REQUIRE(eng.has_value());
    // testpmd's csum engine hands every TCP frame back with its checksum left to the device
    // (virtio's NEEDS_CSUM, the pseudo-header sum in the field), as OVS-DPDK forwards a
    // guest's partial checksum. It also rewrites the Ethernet addresses.
    const std::string cmds = (dir / "testpmd.cmds").string();
    {
        std::ofstream f(cmds);
        f << "port stop 0\ncsum set tcp hw 0\nport start 0\n";
    }
    struct RunDir {
        ~RunDir() { hv::test::remove_testpmd_rundir(::getpid()); }
    } rundir;
    auto pmd = hv::test::start_testpmd(testpmd, {sock}, "loop", (dir / "testpmd.log").string(),
                                       "csum", cmds);
    REQUIRE(pmd.has_value());
    const Bytes payload(333, 0x5a);
    const Bytes full = tcp_frame(tcp_spec(), payload, false);
    std::vector<Bytes> got;
    std::vector<VnetHdr> hdrs;
    for (int attempt = 0; attempt < 100 && got.empty(); ++attempt) {
        auto s = send_bytes(**eng, full);
        REQUIRE((s.has_value() || s.error() == Errc::busy ||
                 s.error() == std::errc::network_down));
        got = receive_frames(**eng, 1, 200ms, &hdrs);
    }
    std::ifstream log(dir / "testpmd.log");
    INFO(std::string((std::istreambuf_iterator<char>(log)), {}));
    REQUIRE(got.size() >= 1);
    REQUIRE(got[0].size() == full.size());
    const Bytes partial = tso_frame_v4(payload);
    // Past the Ethernet addresses: the frame as sent, its checksum blank or complete.
    const Bytes want = blank ? partial : full;
    CHECK(std::equal(got[0].begin() + 12, got[0].end(), want.begin() + 12));
    if (blank) {
        CHECK(hdrs[0].flags == VnetHdr::F_NEEDS_CSUM);
        CHECK(hdrs[0].csum_start == 14 + 20);
        CHECK(hdrs[0].csum_offset == 16);
    } else {
        CHECK(hdrs[0].flags == 0);
        auto p = parse(got[0]);
        REQUIRE(p.has_value());
        CHECK(p->l4_csum_ok);
    }
}

TEST_CASE("the DPDK engine refuses bad frames, buffers, queues and configurations",
          "[netback][dpdk][root][hostile]") {
    skip_without_dpdk();
    hv::test::TempDir dir("hvkit-dpdk");
    const std::string sock = (dir / "vif.sock").string();
    // A stale socket at the path (a netback that died) is replaced.
    {
        hv::UniqueFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, sock.c_str(), sizeof a.sun_path - 1);
        REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    }
    DpdkPortConfig c;
    c.name = "net_vhost_t1";
    c.args = vhost_server_args(sock, 1);
    auto port = DpdkPort::open(c);
    REQUIRE(port.has_value());
    // The EAL is started now: its arguments can no longer change.
    CHECK(dpdk_set_eal_args("--no-huge").error() ==
          std::errc::connection_already_in_progress);  // EALREADY

    auto eng = (*port)->make_engine(0);
    REQUIRE(eng.has_value());
    NetEngine& e = **eng;
    CHECK((*port)->make_engine(1).error() == std::errc::invalid_argument);

    Bytes small(13, 0);
    CHECK(send_bytes(e, small).error() == Errc::frame_too_small);
    Bytes big(1519, 0);
    CHECK(send_bytes(e, big).error() == Errc::frame_too_big);
    Bytes f = numbered_frame(0, 100);
    VnetHdr past;
    past.flags = VnetHdr::F_NEEDS_CSUM;
    past.csum_start = 90;
    past.csum_offset = 16;  // 90 + 16 + 2 > 100
    CHECK(send_bytes(e, f, past).error() == Errc::bad_offload);
    // TSO frames whose headers do not match their virtio-net header.
    const Bytes tcp = tso_frame_v4(Bytes(5000, 1));
    VnetHdr gso = tso_hdr(VnetHdr::GSO_TCPV4, 34, 1448);
    CHECK(send_bytes(e, f, gso).error() == Errc::bad_offload);  // ICMP, not TCP
    VnetHdr v6 = tso_hdr(VnetHdr::GSO_TCPV6, 34, 1448);
    CHECK(send_bytes(e, tcp, v6).error() == Errc::bad_offload);  // IPv4 frame called TCPv6
    VnetHdr off = gso;
    off.csum_offset = 6;  // the UDP checksum field
    CHECK(send_bytes(e, tcp, off).error() == Errc::bad_offload);
    VnetHdr start = gso;
    start.csum_start = 38;  // not where the IPv4 header ends
    CHECK(send_bytes(e, tcp, start).error() == Errc::bad_offload);
    VnetHdr tiny_mss = gso;
    tiny_mss.gso_size = 16;  // 5000 / 16 > 256 segments
    CHECK(send_bytes(e, tcp, tiny_mss).error() == Errc::bad_offload);
    VnetHdr huge_mss = gso;
    huge_mss.gso_size = 3000;  // segments above the port's 1518-byte frames
    CHECK(send_bytes(e, tcp, huge_mss).error() == Errc::frame_too_big);
    Bytes bad_thl = tcp;
    bad_thl[34 + 12] = 0x40;  // TCP data offset 4 words: shorter than a TCP header
    CHECK(send_bytes(e, bad_thl, gso).error() == Errc::bad_offload);

    std::vector<std::byte> tiny(100);
    std::array<RxBuffer, 1> b{RxBuffer{std::span<std::byte>(tiny)}};
    CHECK(e.receive(b).error() == Errc::buffer_too_small);

    DpdkPortConfig bad = c;
    bad.name = "net_vhost_t2";
    bad.args = vhost_server_args((dir / "x.sock").string(), 1);
    bad.queues = 0;
    CHECK(DpdkPort::open(bad).error() == std::errc::invalid_argument);
    bad.queues = 1;
    bad.mtu = 40;
    CHECK(DpdkPort::open(bad).error() == std::errc::invalid_argument);
    DpdkPortConfig nodrv;
    nodrv.name = "net_nosuchdriver0";
    CHECK_FALSE(DpdkPort::open(nodrv).has_value());
    // A path that is not a socket is never removed to make room.
    const auto file = dir / "file.sock";
    std::ofstream(file) << "keep";
    DpdkPortConfig taken = c;
    taken.name = "net_vhost_t3";
    taken.args = vhost_server_args(file.string(), 1);
    CHECK(DpdkPort::open(taken).error() == std::errc::file_exists);
    CHECK(std::filesystem::is_regular_file(file));
    // The EAL's runtime directory is not left behind.
    CHECK_FALSE(std::filesystem::exists("/var/run/dpdk/hvnb-" + std::to_string(::getpid())));
}

TEST_CASE("a DPDK af_packet port on a veth in the test's namespace sends and receives",
          "[netback][dpdk][root]") {
    skip_without_dpdk();
    hv::test::require_root();
    auto ns = hv::test::NetNs::create("hvdpdk");
    REQUIRE(ns.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    REQUIRE(nl->create_veth("dpa", "dpb").has_value());
    REQUIRE(nl->set_up("dpa", true).has_value());
    REQUIRE(nl->set_up("dpb", true).has_value());

    DpdkPortConfig c;
    c.name = "net_af_packet_t0";
    c.args = "iface=dpa,qpairs=1";
    c.netns_fd = ns->fd();
    auto port = DpdkPort::open(c);
    REQUIRE(port.has_value());
    auto eng = (*port)->make_engine(0);
    REQUIRE(eng.has_value());
    NetEngine& e = **eng;

    // The peer: a packet socket on dpb, inside the namespace.
    hv::UniqueFd ps = ns->run([] {
        return hv::UniqueFd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    });
    REQUIRE(ps);
    const int ifindex = ns->run([] { return static_cast<int>(::if_nametoindex("dpb")); });
    REQUIRE(ifindex > 0);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = ifindex;
    REQUIRE(::bind(ps.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll) == 0);

    // engine -> dpb
    const Bytes out = numbered_frame(42, 300);
    REQUIRE(send_bytes(e, out).has_value());
    bool seen = false;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!seen && std::chrono::steady_clock::now() < deadline) {
        pollfd pfd{ps.get(), POLLIN, 0};
        if (::poll(&pfd, 1, 100) <= 0) {
            continue;
        }
        std::uint8_t buf[2048];
        const ssize_t n = ::recv(ps.get(), buf, sizeof buf, 0);
        seen =
            n == static_cast<ssize_t>(out.size()) && std::memcmp(buf, out.data(), out.size()) == 0;
    }
    CHECK(seen);

    // dpb -> engine (the namespace's own IPv6 chatter may arrive too: look for ours)
    const Bytes in = numbered_frame(43, 700);
    REQUIRE(::send(ps.get(), in.data(), in.size(), 0) == static_cast<ssize_t>(in.size()));
    bool got = false;
    const auto d2 = std::chrono::steady_clock::now() + 5s;
    while (!got && std::chrono::steady_clock::now() < d2) {
        for (const Bytes& f : receive_frames(e, 1, 200ms)) {
            got = got || f == in;
        }
    }
    CHECK(got);
}
