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
    /// The reply ("ok ..." / "err ..."), or "" if the domain died or did not answer in 10 s.
    std::string cmd(const std::string& line);
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

/// Splits "ok 1 2" → {"ok","1","2"}.
std::vector<std::string> words(const std::string& s);

}  // namespace hv::hvmin::test
