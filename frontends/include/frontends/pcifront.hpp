// libpcifront: the guest side of the pciif protocol (xen-abi.md §7; design §9): the xenbus
// handshake with hot-plug (Reconfiguring/Reconfigured), enumeration of the backend's virtual
// root buses, config-space access and the MSI/MSI-X ops. The backend is not trusted either:
// every wait is bounded (Linux pcifront's ~2 s per op) and every value it returns is checked.
// Layer: frontends (links hv::rings, hv::hvmin_client, hv::xenbus). Threads: a Device is
// driven by ONE thread.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "hv/expected.hpp"
#include "hv/rings/protocols/pciif.hpp"
#include "hv/strong.hpp"

namespace hv::hvmin {
class Services;
class EventChannelBinding;
}  // namespace hv::hvmin
namespace hv::xs {
class Client;
}

namespace hv::pcifront {

/// Errors of libpcifront itself (category "hv.pcifront").
enum class Errc {
    not_connected = 1,  ///< an op before Connected, or after the bus went away
    timed_out,          ///< the handshake, or an op (op_timeout), did not finish in time
    device_gone,        ///< the device directory was removed
    backend_protocol,   ///< the backend returned something impossible
};
const std::error_category& category() noexcept;
std::error_code make_error_code(Errc e) noexcept;
/// A backend's op.err (XEN_PCI_ERR_* or a Linux -errno) as an error code: category
/// "hv.pciif", value = err.
std::error_code op_error(std::int32_t err) noexcept;
const std::error_category& op_category() noexcept;

/// A virtual PCI address as the frontend sees it.
struct Address {
    std::uint32_t domain = 0;
    std::uint32_t bus = 0;
    std::uint32_t devfn = 0;
    unsigned slot() const noexcept { return (devfn >> 3) & 31; }
    unsigned fn() const noexcept { return devfn & 7; }
    friend auto operator<=>(const Address&, const Address&) = default;
};
/// "dddd:bb:dd.f"
std::string to_string(const Address& a);

struct Options {
    std::chrono::milliseconds op_timeout{2000};  ///< Linux pcifront waits ~2 s per op
    std::chrono::microseconds spin{0};           ///< spin on the flag before sleeping
};

enum class Phase : std::uint8_t { waiting, connected, reconfiguring, closed, dead };

/// A BAR (0..5) or the expansion ROM (6, read-only) of an exported device, mapped into this
/// domain (hv-min I/O memory the backend granted to it). Unmapped in its destructor. When the
/// device is unplugged or the bus closes, the library revokes it first: the range then stays
/// reserved but every access faults (as a removed device's would), and valid() is false.
class BarMapping {
public:
    struct State;
    BarMapping() noexcept = default;
    explicit BarMapping(std::shared_ptr<State> s) noexcept : s_(std::move(s)) {}
    BarMapping(BarMapping&&) noexcept = default;
    BarMapping& operator=(BarMapping&&) noexcept;
    ~BarMapping();
    std::byte* data() const noexcept;
    std::size_t size() const noexcept;
    std::span<std::byte> bytes() const noexcept { return {data(), size()}; }
    bool writable() const noexcept;
    /// False once unplugged/closed (or never mapped).
    bool valid() const noexcept;

private:
    std::shared_ptr<State> s_;
};

class Device {
public:
    /// Prepares the PCI bus `devid` (device/pci/<devid>): reads its backend, watches both
    /// `state` nodes with token watch_token(). `hv` and `xs` must outlive the Device.
    static Result<std::unique_ptr<Device>> create(hvmin::Services& hv, xs::Client& xs,
                                                  std::uint32_t devid = 0, Options o = {});
    ~Device();  ///< Closed; the page's grant revoked; the channel closed.
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    /// Re-reads both sides' state and acts on the state reached (call on each watch event
    /// carrying watch_token(), and after create()).
    Result<void> on_state_change();
    /// Runs on_state_change() on this device's events until Connected. Other events go to
    /// `other`. Errors: Errc::timed_out, device errors.
    Result<void> wait_connected(std::chrono::milliseconds timeout,
                                const std::function<void(const std::string& path,
                                                         const std::string& token)>& other = {});
    Phase phase() const noexcept;

    /// The devices found by the last scan of the backend's roots (connect and Reconfigured).
    const std::vector<Address>& devices() const noexcept;
    /// Bumped whenever devices() changes (hot-plug).
    std::uint64_t generation() const noexcept;

    /// Config-space read: the value masked to `size` bytes. Errors: op_error(err),
    /// Errc::timed_out, Errc::not_connected.
    Result<std::uint32_t> conf_read(const Address& a, unsigned offset, unsigned size);
    Result<void> conf_write(const Address& a, unsigned offset, unsigned size, std::uint32_t value);
    /// Enables MSI; the returned binding is the event channel the device's vector arrives on.
    Result<hvmin::EventChannelBinding> enable_msi(const Address& a);
    Result<void> disable_msi(const Address& a);
    /// Enables MSI-X for the table `entries`; one bound channel per entry, in order.
    Result<std::vector<hvmin::EventChannelBinding>> enable_msix(const Address& a,
                                                                std::span<const std::uint16_t> entries);
    Result<void> disable_msix(const Address& a);
    /// Maps BAR `index` (0..5; 6 = the ROM, read-only) of device `a`: the backend's
    /// `bar-<i>-<index>` handle (i: the slot whose vdev-i is `a`) through hv-min.
    /// Errors: Errc::not_connected, ENODEV (no such device now), ENOENT (that BAR is not
    /// granted: unimplemented, I/O space, or the backend could not), hv-min's errors
    /// (ESTALE: revoked meanwhile), mmap errors.
    Result<BarMapping> map_bar(const Address& a, unsigned index);
    /// One raw op (hostile-backend and hostile-frontend tests): returns the backend's
    /// answer whatever its err. Errors: transport only (timed_out, not_connected).
    Result<rings::xen_pci_op> do_op(const rings::xen_pci_op& op);

    std::string frontend_dir() const;
    std::string backend_dir() const;
    std::string watch_token() const;
    DomId backend_id() const noexcept;

    // ---- test hooks ----
    /// The shared page (a hostile frontend writes it by hand).
    rings::xen_pci_sharedinfo* shared_for_test() noexcept;
    /// Notifies the backend without touching the page.
    void kick_for_test() noexcept;

    struct Impl;

private:
    explicit Device(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::pcifront

template <>
struct std::is_error_code_enum<hv::pcifront::Errc> : std::true_type {};
