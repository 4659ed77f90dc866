// Control over hvmin::Toolstack: the real hv-min daemon through its control socket.
// Layer: tools. One thread.
#include "control_hvmin.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "hv/unique_fd.hpp"
#include "hvmin/toolstack.hpp"

namespace hv::tools {

namespace {

struct ProcStat {
    std::uint32_t threads = 1;
    std::uint64_t cpu_time_ns = 0;  // utime + stime
};

/// Fields 14 (utime), 15 (stime) and 20 (num_threads) of /proc/PID/stat; defaults if the
/// process is gone or unreadable.
ProcStat proc_stat(pid_t pid) {
    ProcStat st;
    if (pid <= 0) {
        return st;
    }
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    hv::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return st;
    }
    char buf[1024];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n <= 0) {
        return st;
    }
    const std::string stat(buf, static_cast<std::size_t>(n));
    auto pos = stat.rfind(')');  // the command name may contain spaces and parentheses
    if (pos == std::string::npos) {
        return st;
    }
    // After ")" each space starts the next field, beginning with field 3 (state).
    unsigned long long ticks = 0;
    for (int field = 3; field <= 20; ++field) {
        pos = stat.find(' ', pos + 1);
        if (pos == std::string::npos) {
            return st;
        }
        if (field == 14 || field == 15) {
            ticks += std::strtoull(stat.c_str() + pos + 1, nullptr, 10);
        } else if (field == 20) {
            const long v = std::strtol(stat.c_str() + pos + 1, nullptr, 10);
            st.threads = v > 0 ? static_cast<std::uint32_t>(v) : 1;
        }
    }
    const long hz = ::sysconf(_SC_CLK_TCK);
    st.cpu_time_ns = hz > 0 ? ticks * (1000000000ull / static_cast<unsigned long long>(hz)) : 0;
    return st;
}

char state_letter(hvmin::wire::DomainState s) {
    switch (s) {
        case hvmin::wire::DomainState::running:
            return 'r';
        case hvmin::wire::DomainState::dying:
            return 'd';
        case hvmin::wire::DomainState::dead:
            return 's';
    }
    return '-';
}

class HvminControl final : public Control {
public:
    HvminControl(hvmin::Toolstack ts, std::string rundir)
        : ts_(std::move(ts)), rundir_(std::move(rundir)) {}

    Result<std::vector<DomainRow>> list() override {
        auto doms = ts_.list();
        if (!doms) {
            return unexpected(doms.error());
        }
        std::vector<DomainRow> rows;
        rows.reserve(doms->size());
        for (const hvmin::DomainStatus& d : *doms) {
            DomainRow r;
            r.domid = d.domid.get();
            r.name = d.domid.get() == 0 ? "Domain-0" : d.name;
            r.memory_pages = d.memory_pages;
            r.state = state_letter(d.state);
            const ProcStat ps = proc_stat(d.pid);
            // hv-min's accounting when it has one, else the process's own CPU time.
            r.cpu_time_ns = d.cpu_time_ns != 0 ? d.cpu_time_ns : ps.cpu_time_ns;
            r.vcpus = ps.threads;
            r.pid = d.pid;
            r.trusted = d.trusted;
            r.driver_domain = d.driver_domain;
            rows.push_back(std::move(r));
        }
        return rows;
    }

    Result<std::uint16_t> create(const CreateSpec& spec) override {
        hvmin::DomainConfig cfg;
        cfg.name = spec.name;
        cfg.memory_pages = spec.memory_pages;
        cfg.argv = spec.argv;
        cfg.env = spec.env;
        cfg.trusted = spec.trusted;
        cfg.driver_domain = spec.driver_domain;
        auto id = ts_.create(cfg);
        if (!id) {
            return unexpected(id.error());
        }
        return id->get();
    }

    Result<void> destroy(std::uint16_t domid, std::chrono::milliseconds timeout) override {
        HV_TRY(ts_.destroy(DomId(domid)));
        auto death = ts_.wait_for_death(DomId(domid), timeout);
        if (!death && death.error() != std::errc::no_such_process) {
            return unexpected(death.error());  // ESRCH: already gone, which is the goal
        }
        return {};
    }

    std::string rundir() const override { return rundir_; }

private:
    hvmin::Toolstack ts_;
    std::string rundir_;
};

}  // namespace

Result<std::unique_ptr<Control>> connect_hvmin(const std::string& rundir) {
    auto ts = hvmin::Toolstack::connect(rundir);
    if (!ts) {
        return unexpected(ts.error());
    }
    return std::unique_ptr<Control>(std::make_unique<HvminControl>(std::move(*ts), rundir));
}

std::string default_hvmin_rundir() {
    return hvmin::default_rundir().string();
}

}  // namespace hv::tools
