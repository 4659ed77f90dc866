// libpcifront (see include/frontends/pcifront.hpp). Layer: frontends. One thread per Device.
#include "frontends/pcifront.hpp"

#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <optional>

#include "hv/log.hpp"
#include "hv/spin.hpp"
#include "hvmin/client.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::pcifront {

struct BarMapping::State {
    Address addr;
    void* base = nullptr;
    std::size_t len = 0;
    bool writable = false;
    bool revoked = false;
    ~State() {
        if (base != nullptr) {
            ::munmap(base, len);
        }
    }
    /// The BAR's pages are replaced by an inaccessible reservation in one step (no window in
    /// which another mapping could take the range while the program still holds the pointer).
    void revoke() noexcept {
        if (base != nullptr && !revoked) {
            void* p = ::mmap(base, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                             -1, 0);
            if (p == MAP_FAILED) {
                ::munmap(base, len);  // never keep the BAR mapped
                base = nullptr;
            }
            revoked = true;
        }
    }
};

BarMapping& BarMapping::operator=(BarMapping&&) noexcept = default;
BarMapping::~BarMapping() = default;
std::byte* BarMapping::data() const noexcept {
    return s_ ? static_cast<std::byte*>(s_->base) : nullptr;
}
std::size_t BarMapping::size() const noexcept { return s_ ? s_->len : 0; }
bool BarMapping::writable() const noexcept { return s_ && s_->writable && !s_->revoked; }
bool BarMapping::valid() const noexcept { return s_ && s_->base != nullptr && !s_->revoked; }

namespace {

using namespace hv::rings;
using xenbus::XenbusState;

constexpr unsigned kMaxRoots = 32;

class Category : public std::error_category {
public:
    const char* name() const noexcept override { return "hv.pcifront"; }
    std::string message(int c) const override {
        switch (static_cast<Errc>(c)) {
            case Errc::not_connected: return "PCI bus not connected";
            case Errc::timed_out: return "pciback did not answer in time";
            case Errc::device_gone: return "PCI bus removed";
            case Errc::backend_protocol: return "pciback protocol error";
        }
        return "unknown pcifront error";
    }
};

class OpCategory : public std::error_category {
public:
    const char* name() const noexcept override { return "hv.pciif"; }
    std::string message(int c) const override {
        switch (c) {
            case XEN_PCI_ERR_dev_not_found: return "XEN_PCI_ERR_dev_not_found";
            case XEN_PCI_ERR_invalid_offset: return "XEN_PCI_ERR_invalid_offset";
            case XEN_PCI_ERR_access_denied: return "XEN_PCI_ERR_access_denied";
            case XEN_PCI_ERR_not_implemented: return "XEN_PCI_ERR_not_implemented";
            case XEN_PCI_ERR_op_failed: return "XEN_PCI_ERR_op_failed";
            default: return "pciback error " + std::to_string(c) + " (" + std::strerror(-c) + ")";
        }
    }
};

/// "%x:%x:%x.%x" (vdev-i). GUEST: the backend wrote it.
std::optional<Address> parse_vdev(const std::string& s) {
    unsigned d = 0, b = 0, sl = 0, f = 0;
    char tail = 0;
    if (std::sscanf(s.c_str(), "%x:%x:%x.%x%c", &d, &b, &sl, &f, &tail) != 4 || d > 0xffff ||
        b > 0xff || sl > 31 || f > 7) {
        return std::nullopt;
    }
    return Address{d, b, (sl << 3) | f};
}

/// "%x:%x" (root-j). GUEST: the backend wrote it.
bool parse_root(const std::string& s, std::uint32_t& domain, std::uint32_t& bus) {
    unsigned d = 0, b = 0;
    char tail = 0;
    if (std::sscanf(s.c_str(), "%x:%x%c", &d, &b, &tail) != 2 || d > 0xffff || b > 0xff) {
        return false;
    }
    domain = d;
    bus = b;
    return true;
}

}  // namespace

const std::error_category& category() noexcept {
    static const Category c;
    return c;
}
std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), category()}; }
const std::error_category& op_category() noexcept {
    static const OpCategory c;
    return c;
}
std::error_code op_error(std::int32_t err) noexcept { return {err, op_category()}; }

std::string to_string(const Address& a) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", a.domain, a.bus, a.slot(), a.fn());
    return buf;
}

struct Device::Impl {
    Impl(hvmin::Services& h, xs::Client& x) : hv(h), xs(x) {}
    hvmin::Services& hv;
    xs::Client& xs;
    Options opt;
    std::uint32_t devid = 0;
    std::string fdir, bdir, token;
    DomId backend{0};
    Phase phase = Phase::waiting;
    bool set_up = false;
    std::uint64_t generation = 0;
    std::vector<Address> devices;
    std::vector<xs::ScopedWatch> watches;
    xen_pci_sharedinfo* sh = nullptr;
    GrantRef ref{0};
    std::optional<std::uint64_t> frame;
    hvmin::EventChannelBinding evtchn;

    Result<void> publish();
    void teardown() noexcept;
    Result<void> scan();
    void detach_closing() noexcept;
    Result<xen_pci_op> do_op(const xen_pci_op& op);
    Result<void> on_state_change();

    std::vector<std::weak_ptr<BarMapping::State>> bars;  // handed out, maybe still mapped
    template <class Pred>
    void revoke_bars(Pred pred) noexcept {
        std::erase_if(bars, [&](const std::weak_ptr<BarMapping::State>& w) {
            auto st = w.lock();
            if (!st) {
                return true;
            }
            if (!pred(*st)) {
                return false;
            }
            st->revoke();
            return true;
        });
    }
};

Result<void> Device::Impl::publish() {
    auto& mem = hv.memory();
    // The page alone in its extent (an isolated backend may map only such pages); allocated
    // once and reused when the bus reconnects.
    if (!frame) {
        auto f = mem.alloc_extent(1);
        if (!f) {
            return fail(f.error());
        }
        frame = *f;
    }
    auto p = mem.frame(*frame);
    if (!p) {
        return fail(p.error());
    }
    std::memset(*p, 0, XEN_PAGE_SIZE);
    auto g = hv.grants().grant_access(backend, *frame, false);
    if (!g) {
        return fail(g.error());
    }
    auto e = hv.evtchn().alloc_unbound(backend);
    if (!e) {
        (void)hv.grants().end_access(*g);
        return fail(e.error());
    }
    sh = reinterpret_cast<xen_pci_sharedinfo*>(*p);
    ref = *g;
    evtchn = std::move(*e);
    set_up = true;
    auto w = xs.transaction([&](xs::TxId tx) -> Result<void> {
        HV_TRY(xs.write(fdir + "/pci-op-ref", std::to_string(ref.get()), tx));
        HV_TRY(xs.write(fdir + "/event-channel", std::to_string(evtchn.port().get()), tx));
        HV_TRY(xs.write(fdir + "/magic", std::string(XEN_PCI_MAGIC), tx));
        return {};
    });
    if (!w) {
        return fail(w.error());
    }
    HV_TRY(xenbus::switch_state(xs, fdir, XenbusState::XenbusStateInitialised));
    return {};
}

void Device::Impl::teardown() noexcept {
    revoke_bars([](const BarMapping::State&) { return true; });
    evtchn = {};
    if (set_up) {
        (void)hv.grants().end_access(ref);
    }
    sh = nullptr;
    set_up = false;
    if (!devices.empty()) {
        devices.clear();
        ++generation;
    }
}

Result<void> Device::Impl::scan() {
    std::vector<std::pair<std::uint32_t, std::uint32_t>> roots;
    auto n = xenbus::read_uint(xs, bdir + "/root_num", kMaxRoots);
    if (!n) {
        roots.emplace_back(0, 0);  // SPEC: §7.4 fallback 0000:00
    } else {
        for (unsigned j = 0; j < *n; ++j) {
            auto r = xs.read(bdir + "/root-" + std::to_string(j));
            std::uint32_t d = 0, b = 0;
            if (!r || !parse_root(*r, d, b)) {
                HV_LOG_RL(warn, "pcifront %s: root-%u unreadable: ignored", fdir.c_str(), j);
                continue;
            }
            if (std::find(roots.begin(), roots.end(), std::pair{d, b}) == roots.end()) {
                roots.emplace_back(d, b);
            }
        }
    }
    std::vector<Address> found;
    for (const auto& [d, b] : roots) {
        for (std::uint32_t slot = 0; slot < 32; ++slot) {
            for (std::uint32_t fn = 0; fn < 8; ++fn) {
                const Address a{d, b, (slot << 3) | fn};
                auto id = Device::Impl::do_op(xen_pci_op{XEN_PCI_OP_conf_read, 0, d, b, a.devfn, 0, 2, 0, 0, {}});
                if (!id) {
                    return fail(id.error());
                }
                if (id->err != XEN_PCI_ERR_success || (id->value & 0xffffU) == 0xffffU ||
                    (id->value & 0xffffU) == 0) {
                    if (fn == 0) {
                        break;  // no function 0: nothing in this slot
                    }
                    continue;
                }
                found.push_back(a);
                if (fn == 0) {
                    auto hdr = do_op(xen_pci_op{XEN_PCI_OP_conf_read, 0, d, b, a.devfn, 0x0e, 1, 0, 0, {}});
                    if (!hdr || hdr->err != XEN_PCI_ERR_success || (hdr->value & 0x80U) == 0) {
                        break;  // single function
                    }
                }
            }
        }
    }
    if (found != devices) {
        devices = std::move(found);
        ++generation;
    }
    return {};
}

void Device::Impl::detach_closing() noexcept {
    // SPEC: §7.4: devices whose state-i is Closing go before we answer Reconfiguring.
    auto n = xenbus::read_uint(xs, bdir + "/num_devs", 256);
    if (!n) {
        return;
    }
    for (unsigned i = 0; i < *n; ++i) {
        auto st = xenbus::read_uint(xs, bdir + "/state-" + std::to_string(i), 16);
        if (!st || *st != XenbusState::XenbusStateClosing) {
            continue;
        }
        auto v = xs.read(bdir + "/vdev-" + std::to_string(i));
        const auto addr = v ? parse_vdev(*v) : std::nullopt;
        if (!addr) {
            continue;
        }
        const Address a = *addr;
        // Its BARs go first: the backend revokes them once we answer, and hv-min destroys a
        // domain that still maps one.
        revoke_bars([&a](const BarMapping::State& s) { return s.addr == a; });
        if (std::erase(devices, a) != 0) {
            ++generation;
            HV_INFO("pcifront %s: %s removed", fdir.c_str(), to_string(a).c_str());
        }
    }
}

Result<xen_pci_op> Device::Impl::do_op(const xen_pci_op& op) {
    if (!set_up || sh == nullptr || !evtchn.valid()) {
        return fail(make_error_code(Errc::not_connected));
    }
    std::memcpy(&sh->op, &op, sizeof op);
    // ORDER: release pairs with the backend's acquire load of flags: the op is visible first.
    std::atomic_ref(sh->flags).fetch_or(XEN_PCIF_active, std::memory_order_release);
    (void)evtchn.notify();
    const auto done = [&] {
        // ORDER: acquire pairs with the backend's release clear of XEN_PCIF_active.
        return (std::atomic_ref(sh->flags).load(std::memory_order_acquire) & XEN_PCIF_active) == 0;
    };
    const auto deadline = std::chrono::steady_clock::now() + opt.op_timeout;
    bool ok = spin_until(done, opt.spin);
    while (!ok) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            break;
        }
        pollfd p{evtchn.fd(), POLLIN, 0};
        (void)::poll(&p, 1, static_cast<int>(std::min<long long>(left.count() + 1, 100)));
        (void)evtchn.ack();
        ok = done();
    }
    if (!ok) {
        // SPEC: pcifront do_pci_op: give up and take the flag back.
        std::atomic_ref(sh->flags).fetch_and(~XEN_PCIF_active, std::memory_order_release);
        HV_LOG_RL(warn, "pcifront %s: op %u timed out", fdir.c_str(), op.cmd);
        return fail(make_error_code(Errc::timed_out));
    }
    xen_pci_op out;
    // GUEST (the backend's): copy once, then use the copy.
    std::memcpy(&out, const_cast<const xen_pci_op*>(&sh->op), sizeof out);
    return out;
}

Result<void> Device::Impl::on_state_change() {
    if (phase == Phase::dead) {
        return fail(make_error_code(Errc::device_gone));
    }
    auto state = xenbus::backend_state_unless_removed(xs, fdir, bdir);
    if (!state) {
        return fail(state.error());
    }
    if (!*state) {
        teardown();
        phase = Phase::dead;
        return fail(make_error_code(Errc::device_gone));
    }
    const XenbusState bs = **state;
    switch (bs) {
        case XenbusState::XenbusStateInitWait:
        case XenbusState::XenbusStateInitialised:
            if (!set_up) {
                if (auto r = publish(); !r) {
                    HV_WARN("pcifront %s: publish: %s", fdir.c_str(), r.error().message().c_str());
                    teardown();
                    phase = Phase::dead;
                    (void)xenbus::switch_state(xs, fdir, XenbusState::XenbusStateClosing);
                    return fail(r.error());
                }
            }
            break;
        case XenbusState::XenbusStateConnected:
            if (set_up && phase != Phase::connected) {
                HV_TRY(scan());
                phase = Phase::connected;
                HV_TRY(xenbus::switch_state(xs, fdir, XenbusState::XenbusStateConnected));
            }
            break;
        case XenbusState::XenbusStateReconfiguring:
            if (set_up) {
                detach_closing();
                phase = Phase::reconfiguring;
                HV_TRY(xenbus::switch_state(xs, fdir, XenbusState::XenbusStateReconfiguring));
            }
            break;
        case XenbusState::XenbusStateReconfigured:
            if (set_up && phase == Phase::reconfiguring) {
                HV_TRY(scan());
                phase = Phase::connected;
                HV_TRY(xenbus::switch_state(xs, fdir, XenbusState::XenbusStateConnected));
            }
            break;
        case XenbusState::XenbusStateClosing:
        case XenbusState::XenbusStateClosed:
        case XenbusState::XenbusStateUnknown:
            // SPEC: Linux pcifront: the bus closes and stays closed (no reconnect loop with a
            // backend that keeps failing).
            teardown();
            phase = bs == XenbusState::XenbusStateUnknown ? Phase::dead : Phase::closed;
            (void)xenbus::switch_state(xs, fdir, XenbusState::XenbusStateClosed);
            break;
        default:
            break;
    }
    return {};
}

Device::Device(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Device::~Device() {
    if (impl_) {
        impl_->teardown();
        (void)xenbus::switch_state(impl_->xs, impl_->fdir, XenbusState::XenbusStateClosed);
    }
}

Result<std::unique_ptr<Device>> Device::create(hvmin::Services& hv, xs::Client& xs,
                                               std::uint32_t devid, Options o) {
    auto impl = std::make_unique<Impl>(hv, xs);
    impl->opt = o;
    impl->devid = devid;
    impl->fdir = xenbus::frontend_dir(hv.domid(), "pci", devid);
    impl->token = "pcifront-" + std::to_string(devid);
    auto b = xs.read(impl->fdir + "/backend");
    if (!b) {
        return fail(b.error());
    }
    auto bid = xenbus::read_uint(xs, impl->fdir + "/backend-id", 0xfffe);
    if (!bid) {
        return fail(bid.error());
    }
    impl->bdir = *b;
    impl->backend = DomId(static_cast<std::uint16_t>(*bid));
    for (const std::string& p : {impl->fdir + "/state", impl->bdir + "/state"}) {
        auto w = xs.watch_scoped(p, impl->token);
        if (!w) {
            return fail(w.error());
        }
        impl->watches.push_back(std::move(*w));
    }
    return std::unique_ptr<Device>(new Device(std::move(impl)));
}

Result<void> Device::on_state_change() { return impl_->on_state_change(); }

Result<void> Device::wait_connected(
    std::chrono::milliseconds timeout,
    const std::function<void(const std::string&, const std::string&)>& other) {
    return xenbus::wait_phase_connected(*impl_, timeout, make_error_code(Errc::device_gone),
                                        make_error_code(Errc::timed_out), other);
}

Phase Device::phase() const noexcept { return impl_->phase; }
const std::vector<Address>& Device::devices() const noexcept { return impl_->devices; }
std::uint64_t Device::generation() const noexcept { return impl_->generation; }

Result<xen_pci_op> Device::do_op(const xen_pci_op& op) { return impl_->do_op(op); }

Result<std::uint32_t> Device::conf_read(const Address& a, unsigned offset, unsigned size) {
    auto r = impl_->do_op(xen_pci_op{XEN_PCI_OP_conf_read, 0, a.domain, a.bus, a.devfn,
                                     static_cast<std::int32_t>(offset),
                                     static_cast<std::int32_t>(size), 0, 0, {}});
    if (!r) {
        return fail(r.error());
    }
    if (r->err != XEN_PCI_ERR_success) {
        return fail(op_error(r->err));
    }
    // GUEST (backend): a value wider than the access is masked, as the PCI core would see it.
    return size >= 4 ? r->value : r->value & ((1U << (8 * size)) - 1);
}

Result<void> Device::conf_write(const Address& a, unsigned offset, unsigned size,
                                std::uint32_t value) {
    auto r = impl_->do_op(xen_pci_op{XEN_PCI_OP_conf_write, 0, a.domain, a.bus, a.devfn,
                                     static_cast<std::int32_t>(offset),
                                     static_cast<std::int32_t>(size), value, 0, {}});
    if (!r) {
        return fail(r.error());
    }
    if (r->err != XEN_PCI_ERR_success) {
        return fail(op_error(r->err));
    }
    return {};
}

namespace {
Result<hvmin::EventChannelBinding> bind_port(hvmin::Services& hv, DomId backend, std::uint32_t port) {
    if (port == 0 || port > 0xffff) {
        return fail(make_error_code(Errc::backend_protocol));
    }
    return hv.evtchn().bind_interdomain(backend, EvtchnPort(port));
}
}  // namespace

Result<hvmin::EventChannelBinding> Device::enable_msi(const Address& a) {
    auto r = impl_->do_op(xen_pci_op{XEN_PCI_OP_enable_msi, 0, a.domain, a.bus, a.devfn, 0, 0, 0, 0, {}});
    if (!r) {
        return fail(r.error());
    }
    if (r->err != XEN_PCI_ERR_success) {
        return fail(op_error(r->err));
    }
    return bind_port(impl_->hv, impl_->backend, r->value);
}

Result<void> Device::disable_msi(const Address& a) {
    auto r = impl_->do_op(xen_pci_op{XEN_PCI_OP_disable_msi, 0, a.domain, a.bus, a.devfn, 0, 0, 0, 0, {}});
    if (!r) {
        return fail(r.error());
    }
    return r->err == XEN_PCI_ERR_success ? Result<void>{} : Result<void>(fail(op_error(r->err)));
}

Result<std::vector<hvmin::EventChannelBinding>> Device::enable_msix(
    const Address& a, std::span<const std::uint16_t> entries) {
    xen_pci_op op{XEN_PCI_OP_enable_msix, 0, a.domain, a.bus, a.devfn, 0, 0,
                  static_cast<std::uint32_t>(entries.size()), 0, {}};
    if (entries.size() > SH_INFO_MAX_VEC) {
        return fail(op_error(-EINVAL));
    }
    for (std::size_t i = 0; i < entries.size(); ++i) {
        op.msix_entries[i].entry = entries[i];
    }
    auto r = impl_->do_op(op);
    if (!r) {
        return fail(r.error());
    }
    if (r->err != XEN_PCI_ERR_success) {
        return fail(op_error(r->err));
    }
    std::vector<hvmin::EventChannelBinding> out;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        auto b = bind_port(impl_->hv, impl_->backend, r->msix_entries[i].vector);
        if (!b) {
            return fail(b.error());
        }
        out.push_back(std::move(*b));
    }
    return out;
}

Result<void> Device::disable_msix(const Address& a) {
    auto r = impl_->do_op(xen_pci_op{XEN_PCI_OP_disable_msix, 0, a.domain, a.bus, a.devfn, 0, 0, 0, 0, {}});
    if (!r) {
        return fail(r.error());
    }
    return r->err == XEN_PCI_ERR_success ? Result<void>{} : Result<void>(fail(op_error(r->err)));
}

std::string Device::frontend_dir() const { return impl_->fdir; }
std::string Device::backend_dir() const { return impl_->bdir; }
std::string Device::watch_token() const { return impl_->token; }
DomId Device::backend_id() const noexcept { return impl_->backend; }

Result<BarMapping> Device::map_bar(const Address& a, unsigned index) {
    Impl& m = *impl_;
    if (m.phase != Phase::connected || !m.set_up) {
        return fail(make_error_code(Errc::not_connected));
    }
    if (index > 6 || std::find(m.devices.begin(), m.devices.end(), a) == m.devices.end()) {
        return fail_errno(index > 6 ? EINVAL : ENODEV);
    }
    auto n = xenbus::read_uint(m.xs, m.bdir + "/num_devs", 256);
    if (!n) {
        return fail(n.error());
    }
    std::optional<unsigned> slot;
    for (unsigned i = 0; i < *n && !slot; ++i) {
        // A slot that was unplugged keeps its vdev-i: only an exported one (state-i 3) counts.
        auto st = xenbus::read_uint(m.xs, m.bdir + "/state-" + std::to_string(i), 16);
        auto v = m.xs.read(m.bdir + "/vdev-" + std::to_string(i));
        if (st && *st == XenbusState::XenbusStateInitialised && v && parse_vdev(*v) == a) {
            slot = i;
        }
    }
    if (!slot) {
        return fail_errno(ENODEV);
    }
    // GUEST (the backend's): a handle it wrote; hv-min decides whether it is ours.
    auto h = xenbus::read_uint(m.xs, m.bdir + "/bar-" + std::to_string(*slot) + "-" +
                                         std::to_string(index), 0xffffffffu);
    if (!h) {
        return fail_errno(ENOENT);
    }
    std::uint64_t size = 0;
    bool ro = true;
    auto fd = m.hv.iomem().open(m.backend, static_cast<std::uint32_t>(*h), &size, &ro);
    if (!fd) {
        return fail(fd.error());
    }
    void* p = ::mmap(nullptr, size, ro ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
    if (p == MAP_FAILED) {
        return fail_errno();
    }
    auto st = std::make_shared<BarMapping::State>();
    st->addr = a;
    st->base = p;
    st->len = size;
    st->writable = !ro;
    m.bars.push_back(st);
    return BarMapping(std::move(st));  // the fd closes here: only the mapping stays
}
xen_pci_sharedinfo* Device::shared_for_test() noexcept { return impl_->sh; }
void Device::kick_for_test() noexcept { (void)impl_->evtchn.notify(); }

}  // namespace hv::pcifront
