// Spinning (hv::SpinPolicy windows): the server's run() spins only for its window after work and
// never while idle; the client's callers and reader spin for replies and events, fall back to
// sleeping after the window, notice a dead connection while spinning, and keep every reply and
// watch event in order.
#include <time.h>

#include <atomic>
#include <map>

#include "harness.hpp"
#include "xenstore/client.hpp"

using namespace hv::xs;
using namespace hv::xs::test;
using namespace std::chrono_literals;

namespace {

std::chrono::nanoseconds process_cpu() {
    timespec ts{};
    REQUIRE(::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

double ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

ServerConfig server_spinning(std::chrono::microseconds window) {
    ServerConfig cfg;
    cfg.busy_poll = window;
    return cfg;
}

/// The share of 1 ms samples over `span` in which the server thread was runnable. Spinning, it
/// stays runnable (even while a loaded machine keeps it off the CPU); asleep in epoll_wait it
/// is not.
double runnable_share(const Harness& h, std::chrono::milliseconds span) {
    int runnable = 0;
    int samples = 0;
    const auto end = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < end) {
        runnable += h.server_state() == 'R' ? 1 : 0;
        ++samples;
        std::this_thread::sleep_for(1ms);
    }
    return static_cast<double>(runnable) / samples;
}

ClientOptions spinning(std::chrono::microseconds window) {
    ClientOptions o;
    o.spin = window;
    return o;
}

/// A hand-driven server end: the test reads the client's requests and writes what it likes.
struct FakeServer {
    std::unique_ptr<Client> client;
    RawConn raw;

    static FakeServer make(ClientOptions o) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        auto c = Client::from_fd(hv::UniqueFd(sv[0]), o);
        REQUIRE(c.has_value());
        return FakeServer{std::move(*c), RawConn(hv::UniqueFd(sv[1]))};
    }
    /// Reads one request; returns its header.
    xsd_sockmsg request() {
        xsd_sockmsg h{};
        REQUIRE(::recv(raw.fd(), &h, sizeof h, MSG_WAITALL) == static_cast<ssize_t>(sizeof h));
        std::string p(h.len, '\0');
        if (h.len > 0) {
            REQUIRE(::recv(raw.fd(), p.data(), h.len, MSG_WAITALL) == static_cast<ssize_t>(h.len));
        }
        return h;
    }
    void reply(const xsd_sockmsg& req, std::string_view payload) {
        xsd_sockmsg h{req.type, req.req_id, 0, static_cast<std::uint32_t>(payload.size())};
        std::string m(reinterpret_cast<const char*>(&h), sizeof h);
        m.append(payload);
        REQUIRE(::send(raw.fd(), m.data(), m.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(m.size()));
    }
};

const std::error_code kECONNRESET(ECONNRESET, std::system_category());

/// These tests are about spinning itself: spin even while the machine is oversubscribed.
struct IgnoreLoad {
    IgnoreLoad() { hv::set_spin_ignores_load(true); }
    ~IgnoreLoad() { hv::set_spin_ignores_load(false); }
};

}  // namespace

TEST_CASE("an idle server with a spin window uses no CPU", "[xenstore][spin]") {
    IgnoreLoad spin_regardless;
    Harness h(server_spinning(20ms));
    RawConn c = h.dom0();
    for (int i = 0; i < 50; ++i) {
        REQUIRE(ok(c.write("/idle", std::to_string(i))));
    }
    std::this_thread::sleep_for(100ms);  // well past the window
    const auto before = h.server_cpu();
    std::this_thread::sleep_for(1s);
    const auto used = h.server_cpu() - before;
    INFO("server thread CPU over an idle second: " << ms(used) << " ms");
    CHECK(used < 20ms);
    CHECK(c.read("/idle").payload == "49");  // asleep, and a request still wakes it
}

TEST_CASE("after work the server spins for its window and then sleeps", "[xenstore][spin]") {
    IgnoreLoad spin_regardless;
    Harness h(server_spinning(300ms));
    RawConn c = h.dom0();
    std::this_thread::sleep_for(500ms);  // the accept was work: let that window pass
    const double before = runnable_share(h, 100ms);
    // Sample both sides of the window.
    REQUIRE(ok(c.write("/w", "1")));
    const double during = runnable_share(h, 150ms);
    std::this_thread::sleep_for(300ms);  // past the window
    const auto t0 = h.server_cpu();
    const double after = runnable_share(h, 300ms);
    const auto cpu_after = h.server_cpu() - t0;
    INFO("runnable share before the request " << before << ", inside the window " << during
                                                << ", after it " << after
                                             << "; CPU after it " << ms(cpu_after) << " ms");
    CHECK(before < 0.3);
    CHECK(during > 0.8);
    CHECK(after < 0.3);
    CHECK(cpu_after < 20ms);
}

TEST_CASE("the spin window off: the server never spins", "[xenstore][spin]") {
    IgnoreLoad spin_regardless;
    Harness h(server_spinning(0us));
    RawConn c = h.dom0();
    const auto t0 = h.server_cpu();
    for (int i = 0; i < 20; ++i) {
        REQUIRE(ok(c.write("/n", "1")));
    }
    const double share = runnable_share(h, 100ms);  // asleep right after serving
    INFO("runnable share after serving " << share << "; CPU: " << ms(h.server_cpu() - t0)
                                         << " ms");
    CHECK(share < 0.3);
    CHECK(h.server_cpu() - t0 < 20ms);
}

TEST_CASE("a spinning caller gets a reply that comes within its window and one after it",
          "[xenstore][spin][client]") {
    IgnoreLoad spin_regardless;
    auto f = FakeServer::make(spinning(2ms));
    std::thread srv([&] {
        auto r1 = f.request();
        f.reply(r1, "fast");
        auto r2 = f.request();
        std::this_thread::sleep_for(50ms);  // long past the caller's window: it sleeps
        f.reply(r2, "slow");
    });
    CHECK(f.client->read("/a").value() == "fast");
    CHECK(f.client->read("/b").value() == "slow");
    srv.join();
    CHECK(f.client->connected());
}

TEST_CASE("a connection closing while a caller spins fails the call at once",
          "[xenstore][spin][client]") {
    IgnoreLoad spin_regardless;
    auto f = FakeServer::make(spinning(std::chrono::seconds(3)));
    std::thread srv([&] {
        (void)f.request();
        f.raw = RawConn(hv::UniqueFd());  // close: only the spinning caller is reading
    });
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(f.client->read("/a").error() == kECONNRESET);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);  // seen while spinning, not after it
    srv.join();
    CHECK_FALSE(f.client->connected());
    CHECK(f.client->read("/a").error() == kECONNRESET);
}

TEST_CASE("an oversized reply header read by a spinning caller disconnects",
          "[xenstore][spin][client]") {
    IgnoreLoad spin_regardless;
    auto f = FakeServer::make(spinning(std::chrono::seconds(3)));
    std::thread srv([&] {
        auto r = f.request();
        xsd_sockmsg h{r.type, r.req_id, 0, 5000};
        REQUIRE(::send(f.raw.fd(), &h, sizeof h, MSG_NOSIGNAL) == sizeof h);
    });
    CHECK(f.client->read("/a").error() == kECONNRESET);
    srv.join();
    CHECK_FALSE(f.client->connected());
}

TEST_CASE("spinning callers on many threads get every reply and every watch event in order",
          "[xenstore][spin][client]") {
    IgnoreLoad spin_regardless;
    Harness h(server_spinning(200us));
    auto wc = Client::connect(h.socket_path(), spinning(200us));
    REQUIRE(wc.has_value());
    Client& c = **wc;
    REQUIRE(c.watch("/ord", "t").has_value());
    REQUIRE(c.wait_event(5000ms).value().path == "/ord");  // the initial event
    constexpr int kThreads = 3;
    constexpr int kWrites = 300;
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) {
        ts.emplace_back([&, t] {
            const std::string path = "/ord/" + std::to_string(t);
            for (int i = 0; i < kWrites; ++i) {
                // Each thread's node holds its sequence number; a read must see its own write.
                if (!c.write(path, std::to_string(i)) ||
                    c.read(path).value_or("") != std::to_string(i)) {
                    ++failures;
                }
            }
        });
    }
    // Events come through the same client, read by whichever thread spins at the time.
    std::map<std::string, int> seen;
    int events = 0;
    while (events < kThreads * kWrites) {
        auto e = c.wait_event(5000ms);
        REQUIRE(e.has_value());
        CHECK(e->token == "t");
        ++seen[e->path];
        ++events;
    }
    for (auto& th : ts) {
        th.join();
    }
    CHECK(failures == 0);
    for (int t = 0; t < kThreads; ++t) {
        CHECK(seen["/ord/" + std::to_string(t)] == kWrites);
    }
    CHECK_FALSE(c.next_event().has_value());
}

TEST_CASE("one spinning client sees its writes' events in write order", "[xenstore][spin][client]") {
    IgnoreLoad spin_regardless;
    Harness h(server_spinning(200us));
    auto w = Client::connect(h.socket_path(), spinning(200us));
    auto r = Client::connect(h.socket_path(), spinning(200us));
    REQUIRE(w.has_value());
    REQUIRE(r.has_value());
    REQUIRE((*r)->watch("/seq", "s").has_value());
    REQUIRE((*r)->wait_event(5000ms).has_value());
    for (int i = 0; i < 500; ++i) {
        REQUIRE((*w)->write("/seq/" + std::to_string(i), "x").has_value());
    }
    for (int i = 0; i < 500; ++i) {
        auto e = (*r)->wait_event(5000ms);
        REQUIRE(e.has_value());
        CHECK(e->path == "/seq/" + std::to_string(i));
    }
    // And through watch_fd(), which the reader thread (spinning after traffic) keeps readable.
    REQUIRE((*w)->write("/seq/last", "x").has_value());
    pollfd p{(*r)->watch_fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    CHECK((*r)->next_event().value().path == "/seq/last");
}

TEST_CASE("an idle spinning client uses no CPU", "[xenstore][spin][client]") {
    IgnoreLoad spin_regardless;
    Harness h;  // the server does not spin: the process's CPU is the client's
    auto c = Client::connect(h.socket_path(), spinning(20ms));
    REQUIRE(c.has_value());
    REQUIRE((*c)->watch("/quiet", "q").has_value());
    for (int i = 0; i < 50; ++i) {
        REQUIRE((*c)->write("/quiet/" + std::to_string(i), "1").has_value());
    }
    for (int i = 0; i < 51; ++i) {
        REQUIRE((*c)->wait_event(5000ms).has_value());
    }
    std::this_thread::sleep_for(100ms);  // past every window
    const auto t0 = process_cpu();
    std::this_thread::sleep_for(1s);
    const auto used = process_cpu() - t0;
    INFO("process CPU over an idle second: " << ms(used) << " ms");
    CHECK(used < 20ms);
}
