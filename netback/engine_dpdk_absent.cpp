// The DPDK host side in a build without DPDK (pkg-config found no libdpdk): every port fails
// with EOPNOTSUPP and says why, so a vif asking for DPDK is refused with a clear message.
#include <cerrno>

#include "hv/log.hpp"
#include "netback/dpdk.hpp"

namespace hv::net {

bool dpdk_built() noexcept {
    return false;
}
std::string dpdk_default_eal_args() {
    return {};
}
Result<void> dpdk_set_eal_args(std::string) {
    return fail_errno(EOPNOTSUPP);
}
bool dpdk_eal_running() noexcept {
    return false;
}
std::string vhost_server_args(const std::string& socket_path, unsigned queues) {
    return "iface=" + socket_path + ",queues=" + std::to_string(queues) + ",client=0";
}

struct DpdkPort::Impl {
    DpdkPortConfig cfg;
};

Result<std::unique_ptr<DpdkPort>> DpdkPort::open(const DpdkPortConfig& cfg) {
    HV_WARN(
        "netback: DPDK port %s asked for, but this netback was built without DPDK "
        "(install libdpdk-dev and rebuild)",
        cfg.name.c_str());
    return fail_errno(EOPNOTSUPP);
}
DpdkPort::DpdkPort(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
DpdkPort::~DpdkPort() = default;
Result<std::unique_ptr<NetEngine>> DpdkPort::make_engine(unsigned, Features) {
    return fail_errno(EOPNOTSUPP);
}
const std::string& DpdkPort::name() const noexcept {
    return impl_->cfg.name;
}
std::uint16_t DpdkPort::port_id() const noexcept {
    return 0;
}
bool DpdkPort::link_up() const noexcept {
    return false;
}
int DpdkPort::link_fd() const noexcept {
    return -1;
}

}  // namespace hv::net
