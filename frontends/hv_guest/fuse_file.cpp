// FuseMount: libfuse3's low-level API driven from hv-guest's poll loop; FuseFile, a disk on it (the /dev/fuse fd is
// non-blocking; each request is answered when the disk completes it, so many are in flight).
// The kernel is the only client here, but what it passes on comes from any process of the
// domain: offsets and lengths are checked against the disk before anything is issued.
// Layer: frontends (program). Main thread only.
#define FUSE_USE_VERSION 314
#include "fuse_file.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <unordered_set>
#include <vector>

#include "hv/fd_passing.hpp"
#include "hv/log.hpp"

namespace hv::guest {

namespace {

constexpr std::uint64_t kZeroWindow = 1 << 20;    // ZERO_RANGE and unaligned writes: per step
constexpr std::uint64_t kDiscardChunk = 1U << 30;  // one discard request at most
constexpr unsigned kRequestsPerRound = 64;        // fairness with the other devices

using Buffer = std::shared_ptr<std::vector<std::byte>>;
using Done = std::function<void(int err)>;  // 0 or a positive errno
using Step = std::function<void(Done)>;

int to_errno(std::uint32_t nbd_error) {
    if (nbd_error == 0) {
        return 0;
    }
    return nbd_error == nbd::NBD_ESHUTDOWN ? EIO : static_cast<int>(nbd_error);
}

std::uint64_t round_down(std::uint64_t v, std::uint64_t a) { return v / a * a; }
std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

struct FuseFile::Impl {
    std::shared_ptr<nbd::Export> disk;
    std::shared_ptr<int> alive = std::make_shared<int>(0);  // completions check it
    std::unordered_set<fuse_req_t> open;                    // requests not yet answered
    std::deque<std::pair<bool, std::function<void(std::function<void()>)>>> waiting;
    unsigned running = 0;
    bool exclusive_running = false;
    timespec mounted{};

    struct Geometry {
        std::uint64_t size = 0;
        std::uint64_t block = 512;
        bool read_only = false;
        bool flush = false;
        bool trim = false;
    };
    Geometry geometry() const {
        const auto i = disk->info();
        Geometry g;
        g.size = i.size;
        g.block = i.min_block >= 512 && (i.min_block & (i.min_block - 1)) == 0 ? i.min_block : 512;
        g.size = round_down(g.size, g.block);
        g.read_only = i.read_only;
        g.flush = i.flush;
        g.trim = i.trim;
        return g;
    }

    // ---- answers: each request is answered once, then forgotten
    void reply_err(fuse_req_t req, int err) {
        if (open.erase(req) != 0) {
            fuse_reply_err(req, err);
        }
    }
    void reply_buf(fuse_req_t req, const std::byte* p, std::size_t n) {
        if (open.erase(req) != 0) {
            fuse_reply_buf(req, reinterpret_cast<const char*>(p), n);
        }
    }
    void reply_write(fuse_req_t req, std::size_t n) {
        if (open.erase(req) != 0) {
            fuse_reply_write(req, n);
        }
    }

    // ---- disk I/O: `k` runs at completion unless this FuseFile is gone by then; buffers live
    // in the completion closures, so the disk may finish with them after that.
    void io(nbd::CmdType t, std::uint64_t off, std::uint64_t len, Buffer b, Done k) {
        nbd::Command c;
        c.type = t;
        c.offset = off;
        c.length = static_cast<std::uint32_t>(len);
        c.data = b ? b->data() : nullptr;
        std::weak_ptr<int> w = alive;
        disk->start(c, [w, b, k = std::move(k)](std::uint32_t e) {
            if (!w.expired()) {
                k(to_errno(e));
            }
        });
    }

    /// Runs steps one after the other; the first error stops the chain.
    void run_steps(std::shared_ptr<std::vector<Step>> steps, std::size_t i, Done k) {
        if (i == steps->size()) {
            k(0);
            return;
        }
        (*steps)[i]([this, steps, i, k = std::move(k)](int e) mutable {
            if (e != 0) {
                k(e);
            } else {
                run_steps(steps, i + 1, std::move(k));
            }
        });
    }

    /// Writes [off, off+len) from src (zeros if null), whole sectors at a time: a window that
    /// the range covers only in part is read first. Caller holds the exclusive slot.
    void patch_steps(std::vector<Step>& out, std::uint64_t off, std::uint64_t len, Buffer src,
                     std::uint64_t block) {
        const std::uint64_t end = off + len;
        for (std::uint64_t pos = off; pos < end;) {
            const std::uint64_t w0 = round_down(pos, block);
            const std::uint64_t w1 = std::min(round_up(end, block), w0 + kZeroWindow);
            const std::uint64_t hi = std::min(end, w1);
            const bool whole = pos == w0 && hi == w1;
            out.push_back([this, w0, w1, lo = pos, hi, whole, off, src](Done k) {
                auto wb = std::make_shared<std::vector<std::byte>>(w1 - w0);
                auto fill = [this, w0, w1, lo, hi, off, src, wb, k]() mutable {
                    if (src) {
                        std::memcpy(wb->data() + (lo - w0), src->data() + (lo - off), hi - lo);
                    } else {
                        std::memset(wb->data() + (lo - w0), 0, hi - lo);
                    }
                    io(nbd::CmdType::write, w0, w1 - w0, wb, std::move(k));
                };
                if (whole) {
                    fill();
                    return;
                }
                io(nbd::CmdType::read, w0, w1 - w0, wb, [fill, k](int e) mutable {
                    if (e != 0) {
                        k(e);
                    } else {
                        fill();
                    }
                });
            });
            pos = hi;
        }
    }

    // ---- ordering: an exclusive task (read-modify-write) runs with nothing else in flight;
    // tasks start in arrival order.
    void schedule(bool exclusive, std::function<void(std::function<void()>)> body) {
        waiting.emplace_back(exclusive, std::move(body));
        pump();
    }
    void pump() {
        while (!waiting.empty()) {
            const bool ex = waiting.front().first;
            if (exclusive_running || (ex && running > 0)) {
                return;
            }
            auto body = std::move(waiting.front().second);
            waiting.pop_front();
            ++running;
            exclusive_running = ex;
            std::weak_ptr<int> w = alive;
            body([this, w, ex] {
                if (w.expired()) {
                    return;
                }
                --running;
                if (ex) {
                    exclusive_running = false;
                }
                pump();
            });
        }
    }

    // ---- the operations
    void fill_attr(struct stat& st, const Geometry& g) const {
        st = {};
        st.st_ino = FUSE_ROOT_ID;
        st.st_mode = S_IFREG | (g.read_only ? 0444 : 0644);
        st.st_nlink = 1;
        st.st_size = static_cast<off_t>(g.size);
        st.st_blksize = static_cast<blksize_t>(std::max<std::uint64_t>(g.block, 4096));
        st.st_blocks = static_cast<blkcnt_t>(g.size / 512);
        st.st_atim = st.st_mtim = st.st_ctim = mounted;
    }

    void getattr(fuse_req_t req) {
        struct stat st;
        fill_attr(st, geometry());
        open.erase(req);
        fuse_reply_attr(req, &st, 1.0);
    }

    void setattr(fuse_req_t req, const struct stat* attr, int to_set) {
        const auto g = geometry();
        if ((to_set & FUSE_SET_ATTR_SIZE) != 0 && static_cast<std::uint64_t>(attr->st_size) != g.size) {
            reply_err(req, EPERM);  // a disk's size is the backend's, not the file's
            return;
        }
        struct stat st;
        fill_attr(st, g);  // mode, owner and times are fixed: accepted and ignored
        open.erase(req);
        fuse_reply_attr(req, &st, 1.0);
    }

    void do_open(fuse_req_t req, fuse_file_info* fi) {
        if (fi->flags & O_TRUNC) {
            reply_err(req, EPERM);
            return;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY && geometry().read_only) {
            reply_err(req, EROFS);
            return;
        }
        fi->keep_cache = 0;  // the disk may have changed under a previous opener's cache
        open.erase(req);
        fuse_reply_open(req, fi);
    }

    void read(fuse_req_t req, std::size_t size, off_t off) {
        const auto g = geometry();
        if (off < 0) {
            reply_err(req, EINVAL);
            return;
        }
        const auto o = static_cast<std::uint64_t>(off);
        if (o >= g.size || size == 0) {
            reply_buf(req, nullptr, 0);  // end of file
            return;
        }
        const std::uint64_t len = std::min<std::uint64_t>(size, g.size - o);
        const std::uint64_t a0 = round_down(o, g.block);
        const std::uint64_t a1 = round_up(o + len, g.block);
        schedule(false, [this, req, o, len, a0, a1](std::function<void()> done) {
            auto b = std::make_shared<std::vector<std::byte>>(a1 - a0);
            io(nbd::CmdType::read, a0, a1 - a0, b, [this, req, o, len, a0, b, done](int e) {
                if (e != 0) {
                    reply_err(req, e);
                } else {
                    reply_buf(req, b->data() + (o - a0), len);
                }
                done();
            });
        });
    }

    void write(fuse_req_t req, const char* data, std::size_t size, off_t off) {
        const auto g = geometry();
        if (g.read_only) {
            reply_err(req, EROFS);
            return;
        }
        if (off < 0) {
            reply_err(req, EINVAL);
            return;
        }
        const auto o = static_cast<std::uint64_t>(off);
        if (size == 0) {
            reply_write(req, 0);
            return;
        }
        if (o >= g.size) {
            reply_err(req, EFBIG);  // the file cannot grow past the disk
            return;
        }
        const std::uint64_t len = std::min<std::uint64_t>(size, g.size - o);  // short write at the end
        auto b = std::make_shared<std::vector<std::byte>>(len);
        std::memcpy(b->data(), data, len);
        const bool aligned = o % g.block == 0 && len % g.block == 0;
        const std::uint64_t block = g.block;
        schedule(!aligned, [this, req, o, len, b, aligned, block](std::function<void()> done) {
            auto finish = [this, req, len, done](int e) {
                if (e != 0) {
                    reply_err(req, e);
                } else {
                    reply_write(req, len);
                }
                done();
            };
            if (aligned) {
                io(nbd::CmdType::write, o, len, b, finish);
                return;
            }
            auto steps = std::make_shared<std::vector<Step>>();
            patch_steps(*steps, o, len, b, block);
            run_steps(steps, 0, finish);
        });
    }

    void fsync(fuse_req_t req) {
        if (!geometry().flush) {
            reply_err(req, 0);  // no cache to flush: completed writes are durable
            return;
        }
        schedule(false, [this, req](std::function<void()> done) {
            io(nbd::CmdType::flush, 0, 0, nullptr, [this, req, done](int e) {
                reply_err(req, e);
                done();
            });
        });
    }

    void fallocate(fuse_req_t req, int mode, off_t off, off_t length) {
        const auto g = geometry();
        constexpr int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
        if ((mode & ~known) != 0 || ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE))) {
            reply_err(req, EOPNOTSUPP);
            return;
        }
        if (off < 0 || length <= 0 || off > INT64_MAX - length) {
            reply_err(req, EINVAL);
            return;
        }
        if (g.read_only) {
            reply_err(req, EROFS);
            return;
        }
        const auto o = static_cast<std::uint64_t>(off);
        std::uint64_t end = o + static_cast<std::uint64_t>(length);
        if (end > g.size) {
            if ((mode & FALLOC_FL_KEEP_SIZE) == 0) {
                reply_err(req, EFBIG);
                return;
            }
            end = g.size;
        }
        if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) == 0 || o >= end) {
            reply_err(req, 0);  // every block of a disk exists already
            return;
        }
        if ((mode & FALLOC_FL_PUNCH_HOLE) && !g.trim) {
            reply_err(req, EOPNOTSUPP);
            return;
        }
        auto steps = std::make_shared<std::vector<Step>>();
        bool exclusive = true;
        if (mode & FALLOC_FL_ZERO_RANGE) {
            patch_steps(*steps, o, end - o, nullptr, g.block);
        } else {
            // Whole sectors are discarded; a partial sector at either edge is zeroed.
            const std::uint64_t i0 = round_up(o, g.block);
            const std::uint64_t i1 = round_down(end, g.block);
            if (i0 >= i1) {
                patch_steps(*steps, o, end - o, nullptr, g.block);
            } else {
                exclusive = o != i0 || end != i1;
                if (o != i0) {
                    patch_steps(*steps, o, i0 - o, nullptr, g.block);
                }
                if (end != i1) {
                    patch_steps(*steps, i1, end - i1, nullptr, g.block);
                }
                for (std::uint64_t p = i0; p < i1; p += kDiscardChunk) {
                    const std::uint64_t n = std::min(kDiscardChunk, i1 - p);
                    steps->push_back([this, p, n](Done k) { io(nbd::CmdType::trim, p, n, nullptr, std::move(k)); });
                }
            }
        }
        schedule(exclusive, [this, req, steps](std::function<void()> done) {
            run_steps(steps, 0, [this, req, done](int e) {
                reply_err(req, e);
                done();
            });
        });
    }
};

namespace {

FuseFile::Impl& impl_of(fuse_req_t req) {
    auto* f = static_cast<FuseFile::Impl*>(fuse_req_userdata(req));
    f->open.insert(req);
    return *f;
}

void op_init(void*, fuse_conn_info* conn) {
    // Plain reads and writes through /dev/fuse; the page cache is written through.
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                    FUSE_CAP_WRITEBACK_CACHE);
}
void op_getattr(fuse_req_t req, fuse_ino_t, fuse_file_info*) { impl_of(req).getattr(req); }
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat* attr, int to_set, fuse_file_info*) {
    impl_of(req).setattr(req, attr, to_set);
}
void op_open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) { impl_of(req).do_open(req, fi); }
void op_read(fuse_req_t req, fuse_ino_t, std::size_t size, off_t off, fuse_file_info*) {
    impl_of(req).read(req, size, off);
}
void op_write(fuse_req_t req, fuse_ino_t, const char* buf, std::size_t size, off_t off, fuse_file_info*) {
    impl_of(req).write(req, buf, size, off);
}
void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { impl_of(req).reply_err(req, 0); }
void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info*) { impl_of(req).reply_err(req, 0); }
void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { impl_of(req).fsync(req); }
void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info*) {
    impl_of(req).fallocate(req, mode, off, len);
}

const fuse_lowlevel_ops kOps = [] {
    fuse_lowlevel_ops o{};
    o.init = op_init;
    o.getattr = op_getattr;
    o.setattr = op_setattr;
    o.open = op_open;
    o.read = op_read;
    o.write = op_write;
    o.flush = op_flush;
    o.release = op_release;
    o.fsync = op_fsync;
    o.fallocate = op_fallocate;
    return o;
}();

}  // namespace

// ---- MountNamespace: requests are one SOCK_SEQPACKET message, op ('M' mount, 'U' unmount)
// then the path; the answer is an errno (int), with the /dev/fuse fd attached after a mount.
namespace {

void send_answer(int sock, int err, int fd) {
    const bool with_fd = err == 0 && fd >= 0;
    (void)send_fds(sock, bytes_of(err), with_fd ? std::span<const int>(&fd, 1) : std::span<const int>());
}

/// Mounts a FUSE filesystem of type fuse.<subtype> on `path` (this process's namespace);
/// returns the errno.
int mount_fuse_here(const char* subtype, const char* path, int& fuse) {
    struct stat st{};
    fuse = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fuse < 0 || ::stat(path, &st) != 0) {
        return errno;
    }
    char opts[128];
    std::snprintf(opts, sizeof opts, "fd=%d,rootmode=%o,user_id=0,group_id=0,allow_other", fuse,
                  static_cast<unsigned>(st.st_mode & S_IFMT));
    const std::string type = std::string("fuse.") + subtype;
    const std::string source = std::string("hvkit-") + subtype;
    return ::mount(source.c_str(), path, type.c_str(), MS_NOSUID | MS_NODEV, opts) == 0 ? 0 : errno;
}

[[noreturn]] void mount_helper(int sock) {
    // Nothing of hv-guest's (its hypercall channel above all) stays open here.
    if (sock > 3) {
        ::close_range(3, static_cast<unsigned>(sock) - 1, 0);
    }
    ::close_range(static_cast<unsigned>(sock) + 1, ~0U, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) {
        ::_exit(0);
    }
    int err = 0;
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
        err = errno;
    }
    (void)::send(sock, &err, sizeof err, MSG_NOSIGNAL);
    if (err != 0) {
        ::_exit(1);
    }
    char req[4097];
    for (;;) {
        const ssize_t n = ::recv(sock, req, sizeof req - 1, 0);
        if (n <= 1) {
            ::_exit(0);  // hv-guest is gone
        }
        req[n] = '\0';
        int fuse = -1;
        if (req[0] == 'U') {
            err = ::umount2(req + 1, MNT_DETACH) == 0 ? 0 : errno;
        } else if (char* nl = std::strchr(req + 1, '\n'); nl != nullptr) {
            *nl = '\0';  // "M<subtype>\n<path>"
            err = mount_fuse_here(req + 1, nl + 1, fuse);
        } else {
            err = EINVAL;
        }
        send_answer(sock, err, fuse);
        if (fuse >= 0) {
            ::close(fuse);  // hv-guest holds the only copy now
        }
    }
}

}  // namespace

Result<std::unique_ptr<MountNamespace>> MountNamespace::create() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        return fail_errno();
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int e = errno;
        ::close(sv[0]);
        ::close(sv[1]);
        return fail_errno(e);
    }
    if (pid == 0) {
        ::close(sv[0]);
        mount_helper(sv[1]);
    }
    ::close(sv[1]);
    std::unique_ptr<MountNamespace> ns(new MountNamespace());
    ns->pid_ = pid;
    ns->sock_.reset(sv[0]);
    int err = EPIPE;
    if (::recv(sv[0], &err, sizeof err, 0) != static_cast<ssize_t>(sizeof err)) {
        err = EPIPE;
    }
    if (err != 0) {
        return fail_errno(err);
    }
    return ns;
}

MountNamespace::~MountNamespace() {
    sock_.reset();  // the helper reads EOF and exits
    if (pid_ > 0) {
        ::waitpid(pid_, nullptr, 0);
    }
}

Result<UniqueFd> MountNamespace::call(char op, const std::string& path) {
    if (path.empty() || path.size() > 4000) {
        return fail_errno(ENAMETOOLONG);
    }
    const std::string req = op + path;
    if (::send(sock_.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        return fail_errno();
    }
    int err = 0;
    auto m = recv_fds(sock_.get(), writable_bytes_of(err), 1);
    if (!m || m->bytes != sizeof err || m->fds.size() > 1) {
        return fail_errno(EPIPE);
    }
    UniqueFd fd = m->fds.empty() ? UniqueFd() : std::move(m->fds[0]);
    if (err != 0) {
        return fail_errno(err);
    }
    return fd;
}

Result<UniqueFd> MountNamespace::mount_fuse(const std::string& path, const std::string& subtype) {
    if (subtype.empty() || subtype.size() > 16 ||
        !std::all_of(subtype.begin(), subtype.end(), [](char c) { return c >= 'a' && c <= 'z'; })) {
        return fail_errno(EINVAL);
    }
    auto fd = call('M', subtype + "\n" + path);
    if (fd && !fd->valid()) {
        return fail_errno(EPROTO);
    }
    return fd;
}

Result<void> MountNamespace::unmount(const std::string& path) {
    auto r = call('U', path);
    if (!r) {
        return fail(r.error());
    }
    return {};
}

Result<std::unique_ptr<FuseMount>> FuseMount::mount(MountNamespace& ns, const std::string& path,
                                                    bool directory, const std::string& subtype,
                                                    const fuse_lowlevel_ops& ops, void* data) {
    std::unique_ptr<FuseMount> m(new FuseMount());
    m->path_ = path;
    m->directory_ = directory;
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) {
        if (directory) {
            if (::mkdir(path.c_str(), 0755) != 0) {
                return fail_errno();
            }
        } else {
            const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0) {
                return fail_errno();
            }
            ::close(fd);
        }
        m->created_ = true;
    } else if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        return fail_errno(EEXIST);
    }
    auto dev = ns.mount_fuse(path, subtype);
    if (!dev) {
        return fail(dev.error());
    }
    m->ns_ = &ns;
    // libfuse takes an already mounted /dev/fuse fd as the mountpoint "/dev/fd/N" (and closes
    // it in fuse_session_destroy).
    const std::string fdpath = "/dev/fd/" + std::to_string(dev->get());
    char prog[] = "hv-guest";
    char* argv[] = {prog, nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, argv);
    m->se_ = fuse_session_new(&args, &ops, sizeof ops, data);
    fuse_opt_free_args(&args);
    if (m->se_ == nullptr || fuse_session_mount(m->se_, fdpath.c_str()) != 0) {
        if (m->se_ != nullptr) {
            fuse_session_destroy(m->se_);
            m->se_ = nullptr;
        }
        return fail_errno(EIO);  // the destructor unmounts
    }
    const int fd = dev->release();
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    m->buf_ = new fuse_buf{};
    return m;
}

FuseMount::~FuseMount() {
    if (ns_ != nullptr) {
        (void)ns_->unmount(path_);
    }
    if (se_ != nullptr) {
        fuse_session_destroy(se_);  // closes /dev/fuse: whatever still uses the mount gets ENOTCONN
    }
    if (buf_ != nullptr) {
        std::free(buf_->mem);
        delete buf_;
    }
    if (created_) {
        if (directory_) {
            ::rmdir(path_.c_str());
        } else {
            ::unlink(path_.c_str());
        }
    }
}

int FuseMount::fd() const noexcept { return se_ != nullptr ? fuse_session_fd(se_) : -1; }

void FuseMount::handle(short revents) {
    if (dead_ || se_ == nullptr || (revents & (POLLIN | POLLERR | POLLHUP)) == 0) {
        return;
    }
    for (unsigned i = 0; i < kRequestsPerRound; ++i) {
        const int r = fuse_session_receive_buf(se_, buf_);
        if (r == -EINTR) {
            continue;
        }
        if (r == -EAGAIN) {
            break;
        }
        if (r <= 0) {
            dead_ = true;  // unmounted or the connection aborted
            break;
        }
        fuse_session_process_buf(se_, buf_);
    }
    if (fuse_session_exited(se_) != 0) {
        dead_ = true;
    }
    if (dead_) {
        HV_WARN("hv-guest: FUSE mount %s: the kernel ended the connection", path_.c_str());
    }
}

Result<std::unique_ptr<FuseFile>> FuseFile::mount(MountNamespace& ns, const std::string& path,
                                                  std::shared_ptr<nbd::Export> disk) {
    std::unique_ptr<FuseFile> f(new FuseFile());
    f->impl_ = std::make_unique<Impl>();
    Impl& im = *f->impl_;
    im.disk = std::move(disk);
    ::clock_gettime(CLOCK_REALTIME, &im.mounted);
    auto m = FuseMount::mount(ns, path, false, "hvdisk", kOps, &im);
    if (!m) {
        return fail(m.error());
    }
    f->mount_ = std::move(*m);
    return f;
}

FuseFile::~FuseFile() {
    if (impl_) {
        Impl& im = *impl_;
        im.alive.reset();  // completions still on their way find nothing to answer
        im.waiting.clear();
        for (fuse_req_t r : im.open) {
            fuse_reply_err(r, EIO);
        }
        im.open.clear();
    }
    mount_.reset();
}

}  // namespace hv::guest
