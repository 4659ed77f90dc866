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

/// Threads of `pid` (field 20 of /proc/PID/stat), or 1 if it cannot be read.
std::uint32_t thread_count(pid_t pid) {
    if (pid <= 0) {
        return 1;
    }
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    hv::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return 1;
    }
    char buf[1024];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n <= 0) {
        return 1;
    }
    const std::string stat(buf, static_cast<std::size_t>(n));
    auto pos = stat.rfind(')');  // the command name may contain spaces and parentheses
    if (pos == std::string::npos) {
        return 1;
    }
    // After ") " come fields 3 (state), 4, ...; num_threads is field 20.
    for (int field = 2; field < 20; ++field) {
        pos = stat.find(' ', pos + 1);
        if (pos == std::string::npos) {
            return 1;
        }
    }
    const long v = std::strtol(stat.c_str() + pos + 1, nullptr, 10);
    return v > 0 ? static_cast<std::uint32_t>(v) : 1;
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
            r.cpu_time_ns = d.cpu_time_ns;
            r.vcpus = thread_count(d.pid);
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
