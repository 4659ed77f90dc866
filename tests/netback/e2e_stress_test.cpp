// netback + netfront under random pauses on both sides (issue #5, the pkt64 "lost" windows):
// netfront driven like hvbench's pkt64 frontend (bursts, unarmed polls, arm() before a sleep),
// stopped at random points by the test, while netback's queue threads are stopped at random
// instructions by a signal whose handler busy-waits. Every frame must come back exactly once,
// in order, and no side may sleep through work that was published for it (a lost wake-up).
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "e2e_harness.hpp"

namespace hv::net::test {
namespace {

std::atomic<long> g_pause_ns{0};

void busy_wait_ns(long ns) noexcept {
    timespec t0{};
    ::clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        timespec t{};
        ::clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1'000'000'000L + (t.tv_nsec - t0.tv_nsec) >= ns) {
            return;
        }
    }
}

extern "C" void pause_handler(int) {
    busy_wait_ns(g_pause_ns.load(std::memory_order_relaxed));
}

/// Thread ids of this process whose name starts with `prefix` (netback names its queue
/// threads "nb <fe>/<devid>/q<n>").
std::vector<pid_t> threads_named(const std::string& prefix) {
    std::vector<pid_t> out;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream f(e.path() / "comm");
        std::string name;
        std::getline(f, name);
        if (name.rfind(prefix, 0) == 0) {
            out.push_back(static_cast<pid_t>(std::stol(e.path().filename().string())));
        }
    }
    return out;
}

/// True while thread `tid` of this process is running or runnable (state R).
bool running(pid_t tid) {
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string line;
    std::getline(f, line);
    const auto close = line.rfind(')');  // the name may hold spaces and parentheses
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'R';
}

/// Stops netback's queue threads at random moments for 0..max_us (busy, in a signal handler),
/// every 0..2*max_us, until destroyed.
class Pauser {
public:
    Pauser(std::uint32_t seed, long max_us) {
        // Installed for good: a signal sent just before the stop may still be delivered
        // after it (to a thread not scheduled yet), and must then find the handler.
        struct sigaction sa {};
        sa.sa_handler = pause_handler;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        REQUIRE(::sigaction(SIGRTMIN + 3, &sa, nullptr) == 0);
        const auto tids = threads_named("nb ");
        REQUIRE(!tids.empty());
        thread_ = std::jthread([this, tids, seed, max_us](std::stop_token st) {
            std::mt19937 rng(seed);
            std::uniform_int_distribution<long> us(0, max_us);
            while (!st.stop_requested()) {
                std::this_thread::sleep_for(std::chrono::microseconds(2 * us(rng)));
                g_pause_ns.store(us(rng) * 1000, std::memory_order_relaxed);
                for (pid_t t : tids) {
                    // Only a running thread: a signal ends a sleep in poll(2) (EINTR), which
                    // would wake netback as often as we pause it and hide a lost wake-up.
                    if (running(t)) {
                        (void)::syscall(SYS_tgkill, ::getpid(), t, SIGRTMIN + 3);
                    }
                }
                ++pauses;
            }
        });
    }
    ~Pauser() {
        thread_.request_stop();
        thread_.join();
        g_pause_ns.store(0, std::memory_order_relaxed);
    }
    std::atomic<unsigned> pauses{0};

private:
    std::jthread thread_;
};

std::vector<std::byte> seq_frame(std::uint32_t seq) {
    std::vector<std::byte> f(64, std::byte{0x5a});
    for (int i = 0; i < 6; ++i) {
        f[static_cast<std::size_t>(i)] = std::byte{0xff};
        f[static_cast<std::size_t>(6 + i)] = std::byte{static_cast<unsigned char>(0x02 + i)};
    }
    f[12] = std::byte{0x88};
    f[13] = std::byte{0xb5};
    std::memcpy(f.data() + 14, &seq, sizeof seq);
    return f;
}

}  // namespace

TEST_CASE(
    "random pauses on both sides: every frame comes back once and in order, and no "
    "side sleeps through published work",
    "[netback][e2e][issue-5]") {
    struct Variant {
        const char* name;
        DataMode mode;
        std::chrono::microseconds backend_spin, front_spin;
    };
    const Variant variants[] = {
        {"copy, no spinning", DataMode::copy, 0us, 0us},
        {"map, both spinning", DataMode::map, 200us, 200us},
    };
    const SpinIgnoringLoad spin_anyway;  // the unarmed paths run on a loaded machine too
    for (const Variant& var : variants) {
        INFO(var.name);
        auto o = Env::loop_options();
        o.max_queues = 1;
        o.mode = var.mode;
        o.spin = var.backend_spin;
        o.rx_drain_timeout = 10s;  // pauses must not turn into drops
        Env env(o);
        Guest g(env, "g1");
        netfront::Options fo;
        fo.max_queues = 1;
        Vif v(env, g, 0, fo);
        const std::uint32_t seed = 0x5eed0005;
        INFO("seed " << seed);
        std::mt19937 rng(seed);
        std::uniform_int_distribution<int> coin(0, 7);
        std::uniform_int_distribution<long> pause_us(0, 300);
        auto maybe_pause = [&] {
            if (coin(rng) == 0) {
                busy_wait_ns(pause_us(rng) * 1000);
            } else if (coin(rng) == 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
            }
        };
        Pauser pauser(seed, 300);

        std::vector<std::vector<std::byte>> frames;
        for (std::uint32_t i = 0; i < 32; ++i) {
            frames.push_back(seq_frame(i));
        }
        std::vector<std::span<const std::byte>> burst(frames.begin(), frames.end());
        std::vector<pollfd> pfds;
        for (int fd : v.nf->pollable_fds()) {
            pfds.push_back({fd, POLLIN, 0});
        }
        constexpr std::uint32_t kWindow = 448;
        std::uint32_t sent = 0, next = 0;
        unsigned out_of_order = 0, front_missed = 0;
        std::uint32_t round_end = 0;
        std::uniform_int_distribution<std::uint32_t> round_len(1, 4 * kWindow);
        auto take = [&](const netfront::PacketView& p) {
            std::uint32_t seq = 0;
            if (p.data.size() == 64) {
                std::memcpy(&seq, p.data.data() + 14, sizeof seq);
            }
            if (p.data.size() != 64 || seq != next) {
                ++out_of_order;
            }
            ++next;
        };
        hv::SpinPolicy spin(var.front_spin);
        const auto send_until = std::chrono::steady_clock::now() + 1s;
        const auto deadline = send_until + 20s;
        while (std::chrono::steady_clock::now() < deadline) {
            const bool sending = std::chrono::steady_clock::now() < send_until;
            if (!sending && next == sent) {
                break;
            }
            // Rounds of a random number of frames, each sent as the window allows and then
            // nothing until all are back. The window is larger than the rx ring (the loop
            // engine holds the rest), so netback waits for rx buffers, and at a round's end
            // the last frames need buffers the frontend posts while no tx wakes netback.
            if (next == sent) {
                round_end = sent + round_len(rng);
            }
            while (sending && sent < round_end && sent - next < kWindow) {
                const std::size_t room = std::min<std::size_t>(
                    {32, kWindow - (sent - next), std::size_t{round_end - sent}});
                for (std::size_t i = 0; i < room; ++i) {
                    const std::uint32_t seq = sent + static_cast<std::uint32_t>(i);
                    std::memcpy(frames[i].data() + 14, &seq, sizeof seq);
                }
                auto k = v.nf->send_burst(0, std::span(burst).first(room));
                REQUIRE(k);
                if (*k == 0) {
                    break;
                }
                sent += static_cast<std::uint32_t>(*k);
                maybe_pause();
            }
            const auto arm =
                coin(rng) == 0 ? netfront::Device::Arm::yes : netfront::Device::Arm::no;
            const std::size_t n = v.nf->poll_each(take, arm);
            maybe_pause();
            if (n > 0) {
                spin.worked();
                continue;
            }
            if (const auto b = spin.budget();
                b.count() > 0 && hv::spin_until([&] { return v.nf->responses_pending(); }, b,
                                                hv::SpinYield::every_64)) {
                continue;
            }
            if (v.nf->arm()) {
                continue;
            }
            maybe_pause();  // armed: whatever the backend publishes now must wake the poll
            if (::poll(pfds.data(), pfds.size(), 1000) == 0 && v.nf->responses_pending()) {
                ++front_missed;  // slept a whole second with responses there
            }
        }
        CHECK(pauser.pauses > 0);
        REQUIRE(next == sent);
        CHECK(sent > kWindow);
        CHECK(out_of_order == 0);
        CHECK(front_missed == 0);
        CHECK(v.nf->counters().rx_errors == 0);
        CHECK(v.nf->counters().tx_errors == 0);
        // Statistics are written every 50 ms: wait for this traffic's.
        REQUIRE(v.wait_backend_key("statistics/rx_packets", std::to_string(sent)));
        CHECK(v.backend_key("statistics/missed_wakeups") == "0");
        CHECK(v.backend_key("statistics/rx_dropped") == "0");
        CHECK(v.backend_key("statistics/tx_dropped") == "0");
    }
}

}  // namespace hv::net::test

namespace hv::net::test {

TEST_CASE("netfront posts rx buffers in batches but none stays unposted after a poll pass",
          "[netback][e2e][issue-5]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::uint32_t next = 0;
    unsigned bad = 0;
    auto take = [&](const netfront::PacketView& p) {
        std::uint32_t seq = UINT32_MAX;
        if (p.data.size() == 64) {
            std::memcpy(&seq, p.data.data() + 14, sizeof seq);
        }
        bad += seq != next ? 1U : 0U;
        ++next;
    };
    auto receive_until = [&](std::uint32_t n) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        std::vector<pollfd> fds;
        for (int fd : v.nf->pollable_fds()) {
            fds.push_back({fd, POLLIN, 0});
        }
        while (next < n && std::chrono::steady_clock::now() < deadline) {
            if (v.nf->poll_each(take) == 0) {
                (void)::poll(fds.data(), fds.size(), 20);
            }
        }
        return next;
    };
    // Fewer packets than a batch: their buffers go back at the end of the pass.
    for (std::uint32_t i = 0; i < 5; ++i) {
        REQUIRE(v.nf->send(0, seq_frame(i)));
    }
    REQUIRE(receive_until(5) == 5);
    // A whole ring of frames, and no poll meanwhile: netback finds all 256 buffers posted
    // (with 5 kept back it would deliver 251 and hold the rest for want of buffers).
    std::vector<std::vector<std::byte>> frames;
    for (std::uint32_t i = 5; i < 5 + 256; ++i) {
        frames.push_back(seq_frame(i));
    }
    const std::vector<std::span<const std::byte>> spans(frames.begin(), frames.end());
    std::size_t sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (sent < spans.size() && std::chrono::steady_clock::now() < deadline) {
        auto k = v.nf->send_burst(0, std::span(spans).subspan(sent));  // takes tx responses
        REQUIRE(k);
        sent += *k;
    }
    REQUIRE(sent == spans.size());
    CHECK(v.wait_backend_key("statistics/rx_packets", std::to_string(5 + 256)));
    REQUIRE(receive_until(5 + 256) == 5 + 256);
    CHECK(bad == 0);
    CHECK(v.nf->counters().rx_errors == 0);
}

}  // namespace hv::net::test
