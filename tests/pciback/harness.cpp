// pciback end-to-end harness implementation (see harness.hpp).
#include "harness.hpp"

#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "donor_channel.hpp"
#include "hv/fd_passing.hpp"
#include "skip.hpp"

namespace hv::pci::test {

BackendOptions emulating(std::initializer_list<const char*> bdfs) {
    BackendOptions o;
    for (const char* b : bdfs) {
        auto e = parse_emulate(std::string(b) + "=testdev");
        REQUIRE(e);
        o.emulated.push_back(*e);
    }
    o.stats_interval = 100ms;
    return o;
}

Env::Env(std::optional<BackendOptions> backend_opt) {
    hv::test::require_root();  // hv-min takes dom0 connections from uid 0 only
    hvmin::CoreConfig cfg;
    cfg.rundir = dir.path();
    cfg.iomem_revoke_grace_ms = 500;  // a guest keeping a revoked BAR dies within the test
    auto c = hvmin::Core::create(cfg);
    REQUIRE(c);
    core = std::move(*c);
    REQUIRE(core->start());
    auto t = hvmin::Toolstack::connect(dir.path());
    REQUIRE(t);
    ts.emplace(std::move(*t));
    auto x = xs::Client::connect((dir / "xenstored.sock").string());
    REQUIRE(x);
    xs = std::move(*x);
    if (backend_opt) {
        start_backend(*backend_opt);
    }
}

void Env::start_backend(BackendOptions opt) {
    auto s = hvmin::connect_dom0(dir.path());
    REQUIRE(s);
    be_svc.emplace(std::move(*s));
    auto x = xs::Client::connect((dir / "xenstored.sock").string());
    REQUIRE(x);
    be_xs = std::move(*x);
    auto b = Backend::create(*be_svc, *be_xs, std::move(opt));
    REQUIRE(b);
    backend = std::move(*b);
    backend->start();
}

void Env::stop_backend() {
    backend.reset();
    be_xs.reset();
    be_svc.reset();
}

Env::~Env() {
    stop_backend();
    xs.reset();
    ts.reset();
    core.reset();
}

std::string Env::bdir(DomId fe) const { return xenbus::backend_dir(DomId(0), "pci", fe, 0); }
std::string Env::fdir(DomId fe) const { return xenbus::frontend_dir(fe, "pci", 0); }

void Env::attach_bus(DomId fe, const std::vector<std::string>& bdfs,
                     const std::vector<std::string>& opts, bool assignable) {
    for (const auto& b : bdfs) {
        if (assignable) {
            make_assignable_bdf(b);
        }
    }
    xenbus::DeviceSpec s;
    s.type = "pci";
    s.frontend = fe;
    s.backend = DomId(0);
    s.devid = 0;
    s.backend_keys["num_devs"] = std::to_string(bdfs.size());
    for (std::size_t i = 0; i < bdfs.size(); ++i) {
        const std::string n = std::to_string(i);
        s.backend_keys["dev-" + n] = bdfs[i];
        s.backend_keys["key-" + n] = bdfs[i];
        s.backend_keys["opts-" + n] =
            i < opts.size() ? opts[i] : "msitranslate=0,power_mgmt=0,permissive=0,rdm_policy=strict";
        s.backend_keys["state-" + n] = "1";
    }
    REQUIRE(xenbus::create_device(*xs, s));
}

void Env::make_assignable_bdf(const std::string& bdf) {
    auto b = parse_bdf(bdf);
    REQUIRE(b);
    make_assignable(registry_key(*b));
}

void Env::hotplug_add(DomId fe, const std::string& bdf, const std::string& opts) {
    make_assignable_bdf(bdf);
    const std::string b = bdir(fe);
    auto r = xs->transaction([&](xs::TxId tx) -> Result<void> {
        auto n = xenbus::read_uint(*xs, b + "/num_devs", 256, tx);
        if (!n) {
            return fail(n.error());
        }
        const std::string i = std::to_string(*n);
        HV_TRY(xs->write(b + "/dev-" + i, bdf, tx));
        HV_TRY(xs->write(b + "/key-" + i, bdf, tx));
        HV_TRY(xs->write(b + "/opts-" + i, opts, tx));
        HV_TRY(xs->write(b + "/state-" + i, "1", tx));
        HV_TRY(xs->write(b + "/num_devs", std::to_string(*n + 1), tx));
        HV_TRY(xs->write(b + "/state", "7", tx));
        return {};
    });
    REQUIRE(r);
}

void Env::hotplug_remove(DomId fe, unsigned i) {
    const std::string b = bdir(fe);
    auto r = xs->transaction([&](xs::TxId tx) -> Result<void> {
        HV_TRY(xs->write(b + "/state-" + std::to_string(i), "5", tx));
        HV_TRY(xs->write(b + "/state", "7", tx));
        return {};
    });
    REQUIRE(r);
}

void Env::make_assignable(const std::string& key, const std::string& driver) {
    REQUIRE(xs->write(std::string(kAssignableDir) + "/" + key, driver));
}

bool Env::wait_value(const std::string& path, const std::string& value,
                     std::chrono::milliseconds timeout) {
    static std::atomic<unsigned> seq{0};
    auto w = xs->watch_scoped(path, "wait" + std::to_string(seq++));
    REQUIRE(w);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto v = xs->read(path);
        if (v && *v == value) {
            return true;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return false;
        }
        (void)xs->wait_event(left + 1ms);
    }
}

std::string Env::read(const std::string& path) {
    auto v = xs->read(path);
    return v ? *v : std::string("<") + v.error().message() + ">";
}

std::filesystem::path fake_host_device(const std::filesystem::path& root, const std::string& bdf,
                                       const std::string& config, const std::string& resource) {
    const auto dev = root / bdf;
    std::filesystem::create_directories(dev);
    std::string cfg = config;
    cfg.resize(256, '\0');
    std::ofstream(dev / "config", std::ios::binary) << cfg;
    std::ofstream(dev / "resource") << resource;
    return dev;
}

// ---- Guest ----

Guest::Guest(Env& e, const std::string& name) : env(e) {
    const std::string path = (env.dir / (name + ".sock")).string();
    UniqueFd listen = hv::test::listen_for_donor(path);
    hvmin::DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = 64;
    cfg.argv = {PCIBACK_E2E_DONOR, path};
    auto d = env.ts->create(cfg);
    REQUIRE(d);
    domid = *d;
    UniqueFd channel = hv::test::receive_donated_channel(listen.get(), donor_);
    auto s = hvmin::Services::attach_fd(std::move(channel));
    REQUIRE(s);
    svc.emplace(std::move(*s));
    auto x = xs::Client::from_fd(svc->take_xenstore_fd());
    REQUIRE(x);
    xs = std::move(*x);
}

Guest::~Guest() { kill(); }

void Guest::drive(pcifront::Device& front, const std::string& until) {
    const std::string b = env.bdir(domid);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (env.read(b + "/state") != until || front.phase() != pcifront::Phase::connected) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        auto ev = xs->wait_event(200ms);
        if (ev && ev->token == front.watch_token()) {
            REQUIRE(front.on_state_change());
        }
    }
}

void Guest::give_to_domain(int fd, char tag) {
    struct stat want {};
    REQUIRE(::fstat(fd, &want) == 0);
    auto r = hv::send_fds(donor_.get(), hv::bytes_of(tag), std::span<const int>(&fd, 1));
    REQUIRE(r);
    // Until the domain's process holds it (an fd in flight is in nobody's table yet).
    auto doms = env.ts->list();
    REQUIRE(doms);
    pid_t pid = -1;
    for (const auto& d : *doms) {
        if (d.domid == domid) {
            pid = d.pid;
        }
    }
    REQUIRE(pid > 0);
    const std::string proc = "/proc/" + std::to_string(pid);
    const auto holds = [&] {
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(proc + "/fd", ec)) {
            struct stat st {};
            if (::stat(e.path().c_str(), &st) == 0 && st.st_ino == want.st_ino && st.st_dev == want.st_dev) {
                return true;
            }
        }
        std::ifstream maps(proc + "/maps");
        std::string line;
        while (std::getline(maps, line)) {
            unsigned long long ino = 0;
            if (std::sscanf(line.c_str(), "%*s %*s %*s %*s %llu", &ino) == 1 && ino == want.st_ino) {
                return true;
            }
        }
        return false;
    };
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!holds()) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(5ms);
    }
}

void Guest::kill() {
    if (!donor_.valid()) {
        return;
    }
    xs.reset();
    donor_.reset();  // the donor exits: the domain dies
    (void)env.ts->wait_for_death(domid, 10s);
    svc.reset();
}

std::unique_ptr<pcifront::Device> Guest::connect(pcifront::Options o) {
    auto d = pcifront::Device::create(*svc, *xs, 0, o);
    REQUIRE(d);
    auto c = (*d)->wait_connected(10s);
    if (!c) {
        FAIL("pcifront did not connect: " << c.error().message() << "; backend state "
                                          << env.read(env.bdir(domid) + "/state"));
    }
    return std::move(*d);
}

}  // namespace hv::pci::test
