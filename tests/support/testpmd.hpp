// A dpdk-testpmd peer for DPDK tests: virtio-user ports connecting to vhost-user servers (the
// sockets netback's DPDK vifs listen on), forwarding in io mode. No hugepages (--no-huge: the
// EAL backs its memory with memfds, which virtio-user shares with the vhost side) and no
// shared files (--no-shconf, --file-prefix hvtp-<our pid>: remove_testpmd_rundir() clears it).
// Output (the periodic stats keep it running without a terminal) goes to a log file. The process
// dies with the thread that started it.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
/// before forwarding starts (--cmdline-file). `more_vdevs` are further ports after those
/// (e.g. pcap_vdev()).
inline hv::Result<hv::Subprocess> start_testpmd(const std::string& testpmd,
                                                const std::vector<std::string>& sockets,
                                                const std::string& topology,
                                                const std::string& log_path,
                                                const std::string& mode = "io",
                                                const std::string& commands = "",
                                                const std::vector<std::string>& more_vdevs = {}) {
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
    for (const std::string& v : more_vdevs) {
        a.push_back("--vdev");
        a.push_back(v);
    }
    // --no-flush-rx: by default testpmd empties every rx queue when forwarding starts, which is
    // after it saw the links up; a vif is Connected at link up, so what its frontend sent at
    // once (and a pcap port's whole file) would be received and freed there, never forwarded.
    a.insert(a.end(), {"--", "--nb-cores=1", "--total-num-mbufs=8192", "--forward-mode=" + mode,
                       "--port-topology=" + topology, "--stats-period", "1", "--no-flush-rx"});
    if (!commands.empty()) {
        a.push_back("--cmdline-file=" + commands);
    }
    hv::SpawnOptions o;
    o.capture_output = false;
    o.log_path = log_path;
    return hv::Subprocess::spawn(a, o);
}

/// A testpmd port on pcap files (DPDK's pcap PMD): it receives the frames of `rx_file` once,
/// in order, and appends every frame it transmits to `tx_file` (flushed after each burst).
inline std::string pcap_vdev(const std::string& rx_file, const std::string& tx_file) {
    return "net_pcap0,rx_pcap=" + rx_file + ",tx_pcap=" + tx_file;
}

/// Writes `frames` as a pcap file (Ethernet link type, microsecond timestamps 0).
inline bool write_pcap(const std::string& path, const std::vector<std::vector<std::uint8_t>>& frames) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    auto u32 = [&](std::uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
    auto u16 = [&](std::uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
    u32(0xa1b2c3d4);  // host byte order, as every reader accepts
    u16(2);
    u16(4);
    u32(0);
    u32(0);
    u32(65535);
    u32(1);  // LINKTYPE_ETHERNET
    for (const auto& fr : frames) {
        u32(0);
        u32(0);
        u32(static_cast<std::uint32_t>(fr.size()));
        u32(static_cast<std::uint32_t>(fr.size()));
        f.write(reinterpret_cast<const char*>(fr.data()), static_cast<std::streamsize>(fr.size()));
    }
    return static_cast<bool>(f.flush());
}

/// The frames of a pcap file in host byte order (micro- or nanosecond magic), as far as it
/// is complete (a record still being written is left out); {} when it is absent or not pcap.
inline std::vector<std::vector<std::uint8_t>> read_pcap(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> all((std::istreambuf_iterator<char>(f)), {});
    std::vector<std::vector<std::uint8_t>> out;
    auto u32 = [&](std::size_t at) {
        std::uint32_t v = 0;
        std::memcpy(&v, all.data() + at, 4);
        return v;
    };
    if (all.size() < 24 || (u32(0) != 0xa1b2c3d4 && u32(0) != 0xa1b23c4d)) {
        return out;
    }
    for (std::size_t at = 24; at + 16 <= all.size();) {
        const std::uint32_t len = u32(at + 8);
        if (len > all.size() - at - 16) {
            break;
        }
        const auto* b = reinterpret_cast<const std::uint8_t*>(all.data() + at + 16);
        out.emplace_back(b, b + len);
        at += 16 + len;
    }
    return out;
}

}  // namespace hv::test
