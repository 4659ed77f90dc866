// netback multicast filter (mcast.hpp). Layer: L2.
#include "netback/mcast.hpp"

#include <algorithm>
#include <cstring>

namespace hv::net {

bool McastFilter::add(const Addr& a) noexcept {
    const std::lock_guard<std::mutex> lk(mu_);
    if (n_ == kMax) {
        return false;  // Linux: -ENOSPC, "Too many multicast addresses"
    }
    addrs_[n_++] = a;
    return true;
}

void McastFilter::del(const Addr& a) noexcept {
    const std::lock_guard<std::mutex> lk(mu_);
    auto* end = addrs_.begin() + n_;
    auto* it = std::find(addrs_.begin(), end, a);
    if (it != end) {
        std::copy(it + 1, end, it);  // keep the order (Linux's list)
        --n_;
    }
}

std::size_t McastFilter::size() const noexcept {
    const std::lock_guard<std::mutex> lk(mu_);
    return n_;
}

bool McastFilter::accepts(std::span<const std::byte> frame) const noexcept {
    if (frame.size() < 6 || (std::to_integer<std::uint8_t>(frame[0]) & 1U) == 0 || !enabled()) {
        return true;
    }
    Addr dst;
    std::memcpy(dst.data(), frame.data(), dst.size());
    if (std::all_of(dst.begin(), dst.end(), [](std::uint8_t b) { return b == 0xff; })) {
        return true;  // broadcast (Linux filters PACKET_MULTICAST only)
    }
    const std::lock_guard<std::mutex> lk(mu_);
    return std::find(addrs_.begin(), addrs_.begin() + n_, dst) != addrs_.begin() + n_;
}

}  // namespace hv::net
