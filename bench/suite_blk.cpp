// hvbench suite `blk` (issue #4 item 6): block I/O through libblkfront (in a real helper domain)
// → blkback (in this process, dom0, map or copy mode) → io_uring, beside native io_uring on the
// same target in the same run, with Debian's fio (ioengine=io_uring, same job) as a harness
// check. Targets: a file in /dev/shm, a file on disk, an LV (VG on a loop device over a file,
// made and removed here under a host-wide flock); every target is written in full first, so no
// side reads holes. `_poll` cases run with polling on both sides (blkback's poll-us, blkfront's
// spin) beside native io_uring that spins on io_uring_peek_cqe for the same window.
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <limits>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blkback/device.hpp"
#include "blkback/lvm.hpp"
#include "frontends/blkfront.hpp"
#include "harness.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "procs.hpp"
#include "suites.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct Workload {
    const char* name;
    bool write;
    bool random;
    std::uint32_t bs;
    std::uint32_t qd;
    bool poll = false;  ///< polling on both sides (hvkit) / peek-CQE spin (native)
};

constexpr Workload kWorkloads[] = {
    {"randread_4k_qd1", false, true, 4096, 1},
    {"randread_4k_qd32", false, true, 4096, 32},
    {"randwrite_4k_qd32", true, true, 4096, 32},
    {"seqread_1m_qd8", false, false, 1U << 20, 8},
    {"randread_4k_qd1_poll", false, true, 4096, 1, true},
    {"randread_4k_qd32_poll", false, true, 4096, 32, true},
};

/// The spin window of `_poll` cases: blkback's poll-us, blkfront's spin, native's CQE spin.
constexpr std::chrono::microseconds kPollWindow{100};

/// One side's run of one workload.
struct RunStats {
    std::uint64_t ios = 0;
    double secs = 0;
    std::vector<double> lat_ns;
    double cpu_ns = 0;     // CPU time of the side doing the I/O (frontend, or native thread)
    double be_cpu_ns = 0;  // hvkit only: backend + hv-min (this process) during the run
};

double iops(const RunStats& r) { return r.secs > 0 ? static_cast<double>(r.ios) / r.secs : 0; }

/// Offsets of a workload inside [0, span): uniformly random blocks (xorshift64*) or sequential.
class Offsets {
public:
    Offsets(std::uint64_t span, std::uint32_t bs, bool random, std::uint64_t seed)
        : blocks_(span / bs), bs_(bs), random_(random), s_(seed | 1) {}
    std::uint64_t next() {
        std::uint64_t b;
        if (random_) {
            s_ ^= s_ >> 12;
            s_ ^= s_ << 25;
            s_ ^= s_ >> 27;
            b = (s_ * 0x2545F4914F6CDD1DULL) % blocks_;
        } else {
            b = seq_++ % blocks_;
        }
        return b * bs_;
    }

private:
    std::uint64_t blocks_, bs_;
    bool random_;
    std::uint64_t s_;
    std::uint64_t seq_ = 0;
};

double cpu_ns_of(int who) {
    rusage ru{};
    ::getrusage(who, &ru);
    auto ns = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_usec) * 1e3; };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

/// The in-place buffer of each device: as large as the largest workload's QD × block size.
std::size_t max_inflight_bytes() {
    std::size_t m = 0;
    for (const auto& w : kWorkloads) {
        m = std::max(m, static_cast<std::size_t>(w.qd) * w.bs);
    }
    return m;
}

/// Run time (ns, from /proc/self/task/*/schedstat) of each io_uring worker thread serving
/// thread `tid` (the kernel names them iou-wrk-<tid>). Work io_uring punts to them (reads of
/// tmpfs or page-cache files) is not in the submitter's RUSAGE_THREAD, yet it is the same kind
/// of work that blkback's workers do inside RUSAGE_SELF: the native side's CPU per I/O counts it.
std::map<pid_t, double> io_worker_cpu_ns(pid_t tid) {
    std::map<pid_t, double> out;
    const std::string want = "iou-wrk-" + std::to_string(tid);
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/task", ec)) {
        std::string comm;
        if (std::FILE* f = std::fopen((e.path() / "comm").c_str(), "re")) {
            char buf[32] = {};
            if (std::fgets(buf, sizeof buf, f) != nullptr) {
                comm = buf;
            }
            std::fclose(f);
        }
        while (!comm.empty() && comm.back() == '\n') {
            comm.pop_back();
        }
        if (comm != want) {
            continue;
        }
        unsigned long long run_ns = 0;
        if (std::FILE* f = std::fopen((e.path() / "schedstat").c_str(), "re")) {
            if (std::fscanf(f, "%llu", &run_ns) == 1) {
                out[static_cast<pid_t>(std::strtol(e.path().filename().c_str(), nullptr, 10))] =
                    static_cast<double>(run_ns);
            }
            std::fclose(f);
        }
    }
    return out;
}

/// CPU of the io_uring workers of `tid` since `before` (workers started since count in full).
double io_worker_cpu_since(pid_t tid, const std::map<pid_t, double>& before) {
    double sum = 0;
    for (const auto& [t, ns] : io_worker_cpu_ns(tid)) {
        const auto it = before.find(t);
        sum += ns - (it == before.end() ? 0.0 : it->second);
    }
    return sum;
}

struct FreeDeleter {
    void operator()(void* p) const noexcept { std::free(p); }
};
using AlignedBuf = std::unique_ptr<std::byte, FreeDeleter>;

Result<AlignedBuf> aligned_buffer(std::size_t bytes) {
    void* p = std::aligned_alloc(4096, bytes);
    if (p == nullptr) {
        return fail_errno(ENOMEM);
    }
    std::memset(p, 0x5a, bytes);
    return AlignedBuf(static_cast<std::byte*>(p));
}

// ---- helper domain side: libblkfront in a real domain ----

struct FrontState {
    std::unique_ptr<xs::Client> xs;
    std::map<std::uint32_t, std::unique_ptr<blkfront::Device>> devs;
    std::map<std::uint32_t, std::span<std::byte>> bufs;  // each device's in-place buffer
    std::vector<std::pair<std::uint64_t, int>> done;
    std::vector<std::pair<std::uint64_t, int>> batch;  // swapped with done: no allocation per batch
};

FrontState* front_state = nullptr;

Result<std::string> front_open(hvmin::Services& svc, std::uint32_t devid, std::uint64_t spin_us) {
    if (!front_state->xs) {
        auto x = xs::Client::from_fd(svc.take_xenstore_fd());
        if (!x) {
            return fail(x.error());
        }
        front_state->xs = std::move(*x);
    }
    blkfront::Options o;
    o.max_queues = 1;
    o.max_indirect_segments = 256;
    o.pool_pages_per_queue = 2048 + 64;  // 1 MiB × QD8 in flight, plus slack
    o.spin = std::chrono::microseconds(spin_us);
    auto d = blkfront::Device::create(svc, *front_state->xs, devid, o,
                                      [](std::uint64_t c, int st) { front_state->done.emplace_back(c, st); });
    if (!d) {
        return fail(d.error());
    }
    HV_TRY((*d)->on_state_change());
    HV_TRY((*d)->wait_connected(std::chrono::milliseconds(kWaitTimeoutMs)));
    const auto sectors = (*d)->info().sectors;
    // The I/O buffers are domain memory libblkfront uses in place (no copy through its pool),
    // as native io_uring reads into and writes from its own buffers.
    auto b = (*d)->alloc_buffer(max_inflight_bytes());
    if (!b) {
        return fail(b.error());
    }
    std::memset(b->data(), 0x5a, b->size());
    front_state->bufs[devid] = *b;
    front_state->devs[devid] = std::move(*d);
    return "ok " + std::to_string(sectors);
}

/// run DEVID WRITE RANDOM BS QD SPAN DUR_MS SEED → ok IOS NS P50 P99 CPU_NS
Result<std::string> front_run(const std::vector<std::uint64_t>& a) {
    auto it = front_state->devs.find(static_cast<std::uint32_t>(a[0]));
    if (it == front_state->devs.end()) {
        return fail_errno(ENODEV);
    }
    blkfront::Device& dev = *it->second;
    const bool write = a[1] != 0;
    const auto bs = static_cast<std::uint32_t>(a[3]);
    const auto qd = static_cast<std::uint32_t>(a[4]);
    if (bs == 0 || qd == 0 || qd > 1024 || bs > (16U << 20) || a[5] < bs) {
        return fail_errno(EINVAL);
    }
    Offsets off(a[5], bs, a[2] != 0, a[7]);
    const std::span<std::byte> buf = front_state->bufs[static_cast<std::uint32_t>(a[0])];
    if (buf.size() < static_cast<std::size_t>(qd) * bs) {
        return fail_errno(EINVAL);
    }
    std::vector<Clock::time_point> started(qd);
    std::vector<double> lat;
    lat.reserve(1 << 16);
    front_state->done.clear();
    const double cpu0 = cpu_ns_of(RUSAGE_SELF);
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::milliseconds(a[6]);
    auto issue = [&](std::uint32_t slot) -> Result<void> {
        started[slot] = Clock::now();
        return dev.submit({write ? blkfront::Op::write : blkfront::Op::read, off.next(), bs,
                           buf.data() + static_cast<std::size_t>(slot) * bs, slot});
    };
    for (std::uint32_t s = 0; s < qd; ++s) {
        HV_TRY(issue(s));
    }
    std::uint32_t inflight = qd;
    std::uint64_t ios = 0;
    std::vector<pollfd> fds;
    while (inflight > 0) {
        dev.poll();
        if (front_state->done.empty()) {
            if (dev.spin_for_responses()) {  // polling mode only (Options::spin)
                continue;
            }
            fds.clear();
            for (int fd : dev.pollable_fds()) {
                fds.push_back({fd, POLLIN, 0});
            }
            fds.push_back({front_state->xs->watch_fd(), POLLIN, 0});
            const int rc = ::poll(fds.data(), fds.size(), kWaitTimeoutMs);
            if (rc == 0) {
                return fail(timed_out_error());
            }
            while (front_state->xs->next_event()) {
                HV_TRY(dev.on_state_change());
            }
            continue;
        }
        auto& batch = front_state->batch;
        batch.clear();
        batch.swap(front_state->done);
        const auto now = Clock::now();
        for (const auto& [cookie, status] : batch) {
            if (status != 0 || cookie >= qd) {
                return fail_errno(status < 0 ? -status : EIO);
            }
            const auto slot = static_cast<std::uint32_t>(cookie);
            lat.push_back(std::chrono::duration<double, std::nano>(now - started[slot]).count());
            ++ios;
            --inflight;
            if (now < deadline) {
                HV_TRY(issue(slot));
                ++inflight;
            }
        }
    }
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    const double cpu = cpu_ns_of(RUSAGE_SELF) - cpu0;
    const Sample s = latency_sample(lat);
    char out[160];
    std::snprintf(out, sizeof out, "ok %llu %.0f %.0f %.0f %.0f", static_cast<unsigned long long>(ios),
                  ns, s.p50, s.p99, cpu);
    return std::string(out);
}

// ---- targets ----

std::string sh_quote(const std::string& s) {
    std::string o = "'";
    for (char c : s) {
        o += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return o + "'";
}

/// Runs a shell command; its stdout (stderr discarded unless `keep_err`), and exit status.
std::pair<int, std::string> sh(const std::string& cmd) {
    std::string out;
    std::FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
    if (p == nullptr) {
        return {-1, out};
    }
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        out.append(buf, n);
    }
    const int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

/// Writes [base, base+bytes) of `path` in full (1 MiB sequential writes of a non-zero pattern,
/// O_DIRECT when `direct`, then fdatasync): reads then hit real data, never a hole or an
/// unwritten extent (which the filesystem answers without I/O), and a file gets contiguous
/// extents that random writes overwrite in place, so removing it is quick. Progress on stderr.
Result<void> prefill(const std::string& label, const std::string& path, std::uint64_t base,
                     std::uint64_t bytes, bool direct) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | (direct ? O_DIRECT : 0)));
    if (!fd.valid()) {
        return fail_errno();
    }
    constexpr std::size_t kChunk = 1U << 20;
    auto buf = aligned_buffer(kChunk);
    if (!buf) {
        return fail(buf.error());
    }
    for (std::size_t i = 0; i < kChunk; i += 8) {  // distinct, non-zero bytes per 8-byte word
        const std::uint64_t v = 0x9E3779B97F4A7C15ULL * (i + 1);
        std::memcpy(buf->get() + i, &v, sizeof v);
    }
    const auto t0 = Clock::now();
    unsigned shown = 0;
    for (std::uint64_t off = 0; off < bytes;) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, bytes - off));
        const ssize_t w = ::pwrite(fd.get(), buf->get(), n, static_cast<off_t>(base + off));
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return fail_errno(w < 0 ? errno : EIO);
        }
        off += static_cast<std::uint64_t>(w);
        const auto quarter = static_cast<unsigned>(off * 4 / bytes);
        if (quarter > shown && bytes >= (64ULL << 20)) {
            shown = quarter;
            std::fprintf(stderr, "hvbench blk: filling the %s target: %u%%\n", label.c_str(), quarter * 25);
        }
    }
    if (::fdatasync(fd.get()) != 0) {
        return fail_errno();
    }
    std::fprintf(stderr, "hvbench blk: %s target filled (%llu MiB in %.1f s)\n", label.c_str(),
                 static_cast<unsigned long long>(bytes >> 20),
                 std::chrono::duration<double>(Clock::now() - t0).count());
    return {};
}

Result<void> make_sparse(const std::string& path, std::uint64_t bytes) {
    UniqueFd fd(::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
    if (!fd.valid()) {
        return fail_errno();
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
        return fail_errno();
    }
    return {};
}

/// One storage target, set up for both native I/O and blkback; removes what it made.
struct Target {
    std::string label;       // shm, file, lv
    std::string path;        // what native io_uring and fio open
    std::uint64_t base = 0;  // byte offset of the target on `path`
    std::uint64_t span = 0;
    bool direct = true;      // O_DIRECT for native and fio
    std::string direct_note;
    std::string params;      // blkback's `params`
    std::vector<std::string> lvm_devices;
    // cleanup
    std::string file;
    std::string loop;
    std::string vg;
    UniqueFd lock;

    Target() = default;
    Target(const Target&) = delete;
    Target& operator=(const Target&) = delete;
    ~Target() {
        if (!vg.empty()) {
            (void)sh("vgremove -q -f --devices " + loop + " " + vg);
            (void)sh("pvremove -q -f --devices " + loop + " " + loop);
        }
        if (!loop.empty()) {
            (void)sh("losetup -d " + loop);
        }
        if (!file.empty()) {
            const auto t0 = Clock::now();
            ::unlink(file.c_str());
            std::fprintf(stderr, "hvbench blk: %s target removed in %.2f s\n", label.c_str(),
                         std::chrono::duration<double>(Clock::now() - t0).count());
        }
    }
};

bool direct_works(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
    return fd.valid();
}

Result<std::unique_ptr<Target>> file_target(const std::string& label, const std::string& dir,
                                            std::uint64_t span) {
    auto t = std::make_unique<Target>();
    t->label = label;
    t->file = dir + "/hvbench-blk-" + label + "." + std::to_string(::getpid()) + ".img";
    HV_TRY(make_sparse(t->file, span));
    t->path = t->params = t->file;
    t->span = span;
    t->direct = direct_works(t->file);
    t->direct_note = t->direct ? "O_DIRECT" : "buffered: the filesystem refuses O_DIRECT";
    HV_TRY(prefill(label, t->file, 0, span, t->direct));
    return t;
}

/// A VG on a loop device over a sparse file, one linear LV; the host-wide flock is held while
/// the target lives so concurrent runs don't fight over loop devices or LVM metadata.
Result<std::unique_ptr<Target>> lv_target(std::uint64_t span) {
    auto t = std::make_unique<Target>();
    t->label = "lv";
    t->lock = UniqueFd(::open("/run/lock/hvbench-blk.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0600));
    if (!t->lock.valid()) {
        return fail_errno();
    }
    const auto lock_deadline = Clock::now() + std::chrono::seconds(60);
    while (::flock(t->lock.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK || Clock::now() > lock_deadline) {
            return fail(errno == EWOULDBLOCK ? timed_out_error() : errno_code());
        }
        ::usleep(50'000);  // polling a flock: there is no wake-up signal for it
    }
    t->file = "/var/tmp/hvbench-blk-pv." + std::to_string(::getpid()) + ".img";
    HV_TRY(make_sparse(t->file, span + (8U << 20)));
    auto [rc, out] = sh("losetup --find --show " + sh_quote(t->file));
    if (rc != 0 || out.empty()) {
        return fail_errno(ENODEV);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
        out.pop_back();
    }
    t->loop = out;
    const std::string vg = "hvbenchblk" + std::to_string(::getpid());
    t->vg = vg;  // removed (with its PV label) by ~Target even if creation stops half-way
    if (sh("pvcreate -q --devices " + t->loop + " " + t->loop).first != 0 ||
        sh("vgcreate -q -s 1M --devices " + t->loop + " " + vg + " " + t->loop).first != 0) {
        return fail_errno(EIO);
    }
    if (sh("lvcreate -q --config global/activation=0 -an -Zn -Wn --devices " + t->loop + " -L " +
           std::to_string(span) + "b -n lv " + vg)
            .first != 0) {
        return fail_errno(EIO);
    }
    auto vol = blk::lvm_resolve(vg, "lv", blk::LvmScan{{t->loop}});
    if (!vol) {
        return fail(vol.error());
    }
    if (vol->segments.size() != 1 || vol->segments[0].areas.size() != 1) {
        return fail(bad_data_error());
    }
    t->path = t->loop;
    t->base = vol->segments[0].areas[0].pv_offset_bytes;
    t->span = vol->size_bytes;
    t->params = vg + "/lv";
    t->lvm_devices = {t->loop};
    t->direct = direct_works(t->loop);
    t->direct_note = t->direct ? "O_DIRECT on the PV (loop device) at the LV's offset"
                               : "buffered: the loop device refuses O_DIRECT";
    HV_TRY(prefill("lv", t->loop, t->base, t->span, t->direct));
    return t;
}

// ---- native io_uring and fio ----

Result<RunStats> native_run(const Target& t, const Workload& w, std::chrono::milliseconds dur,
                            std::uint64_t seed) {
    UniqueFd fd(::open(t.path.c_str(), (w.write ? O_RDWR : O_RDONLY) | O_CLOEXEC | (t.direct ? O_DIRECT : 0)));
    if (!fd.valid()) {
        return fail_errno();
    }
    io_uring ring{};
    const int irc = io_uring_queue_init(std::max(8U, w.qd * 2), &ring, 0);
    if (irc < 0) {
        return fail_errno(-irc);
    }
    struct Exit {
        io_uring* r;
        ~Exit() { io_uring_queue_exit(r); }
    } exit_ring{&ring};
    auto buf = aligned_buffer(static_cast<std::size_t>(w.qd) * w.bs);
    if (!buf) {
        return fail(buf.error());
    }
    Offsets off(t.span, w.bs, w.random, seed);
    std::vector<Clock::time_point> started(w.qd);
    RunStats r;
    r.lat_ns.reserve(1 << 16);
    auto issue = [&](std::uint32_t slot) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);  // never null: SQ is 2×qd
        std::byte* b = buf->get() + static_cast<std::size_t>(slot) * w.bs;
        const auto o = static_cast<__u64>(t.base + off.next());
        if (w.write) {
            io_uring_prep_write(sqe, fd.get(), b, w.bs, o);
        } else {
            io_uring_prep_read(sqe, fd.get(), b, w.bs, o);
        }
        io_uring_sqe_set_data64(sqe, slot);
        started[slot] = Clock::now();
    };
    const pid_t self_tid = ::gettid();
    const auto workers0 = io_worker_cpu_ns(self_tid);
    const double cpu0 = cpu_ns_of(RUSAGE_THREAD);
    const auto t0 = Clock::now();
    const auto deadline = t0 + dur;
    for (std::uint32_t s = 0; s < w.qd; ++s) {
        issue(s);
    }
    std::uint32_t inflight = w.qd;
    while (inflight > 0) {
        const int src = io_uring_submit(&ring);
        if (src < 0 && src != -EINTR && src != -EAGAIN) {
            return fail_errno(-src);
        }
        if (w.poll) {  // as blkback's polling mode: peek the CQ for the window before sleeping
            (void)spin_until([&] { return io_uring_cq_ready(&ring) > 0; }, kPollWindow,
                             SpinYield::every_64);
        }
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec ts{kWaitTimeoutMs / 1000, 0};
        const int wrc = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
        if (wrc == -ETIME) {
            return fail(timed_out_error());
        }
        if (wrc < 0 && wrc != -EINTR) {
            return fail_errno(-wrc);
        }
        const auto now = Clock::now();
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            ++seen;
            const auto slot = static_cast<std::uint32_t>(io_uring_cqe_get_data64(cqe));
            if (cqe->res != static_cast<int>(w.bs) || slot >= w.qd) {
                return fail_errno(cqe->res < 0 ? -cqe->res : EIO);
            }
            r.lat_ns.push_back(std::chrono::duration<double, std::nano>(now - started[slot]).count());
            ++r.ios;
            --inflight;
            if (now < deadline) {
                issue(slot);
                ++inflight;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    r.secs = std::chrono::duration<double>(Clock::now() - t0).count();
    r.cpu_ns = cpu_ns_of(RUSAGE_THREAD) - cpu0 + io_worker_cpu_since(self_tid, workers0);
    return r;
}

bool fio_present() {
    static const bool present = sh("command -v fio").first == 0;
    return present;
}

/// fio with ioengine=io_uring and the same job; its IOPS, or NaN when fio is absent/fails.
double fio_iops(const Target& t, const Workload& w, std::chrono::milliseconds dur) {
    if (!fio_present()) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    const char* rw = w.write ? "randwrite" : (w.random ? "randread" : "read");
    const std::string cmd = "fio --name=hvbench --output-format=json --ioengine=io_uring --filename=" +
                            sh_quote(t.path) + " --offset=" + std::to_string(t.base) +
                            " --size=" + std::to_string(t.span) + " --rw=" + rw +
                            " --bs=" + std::to_string(w.bs) + " --iodepth=" + std::to_string(w.qd) +
                            " --direct=" + (t.direct ? "1" : "0") +
                            " --time_based --runtime=" + std::to_string(dur.count()) + "ms" +
                            " --randrepeat=0 --norandommap";
    auto [rc, out] = sh(cmd);
    const std::string key = std::string("\"") + (w.write ? "write" : "read") + "\" : {";
    const auto sec = out.find(key);
    const auto ip = sec == std::string::npos ? sec : out.find("\"iops\" : ", sec);
    if (rc != 0 || ip == std::string::npos) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    return std::strtod(out.c_str() + ip + 9, nullptr);
}

// ---- the hvkit side: this process is dom0 (toolstack + blkback), the frontend a domain ----

struct Stack {
    std::unique_ptr<BenchHost> host;
    std::optional<BenchHost::Domain> front;
    std::unique_ptr<xs::Client> ts_xs;
    std::optional<hvmin::Services> be_svc;
    std::unique_ptr<xs::Client> be_xs;
    std::unique_ptr<blk::Backend> backend;

    ~Stack() {
        backend.reset();
        be_xs.reset();
        be_svc.reset();
    }

    Result<void> start_backend(blk::DataMode mode, const std::vector<std::string>& lvm_devices) {
        backend.reset();
        be_xs.reset();
        auto s = hvmin::connect_dom0(host->rundir());
        if (!s) {
            return fail(s.error());
        }
        be_svc.emplace(std::move(*s));
        auto x = xs::Client::connect((host->rundir() / "xenstored.sock").string());
        if (!x) {
            return fail(x.error());
        }
        be_xs = std::move(*x);
        blk::BackendOptions o;
        o.mode = mode;
        o.max_queues = 1;
        o.lvm_scan_devices = lvm_devices;
        auto b = blk::Backend::create(*be_svc, *be_xs, std::move(o));
        if (!b) {
            return fail(b.error());
        }
        backend = std::move(*b);
        backend->start();
        return {};
    }
};

constexpr std::uint32_t kDevidBase = 51712;  // xvda

/// `poll`: the vbd gets poll-us (blkback's polling mode) and the frontend spins as long.
Result<void> attach_vbd(Stack& st, const Target& t, std::uint32_t devid, bool poll) {
    xenbus::DeviceSpec spec;
    spec.type = "vbd";
    spec.frontend = st.front->domid;
    spec.backend = DomId(0);
    spec.devid = devid;
    spec.backend_keys = {{"params", t.params}, {"type", "file"}, {"mode", "w"},
                         {"dev", "xvda"}, {"device-type", "disk"}};
    const std::string spin_us = std::to_string(poll ? kPollWindow.count() : 0);
    spec.backend_keys["poll-us"] = spin_us;  // 0: event channels only, whatever HVKIT_POLL_US says
    spec.frontend_keys = {{"virtual-device", std::to_string(devid)}, {"device-type", "disk"}};
    HV_TRY(xenbus::create_device(*st.ts_xs, spec));
    auto r = st.front->ctl.call("open " + std::to_string(devid) + " " + spin_us, 30'000);
    if (!r) {
        return fail(r.error());
    }
    return {};
}

Result<void> detach_vbd(Stack& st, std::uint32_t devid) {
    auto r = st.front->ctl.call("close " + std::to_string(devid));
    HV_TRY(xenbus::remove_device(*st.ts_xs, DomId(0), "vbd", st.front->domid, devid));
    if (!r) {
        return fail(r.error());
    }
    return {};
}

Result<RunStats> hvkit_run(Stack& st, const Target& t, const Workload& w, std::uint32_t devid,
                           std::chrono::milliseconds dur, std::uint64_t seed) {
    const double be0 = cpu_ns_of(RUSAGE_SELF);
    auto r = st.front->ctl.call("run " + std::to_string(devid) + " " + (w.write ? "1" : "0") + " " +
                                    (w.random ? "1" : "0") + " " + std::to_string(w.bs) + " " +
                                    std::to_string(w.qd) + " " + std::to_string(t.span) + " " +
                                    std::to_string(dur.count()) + " " + std::to_string(seed),
                                static_cast<int>(dur.count()) + 30'000);
    if (!r) {
        return fail(r.error());
    }
    if (r->size() != 6) {
        return fail(bad_data_error());
    }
    RunStats s;
    s.be_cpu_ns = cpu_ns_of(RUSAGE_SELF) - be0;
    s.ios = std::strtoull((*r)[1].c_str(), nullptr, 10);
    s.secs = std::strtod((*r)[2].c_str(), nullptr) / 1e9;
    s.cpu_ns = std::strtod((*r)[5].c_str(), nullptr);
    // The helper reports percentiles only; keep them as two points of the distribution.
    s.lat_ns = {std::strtod((*r)[3].c_str(), nullptr), std::strtod((*r)[4].c_str(), nullptr)};
    return s;
}

double median_of(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
    if (v.empty()) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string fmt(double v) {
    if (std::isnan(v)) {
        return "n/a";
    }
    char b[48];
    std::snprintf(b, sizeof b, "%.4g", v);
    return b;
}

/// Measures one case (runs × {hvkit, native, fio}), then hands the recorded samples to the
/// harness, which prints the medians; the extra per-case facts go in cfg_ keys.
std::string case_name(const std::string& label, const Workload& w, blk::DataMode mode) {
    return label + "_" + w.name + (mode == blk::DataMode::map ? "_map" : "_copy");
}

bool selected(Context& ctx, const std::string& name) {
    return ctx.options().selects(name);
}

Result<void> run_blk_case(Context& ctx, Stack& st, const Target& t, const Workload& w,
                          blk::DataMode mode, std::uint32_t devid) {
    const std::string name = case_name(t.label, w, mode);
    if (!selected(ctx, name)) {
        return {};
    }
    const bool latency_case = w.qd == 1;
    const bool mbps_case = w.bs >= (1U << 20);
    const auto dur = std::chrono::milliseconds(ctx.scale(1000, 15));
    const unsigned runs = ctx.options().runs == 0 ? 1 : ctx.options().runs;
    std::vector<Sample> ours, peer;
    std::vector<double> o_iops, p_iops, o_cpu, o_fe_cpu, o_be_cpu, p_cpu, fio;
    for (unsigned i = 0; i < runs; ++i) {
        const std::uint64_t seed = 7919ULL * (i + 1) + devid;  // deterministic, printed in cfg_seed
        auto o = hvkit_run(st, t, w, devid, dur, seed);
        if (!o) {
            std::fprintf(stderr, "hvbench blk/%s: hvkit run failed: %s\n", name.c_str(), o.error().message().c_str());
            return fail(o.error());
        }
        auto p = native_run(t, w, dur, seed);
        if (!p) {
            std::fprintf(stderr, "hvbench blk/%s: native run failed: %s\n", name.c_str(), p.error().message().c_str());
            return fail(p.error());
        }
        // fio starts a process and a job per run (~0.3 s): left out of the --quick smoke.
        // fio has no CQ-peeking mode for files: the polled cases have no fio figure.
        fio.push_back(ctx.quick() || w.poll ? std::numeric_limits<double>::quiet_NaN()
                                            : fio_iops(t, w, dur));
        const double bytes = w.bs;
        auto value = [&](const RunStats& r, double p50) {
            return latency_case ? p50 : (mbps_case ? iops(r) * bytes / 1e6 : iops(r));
        };
        const Sample ps = latency_sample(p->lat_ns);
        Sample os;
        os.p50 = o->lat_ns[0];
        os.p99 = o->lat_ns[1];
        os.value = value(*o, os.p50);
        Sample pv = ps;
        pv.value = value(*p, ps.p50);
        ours.push_back(os);
        peer.push_back(pv);
        o_iops.push_back(iops(*o));
        p_iops.push_back(iops(*p));
        const double oios = static_cast<double>(std::max<std::uint64_t>(o->ios, 1));
        o_fe_cpu.push_back(o->cpu_ns / oios / 1e3);
        o_be_cpu.push_back(o->be_cpu_ns / oios / 1e3);
        o_cpu.push_back((o->cpu_ns + o->be_cpu_ns) / oios / 1e3);
        p_cpu.push_back(p->cpu_ns / static_cast<double>(std::max<std::uint64_t>(p->ios, 1)) / 1e3);
        std::fprintf(stderr, "hvbench blk/%s run %u/%u: hvkit %s IOPS p50 %s ns, native %s IOPS p50 %s ns, fio %s IOPS\n",
                     name.c_str(), i + 1, runs, fmt(iops(*o)).c_str(), fmt(os.p50).c_str(),
                     fmt(iops(*p)).c_str(), fmt(ps.p50).c_str(), fmt(fio.back()).c_str());
    }
    CaseSpec spec;
    spec.name = name;
    spec.unit = latency_case ? "ns" : (mbps_case ? "MB/s" : "IOPS");
    spec.peer = "native_io_uring";
    spec.higher_is_better = !latency_case;
    std::vector<double> o50, p50;
    for (unsigned i = 0; i < runs; ++i) {
        o50.push_back(ours[i].p50);
        p50.push_back(peer[i].p50);
    }
    const double oi = median_of(o_iops), pi = median_of(p_iops), fi = median_of(fio);
    spec.config = {
        {"target_storage", t.label},
        {"path", t.path},
        {"io", std::string(w.random ? "random " : "sequential ") + (w.write ? "write" : "read")},
        {"bs", std::to_string(w.bs)},
        {"qd", std::to_string(w.qd)},
        {"span_bytes", std::to_string(t.span)},
        {"duration_ms", std::to_string(dur.count())},
        {"native_io", t.direct_note},
        {"blkback", std::string(mode == blk::DataMode::map ? "map (trusted dom0)" : "copy (isolated mode, forced)") +
                        ", in-process, 1 queue; frontend libblkfront in a helper domain"},
        {"polling", w.poll ? "on: blkback poll-us " + std::to_string(kPollWindow.count()) +
                                 ", blkfront spin " + std::to_string(kPollWindow.count()) +
                                 " us; native spins on io_uring_peek_cqe as long"
                           : "off: event channels; native sleeps in io_uring_wait_cqe"},
        {"iops", fmt(oi)},
        {"peer_iops", fmt(pi)},
        {"mbps", fmt(oi * w.bs / 1e6)},
        {"peer_mbps", fmt(pi * w.bs / 1e6)},
        {"cpu_us_per_io", fmt(median_of(o_cpu))},
        {"cpu_fe_us_per_io", fmt(median_of(o_fe_cpu))},
        {"cpu_be_us_per_io", fmt(median_of(o_be_cpu))},
        {"peer_cpu_us_per_io", fmt(median_of(p_cpu))},
        {"iops_ratio", fmt(pi > 0 ? oi / pi : std::numeric_limits<double>::quiet_NaN())},
        {"added_p50_us", fmt((median_of(o50) - median_of(p50)) / 1e3)},
        {"fio_iops", ctx.quick() ? "skipped (--quick)" : w.poll ? "n/a (polled case)"
                     : fio_present() ? fmt(fi) : "fio absent"},
        {"fio_vs_native", fmt(pi > 0 ? fi / pi : std::numeric_limits<double>::quiet_NaN())},
        {"target", latency_case ? (w.poll ? "added p50 <= 5 us when polling" : "added p50 <= 15 us with event channels")
                   : mbps_case  ? "ratio >= 0.99"
                   : w.qd >= 32 && w.bs == 4096 ? "ratio >= 0.97"
                                                : "none"},
    };
    unsigned oi_idx = 0, pi_idx = 0;
    // Replays the samples measured above (in the same alternation) so the harness takes medians.
    return ctx.run_case(
        spec, [&]() -> Result<Sample> { return ours[oi_idx++ % runs]; },
        [&]() -> Result<Sample> { return peer[pi_idx++ % runs]; });
}

}  // namespace

/// Commands: "open DEVID SPIN_US" → "ok SECTORS" (libblkfront connects to the backend, and
/// spins SPIN_US before sleeping: polling mode when not 0);
/// "run DEVID WRITE RANDOM BS QD SPAN DUR_MS SEED" → "ok IOS NS P50 P99 CPU_NS";
/// "close DEVID" → "ok".
Result<std::string> blk_helper(hvmin::Services& svc, const std::vector<std::string>& w,
                               ControlLine& /*ctl*/) {
    static FrontState state;
    front_state = &state;
    std::vector<std::uint64_t> nums;
    for (std::size_t i = 1; i < w.size(); ++i) {
        auto n = parse_u64(w[i]);
        if (!n) {
            return fail(n.error());
        }
        nums.push_back(*n);
    }
    if (w[0] == "open" && nums.size() == 2) {
        return front_open(svc, static_cast<std::uint32_t>(nums[0]), nums[1]);
    }
    if (w[0] == "run" && nums.size() == 8) {
        return front_run(nums);
    }
    if (w[0] == "close" && nums.size() == 1) {
        state.bufs.erase(static_cast<std::uint32_t>(nums[0]));
        state.devs.erase(static_cast<std::uint32_t>(nums[0]));
        return std::string("ok");
    }
    return fail_errno(EINVAL);
}

int run_blk_suite(Context& ctx) {
    const std::uint64_t span = ctx.scale(1ULL << 30, 16ULL << 20);
    std::vector<std::unique_ptr<Target>> targets;
    auto add = [&](Result<std::unique_ptr<Target>> t, const char* what) {
        if (t) {
            std::fprintf(stderr, "hvbench blk: target %s: %s (%s)\n", (*t)->label.c_str(),
                         (*t)->path.c_str(), (*t)->direct_note.c_str());
            targets.push_back(std::move(*t));
            return true;
        }
        std::fprintf(stderr, "hvbench blk: cannot make the %s target: %s\n", what, t.error().message().c_str());
        return false;
    };
    // A target is made (and filled) only when --case selects one of its cases.
    auto wanted = [&](const char* label) {
        for (const auto mode : {blk::DataMode::map, blk::DataMode::copy}) {
            for (const auto& w : kWorkloads) {
                if (selected(ctx, case_name(label, w, mode))) {
                    return true;
                }
            }
        }
        return false;
    };
    if ((wanted("shm") && !add(file_target("shm", "/dev/shm", span), "/dev/shm")) ||
        (wanted("file") && !add(file_target("file", "/var/tmp", span), "file")) ||
        (wanted("lv") && !add(lv_target(span), "LV"))) {
        return 1;
    }
    Stack st;
    auto h = BenchHost::create(true);
    if (!h) {
        std::fprintf(stderr, "hvbench blk: hv-min: %s\n", h.error().message().c_str());
        return 1;
    }
    st.host = std::move(*h);
    auto x = xs::Client::connect((st.host->rundir() / "xenstored.sock").string());
    if (!x) {
        std::fprintf(stderr, "hvbench blk: xenstore: %s\n", x.error().message().c_str());
        return 1;
    }
    st.ts_xs = std::move(*x);
    auto d = st.host->spawn("bench-blkfront", "blk", 16384, false);
    if (!d) {
        std::fprintf(stderr, "hvbench blk: frontend domain: %s\n", d.error().message().c_str());
        return 1;
    }
    st.front.emplace(std::move(*d));
    std::uint32_t devid = kDevidBase;
    bool failed = false;
    for (const auto mode : {blk::DataMode::map, blk::DataMode::copy}) {
        for (const auto& t : targets) {
            if (auto r = st.start_backend(mode, t->lvm_devices); !r) {
                std::fprintf(stderr, "hvbench blk: blkback: %s\n", r.error().message().c_str());
                return 1;
            }
            for (const bool poll : {false, true}) {
                // Skip attaching a vbd none of whose cases the filter selects.
                const bool any = std::any_of(std::begin(kWorkloads), std::end(kWorkloads), [&](const Workload& w) {
                    return w.poll == poll && selected(ctx, case_name(t->label, w, mode));
                });
                if (!any) {
                    continue;
                }
                if (auto r = attach_vbd(st, *t, devid, poll); !r) {
                    std::fprintf(stderr, "hvbench blk: vbd on %s: %s\n", t->label.c_str(), r.error().message().c_str());
                    return 1;
                }
                for (const auto& w : kWorkloads) {
                    // A failed case prints why and emits no line; the others still run (exit 1).
                    if (w.poll == poll) {
                        if (auto r = run_blk_case(ctx, st, *t, w, mode, devid); !r) {
                            failed = true;
                        }
                    }
                }
                if (auto r = detach_vbd(st, devid); !r) {
                    std::fprintf(stderr, "hvbench blk: detach: %s\n", r.error().message().c_str());
                    return 1;
                }
                devid += 16;
            }
        }
    }
    return failed ? 1 : 0;
}

}  // namespace hv::bench
