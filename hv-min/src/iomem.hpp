// I/O memory grants: a backend (dom0, or a driver domain serving the device) hands hv-min an fd
// of one PCI BAR for one frontend domain (XEN_DOMCTL_iomem_permission), and that frontend maps
// it (the guest mapping the frames). A passed fd cannot be taken back, so a revocation is
// verified: no process of the frontend domain may still hold an fd of that file or map it.
// Layer: hv-min (L1), internal to hv::hvmin_core. Not thread-safe; hv-min's loop thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::hvmin::iomem {

/// A file's identity: what /proc/PID/fd and /proc/PID/maps entries are compared with.
struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
};

struct Grant {
    std::uint32_t handle = 0;
    std::uint16_t granter = 0;
    std::uint64_t granter_conn = 0;  ///< the connection that made it: its end revokes it
    std::uint16_t frontend = 0;
    std::uint64_t frontend_serial = 0;  ///< a recycled domid is another domain
    std::uint64_t size = 0;
    bool readonly = false;
    bool mapped = false;  ///< handed to the frontend at least once
    UniqueFd fd;          ///< opened with the granted access only: what the frontend receives
    FileId id;
};

/// A revoked grant the frontend had received and still referred to when it was revoked:
/// checked again at `deadline`. `fd` keeps the inode alive so its number cannot be reused by
/// a new file (a fresh BAR memfd) before the check.
struct Pending {
    std::uint32_t handle = 0;
    std::uint16_t frontend = 0;
    std::uint64_t frontend_serial = 0;
    UniqueFd fd;
    FileId id;
    std::chrono::steady_clock::time_point deadline;
};

/// Opens `fd`'s file again through /proc/self/fd with read-only or read/write access, so a
/// receiver can never mprotect a read-only grant writable. Errors: EACCES (a read/write grant
/// of an fd not opened O_RDWR), the open errno.
Result<UniqueFd> reopen(int fd, bool readonly);
/// (st_dev, st_ino) of an open fd. Errors: fstat errno.
Result<FileId> file_id(int fd);

/// The pids of a cgroup.procs-formatted text (one decimal per line; anything else skipped).
std::vector<pid_t> parse_pids(std::string_view text);
/// Does a /proc/PID/maps-formatted text map the file `id`?
bool maps_refer(std::string_view maps, FileId id);
/// Does any process of `pids` hold an fd of `id` or map it? A pid that is gone is skipped.
/// `who` receives the first such pid.
bool referenced(std::span<const pid_t> pids, FileId id, pid_t* who = nullptr);

/// The live grants, by handle. Handles count up from 1 and are never reused.
class Table {
public:
    static constexpr std::size_t kMaxGrants = 4096;
    /// Each grant holds an fd in hv-min: one granter may not use up the table (or hv-min's fds).
    static constexpr std::size_t kMaxPerGranter = 256;
    /// Errors: ENOSPC (table full, or the granting domain — a dom0 connection for dom0 —
    /// holds kMaxPerGranter).
    Result<std::uint32_t> add(Grant g);
    Grant* find(std::uint32_t handle);
    /// True for a handle that was handed out once (it may be revoked since).
    bool issued(std::uint32_t handle) const { return handle != 0 && handle < next_; }
    /// Removes and returns the grants `pred` selects.
    template <class Pred>
    std::vector<Grant> take_if(Pred pred) {
        std::vector<Grant> out;
        for (auto it = grants_.begin(); it != grants_.end();) {
            if (pred(it->second)) {
                out.push_back(std::move(it->second));
                it = grants_.erase(it);
            } else {
                ++it;
            }
        }
        return out;
    }

private:
    std::map<std::uint32_t, Grant> grants_;
    std::uint32_t next_ = 1;
};

}  // namespace hv::hvmin::iomem
