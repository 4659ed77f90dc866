#include "rig.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "skip.hpp"

namespace hv::test {

Rig::Rig(std::vector<std::string> blkback_args, bool with_blkback)
    : blkback_args_(std::move(blkback_args)) {
    require_root();  // hv-min takes dom0 connections from uid 0 only
    std::filesystem::create_directories(dir.path() / "nbd");
    hvmin::CoreConfig cfg;
    cfg.rundir = dir.path();
    auto c = hvmin::Core::create(cfg);
    REQUIRE(c);
    core = std::move(*c);
    REQUIRE(core->start());
    auto t = hvmin::Toolstack::connect(dir.path());
    REQUIRE(t);
    ts.emplace(std::move(*t));
    auto x = xs::Client::connect((dir.path() / "xenstored.sock").string());
    REQUIRE(x);
    xs = std::move(*x);
    if (with_blkback) {
        start_blkback();
    }
}

Rig::~Rig() {
    blkback = Subprocess{};  // SIGTERM, reaped
    xs.reset();
    ts.reset();
    core.reset();  // kills every domain
}

void Rig::start_blkback() {
    std::vector<std::string> argv = {HV_BLKBACK, "--rundir", dir.str()};
    argv.insert(argv.end(), blkback_args_.begin(), blkback_args_.end());
    SpawnOptions o;
    o.capture_output = false;
    o.log_path = (dir.path() / "blkback.log").string();
    auto p = Subprocess::spawn(argv, o);
    REQUIRE(p);
    blkback = std::move(*p);
}

void Rig::kill_blkback(int sig) {
    if (blkback.running()) {
        ::kill(blkback.pid(), sig);
        if (sig == SIGKILL) {
            REQUIRE(blkback.wait(10000));
        }
    }
}

std::string Rig::make_image(const std::string& name, std::uint64_t bytes) {
    const std::string path = (dir.path() / name).string();
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    REQUIRE(fd.valid());
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(bytes)) == 0);
    return path;
}

DomId Rig::start_guest(const std::string& name, std::vector<std::string> args,
                       std::vector<std::string> command) {
    hvmin::DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = 256;
    cfg.argv = {HV_GUEST, "--nbd-dir", nbd_dir()};
    cfg.argv.insert(cfg.argv.end(), args.begin(), args.end());
    if (!command.empty()) {
        cfg.argv.push_back("--");
        cfg.argv.insert(cfg.argv.end(), command.begin(), command.end());
    }
    cfg.env = {"HV_RUNDIR=" + dir.str(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
    auto d = ts->create(cfg);
    REQUIRE(d);
    // What libxl__domain_make writes and hv-min's Toolstack does not (yet): the home readable
    // by the domain, and its `device`, `error`, `data` directories owned by it.
    const std::string home = xenbus::domain_path(*d);
    const xs::Permission ro_owner{DomId(0), xs::Access::none};
    const xs::Permission ro_reader{*d, xs::Access::read};
    REQUIRE(xs->mkdir(home));
    REQUIRE(xs->set_perms(home, {ro_owner, ro_reader}));
    for (const char* sub : {"device", "device/vbd", "device/vif", "error", "data"}) {
        REQUIRE(xs->mkdir(home + "/" + sub));
        REQUIRE(xs->set_perms(home + "/" + sub, {xs::Permission{*d, xs::Access::none}}));
    }
    return *d;
}

void Rig::attach_disk(DomId guest, std::uint32_t devid, const std::string& dev,
                      const std::string& path, const std::string& mode) {
    xenbus::DeviceSpec s;
    s.type = "vbd";
    s.frontend = guest;
    s.backend = DomId(0);
    s.devid = devid;
    s.backend_keys = {{"params", path}, {"type", "file"}, {"mode", mode}, {"dev", dev},
                      {"device-type", "disk"}, {"removable", "0"}, {"bootable", "1"},
                      {"discard-enable", "1"}};
    s.frontend_keys = {{"virtual-device", std::to_string(devid)}, {"device-type", "disk"}};
    REQUIRE(xenbus::create_device(*xs, s));
}

bool Rig::wait_value(const std::string& path, const std::string& value, std::chrono::milliseconds timeout) {
    const std::string token = "rig-wait";
    auto w = xs->watch_scoped(path, token);
    if (!w) {
        return false;
    }
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
        (void)xs->wait_event(left);  // any event: re-read
    }
}

bool Rig::wait_gone(const std::string& file, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::filesystem::exists(file)) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // no file-removal signal here
    }
    return true;
}

std::string Rig::blkback_log() const {
    std::ifstream f(dir.path() / "blkback.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace hv::test

namespace hv::test {

namespace {
void tree(xs::Client& x, const std::string& path, std::string& out, int depth) {
    auto v = x.read(path);
    out += path + " = " + (v ? *v : std::string("?")) + "\n";
    if (depth > 8) {
        return;
    }
    auto d = x.directory(path);
    if (d) {
        for (const auto& e : *d) {
            tree(x, path + "/" + e, out, depth + 1);
        }
    }
}
}  // namespace

std::string Rig::dump() {
    std::string out = "--- blkback log\n" + blkback_log() + "--- xenstore\n";
    tree(*xs, "/local/domain", out, 0);
    return out;
}

}  // namespace hv::test
