// hv-min test harness implementation.
#include "harness.hpp"

#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <sstream>
#include <thread>

#include "hv/spin.hpp"

extern char** environ;

namespace hv::hvmin::test {

std::chrono::nanoseconds process_cpu_time() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

IgnoreLoad::IgnoreLoad() {
    hv::set_spin_ignores_load(true);
}
IgnoreLoad::~IgnoreLoad() {
    hv::set_spin_ignores_load(false);
}

DaemonRun start_daemon(const std::string& rundir, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {HVMIN_DAEMON, "--rundir", rundir, "--foreground"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    DaemonRun r;
    REQUIRE(::posix_spawn(&r.pid, HVMIN_DAEMON, nullptr, nullptr, argv.data(), environ) == 0);
    // The socket appears once the daemon listens: connect with a bounded retry.
    for (int i = 0; i < 500 && !r.ts; ++i) {
        auto t = Toolstack::connect(rundir);
        if (t) {
            r.ts.emplace(std::move(*t));
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));  // no readiness signal
        }
    }
    REQUIRE(r.ts);
    return r;
}

Harness::Harness(CoreConfig cfg) {
    cfg.rundir = dir.path();
    cfg.dom0_uid = ::geteuid();  // the test process is dom0, root or not
    auto c = Core::create(cfg);
    REQUIRE(c);
    core = std::move(*c);
    REQUIRE(core->start());
    auto t = Toolstack::connect(dir.path());
    REQUIRE(t);
    ts.emplace(std::move(*t));
}

Harness::~Harness() {
    ts.reset();
    core.reset();
}

Puppet::Puppet(Harness& h, const std::string& name, PuppetOptions o) {
    const std::string path = (h.dir / (name + ".ctl")).string();
    listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    REQUIRE(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(listen_.get(), 1) == 0);
    DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = o.pages;
    cfg.argv = {HVMIN_TEST_GUEST, path};
    cfg.trusted = o.trusted;
    auto d = h.ts->create(cfg);
    REQUIRE(d);
    domid = *d;
    pollfd p{listen_.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    conn_ = UniqueFd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn_.valid());
}

std::string Puppet::cmd(const std::string& line, std::chrono::milliseconds timeout) {
    const std::string l = line + "\n";
    if (::send(conn_.get(), l.data(), l.size(), MSG_NOSIGNAL) < 0) {
        return "";
    }
    for (;;) {
        const auto nl = buf_.find('\n');
        if (nl != std::string::npos) {
            std::string r = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            return r;
        }
        pollfd p{conn_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
            return "";
        }
        char tmp[4096];
        const ssize_t n = ::read(conn_.get(), tmp, sizeof tmp);
        if (n <= 0) {
            return "";
        }
        buf_.append(tmp, static_cast<std::size_t>(n));
    }
}

long Puppet::num(const std::string& line) {
    const auto r = cmd(line);
    INFO(line << " -> " << r);
    const auto w = words(r);
    REQUIRE(w.size() >= 2);
    REQUIRE(w[0] == "ok");
    return std::stol(w[1]);
}

rings::gnttab_copy make_copy(bool src_gref, std::uint64_t src, rings::domid_t sdom,
                             std::uint16_t soff, bool dst_gref, std::uint64_t dst,
                             rings::domid_t ddom, std::uint16_t doff, std::uint16_t len) {
    using namespace rings;
    auto side = [](gnttab_copy_ptr& p, bool gref, std::uint64_t v, domid_t d, std::uint16_t off) {
        if (gref) {
            p.u.ref = static_cast<grant_ref_t>(v);
        } else {
            p.u.gmfn = v;
        }
        p.domid = d;
        p.offset = off;
    };
    gnttab_copy c{};
    side(c.source, src_gref, src, sdom, soff);
    side(c.dest, dst_gref, dst, ddom, doff);
    c.len = len;
    c.flags = static_cast<std::uint16_t>((src_gref ? GNTCOPY_source_gref : 0) |
                                         (dst_gref ? GNTCOPY_dest_gref : 0));
    return c;
}

std::vector<std::string> words(const std::string& s) {
    std::istringstream is(s);
    std::vector<std::string> v;
    std::string w;
    while (is >> w) {
        v.push_back(w);
    }
    return v;
}

}  // namespace hv::hvmin::test
