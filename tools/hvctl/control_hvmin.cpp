// Control over hvmin::Toolstack: the real hv-min daemon through its control socket.
// Layer: tools. One thread.
#include "control_hvmin.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>

#include "devices.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/toolstack.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

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
        // The toolstack's memory keys (hvctl create, mem-set). The Mem column shows the
        // target, as xl shows a ballooned domain's current size.
        if (ensure_xs()) {
            for (DomainRow& r : rows) {
                if (r.domid == 0) {
                    continue;
                }
                const std::string mem = xenbus::domain_path(DomId(r.domid)) + "/memory/";
                if (auto t = xenbus::read_uint(*xs_, mem + "target", UINT64_MAX / 2); t) {
                    r.target_kib = *t;
                    r.memory_pages = *t / 4;
                }
                if (auto m = xenbus::read_uint(*xs_, mem + "static-max", UINT64_MAX / 2); m) {
                    r.static_max_kib = *m;
                }
            }
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

    Result<DomainEnd> wait_for_death(std::uint16_t domid,
                                     std::chrono::milliseconds timeout) override {
        auto d = ts_.wait_for_death(DomId(domid), timeout);
        if (!d) {
            return unexpected(d.error());
        }
        DomainEnd e;
        e.status = d->status;
        switch (d->reason) {
            case hvmin::wire::DeathReason::exited:
                e.how = DomainEnd::How::exited;
                break;
            case hvmin::wire::DeathReason::killed:
                e.how = DomainEnd::How::killed;
                break;
            case hvmin::wire::DeathReason::destroyed:
                e.how = DomainEnd::How::destroyed;
                break;
            case hvmin::wire::DeathReason::disconnected:
                e.how = DomainEnd::How::disconnected;
                break;
        }
        return e;
    }

    Result<void> add_device(std::uint16_t domid, const DeviceReq& dev) override {
        std::uint16_t backend = 0;
        if (!dev.backend_domain.empty() && dev.backend_domain != "Domain-0") {
            auto rows = list();
            if (!rows) {
                return unexpected(rows.error());
            }
            DomainRow be;
            switch (check_backend(*rows, dev.backend_domain, &be)) {
                case BackendCheck::ok:
                    backend = be.domid;
                    break;
                case BackendCheck::missing:
                    return fail_errno(ENOENT);
                case BackendCheck::not_driver_domain:
                    return fail_errno(EPERM);  // a plain guest serves nothing
            }
        }
        HV_TRY(ensure_xs());
        xenbus::DeviceSpec spec;
        spec.type = dev.type;
        spec.frontend = DomId(domid);
        spec.backend = DomId(backend);
        spec.devid = dev.devid;
        spec.backend_keys = dev.backend_keys;
        spec.frontend_keys = dev.frontend_keys;
        return xenbus::create_device(*xs_, spec);
    }

    Result<std::vector<AttachedDevice>> devices(std::uint16_t domid) override {
        HV_TRY(ensure_xs());
        std::vector<AttachedDevice> out;
        for (const char* type : {"vbd", "vif", "pci"}) {
            const std::string base =
                xenbus::domain_path(DomId(domid)) + "/device/" + std::string(type);
            auto ids = xs_->directory(base);
            if (!ids) {
                if (ids.error() == std::errc::no_such_file_or_directory) {
                    continue;
                }
                return unexpected(ids.error());
            }
            for (const std::string& id : *ids) {
                // GUEST: the frontend's own tree; skip what does not parse.
                auto devid = xenbus::parse_uint(id, UINT32_MAX);
                if (!devid) {
                    continue;
                }
                auto be = xenbus::read_uint(*xs_, base + "/" + id + "/backend-id", 0x7fef);
                out.push_back(AttachedDevice{type, static_cast<std::uint16_t>(be ? *be : 0),
                                             static_cast<std::uint32_t>(*devid)});
            }
        }
        return out;
    }

    std::size_t close_devices(std::uint16_t domid, const std::vector<AttachedDevice>& devs,
                              std::chrono::milliseconds timeout) override {
        if (!ensure_xs()) {
            return devs.size();
        }
        for (const AttachedDevice& d : devs) {
            (void)xenbus::request_close(*xs_, DomId(d.backend), d.type, DomId(domid), d.devid);
        }
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            std::size_t open = 0;
            for (const AttachedDevice& d : devs) {
                auto st = xenbus::read_state(
                    *xs_, xenbus::backend_dir(DomId(d.backend), d.type, DomId(domid), d.devid));
                // A vanished backend directory reads as Unknown: nothing left to wait for.
                if (st && *st != rings::XenbusStateClosed &&
                    *st != rings::XenbusStateUnknown) {
                    ++open;
                }
            }
            if (open == 0 || std::chrono::steady_clock::now() >= deadline) {
                return open;
            }
            // Polling: a watch per device would need an event loop; 20 ms is well inside the
            // backends' reaction time and the wait is bounded.
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    Result<void> remove_devices(std::uint16_t domid,
                                const std::vector<AttachedDevice>& devs) override {
        HV_TRY(ensure_xs());
        Result<void> result;
        for (const AttachedDevice& d : devs) {
            auto r = xenbus::remove_device(*xs_, DomId(d.backend), d.type, DomId(domid), d.devid);
            if (!r && r.error() != std::errc::no_such_file_or_directory && result) {
                result = unexpected(r.error());
            }
            // libxl__xs_path_cleanup: drop backend/<type>/<fe> once it holds no device.
            const std::string parent = xenbus::domain_path(DomId(d.backend)) + "/backend/" +
                                       d.type + "/" + std::to_string(domid);
            auto left = xs_->directory(parent);
            if (left && left->empty()) {
                (void)xs_->rm(parent);
            }
        }
        return result;
    }

    Result<void> set_memory(std::uint16_t domid, std::optional<std::uint64_t> static_max_kib,
                            std::uint64_t target_kib) override {
        HV_TRY(ensure_xs());
        const std::string mem = xenbus::domain_path(DomId(domid)) + "/memory/";
        return xs_->transaction([&](xs::TxId tx) -> Result<void> {
            // The home exists while the domain lives: never resurrect a dead domain's.
            HV_TRY(xs_->read(xenbus::domain_path(DomId(domid)) + "/domid", tx));
            if (static_max_kib) {
                HV_TRY(xs_->write(mem + "static-max", std::to_string(*static_max_kib), tx));
            }
            return xs_->write(mem + "target", std::to_string(target_kib), tx);
        });
    }

    Result<std::vector<std::pair<std::uint16_t, AttachedDevice>>> served_devices(
        std::uint16_t backend) override {
        HV_TRY(ensure_xs());
        std::vector<std::pair<std::uint16_t, AttachedDevice>> out;
        for (const char* type : {"vbd", "vif", "pci"}) {
            const std::string base =
                xenbus::domain_path(DomId(backend)) + "/backend/" + std::string(type);
            auto fes = xs_->directory(base);
            if (!fes) {
                if (fes.error() == std::errc::no_such_file_or_directory) {
                    continue;
                }
                return unexpected(fes.error());
            }
            for (const std::string& fe : *fes) {
                auto fe_id = xenbus::parse_uint(fe, 0x7fef);
                if (!fe_id) {
                    continue;
                }
                auto ids = xs_->directory(base + "/" + fe);
                if (!ids) {
                    continue;  // removed meanwhile
                }
                for (const std::string& id : *ids) {
                    auto devid = xenbus::parse_uint(id, UINT32_MAX);
                    if (devid) {
                        out.emplace_back(static_cast<std::uint16_t>(*fe_id),
                                         AttachedDevice{type, backend,
                                                        static_cast<std::uint32_t>(*devid)});
                    }
                }
            }
        }
        return out;
    }

    Result<std::string> read_store(const std::string& path) override {
        HV_TRY(ensure_xs());
        return xs_->read(path);
    }

    Result<void> remove_store(const std::string& path) override {
        HV_TRY(ensure_xs());
        return xs_->rm(path);
    }

    Result<std::vector<std::string>> list_store(const std::string& path) override {
        HV_TRY(ensure_xs());
        return xs_->directory(path);
    }

    Result<std::vector<std::string>> read_perms(const std::string& path) override {
        HV_TRY(ensure_xs());
        auto p = xs_->get_perms(path);
        if (!p) {
            return unexpected(p.error());
        }
        std::vector<std::string> out;
        for (const xs::Permission& e : *p) {
            out.push_back(xs::to_string(e));
        }
        return out;
    }

    Result<void> store_transaction(const std::vector<StoreOp>& ops) override {
        HV_TRY(ensure_xs());
        return xs_->transaction([&](xs::TxId tx) -> Result<void> {
            for (const StoreOp& op : ops) {
                switch (op.kind) {
                    case StoreOp::Kind::expect: {
                        auto v = xenbus::read_optional(*xs_, op.path, tx);
                        if (!v) {
                            return unexpected(v.error());
                        }
                        if (!v->has_value() || **v != op.value) {
                            return fail_errno(ECANCELED);
                        }
                        break;
                    }
                    case StoreOp::Kind::write:
                        HV_TRY(xs_->write(op.path, op.value, tx));
                        break;
                    case StoreOp::Kind::remove:
                        if (auto r = xs_->rm(op.path, tx);
                            !r && r.error() != std::errc::no_such_file_or_directory) {
                            return r;
                        }
                        break;
                    case StoreOp::Kind::set_perms: {
                        std::vector<xs::Permission> perms;
                        std::size_t i = 0;
                        while (i < op.value.size()) {
                            const std::size_t sp = std::min(op.value.find(' ', i), op.value.size());
                            auto p = xs::parse_permission(
                                std::string_view(op.value).substr(i, sp - i));
                            if (!p) {
                                return unexpected(p.error());
                            }
                            perms.push_back(*p);
                            i = sp + 1;
                        }
                        HV_TRY(xs_->set_perms(op.path, perms, tx));
                        break;
                    }
                }
            }
            return {};
        });
    }

    std::string rundir() const override { return rundir_; }

private:
    Result<void> ensure_xs() {
        if (!xs_) {
            auto x = xs::Client::connect(rundir_ + "/xenstored.sock");
            if (!x) {
                return unexpected(x.error());
            }
            xs_ = std::move(*x);
        }
        return {};
    }

    hvmin::Toolstack ts_;
    std::string rundir_;
    std::unique_ptr<xs::Client> xs_;
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
