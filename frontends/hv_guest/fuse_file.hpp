// hv-guest's FUSE face of a disk: a single-file FUSE filesystem mounted on a regular file
// (<fuse-dir>/<dev>), whose one file is the disk. Reads and writes go to the disk's export
// (the same nbd::Export the NBD server uses, so both faces share one request path); fsync is
// a flush, fallocate(PUNCH_HOLE) a discard (when the backend offers it), ZERO_RANGE writes
// zeros. Unaligned reads and writes are widened to whole sectors (writes read-modify-write,
// run alone so no concurrent write to the same sectors is lost). A loop device and a
// filesystem can sit on the file. The mount lives in the domain's own mount namespace, held
// by a helper process (MountNamespace), never by hv-guest itself: the kernel may tear down a
// dying process's namespace before it closes that process's /dev/fuse, and a filesystem
// flushing onto a FUSE file served by that same process would then wait forever.
// Layer: frontends (program). Threads: the main thread only; requests are read from the FUSE
// fd when poll says so, and answered when the disk completes them.
#pragma once

#include <poll.h>

#include <memory>
#include <string>

#include "frontends/nbd.hpp"
#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

struct fuse_session;
struct fuse_buf;
struct fuse_lowlevel_ops;

namespace hv::guest {

/// The domain's mount namespace: a helper process (forked before any thread exists) that
/// unshares it, makes FUSE mounts there on request and hands back their /dev/fuse fds. It
/// exits with hv-guest; the namespace goes when its last process (helper, command) does.
class MountNamespace {
public:
    static Result<std::unique_ptr<MountNamespace>> create();
    ~MountNamespace();
    MountNamespace(const MountNamespace&) = delete;
    MountNamespace& operator=(const MountNamespace&) = delete;

    /// Mounts a FUSE filesystem of type fuse.<subtype> (lower-case letters) on `path`, a
    /// regular file or a directory; returns its /dev/fuse fd.
    Result<UniqueFd> mount_fuse(const std::string& path, const std::string& subtype = "hvdisk");
    Result<void> unmount(const std::string& path);
    /// For nsenter(1) --mount=...: the command runs inside.
    std::string ns_file() const { return "/proc/" + std::to_string(pid_) + "/ns/mnt"; }

private:
    MountNamespace() = default;
    Result<UniqueFd> call(char op, const std::string& path);
    pid_t pid_ = -1;
    UniqueFd sock_;
};

/// One FUSE filesystem served on hv-guest's poll loop: the libfuse session (low-level API)
/// over a /dev/fuse fd mounted in the domain's namespace, the receive loop, and the
/// mountpoint's life. The file system itself is the caller's `ops` (userdata = `data`).
class FuseMount {
public:
    /// Mounts on `path` (created if absent: an empty file, or a directory if `directory`).
    static Result<std::unique_ptr<FuseMount>> mount(MountNamespace& ns, const std::string& path,
                                                    bool directory, const std::string& subtype,
                                                    const fuse_lowlevel_ops& ops, void* data);
    /// Unmounts, closes /dev/fuse (users of the mount get ENOTCONN), removes what it created.
    ~FuseMount();
    FuseMount(const FuseMount&) = delete;
    FuseMount& operator=(const FuseMount&) = delete;

    const std::string& path() const noexcept { return path_; }
    int fd() const noexcept;
    /// Reads and dispatches the requests waiting on fd() (bounded per call).
    void handle(short revents);
    /// True once the kernel ended the connection (unmounted from outside, or aborted).
    bool dead() const noexcept { return dead_; }

private:
    FuseMount() = default;
    MountNamespace* ns_ = nullptr;
    std::string path_;
    bool created_ = false;
    bool directory_ = false;
    bool dead_ = false;
    fuse_session* se_ = nullptr;
    fuse_buf* buf_ = nullptr;
};

class FuseFile {
public:
    /// Creates `path` (an empty regular file, if absent) and mounts the disk on it in `ns`.
    static Result<std::unique_ptr<FuseFile>> mount(MountNamespace& ns, const std::string& path,
                                                   std::shared_ptr<nbd::Export> disk);
    /// Answers every outstanding request with EIO, unmounts, removes the file it created.
    ~FuseFile();
    FuseFile(const FuseFile&) = delete;
    FuseFile& operator=(const FuseFile&) = delete;

    const std::string& path() const noexcept { return mount_->path(); }
    int fd() const noexcept { return mount_->fd(); }
    void handle(short revents) { mount_->handle(revents); }
    bool dead() const noexcept { return mount_->dead(); }

    struct Impl;

private:
    FuseFile() = default;
    std::unique_ptr<Impl> impl_;
    std::unique_ptr<FuseMount> mount_;  // destroyed first: no request reaches a dead Impl
};

}  // namespace hv::guest
