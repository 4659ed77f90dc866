// A dpdk-testpmd peer for DPDK tests: virtio-user ports connecting to vhost-user servers (the
// sockets netback's DPDK vifs listen on), forwarding in io mode. No hugepages (--no-huge: the
// EAL backs its memory with memfds, which virtio-user shares with the vhost side) and no
// shared files (--no-shconf, --file-prefix hvtp-<our pid>: remove_testpmd_rundir() clears it).
// Output (the periodic stats keep it running without a terminal) goes to a log file. The process
// dies with the thread that started it.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "hv/cpu.hpp"
#include "hv/expected.hpp"
#include "hv/subprocess.hpp"

namespace hv::test {

/// Removes the (empty, --no-shconf) runtime directory testpmd's EAL made for `pid`.
inline void remove_testpmd_rundir(int pid) {
    std::error_code ec;
    std::filesystem::remove_all("/var/run/dpdk/hvtp-" + std::to_string(pid), ec);
}

/// dpdk-testpmd from PATH or Debian's location; "" when absent.
inline std::string find_testpmd() {
    std::vector<std::string> dirs{"/usr/bin", "/usr/local/bin"};
    if (const char* p = std::getenv("PATH")) {
        std::string s(p);
        for (std::size_t at = 0; at <= s.size();) {
            const std::size_t c = std::min(s.find(':', at), s.size());
            dirs.push_back(s.substr(at, c - at));
            at = c + 1;
        }
    }
    for (const auto& d : dirs) {
        const std::string f = d + "/dpdk-testpmd";
        if (::access(f.c_str(), X_OK) == 0) {
            return f;
        }
    }
    return {};
}

/// Starts testpmd with one `net_virtio_user<i>,path=<socket>` port per socket, forwarding in
/// `mode` (default io), port topology `topology` ("loop": each port back to itself; "paired":
/// 0<->1); `commands`, when given, is a file of testpmd commands run once the ports are up,
/// before forwarding starts (--cmdline-file).
inline hv::Result<hv::Subprocess> start_testpmd(const std::string& testpmd,
                                                const std::vector<std::string>& sockets,
                                                const std::string& topology,
                                                const std::string& log_path,
                                                const std::string& mode = "io",
                                                const std::string& commands = "") {
    // Both lcores (main and forwarding) on the first CPU we may use: the forwarding core spins.
    const std::string c = std::to_string(hv::first_allowed_cpu());
    std::vector<std::string> a{testpmd,
                               "--lcores",
                               "0@" + c + ",1@" + c,
                               "--no-pci",
                               "--no-shconf",
                               "--file-prefix",
                               "hvtp-" + std::to_string(::getpid()),
                               "--no-huge",
                               "-m",
                               "256",
                               "--no-telemetry"};
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        a.push_back("--vdev");
        a.push_back("net_virtio_user" + std::to_string(i) + ",path=" + sockets[i] + ",queues=1");
    }
    a.insert(a.end(), {"--", "--nb-cores=1", "--total-num-mbufs=8192", "--forward-mode=" + mode,
                       "--port-topology=" + topology, "--stats-period", "1"});
    if (!commands.empty()) {
        a.push_back("--cmdline-file=" + commands);
    }
    hv::SpawnOptions o;
    o.capture_output = false;
    o.log_path = log_path;
    return hv::Subprocess::spawn(a, o);
}

}  // namespace hv::test
