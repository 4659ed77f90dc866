// Root-test fixtures: loop devices over sparse files and a throw-away LVM volume group on them.
// Cleanup always runs (destructors, also when a REQUIRE fails). No device-mapper is assumed:
// LVs are created with activation disabled.
#pragma once

#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "skip.hpp"
#include "temp_dir.hpp"

namespace hv::blk::test {

struct CmdResult {
    int status;
    std::string output;
};

/// Runs a shell command (stderr folded into the output); LVM's fd-leak warnings silenced.
inline CmdResult sh(const std::string& cmd) {
    ::setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 1);
    CmdResult r{-1, {}};
    std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (p == nullptr) {
        return r;
    }
    std::array<char, 512> buf{};
    while (std::fgets(buf.data(), buf.size(), p) != nullptr) {
        r.output += buf.data();
    }
    r.status = ::pclose(p);
    return r;
}

inline void sh_ok(const std::string& cmd) {
    const CmdResult r = sh(cmd);
    INFO(cmd << "\n" << r.output);
    REQUIRE(r.status == 0);
}

/// A loop device over a sparse file of `size` bytes (logical block size `sector_size`, or
/// losetup's default 512 when 0); detached on destruction.
class LoopDevice {
public:
    LoopDevice(const std::string& file, std::uint64_t size, unsigned sector_size = 0) {
        const int fd = ::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
        ::close(fd);
        const std::string ss =
            sector_size != 0 ? "--sector-size " + std::to_string(sector_size) + " " : "";
        const CmdResult r = sh("losetup --find --show " + ss + file);
        if (r.status != 0) {
            hv::test::skip("no free loop device (losetup failed)");
        }
        path_ = r.output.substr(0, r.output.find('\n'));
    }
    LoopDevice(const LoopDevice&) = delete;
    LoopDevice& operator=(const LoopDevice&) = delete;
    ~LoopDevice() {
        if (!path_.empty()) {
            (void)sh("losetup -d " + path_);
        }
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

/// Skips unless root with losetup and the LVM tools.
inline void require_root_storage() {
    hv::test::require_root();
    hv::test::skip_unless(sh("command -v losetup").status == 0, "needs losetup");
    hv::test::skip_unless(sh("command -v lvcreate").status == 0, "needs the lvm2 tools");
    hv::test::skip_unless(::access("/dev/loop-control", F_OK) == 0, "needs loop devices");
}

/// A volume group on `n` fresh loop devices (sparse files of `pv_bytes`), 1 MiB extents,
/// with a unique name. Removed with its PV labels on destruction.
class TestVg {
public:
    TestVg(unsigned n, std::uint64_t pv_bytes) {
        static std::atomic<unsigned> counter{0};
        name_ = "hvt" + std::to_string(::getpid()) + "x" + std::to_string(counter++);
        for (unsigned i = 0; i < n; ++i) {
            loops_.push_back(std::make_unique<LoopDevice>(
                (dir_ / ("pv" + std::to_string(i) + ".img")).string(), pv_bytes));
            devices_ += (i != 0 ? "," : "") + loops_.back()->path();
            pv_list_ += " " + loops_.back()->path();
        }
        sh_ok("pvcreate -q --devices " + devices_ + pv_list_);
        pvs_created_ = true;
        sh_ok("vgcreate -q -s 1M --devices " + devices_ + " " + name_ + pv_list_);
        vg_created_ = true;
    }
    TestVg(const TestVg&) = delete;
    TestVg& operator=(const TestVg&) = delete;
    ~TestVg() {
        if (vg_created_) {
            (void)sh("vgremove -q -f --devices " + devices_ + " " + name_);
        }
        if (pvs_created_) {
            (void)sh("pvremove -q -f --devices " + devices_ + pv_list_);
        }
    }
    /// lvcreate without activation (no device-mapper here); `args` e.g. "-L 4M -n lin".
    void lvcreate(const std::string& args, const std::string& pvs = "") {
        sh_ok("lvcreate -q --config global/activation=0 -an -Zn -Wn --devices " + devices_ + " " +
              args + " " + name_ + (pvs.empty() ? "" : " " + pvs));
    }
    void lvextend(const std::string& lv, const std::string& args, const std::string& pvs = "") {
        sh_ok("lvextend -q --config global/activation=0 --devices " + devices_ + " " + args + " " +
              name_ + "/" + lv + (pvs.empty() ? "" : " " + pvs));
    }
    const std::string& name() const { return name_; }
    const std::string& pv(unsigned i) const { return loops_.at(i)->path(); }
    std::vector<std::string> devices() const {
        std::vector<std::string> out;
        for (const auto& l : loops_) {
            out.push_back(l->path());
        }
        return out;
    }

private:
    hv::test::TempDir dir_{"hvkit-blk-lvm"};
    std::vector<std::unique_ptr<LoopDevice>> loops_;  // after dir_: detached before it is removed
    std::string name_;
    std::string devices_;
    std::string pv_list_;
    bool pvs_created_ = false;
    bool vg_created_ = false;
};

}  // namespace hv::blk::test
