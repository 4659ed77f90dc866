// NetNs: a private network namespace for one test (design.md §11). Created with unshare and
// bound at /run/netns/<name> (the `ip netns` convention, so `ip netns exec <name> …` works too);
// removed when the object dies, also when a REQUIRE fails (Catch unwinds). Layer: tests.
// Everything a test creates (bridges, taps, veths, OVS daemons) belongs inside one of these.
#pragma once

#include <sched.h>

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "hv/expected.hpp"
#include "hv/subprocess.hpp"
#include "hv/unique_fd.hpp"

namespace hv::test {

class NetNs {
public:
    /// A fresh, empty namespace (loopback brought up) named "<prefix>-<pid>-<n>". Stale
    /// namespaces left by a crashed earlier test process (dead pid, same prefix) are removed.
    static hv::Result<NetNs> create(std::string_view prefix = "hvt") noexcept;

    NetNs(NetNs&& o) noexcept : name_(std::move(o.name_)), fd_(std::move(o.fd_)) { o.name_.clear(); }
    NetNs& operator=(NetNs&&) = delete;
    NetNs(const NetNs&) = delete;
    NetNs& operator=(const NetNs&) = delete;
    /// Unbinds /run/netns/<name> and closes our fd; the kernel then deletes the namespace and
    /// every virtual link in it once nothing else (a process, an open tap) still holds it.
    ~NetNs();

    const std::string& name() const noexcept { return name_; }
    /// An O_RDONLY fd of the namespace, for setns()/IFLA_NET_NS_FD.
    int fd() const noexcept { return fd_.get(); }

    /// Runs fn() on a short-lived thread that joined this namespace and returns its result;
    /// the calling thread's namespace is never changed. An exception fn throws (a failed
    /// REQUIRE, say) is rethrown in the caller.
    template <class F>
    auto run(F&& fn) const -> std::invoke_result_t<F&> {
        using R = std::invoke_result_t<F&>;
        const int nsfd = fd_.get();
        std::exception_ptr error;
        if constexpr (std::is_void_v<R>) {
            std::thread t([&] {
                enter_or_abort(nsfd);
                try {
                    fn();
                } catch (...) {
                    error = std::current_exception();
                }
            });
            t.join();
            if (error) {
                std::rethrow_exception(error);
            }
        } else {
            std::optional<R> out;
            std::thread t([&] {
                enter_or_abort(nsfd);
                try {
                    out.emplace(fn());
                } catch (...) {
                    error = std::current_exception();
                }
            });
            t.join();
            if (error) {
                std::rethrow_exception(error);
            }
            return std::move(*out);
        }
    }

    /// Runs a program inside the namespace (no shell), bounded by timeout_ms.
    hv::Result<hv::RunResult> exec(const std::vector<std::string>& argv,
                                   int timeout_ms = 10000) const noexcept;

private:
    NetNs(std::string name, hv::UniqueFd fd) noexcept : name_(std::move(name)), fd_(std::move(fd)) {}
    static void enter_or_abort(int nsfd) noexcept;

    std::string name_;
    hv::UniqueFd fd_;
};

}  // namespace hv::test
