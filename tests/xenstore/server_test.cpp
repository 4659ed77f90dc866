// Server driven from someone else's loop (fd() + process()), stop() semantics, listen errors.
#include <poll.h>

#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

namespace {
/// Polls the server's fd and processes until `done` or 5 s pass.
template <class Done>
bool pump(Server& s, Done done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        pollfd p{s.fd(), POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) {
            REQUIRE(s.process(0).has_value());
        }
    }
    return true;
}
}  // namespace

TEST_CASE("a server integrated through fd() and process() serves a domain connection",
          "[xenstore][server]") {
    auto s = Server::create();
    REQUIRE(s.has_value());
    Server& srv = **s;
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(srv.add_connection(hv::UniqueFd(sv[0]), hv::DomId{0}).has_value());
    RawConn c{hv::UniqueFd(sv[1])};
    REQUIRE(c.send(MsgType::XS_WRITE, nul_join({"/x"}) + "1"));
    std::optional<Msg> reply;
    REQUIRE(pump(srv, [&] { return (reply = c.recv(0)).has_value(); }));
    CHECK(reply->payload == "OK"s + '\0');
    CHECK(srv.connection_count() == 1);
    c = RawConn(hv::UniqueFd());  // hang up
    REQUIRE(pump(srv, [&] { return srv.connection_count() == 0; }));
}

TEST_CASE("partial-message deadlines fire through fd() without other traffic",
          "[xenstore][server]") {
    ServerConfig cfg;
    cfg.partial_message_timeout = std::chrono::milliseconds(50);
    auto s = Server::create(cfg);
    REQUIRE(s.has_value());
    Server& srv = **s;
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(srv.add_connection(hv::UniqueFd(sv[0]), hv::DomId{5}).has_value());
    RawConn c{hv::UniqueFd(sv[1])};
    REQUIRE(c.send_bytes("abc"));
    REQUIRE(pump(srv, [&] { return srv.connection_count() == 0; }));
    CHECK(srv.protocol_disconnects() == 1);
}

TEST_CASE("stop before run makes run return at once", "[xenstore][server]") {
    auto s = Server::create();
    REQUIRE(s.has_value());
    (*s)->stop();
    CHECK((*s)->run().has_value());
}

TEST_CASE("listen_unix reports unusable paths", "[xenstore][server]") {
    auto s = Server::create();
    REQUIRE(s.has_value());
    CHECK((*s)->listen_unix("/nonexistent-dir/sock").error() ==
          std::error_code(ENOENT, std::system_category()));
    CHECK((*s)->listen_unix(std::string(200, 'x')).error() ==
          std::error_code(ENAMETOOLONG, std::system_category()));
    hv::test::TempDir dir("hvkit-xs");
    const std::string file = dir.str() + "/regular";
    std::FILE* f = std::fopen(file.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fclose(f);
    CHECK((*s)->listen_unix(file).error() == std::error_code(EEXIST, std::system_category()));
    CHECK(std::filesystem::is_regular_file(file));  // left alone
    CHECK_FALSE(std::filesystem::exists(file + ".new"));
    CHECK_FALSE((*s)->introduce_domain(hv::DomId{0x7ff0}).has_value());
    CHECK_FALSE((*s)->release_domain(hv::DomId{0}).has_value());
}

TEST_CASE("a stale socket file is replaced and removed at shutdown", "[xenstore][server]") {
    hv::test::TempDir dir("hvkit-xs");
    const std::string path = dir.str() + "/sock";
    auto s1 = Server::create();
    REQUIRE(s1.has_value());
    REQUIRE((*s1)->listen_unix(path).has_value());
    auto s2 = Server::create();
    REQUIRE(s2.has_value());
    REQUIRE((*s2)->listen_unix(path).has_value());  // replaces the first one's file
    s1->reset();
    CHECK(std::filesystem::exists(path));  // the old server leaves its successor's socket alone
    RawConn c = RawConn::connect_unix(path);
    s2->reset();
    CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("run() with a busy-poll window serves, goes back to sleep and stops",
          "[xenstore][server]") {
    ServerConfig cfg;
    cfg.busy_poll = std::chrono::microseconds(2000);
    Harness h(cfg);
    RawConn c = h.dom0();
    RawConn w = h.dom0();
    REQUIRE(ok(w.watch("/spin", "t")));
    REQUIRE(w.event().has_value());
    for (int i = 0; i < 200; ++i) {  // inside the window: served while spinning
        REQUIRE(ok(c.write("/spin", std::to_string(i))));
        auto e = w.event();
        REQUIRE(e.has_value());
        CHECK(e->first == "/spin");
    }
    // Long past the window the server sleeps in epoll_wait; a request still wakes it.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(c.read("/spin").payload == "199");
    // ~Harness: stop() must end run() whether it is spinning or asleep.
}

TEST_CASE("64 connections pipelining more than one read slot each are all answered in order",
          "[xenstore][server]") {
    // One round reads every ready connection into a 16 KiB slot (batched) or buffer; 1000
    // requests (19 KB) per connection overflow it, so the rest is read on.
    Harness h;
    RawConn setup = h.dom0();
    REQUIRE(ok(setup.write("/n", "v")));
    std::vector<RawConn> conns;
    for (int i = 0; i < 64; ++i) {
        conns.push_back(h.dom0());
    }
    constexpr std::uint32_t kPerConn = 1000;
    std::string burst;
    for (std::uint32_t r = 1; r <= kPerConn; ++r) {
        burst += RawConn::frame(MsgType::XS_READ, nul_join({"/n"}), 0, r);
    }
    REQUIRE(burst.size() > 16384);
    for (auto& c : conns) {
        REQUIRE(c.send_bytes(burst));
    }
    for (auto& c : conns) {
        for (std::uint32_t r = 1; r <= kPerConn; ++r) {
            auto m = c.recv();
            REQUIRE(m);
            REQUIRE(m->req_id == r);
            REQUIRE(m->type == MsgType::XS_READ);
            REQUIRE(m->payload == "v");
        }
    }
    CHECK(h.server().protocol_disconnects() == 0);
}

TEST_CASE("SOCK_SEQPACKET connections get their largest messages whole", "[xenstore][server]") {
    // A packet is read whole or truncated: a read (batched or not) must take 16 + 4096 bytes.
    Harness h;
    std::vector<RawConn> conns;
    for (int i = 0; i < 4; ++i) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
        REQUIRE(h.server().add_connection(hv::UniqueFd(sv[0]), hv::DomId{0}).has_value());
        conns.emplace_back(hv::UniqueFd(sv[1]));
    }
    for (int i = 0; i < 4; ++i) {
        const std::string path = "/seq" + std::to_string(i);
        const std::string value(4096 - path.size() - 1, static_cast<char>('a' + i));
        REQUIRE(conns[i].send(MsgType::XS_WRITE, path + '\0' + value));
    }
    for (int i = 0; i < 4; ++i) {
        auto m = conns[i].recv();
        REQUIRE(m);
        CHECK(ok(*m));
    }
    for (int i = 0; i < 4; ++i) {
        const std::string path = "/seq" + std::to_string(i);
        const Msg m = conns[i].read(path);
        CHECK(m.payload == std::string(4096 - path.size() - 1, static_cast<char>('a' + i)));
    }
    CHECK(h.server().protocol_disconnects() == 0);
}
