// pciback control plane: Host (what the buses share), Backend (the shared xenbus::BackendDriver)
// and PciDevice (device.hpp). Layer: L2. The driver's control thread.
#include "pciback/device.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "hv/log.hpp"

namespace hv::pci {

using xenbus::errno_of;
using xenbus::write_keys;
using xenbus::XenbusState;
using namespace hv::rings;

namespace {

constexpr std::string_view kType = "pci";
constexpr std::string_view kFrontToken = "pciback-fe";

/// `permissive=1` among the comma-separated options of opts-i (others are libxl's).
bool permissive_of(std::string_view opts) {
    while (!opts.empty()) {
        const auto comma = opts.find(',');
        const std::string_view item = opts.substr(0, comma);
        if (item == "permissive=1") {
            return true;
        }
        if (comma == std::string_view::npos) {
            break;
        }
        opts.remove_prefix(comma + 1);
    }
    return false;
}

}  // namespace

Result<EmulatedSpec> parse_emulate(std::string_view arg) {
    const auto eq = arg.find('=');
    if (eq == std::string_view::npos) {
        return fail_errno(EINVAL);
    }
    auto bdf = parse_bdf(arg.substr(0, eq));
    if (!bdf) {
        return fail(bdf.error());
    }
    std::string_view rest = arg.substr(eq + 1);
    const auto comma = rest.find(',');
    EmulatedSpec s{*bdf, std::string(rest.substr(0, comma)),
                   comma == std::string_view::npos ? std::string() : std::string(rest.substr(comma + 1))};
    if (s.model.empty()) {
        return fail_errno(EINVAL);
    }
    // Build one now so a bad model or option is refused at start-up.
    auto probe = make_emulated_source(s.bdf, s.model, s.opts);
    if (!probe) {
        return fail(probe.error());
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// PciDevice

PciDevice::PciDevice(Host& be, xenbus::DeviceRef ref) : be_(be), ref_(ref) {}

PciDevice::~PciDevice() {
    disconnect();
    while (!exports_.empty()) {
        unexport(exports_.back()->phys);
    }
}

Result<std::unique_ptr<PciDevice>> PciDevice::create(Host& be, xenbus::DeviceRef ref) {
    std::unique_ptr<PciDevice> d(new PciDevice(be, ref));
    d->bdir_ = xenbus::backend_dir(be.hv_.domid(), kType, ref.frontend, ref.devid);
    auto fe = be.xs_.read(d->bdir_ + "/frontend");
    if (!fe) {
        return fail(fe.error());
    }
    d->fdir_ = *fe;
    d->fe_state_path_ = d->fdir_ + "/state";
    auto w = be.xs_.watch_scoped(d->fe_state_path_, kFrontToken);
    if (!w) {
        return fail(w.error());
    }
    d->fe_watch_.emplace(std::move(*w));
    return d;
}

Exported* PciDevice::find(std::uint32_t domain, std::uint32_t bus, std::uint32_t devfn) noexcept {
    for (auto& e : exports_) {
        if (e->virt.domain == domain && e->virt.bus == bus && e->virt.devfn() == devfn) {
            return e.get();
        }
    }
    return nullptr;
}

Result<std::uint32_t> PciDevice::bind(Exported& dev, unsigned vector) {
    // The frontend binds this port with bind_interdomain(backend, port): our "PIRQ".
    auto p = be_.hv_.evtchn().alloc_unbound(ref_.frontend);
    if (!p) {
        return fail(p.error());
    }
    const std::uint32_t port = p->port().get();
    vectors_.push_back(Vector{&dev, vector, std::move(*p)});
    return port;
}

void PciDevice::release(Exported& dev) noexcept {
    std::erase_if(vectors_, [&](const Vector& v) { return v.dev == &dev; });
}

void PciDevice::pollable(std::vector<int>& out) const {
    if (evtchn_.valid()) {
        out.push_back(evtchn_.fd());
    }
    for (const auto& e : exports_) {
        if (const int fd = e->src->interrupt_fd(); fd >= 0) {
            out.push_back(fd);
        }
    }
}

void PciDevice::service() noexcept {
    for (auto& e : exports_) {
        if (e->src->interrupt_fd() < 0) {
            continue;
        }
        pollfd p{e->src->interrupt_fd(), POLLIN, 0};
        if (::poll(&p, 1, 0) != 1) {
            continue;
        }
        const std::uint64_t pending = e->src->take_interrupts();
        for (auto& v : vectors_) {
            if (v.dev == e.get() && v.vector < 64 && (pending >> v.vector) & 1U) {
                (void)v.port.notify();
            }
        }
    }
    if (!shared_.valid() || !evtchn_.valid()) {
        return;
    }
    (void)evtchn_.ack();
    auto* sh = reinterpret_cast<xen_pci_sharedinfo*>(shared_.data());
    // ORDER: acquire pairs with the frontend's wmb + set_bit of XEN_PCIF_active: the op it
    // wrote is visible once we see the flag.
    const std::uint32_t flags = std::atomic_ref(sh->flags).load(std::memory_order_acquire);
    if ((flags & XEN_PCIF_active) == 0) {
        return;
    }
    // GUEST: copy the op once; only the copy is validated and used.
    xen_pci_op op;
    std::memcpy(&op, const_cast<const xen_pci_op*>(&sh->op), sizeof op);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    const std::uint32_t nr = op.cmd == XEN_PCI_OP_enable_msix ? op.value : 0;
    execute_op(op, *this, this);
    sh->op.err = op.err;
    sh->op.value = op.value;
    if (op.err == XEN_PCI_ERR_success && nr != 0 && nr <= SH_INFO_MAX_VEC) {
        for (std::uint32_t i = 0; i < nr; ++i) {
            sh->op.msix_entries[i].vector = op.msix_entries[i].vector;
        }
    }
    // ORDER: release: the results are visible before the frontend sees the flag clear.
    std::atomic_ref(sh->flags).fetch_and(~XEN_PCIF_active, std::memory_order_release);
    (void)evtchn_.notify();
}

void PciDevice::disconnect() noexcept {
    vectors_.clear();
    evtchn_ = {};
    if (shared_.valid()) {
        (void)shared_.reset();
    }
    // Back to the state at export: MSI off, decoding as the host left it, sizing disarmed.
    for (auto& e : exports_) {
        e->cs->reset();
    }
}

void PciDevice::fail_device(int err, const std::string& msg) noexcept {
    HV_LOG_RL(warn, "pciback %s: %s", bdir_.c_str(), msg.c_str());
    auto st = xenbus::read_optional(be_.xs_, bdir_ + "/state");
    if (st && !*st) {
        disconnect();
        return;
    }
    xenbus::report_error(be_.xs_, be_.hv_.domid(), bdir_, err, msg);
    disconnect();
    failed_ = true;
    (void)xenbus::switch_state(be_.xs_, bdir_, XenbusState::XenbusStateClosing);
}

Result<void> PciDevice::export_slot(unsigned i) {
    auto& xs = be_.xs_;
    const std::string idx = std::to_string(i);
    auto dev = xs.read(bdir_ + "/dev-" + idx);
    if (!dev) {
        return fail(dev.error());
    }
    auto phys = parse_bdf(*dev);
    if (!phys) {
        return fail(phys.error());
    }
    for (const auto& e : exports_) {
        if (e->phys == *phys) {
            // Already ours (a repeated attach request): just confirm it.
            auto kv = bar_keys(*e);
            kv.emplace_back("vdev-" + idx, to_vdev_string(e->virt));
            kv.emplace_back("state-" + idx, "3");
            HV_TRY(write_keys(xs, bdir_, kv));
            return {};
        }
    }
    std::string why;
    auto src = be_.open_source(*phys, why);
    if (!src) {
        return fail(src.error());
    }
    auto opts = xenbus::read_optional(xs, bdir_ + "/opts-" + idx);
    ConfigOptions co;
    co.permissive = opts && *opts && permissive_of(**opts);
    auto e = std::make_unique<Exported>();
    e->index = i;
    e->phys = *phys;
    // SPEC: §7.3 vpci: bus 0000:00, first free slot; functions of one physical device
    // share a slot; the function number is kept.
    std::optional<unsigned> slot;
    for (const auto& o : exports_) {
        if (o->phys.domain == phys->domain && o->phys.bus == phys->bus && o->phys.dev == phys->dev) {
            slot = o->virt.dev;
        }
    }
    for (unsigned s = 0; !slot && s < 32; ++s) {
        if (std::none_of(exports_.begin(), exports_.end(),
                         [&](const auto& o) { return o->virt.dev == s; })) {
            slot = s;
        }
    }
    if (!slot) {
        be_.in_use_.erase(*phys);
        return fail_errno(ENOSPC);
    }
    e->virt = Bdf{0, 0, static_cast<std::uint8_t>(*slot), phys->fn};
    e->src = std::move(*src);
    e->cs = std::make_unique<ConfigSpace>(*e->src, co);
    const std::string vdev = to_vdev_string(e->virt);
    HV_INFO("pciback %s: exporting %s (%s%s) as %s", bdir_.c_str(), dev->c_str(),
            e->src->describe().c_str(), co.permissive ? ", permissive" : "", vdev.c_str());
    grant_bars(*e);
    auto kv = bar_keys(*e);
    kv.emplace_back("vdev-" + idx, vdev);
    kv.emplace_back("state-" + idx, "3");
    exports_.push_back(std::move(e));
    auto w = write_keys(xs, bdir_, kv);
    if (!w) {
        unexport(*phys);
        return fail(w.error());
    }
    return {};
}

void PciDevice::grant_bars(Exported& e) noexcept {
    // SPEC: design §8 "BARs mapped into the frontend": each memory BAR (and the ROM, read-only)
    // becomes an hv-min I/O-memory grant for this frontend alone.
    for (unsigned n = 0; n <= kRomIndex; ++n) {
        const BarInfo b = e.src->bar(n);
        const int fd = e.src->bar_fd(n);
        if (b.size == 0 || b.is_io() || fd < 0) {
            continue;
        }
        auto h = be_.hv_.iomem().grant(fd, b.size, ref_.frontend, n == kRomIndex);
        if (!h) {
            HV_WARN("pciback %s: %s BAR %u not granted to dom%u: %s", bdir_.c_str(),
                    to_string(e.phys).c_str(), n, ref_.frontend.get(), h.error().message().c_str());
            continue;
        }
        e.bar_handles[n] = *h;
    }
}

std::vector<std::pair<std::string, std::string>> PciDevice::bar_keys(const Exported& e) const {
    std::vector<std::pair<std::string, std::string>> kv;
    for (unsigned n = 0; n < e.bar_handles.size(); ++n) {
        if (e.bar_handles[n] != 0) {
            kv.emplace_back("bar-" + std::to_string(e.index) + "-" + std::to_string(n),
                            std::to_string(e.bar_handles[n]));
        }
    }
    return kv;
}

void PciDevice::revoke_bars(Exported& e) noexcept {
    for (unsigned n = 0; n < e.bar_handles.size(); ++n) {
        if (e.bar_handles[n] == 0) {
            continue;
        }
        // hv-min verifies that the frontend let go; one that kept it is destroyed.
        // ESTALE: hv-min ended it already (the frontend died).
        if (auto r = be_.hv_.iomem().revoke(std::exchange(e.bar_handles[n], 0));
            !r && r.error() != std::error_code(ESTALE, std::system_category())) {
            HV_WARN("pciback %s: revoking BAR %u of %s: %s", bdir_.c_str(), n,
                    to_string(e.phys).c_str(), r.error().message().c_str());
        }
        (void)be_.xs_.rm(bdir_ + "/bar-" + std::to_string(e.index) + "-" + std::to_string(n));
    }
    // The next assignee gets memory no former one can reach.
    if (auto r = e.src->renew_memory(); !r) {
        HV_WARN("pciback %s: %s: new BAR memory: %s", bdir_.c_str(), to_string(e.phys).c_str(),
                r.error().message().c_str());
    }
}

void PciDevice::unexport(Bdf phys) noexcept {
    for (auto it = exports_.begin(); it != exports_.end(); ++it) {
        if ((*it)->phys == phys) {
            release(**it);
            revoke_bars(**it);
            // Reset to the initial config state before the device goes back to the host.
            (void)(*it)->src->reset();
            HV_INFO("pciback %s: %s released", bdir_.c_str(), to_string(phys).c_str());
            exports_.erase(it);
            be_.in_use_.erase(phys);
            return;
        }
    }
}

Result<void> PciDevice::publish_roots() {
    // Every exported device sits on virtual bus 0000:00.
    return write_keys(be_.xs_, bdir_, {{"root_num", "1"}, {"root-0", "0000:00"}})
        .transform([](bool) {});
}

Result<void> PciDevice::setup_backend() {
    auto n = xenbus::read_uint(be_.xs_, bdir_ + "/num_devs", 256);
    if (!n) {
        return fail(n.error());
    }
    for (unsigned i = 0; i < *n; ++i) {
        // A slot the toolstack is detaching (5) or already closed (6) is not exported.
        auto st = xenbus::read_uint(be_.xs_, bdir_ + "/state-" + std::to_string(i), 16);
        if (st && (*st == XenbusState::XenbusStateClosing || *st == XenbusState::XenbusStateClosed)) {
            continue;
        }
        HV_TRY(export_slot(i));
    }
    HV_TRY(publish_roots());
    exported_ = true;
    return {};
}

Result<void> PciDevice::reconfigure() {
    auto n = xenbus::read_uint(be_.xs_, bdir_ + "/num_devs", 256);
    if (!n) {
        return fail(n.error());
    }
    for (unsigned i = 0; i < *n; ++i) {
        const std::string idx = std::to_string(i);
        auto st = xenbus::read_uint(be_.xs_, bdir_ + "/state-" + idx, 16);
        if (!st) {
            continue;
        }
        if (*st == XenbusState::XenbusStateInitialising) {
            HV_TRY(export_slot(i));
        } else if (*st == XenbusState::XenbusStateClosing) {
            auto dev = be_.xs_.read(bdir_ + "/dev-" + idx);
            auto phys = dev ? parse_bdf(*dev) : Result<Bdf>(fail(dev.error()));
            if (phys) {
                unexport(*phys);
            }
            HV_TRY(write_keys(be_.xs_, bdir_, {{"state-" + idx, "6"}}));
        }
    }
    return publish_roots();
}

Result<void> PciDevice::connect() {
    auto& xs = be_.xs_;
    // GUEST: every frontend key may hold anything.
    auto magic = xenbus::read_optional(xs, fdir_ + "/magic");
    if (!magic) {
        return fail(magic.error());
    }
    if (!*magic || **magic != XEN_PCI_MAGIC) {
        HV_LOG_RL(warn, "pciback %s: frontend magic %s, expected %s", bdir_.c_str(),
                  *magic ? (*magic)->c_str() : "(none)", XEN_PCI_MAGIC.data());
        return fail_errno(EFAULT);
    }
    auto ref = xenbus::read_uint(xs, fdir_ + "/pci-op-ref", UINT32_MAX);
    auto port = xenbus::read_uint(xs, fdir_ + "/event-channel", UINT32_MAX);
    if (!ref || !port) {
        return fail(!ref ? ref.error() : port.error());
    }
    auto m = be_.hv_.grants().map(ref_.frontend, GrantRef(static_cast<std::uint32_t>(*ref)), false);
    if (!m) {
        return fail(m.error());
    }
    auto ch = be_.hv_.evtchn().bind_interdomain(ref_.frontend,
                                                EvtchnPort(static_cast<std::uint32_t>(*port)));
    if (!ch) {
        return fail(ch.error());
    }
    shared_ = std::move(*m);
    evtchn_ = std::move(*ch);
    HV_INFO("pciback %s: connected (%zu device(s))", bdir_.c_str(), exports_.size());
    return {};
}

bool PciDevice::reevaluate() noexcept {
    auto& xs = be_.xs_;
    auto bst = xenbus::read_optional(xs, bdir_ + "/state");
    if (!bst) {
        return true;
    }
    if (!*bst) {
        return false;  // the toolstack removed the directory: the destructor releases all
    }
    auto bstate = xenbus::read_state(xs, bdir_);
    auto fstate = xenbus::read_state(xs, fdir_);
    if (!bstate || !fstate) {
        return true;
    }
    auto online_s = xenbus::read_optional(xs, bdir_ + "/online");
    const bool online = online_s && *online_s && **online_s == "1";
    const bool closing = *bstate == XenbusState::XenbusStateClosing ||
                         *bstate == XenbusState::XenbusStateClosed;

    if (!probed_ && !failed_ && !closing) {
        (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateInitWait);
        bstate = XenbusState::XenbusStateInitWait;
        probed_ = true;
    }
    // SPEC: §7.4: with num_devs present, export every slot, publish roots, → Initialised.
    if (!failed_ && !exported_ && *bstate == XenbusState::XenbusStateInitWait) {
        auto n = xenbus::read_optional(xs, bdir_ + "/num_devs");
        if (n && *n) {
            if (auto r = setup_backend(); !r) {
                fail_device(errno_of(r.error()), "exporting devices: " + r.error().message());
                return true;
            }
            (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateInitialised);
            bstate = XenbusState::XenbusStateInitialised;
        }
    }

    switch (*fstate) {
        case XenbusState::XenbusStateInitialised:
        case XenbusState::XenbusStateConnected:
            if (failed_ || !exported_ || closing) {
                break;
            }
            if (*bstate == XenbusState::XenbusStateReconfigured &&
                *fstate == XenbusState::XenbusStateConnected) {
                // SPEC: §7.4: the frontend rescanned; hot-plug is over.
                (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateConnected);
                break;
            }
            if (connected() || *bstate == XenbusState::XenbusStateReconfiguring) {
                break;
            }
            disconnect();
            if (auto c = connect(); !c) {
                fail_device(errno_of(c.error()), c.error() == std::error_code(EFAULT, std::system_category())
                                                     ? "version mismatch with pcifront (magic)"
                                                     : "connecting: " + c.error().message());
                break;
            }
            xenbus::clear_error(xs, be_.hv_.domid(), bdir_);
            (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateConnected);
            break;
        case XenbusState::XenbusStateReconfiguring:
            if (!failed_ && *bstate == XenbusState::XenbusStateReconfiguring) {
                if (auto r = reconfigure(); !r) {
                    fail_device(errno_of(r.error()), "reconfiguring: " + r.error().message());
                    break;
                }
                (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateReconfigured);
            }
            break;
        case XenbusState::XenbusStateClosing:
            disconnect();
            (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateClosing);
            break;
        case XenbusState::XenbusStateClosed:
        case XenbusState::XenbusStateUnknown:  // the frontend directory is gone
            disconnect();
            (void)xenbus::switch_state(xs, bdir_, XenbusState::XenbusStateClosed);
            if (!online) {
                return false;
            }
            break;
        case XenbusState::XenbusStateInitialising:
            // The frontend starts over after our Closed: export again, wait for it.
            if (online && *bstate == XenbusState::XenbusStateClosed) {
                disconnect();
                failed_ = false;
                (void)xenbus::switch_state(xs, bdir_, exported_ ? XenbusState::XenbusStateInitialised
                                                               : XenbusState::XenbusStateInitWait);
            }
            break;
        default:
            break;
    }
    return true;
}

void PciDevice::write_statistics() noexcept {
    std::vector<std::pair<std::string, std::string>> kv;
    for (const auto& e : exports_) {
        const std::string name = registry_key(e->virt);
        auto& last = last_stats_[name];
        if (last == e->counters) {
            continue;
        }
        const std::string d = "statistics/" + name + "/";
        kv.emplace_back(d + "conf_read", std::to_string(e->counters.conf_read));
        kv.emplace_back(d + "conf_write", std::to_string(e->counters.conf_write));
        kv.emplace_back(d + "msi", std::to_string(e->counters.msi));
        kv.emplace_back(d + "msix", std::to_string(e->counters.msix));
        kv.emplace_back(d + "errors", std::to_string(e->counters.errors));
        last = e->counters;
    }
    if (!kv.empty()) {
        (void)write_keys(be_.xs_, bdir_, kv);
    }
}

// ---------------------------------------------------------------------------------------------
// Host and Backend

Host::~Host() {
    for (const auto& e : opt_.emulated) {
        // A driver domain may not (EACCES): its entries are the toolstack's, gone at destroy.
        (void)xs_.rm(std::string(kEmulatedDir) + "/" + registry_key(e.bdf));
    }
}

Result<void> Host::publish_emulated() {
    for (const auto& e : opt_.emulated) {
        // So the toolstack can tell an emulated device from a missing one. A driver domain's
        // entries are written by the toolstack (`hvctl create`), readable by it and not
        // writable: found there, nothing to do; EACCES until then (main.cpp waits).
        const std::string path = std::string(kEmulatedDir) + "/" + registry_key(e.bdf);
        if (auto v = xs_.read(path); v && *v == e.model) {
            continue;
        }
        HV_TRY(xs_.write(path, e.model));
    }
    return {};
}

Result<std::unique_ptr<xenbus::BackendDevice>> Host::make_device(xenbus::DeviceRef ref, int) {
    return xenbus::upcast<xenbus::BackendDevice>(PciDevice::create(*this, ref));
}

bool Host::is_own_key(std::string_view path) const noexcept {
    // Echoes of keys only pciback writes.
    const std::string_view leaf = path.substr(path.rfind('/') + 1);
    return leaf.starts_with("vdev-") || leaf.starts_with("root-") || leaf == "root_num";
}

Result<std::unique_ptr<DeviceSource>> Host::open_source(const Bdf& bdf, std::string& why) {
    if (in_use_.count(bdf) != 0) {
        why = "in use by another domain";
        return fail_errno(EBUSY);
    }
    // SPEC: the registry: only devices the toolstack made assignable, emulated ones included
    // (Linux pciback refuses a device it has not seized).
    auto a = xenbus::read_optional(xs_, std::string(kAssignableDir) + "/" + registry_key(bdf));
    if (!a || !*a) {
        why = "not assignable";
        return fail_errno(ENODEV);
    }
    Result<std::unique_ptr<DeviceSource>> src = fail_errno(ENODEV);
    const auto em = std::find_if(opt_.emulated.begin(), opt_.emulated.end(),
                                 [&](const EmulatedSpec& e) { return e.bdf == bdf; });
    if (em != opt_.emulated.end()) {
        src = make_emulated_source(bdf, em->model, em->opts);
    } else {
        src = make_sysfs_source(bdf, opt_.sysfs_root);
    }
    if (src) {
        in_use_.insert(bdf);
    }
    return src;
}

Result<std::unique_ptr<Backend>> Backend::create(hvmin::Services& hv, xs::Client& xs,
                                                 BackendOptions opt) {
    const xenbus::DriverConfig cfg{.type = kType,
                                   .name = "pciback",
                                   .stats_interval = opt.stats_interval,
                                   .close_on_stop = xenbus::CloseOnStop::no};
    auto host = std::make_unique<Host>(hv, xs, std::move(opt));
    Host& h = *host;
    auto b = make<Backend>(hv.domid(), xs, cfg, std::move(host));
    if (b) {
        HV_TRY(h.publish_emulated());  // on failure, b's Host removes what it wrote
    }
    return b;
}

}  // namespace hv::pci
