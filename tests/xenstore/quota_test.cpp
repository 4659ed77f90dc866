// Quotas (xen-abi.md §4.8): each limit gives ENOSPC to an unprivileged domain; dom0 is exempt.
#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

namespace {
ServerConfig small_quotas() {
    ServerConfig cfg;
    cfg.quotas.nodes = 10;
    cfg.quotas.watches = 4;
    cfg.quotas.transactions = 2;
    cfg.quotas.transaction_nodes = 8;
    cfg.quotas.permissions = 3;
    cfg.quotas.path_max = 64;
    cfg.quotas.node_size = 256;
    cfg.quotas.memory = 100000;
    return cfg;
}
}  // namespace

TEST_CASE("a domain cannot own more nodes than its quota", "[xenstore][quota]") {
    Harness h(small_quotas());
    h.make_domain_home(3);  // the home counts as one node of dom3
    RawConn d = h.domain(3);
    int made = 0;
    for (int i = 0; i < 20; ++i) {
        Msg m = d.write("n" + std::to_string(i), "v");
        if (!ok(m)) {
            CHECK(m.is_error("ENOSPC"));
            break;
        }
        ++made;
    }
    CHECK(made == 9);
    CHECK(d.write("a/b", "v").is_error("ENOSPC"));
    CHECK(ok(d.rm("n0")));
    CHECK(ok(d.write("again", "v")));
    RawConn c = h.dom0();
    for (int i = 0; i < 30; ++i) {
        REQUIRE(ok(c.write("/dom0/n" + std::to_string(i), "v")));  // dom0: no quota
    }
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}

TEST_CASE("the watch quota counts per domain", "[xenstore][quota]") {
    Harness h(small_quotas());
    RawConn d = h.domain(3), d2 = h.domain(3);
    for (int i = 0; i < 3; ++i) {
        REQUIRE(ok(d.watch("/w" + std::to_string(i), "t")));
    }
    REQUIRE(ok(d2.watch("/w", "t")));
    CHECK(d.watch("/w9", "t").is_error("ENOSPC"));
    CHECK(d2.watch("/w9", "t").is_error("ENOSPC"));
    RawConn c = h.dom0();
    for (int i = 0; i < 50; ++i) {
        REQUIRE(ok(c.watch("/w" + std::to_string(i), "t")));
    }
}

TEST_CASE("open transactions are limited per domain", "[xenstore][quota]") {
    Harness h(small_quotas());
    RawConn d = h.domain(3);
    const std::uint32_t t1 = d.tx_start();
    d.tx_start();
    CHECK(d.call(MsgType::XS_TRANSACTION_START, std::string_view("", 1)).is_error("ENOSPC"));
    REQUIRE(ok(d.tx_end(t1, false)));
    CHECK(d.tx_start() != 0);
}

TEST_CASE("a transaction may touch only so many nodes", "[xenstore][quota]") {
    Harness h(small_quotas());
    RawConn c = h.dom0();
    REQUIRE(ok(c.mkdir("/many")));
    REQUIRE(ok(c.set_perms("/many", {"r0"})));
    for (int i = 0; i < 12; ++i) {
        REQUIRE(ok(c.write("/many/n" + std::to_string(i), "v")));
    }
    RawConn d = h.domain(3);
    const std::uint32_t t = d.tx_start();
    Msg last;
    int i = 0;
    for (; i < 12; ++i) {
        last = d.read("/many/n" + std::to_string(i), t);
        if (last.type == MsgType::XS_ERROR) {
            break;
        }
    }
    CHECK(last.is_error("ENOSPC"));
    CHECK(i == 8);
}

TEST_CASE("too many permission entries, too big nodes and too long paths are ENOSPC",
          "[xenstore][quota]") {
    Harness h(small_quotas());
    h.make_domain_home(3);
    RawConn d = h.domain(3);
    REQUIRE(ok(d.write("p", "")));
    CHECK(d.set_perms("p", {"n3", "r1", "r2", "r4"}).is_error("ENOSPC"));
    CHECK(ok(d.set_perms("p", {"n3", "r1", "r2"})));
    CHECK(d.write("big", std::string(300, 'x')).is_error("ENOSPC"));
    CHECK(ok(d.write("big", std::string(200, 'x'))));
    CHECK(d.write(std::string(65, 'l'), "v").is_error("ENOSPC"));
    CHECK(ok(d.write(std::string(64, 'l'), "v")));
    RawConn c = h.dom0();
    CHECK(ok(c.write("/d0big", std::string(3000, 'x'))));  // dom0 exempt
}

TEST_CASE("the memory quota bounds the bytes a domain stores", "[xenstore][quota]") {
    ServerConfig cfg = small_quotas();
    cfg.quotas.nodes = 1000;
    cfg.quotas.memory = 1000;
    Harness h(cfg);
    h.make_domain_home(3);
    RawConn d = h.domain(3);
    Msg m;
    int i = 0;
    for (; i < 20; ++i) {
        m = d.write("k" + std::to_string(i), std::string(200, 'v'));
        if (!ok(m)) {
            break;
        }
    }
    CHECK(m.is_error("ENOSPC"));
    CHECK(i == 4);
}

TEST_CASE("quota assignments parse by name", "[xenstore][quota]") {
    Quotas q;
    CHECK(q.apply("nodes=5").has_value());
    CHECK(q.nodes == 5);
    CHECK(q.apply("transaction-nodes=7").has_value());
    CHECK(q.transaction_nodes == 7);
    CHECK_FALSE(q.apply("nodes").has_value());
    CHECK_FALSE(q.apply("nodes=x").has_value());
    CHECK_FALSE(q.apply("bogus=1").has_value());
    CHECK(Quotas::names().size() == 9);
}

namespace {
/// A connection bound to `domid` whose socket buffers are as small as the kernel allows on
/// both ends, so a client that stops reading fills them after a few kilobytes.
RawConn tight_domain(Harness& h, std::uint16_t domid) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    const int small = 4096;
    for (int fd : sv) {
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    REQUIRE(h.server().add_connection(hv::UniqueFd(sv[0]), hv::DomId{domid}).has_value());
    return RawConn(hv::UniqueFd(sv[1]));
}

/// Sends as much of `bytes` as the socket takes without blocking for longer than `idle_ms`;
/// returns how many bytes went.
std::size_t send_until_stuck(RawConn& c, std::string_view bytes, int idle_ms) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::send(c.fd(), bytes.data() + done, bytes.size() - done,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        REQUIRE((n < 0 && (errno == EAGAIN || errno == EINTR)));
        pollfd p{c.fd(), POLLOUT, 0};
        if (::poll(&p, 1, idle_ms) == 0) {
            break;  // the server has stopped taking requests
        }
    }
    return done;
}
}  // namespace

TEST_CASE("a domain that does not read its replies is throttled at the outstanding quota",
          "[xenstore][quota]") {
    ServerConfig cfg;
    cfg.quotas.outstanding = 4;
    // Without the quota this client would be disconnected: its replies exceed the output limit
    // many times over. A throttled client is not stalled by its own fault, so the
    // half-message timer must not fire either.
    cfg.max_output_bytes = 64 * 1024;
    cfg.partial_message_timeout = std::chrono::milliseconds(300);
    Harness h(cfg);
    h.make_domain_home(5);
    h.make_domain_home(6);
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/local/domain/5/v", std::string(1000, 'x'))));
    REQUIRE(ok(c.write("/local/domain/6/v", "six")));

    RawConn d = tight_domain(h, 5);
    constexpr std::uint32_t kRequests = 4000;  // 4 MB of replies, ~100 KB of requests
    std::string reqs;
    for (std::uint32_t i = 1; i <= kRequests; ++i) {
        reqs += RawConn::frame(MsgType::XS_READ, nul_join({"v"}), 0, i);
    }
    const std::size_t sent = send_until_stuck(d, reqs, 500);
    INFO("bytes of requests taken before the server stopped reading: " << sent);
    CHECK(sent < reqs.size());  // the server stopped taking requests: back-pressure
    CHECK(h.server().throttle_events() >= 1);

    // Past the half-message timeout and still connected; everybody else is served meanwhile.
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    RawConn other = h.domain(6);
    CHECK(other.read("v").payload == "six");
    CHECK(ok(c.write("/alive", "yes")));
    CHECK(c.read("/alive").payload == "yes");
    CHECK(h.server().protocol_disconnects() == 0);

    // Once it reads, every request it sent is answered, in order, nothing lost.
    std::size_t off = sent;
    std::uint32_t next = 1;
    while (next <= kRequests) {
        if (off < reqs.size()) {
            const ssize_t n = ::send(d.fd(), reqs.data() + off, reqs.size() - off,
                                     MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                off += static_cast<std::size_t>(n);
            }
        }
        auto m = d.recv(5000);
        REQUIRE(m.has_value());
        REQUIRE(m->req_id == next);
        REQUIRE(m->payload == std::string(1000, 'x'));
        ++next;
    }
    CHECK(h.server().protocol_disconnects() == 0);
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));  // outstanding counts agree
}

TEST_CASE("unconsumed watch events count towards the outstanding quota, set per domain",
          "[xenstore][quota]") {
    Harness h;  // default quota 20; SET_QUOTA lowers it for dom5 only
    h.make_domain_home(5);
    RawConn c = h.dom0();
    REQUIRE(ok(c.call(MsgType::XS_SET_QUOTA, nul_join({"5", "outstanding", "2"}))));
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"5", "outstanding"})).payload == "2"s + '\0');

    RawConn d = tight_domain(h, 5);
    REQUIRE(ok(d.watch("w", "tok")));
    REQUIRE(d.event().has_value());  // the initial event
    // Events pile up while dom5 reads nothing: far more than its socket holds.
    const std::string path = "/local/domain/5/w";
    for (int i = 0; i < 400; ++i) {
        REQUIRE(ok(c.write(path, std::to_string(i))));
    }
    // Its next request is not handled until it consumes its events.
    REQUIRE(d.send(MsgType::XS_READ, nul_join({"w"}), 0, 777));
    CHECK(ok(c.write("/d0", "still served")));
    CHECK(h.server().throttle_events() >= 1);
    int events = 0;
    for (;;) {
        auto m = d.recv(5000);
        REQUIRE(m.has_value());
        if (m->type == MsgType::XS_WATCH_EVENT) {
            ++events;
            continue;
        }
        CHECK(m->req_id == 777);
        CHECK(m->payload == "399");
        break;
    }
    CHECK(events == 400);  // the reply came after every queued event: none dropped
    CHECK(h.server().protocol_disconnects() == 0);
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}

TEST_CASE("dom0 is not subject to the outstanding quota", "[xenstore][quota]") {
    ServerConfig cfg;
    cfg.quotas.outstanding = 1;
    Harness h(cfg);
    RawConn c = h.dom0();
    std::string batch;
    for (std::uint32_t i = 1; i <= 200; ++i) {
        batch += RawConn::frame(MsgType::XS_WRITE, "/x\0"s + std::to_string(i), 0, i);
    }
    REQUIRE(c.send_bytes(batch));
    for (std::uint32_t i = 1; i <= 200; ++i) {
        auto m = c.recv();
        REQUIRE(m.has_value());
        CHECK(m->req_id == i);
    }
    CHECK(h.server().throttle_events() == 0);
}
