// Processes and domains for hvbench suites (see procs.hpp).
#include "procs.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "hvmin/client.hpp"

namespace hv::bench {

std::error_code timed_out_error() {
    return std::make_error_code(std::errc::timed_out);
}
std::error_code bad_data_error() {
    return std::make_error_code(std::errc::bad_message);
}

pid_t Child::fork_raw() noexcept {
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
        (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(3);
        }
        pin_to_cpu(1);
    }
    return pid;
}

void Child::exit_child(int code) noexcept {
    ::_exit(code);
}

Child::~Child() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        (void)wait();
    }
}

Result<void> Child::wait() noexcept {
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    pid_ = -1;
    if (r < 0) {
        return fail_errno();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return fail(bad_data_error());
    }
    return {};
}

Result<ControlLine> ControlLine::connect(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        return fail_errno();
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return fail_errno();
    }
    return ControlLine(std::move(fd));
}

Result<void> ControlLine::write_line(const std::string& line) {
    const std::string l = line + "\n";
    std::size_t done = 0;
    while (done < l.size()) {
        const ssize_t w = ::send(fd_.get(), l.data() + done, l.size() - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return fail_errno();
        }
        done += static_cast<std::size_t>(w);
    }
    return {};
}

Result<std::string> ControlLine::read_line(int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        const auto nl = buf_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            return line;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now())
                              .count();
        if (left <= 0) {
            return fail(timed_out_error());
        }
        pollfd p{fd_.get(), POLLIN, 0};
        const int pr = ::poll(&p, 1, static_cast<int>(left));
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr < 0) {
            return fail_errno();
        }
        if (pr == 0) {
            return fail(timed_out_error());
        }
        char b[512];
        const ssize_t r = ::recv(fd_.get(), b, sizeof b, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return fail_errno();
        }
        if (r == 0) {
            return fail_errno(ECONNRESET);
        }
        buf_.append(b, static_cast<std::size_t>(r));
        if (buf_.size() > 1 << 20) {
            return fail(bad_data_error());
        }
    }
}

Result<std::vector<std::string>> ControlLine::call(const std::string& line, int timeout_ms) {
    HV_TRY(write_line(line));
    auto reply = read_line(timeout_ms);
    if (!reply) {
        return fail(reply.error());
    }
    auto w = split_words(*reply);
    if (w.empty() || w[0] != "ok") {
        std::fprintf(stderr, "hvbench: helper answered \"%s\" to \"%s\"\n", reply->c_str(),
                     line.c_str());
        return fail_errno(EPROTO);
    }
    return w;
}

std::vector<std::string> split_words(const std::string& s) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ') {
            ++i;
        }
        const std::size_t b = i;
        while (i < s.size() && s[i] != ' ') {
            ++i;
        }
        if (i > b) {
            out.emplace_back(s.substr(b, i - b));
        }
    }
    return out;
}

Result<std::uint64_t> parse_u64(const std::string& s) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) {
        return fail_errno(EINVAL);
    }
    return std::stoull(s);
}

Result<std::unique_ptr<BenchHost>> BenchHost::create(
    bool xenstore, std::optional<std::chrono::microseconds> spin) {
    std::unique_ptr<BenchHost> h(new BenchHost());
    std::string tmpl = (std::filesystem::temp_directory_path() / "hvbench.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
        return fail_errno();
    }
    h->dir_ = tmpl;
    hvmin::CoreConfig cfg;
    cfg.rundir = h->dir_;
    cfg.dom0_uid = ::getuid();
    cfg.host_xenstore = xenstore;
    if (spin) {
        cfg.spin_window = *spin;
    }
    auto core = hvmin::Core::create(cfg);
    if (!core) {
        return fail(core.error());
    }
    h->core_ = std::move(*core);
    HV_TRY(h->core_->start());
    auto ts = hvmin::Toolstack::connect(h->dir_);
    if (!ts) {
        return fail(ts.error());
    }
    h->ts_ = std::make_unique<hvmin::Toolstack>(std::move(*ts));
    if (spin) {
        h->ts_->services().channel().set_reply_spin(*spin);
    }
    return h;
}

BenchHost::~BenchHost() {
    if (ts_) {
        for (DomId d : domains_) {
            (void)ts_->destroy(d);
        }
    }
    ts_.reset();
    core_.reset();  // kills and reaps whatever is left
    if (!dir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
}

Result<BenchHost::Domain> BenchHost::spawn(const std::string& name, const std::string& helper,
                                           std::uint64_t memory_pages, bool trusted) {
    const std::string path = (dir_ / ("ctl" + std::to_string(next_ctl_++))).string();
    UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener.valid()) {
        return fail_errno();
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(listener.get(), 1) != 0) {
        return fail_errno();
    }
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) {
        return fail(ec);
    }
    hvmin::DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = memory_pages;
    cfg.trusted = trusted;
    cfg.argv = {self.string(), "--helper", helper, path};
    for (const char* keep : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "PATH"}) {
        if (const char* v = std::getenv(keep)) {
            cfg.env.push_back(std::string(keep) + "=" + v);
        }
    }
    auto d = ts_->create(cfg);
    if (!d) {
        return fail(d.error());
    }
    domains_.push_back(*d);
    pollfd p{listener.get(), POLLIN, 0};
    int pr;
    do {
        pr = ::poll(&p, 1, kWaitTimeoutMs);
    } while (pr < 0 && errno == EINTR);
    if (pr <= 0) {
        return fail(pr == 0 ? timed_out_error() : errno_code());
    }
    UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn.valid()) {
        return fail_errno();
    }
    Domain dom{*d, ControlLine(std::move(conn))};
    auto hello = dom.ctl.read_line();
    if (!hello) {
        return fail(hello.error());
    }
    if (*hello != "hello " + std::to_string(d->get())) {
        return fail(bad_data_error());
    }
    return dom;
}

int run_helper_domain(const char* ctl_path, HelperHandler handler) {
    auto svc = hvmin::attach();
    if (!svc) {
        std::fprintf(stderr, "hvbench helper: attach: %s\n", svc.error().message().c_str());
        return 1;
    }
    auto ctl = ControlLine::connect(ctl_path);
    if (!ctl) {
        std::fprintf(stderr, "hvbench helper: %s: %s\n", ctl_path, ctl.error().message().c_str());
        return 1;
    }
    if (!ctl->write_line("hello " + std::to_string(svc->domid().get()))) {
        return 1;
    }
    for (;;) {
        // The bench may think for a while between commands (other cases run meanwhile).
        auto line = ctl->read_line(3'600'000);
        if (!line) {
            return line.error() == std::errc::connection_reset ? 0 : 1;
        }
        const auto words = split_words(*line);
        if (words.empty()) {
            continue;
        }
        if (words[0] == "exit") {
            return 0;
        }
        auto reply = handler(*svc, words, *ctl);
        if (!ctl->write_line(reply ? *reply : "err " + reply.error().message())) {
            return 1;
        }
    }
}

Sample latency_sample(const std::vector<double>& ns) {
    Sample s;
    s.p50 = percentile(ns, 50);
    s.p99 = percentile(ns, 99);
    s.value = s.p50;
    return s;
}

}  // namespace hv::bench
