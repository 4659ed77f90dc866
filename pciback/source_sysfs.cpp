// Host PCI devices through sysfs: config space with pread/pwrite on
// /sys/bus/pci/devices/BDF/config, BARs from its `resource` table and `resourceN` files.
// pciback only builds one for a device the toolstack made assignable (unbound). VFIO is not
// used (no IOMMU on the machines this session targets). Layer: L3. One thread at a time.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cinttypes>
#include <string>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "hv/unique_fd.hpp"
#include "pciback/source.hpp"

namespace hv::pci {

namespace {

class SysfsSource final : public DeviceSource {
public:
    static Result<std::unique_ptr<DeviceSource>> create(const Bdf& bdf,
                                                        const std::filesystem::path& root) {
        std::unique_ptr<SysfsSource> s(new SysfsSource(bdf));
        s->dir_ = root / to_string(bdf);
        s->config_ = UniqueFd(::open((s->dir_ / "config").c_str(), O_RDWR | O_CLOEXEC));
        if (!s->config_) {
            s->config_ = UniqueFd(::open((s->dir_ / "config").c_str(), O_RDONLY | O_CLOEXEC));
        }
        if (!s->config_) {
            return fail_errno();
        }
        const off_t end = ::lseek(s->config_.get(), 0, SEEK_END);
        s->size_ = end >= 4096 ? 4096U : 256U;
        std::ifstream res(s->dir_ / "resource");
        std::string line;
        for (unsigned i = 0; i <= kRomIndex && std::getline(res, line); ++i) {
            unsigned long long start = 0, last = 0, flags = 0;
            if (std::sscanf(line.c_str(), "%llx %llx %llx", &start, &last, &flags) == 3 &&
                last > start) {
                s->bars_[i].host_addr = start;
                s->bars_[i].size = last - start + 1;
            }
        }
        for (unsigned i = 0; i < 6; ++i) {
            if (s->bars_[i].size != 0) {
                auto raw = s->config_read(0x10 + 4 * i, 4);
                s->bars_[i].flags = raw ? (*raw & 1U ? *raw & 0x3U : *raw & 0xfU) : 0;
            }
        }
        // Memory BARs are granted to the frontend as their resourceN files (mmap-able; I/O
        // BARs and the ROM file are not).
        for (unsigned i = 0; i < 6; ++i) {
            if (s->bars_[i].size != 0 && !s->bars_[i].is_io()) {
                const auto file = s->dir_ / ("resource" + std::to_string(i));
                s->res_[i] = UniqueFd(::open(file.c_str(), O_RDWR | O_CLOEXEC));
            }
        }
        auto cmd = s->config_read(0x04, 2);
        s->initial_command_ = cmd ? static_cast<std::uint16_t>(*cmd) : 0;
        return std::unique_ptr<DeviceSource>(std::move(s));
    }

    Bdf bdf() const noexcept override { return bdf_; }
    std::string describe() const override { return "host"; }
    unsigned config_size() const noexcept override { return size_; }

    Result<std::uint32_t> config_read(unsigned offset, unsigned size) noexcept override {
        std::uint32_t v = 0;
        if (size == 0 || size > 4 || offset + size > size_) {
            return fail_errno(EINVAL);
        }
        const ssize_t n = ::pread(config_.get(), &v, size, offset);
        if (n != static_cast<ssize_t>(size)) {
            return fail_errno(n < 0 ? errno : EIO);
        }
        return v;
    }

    Result<void> config_write(unsigned offset, unsigned size, std::uint32_t value) noexcept override {
        if (size == 0 || size > 4 || offset + size > size_) {
            return fail_errno(EINVAL);
        }
        const ssize_t n = ::pwrite(config_.get(), &value, size, offset);
        if (n != static_cast<ssize_t>(size)) {
            return fail_errno(n < 0 ? errno : EIO);
        }
        return {};
    }

    BarInfo bar(unsigned i) const noexcept override { return i <= kRomIndex ? bars_[i] : BarInfo{}; }
    int bar_fd(unsigned i) const noexcept override { return i < 6 ? res_[i].get() : -1; }

    Result<void> reset() noexcept override {
        // The command register back to what it was at export (decoding and bus mastering off
        // as the host left them); a function-level reset is the host driver's business.
        return config_write(0x04, 2, initial_command_);
    }

private:
    explicit SysfsSource(const Bdf& b) : bdf_(b) {}
    Bdf bdf_;
    std::filesystem::path dir_;
    UniqueFd config_;
    unsigned size_ = 256;
    std::array<BarInfo, kRomIndex + 1> bars_{};
    std::array<UniqueFd, 6> res_{};  // resourceN of memory BARs (-1: none or not openable)
    std::uint16_t initial_command_ = 0;
};

}  // namespace

Result<std::unique_ptr<DeviceSource>> make_sysfs_source(const Bdf& bdf,
                                                        const std::filesystem::path& root) {
    return SysfsSource::create(bdf, root);
}

}  // namespace hv::pci
