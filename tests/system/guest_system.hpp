// Fixture of the guest disk system tests: the real hv-min daemon (private HV_RUNDIR), the real
// blkback program and an hv-guest domain with one file-backed (sparse) disk xvda, exported over
// NBD (and, with `--fuse-dir`, as a FUSE file). Every wait is bounded.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include "hv/subprocess.hpp"
#include "hvmin/toolstack.hpp"
#include "skip.hpp"
#include "temp_dir.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::test::guest {

using namespace std::chrono_literals;


inline const std::string kBin = HV_BIN_DIR;

inline bool wait_file(const std::filesystem::path& p, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!std::filesystem::exists(p)) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(20ms);  // no readiness signal from a daemonless start
    }
    return true;
}

/// The backing store of the guest's disk xvda.
struct Disk {
    /// `params` and `type` of the backend dir; empty params: a fresh sparse image file in the
    /// fixture's directory (type "file").
    std::string params;
    std::string type = "file";
};

/// `guest_args` go to hv-guest after its --nbd-dir (e.g. {"--fuse-dir", D, "--", "sh", ...}).
struct GuestSystem {
    explicit GuestSystem(std::uint64_t disk_bytes, std::vector<std::string> guest_args = {},
                         Disk disk = {}) {
        hv::test::require_root();
        hv::SpawnOptions o;
        o.capture_output = false;
        o.log_path = (dir.path() / "hv-min.log").string();
        auto h = hv::Subprocess::spawn({kBin + "/hv-min", "--rundir", dir.str(), "--foreground"}, o);
        REQUIRE(h);
        hvmin = std::move(*h);
        REQUIRE(wait_file(dir.path() / "hv-min.sock", 10s));
        REQUIRE(wait_file(dir.path() / "xenstored.sock", 10s));
        o.log_path = (dir.path() / "blkback.log").string();
        auto b = hv::Subprocess::spawn({kBin + "/blkback", "--rundir", dir.str()}, o);
        REQUIRE(b);
        blkback = std::move(*b);
        auto t = hv::hvmin::Toolstack::connect(dir.path());
        REQUIRE(t);
        ts.emplace(std::move(*t));
        auto x = hv::xs::Client::connect((dir.path() / "xenstored.sock").string());
        REQUIRE(x);
        xs = std::move(*x);

        if (disk.params.empty()) {
            image = (dir.path() / "disk.img").string();
            hv::UniqueFd fd(::open(image.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
            REQUIRE(fd.valid());
            REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(disk_bytes)) == 0);
            disk.params = image;
        }

        hv::hvmin::DomainConfig cfg;
        cfg.name = "guest";
        cfg.memory_pages = 256;
        cfg.argv = {kBin + "/hv-guest", "--nbd-dir", (dir.path() / "nbd").string()};
        cfg.argv.insert(cfg.argv.end(), guest_args.begin(), guest_args.end());
        cfg.env = {"HV_RUNDIR=" + dir.str(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
        auto d = ts->create(cfg);
        REQUIRE(d);
        domid = *d;
        // The domain's home and device dirs as libxl makes them (hv-min does not yet).
        const std::string home = hv::xenbus::domain_path(domid);
        REQUIRE(xs->mkdir(home));
        REQUIRE(xs->set_perms(home, {{hv::DomId(0), hv::xs::Access::none}, {domid, hv::xs::Access::read}}));
        for (const char* sub : {"device", "device/vbd", "error"}) {
            REQUIRE(xs->mkdir(home + "/" + sub));
            REQUIRE(xs->set_perms(home + "/" + sub, {{domid, hv::xs::Access::none}}));
        }
        hv::xenbus::DeviceSpec s;
        s.type = "vbd";
        s.frontend = domid;
        s.backend = hv::DomId(0);
        s.devid = 51712;
        s.backend_keys = {{"params", disk.params}, {"type", disk.type}, {"mode", "w"}, {"dev", "xvda"},
                          {"device-type", "disk"}};
        s.frontend_keys = {{"virtual-device", "51712"}, {"device-type", "disk"}};
        REQUIRE(hv::xenbus::create_device(*xs, s));
        socket = (dir.path() / "nbd" / "xvda.nbd").string();
        REQUIRE(wait_file(socket, 15s));
    }
    ~GuestSystem() {
        if (ts) {
            (void)ts->destroy(domid);
        }
        xs.reset();
        ts.reset();
        blkback = hv::Subprocess{};
        hvmin = hv::Subprocess{};
    }
    std::string uri() const { return "nbd+unix:///?socket=" + socket; }

    hv::test::TempDir dir{"hvkit-guest-sys"};
    hv::Subprocess hvmin;
    hv::Subprocess blkback;
    std::optional<hv::hvmin::Toolstack> ts;
    std::unique_ptr<hv::xs::Client> xs;
    hv::DomId domid{0};
    std::string image;  ///< the sparse image file ("" when the Disk named its own store)
    std::string socket;
};

/// Debian's fio with its nbd engine on `uri`: random 4 KiB writes over the first `size`
/// (e.g. "16m") verified with crc32c, then a second, verify-only pass (same seed and layout)
/// that checks what the first one left on the disk.
inline void check_fio_verify(const std::string& uri, const std::string& size) {
    for (const char* pass : {"--do_verify=1", "--verify_only=1"}) {
        INFO(pass);
        auto r = hv::run({"fio", "--name=guest-verify", "--ioengine=nbd", "--uri=" + uri,
                          "--rw=randwrite", "--bs=4k", "--size=" + size, "--iodepth=8",
                          "--verify=crc32c", pass, "--verify_fatal=1", "--randseed=1234",
                          "--output-format=terse"},
                         120000);
        REQUIRE(r);
        INFO(r->output);
        CHECK(r->exit_code == 0);
        CHECK(r->output.find("guest-verify") != std::string::npos);  // the terse result line
    }
}


}  // namespace hv::test::guest
