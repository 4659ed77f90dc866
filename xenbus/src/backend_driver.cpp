// The shared backend loop. See backend_driver.hpp.
#include "xenbus/backend_driver.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "hv/log.hpp"

namespace hv::xenbus {

BackendDriver::BackendDriver(DomId self, xs::Client& xs, const DriverConfig& cfg,
                             std::unique_ptr<DeviceFactory> factory) noexcept
    : self_(self),
      xs_(xs),
      type_(cfg.type),
      name_(cfg.name),
      stats_interval_(cfg.stats_interval),
      close_on_stop_(cfg.close_on_stop),
      factory_(std::move(factory)) {}

BackendDriver::~BackendDriver() { stop(); }

Result<std::unique_ptr<BackendDriver>> BackendDriver::create(
    DomId self, xs::Client& xs, const DriverConfig& cfg, std::unique_ptr<DeviceFactory> factory) {
    return make<BackendDriver>(self, xs, cfg, std::move(factory));
}

Result<void> BackendDriver::init() {
    root_ = domain_path(self_) + "/backend/" + type_;
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    halt_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (stop_fd_.get() < 0 || halt_fd_.get() < 0) {
        return fail_errno();
    }
    auto w = xs_.watch_scoped(root_, name_ + "-root");
    if (!w) {
        return fail(w.error());
    }
    root_watch_.emplace(std::move(*w));
    return {};
}

void BackendDriver::rescan() noexcept {
    auto list = list_backend_devices(xs_, self_, type_);
    if (!list) {
        return;
    }
    for (auto it = devices_.begin(); it != devices_.end();) {
        if (std::find(list->begin(), list->end(), it->first) == list->end()) {
            it = devices_.erase(it);  // directory gone: the destructor disconnects
        } else {
            ++it;
        }
    }
    for (const auto& ref : *list) {
        on_event(backend_dir(self_, type_, ref.frontend, ref.devid) + "/state");
    }
    device_count_.store(devices_.size());
}

bool BackendDriver::is_echo(const std::string& path) const noexcept {
    if (path.find("/statistics") != std::string::npos) {
        return true;  // our own counters
    }
    return path.starts_with(root_) && factory_->is_own_key(path);
}

void BackendDriver::adopt(DeviceRef ref) noexcept {
    const std::string dir = backend_dir(self_, type_, ref.frontend, ref.devid);
    auto st = read_optional(xs_, dir + "/state");
    // A device the toolstack is removing (online=0) is never adopted: only its last state
    // writes remain, and a new device would reopen it.
    auto online = read_optional(xs_, dir + "/online");
    if (!st || !*st || (online && *online && **online == "0")) {
        return;  // not (or no longer) a complete device directory
    }
    auto d = factory_->make_device(ref, halt_fd_.get());
    if (!d) {
        HV_LOG_RL(warn, "%s: device %u/%u: %s", name_.c_str(), ref.frontend.get(), ref.devid,
                  d.error().message().c_str());
        return;
    }
    devices_.emplace(ref, std::move(*d));
}

void BackendDriver::on_event(const std::string& path) noexcept {
    if (is_echo(path)) {
        return;
    }
    std::vector<DeviceRef> touched;
    if (path.starts_with(root_)) {
        auto ref = device_of_backend_path(path, self_, type_);
        if (!ref) {
            rescan();
            return;
        }
        if (devices_.find(*ref) == devices_.end()) {
            adopt(*ref);
            if (devices_.find(*ref) == devices_.end()) {
                return;
            }
        }
        touched.push_back(*ref);
    } else {
        for (const auto& [ref, dev] : devices_) {
            const std::string& fe = dev->frontend_state_path();
            if (path == fe || (path.starts_with(fe) && path[fe.size()] == '/') ||
                dev->watches_frontend_node(path)) {
                touched.push_back(ref);
            }
        }
    }
    for (const auto& ref : touched) {
        auto it = devices_.find(ref);
        if (it != devices_.end() && !it->second->reevaluate()) {
            HV_INFO("%s %s: removed", name_.c_str(), it->second->backend_dir().c_str());
            devices_.erase(it);
        }
    }
    device_count_.store(devices_.size());
}

void BackendDriver::drop_devices() noexcept {
    for (auto& [ref, dev] : devices_) {
        dev->disconnect();
        if (close_on_stop_ == CloseOnStop::yes) {
            auto st = read_state(xs_, dev->backend_dir());
            if (st && *st == XenbusState::XenbusStateClosing) {
                (void)switch_state(xs_, dev->backend_dir(), XenbusState::XenbusStateClosed);
            }
        }
    }
    devices_.clear();
    device_count_.store(0);
}

Result<void> BackendDriver::run() noexcept {
    std::vector<pollfd> fds;
    std::vector<int> dev_fds;
    auto next_stats = std::chrono::steady_clock::now() + stats_interval_;
    Result<void> result;
    while (!stopping_.load(std::memory_order_acquire)) {
        fds.clear();
        fds.push_back({xs_.watch_fd(), POLLIN, 0});
        fds.push_back({stop_fd_.get(), POLLIN, 0});
        fds.push_back({halt_fd_.get(), POLLIN, 0});
        dev_fds.clear();
        for (const auto& [ref, dev] : devices_) {
            dev->pollable(dev_fds);
        }
        for (const int fd : dev_fds) {
            fds.push_back({fd, POLLIN, 0});
        }
        const auto now = std::chrono::steady_clock::now();
        const auto wait_ms = std::clamp<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(next_stats - now).count(), 0,
            1000);
        if (::poll(fds.data(), fds.size(), static_cast<int>(wait_ms)) < 0 && errno != EINTR) {
            result = fail_errno();
            break;
        }
        for (auto& [ref, dev] : devices_) {
            dev->service();
        }
        while (auto ev = xs_.next_event()) {
            on_event(ev->path);
        }
        std::uint64_t v = 0;
        if (::read(halt_fd_.get(), &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
            for (auto& [ref, dev] : devices_) {
                dev->on_halt();
            }
        }
        if (std::chrono::steady_clock::now() >= next_stats) {
            for (auto& [ref, dev] : devices_) {
                dev->write_statistics();
            }
            next_stats = std::chrono::steady_clock::now() + stats_interval_;
        }
        if (!xs_.connected()) {
            HV_ERROR("%s: XenStore connection lost", name_.c_str());
            result = fail_errno(ECONNRESET);
            break;
        }
    }
    drop_devices();
    return result;
}

void BackendDriver::start() {
    thread_ = std::jthread([this] {
        if (auto r = run(); !r) {
            HV_ERROR("%s: %s", name_.c_str(), r.error().message().c_str());
        }
    });
}

void BackendDriver::stop() noexcept {
    stopping_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof one);
    if (thread_.joinable()) {
        thread_.join();
    }
}

}  // namespace hv::xenbus
