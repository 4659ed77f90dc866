// Network plumbing for the `net` suite: named network namespaces the bench creates (and removes),
// `ip`/iperf3 runs inside them, sockets opened inside a namespace, a UDP ping-pong.
// NETWORK RULE: every link lives in a namespace made here; nothing touches the root namespace.
// Layer: tools (top). Used by the suite's driver thread.
#pragma once

#include <string>
#include <vector>

#include "harness.hpp"
#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::bench::nt {

/// A namespace bound at /run/netns/hvb-<pid>-<tag> (`ip netns add`); deleted by the destructor.
/// Namespaces left by a dead earlier hvbench (same prefix, pid gone) are removed on create().
class NamedNs {
public:
    static Result<NamedNs> create(const std::string& tag);
    NamedNs(NamedNs&& o) noexcept;
    NamedNs& operator=(NamedNs&&) = delete;
    NamedNs(const NamedNs&) = delete;
    NamedNs& operator=(const NamedNs&) = delete;
    ~NamedNs();
    const std::string& name() const noexcept { return name_; }
    int fd() const noexcept { return fd_.get(); }

private:
    NamedNs(std::string name, UniqueFd fd) noexcept : name_(std::move(name)), fd_(std::move(fd)) {}
    std::string name_;
    UniqueFd fd_;
};

/// The prefix of every namespace hvbench creates ("hvb-").
inline constexpr const char* kNsPrefix = "hvb-";

/// Runs `ip <args>` (bounded); a non-zero exit is EIO with its output on stderr.
Result<void> ip(const std::vector<std::string>& args);

/// A socket of `type` created inside the namespace `nsfd` (by a short-lived thread that joins
/// it); it stays bound to that namespace.
Result<UniqueFd> socket_in(int nsfd, int type);

/// One iperf3 TCP run: server in `server_ns` (one-off), client in `client_ns` to `addr`,
/// `streams` parallel streams for `seconds`. Gbit/s received (iperf3's sum_received).
Result<double> iperf3_gbps(int server_ns, int client_ns, const std::string& addr, unsigned streams,
                           unsigned seconds);

/// Parses iperf3 -J output: end.sum_received.bits_per_second. EINVAL if absent.
Result<double> parse_iperf3_bps(const std::string& json);

/// UDP ping-pong of 64-byte datagrams between an echo thread in `a_ns` (bound to addr_a:port)
/// and a client in `b_ns`: `count` round trips, p50/p99 ns (value = p50). A datagram lost is
/// resent after 200 ms and its round trip not counted; 20 losses in a row fail the run.
Result<Sample> udp_rtt(int a_ns, int b_ns, const std::string& addr_a, unsigned count);

/// Waits (bounded) until `ping -c1` from `ns` reaches `addr`.
Result<void> wait_reachable(int ns, const std::string& addr, int timeout_ms);

}  // namespace hv::bench::nt
