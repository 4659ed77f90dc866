// A domain that SIGKILL cannot end at once stays listed as dying, and hv-min says once which of
// its processes remain and where they wait. The unkillable process is real: `cat` reading a
// file of a FUSE filesystem this test serves, whose READ the server has taken and never
// answers. Linux then waits for the answer uninterruptibly once a fatal signal arrives (fuse
// request_wait_answer: a request already in userspace is "waited out", state D), so cgroup.kill
// cannot end it until the test answers. The report bound is shortened to 300 ms (default 10 s).
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "domain_procs.hpp"
#include "harness.hpp"
#include "hv/subprocess.hpp"
#include "skip.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

/// A one-file FUSE filesystem ("f", 4096 bytes) that takes READ requests and answers none of
/// them until answer_reads(); everything else it needs is answered at once.
class StuckFs {
public:
    explicit StuckFs(const fs::path& mnt) : mnt_(mnt) {
        fs::create_directories(mnt);
        fd_ = UniqueFd(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
        REQUIRE(fd_);
        const std::string opts =
            "fd=" + std::to_string(fd_.get()) + ",rootmode=40000,user_id=0,group_id=0";
        REQUIRE(::mount("hvstuck", mnt.c_str(), "fuse.hvstuck", MS_NOSUID | MS_NODEV,
                        opts.c_str()) == 0);
        mounted_ = true;
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        stop_r_ = UniqueFd(p[0]);
        stop_w_ = UniqueFd(p[1]);
        thread_ = std::thread([this] { serve(); });
    }
    ~StuckFs() {
        answer_reads(-EIO);
        if (mounted_) {
            (void)::umount2(mnt_.c_str(), MNT_DETACH);
        }
        // The server stops on the pipe, so the fd it reads is closed only after it is joined.
        stop_w_.reset();
        if (thread_.joinable()) {
            thread_.join();
        }
        fd_.reset();
    }
    /// Whether a READ arrived (and is held), waiting at most `limit`.
    bool wait_read(std::chrono::milliseconds limit) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (held_.load() == 0 && std::chrono::steady_clock::now() < end) {
            std::this_thread::sleep_for(10ms);
        }
        return held_.load() != 0;
    }
    /// Answers the held READ with `err` (negative errno).
    void answer_reads(int err) {
        const std::uint64_t u = held_.exchange(0);
        if (u != 0) {
            reply(u, err, nullptr, 0);
        }
    }

private:
    void reply(std::uint64_t unique, int err, const void* body, std::size_t len) {
        fuse_out_header h{};
        h.len = static_cast<std::uint32_t>(sizeof h + len);
        h.error = err;
        h.unique = unique;
        std::vector<char> b(sizeof h + len);
        std::memcpy(b.data(), &h, sizeof h);
        if (len != 0) {
            std::memcpy(b.data() + sizeof h, body, len);
        }
        (void)!::write(fd_.get(), b.data(), b.size());
    }
    static fuse_attr attr(std::uint64_t node) {
        fuse_attr a{};
        a.ino = node;
        a.mode = node == FUSE_ROOT_ID ? (S_IFDIR | 0555) : (S_IFREG | 0444);
        a.nlink = node == FUSE_ROOT_ID ? 2 : 1;
        a.size = node == FUSE_ROOT_ID ? 0 : 4096;
        a.blksize = 4096;
        return a;
    }
    void serve() {
        std::vector<char> buf(1 << 17);  // at least FUSE_MIN_READ_BUFFER
        for (;;) {
            pollfd pf[2] = {{fd_.get(), POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
            if (::poll(pf, 2, -1) < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return;
            }
            if (pf[1].revents != 0) {
                return;  // the destructor closed the pipe
            }
            const ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) {
                return;  // unmounted (ENODEV) or closed
            }
            fuse_in_header in{};
            std::memcpy(&in, buf.data(), sizeof in);
            const char* arg = buf.data() + sizeof in;
            switch (in.opcode) {
                case FUSE_INIT: {
                    fuse_init_out o{};
                    o.major = FUSE_KERNEL_VERSION;
                    o.minor = FUSE_KERNEL_MINOR_VERSION;
                    o.max_write = 4096;
                    o.max_readahead = 0;
                    reply(in.unique, 0, &o, sizeof o);
                    break;
                }
                case FUSE_LOOKUP: {
                    if (std::strcmp(arg, "f") != 0) {
                        reply(in.unique, -ENOENT, nullptr, 0);
                        break;
                    }
                    fuse_entry_out e{};
                    e.nodeid = 2;
                    e.attr = attr(2);
                    reply(in.unique, 0, &e, sizeof e);
                    break;
                }
                case FUSE_GETATTR: {
                    fuse_attr_out a{};
                    a.attr = attr(in.nodeid);
                    reply(in.unique, 0, &a, sizeof a);
                    break;
                }
                case FUSE_OPEN: {
                    fuse_open_out o{};
                    o.fh = 1;
                    o.open_flags = FOPEN_DIRECT_IO;
                    reply(in.unique, 0, &o, sizeof o);
                    break;
                }
                case FUSE_READ:
                    held_.store(in.unique);  // taken, never answered (until answer_reads)
                    break;
                case FUSE_INTERRUPT:
                case FUSE_FORGET:
                case FUSE_BATCH_FORGET:
                    break;  // no reply expected (INTERRUPT: we keep the READ regardless)
                case FUSE_FLUSH:
                case FUSE_RELEASE:
                    reply(in.unique, 0, nullptr, 0);
                    break;
                default:
                    reply(in.unique, -ENOSYS, nullptr, 0);
                    break;
            }
        }
    }

    fs::path mnt_;
    UniqueFd fd_;
    bool mounted_ = false;
    UniqueFd stop_r_, stop_w_;  // closing stop_w_ ends serve()
    std::atomic<std::uint64_t> held_{0};
    std::thread thread_;  // last: joined before the fds it polls go
};

/// Sends this process's stderr (where hv-min logs) to a file for the scope.
class StderrToFile {
public:
    explicit StderrToFile(const fs::path& p) : path_(p) {
        saved_ = UniqueFd(::dup(2));
        UniqueFd f(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        REQUIRE(saved_);
        REQUIRE(f);
        REQUIRE(::dup2(f.get(), 2) == 2);
    }
    ~StderrToFile() { (void)::dup2(saved_.get(), 2); }
    std::string text() const {
        std::ifstream f(path_);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }

private:
    fs::path path_;
    UniqueFd saved_;
};

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds limit = 10s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!f()) {
        if (std::chrono::steady_clock::now() >= end) {
            return false;
        }
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

}  // namespace

TEST_CASE("describe_stat reads the name and state of /proc/PID/stat text", "[hvmin][procs]") {
    CHECK(procs::describe_stat("42 (cat) D 1 42 42 0") == "cat state D");
    CHECK(procs::describe_stat("42 (a) b) (c) S 1 2") == "a) b) (c state S");
    CHECK(procs::describe_stat("7 (x\ny) R 1") == "x?y state R");
    CHECK_FALSE(procs::describe_stat(""));
    CHECK_FALSE(procs::describe_stat("42 cat D"));
    CHECK_FALSE(procs::describe_stat("42 (cat)"));
    CHECK_FALSE(procs::describe_stat("42 (cat) "));
    CHECK_FALSE(procs::describe_stat(") 1 (x"));
    CHECK(procs::describe_process(::getpid()).find(" state R wchan ") != std::string::npos);
}

TEST_CASE("a domain SIGKILL cannot end is listed as dying and its blocked process is logged once",
          "[hvmin][procs][root]") {
    hv::test::require_root();
    hv::test::skip_unless(::access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse");
    CoreConfig cfg;
    cfg.kill_report_ms = 300;
    Harness h(cfg);
    const fs::path mnt = h.dir.path() / "stuck";
    StuckFs fuse(mnt);
    DomainConfig dc;
    dc.name = "stuck";
    dc.memory_pages = 16;
    dc.argv = {"/bin/cat", (mnt / "f").string()};
    auto d = h.ts->create(dc);
    REQUIRE(d);
    REQUIRE(fuse.wait_read(10s));  // cat waits for its READ

    const fs::path log = h.dir.path() / "stderr.log";
    std::string text;
    {
        StderrToFile capture(log);
        REQUIRE(h.ts->destroy(*d));
        CHECK(eventually([&] {
            text = capture.text();
            return text.find("is still dying") != std::string::npos;
        }));
        // Listed as dying (xl's d) while the process waits, through more than one retry.
        std::this_thread::sleep_for(1500ms);
        auto l = h.ts->list();
        REQUIRE(l);
        bool dying = false;
        for (const auto& s : *l) {
            dying = dying || (s.domid == *d && s.state == wire::DomainState::dying);
        }
        CHECK(dying);
#ifdef HVCTL_BIN
        auto out = hv::run({HVCTL_BIN, "--rundir", h.dir.path().string(), "list"}, 10000);
        REQUIRE(out);
        CHECK(out->output.find("stuck") != std::string::npos);
        CHECK(out->output.find("-----d") != std::string::npos);
#endif
        // The server answers: the read ends, cat dies of its SIGKILL, the domain is released.
        fuse.answer_reads(-EIO);
        auto death = h.ts->wait_for_death(*d, 10s);
        REQUIRE(death);
        CHECK(eventually([&] {
            text = capture.text();
            return text.find("its last process is gone") != std::string::npos;
        }));
    }
    INFO(text);
    const auto first = text.find("is still dying");
    REQUIRE(first != std::string::npos);
    CHECK(text.find("is still dying", first + 1) == std::string::npos);  // logged once
    const std::string line = text.substr(first, text.find('\n', first) - first);
    CHECK(line.find("300 ms after SIGKILL") != std::string::npos);
    CHECK(line.find("(cat) state D wchan ") != std::string::npos);
}
