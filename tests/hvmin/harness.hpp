// hv-min test harness: an in-process Core in a private rundir, the test process as dom0,
// and Puppet domains (hvmin_test_guest processes driven line by line).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"
#include "hvmin/toolstack.hpp"
#include "temp_dir.hpp"

namespace hv::hvmin::test {

struct Harness {
    explicit Harness(CoreConfig cfg = {});
    ~Harness();
    Services& dom0() { return ts->services(); }

    hv::test::TempDir dir{"hvmin"};
    std::unique_ptr<Core> core;
    std::optional<Toolstack> ts;
};

struct PuppetOptions {
    std::uint64_t pages = 64;
    bool trusted = false;
};

/// A real domain running hvmin_test_guest; cmd() sends one line and returns the reply line.
class Puppet {
public:
    Puppet(Harness& h, const std::string& name, PuppetOptions o = {});
    /// The reply ("ok ..." / "err ..."), or "" if the domain died or did not answer in
    /// `timeout` (a bound only a hang reaches).
    std::string cmd(const std::string& line, std::chrono::milliseconds timeout = kCmdTimeout);
    static constexpr std::chrono::milliseconds kCmdTimeout{10000};
    /// cmd() that must answer "ok <number>": the number.
    long num(const std::string& line);
    DomId domid{0};

private:
    UniqueFd listen_;
    UniqueFd conn_;
    std::string buf_;
};

/// The hv-min binary (HVMIN_DAEMON) serving `rundir` in the foreground (with `extra`
/// arguments), and a toolstack connected to it once it listens (REQUIREs).
struct DaemonRun {
    pid_t pid = -1;
    std::optional<Toolstack> ts;
};
DaemonRun start_daemon(const std::string& rundir, const std::vector<std::string>& extra = {});

/// This process's CPU time so far (tests that check a loop does not spin).
std::chrono::nanoseconds process_cpu_time();

/// Spinning is off while the CPUs are oversubscribed (hv::cpus_oversubscribed); tests of the
/// spinning itself must see it on a loaded machine too.
struct IgnoreLoad {
    IgnoreLoad();
    ~IgnoreLoad();
    IgnoreLoad(const IgnoreLoad&) = delete;
    IgnoreLoad& operator=(const IgnoreLoad&) = delete;
};

/// One gnttab_copy: each side a grant ref (`*_gref`) or a frame of the caller.
rings::gnttab_copy make_copy(bool src_gref, std::uint64_t src, rings::domid_t sdom,
                             std::uint16_t soff, bool dst_gref, std::uint64_t dst,
                             rings::domid_t ddom, std::uint16_t doff, std::uint16_t len);

/// Splits "ok 1 2" → {"ok","1","2"}.
std::vector<std::string> words(const std::string& s);

}  // namespace hv::hvmin::test
