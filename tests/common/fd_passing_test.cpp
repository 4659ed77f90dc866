// hv::send_fds / hv::recv_fds: round trip, limits, truncation (data and control), EOF.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "hv/fd_passing.hpp"

using namespace hv;

namespace {

struct Pair {
    UniqueFd a;
    UniqueFd b;
    explicit Pair(int type) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
};

std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        ++n;
    }
    return n;
}

ino_t inode(int fd) {
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    return st.st_ino;
}

std::vector<UniqueFd> eventfds(std::size_t n) {
    std::vector<UniqueFd> v;
    for (std::size_t i = 0; i < n; ++i) {
        v.emplace_back(::eventfd(0, EFD_CLOEXEC));
        REQUIRE(v.back().valid());
    }
    return v;
}

std::vector<int> raw(const std::vector<UniqueFd>& v) {
    std::vector<int> r;
    for (const auto& f : v) {
        r.push_back(f.get());
    }
    return r;
}

}  // namespace

TEST_CASE("send_fds and recv_fds carry bytes and fds, which arrive close-on-exec", "[common][fds]") {
    const int type = GENERATE(SOCK_SEQPACKET, SOCK_STREAM);
    Pair p(type);
    auto efds = eventfds(3);
    const std::string msg = "hello";
    auto s = send_fds(p.a.get(), std::as_bytes(std::span(msg)), raw(efds));
    REQUIRE(s);
    CHECK(*s == msg.size());
    std::array<std::byte, 64> buf{};
    auto r = recv_fds(p.b.get(), buf, 8);
    REQUIRE(r);
    CHECK(r->bytes == msg.size());
    CHECK(std::string(reinterpret_cast<const char*>(buf.data()), r->bytes) == msg);
    REQUIRE(r->fds.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(inode(r->fds[i].get()) == inode(efds[i].get()));
        CHECK((::fcntl(r->fds[i].get(), F_GETFD) & FD_CLOEXEC) != 0);
    }
    CHECK_FALSE(r->eof);
    CHECK_FALSE(r->data_truncated);
    CHECK_FALSE(r->fds_truncated);
    // A value and no fds.
    const int v = 42;
    REQUIRE(send_fds(p.a.get(), bytes_of(v), {}));
    int got = 0;
    r = recv_fds(p.b.get(), writable_bytes_of(got), 1);
    REQUIRE(r);
    CHECK(r->bytes == sizeof got);
    CHECK(got == 42);
    CHECK(r->fds.empty());
}

TEST_CASE("more fds than the kernel passes are refused before sending", "[common][fds]") {
    Pair p(SOCK_SEQPACKET);
    auto efds = eventfds(kMaxPassedFds + 1);
    const char c = 'x';
    auto s = send_fds(p.a.get(), bytes_of(c), raw(efds));
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::errc::argument_list_too_long);
    // Exactly the limit goes through.
    const std::vector<int> all = raw(efds);
    auto at_limit = send_fds(p.a.get(), bytes_of(c), std::span(all).first(kMaxPassedFds));
    REQUIRE(at_limit);
    std::array<std::byte, 4> buf{};
    auto r = recv_fds(p.b.get(), buf, kMaxPassedFds);
    REQUIRE(r);
    CHECK(r->fds.size() == kMaxPassedFds);
    CHECK_FALSE(r->fds_truncated);
    // A receiver cannot ask for more than the kernel could send.
    auto bad = recv_fds(p.b.get(), buf, kMaxPassedFds + 1, MSG_DONTWAIT);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == std::errc::invalid_argument);
}

TEST_CASE("fds beyond what the receiver accepts are reported truncated and none leak", "[common][fds]") {
    Pair p(SOCK_SEQPACKET);
    const std::size_t before = open_fds();
    {
        auto efds = eventfds(5);
        const char c = 'x';
        REQUIRE(send_fds(p.a.get(), bytes_of(c), raw(efds)));
    }
    std::array<std::byte, 4> buf{};
    auto r = recv_fds(p.b.get(), buf, 2);
    REQUIRE(r);
    CHECK(r->fds_truncated);
    CHECK_FALSE(r->eof);
    CHECK(r->bytes == 1);
    CHECK(r->fds.size() <= 2);
    for (const auto& f : r->fds) {
        CHECK(f.valid());
    }
    r->fds.clear();
    CHECK(open_fds() == before);  // the kernel closed what did not fit; we closed the rest
    // No fds accepted at all: every fd sent is dropped, still reported.
    {
        auto efds = eventfds(1);
        const char c = 'y';
        REQUIRE(send_fds(p.a.get(), bytes_of(c), raw(efds)));
    }
    r = recv_fds(p.b.get(), buf, 0);
    REQUIRE(r);
    CHECK(r->fds.empty());
    CHECK(r->fds_truncated);
    CHECK(open_fds() == before);
}

TEST_CASE("a datagram longer than the buffer is reported truncated", "[common][fds]") {
    Pair p(SOCK_SEQPACKET);
    const std::string big(100, 'z');
    REQUIRE(send_fds(p.a.get(), std::as_bytes(std::span(big)), {}));
    std::array<std::byte, 10> buf{};
    auto r = recv_fds(p.b.get(), buf, 1);
    REQUIRE(r);
    CHECK(r->bytes == buf.size());
    CHECK(r->data_truncated);
}

TEST_CASE("recv_fds reports EOF, EAGAIN, and send_fds refuses empty data and bad fds", "[common][fds]") {
    const int type = GENERATE(SOCK_SEQPACKET, SOCK_STREAM);
    Pair p(type);
    std::array<std::byte, 8> buf{};
    auto again = recv_fds(p.b.get(), buf, 1, MSG_DONTWAIT);
    REQUIRE_FALSE(again);
    CHECK(again.error() == std::errc::resource_unavailable_try_again);
    auto empty = send_fds(p.a.get(), {}, {});
    REQUIRE_FALSE(empty);
    CHECK(empty.error() == std::errc::invalid_argument);
    const char c = 'x';
    const int closed[] = {-1};
    auto badfd = send_fds(p.a.get(), bytes_of(c), closed);
    REQUIRE_FALSE(badfd);
    CHECK(badfd.error() == std::errc::bad_file_descriptor);
    p.a.reset();
    auto r = recv_fds(p.b.get(), buf, 1);
    REQUIRE(r);
    CHECK(r->eof);
    CHECK(r->bytes == 0);
    CHECK(r->fds.empty());
    // Sending to a closed peer: EPIPE, and no SIGPIPE kills the test.
    Pair q(type);
    q.b.reset();
    auto pipe = send_fds(q.a.get(), bytes_of(c), {});
    REQUIRE_FALSE(pipe);
    CHECK(pipe.error() == std::errc::broken_pipe);
}
