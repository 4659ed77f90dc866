// xenstored: the hvkit XenStore server as a standalone daemon on a Unix socket.
//   xenstored [--socket PATH] [--quota NAME=VALUE]... [--partial-timeout-ms N]
//             [--max-output BYTES] [--busy-poll-us N] [--no-batch-io]
// Without --socket: $XENSTORED_PATH, else $XENSTORED_RUNDIR/socket, else
// /var/run/xenstored/socket (libxenstore's defaults). Every socket client is dom0.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "hv/log.hpp"
#include "hv/spin.hpp"
#include "xenstore/server.hpp"

namespace {

hv::xs::Server* g_server = nullptr;

void on_signal(int) {
    if (g_server != nullptr) {
        g_server->stop();
    }
}

int usage() {
    std::fprintf(stderr,
                 "usage: xenstored [--socket PATH] [--quota NAME=VALUE]... "
                 "[--partial-timeout-ms N] [--max-output BYTES] [--busy-poll-us N] "
                 "[--no-batch-io]\n"
                 "quota names: nodes watches transactions outstanding transaction-nodes "
                 "permissions path-max node-size memory\n");
    return 2;
}

std::string default_socket() {
    if (const char* p = std::getenv("XENSTORED_PATH"); p != nullptr && *p != '\0') {
        return p;
    }
    if (const char* d = std::getenv("XENSTORED_RUNDIR"); d != nullptr && *d != '\0') {
        return std::string(d) + "/socket";
    }
    return "/var/run/xenstored/socket";
}

}  // namespace

/// The daemon's server spin window when neither --busy-poll-us nor HVKIT_POLL_US says
/// otherwise (see README "Spinning" for the measurement behind it).
constexpr std::chrono::microseconds kDefaultBusyPoll{100};

int main(int argc, char** argv) {
    hv::log::set_program("xenstored");
    hv::xs::ServerConfig cfg;
    cfg.busy_poll = hv::default_spin().count() > 0 ? hv::default_spin() : kDefaultBusyPoll;
    std::string socket_path;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        if (a == "--socket") {
            const char* v = value();
            if (v == nullptr) {
                return usage();
            }
            socket_path = v;
        } else if (a == "--quota") {
            const char* v = value();
            if (v == nullptr) {
                return usage();
            }
            if (!cfg.quotas.apply(v)) {
                std::fprintf(stderr, "xenstored: bad quota '%s'\n", v);
                return usage();
            }
        } else if (a == "--partial-timeout-ms" || a == "--max-output") {
            const char* v = value();
            char* end = nullptr;
            const unsigned long long n = v ? std::strtoull(v, &end, 10) : 0;
            if (v == nullptr || *v == '\0' || *end != '\0' || n == 0) {
                return usage();
            }
            if (a == "--max-output") {
                cfg.max_output_bytes = n;
            } else {
                cfg.partial_message_timeout = std::chrono::milliseconds(n);
            }
        } else if (a == "--busy-poll-us") {
            const char* v = value();
            char* end = nullptr;
            const unsigned long long n = v ? std::strtoull(v, &end, 10) : 0;
            if (v == nullptr || *v == '\0' || *end != '\0' || n > 1'000'000) {
                return usage();
            }
            cfg.busy_poll = std::chrono::microseconds(n);
        } else if (a == "--no-batch-io") {
            cfg.batch_io = false;  // one read(2)/send(2) per connection (ServerConfig::batch_io)
        } else if (a == "-h" || a == "--help") {
            usage();
            return 0;
        } else {
            return usage();
        }
    }
    if (socket_path.empty()) {
        socket_path = default_socket();
    }
    auto srv = hv::xs::Server::create(cfg);
    if (!srv) {
        std::fprintf(stderr, "xenstored: %s\n", srv.error().message().c_str());
        return 1;
    }
    if (auto r = (*srv)->listen_unix(socket_path); !r) {
        std::fprintf(stderr, "xenstored: listen on %s: %s\n", socket_path.c_str(),
                     r.error().message().c_str());
        return 1;
    }
    g_server = srv->get();
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    HV_INFO("listening on %s", socket_path.c_str());
    auto r = (*srv)->run();
    g_server = nullptr;
    if (!r) {
        std::fprintf(stderr, "xenstored: %s\n", r.error().message().c_str());
        return 1;
    }
    return 0;
}
