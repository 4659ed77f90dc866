// End-to-end rig: the real hv-min core in-process (private rundir, the test as dom0), the real
// `blkback` program as dom0's block backend, and hv-guest domains whose disks are sparse files.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hv/subprocess.hpp"
#include "hvmin/core.hpp"
#include "hvmin/toolstack.hpp"
#include "temp_dir.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::test {

struct Rig {
    explicit Rig(std::vector<std::string> blkback_args = {}, bool with_blkback = true);
    ~Rig();

    /// Starts (or restarts) blkback; its log goes to <dir>/blkback.log.
    void start_blkback();
    void kill_blkback(int sig = SIGKILL);
    /// A sparse image of `bytes`.
    std::string make_image(const std::string& name, std::uint64_t bytes);
    /// Starts hv-guest as a domain (NBD sockets in nbd_dir()), with extra args before `--`.
    DomId start_guest(const std::string& name, std::vector<std::string> args = {},
                      std::vector<std::string> command = {});
    /// Toolstack side of `disk = [ 'target=PATH, vdev=DEV, access=MODE' ]`.
    void attach_disk(DomId guest, std::uint32_t devid, const std::string& dev,
                     const std::string& path, const std::string& mode = "w");
    std::string nbd_dir() const { return (dir.path() / "nbd").string(); }
    std::string socket(const std::string& dev) const { return nbd_dir() + "/" + dev + ".nbd"; }
    /// Waits (bounded) until `path` has `value`.
    bool wait_value(const std::string& path, const std::string& value,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10));
    bool wait_gone(const std::string& file, std::chrono::milliseconds timeout = std::chrono::seconds(10));
    std::string blkback_log() const;
    /// blkback's log and the XenStore device trees, for failure messages.
    std::string dump();

    TempDir dir{"hvkit-front"};
    std::unique_ptr<hvmin::Core> core;
    std::optional<hvmin::Toolstack> ts;
    std::unique_ptr<xs::Client> xs;
    std::vector<std::string> blkback_args_;
    Subprocess blkback;
};

}  // namespace hv::test
