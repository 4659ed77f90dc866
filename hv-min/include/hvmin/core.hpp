// hv::hvmin::Core — the hypervisor: domains, memory, grant tables, event channels and the
// hypercall transport (design §2–5), one epoll loop thread. The daemon (main.cpp) runs it in
// its main thread; tests and benches run the same core in-process with start()/stop().
// Layer: hv-min (L1). Public members may be called from any thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "hv/expected.hpp"
#include "hv/spin.hpp"

namespace hv::hvmin {

/// The spin window the adaptive benches use and an idle host is expected to want (README
/// "Adaptive polling"): longer than one idle-vCPU wake-up. Not the default: measured on a
/// loaded 2-CPU host, spinning made hypercalls slower (see the README).
inline constexpr std::chrono::microseconds kCoreSpinWindow{50};

struct CoreConfig {
    std::filesystem::path rundir;          ///< hv-min.sock (and xenstored.sock) live here
    std::uint32_t default_gnttab_frames = 16;
    std::size_t max_queued_replies = 1024;  ///< a connection with more unread replies is dropped
    uid_t dom0_uid = 0;                     ///< peers with this uid (SO_PEERCRED) are dom0
    bool host_xenstore = true;              ///< run the XenStore server (if built with it)
    /// A domain whose program closes its hypercall socket itself is dead at once (everything
    /// released), but its process gets this long to exit before hv-min SIGKILLs it, so its
    /// death reports the program's own exit status. 0 = SIGKILL at once.
    std::uint32_t exit_grace_ms = 1000;
    /// A dying domain whose processes SIGKILL has not all ended after this long (one blocked
    /// in the kernel, state D) is logged once with each remaining pid, its state and wchan;
    /// hv-min keeps killing it every second, and it stays listed as dying until it is gone.
    /// 0 = neither log nor retry.
    std::uint32_t kill_report_ms = 10000;
    /// Where each domain's cgroup (every process it starts) is made: "" = under hv-min's own
    /// cgroup in the cgroup2 mount found in /proc/mounts; "none" = no cgroups (a domain is its
    /// process group only: a daemon that calls setsid outlives it); else a cgroup2 directory.
    /// Without a usable cgroup2 hierarchy hv-min logs that and falls back to process groups.
    std::string cgroup;
    /// A frontend that still holds an fd or a mapping of a revoked I/O-memory grant (a PCI BAR)
    /// gets this long to let go before it is destroyed ("kept a revoked BAR mapping").
    std::uint32_t iomem_revoke_grace_ms = 2000;
    /// Adaptive polling of the loop: while some connection made a hypercall within this
    /// window, the loop polls its epoll set with zero timeouts before it sleeps, so a caller
    /// making back-to-back hypercalls does not pay an idle-CPU wake-up per call. After a
    /// quiet window the loop sleeps as before. 0 = always sleep. Default: hv::default_spin()
    /// (HVKIT_POLL_US, else 0).
    std::chrono::microseconds spin_window = hv::default_spin();
};

/// How the loop waited (tests, metrics).
struct LoopStats {
    std::uint64_t sleeps = 0;     ///< blocking epoll_wait calls
    std::uint64_t spin_hits = 0;  ///< waits that found events while spinning (no sleep)
};

class Core {
public:
    /// Creates the listening socket and the epoll set. Errors: socket/bind/epoll errno.
    static Result<std::unique_ptr<Core>> create(CoreConfig cfg);
    ~Core();  ///< stops the loop, kills every process of every domain and reaps it
    Core(const Core&) = delete;
    Core& operator=(const Core&) = delete;

    /// Runs the loop in the calling thread until stop(). Errors: epoll_wait errno.
    Result<void> run();
    /// Runs the loop in an internal thread.
    Result<void> start();
    /// Makes run() return; joins the internal thread. Idempotent.
    void stop() noexcept;

    std::filesystem::path socket_path() const;
    /// Live domains other than dom0 (for tests and metrics).
    std::size_t domain_count() const;
    /// Connections hv-min dropped for misbehaviour (unread replies, truncated datagrams).
    std::uint64_t dropped_connections() const;
    /// Requests served since start.
    std::uint64_t requests_served() const;
    LoopStats loop_stats() const;

private:
    struct Impl;
    explicit Core(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::hvmin
