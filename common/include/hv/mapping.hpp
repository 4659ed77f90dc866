// Mapping: sole owner of an mmap()ed range. Layer: common. Any thread; not shared.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "hv/expected.hpp"

namespace hv {

class Mapping {
public:
    Mapping() noexcept = default;
    Mapping(void* addr, std::size_t len) noexcept : addr_(addr), len_(len) {}
    Mapping(Mapping&& o) noexcept
        : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
    Mapping& operator=(Mapping&& o) noexcept {
        if (this != &o) {
            reset();
            addr_ = std::exchange(o.addr_, nullptr);
            len_ = std::exchange(o.len_, 0);
        }
        return *this;
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() { reset(); }

    /// mmap(fd, offset, len) with MAP_SHARED. Errors: the mmap errno.
    static Result<Mapping> map_shared(int fd, std::size_t len, std::uint64_t offset = 0,
                                      int prot = PROT_READ | PROT_WRITE) noexcept {
        void* p = ::mmap(nullptr, len, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
        if (p == MAP_FAILED) {
            return fail_errno();
        }
        return Mapping(p, len);
    }
    /// Private anonymous memory (zeroed).
    static Result<Mapping> anonymous(std::size_t len) noexcept {
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            return fail_errno();
        }
        return Mapping(p, len);
    }

    std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
    template <class T>
    T* as() const noexcept {
        return static_cast<T*>(addr_);
    }
    std::size_t size() const noexcept { return len_; }
    bool valid() const noexcept { return addr_ != nullptr; }
    std::span<std::byte> bytes() const noexcept { return {data(), len_}; }
    void reset() noexcept {
        if (addr_ != nullptr) {
            ::munmap(addr_, len_);
        }
        addr_ = nullptr;
        len_ = 0;
    }

private:
    void* addr_ = nullptr;
    std::size_t len_ = 0;
};

}  // namespace hv
