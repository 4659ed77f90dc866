// Driver domains, hvctl mem-set and hvctl stat/top against the real hv-min: isolated
// blkback and netback domains created by hvctl serve a guest's disk and NIC (real fio, ping
// and nc traffic), XenStore permissions and grant isolation are probed as the driver domain
// itself, and destroying a driver domain closes and removes the devices it served.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "domain_probe.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hvmin/client.hpp"
#include "hvmin/toolstack.hpp"
#include "skip.hpp"
#include "text_match.hpp"
#include "tools_harness.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

using namespace hv::test::tools;

namespace {

/// The list row of `name`: {Mem column, whole line}.
std::string list_row(Daemon& d, const std::string& name) {
    std::istringstream in(d.hvctl({"list", name}).out);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + " ", 0) == 0) {
            return line;
        }
    }
    return {};
}

std::string mem_column(const std::string& row) {
    std::istringstream in(row);
    std::string name, id, mem;
    in >> name >> id >> mem;
    return mem;
}

bool have(const char* prog) {
    for (const char* dir : {"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"}) {
        if (::access((std::string(dir) + prog).c_str(), X_OK) == 0) {
            return true;
        }
    }
    return false;
}

int sh(const std::string& cmd) {
    return run_process({"/bin/sh", "-c", cmd}, std::chrono::seconds(30)).rc;
}

/// A private network namespace with bridge xenbr0 and a host veth end at 10.79.0.1.
class Netns {
public:
    Netns() : name_("hvdd-" + std::to_string(::getpid())) {
        ok_ = sh("ip netns add " + name_) == 0 &&
              sh("ip -n " + name_ + " link set lo up && ip -n " + name_ +
                 " link add xenbr0 type bridge && ip -n " + name_ +
                 " link add hosteth type veth peer name hostport && ip -n " + name_ +
                 " link set hostport master xenbr0 && ip -n " + name_ +
                 " addr add 10.79.0.1/24 dev hosteth && for l in xenbr0 hosteth hostport; do "
                 "ip -n " +
                 name_ + " link set $l up; done") == 0;
    }
    ~Netns() { sh("ip netns del " + name_); }
    Netns(const Netns&) = delete;
    Netns& operator=(const Netns&) = delete;
    bool ok() const { return ok_; }
    const std::string& name() const { return name_; }

private:
    std::string name_;
    bool ok_ = false;
};

/// Inodes of the main memory extent (hv-min's "hvmin-mem" memfd) a domain's process maps;
/// one-page extents (ring pages) are what isolated backends may map, so they are not counted.
std::set<ino_t> memfd_inodes(pid_t pid) {
    std::set<ino_t> out;
    std::istringstream maps(read_text("/proc/" + std::to_string(pid) + "/maps"));
    std::string line;
    while (std::getline(maps, line)) {
        if (line.find("/memfd:hvmin-mem") == std::string::npos) {
            continue;
        }
        std::istringstream l(line);
        std::string range, perms, offset, dev;
        unsigned long long inode = 0;
        l >> range >> perms >> offset >> dev >> inode;
        out.insert(static_cast<ino_t>(inode));
    }
    return out;
}

/// Inodes of everything a process has open or mapped.
std::set<ino_t> held_inodes(pid_t pid) {
    std::set<ino_t> out;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd/";
    for (const std::string& n : dir_entries(dir)) {
        struct stat st {};
        if (::stat((dir + n).c_str(), &st) == 0) {
            out.insert(st.st_ino);
        }
    }
    std::istringstream maps(read_text("/proc/" + std::to_string(pid) + "/maps"));
    std::string line;
    while (std::getline(maps, line)) {
        std::istringstream l(line);
        std::string range, perms, offset, dev;
        unsigned long long inode = 0;
        l >> range >> perms >> offset >> dev >> inode;
        if (inode != 0) {
            out.insert(static_cast<ino_t>(inode));
        }
    }
    return out;
}

/// The HV_HYPERCALL_FD a domain's program was started with (from its initial environment).
int hypercall_fd_of(pid_t pid) {
    const std::string env = read_text("/proc/" + std::to_string(pid) + "/environ");
    const std::string key = "HV_HYPERCALL_FD=";
    const auto pos = env.find(key);
    return pos == std::string::npos ? -1 : std::atoi(env.c_str() + pos + key.size());
}

}  // namespace

TEST_CASE("hvctl mem-set writes memory/target, list shows it, above maxmem is refused",
          "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::string cfg = d.write_cfg(
        "m.cfg", "name = \"memg\"\nmemory = 16\nmaxmem = 32\nkernel = \"" + bin_dir +
                     "/hvdemo-domain\"\ncmdline = \"idle --status " + d.status_fifo() + "\"\n");
    const ProcResult c = d.hvctl({"create", cfg});
    INFO(c.err << d.log());
    REQUIRE(c.rc == 0);
    const int id = created_id(c.out);
    REQUIRE(id > 0);
    auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
    REQUIRE(x);
    const std::string mem = "/local/domain/" + std::to_string(id) + "/memory/";
    CHECK(rd(**x, mem + "target") == "16384");
    CHECK(rd(**x, mem + "static-max") == "32768");
    CHECK(mem_column(list_row(d, "memg")) == "16");

    ProcResult r = d.hvctl({"mem-set", "memg", "24"});
    CHECK(r.rc == 0);
    CHECK(r.err.empty());
    CHECK(rd(**x, mem + "target") == "24576");
    CHECK(mem_column(list_row(d, "memg")) == "24");
    CHECK(d.hvctl({"list", "-l", "memg"}).out.find("\"target_kib\": 24576") != std::string::npos);

    r = d.hvctl({"mem-set", std::to_string(id), "20480k"});
    CHECK(r.rc == 0);
    CHECK(rd(**x, mem + "target") == "20480");

    r = d.hvctl({"mem-set", "memg", "33m"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl mem-set: memg: 33792 KiB is above maxmem (32768 KiB)\n");
    r = d.hvctl({"mem-set", "memg", "1g"});
    CHECK(r.rc == 1);
    CHECK(rd(**x, mem + "target") == "20480");  // refusals change nothing

    r = d.hvctl({"mem-set", "ghost", "8"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl mem-set: no domain named 'ghost'\n");
    r = d.hvctl({"mem-set", "0", "8"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("Domain-0") != std::string::npos);

    // Interactive top on a terminal (script(1) gives it a pty): redraws, then q quits with 0.
    if (have("script")) {
        const ProcResult t = run_process(
            {"/bin/sh", "-c",
             "(sleep 2; printf q) | script -qec '" + bin_dir + "/hvctl --rundir " + d.rundir() +
                 " top' /dev/null"},
            std::chrono::seconds(20));
        CHECK(t.rc == 0);
        CHECK(t.out.find("\033[H\033[2J") != std::string::npos);
        CHECK(t.out.find("q or Ctrl-C quits") != std::string::npos);
        CHECK(t.out.find("memg ") != std::string::npos);
    }
    CHECK(d.hvctl({"destroy", "memg"}).rc == 0);
    CHECK_FALSE((*x)->read(mem + "target"));
}

TEST_CASE("isolated driver domains serve a guest's disk and NIC, seen by hvctl stat and top",
          "[system][tools][root]") {
    hv::test::require_root();
    for (const char* p : {"fio", "nc", "ping", "ip"}) {
        hv::test::skip_unless(have(p), "needs fio, nc, ping and ip (scripts/install-deps.sh)");
    }
    Netns ns;
    REQUIRE(ns.ok());
    Daemon d;
    REQUIRE(d.ready());
    const std::string dir = d.dir();
    const std::string img = dir + "/disk.img";
    REQUIRE(::truncate((img + "").c_str(), 0) != 0);  // does not exist yet
    REQUIRE(sh("truncate -s 64M " + img) == 0);

    // The driver domains: blkback and netback as isolated domains (no trusted key).
    ProcResult c =
        d.hvctl({"create", d.write_cfg("blk.cfg",
                                       "name = \"ddblk\"\nmemory = 16\ndriver_domain = 1\n"
                                       "kernel = \"" +
                                           bin_dir +
                                           "/blkback\"\n"
                                           "cmdline = \"--max-queues 2\"\n")});
    INFO(c.err << d.log());
    REQUIRE(c.rc == 0);
    c = d.hvctl({"create", d.write_cfg("net.cfg",
                                       "name = \"ddnet\"\nmemory = 16\ndriver_domain = 1\n"
                                       "kernel = \"" +
                                           bin_dir +
                                           "/netback\"\n"
                                           "cmdline = \"--netns " +
                                           ns.name() + " --max-queues 1 --mode map\"\n")});
    REQUIRE(c.rc == 0);
    const Dom ddblk = find_domain(d.rundir(), "ddblk");
    const Dom ddnet = find_domain(d.rundir(), "ddnet");
    REQUIRE(ddblk.id > 0);
    REQUIRE(ddnet.id > 0);

    // Another guest, with nothing served by the driver domains.
    c = d.hvctl(
        {"create", d.write_cfg("o.cfg", "name = \"other\"\nmemory = 16\nkernel = \"" + bin_dir +
                                            "/hvdemo-domain\"\ncmdline = \"idle "
                                            "--status " +
                                            d.status_fifo() + "\"\n")});
    REQUIRE(c.rc == 0);
    const int other = created_id(c.out);
    REQUIRE(other > 0);

    // A guest naming a backend domain that does not exist is refused before it is created.
    c = d.hvctl(
        {"create", d.write_cfg("bad.cfg", "name = \"nobe\"\nmemory = 16\nkernel = \"" + bin_dir +
                                              "/hvdemo-domain\"\n"
                                              "disk = [ 'vdev=xvda, backend=ghost, "
                                              "target=" +
                                              img + "' ]\n")});
    CHECK(c.rc == 1);
    CHECK(c.err.find("vbd 51712: backend domain 'ghost' does not exist") != std::string::npos);
    CHECK(list_row(d, "nobe").empty());

    // The guest: fio (nbd engine, crc32c verify) on xvda, ping and an nc copy over eth0.
    std::string payload(1 << 20, '\0');
    std::mt19937 rng(7);
    for (char& ch : payload) {
        ch = static_cast<char>(rng());
    }
    std::ofstream(dir + "/sent.bin", std::ios::binary) << payload;
    pid_t nc = ::fork();
    if (nc == 0) {
        const int out = ::open((dir + "/got.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::dup2(out, 1);
        ::execl("/usr/bin/ip", "ip", "netns", "exec", ns.name().c_str(), "nc", "-l", "10.79.0.1",
                "5001", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    std::ofstream(dir + "/guest.sh")
        << "set -e\n"
           "i=0; while ! ip link show eth0 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 400 ] && "
           "exit 90; sleep 0.05; done\n"
           "ip link set lo up; ip addr add 10.79.0.2/24 dev eth0; ip link set eth0 up\n"
           "fio --name=dd --ioengine=nbd --uri=\"$HV_NBD_URI_XVDA\" --rw=randwrite --bs=4k "
           "--size=8m --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 "
           "--verify_state_save=0 --output-format=terse >"
        << dir << "/fio.out\n"
        << "ping -c 3 -W 2 10.79.0.1 >" << dir << "/ping.out\n"
        << "ok=0; for i in $(seq 50); do nc -N 10.79.0.1 5001 <" << dir
        << "/sent.bin && ok=1 && break; sleep 0.1; done\n"
           "[ $ok = 1 ]\necho ok >"
        << dir << "/guest.ok\nexec sleep 600\n";
    c = d.hvctl(
        {"create", d.write_cfg("g.cfg", "name = \"guest\"\nmemory = 64\nkernel = \"" + bin_dir +
                                            "/hv-guest\"\ncmdline = \"--nbd-dir " + dir +
                                            "/nbd --wait-disks 1 --connect-timeout 15000 -- "
                                            "/bin/sh " +
                                            dir +
                                            "/guest.sh\"\n"
                                            "disk = [ 'format=raw, vdev=xvda, access=rw, "
                                            "backend=ddblk, target=" +
                                            img +
                                            "' ]\n"
                                            "vif = [ 'bridge=xenbr0, backend=ddnet' ]\n")});
    INFO(c.err);
    REQUIRE(c.rc == 0);
    const int g = created_id(c.out);
    REQUIRE(g > 0);
    const bool done = eventually([&] { return ::access((dir + "/guest.ok").c_str(), F_OK) == 0; },
                                 std::chrono::seconds(90));
    INFO("fio: " << read_text(dir + "/fio.out") << " ping: " << read_text(dir + "/ping.out"));
    REQUIRE(done);
    int st = 0;
    ::waitpid(nc, &st, 0);
    CHECK(read_text(dir + "/got.bin") == payload);
    CHECK(read_text(dir + "/ping.out").find("3 received") != std::string::npos);

    auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
    REQUIRE(x);
    hv::xs::Client& xs = **x;
    const std::string gs = std::to_string(g);
    const std::string vbd_be =
        "/local/domain/" + std::to_string(ddblk.id) + "/backend/vbd/" + gs + "/51712";
    const std::string vif_be =
        "/local/domain/" + std::to_string(ddnet.id) + "/backend/vif/" + gs + "/0";
    const std::string vbd_fe = "/local/domain/" + gs + "/device/vbd/51712";
    const std::string vif_fe = "/local/domain/" + gs + "/device/vif/0";
    CHECK(rd(xs, vbd_be + "/state") == "4");
    CHECK(rd(xs, vif_be + "/state") == "4");
    CHECK(rd(xs, vbd_fe + "/backend-id") == std::to_string(ddblk.id));
    CHECK(rd(xs, vif_fe + "/backend-id") == std::to_string(ddnet.id));
    // Asked for map mode, the isolated netback moved every packet by grant copy: it cannot map
    // the guest's data pages (design §4). Its counters say which path ran.
    CHECK(eventually([&] {
        const std::string n = rd(xs, vif_be + "/statistics/tx_grant_copies");
        return !n.empty() && n != "0" && n.find_first_not_of("0123456789") == std::string::npos;
    }));
    CHECK(rd(xs, vif_be + "/statistics/tx_grant_maps") == "0");
    CHECK(rd(xs, vif_be + "/statistics/rx_grant_maps") == "0");

    // hvctl stat: the guest's devices with their driver domains and counters (written by the
    // backends at most once a second).
    std::string stat;
    const bool counted = eventually(
        [&] {
            stat = d.hvctl({"stat"}).out;
            hv::test::Groups m;
            const bool vbd = hv::test::re_search(
                stat, R"(\nguest +vbd xvda +ddblk +Connected +\d+ +(\d+) +\d+ +(\d+) +0\n)", &m);
            const bool blk_ok = vbd && std::stoull(m[1]) > 0 && std::stoull(m[2]) >= (8u << 20);
            const bool vif = hv::test::re_search(
                stat, R"(\nguest +vif 0 +ddnet +Connected +\d+ +(\d+) +\d+ +(\d+) )", &m);
            return blk_ok && vif && std::stoull(m[1]) > 0 && std::stoull(m[2]) >= payload.size();
        },
        std::chrono::seconds(10));
    INFO(stat);
    CHECK(counted);
    CHECK(hv::test::re_search(stat, R"(\nddblk +\d+ r----- +16 )"));
    const ProcResult top = d.hvctl({"top", "-b", "-n", "2"});
    CHECK(top.rc == 0);
    CHECK(std::count(top.out.begin(), top.out.end(), '\n') > 8);
    const auto second = top.out.rfind("Name ");
    REQUIRE(second != std::string::npos);
    CHECK(second > 0);
    CHECK(hv::test::re_search(top.out.substr(second),
                              R"(\nguest +\d+ \S+ +64 +64 +[\d.]+ +[\d.]+ +2\n)"));

    // Isolation, memory: no driver domain holds an fd to or a mapping of the guest's memory.
    const Dom guest = find_domain(d.rundir(), "guest");
    const std::set<ino_t> guest_mem = memfd_inodes(guest.pid);
    REQUIRE_FALSE(guest_mem.empty());
    const std::set<ino_t> hvmin_held = held_inodes(d.pid());  // the check can see them
    CHECK(hvmin_held.count(*guest_mem.begin()) == 1);
    for (const Dom& dd : {ddblk, ddnet}) {
        const std::set<ino_t> held = held_inodes(dd.pid);
        for (ino_t i : guest_mem) {
            CHECK(held.count(i) == 0);
        }
    }

    // Isolation, grants and XenStore, probed as ddblk itself: with its process stopped, its
    // own hypercall channel and XenStore connection are used here (pidfd_getfd).
    {
        Stopped stop(ddblk.pid);
        hv::UniqueFd hc = steal_fd(ddblk.pid, hypercall_fd_of(ddblk.pid));
        if (!hc && errno == ENOSYS) {
            hv::test::skip("pidfd_getfd is not available on this kernel");
        }
        REQUIRE(hc);
        auto svc = hv::hvmin::Services::attach_fd(std::move(hc));
        REQUIRE(svc);
        CHECK(svc->domid().get() == ddblk.id);
        CHECK_FALSE(svc->trusted());
        // A ref the guest never granted, and the ref of its vif's tx ring (granted to ddnet).
        auto tx_ref = hv::xenbus::parse_uint(rd(xs, vif_fe + "/tx-ring-ref"), UINT32_MAX);
        REQUIRE(tx_ref);
        for (const std::uint32_t ref : {8191u, static_cast<std::uint32_t>(*tx_ref)}) {
            INFO("ref " << ref);
            hv::rings::gnttab_map_grant_ref m{};
            m.dom = static_cast<hv::rings::domid_t>(g);
            m.ref = ref;
            m.flags = hv::rings::GNTMAP_host_map | hv::rings::GNTMAP_readonly;
            REQUIRE(svc->grants().map_raw(std::span(&m, 1)));
            CHECK(m.status == hv::rings::GNTST_general_error);
            hv::rings::gnttab_copy cp{};
            cp.source.u.ref = ref;
            cp.source.domid = static_cast<hv::rings::domid_t>(g);
            cp.dest.u.gmfn = 0;
            cp.dest.domid = hv::rings::DOMID_SELF;
            cp.len = 64;
            cp.flags = hv::rings::GNTCOPY_source_gref;
            REQUIRE(svc->grants().copy(std::span(&cp, 1)));
            CHECK(cp.status == hv::rings::GNTST_general_error);
        }

        hv::UniqueFd xfd = steal_xenstore_fd(ddblk.pid);
        REQUIRE(xfd);
        auto as_dd = hv::xs::Client::from_fd(std::move(xfd));
        REQUIRE(as_dd);
        CHECK(rd(**as_dd, vbd_be + "/state") == "4");  // its own device: readable
        CHECK(rd(**as_dd, vbd_fe + "/state") == "4");  // the frontend it serves: readable
        for (const std::string& denied :
             {vif_fe + "/state", vif_fe, vif_be + "/state",
              "/local/domain/" + gs + "/device/vbd/51712/../../vif/0/mac"}) {
            INFO(denied);
            auto v = (*as_dd)->read(denied);
            REQUIRE_FALSE(v);
            CHECK((v.error() == std::errc::permission_denied ||
                   v.error() == std::errc::invalid_argument));
        }
        CHECK((*as_dd)->read(vif_fe + "/mac").error() == std::errc::permission_denied);
        const std::string other_home = "/local/domain/" + std::to_string(other);
        CHECK((*as_dd)->directory(other_home + "/device").error() == std::errc::permission_denied);
        CHECK((*as_dd)->read(other_home + "/name").error() == std::errc::permission_denied);

        // What it may write, its own directory, is untrusted to hvctl stat.
        REQUIRE((*as_dd)->write(vbd_be + "/statistics/rd_req", "12abc"));
        REQUIRE((*as_dd)->write(vbd_be + "/statistics/wr_req", "123456789012345678901"));
        REQUIRE((*as_dd)->write(vbd_be + "/statistics/errors", "-1"));
        REQUIRE((*as_dd)->write(vbd_be + "/dev", "\x1b[2Jx"));
        CHECK((*as_dd)->directory("/local/domain/" + gs + "/device/vif").error() ==
              std::errc::permission_denied);
    }
    CHECK(rd(xs, vbd_be + "/state") == "4");  // the probes did not disturb it
    stat = d.hvctl({"stat"}).out;
    INFO(stat);
    CHECK(stat.find('\x1b') == std::string::npos);
    CHECK(
        hv::test::re_search(stat, R"(\nguest +vbd 51712 +ddblk +Connected +0 +0 +\d+ +\d+ +0\n)"));

    // Destroying the network driver domain closes the vif it served and removes both sides.
    const ProcResult k = d.hvctl({"destroy", "ddnet"});
    INFO(k.err);
    CHECK(k.rc == 0);
    CHECK(k.err.empty());
    CHECK_FALSE(xs.read(vif_fe + "/state"));
    CHECK_FALSE(xs.read(vif_be + "/state"));
    CHECK(rd(xs, vbd_be + "/state") == "4");
    CHECK(run_process({"/usr/bin/ip", "-n", ns.name(), "-o", "link", "show"}).out.find("vif") ==
          std::string::npos);

    const ProcResult dg = d.hvctl({"destroy", "guest"});
    CHECK(dg.rc == 0);
    CHECK(dg.err.empty());  // its vbd reached Closed with ddblk
    CHECK(d.hvctl({"destroy", "other"}).rc == 0);
    const ProcResult db = d.hvctl({"destroy", "ddblk"});
    CHECK(db.rc == 0);
    CHECK(db.err.empty());
    CHECK_FALSE(xs.read(vbd_be + "/state"));
    CHECK_FALSE(xs.read(vbd_fe + "/state"));
}
