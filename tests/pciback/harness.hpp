// pciback end-to-end harness: the real hv-min core in-process (with its XenStore), the real
// pciback Backend (dom0, its own hv-min and XenStore connections) hosting emulated devices,
// and frontend domains that are real hv-min domains whose hypercall channel the test attaches
// in-process (hv_hypercall_donor), so libpcifront (or a hostile frontend) runs in the test.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frontends/pcifront.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"
#include "hvmin/toolstack.hpp"
#include "pciback/device.hpp"
#include "temp_dir.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::pci::test {

using namespace std::chrono_literals;
using xenbus::XenbusState;

/// A host device in a fake sysfs tree: root/<bdf>/config (256 bytes: `config` zero-padded) and
/// root/<bdf>/resource (`resource`, the kernel's "start end flags" lines). Returns its directory.
std::filesystem::path fake_host_device(const std::filesystem::path& root, const std::string& bdf,
                                       const std::string& config, const std::string& resource);

/// Backend options hosting the emulated model at each BDF.
BackendOptions emulating(std::initializer_list<const char*> bdfs);

struct Env {
    explicit Env(std::optional<BackendOptions> backend = emulating({"0001:00:02.0"}));
    ~Env();
    void start_backend(BackendOptions opt);
    void stop_backend();

    std::string bdir(DomId fe) const;
    std::string fdir(DomId fe) const;
    /// The toolstack's pci = [...]: backend/pci/<fe>/0 with num_devs, dev-i, key-i, opts-i,
    /// state-i = 1 (xen-abi §7.3). Each device is first made assignable (what
    /// `hvctl pci-assignable-add` does) unless `assignable` is false.
    void attach_bus(DomId fe, const std::vector<std::string>& bdfs,
                    const std::vector<std::string>& opts = {}, bool assignable = true);
    /// Hot-plug attach (§7.4): dev-N..., state-N = 1, num_devs = N+1, backend state = 7.
    void hotplug_add(DomId fe, const std::string& bdf, const std::string& opts = "");
    /// Records a BDF ("dddd:bb:dd.f") as assignable.
    void make_assignable_bdf(const std::string& bdf);
    /// Hot-plug detach of slot i: state-i = 5, backend state = 7.
    void hotplug_remove(DomId fe, unsigned i);
    /// Marks a host device assignable in the registry (what pci-assignable-add writes).
    void make_assignable(const std::string& key, const std::string& driver = "");
    /// Waits (bounded, on a watch) until `path` reads `value`.
    bool wait_value(const std::string& path, const std::string& value,
                    std::chrono::milliseconds timeout = 10s);
    std::string read(const std::string& path);

    hv::test::TempDir dir{"pciback-e2e"};
    std::unique_ptr<hvmin::Core> core;
    std::optional<hvmin::Toolstack> ts;
    std::unique_ptr<xs::Client> xs;  // the toolstack's (dom0) XenStore connection
    std::optional<hvmin::Services> be_svc;
    std::unique_ptr<xs::Client> be_xs;
    std::unique_ptr<Backend> backend;
};

/// A frontend domain, attached in this process.
class Guest {
public:
    Guest(Env& env, const std::string& name);
    ~Guest();
    /// The domain dies (its program exits); waits until hv-min has released it.
    void kill();
    /// libpcifront on device/pci/0, connected (REQUIREs success).
    std::unique_ptr<pcifront::Device> connect(pcifront::Options o = {});
    /// The guest's event loop: state events to `front` until the backend's state reads
    /// `until` and the frontend is Connected (REQUIREs, 10 s).
    void drive(pcifront::Device& front, const std::string& until);
    /// Hands `fd` to the domain's own process (the donor), which keeps it open (`tag` 'K')
    /// or maps it and closes it ('M'): a guest that holds on to a BAR.
    void give_to_domain(int fd, char tag);

    Env& env;
    DomId domid{0};
    std::optional<hvmin::Services> svc;
    std::unique_ptr<xs::Client> xs;

private:
    UniqueFd donor_;
};

/// The first (and usually only) device a test assigns: 0000:00:00.0 as the frontend sees it.
inline const pcifront::Address kDev0{0, 0, 0};

}  // namespace hv::pci::test
