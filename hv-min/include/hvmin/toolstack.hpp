// Toolstack: the privileged client API hvctl uses to create, destroy, list and wait for
// domains (a dom0 connection to hv-min). Layer: hv-min (L1). One thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hvmin/client.hpp"
#include "hvmin/wire.hpp"

namespace hv::hvmin {

struct DomainConfig {
    std::string name;                  ///< unique among live domains, < 64 bytes
    std::uint64_t memory_pages = 256;  ///< 4096-byte pages of the domain's memory (xl: memory= MiB × 256)
    std::vector<std::string> argv;     ///< program and arguments (argv[0] is the path, no PATH search)
    std::vector<std::string> env;      ///< "KEY=VALUE"; the program gets only these + HV_HYPERCALL_FD
    bool trusted = false;              ///< may map peers' memory directly (map mode)
    bool driver_domain = false;
    std::uint32_t gnttab_frames = 0;   ///< grant-table frames (512 refs each); 0 = default (16)
};

struct DomainStatus {
    DomId domid;
    std::string name;
    std::uint64_t memory_pages = 0;
    wire::DomainState state = wire::DomainState::running;
    std::uint64_t cpu_time_ns = 0;
    pid_t pid = -1;
    bool trusted = false;
    bool driver_domain = false;
};

struct DomainDeath {
    DomId domid;
    wire::DeathReason reason = wire::DeathReason::exited;
    int status = 0;  ///< exit code (exited) or signal (killed)
};

class Toolstack {
public:
    /// Connects to $rundir/hv-min.sock. Needs root (SO_PEERCRED uid 0).
    static Result<Toolstack> connect(const std::filesystem::path& rundir = default_rundir());

    /// Creates and starts a domain. Errors: EINVAL (bad config), EEXIST (name taken),
    /// ENOMEM, ENOSPC (no domid left), or the exec error of the program (e.g. ENOENT).
    Result<DomId> create(const DomainConfig& cfg);
    /// Kills every process of the domain and releases everything it held. ESRCH if unknown.
    Result<void> destroy(DomId domid);
    /// Live domains (dom0 first).
    Result<std::vector<DomainStatus>> list();
    /// Blocks until the domain is gone (at most `timeout`). ESRCH if unknown,
    /// Errc::timed_out on timeout. Uses its own connection, so others may call meanwhile.
    Result<DomainDeath> wait_for_death(DomId domid, std::chrono::milliseconds timeout);
    /// A VIRQ_DOM_EXC binding: its fd becomes readable whenever a domain dies.
    Result<EventChannelBinding> watch_deaths();

    Services& services() noexcept { return svc_; }

private:
    Toolstack(Services svc, std::filesystem::path rundir) noexcept
        : svc_(std::move(svc)), rundir_(std::move(rundir)) {}
    Services svc_;
    std::filesystem::path rundir_;
};

}  // namespace hv::hvmin
