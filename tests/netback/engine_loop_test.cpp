// The loop engine through the NetEngine contract: frames and headers come back, full means busy
// with nothing queued, notify_fd is readable exactly while frames wait. And the sink engine:
// takes and drops every frame the offload check lets through.
#include <catch2/catch.hpp>

#include <poll.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "netback/engine.hpp"

namespace {

using namespace hv::net;

bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

std::vector<std::byte> frame(std::size_t n, unsigned char seed) {
    std::vector<std::byte> f(n);
    for (std::size_t i = 0; i < n; ++i) {
        f[i] = static_cast<std::byte>(seed + i);
    }
    return f;
}

}  // namespace

TEST_CASE("a frame sent on the loop engine comes back with its offload header",
          "[netback][engine][contract]") {
    auto e = make_loop_engine(4);
    REQUIRE(e.has_value());
    NetEngine& eng = **e;
    CHECK_FALSE(readable(eng.notify_fd()));
    auto f = frame(3000, 7);
    // Scattered: the header part and the payload part in two iovecs.
    const iovec iov[2] = {{f.data(), 54}, {f.data() + 54, f.size() - 54}};
    VnetHdr h;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.gso_type = VnetHdr::GSO_TCPV4;
    h.gso_size = 1448;
    h.hdr_len = 54;
    h.csum_start = 34;
    h.csum_offset = 16;
    REQUIRE(eng.send(h, iov).has_value());
    CHECK(readable(eng.notify_fd()));

    std::vector<std::byte> buf(eng.max_frame_bytes());
    RxBuffer rx{buf};
    auto n = eng.receive({&rx, 1});
    REQUIRE(n.has_value());
    REQUIRE(*n == 1);
    CHECK(rx.len == f.size());
    CHECK(std::memcmp(buf.data(), f.data(), f.size()) == 0);
    CHECK(rx.hdr.gso_size == 1448);
    CHECK(rx.hdr.csum_start == 34);
    CHECK_FALSE(readable(eng.notify_fd()));
    CHECK(*eng.receive({&rx, 1}) == 0);
}

TEST_CASE("a full loop engine answers busy and queues nothing", "[netback][engine][contract]") {
    auto e = make_loop_engine(2);
    REQUIRE(e.has_value());
    NetEngine& eng = **e;
    auto f = frame(60, 1);
    const iovec iov{f.data(), f.size()};
    REQUIRE(eng.send({}, {&iov, 1}).has_value());
    REQUIRE(eng.send({}, {&iov, 1}).has_value());
    auto r = eng.send({}, {&iov, 1});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == Errc::busy);
    std::vector<std::vector<std::byte>> bufs(3, std::vector<std::byte>(eng.max_frame_bytes()));
    std::vector<RxBuffer> rx;
    for (auto& b : bufs) {
        rx.push_back(RxBuffer{b});
    }
    CHECK(*eng.receive(rx) == 2);  // exactly the two accepted frames
    REQUIRE(eng.send({}, {&iov, 1}).has_value());  // room again after receiving
}

TEST_CASE("the loop engine refuses inconsistent offload headers and queues nothing",
          "[netback][engine][contract]") {
    auto e = make_loop_engine(4, Features{true, true, false});
    REQUIRE(e.has_value());
    NetEngine& eng = **e;
    auto f = frame(100, 3);
    const iovec iov{f.data(), f.size()};
    VnetHdr h;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = 90;
    h.csum_offset = 16;  // checksum field past the end of the frame
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h = {};
    h.gso_type = VnetHdr::GSO_TCPV4;
    h.gso_size = 1448;  // GSO without F_NEEDS_CSUM
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = 34;
    h.csum_offset = 16;
    h.gso_type = VnetHdr::GSO_TCPV6;  // not offered
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::frame_too_big);
    h.gso_type = 3;  // UDP: not a type we know
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h.gso_type = VnetHdr::GSO_TCPV4;
    h.gso_size = 0;
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::bad_offload);
    const iovec tiny{f.data(), 13};
    CHECK(eng.send({}, {&tiny, 1}).error() == Errc::frame_too_small);
    CHECK_FALSE(readable(eng.notify_fd()));
}

TEST_CASE("the loop engine refuses a receive buffer below max_frame_bytes",
          "[netback][engine][contract]") {
    auto e = make_loop_engine(4);
    REQUIRE(e.has_value());
    auto f = frame(60, 1);
    const iovec iov{f.data(), f.size()};
    REQUIRE((*e)->send({}, {&iov, 1}).has_value());
    std::vector<std::byte> small(1500);
    RxBuffer rx{small};
    CHECK((*e)->receive({&rx, 1}).error() == Errc::buffer_too_small);
    std::vector<std::byte> big((*e)->max_frame_bytes());
    RxBuffer ok{big};
    CHECK(*(*e)->receive({&ok, 1}) == 1);  // the frame was not lost
}

TEST_CASE("the sink engine takes every good frame, returns none and is never readable",
          "[netback][engine][contract]") {
    auto e = make_sink_engine();
    REQUIRE(e.has_value());
    NetEngine& eng = **e;
    CHECK(eng.max_frame_bytes() == max_gso_frame_bytes);
    auto f = frame(3000, 5);
    const iovec iov[2] = {{f.data(), 54}, {f.data() + 54, f.size() - 54}};
    VnetHdr h;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.gso_type = VnetHdr::GSO_TCPV4;
    h.gso_size = 1448;
    h.csum_start = 34;
    h.csum_offset = 16;
    for (int i = 0; i < 1000; ++i) {  // never busy: it holds nothing
        REQUIRE(eng.send(h, iov).has_value());
    }
    CHECK_FALSE(readable(eng.notify_fd()));
    std::vector<std::byte> buf(eng.max_frame_bytes());
    RxBuffer rx{buf};
    auto n = eng.receive({&rx, 1});
    REQUIRE(n.has_value());
    CHECK(*n == 0);
}

TEST_CASE("the sink engine refuses what every engine refuses", "[netback][engine][contract]") {
    auto e = make_sink_engine(Features{true, true, false});
    REQUIRE(e.has_value());
    NetEngine& eng = **e;
    auto f = frame(100, 3);
    const iovec iov{f.data(), f.size()};
    VnetHdr h;
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = 90;
    h.csum_offset = 16;  // checksum field past the end of the frame
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::bad_offload);
    h.csum_start = 34;
    h.gso_type = VnetHdr::GSO_TCPV6;  // not offered
    h.gso_size = 1448;
    CHECK(eng.send(h, {&iov, 1}).error() == Errc::frame_too_big);
    const iovec tiny{f.data(), 13};
    CHECK(eng.send({}, {&tiny, 1}).error() == Errc::frame_too_small);
    auto no_csum = make_sink_engine(Features{false, false, false});
    REQUIRE(no_csum.has_value());
    h = {};
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = 34;
    h.csum_offset = 16;
    CHECK((*no_csum)->send(h, {&iov, 1}).error() == Errc::bad_offload);
}

TEST_CASE("the loop engine scatters a frame over caller pages in order, and refuses buffers "
          "smaller than its largest frame", "[netback][engine][contract]") {
    auto e = make_loop_engine(4);
    REQUIRE(e.has_value());
    NetEngine& eng = **e;
    std::vector<std::byte> pages(17 * 4096);
    std::vector<iovec> iov;
    for (std::size_t i = 0; i < 17; ++i) {
        iov.push_back({pages.data() + i * 4096, 4096});
    }
    VnetHdr got{};
    auto none = eng.receive_scattered(got, iov);
    REQUIRE(none.has_value());
    CHECK(*none == 0);
    const auto f = frame(20000, 3);
    const iovec one{const_cast<std::byte*>(f.data()), f.size()};
    VnetHdr h;
    h.flags = VnetHdr::F_DATA_VALID;
    REQUIRE(eng.send(h, {&one, 1}).has_value());
    // Too little room: refused, the frame stays queued.
    auto small = eng.receive_scattered(got, std::span(iov).first(15));
    REQUIRE_FALSE(small.has_value());
    CHECK(small.error() == make_error_code(Errc::buffer_too_small));
    CHECK(readable(eng.notify_fd()));
    auto n = eng.receive_scattered(got, iov);
    REQUIRE(n.has_value());
    CHECK(*n == f.size());
    CHECK(got.flags == VnetHdr::F_DATA_VALID);
    CHECK(std::memcmp(pages.data(), f.data(), f.size()) == 0);
    CHECK_FALSE(readable(eng.notify_fd()));
}

TEST_CASE("an engine that does not scatter says so", "[netback][engine][contract]") {
    auto e = make_sink_engine();
    REQUIRE(e.has_value());
    VnetHdr h{};
    std::vector<std::byte> page(4096);
    const iovec iov{page.data(), page.size()};
    auto r = (*e)->receive_scattered(h, {&iov, 1});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == std::errc::operation_not_supported);
}
