// Hostile clients: oversized payloads, unknown types, missing NULs, stalled half messages,
// clients that never read, watch floods, abandoned transactions, long paths, binary values.
// Each gets the right error or a logged disconnect, and another connection stays served.
#include <random>

#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

namespace {
/// Another connection still gets answers.
void still_served(Harness& h) {
    RawConn other = h.dom0();
    REQUIRE(ok(other.write("/alive", "yes")));
    CHECK(other.read("/alive").payload == "yes");
}
}  // namespace

TEST_CASE("a payload length over 4096 disconnects the client", "[xenstore][hostile]") {
    Harness h;
    RawConn bad = h.dom0();
    const auto before = h.server().protocol_disconnects();
    REQUIRE(bad.send_bytes(RawConn::frame(MsgType::XS_READ, "", 0, 1, 4097)));
    CHECK(bad.closed_by_server());
    CHECK(h.server().protocol_disconnects() == before + 1);
    still_served(h);
    // Exactly 4096 is allowed.
    RawConn c = h.dom0();
    std::string payload = "/big";
    payload += '\0';
    payload += std::string(4096 - payload.size(), 'v');
    CHECK(ok(c.call(MsgType::XS_WRITE, payload)));
    CHECK(c.read("/big").payload.size() == 4096 - 5);
}

TEST_CASE("payloads without the NULs they need are EINVAL", "[xenstore][hostile]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/n", "v")));
    CHECK(c.call(MsgType::XS_READ, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_READ, "").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_READ, nul_join({"/n", "extra"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_WRITE, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_MKDIR, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_RM, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_DIRECTORY, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_GET_PERMS, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_PERMS, "/n").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_PERMS, "/n\0r1"s).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_WATCH, "/n\0tok"s).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_UNWATCH, "/n\0tok"s).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_INTRODUCE, "1\0"s "2\0"s "3").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_GET_DOMAIN_PATH, "1").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_TRANSACTION_END, "T", 1).type == MsgType::XS_ERROR);
    CHECK(c.call(MsgType::XS_GET_QUOTA, "nodes").is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_CONTROL, "check").is_error("EINVAL"));
    CHECK(c.read("/n").payload == "v");
}

TEST_CASE("a half message and then silence is disconnected after the timeout",
          "[xenstore][hostile]") {
    ServerConfig cfg;
    cfg.partial_message_timeout = std::chrono::milliseconds(200);
    Harness h(cfg);
    RawConn stall = h.dom0();
    RawConn stall_hdr = h.dom0();
    const std::string f = RawConn::frame(MsgType::XS_WRITE, nul_join({"/x"}) + "value", 0, 1);
    REQUIRE(stall.send_bytes(f.substr(0, f.size() - 3)));  // header and part of the payload
    REQUIRE(stall_hdr.send_bytes(f.substr(0, 7)));         // part of a header
    still_served(h);  // served meanwhile
    CHECK(stall.closed_by_server(5000));
    CHECK(stall_hdr.closed_by_server(5000));
    CHECK(h.server().protocol_disconnects() == 2);
    RawConn c = h.dom0();
    CHECK(c.read("/x").is_error("ENOENT"));  // the half write never happened
}

TEST_CASE("a message split into single bytes is still served", "[xenstore][hostile]") {
    Harness h;
    RawConn c = h.dom0();
    const std::string f = RawConn::frame(MsgType::XS_WRITE, nul_join({"/slow"}) + "ok", 0, 9);
    for (char ch : f) {
        REQUIRE(c.send_bytes(std::string_view(&ch, 1)));
    }
    auto m = c.recv();
    REQUIRE(m);
    CHECK(m->req_id == 9);
    CHECK(m->payload == "OK"s + '\0');
}

TEST_CASE("a client that never reads its replies is disconnected, others are not",
          "[xenstore][hostile]") {
    ServerConfig cfg;
    cfg.max_output_bytes = 256 * 1024;
    Harness h(cfg);
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/v", std::string(4000, 'x'))));
    RawConn greedy = h.dom0();
    int rcv = 4096;
    ::setsockopt(greedy.fd(), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    const std::string req = RawConn::frame(MsgType::XS_READ, nul_join({"/v"}), 0, 1);
    std::string batch;
    for (int i = 0; i < 100; ++i) {
        batch += req;
    }
    // ~4 MB of replies requested, never read. Sending may fail once the server hangs up.
    for (int i = 0; i < 10; ++i) {
        if (!greedy.send_bytes(batch)) {
            break;
        }
        CHECK(ok(c.write("/tick", std::to_string(i))));  // the server keeps serving others
    }
    CHECK(greedy.closed_by_server());
    CHECK(h.server().protocol_disconnects() >= 1);
    still_served(h);
}

TEST_CASE("ten thousand watches from dom0 are served and the server stays responsive",
          "[xenstore][hostile]") {
    Harness h;
    RawConn w = h.dom0();
    std::string batch;
    for (int i = 0; i < 10000; ++i) {
        batch += RawConn::frame(MsgType::XS_WATCH,
                                nul_join({"/flood/" + std::to_string(i % 100), std::to_string(i)}),
                                0, static_cast<std::uint32_t>(i + 1));
    }
    // Read replies while sending so neither side blocks.
    std::thread sender([&] { (void)w.send_bytes(batch); });
    int oks = 0, events = 0;
    while (oks < 10000 || events < 10000) {
        auto m = w.recv(10000);
        REQUIRE(m);
        if (m->type == MsgType::XS_WATCH_EVENT) {
            ++events;
        } else {
            REQUIRE(m->payload == "OK"s + '\0');
            ++oks;
        }
    }
    sender.join();
    still_served(h);
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/flood/7", "x")));
    int fired = 0;
    while (auto m = w.recv(1000)) {
        ++fired;
        if (fired == 100) {
            break;
        }
    }
    CHECK(fired == 100);  // the 100 watches on /flood/7
}

TEST_CASE("an unprivileged watch flood stops at the quota", "[xenstore][hostile]") {
    Harness h;
    RawConn d = h.domain(3);
    int ok_count = 0;
    Msg last;
    for (int i = 0; i < 200; ++i) {
        last = d.watch("/x", std::to_string(i));
        if (!ok(last)) {
            break;
        }
        ++ok_count;
    }
    CHECK(ok_count == 128);
    CHECK(last.is_error("ENOSPC"));
    still_served(h);
}

TEST_CASE("transactions left open are dropped with their connection", "[xenstore][hostile]") {
    Harness h;
    {
        RawConn d = h.domain(3);
        for (int i = 0; i < 10; ++i) {
            d.tx_start();
        }
        CHECK(d.call(MsgType::XS_TRANSACTION_START, std::string_view("", 1)).is_error("ENOSPC"));
    }
    // Its replacement (same domain) gets the full quota back once the server saw the close.
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/sync", "1")));
    RawConn d2 = h.domain(3);
    std::uint32_t t = 0;
    for (int attempt = 0; attempt < 100 && t == 0; ++attempt) {
        Msg m = d2.call(MsgType::XS_TRANSACTION_START, std::string_view("", 1));
        if (m.type == MsgType::XS_TRANSACTION_START) {
            t = static_cast<std::uint32_t>(std::stoul(m.payload));
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));  // close not yet seen
        }
    }
    CHECK(t != 0);
    still_served(h);
}

TEST_CASE("4000-character paths are EINVAL and 3072 is the longest accepted",
          "[xenstore][hostile]") {
    Harness h;
    RawConn c = h.dom0();
    const std::string p4000 = "/" + std::string(3999, 'p');
    CHECK(c.write(p4000, "v").is_error("EINVAL"));
    CHECK(c.read(p4000).is_error("EINVAL"));
    CHECK(c.watch(p4000, "t").is_error("EINVAL"));
    const std::string p3072 = "/" + std::string(3071, 'p');
    CHECK(ok(c.write(p3072, "v")));
    CHECK(c.read(p3072).payload == "v");
    CHECK(c.write(p3072 + "q", "v").is_error("EINVAL"));
}

TEST_CASE("binary values with NULs and high bytes round-trip exactly", "[xenstore][hostile]") {
    Harness h;
    RawConn c = h.dom0();
    const unsigned seed = 20261202;
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    std::string v(1000, '\0');
    for (auto& ch : v) {
        ch = static_cast<char>(rng() & 0xff);
    }
    v[0] = '\0';
    CHECK(ok(c.write("/bin", v)));
    CHECK(c.read("/bin").payload == v);
}

TEST_CASE("random garbage never crashes the server", "[xenstore][hostile]") {
    Harness h;
    const unsigned seed = 4242;
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    for (int round = 0; round < 50; ++round) {
        RawConn g = h.dom0();
        std::string junk;
        const int msgs = static_cast<int>(rng() % 8) + 1;
        for (int i = 0; i < msgs; ++i) {
            std::string payload(rng() % 64, '\0');
            for (auto& ch : payload) {
                const unsigned r = rng() % 8;
                ch = r == 0 ? '\0' : r == 1 ? '/' : static_cast<char>('a' + rng() % 26);
            }
            junk += RawConn::frame(static_cast<MsgType>(rng() % 30), payload, static_cast<std::uint32_t>(rng() % 3),
                                   static_cast<std::uint32_t>(i + 1));
        }
        REQUIRE(g.send_bytes(junk));
        for (int i = 0; i < msgs; ++i) {
            auto m = g.recv(2000);
            if (!m) {
                break;
            }
            if (m->type == MsgType::XS_WATCH_EVENT) {
                --i;
            }
        }
    }
    still_served(h);
    RawConn c = h.dom0();
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}

TEST_CASE("connections beyond the limit are refused at accept", "[xenstore][hostile]") {
    ServerConfig cfg;
    cfg.max_connections = 2;
    Harness h(cfg);
    RawConn a = h.dom0(), b = h.dom0();
    REQUIRE(ok(a.write("/a", "1")));
    REQUIRE(ok(b.write("/b", "1")));
    RawConn third = h.dom0();
    CHECK(third.closed_by_server());
    CHECK(a.read("/b").payload == "1");
}

TEST_CASE("transactions left open do not block anyone else", "[xenstore][hostile]") {
    Harness h;
    RawConn d = h.domain(3);
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/shared", "0")));
    REQUIRE(ok(c.set_perms("/shared", {"b0"})));
    for (int i = 0; i < 10; ++i) {
        const std::uint32_t t = d.tx_start();
        REQUIRE(d.read("/shared", t).payload == "0");
        REQUIRE(ok(d.write("/shared", "d", t)));
    }
    for (int i = 0; i < 5; ++i) {
        const std::uint32_t t = c.tx_start();
        REQUIRE(ok(c.write("/shared", std::to_string(i), t)));
        CHECK(ok(c.tx_end(t, true)));
    }
    CHECK(c.read("/shared").payload == "4");
}

TEST_CASE("every remaining rejection branch answers with its error", "[xenstore][hostile]") {
    Harness h;
    RawConn c = h.dom0();
    RawConn d = h.domain(3);
    REQUIRE(ok(c.write("/hidden/child", "x")));  // n0
    // Numbers: empty, sign, overflow, junk.
    CHECK(c.call(MsgType::XS_GET_DOMAIN_PATH, nul_join({""})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_INTRODUCE, nul_join({"4", "1", "-1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_INTRODUCE, nul_join({"4", "1", "99999999999"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_GET_FEATURE, nul_join({"x"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_GET_FEATURE, nul_join({"1", "2"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_QUOTA, nul_join({"bogus", "1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_QUOTA, nul_join({"x", "nodes", "1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"x", "nodes"})).is_error("EINVAL"));
    // Special paths: too long, unknown for SET_PERMS.
    CHECK(c.watch("@" + std::string(3100, 'a'), "t").is_error("EINVAL"));
    CHECK(c.set_perms("@nonsense", {"n0"}).is_error("ENOENT"));
    // Permission denials not covered elsewhere.
    CHECK(d.call(MsgType::XS_DIRECTORY_PART, nul_join({"/hidden", "0"})).is_error("EACCES"));
    CHECK(d.rm("/hidden/ghost").is_error("EACCES"));  // missing node, unreadable parent
    CHECK(d.mkdir("/hidden").is_error("EACCES"));     // existing node without write access
    CHECK(d.rm("/nothing/here").is_error("EACCES"));  // "/" itself is unreadable to dom3
    CHECK(c.rm("/nothing/here").is_error("ENOENT"));
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}
