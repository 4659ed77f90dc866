// Network plumbing for the `net` suite (see net_topo.hpp).
#include "net_topo.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "hv/subprocess.hpp"
#include "procs.hpp"

namespace hv::bench::nt {
namespace {

std::atomic<unsigned> g_ns_counter{0};

// ---- SIGINT/SIGTERM: unbind our namespaces (what `ip netns delete` does: a lazy unmount and an
// unlink, both async-signal-safe), then die of the signal. The kernel then frees each namespace
// with every tap, veth and bridge in it; OVS daemons and guests die with us (PDEATHSIG). ----

constexpr std::size_t kMaxNs = 16;
struct NsSlot {
    std::atomic<bool> used{false};
    char path[96] = {};
};
std::array<NsSlot, kMaxNs> g_ns_slots;
struct sigaction g_old_int{}, g_old_term{};
std::atomic<unsigned> g_live_ns{0};

void on_fatal_signal(int sig) {
    for (auto& s : g_ns_slots) {
        if (s.used.load()) {
            ::umount2(s.path, MNT_DETACH);
            ::unlink(s.path);
        }
    }
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

void remember_ns(const std::string& path) {
    for (auto& s : g_ns_slots) {
        if (!s.used.load()) {
            std::snprintf(s.path, sizeof s.path, "%s", path.c_str());
            s.used.store(true);
            break;
        }
    }
    if (g_live_ns.fetch_add(1) == 0) {
        struct sigaction sa{};
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &g_old_int);
        ::sigaction(SIGTERM, &sa, &g_old_term);
    }
}

void forget_ns(const std::string& path) {
    for (auto& s : g_ns_slots) {
        if (s.used.load() && path == s.path) {
            s.used.store(false);
            break;
        }
    }
    if (g_live_ns.fetch_sub(1) == 1) {
        ::sigaction(SIGINT, &g_old_int, nullptr);
        ::sigaction(SIGTERM, &g_old_term, nullptr);
    }
}

void remove_stale_namespaces() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
        const std::string n = e.path().filename().string();
        if (n.rfind(kNsPrefix, 0) != 0) {
            continue;
        }
        const long pid = std::strtol(n.c_str() + std::strlen(kNsPrefix), nullptr, 10);
        if (pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 ||
            errno != ESRCH) {
            continue;
        }
        (void)hv::run({"ip", "netns", "delete", n}, 5000);
    }
    // Run directories of the suite ($TMPDIR/hvbench-net-<pid>-<kind>) left by a killed run.
    const auto tmp = std::filesystem::temp_directory_path(ec);
    for (const auto& e : std::filesystem::directory_iterator(tmp, ec)) {
        const std::string n = e.path().filename().string();
        const std::string prefix = "hvbench-net-";
        if (n.rfind(prefix, 0) != 0) {
            continue;
        }
        const long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
        if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) != 0 &&
            errno == ESRCH) {
            std::error_code rec;
            std::filesystem::remove_all(e.path(), rec);
        }
    }
}

}  // namespace

Result<NamedNs> NamedNs::create(const std::string& tag) {
    static bool cleaned = false;
    if (!cleaned) {
        cleaned = true;
        remove_stale_namespaces();
    }
    const std::string name = std::string(kNsPrefix) + std::to_string(::getpid()) + "-" + tag +
                             std::to_string(g_ns_counter.fetch_add(1));
    HV_TRY(ip({"netns", "add", name}));
    UniqueFd fd(::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        const auto err = fail_errno();
        (void)hv::run({"ip", "netns", "delete", name}, 5000);
        return err;
    }
    remember_ns("/run/netns/" + name);
    NamedNs ns(name, std::move(fd));
    HV_TRY(ip({"-n", name, "link", "set", "lo", "up"}));
    return ns;
}

NamedNs::NamedNs(NamedNs&& o) noexcept : name_(std::move(o.name_)), fd_(std::move(o.fd_)) {
    o.name_.clear();
}

NamedNs::~NamedNs() {
    if (!name_.empty()) {
        fd_.reset();
        (void)hv::run({"ip", "netns", "delete", name_}, 5000);
        forget_ns("/run/netns/" + name_);
    }
}

Result<void> ip(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"ip"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = hv::run(argv, 5000);
    if (!r) {
        return fail(r.error());
    }
    if (r->exit_code != 0) {
        std::string cmd;
        for (const auto& a : argv) {
            cmd += a + " ";
        }
        std::fprintf(stderr, "hvbench net: %sexited %d: %s\n", cmd.c_str(), r->exit_code,
                     r->output.c_str());
        return fail_errno(EIO);
    }
    return {};
}

Result<UniqueFd> socket_in(int nsfd, int type) {
    int fd = -1;
    int err = 0;
    std::thread t([&] {
        if (::setns(nsfd, CLONE_NEWNET) != 0) {
            err = errno;
            return;
        }
        fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
        }
    });
    t.join();
    if (fd < 0) {
        return fail_errno(err);
    }
    return UniqueFd(fd);
}

Result<double> parse_iperf3_bps(const std::string& json) {
    const auto at = json.find("\"sum_received\"");
    if (at == std::string::npos) {
        return fail_errno(EINVAL);
    }
    const std::string key = "\"bits_per_second\":";
    const auto k = json.find(key, at);
    if (k == std::string::npos) {
        return fail_errno(EINVAL);
    }
    const char* s = json.c_str() + k + key.size();
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    if (end == s || !(v >= 0)) {
        return fail_errno(EINVAL);
    }
    return v;
}

Result<double> iperf3_gbps(int server_ns, int client_ns, const std::string& addr, unsigned streams,
                           unsigned seconds) {
    SpawnOptions so;
    so.netns_fd = server_ns;
    auto server = Subprocess::spawn({"iperf3", "-s", "-1", "--forceflush", "-p", "5201"}, so);
    if (!server) {
        return fail(server.error());
    }
    HV_TRY(server->wait_for_output("Server listening", 5000));
    SpawnOptions co;
    co.netns_fd = client_ns;
    auto r = hv::run({"iperf3", "-c", addr, "-p", "5201", "-J", "-t", std::to_string(seconds), "-P",
                      std::to_string(streams)},
                     static_cast<int>(seconds) * 1000 + 15000, co);
    if (!r) {
        return fail(r.error());
    }
    (void)server->wait(2000);
    if (r->exit_code != 0) {
        std::fprintf(stderr, "hvbench net: iperf3 client exited %d: %.400s\n", r->exit_code,
                     r->output.c_str());
        return fail_errno(EIO);
    }
    auto bps = parse_iperf3_bps(r->output);
    if (!bps) {
        return fail(bps.error());
    }
    return *bps / 1e9;
}

Result<Sample> udp_rtt(int a_ns, int b_ns, const std::string& addr_a, unsigned count) {
    auto srv = socket_in(a_ns, SOCK_DGRAM);
    if (!srv) {
        return fail(srv.error());
    }
    auto cli = socket_in(b_ns, SOCK_DGRAM);
    if (!cli) {
        return fail(cli.error());
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(5301);
    if (::inet_pton(AF_INET, addr_a.c_str(), &sa.sin_addr) != 1) {
        return fail_errno(EINVAL);
    }
    if (::bind(srv->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return fail_errno();
    }
    std::atomic<bool> stop{false};
    std::thread echo([&] {
        pin_to_cpu(1);
        char buf[256];
        pollfd p{srv->get(), POLLIN, 0};
        while (!stop.load(std::memory_order_relaxed)) {
            if (::poll(&p, 1, 100) <= 0) {
                continue;
            }
            sockaddr_in from{};
            socklen_t fl = sizeof from;
            const ssize_t n = ::recvfrom(srv->get(), buf, sizeof buf, MSG_DONTWAIT,
                                         reinterpret_cast<sockaddr*>(&from), &fl);
            if (n > 0) {
                (void)::sendto(srv->get(), buf, static_cast<std::size_t>(n), 0,
                               reinterpret_cast<sockaddr*>(&from), fl);
            }
        }
    });
    struct Joiner {
        std::atomic<bool>& stop;
        std::thread& t;
        ~Joiner() {
            stop = true;
            t.join();
        }
    } joiner{stop, echo};

    std::vector<double> ns;
    ns.reserve(count);
    char msg[64] = {};
    char buf[256];
    unsigned losses_in_row = 0;
    for (std::uint64_t seq = 0; ns.size() < count;) {
        ++seq;
        std::memcpy(msg, &seq, sizeof seq);
        const auto t0 = std::chrono::steady_clock::now();
        if (::sendto(cli->get(), msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) !=
            static_cast<ssize_t>(sizeof msg)) {
            return fail_errno();
        }
        bool got = false;
        while (!got) {
            pollfd p{cli->get(), POLLIN, 0};
            const int pr = ::poll(&p, 1, 200);
            if (pr < 0 && errno != EINTR) {
                return fail_errno();
            }
            if (pr <= 0) {
                break;
            }
            const ssize_t n = ::recv(cli->get(), buf, sizeof buf, MSG_DONTWAIT);
            std::uint64_t back = 0;
            if (n == static_cast<ssize_t>(sizeof msg)) {
                std::memcpy(&back, buf, sizeof back);
            }
            got = back == seq;  // a stale echo of a resent datagram is skipped
        }
        if (!got) {
            if (++losses_in_row >= 20) {
                return fail(timed_out_error());
            }
            continue;
        }
        losses_in_row = 0;
        ns.push_back(static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::steady_clock::now() - t0)
                                             .count()));
    }
    return latency_sample(ns);
}

Result<void> wait_reachable(int ns, const std::string& addr, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    SpawnOptions so;
    so.netns_fd = ns;
    while (true) {
        auto r = hv::run({"ping", "-c", "1", "-W", "1", "-q", addr}, 3000, so);
        if (r && r->exit_code == 0) {
            return {};
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            std::fprintf(stderr, "hvbench net: %s unreachable\n", addr.c_str());
            return fail(timed_out_error());
        }
    }
}

}  // namespace hv::bench::nt
