// hv::SockBatch: a batch of non-blocking recv/send over many sockets returns every result in
// queue order, never waits for a socket, and reports each socket's error to its own operation.
#include "hv/sock_batch.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <string>
#include <vector>

#include "hv/unique_fd.hpp"

namespace {

struct StreamPair {
    hv::UniqueFd a;
    hv::UniqueFd b;
};

StreamPair socket_pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    return {hv::UniqueFd(sv[0]), hv::UniqueFd(sv[1])};
}

hv::SockBatch make_batch(unsigned entries) {
    auto b = hv::SockBatch::create(entries);
    REQUIRE(b.has_value());
    return std::move(*b);
}

}  // namespace

TEST_CASE("a batch receives from 64 sockets and sends to them, results in queue order",
          "[common][sock_batch]") {
    hv::SockBatch batch = make_batch(64);
    std::vector<StreamPair> pairs;
    for (int i = 0; i < 64; ++i) {
        pairs.push_back(socket_pair());
        const std::string m = "request " + std::to_string(i);
        REQUIRE(::send(pairs.back().b.get(), m.data(), m.size(), 0) ==
                static_cast<ssize_t>(m.size()));
    }
    std::vector<std::string> bufs(64, std::string(256, '\0'));
    for (int i = 0; i < 64; ++i) {
        REQUIRE(batch.recv(pairs[i].a.get(), bufs[i].data(), bufs[i].size(), 1000 + i));
    }
    CHECK(batch.queued() == 64);
    std::vector<hv::SockBatch::Completion> done;
    batch.run(done);
    CHECK(batch.queued() == 0);
    REQUIRE(done.size() == 64);
    for (int i = 0; i < 64; ++i) {
        const std::string m = "request " + std::to_string(i);
        CHECK(done[i].cookie == static_cast<std::uint64_t>(1000 + i));
        REQUIRE(done[i].res == static_cast<ssize_t>(m.size()));
        CHECK(bufs[i].substr(0, m.size()) == m);
    }
    std::vector<std::string> replies;
    for (int i = 0; i < 64; ++i) {
        replies.push_back("reply " + std::to_string(i));
    }
    for (int i = 0; i < 64; ++i) {
        REQUIRE(batch.send(pairs[i].a.get(), replies[i].data(), replies[i].size(), i));
    }
    batch.run(done);
    REQUIRE(done.size() == 64);
    for (int i = 0; i < 64; ++i) {
        CHECK(done[i].res == static_cast<ssize_t>(replies[i].size()));
        char got[64] = {};
        REQUIRE(::recv(pairs[i].b.get(), got, sizeof got, MSG_DONTWAIT) ==
                static_cast<ssize_t>(replies[i].size()));
        CHECK(std::string(got) == replies[i]);
    }
}

TEST_CASE("a batch never waits: an empty socket gives EAGAIN, a full one a short send or EAGAIN",
          "[common][sock_batch]") {
    hv::SockBatch batch = make_batch(8);
    StreamPair empty = socket_pair();
    StreamPair full = socket_pair();
    int small = 4096;
    REQUIRE(::setsockopt(full.a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    const std::string big(1 << 20, 'x');
    char buf[16];
    REQUIRE(batch.recv(empty.a.get(), buf, sizeof buf, 1));
    REQUIRE(batch.send(full.a.get(), big.data(), big.size(), 2));
    REQUIRE(batch.send(full.a.get(), big.data(), big.size(), 3));
    std::vector<hv::SockBatch::Completion> done;
    batch.run(done);  // returns: nothing blocks although neither peer reads
    REQUIRE(done.size() == 3);
    CHECK(done[0].res == -EAGAIN);
    CHECK(done[1].res > 0);
    CHECK(done[1].res < static_cast<ssize_t>(big.size()));
    CHECK(done[2].res == -EAGAIN);  // the first send filled the buffer
}

TEST_CASE("each operation of a batch gets its own socket's error or EOF",
          "[common][sock_batch]") {
    hv::SockBatch batch = make_batch(8);
    StreamPair ok = socket_pair();
    StreamPair hung_up = socket_pair();
    hung_up.b.reset();  // the peer is gone: recv sees EOF, send EPIPE (and no SIGPIPE)
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    hv::UniqueFd pr(p[0]), pw(p[1]);
    REQUIRE(::send(ok.b.get(), "hi", 2, 0) == 2);
    char b1[8], b2[8], b3[8];
    REQUIRE(batch.recv(hung_up.a.get(), b1, sizeof b1, 1));
    REQUIRE(batch.send(hung_up.a.get(), "x", 1, 2));
    REQUIRE(batch.recv(pr.get(), b2, sizeof b2, 3));  // not a socket
    REQUIRE(batch.recv(ok.a.get(), b3, sizeof b3, 4));
    REQUIRE(batch.recv(-1, b3, sizeof b3, 5));
    std::vector<hv::SockBatch::Completion> done;
    batch.run(done);
    REQUIRE(done.size() == 5);
    CHECK(done[0].res == 0);
    CHECK(done[1].res == -EPIPE);
    CHECK(done[2].res == -ENOTSOCK);
    CHECK(done[3].res == 2);  // an error before it does not stop it
    CHECK(done[4].res == -EBADF);
}

TEST_CASE("a full batch refuses more and a batch of one is served too", "[common][sock_batch]") {
    hv::SockBatch batch = make_batch(2);
    StreamPair p = socket_pair();
    char buf[8];
    CHECK(batch.recv(p.a.get(), buf, sizeof buf, 1));
    CHECK(batch.send(p.a.get(), "a", 1, 2));
    CHECK_FALSE(batch.send(p.a.get(), "b", 1, 3));
    CHECK(batch.queued() == 2);
    std::vector<hv::SockBatch::Completion> done;
    batch.run(done);
    REQUIRE(done.size() == 2);
    CHECK(done[0].res == -EAGAIN);  // queue order: the recv ran before the send
    CHECK(done[1].res == 1);
    REQUIRE(batch.send(p.b.get(), "z", 1, 9));
    batch.run(done);  // one operation: a plain send(2)
    REQUIRE(done.size() == 1);
    CHECK(done[0].cookie == 9);
    CHECK(done[0].res == 1);
    batch.run(done);  // nothing queued
    CHECK(done.empty());
    CHECK_FALSE(hv::SockBatch::create(0).has_value());
}
