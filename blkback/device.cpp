// blkback control plane: Backend (the shared xenbus::BackendDriver over backend/vbd) and
// BlkDevice (one vbd's xenbus state machine, keys of xen-abi.md §5.4–5.5, RingWorkers).
// Layer: L2. Runs on the control thread.
#include "blkback/device.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "hv/log.hpp"
#include "hv/rings/ring.hpp"

namespace hv::blk {

using xenbus::errno_of;
using xenbus::write_keys;
using xenbus::XenbusState;

namespace {

constexpr std::string_view kType = "vbd";
constexpr std::string_view kFrontToken = "blkback-fe";
/// Largest `poll-us` a vbd may ask for (one second, as HVKIT_POLL_US).
constexpr std::uint64_t kMaxPollUs = 1'000'000;

bool is_errno(const std::error_code& ec, int e) {
    return ec == std::error_code(e, std::system_category());
}

std::string errtext(const std::error_code& ec) { return ec.message(); }

bool is_block_or_file(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

}  // namespace

Result<StorageSpec> parse_storage(std::string_view params, std::string_view mode) {
    StorageSpec s;
    s.read_only = mode.find('w') == std::string_view::npos ? ReadOnly::yes : ReadOnly::no;
    for (std::string_view prefix : {"aio:", "raw:", "file:", "phy:"}) {
        if (params.starts_with(prefix)) {
            params.remove_prefix(prefix.size());
        }
    }
    if (params.empty() || params.find('\0') != std::string_view::npos) {
        return fail(make_error_code(Errc::invalid_argument));
    }
    s.path = std::string(params);
    if (is_block_or_file(s.path)) {
        return s;
    }
    // An LVM volume: "VG/LV" or "/dev/VG/LV" that is not (yet) a device node.
    std::string_view v = params;
    if (v.starts_with("/dev/")) {
        v.remove_prefix(5);
    } else if (v.starts_with("/")) {
        return s;  // a file path that does not exist (yet): the engine reports ENOENT
    }
    const auto slash = v.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == v.size() ||
        v.find('/', slash + 1) != std::string_view::npos) {
        return s;
    }
    s.kind = StorageSpec::Kind::lvm;
    s.vg = std::string(v.substr(0, slash));
    s.lv = std::string(v.substr(slash + 1));
    return s;
}

// ---------------------------------------------------------------------------------------------
// BlkDevice

BlkDevice::BlkDevice(hvmin::Services& hv, xs::Client& xs, xenbus::DeviceRef ref,
                     const BackendOptions& opt, int halt_fd)
    : hv_(hv), xs_(xs), ref_(ref), opt_(opt), halt_fd_(halt_fd) {}

BlkDevice::~BlkDevice() { disconnect(); }

Result<std::unique_ptr<BlkDevice>> BlkDevice::create(hvmin::Services& hv, xs::Client& xs,
                                                     xenbus::DeviceRef ref,
                                                     const BackendOptions& opt, int halt_fd) {
    std::unique_ptr<BlkDevice> d(new BlkDevice(hv, xs, ref, opt, halt_fd));
    d->bdir_ = xenbus::backend_dir(hv.domid(), kType, ref.frontend, ref.devid);
    // The toolstack writes `frontend` and `frontend-id` with the directory (one transaction);
    // the frontend can only read this directory.
    auto fe = xs.read(d->bdir_ + "/frontend");
    if (!fe) {
        return fail(fe.error());
    }
    d->fdir_ = *fe;
    d->fe_state_path_ = d->fdir_ + "/state";
    d->frontend_ = ref.frontend;
    auto w = xs.watch_scoped(d->fe_state_path_, kFrontToken);
    if (!w) {
        return fail(w.error());
    }
    d->fe_watch_.emplace(std::move(*w));
    d->mode_ = opt.mode.value_or(hv.trusted() ? DataMode::map : DataMode::copy);
    return d;
}

Result<std::unique_ptr<BlockEngine>> BlkDevice::open_engine() const {
    UringEngineOptions o = opt_.uring;
    o.read_only = storage_.read_only;
    if (lvm_) {
        return make_lvm_engine(*lvm_, o);
    }
    return make_uring_engine(storage_.path, o);
}

Result<void> BlkDevice::probe() {
    auto params = xs_.read(bdir_ + "/params");
    if (!params) {
        return fail(params.error());
    }
    auto mode = xenbus::read_optional(xs_, bdir_ + "/mode");
    if (!mode) {
        return fail(mode.error());
    }
    // A hotplug script's `physical-device-path` names the device to open when present.
    auto ppath = xenbus::read_optional(xs_, bdir_ + "/physical-device-path");
    if (!ppath) {
        return fail(ppath.error());
    }
    auto spec = parse_storage(ppath->value_or(*params), mode->value_or("w"));
    if (!spec) {
        return fail(spec.error());
    }
    storage_ = *spec;
    lvm_.reset();
    if (storage_.kind == StorageSpec::Kind::lvm) {
        const std::string dev = "/dev/" + storage_.vg + "/" + storage_.lv;
        if (is_block_or_file(dev)) {
            storage_.kind = StorageSpec::Kind::path;  // device-mapper made the LV
            storage_.path = dev;
        } else {
            auto vol = lvm_resolve(storage_.vg, storage_.lv, LvmScan{opt_.lvm_scan_devices});
            if (!vol) {
                return fail(vol.error());
            }
            lvm_ = std::move(*vol);
        }
    }
    auto engine = open_engine();
    if (!engine) {
        return fail(engine.error());
    }
    props_ = (*engine)->properties();
    auto discard_enable = xenbus::read_optional(xs_, bdir_ + "/discard-enable");
    const bool discard = props_.discard && props_.read_only == ReadOnly::no &&
                         (!discard_enable || !*discard_enable || **discard_enable != "0");
    limits_ = DeviceLimits{};
    limits_.sectors = props_.capacity_bytes / 512;
    limits_.sector_size = props_.logical_block_size;
    limits_.read_only = props_.read_only;
    limits_.flush = true;
    limits_.barrier = true;
    limits_.discard = discard;
    limits_.discard_secure = false;
    limits_.max_indirect_segments = opt_.max_indirect_segments;

    unsigned queues = opt_.max_queues != 0 ? opt_.max_queues : std::thread::hardware_concurrency();
    queues = std::max(1U, queues);
    const bool persistent = opt_.persistent && mode_ == DataMode::map;
    std::uint32_t info = 0;
    if (props_.read_only == ReadOnly::yes) {
        info |= rings::VDISK_READONLY;
    }
    auto dtype = xenbus::read_optional(xs_, bdir_ + "/device-type");
    if (dtype && *dtype && **dtype == "cdrom") {
        info |= rings::VDISK_CDROM;
    }
    std::vector<std::pair<std::string, std::string>> kv = {
        {"feature-max-indirect-segments", std::to_string(opt_.max_indirect_segments)},
        {"multi-queue-max-queues", std::to_string(queues)},
        {"max-ring-page-order", std::to_string(opt_.max_ring_page_order)},
        {"feature-flush-cache", "1"},
        {"feature-barrier", "1"},
        {"feature-discard", discard ? "1" : "0"},
        {"feature-persistent", persistent ? "1" : "0"},
        {"sectors", std::to_string(limits_.sectors)},
        {"sector-size", std::to_string(props_.logical_block_size)},
        {"physical-sector-size", std::to_string(props_.physical_block_size)},
        {"info", std::to_string(info)},
        {"hotplug-status", "connected"},
    };
    if (discard) {
        kv.emplace_back("discard-granularity", std::to_string(std::max<std::uint32_t>(
                                                   props_.discard_granularity, props_.logical_block_size)));
        kv.emplace_back("discard-alignment", "0");
        kv.emplace_back("discard-secure", "0");
    }
    auto w = write_keys(xs_, bdir_, kv);
    if (!w) {
        return fail(w.error());
    }
    probed_ = true;
    return {};
}

RingStatsSnapshot BlkDevice::stats() const noexcept {
    RingStatsSnapshot s = retired_stats_;
    for (const auto& r : rings_) {
        s += r->stats();
    }
    return s;
}

void BlkDevice::disconnect() noexcept {
    // Stop every worker first (each drains its in-flight I/O), then destroy them: ring and
    // data mappings die only after no I/O can touch guest pages.
    for (auto& r : rings_) {
        r->stop();
    }
    for (auto& r : rings_) {
        retired_stats_ += r->stats();
    }
    rings_.clear();
    ring_keys_.clear();
}

void BlkDevice::fail_device(int err, const std::string& msg) noexcept {
    auto st = xenbus::read_optional(xs_, bdir_ + "/state");
    if (st && !*st) {
        disconnect();  // the directory is being removed: nothing to report to
        return;
    }
    xenbus::report_error(xs_, hv_.domid(), bdir_, err, msg);
    disconnect();
    failed_ = true;
    (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateClosing);
}

std::string BlkDevice::frontend_ring_keys() const {
    auto raw = [&](const std::string& key) {
        auto v = xenbus::read_optional(xs_, fdir_ + "/" + key);
        return v && *v ? **v : std::string("-");
    };
    const std::string nq_s = raw("multi-queue-num-queues");
    const std::string order_s = raw("ring-page-order");
    std::string sig = nq_s + "|" + order_s;
    // GUEST: the counts only bound how many keys are read (connect() validates them).
    const auto nq = std::strtoul(nq_s.c_str(), nullptr, 10);
    const auto order = std::strtoul(order_s.c_str(), nullptr, 10);
    const unsigned queues = nq >= 2 && nq <= 64 ? static_cast<unsigned>(nq) : 1U;
    const bool paged = order_s != "-";
    const unsigned pages = paged && order <= opt_.max_ring_page_order ? 1U << order : 1U;
    for (unsigned q = 0; q < queues; ++q) {
        const std::string dir = queues == 1 ? "" : "queue-" + std::to_string(q) + "/";
        sig += "|" + raw(dir + "event-channel");
        for (unsigned i = 0; i < pages; ++i) {
            sig += "," + raw(dir + (paged ? "ring-ref" + std::to_string(i) : std::string("ring-ref")));
        }
    }
    return sig;
}

Result<void> BlkDevice::connect() {
    const auto fail_with = [](int e) { return fail_errno(e); };
    // Read before and after the keys used below: equal only if they did not change meanwhile.
    const std::string keys_before = frontend_ring_keys();
    // SPEC: xen-blkback/xenbus.c connect_ring; GUEST: every frontend key may hold anything.
    BlkifAbi abi = BlkifAbi::x86_32;  // sharp edge 4: absent ⇒ x86_32 on x86
    auto proto = xenbus::read_optional(xs_, fdir_ + "/protocol");
    if (!proto) {
        return fail(proto.error());
    }
    if (*proto) {
        if (**proto == rings::XEN_IO_PROTO_ABI_X86_64 || **proto == rings::XEN_IO_PROTO_ABI_ARM) {
            abi = BlkifAbi::native;
        } else if (**proto == rings::XEN_IO_PROTO_ABI_X86_32) {
            abi = BlkifAbi::x86_32;
        } else {
            HV_WARN("blkback %s: unknown protocol", bdir_.c_str());
            return fail_with(ENOSYS);
        }
    }
    bool persistent = false;
    if (auto p = xenbus::read_uint(xs_, fdir_ + "/feature-persistent", 1)) {
        persistent = *p == 1 && opt_.persistent && mode_ == DataMode::map;
    }
    const unsigned max_queues = std::max(
        1U, opt_.max_queues != 0 ? opt_.max_queues : std::thread::hardware_concurrency());
    unsigned queues = 1;
    if (auto q = xenbus::read_uint(xs_, fdir_ + "/multi-queue-num-queues", UINT32_MAX)) {
        if (*q == 0 || *q > max_queues) {
            HV_WARN("blkback %s: multi-queue-num-queues %llu outside 1..%u", bdir_.c_str(),
                    static_cast<unsigned long long>(*q), max_queues);
            return fail_with(EINVAL);
        }
        queues = static_cast<unsigned>(*q);
    } else if (!is_errno(q.error(), ENOENT)) {
        return fail(q.error());
    }
    // ring-page-order present (even "0") ⇒ ring-ref%u names; absent ⇒ ring-ref (sharp edge 5).
    std::optional<unsigned> order;
    if (auto o = xenbus::read_uint(xs_, fdir_ + "/ring-page-order", UINT32_MAX)) {
        if (*o > opt_.max_ring_page_order) {
            HV_WARN("blkback %s: ring-page-order %llu above %u", bdir_.c_str(),
                    static_cast<unsigned long long>(*o), opt_.max_ring_page_order);
            return fail_with(EINVAL);
        }
        order = static_cast<unsigned>(*o);
    } else if (!is_errno(o.error(), ENOENT)) {
        return fail(o.error());
    }
    const unsigned pages = order ? 1U << *order : 1U;
    // Polling mode for this vbd: the toolstack's `poll-us` (backend dir) over the option.
    auto spin = opt_.spin;
    if (auto p = xenbus::read_uint(xs_, bdir_ + "/poll-us", kMaxPollUs)) {
        spin = std::chrono::microseconds(*p);
    } else if (!is_errno(p.error(), ENOENT)) {
        HV_WARN("blkback %s: poll-us: %s (microseconds, at most %llu)", bdir_.c_str(),
                errtext(p.error()).c_str(), static_cast<unsigned long long>(kMaxPollUs));
        return fail(p.error());
    }

    std::vector<std::unique_ptr<RingWorker>> workers;
    for (unsigned q = 0; q < queues; ++q) {
        const std::string dir = queues == 1 ? fdir_ : fdir_ + "/queue-" + std::to_string(q);
        RingConfig cfg;
        cfg.frontend = frontend_;
        cfg.queue = q;
        cfg.abi = abi;
        cfg.mode = mode_;
        cfg.persistent = persistent;
        cfg.max_persistent_grants = opt_.max_persistent_grants;
        cfg.persistent_grant_idle = opt_.persistent_grant_idle;
        cfg.fixed_buffers = opt_.fixed_buffers;
        cfg.spin = spin;
        cfg.limits = limits_;
        cfg.name = std::to_string(ref_.frontend.get()) + "/" + std::to_string(ref_.devid) + "/q" +
                   std::to_string(q);
        for (unsigned i = 0; i < pages; ++i) {
            const std::string key = order ? dir + "/ring-ref" + std::to_string(i) : dir + "/ring-ref";
            auto ref = xenbus::read_uint(xs_, key, UINT32_MAX);
            if (!ref) {
                HV_WARN("blkback %s: %s: %s", bdir_.c_str(), key.c_str(), errtext(ref.error()).c_str());
                return fail(ref.error());
            }
            cfg.ring_refs.emplace_back(static_cast<std::uint32_t>(*ref));
        }
        auto port = xenbus::read_uint(xs_, dir + "/event-channel", UINT32_MAX);
        if (!port) {
            HV_WARN("blkback %s: %s/event-channel: %s", bdir_.c_str(), dir.c_str(),
                    errtext(port.error()).c_str());
            return fail(port.error());
        }
        cfg.port = EvtchnPort(static_cast<std::uint32_t>(*port));
        auto engine = open_engine();
        if (!engine) {
            return fail(engine.error());
        }
        auto svc = hv_.clone();
        if (!svc) {
            return fail(svc.error());
        }
        auto w = RingWorker::create(std::move(*svc), std::move(*engine), std::move(cfg), halt_fd_);
        if (!w) {
            HV_WARN("blkback %s: queue %u: %s", bdir_.c_str(), q, errtext(w.error()).c_str());
            return fail(w.error());
        }
        workers.push_back(std::move(*w));
    }
    rings_ = std::move(workers);
    const std::string keys_after = frontend_ring_keys();
    ring_keys_ = keys_before == keys_after ? keys_after : std::string();
    // SPEC: blkback connect(): the at-connect keys in one transaction, then Connected.
    std::vector<std::pair<std::string, std::string>> kv = {
        {"sectors", std::to_string(limits_.sectors)},
        {"info", std::to_string(props_.read_only == ReadOnly::yes ? rings::VDISK_READONLY : 0U)},
        {"sector-size", std::to_string(props_.logical_block_size)},
        {"physical-sector-size", std::to_string(props_.physical_block_size)},
        {"feature-flush-cache", "1"},
        {"feature-barrier", "1"},
        {"feature-discard", limits_.discard ? "1" : "0"},
        {"feature-persistent", persistent ? "1" : "0"},
    };
    HV_TRY(write_keys(xs_, bdir_, kv));
    HV_INFO("blkback %s: connected: %u queue(s), %u page ring(s), %s, %s mode%s", bdir_.c_str(),
            queues, pages, abi == BlkifAbi::native ? "x86_64-abi" : "x86_32-abi",
            mode_ == DataMode::map ? "map" : "copy", persistent ? ", persistent grants" : "");
    return {};
}

bool BlkDevice::reevaluate() noexcept {
    auto bst = xenbus::read_optional(xs_, bdir_ + "/state");
    if (!bst) {
        return true;  // transient XenStore error: keep the device, try on the next event
    }
    if (!*bst) {
        disconnect();  // the toolstack removed the directory
        return false;
    }
    auto bstate = xenbus::read_state(xs_, bdir_);
    auto fstate = xenbus::read_state(xs_, fdir_);
    if (!bstate || !fstate) {
        return true;
    }
    auto online_s = xenbus::read_optional(xs_, bdir_ + "/online");
    const bool online = online_s && *online_s && **online_s == "1";

    if (!probed_ && !failed_ && *bstate != XenbusState::XenbusStateClosing &&
        *bstate != XenbusState::XenbusStateClosed) {
        if (auto p = probe(); !p) {
            fail_device(errno_of(p.error()), "opening " + storage_.path + ": " + errtext(p.error()));
            return true;
        }
        (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateInitWait);
        bstate = XenbusState::XenbusStateInitWait;
    }

    switch (*fstate) {
        case XenbusState::XenbusStateInitialising:
            // Reconnect: the frontend starts over (after our Closed, or having skipped it).
            // Not once the toolstack set online = 0: the device is being removed, and a
            // frontend that restarts must not bring it back (xen-abi §4.11 teardown).
            if (online && (*bstate == XenbusState::XenbusStateClosed ||
                           *bstate == XenbusState::XenbusStateConnected)) {
                disconnect();
                failed_ = false;
                if (!probed_) {
                    if (auto p = probe(); !p) {
                        fail_device(errno_of(p.error()), "opening storage: " + errtext(p.error()));
                        return true;
                    }
                }
                (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateInitWait);
            }
            break;
        case XenbusState::XenbusStateInitialised:
        case XenbusState::XenbusStateConnected:
            if (failed_ || !probed_ || *bstate == XenbusState::XenbusStateClosing ||
                *bstate == XenbusState::XenbusStateClosed) {
                break;
            }
            // Connected already, to the rings the frontend's keys still name. A frontend that
            // started over (Initialising, new rings, Initialised) between two of our reads is
            // seen here only by its keys: e.g. a restarted blkback connected to the rings a
            // frontend was leaving, and whose refs it then granted for other pages; serving
            // those would lose its I/O (the state alone never showed the restart).
            if (*bstate == XenbusState::XenbusStateConnected && connected() &&
                !ring_keys_.empty() && frontend_ring_keys() == ring_keys_) {
                break;
            }
            if (connected()) {
                HV_INFO("blkback %s: the frontend's ring keys changed: connecting again", bdir_.c_str());
            }
            disconnect();
            if (auto c = connect(); !c) {
                fail_device(errno_of(c.error()), "connecting rings: " + errtext(c.error()));
                break;
            }
            xenbus::clear_error(xs_, hv_.domid(), bdir_);
            (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateConnected);
            break;
        case XenbusState::XenbusStateClosing:
            disconnect();
            (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateClosing);
            break;
        case XenbusState::XenbusStateClosed:
        case XenbusState::XenbusStateUnknown:  // the frontend directory is gone
            disconnect();
            (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateClosed);
            if (!online) {
                return false;
            }
            break;
        default:  // InitWait, Reconfiguring, Reconfigured: nothing for a vbd
            break;
    }
    return true;
}

void BlkDevice::check_rings() noexcept {
    for (std::size_t q = 0; q < rings_.size(); ++q) {
        if (rings_[q]->halted()) {
            fail_device(EPROTO, "ring " + std::to_string(q) + ": " + rings_[q]->halt_reason());
            return;
        }
    }
}

void BlkDevice::write_statistics() noexcept {
    const RingStatsSnapshot s = stats();
    if (s == last_stats_) {
        return;
    }
    const std::string d = "statistics/";
    auto w = write_keys(xs_, bdir_,
                        {{d + "rd_req", std::to_string(s.rd_req)},
                         {d + "wr_req", std::to_string(s.wr_req)},
                         {d + "f_req", std::to_string(s.f_req)},
                         {d + "ds_req", std::to_string(s.ds_req)},
                         {d + "oo_req", std::to_string(s.oo_req)},
                         {d + "rd_sect", std::to_string(s.rd_sect)},
                         {d + "wr_sect", std::to_string(s.wr_sect)},
                         {d + "errors", std::to_string(s.errors)},
                         // hvkit's own (not Linux's): persistent-grant purges, zero-copy I/O
                         {d + "pgnt_purged", std::to_string(s.pgnt_purged)},
                         {d + "fixed_req", std::to_string(s.fixed_req)},
                         {d + "spin_hits", std::to_string(s.spin_hits)}});
    if (w) {
        last_stats_ = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Backend

namespace {

/// Keys only blkback writes: their events are echoes of its own writes.
bool is_own_vbd_key(std::string_view path) noexcept {
    static constexpr std::string_view own[] = {
        "/feature-max-indirect-segments", "/multi-queue-max-queues", "/max-ring-page-order",
        "/feature-flush-cache", "/feature-barrier", "/feature-discard", "/feature-persistent",
        "/discard-granularity", "/discard-alignment", "/discard-secure", "/sectors",
        "/sector-size", "/physical-sector-size", "/info", "/hotplug-status"};
    return std::any_of(std::begin(own), std::end(own),
                       [&](std::string_view k) { return path.ends_with(k); });
}

}  // namespace

Result<std::unique_ptr<Backend>> Backend::create(hvmin::Services& hv, xs::Client& xs,
                                                 BackendOptions opt) {
    const xenbus::DriverConfig cfg{.type = kType, .name = "blkback",
                                   .stats_interval = opt.stats_interval};
    using Factory = xenbus::DeviceFactoryOf<BlkDevice, hvmin::Services, BackendOptions>;
    return make<Backend>(hv.domid(), xs, cfg,
                         std::make_unique<Factory>(hv, xs, std::move(opt), is_own_vbd_key));
}

}  // namespace hv::blk
