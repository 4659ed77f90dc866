// Test exports for the NBD server: a memory-backed disk that completes at once, optionally
// deferring completions until the test releases them (to hold commands in flight).
#pragma once

#include <cstring>
#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "frontends/nbd.hpp"

namespace hv::test {

class MemoryExport final : public nbd::Export {
public:
    MemoryExport(std::string name, std::uint64_t size, nbd::ExportInfo flags = {})
        : info_(std::move(flags)), disk_(size) {
        info_.name = std::move(name);
        info_.size = size;
    }
    nbd::ExportInfo info() const override { return info_; }
    void start(const nbd::Command& c, std::function<void(std::uint32_t)> done) override {
        ++started;
        last = c;
        auto run = [this, c, done = std::move(done)]() {
            if (fail_with != 0) {
                done(fail_with);
                return;
            }
            switch (c.type) {
                case nbd::CmdType::read:
                    std::memcpy(c.data, disk_.data() + c.offset, c.length);
                    break;
                case nbd::CmdType::write:
                    std::memcpy(disk_.data() + c.offset, c.data, c.length);
                    break;
                case nbd::CmdType::trim:
                    std::memset(disk_.data() + c.offset, 0, c.length);
                    break;
                case nbd::CmdType::flush:
                    ++flushes;
                    break;
            }
            done(0);
        };
        if (defer) {
            deferred.push_back(std::move(run));
        } else {
            run();
        }
    }
    /// Completes the oldest (or newest) deferred command.
    void release(bool newest = false) {
        auto f = newest ? std::move(deferred.back()) : std::move(deferred.front());
        if (newest) {
            deferred.pop_back();
        } else {
            deferred.pop_front();
        }
        f();
    }
    std::vector<std::byte>& disk() { return disk_; }

    bool defer = false;
    std::uint32_t fail_with = 0;
    unsigned started = 0;
    unsigned flushes = 0;
    nbd::Command last{};
    std::deque<std::function<void()>> deferred;

private:
    nbd::ExportInfo info_;
    std::vector<std::byte> disk_;
};

}  // namespace hv::test
