// The domain console: hv-min's backend (log, socket, input), libhv's stdio pump, hostile rings.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "console_ring.hpp"
#include "harness.hpp"
#include "hv/rings/protocols/console.hpp"

using hv::UniqueFd;
using hv::DomId;
using hv::GrantRef;
namespace rings = hv::rings;
namespace console = hv::hvmin::console;
using namespace hv::hvmin;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

fs::path console_dir(hv::hvmin::test::Harness& h) { return h.dir.path() / "console"; }

UniqueFd connect_console(hv::hvmin::test::Harness& h, DomId d) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    const auto p = (console_dir(h) / (std::to_string(d.get()) + ".sock")).string();
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", p.c_str());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return {};
    }
    return fd;
}

/// Reads from `fd` until `want` appears or EOF/timeout; returns everything read.
std::string read_until(int fd, const std::string& want, bool* eof = nullptr,
                       std::chrono::milliseconds limit = 10s) {
    std::string got;
    const auto end = std::chrono::steady_clock::now() + limit;
    while (got.find(want) == std::string::npos) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            break;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
            break;
        }
        char buf[4096];
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            if (eof != nullptr) {
                *eof = true;
            }
            break;
        }
        got.append(buf, static_cast<std::size_t>(n));
    }
    return got;
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

DomId start(hv::hvmin::test::Harness& h, const std::string& name, std::vector<std::string> args,
            std::vector<std::string> env = {}) {
    DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = 32;
    cfg.argv = {HVMIN_CONSOLE_GUEST};
    cfg.argv.insert(cfg.argv.end(), args.begin(), args.end());
    cfg.env = std::move(env);
    auto d = h.ts->create(cfg);
    REQUIRE(d);
    return *d;
}

}  // namespace

TEST_CASE("a domain program's output appears on its console socket and in its log",
          "[hvmin][console]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "talker", {"echo", "hello console"});
    UniqueFd s = connect_console(h, d);
    REQUIRE(s);
    const std::string got = read_until(s.get(), "hello console\n");
    CHECK(got.find("hello console\n") != std::string::npos);
    // The backend writes the log before it forwards to clients.
    CHECK(slurp(console_dir(h) / (std::to_string(d.get()) + ".log")).find("hello console\n") !=
          std::string::npos);
}

TEST_CASE("input typed on the console socket reaches the program's stdin", "[hvmin][console]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "echoer", {"echo", "ready"});
    UniqueFd s = connect_console(h, d);
    REQUIRE(s);
    REQUIRE(read_until(s.get(), "ready\n").find("ready\n") != std::string::npos);
    const std::string line = "typed on the socket\n";
    REQUIRE(::write(s.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size()));
    CHECK(read_until(s.get(), "got: typed on the socket\n").find("got: typed on the socket\n") !=
          std::string::npos);
    // A second client sees the same output stream.
    UniqueFd s2 = connect_console(h, d);
    REQUIRE(s2);
    REQUIRE(::write(s.get(), "quit\n", 5) == 5);
    CHECK(read_until(s2.get(), "bye\n").find("bye\n") != std::string::npos);
}

TEST_CASE("domain death closes the console and leaves no file but the log", "[hvmin][console]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "mortal", {"echo", "alive"});
    UniqueFd s = connect_console(h, d);
    REQUIRE(s);
    REQUIRE(read_until(s.get(), "alive\n").find("alive\n") != std::string::npos);
    REQUIRE(h.ts->destroy(d));
    REQUIRE(h.ts->wait_for_death(d, 10s));
    bool eof = false;
    (void)read_until(s.get(), "never", &eof);
    CHECK(eof);
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(console_dir(h))) {
        files.push_back(e.path().filename().string());
    }
    CHECK(files == std::vector<std::string>{std::to_string(d.get()) + ".log"});
    CHECK_FALSE(connect_console(h, d));
}

TEST_CASE("output written just before exit reaches the log", "[hvmin][console]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "bulk", {"bulk", "100000"});
    auto death = h.ts->wait_for_death(d, 10s);
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::exited);
    CHECK(death->status == 0);
    const std::string log = slurp(console_dir(h) / (std::to_string(d.get()) + ".log"));
    CHECK(log.size() > 100000);
    CHECK(log.find("line 00000000 ") == 0);
    REQUIRE(log.size() >= 10);
    CHECK(log.substr(log.size() - 10) == "bulk done\n");
}

TEST_CASE("the console log rotates at 1 MiB", "[hvmin][console][slow]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "chatty", {"bulk", "1300000"});
    REQUIRE(h.ts->wait_for_death(d, 20s));
    const fs::path log = console_dir(h) / (std::to_string(d.get()) + ".log");
    fs::path old = log;
    old += ".1";
    REQUIRE(fs::exists(old));
    CHECK(fs::file_size(old) <= (1u << 20));
    CHECK(fs::file_size(log) <= (1u << 20));
    CHECK(fs::file_size(old) + fs::file_size(log) > 1300000);
    CHECK(slurp(log).find("bulk done\n") != std::string::npos);
}

TEST_CASE("HV_CONSOLE=off leaves the program's fds alone", "[hvmin][console]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "quiet", {"bulk", "10"}, {"HV_CONSOLE=off"});
    REQUIRE(h.ts->wait_for_death(d, 10s));
    CHECK(slurp(console_dir(h) / (std::to_string(d.get()) + ".log")).empty());
}

TEST_CASE("an out_prod beyond the ring disconnects only that console", "[hvmin][console][hostile]") {
    hv::hvmin::test::Harness h;
    const DomId good = start(h, "good", {"echo", "fine"});
    // The guest corrupts its ring only once our client is connected: the backend removes the
    // socket at once, so a connect after the corruption would find no socket (seen under load).
    const fs::path go = h.dir.path() / "go";
    const DomId bad = start(h, "bad", {"hostile", "out", go.string()}, {"HV_CONSOLE=off"});
    UniqueFd sb = connect_console(h, bad);
    REQUIRE(sb);
    std::ofstream(go).put('1');
    bool eof = false;
    (void)read_until(sb.get(), "never", &eof);
    CHECK(eof);  // the backend closed its clients
    CHECK_FALSE(fs::exists(console_dir(h) / (std::to_string(bad.get()) + ".sock")));
    CHECK(h.core->domain_count() == 2);  // the domain itself lives on
    UniqueFd sg = connect_console(h, good);
    REQUIRE(sg);
    REQUIRE(::write(sg.get(), "still here\n", 11) == 11);
    CHECK(read_until(sg.get(), "got: still here\n").find("got: still here\n") != std::string::npos);
}

TEST_CASE("an in_cons beyond the ring disconnects that console when input arrives",
          "[hvmin][console][hostile]") {
    hv::hvmin::test::Harness h;
    const DomId bad = start(h, "bad", {"hostile", "in"}, {"HV_CONSOLE=off"});
    UniqueFd sb = connect_console(h, bad);
    REQUIRE(sb);
    bool eof = false;
    // Until the guest has corrupted in_cons, typed bytes just fill the ring (bounded wait).
    for (int i = 0; i < 100 && !eof; ++i) {
        (void)!::send(sb.get(), "x", 1, MSG_NOSIGNAL);
        (void)read_until(sb.get(), "never", &eof, 100ms);
    }
    CHECK(eof);
    CHECK_FALSE(fs::exists(console_dir(h) / (std::to_string(bad.get()) + ".sock")));
}

TEST_CASE("the console page is granted to dom0 as ref 0 and its keys are published",
          "[hvmin][console]") {
    hv::hvmin::test::Harness h;
    const DomId d = start(h, "keys", {"echo", "up"});
    UniqueFd s = connect_console(h, d);
    REQUIRE(s);
    REQUIRE(read_until(s.get(), "up\n").find("up\n") != std::string::npos);
    // dom0 maps GNTTAB_RESERVED_CONSOLE and sees the ring the guest writes.
    auto m = h.dom0().grants().map(d, GrantRef(rings::GNTTAB_RESERVED_CONSOLE), true);
    REQUIRE(m);
    const auto* intf = reinterpret_cast<const rings::xencons_interface*>(m->data());
    CHECK(intf->connection == rings::XENCONSOLE_CONNECTED);
    CHECK(intf->out_prod == intf->out_cons);
    CHECK(std::memcmp(intf->out, "up\n", 3) == 0);
}

TEST_CASE("console ring ends reject impossible indices and wrap at 2^32", "[hvmin][console][hostile]") {
    rings::xencons_interface intf{};
    SECTION("out_prod beyond the ring") {
        intf.out_prod = 2049;
        console::BackEnd be(&intf);
        char buf[console::kOutSize];
        CHECK(be.take_output(buf) == -1);
        CHECK(intf.out_cons == 0);
    }
    SECTION("in_cons beyond in_prod") {
        intf.in_cons = 1;
        console::BackEnd be(&intf);
        CHECK(be.put_input(std::string_view("a")) == -1);
    }
    SECTION("free-running indices wrap") {
        intf.out_prod = intf.out_cons = intf.in_prod = intf.in_cons = 0xFFFFFFF0u;
        console::FrontEnd fe(&intf);
        console::BackEnd be(&intf);
        const std::uint32_t seed = std::random_device{}();
        INFO("seed " << seed);
        std::mt19937 rng(seed);
        std::string sent;
        std::string got;
        for (int round = 0; round < 50; ++round) {
            std::string chunk(rng() % 3000, 'a');
            for (auto& ch : chunk) {
                ch = static_cast<char>('a' + rng() % 26);
            }
            const std::size_t n = fe.put_output(chunk);
            sent.append(chunk, 0, n);
            char buf[console::kOutSize];
            const long m = be.take_output(buf);
            REQUIRE(m >= 0);
            got.append(buf, static_cast<std::size_t>(m));
            const long k = be.put_input(chunk);
            REQUIRE(k >= 0);
            char ib[console::kInSize];
            REQUIRE(fe.take_input(ib) == k);
            CHECK(std::string_view(ib, static_cast<std::size_t>(k)) ==
                  std::string_view(chunk).substr(0, static_cast<std::size_t>(k)));
        }
        CHECK(got == sent);
        CHECK(fe.out_empty());
    }
}
