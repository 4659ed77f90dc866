// netback control plane: Backend (the shared xenbus::BackendDriver over backend/vif) and
// VifDevice (one vif's xenbus state machine, keys of xen-abi.md §6.6, host side, Queues).
// Layer: L2. Runs on the control thread.
#include "netback/device.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "hv/log.hpp"
#include "netback/dpdk.hpp"
#include "netback/netlink.hpp"
#include "netback/ovs.hpp"
#include "netback/tap.hpp"

namespace hv::net {

using xenbus::errno_of;
using xenbus::write_keys;
using xenbus::XenbusState;

namespace {

constexpr std::string_view kType = "vif";
constexpr std::string_view kFrontToken = "netback-fe";

bool is_errno(const std::error_code& ec, int e) {
    return ec == std::error_code(e, std::system_category());
}
/// A 0/1 feature flag of the frontend: absent or unparseable reads as `dflt` (Linux
/// xenbus_read_unsigned).
bool read_flag(xs::Client& xs, const std::string& path, bool dflt) {
    auto v = xenbus::read_uint(xs, path, UINT32_MAX);
    return v ? *v != 0 : dflt;
}

/// The frontend's xdp-headroom as Linux netback's read_xenbus_frontend_xdp() takes it: absent
/// or not a number = 0, above XEN_NETIF_MAX_XDP_HEADROOM = that maximum. (Linux scans "%hu",
/// so a number past 65535 wraps there before the clamp; here any larger number clamps.)
std::uint16_t read_xdp_headroom(xs::Client& xs, const std::string& fdir) {
    auto v = xenbus::read_optional(xs, fdir + "/xdp-headroom");
    if (!v || !*v) {
        return 0;
    }
    auto n = xenbus::parse_uint(**v);
    if (!n) {
        // GUEST: out of uint64 range is a number too large; anything else is no number.
        return is_errno(n.error(), ERANGE) ? rings::XEN_NETIF_MAX_XDP_HEADROOM : 0;
    }
    return static_cast<std::uint16_t>(
        std::min<std::uint64_t>(*n, rings::XEN_NETIF_MAX_XDP_HEADROOM));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// VifDevice

VifDevice::VifDevice(hvmin::Services& hv, xs::Client& xs, xenbus::DeviceRef ref,
                     const BackendOptions& opt, int halt_fd)
    : hv_(hv), xs_(xs), ref_(ref), opt_(opt), halt_fd_(halt_fd) {}

VifDevice::~VifDevice() {
    disconnect();
    unplug_host();  // the vif is gone (Linux: netback_remove frees the netdev)
}

Result<std::unique_ptr<VifDevice>> VifDevice::create(hvmin::Services& hv, xs::Client& xs,
                                                     xenbus::DeviceRef ref,
                                                     const BackendOptions& opt, int halt_fd) {
    std::unique_ptr<VifDevice> d(new VifDevice(hv, xs, ref, opt, halt_fd));
    d->bdir_ = xenbus::backend_dir(hv.domid(), kType, ref.frontend, ref.devid);
    auto fe = xs.read(d->bdir_ + "/frontend");
    if (!fe) {
        return fail(fe.error());
    }
    d->fdir_ = *fe;
    d->fe_state_path_ = d->fdir_ + "/state";
    auto w = xs.watch_scoped(d->fe_state_path_, kFrontToken);
    if (!w) {
        return fail(w.error());
    }
    d->fe_watch_.emplace(std::move(*w));
    d->fe_mcast_path_ = d->fdir_ + "/request-multicast-control";
    return d;
}

unsigned VifDevice::max_queues() const noexcept {
    if (dpdk_) {
        return 1;  // one queue pair per DPDK port: a peer enables the queues it wants, and a
                   // netback queue on a pair the peer left disabled could never send
    }
    if (opt_.max_queues != 0) {
        return opt_.max_queues;
    }
    return std::clamp(std::thread::hardware_concurrency(), 1U, 8U);
}

DataMode VifDevice::data_mode() const noexcept {
    const bool trusted = hv_.trusted();
    const DataMode want = opt_.mode.value_or(trusted ? DataMode::map : DataMode::copy);
    if (want == DataMode::map && !trusted) {
        HV_LOG_RL(warn, "netback %s: map mode needs a trusted domain: using grant copy",
                  bdir_.c_str());
        return DataMode::copy;
    }
    return want;
}

bool VifDevice::offers_persistent_pool() const noexcept {
    return opt_.persistent_pool && data_mode() == DataMode::map;
}

TxConfig VifDevice::offered_tx() const noexcept {
    TxConfig c = opt_.tx_offers;
    c.gso_tcpv4 = c.gso_tcpv4 && c.csum4;  // TSO is partial-checksum traffic
    c.gso_tcpv6 = c.gso_tcpv6 && c.csum6;
    return c;
}

bool VifDevice::dpdk_vif() const {
    if (opt_.host != HostMode::tap) {
        return false;
    }
    auto rd = [&](const char* key) {
        auto v = xenbus::read_optional(xs_, bdir_ + "/" + key);
        return v && *v ? **v : std::string();
    };
    return rd("type") == "dpdk" || rd("script").find("dpdk") != std::string::npos;
}

Result<void> VifDevice::probe() {
    // SPEC: netback_probe(): the features this backend offers, before InitWait. A DPDK vif
    // (decided here: it offers one queue) takes the same offloads (its engine segments TSO
    // frames and completes checksums in software).
    dpdk_ = dpdk_vif();
    const TxConfig off = offered_tx();
    auto b = [](bool v) { return std::string(v ? "1" : "0"); };
    std::vector<std::pair<std::string, std::string>> kv = {
        {"feature-sg", "1"},
        {"feature-gso-tcpv4", b(off.gso_tcpv4)},
        {"feature-gso-tcpv6", b(off.gso_tcpv6)},
        {"feature-ipv6-csum-offload", b(off.csum6)},
        {"feature-no-csum-offload", b(!off.csum4)},
        {"feature-rx-copy", "1"},
        {"feature-rx-flip", "0"},
        {"feature-rx-notify", "1"},
        // Linux netback offers both: MCAST_ADD/DEL extras kept per vif, and the frontend's
        // request-multicast-control watched while connected.
        {"feature-multicast-control", "1"},
        {"feature-dynamic-multicast-control", "1"},
        {"feature-split-event-channels", opt_.split_event_channels ? "1" : "0"},
        {"multi-queue-max-queues", std::to_string(max_queues())},
        // Linux netback offers it: rx data of a packet's first slot at the frontend's
        // xdp-headroom, read at connect and on Reconfiguring.
        {"feature-xdp-headroom", "1"},
        {"feature-ctrl-ring", "1"},
        // hvkit's own (README "Persistent pool"): only a mapping backend can keep grants mapped.
        {"feature-hvkit-persistent-pool", offers_persistent_pool() ? "1" : "0"},
    };
    auto w = write_keys(xs_, bdir_, kv);
    if (!w) {
        return fail(w.error());
    }
    probed_ = true;
    return {};
}

VifStatsSnapshot VifDevice::stats() const noexcept {
    VifStatsSnapshot s = retired_stats_;
    for (const auto& q : queues_) {
        s += q->stats();
    }
    return s;
}

void VifDevice::disconnect() noexcept {
    awaiting_link_ = false;
    for (auto& q : queues_) {
        q->stop();
    }
    for (auto& q : queues_) {
        retired_stats_ += q->stats();
    }
    stop_steering();
    steer_.reset();  // the next connection starts over
    steer_failed_ = false;
    queues_.clear();  // engines close their fds of the tap's queues; the tap stays (unplug_host)
    mcast_watch_.reset();
    mcast_.reset();  // the list is this connection's (Linux xenvif_mcast_addr_list_free)
    hash_.reset();
    ctrl_.reset();
    ctrl_ev_ = {};
    ctrl_ring_.reset();
    ctrl_map_ = {};
    port_.reset();  // stops and removes the DPDK port (and its vhost-user socket)
}

void VifDevice::fail_device(int err, const std::string& msg) noexcept {
    HV_LOG_RL(warn, "netback %s: %s", bdir_.c_str(), msg.c_str());
    disconnect();
    failed_ = true;
    xenbus::report_error(xs_, hv_.domid(), bdir_, err, msg);
    (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateClosing);
}

std::string VifDevice::backend_value(const char* key) const {
    auto v = xenbus::read_optional(xs_, bdir_ + "/" + key);
    return v && *v ? **v : std::string();
}

Result<void> VifDevice::plug_host(std::string& step) {
    // SPEC: what Linux netback's vif creation at probe and the vif-bridge / vif-openvswitch
    // hotplug script then do: the device with max queues, MAC fe:ff:ff:ff:ff:ff, MTU, bridge,
    // up. The frontend's rx offloads are not known yet: none until connect().
    std::string name = backend_value("vifname");
    if (name.empty()) {
        name = vif_name(ref_.frontend, ref_.devid);
    }
    step = "tap " + name;
    TapConfig tc;
    tc.name = name;
    tc.queues = max_queues();
    tc.offloads = Features{false, false, false};
    tc.netns_fd = opt_.netns_fd;
    auto tap = Tap::open(tc);
    if (!tap) {
        return fail(tap.error());
    }
    tap_ = std::make_unique<Tap>(std::move(*tap));
    const std::string bridge = backend_value("bridge");
    const std::string type = backend_value("type");
    const std::string script = backend_value("script");
    const bool ovs = type == "ovs" || type == "openvswitch" ||
                     script.find("openvswitch") != std::string::npos ||
                     script.find("ovs") != std::string::npos;
    step = "netlink";
    auto nl = Netlink::open(opt_.netns_fd);
    if (!nl) {
        return fail(nl.error());
    }
    step = "MAC of " + name;
    HV_TRY(nl->set_mac(name, Mac{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff}));
    step = "MTU " + std::to_string(mtu_) + " of " + name;
    HV_TRY(nl->set_mtu(name, mtu_));
    if (!bridge.empty()) {
        if (ovs) {
            step = "OVS bridge " + bridge;
            if (opt_.ovs_db.empty()) {
                return fail(std::make_error_code(std::errc::operation_not_supported));
            }
            HV_TRY(ovs_add_port(opt_.ovs_db, bridge, name));
            ovs_bridge_ = bridge;
        } else {
            step = "bridge " + bridge;
            HV_TRY(nl->set_master(name, bridge));
        }
    }
    step = "setting " + name + " up";
    HV_TRY(nl->set_up(name, true));
    return {};
}

void VifDevice::unplug_host() noexcept {
    if (!ovs_bridge_.empty() && tap_) {
        (void)ovs_del_port(opt_.ovs_db, ovs_bridge_, tap_->name());
    }
    ovs_bridge_.clear();
    tap_.reset();  // the tap disappears with its last queue fd
}

void VifDevice::hotplug() noexcept {
    if (dpdk_) {
        return;  // the port opens at connect; hotplug-status follows its switch (service())
    }
    mtu_ = 1500;
    if (auto m = xenbus::parse_uint(backend_value("mtu"), 65535); m && *m >= 68) {
        mtu_ = static_cast<unsigned>(*m);
    }
    std::string what = "loop engine";
    if (opt_.host == HostMode::sink) {
        what = "sink engine";
    } else if (opt_.host == HostMode::tap) {
        std::string step;
        if (auto p = plug_host(step); !p) {
            // As libxl's hotplug scripts report a failure: hotplug-status = error and the
            // reason in hotplug-error. We stay in InitWait and never switch to Connected.
            const std::string why = "host side: " + step + ": " + p.error().message();
            HV_WARN("netback %s: %s", bdir_.c_str(), why.c_str());
            unplug_host();
            (void)write_keys(xs_, bdir_, {{"hotplug-error", why}, {"hotplug-status", "error"}});
            return;
        }
        what = "tap " + tap_->name();
    }
    if (auto w = write_keys(xs_, bdir_, {{"hotplug-status", "connected"}}); !w) {
        HV_WARN("netback %s: writing hotplug-status: %s", bdir_.c_str(),
                w.error().message().c_str());
        return;
    }
    HV_INFO("netback %s: host side ready: %s", bdir_.c_str(), what.c_str());
}

bool VifDevice::hotplug_connected() const {
    return backend_value("hotplug-status") == "connected";
}

Result<std::vector<std::unique_ptr<NetEngine>>> VifDevice::make_engines(unsigned queues,
                                                                        const Features& rx_off) {
    std::vector<std::unique_ptr<NetEngine>> engines;
    if (opt_.host != HostMode::tap) {
        for (unsigned i = 0; i < queues; ++i) {
            auto e = opt_.host == HostMode::loop ? make_loop_engine(256, Features{true, true, true})
                                                 : make_sink_engine(Features{true, true, true});
            if (!e) {
                return fail(e.error());
            }
            engines.push_back(std::move(*e));
        }
        return engines;
    }
    if (dpdk_) {
        // A vhost-user server port on the `bridge` path, one queue pair per netif queue; a
        // DPDK switch (OVS-DPDK dpdkvhostuserclient, testpmd virtio-user) connects to it.
        unsigned mtu = 1500;
        if (auto m = xenbus::parse_uint(backend_value("mtu"), 65535); m && *m >= 68) {
            mtu = static_cast<unsigned>(*m);
        }
        const std::string sock = backend_value("bridge");
        if (sock.empty() || sock.front() != '/') {
            HV_WARN("netback %s: a DPDK vif needs bridge=<absolute vhost-user socket path>, "
                    "not '%s'", bdir_.c_str(), sock.c_str());
            return fail(std::make_error_code(std::errc::invalid_argument));
        }
        DpdkPortConfig dc;
        dc.name = "net_vhost_" + std::to_string(ref_.frontend.get()) + "_" +
                  std::to_string(ref_.devid);
        dc.args = vhost_server_args(sock, queues);
        dc.queues = queues;
        dc.mtu = std::min(mtu, 9600U);
        dc.rx_csum = rx_off.csum;
        auto port = DpdkPort::open(dc);
        if (!port) {
            return fail(port.error());
        }
        port_ = std::move(*port);
        for (unsigned i = 0; i < queues; ++i) {
            auto e = port_->make_engine(i, rx_off);
            if (!e) {
                return fail(e.error());
            }
            engines.push_back(std::move(*e));
        }
        return engines;
    }
    if (!tap_) {
        return fail(std::make_error_code(std::errc::no_such_device));  // hotplug failed
    }
    // The tap made at probe: the frontend's queues take part in the kernel's queue choice,
    // the others are detached (frames steered there would wait for nobody).
    for (unsigned i = 0; i < tap_->queue_count(); ++i) {
        if (tap_->queue_count() > 1) {
            HV_TRY(tap_->set_queue_attached(i, i < queues));
        }
    }
    HV_TRY(tap_->set_offloads(rx_off));
    for (unsigned i = 0; i < queues; ++i) {
        auto fd = tap_->dup_queue(i);
        if (!fd) {
            return fail(fd.error());
        }
        // Frames from the frontend may carry any offload we offered (csum, TSO4/6), whatever
        // the frontend takes on rx (the tap's TUNSETOFFLOAD).
        auto e = make_tap_engine(std::move(*fd), Features{true, true, true}, mtu_);
        if (!e) {
            return fail(e.error());
        }
        engines.push_back(std::move(*e));
    }
    return engines;
}

Result<void> VifDevice::connect() {
    auto fail_with = [](int e) { return fail(std::error_code(e, std::system_category())); };
    // SPEC: netback connect() / read_xenbus_vif_flags().
    if (!read_flag(xs_, fdir_ + "/request-rx-copy", false)) {
        HV_WARN("netback %s: frontend does not request rx-copy", bdir_.c_str());
        return fail_with(EOPNOTSUPP);
    }
    const bool rx_notify = read_flag(xs_, fdir_ + "/feature-rx-notify", false);
    const bool sg = read_flag(xs_, fdir_ + "/feature-sg", false);
    const bool gso4 = read_flag(xs_, fdir_ + "/feature-gso-tcpv4", false);
    const std::uint16_t headroom = read_xdp_headroom(xs_, fdir_);
    const bool gso6 = read_flag(xs_, fdir_ + "/feature-gso-tcpv6", false);
    const bool csum4 = !read_flag(xs_, fdir_ + "/feature-no-csum-offload", false);
    const bool csum6 = read_flag(xs_, fdir_ + "/feature-ipv6-csum-offload", false);
    unsigned queues = 1;
    if (auto q = xenbus::read_uint(xs_, fdir_ + "/multi-queue-num-queues", UINT32_MAX)) {
        if (*q == 0 || *q > max_queues()) {
            HV_WARN("netback %s: multi-queue-num-queues %llu outside 1..%u", bdir_.c_str(),
                    static_cast<unsigned long long>(*q), max_queues());
            return fail_with(EINVAL);
        }
        queues = static_cast<unsigned>(*q);
    } else if (!is_errno(q.error(), ENOENT)) {
        return fail(q.error());
    }
    rate_ = {};
    if (auto r = xenbus::read_optional(xs_, bdir_ + "/rate"); r && *r) {
        auto p = parse_rate(**r);
        if (p) {
            rate_ = *p;
        } else {
            HV_WARN("netback %s: ignoring unparseable rate '%s'", bdir_.c_str(), (*r)->c_str());
        }
    }
    const DataMode mode = data_mode();
    const bool persistent_pool = offers_persistent_pool() &&
                                 read_flag(xs_, fdir_ + "/feature-hvkit-persistent-pool", false);
    std::chrono::microseconds spin = opt_.spin;
    if (auto p = xenbus::read_optional(xs_, bdir_ + "/poll-us"); p && *p) {
        // The toolstack's per-vif choice; anything but a decimal up to one second is ignored.
        if (auto v = xenbus::parse_uint(**p, 1000000)) {
            spin = std::chrono::microseconds(*v);
        } else {
            HV_WARN("netback %s: ignoring unparseable poll-us '%s'", bdir_.c_str(), (*p)->c_str());
        }
    }
    // SPEC: read_xenbus_vif_flags() reads request-multicast-control; connect() watches it.
    mcast_ = std::make_shared<McastFilter>();
    mcast_->set_enabled(read_flag(xs_, fe_mcast_path_, false));
    if (auto mw = xs_.watch_scoped(fe_mcast_path_, kFrontToken)) {
        mcast_watch_.emplace(std::move(*mw));
    } else {
        return fail(mw.error());
    }
    hash_ = std::make_shared<HashState>();  // hashing off until the control ring sets it
    std::vector<QueueConfig> cfgs;
    for (unsigned q = 0; q < queues; ++q) {
        const std::string dir = queues == 1 ? fdir_ : fdir_ + "/queue-" + std::to_string(q);
        QueueConfig c;
        c.frontend = ref_.frontend;
        c.index = q;
        c.name = std::to_string(ref_.frontend.get()) + "/" + std::to_string(ref_.devid) + "/q" +
                 std::to_string(q);
        auto txr = xenbus::read_uint(xs_, dir + "/tx-ring-ref", UINT32_MAX);
        auto rxr = xenbus::read_uint(xs_, dir + "/rx-ring-ref", UINT32_MAX);
        if (!txr || !rxr) {
            HV_WARN("netback %s: %s: missing or bad tx-ring-ref/rx-ring-ref", bdir_.c_str(),
                    dir.c_str());
            return fail(!txr ? txr.error() : rxr.error());
        }
        c.tx_ring_ref = GrantRef(static_cast<std::uint32_t>(*txr));
        c.rx_ring_ref = GrantRef(static_cast<std::uint32_t>(*rxr));
        // Split channels first, then the shared one (Linux connect_data_rings()).
        auto etx = xenbus::read_uint(xs_, dir + "/event-channel-tx", UINT32_MAX);
        auto erx = xenbus::read_uint(xs_, dir + "/event-channel-rx", UINT32_MAX);
        if (etx && erx && opt_.split_event_channels) {
            c.split = true;
            c.tx_port = EvtchnPort(static_cast<std::uint32_t>(*etx));
            c.rx_port = EvtchnPort(static_cast<std::uint32_t>(*erx));
        } else {
            auto e = xenbus::read_uint(xs_, dir + "/event-channel", UINT32_MAX);
            if (!e) {
                HV_WARN("netback %s: %s: no event channel", bdir_.c_str(), dir.c_str());
                return fail(e.error());
            }
            c.tx_port = c.rx_port = EvtchnPort(static_cast<std::uint32_t>(*e));
        }
        c.rx_notify = rx_notify;
        c.tx = offered_tx();  // what probe() offered
        c.rx.sg = sg;
        c.rx.gso_tcpv4 = gso4;
        c.rx.gso_tcpv6 = gso6;
        c.rx.headroom = headroom;
        c.rate = rate_;
        c.rx_drain_timeout = opt_.rx_drain_timeout;
        c.mode = mode;
        c.persistent_pool = persistent_pool;
        c.spin = spin;
        c.stream_spin = opt_.stream_spin;
        c.mcast = mcast_;
        c.hash = hash_;
        cfgs.push_back(std::move(c));
    }
    // What the kernel may hand us for this frontend: partial checksums only if the frontend
    // takes csum_blank, TSO only with sg and the matching GSO feature.
    Features rx_off;
    rx_off.csum = csum4 && csum6;
    rx_off.tso4 = rx_off.csum && sg && gso4;
    rx_off.tso6 = rx_off.csum && sg && gso6;
    auto engines = make_engines(queues, rx_off);
    if (!engines) {
        return fail(engines.error());
    }
    std::vector<std::unique_ptr<Queue>> made;
    for (unsigned q = 0; q < queues; ++q) {
        auto svc = hv_.clone();
        if (!svc) {
            return fail(svc.error());
        }
        auto w = Queue::create(std::move(*svc), std::move((*engines)[q]), std::move(cfgs[q]),
                               halt_fd_);
        if (!w) {
            HV_WARN("netback %s: queue %u: %s", bdir_.c_str(), q, w.error().message().c_str());
            return fail(w.error());
        }
        made.push_back(std::move(*w));
    }
    queues_ = std::move(made);
    HV_TRY(connect_ctrl(queues));
    if (port_ && !port_->link_up()) {
        // A DPDK port is usable once a switch attached to its socket; until then every frame
        // the frontend sent would be dropped (ENETDOWN). hotplug-status, and so Connected,
        // wait for the link (service()); a reconnect's old one goes.
        awaiting_link_ = true;
        (void)xs_.rm(bdir_ + "/hotplug-status");
        HV_INFO("netback %s: DPDK port %s waits for a switch on its socket", bdir_.c_str(),
                port_->name().c_str());
        return {};
    }
    if (port_) {
        // The DPDK port's switch is there: what a hotplug script would report.
        HV_TRY(write_keys(xs_, bdir_, {{"hotplug-status", "connected"}}));
    }
    HV_INFO("netback %s: connected: %u queue(s), %s%s", bdir_.c_str(), queues,
            tap_                           ? "tap "
            : port_                        ? "DPDK port "
            : opt_.host == HostMode::sink ? "sink engine"
                                           : "loop engine",
            tap_ ? tap_->name().c_str() : port_ ? port_->name().c_str() : "");
    return {};
}

bool VifDevice::reevaluate() noexcept {
    auto bst = xenbus::read_optional(xs_, bdir_ + "/state");
    if (!bst) {
        return true;
    }
    if (!*bst) {
        disconnect();
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
            fail_device(errno_of(p.error()), "probe: " + p.error().message());
            return true;
        }
        (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateInitWait);
        bstate = XenbusState::XenbusStateInitWait;
        hotplug();  // Linux creates the vif right after InitWait: its hotplug script runs
    }
    if (connected()) {
        // `rate` is watched live (our root watch covers the directory).
        RateLimit r{};
        if (auto v = xenbus::read_optional(xs_, bdir_ + "/rate"); v && *v) {
            if (auto p = parse_rate(**v)) {
                r = *p;
            }
        }
        if (!(r == rate_)) {
            rate_ = r;
            for (auto& q : queues_) {
                q->set_rate(r);
            }
        }
        // feature-dynamic-multicast-control: the frontend may turn filtering on or off
        // while connected (Linux xen_mcast_ctrl_changed).
        if (mcast_) {
            mcast_->set_enabled(read_flag(xs_, fe_mcast_path_, false));
        }
    }

    switch (*fstate) {
        case XenbusState::XenbusStateInitialising:
            // A frontend starting over after our Closed is a reconnect only while the
            // toolstack keeps the device online: after `online = 0` (hvctl destroy/detach) the
            // vif stays Closed (Linux unregisters it then), or the toolstack waits in vain.
            if (!online && *bstate == XenbusState::XenbusStateClosed) {
                disconnect();
                return false;
            }
            if (*bstate == XenbusState::XenbusStateClosed ||
                (online && *bstate == XenbusState::XenbusStateConnected)) {
                // Reconnect: the frontend starts over.
                disconnect();
                failed_ = false;
                (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateInitWait);
            }
            break;
        case XenbusState::XenbusStateConnected:
            // netfront skips Initialised: connect only on Connected (sharp edge 16).
            if (failed_ || !probed_ || *bstate == XenbusState::XenbusStateClosing ||
                *bstate == XenbusState::XenbusStateClosed) {
                break;
            }
            if (!connected()) {
                if (backend_value("hotplug-status") == "error") {
                    break;  // no host side (hotplug-error says why): stay in InitWait
                }
                disconnect();
                if (auto c = connect(); !c) {
                    fail_device(errno_of(c.error()), "connecting: " + c.error().message());
                    break;
                }
                xenbus::clear_error(xs_, hv_.domid(), bdir_);
            }
            // SPEC: Linux netback's backend_switch_state()/hotplug_status_changed(): connected,
            // but Connected is published only once hotplug-status reads "connected" (now, or
            // when its watch fires; a DPDK vif: when its switch attached, service()).
            if (*bstate != XenbusState::XenbusStateConnected && hotplug_connected()) {
                (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateConnected);
            }
            break;
        case XenbusState::XenbusStateClosing:
            disconnect();
            (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateClosing);
            break;
        case XenbusState::XenbusStateClosed:
        case XenbusState::XenbusStateUnknown:
            disconnect();
            (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateClosed);
            if (!online) {
                return false;
            }
            break;
        case XenbusState::XenbusStateReconfiguring:
            // SPEC: Linux frontend_changed(): the frontend changed its xdp-headroom; read it
            // again and answer Reconfigured (the frontend then returns to Connected, and so do
            // we, above).
            if (*bstate == XenbusState::XenbusStateClosing ||
                *bstate == XenbusState::XenbusStateClosed) {
                break;
            }
            if (connected()) {
                const std::uint16_t h = read_xdp_headroom(xs_, fdir_);
                HV_INFO("netback %s: xdp-headroom %u", bdir_.c_str(), unsigned{h});
                for (auto& q : queues_) {
                    q->set_xdp_headroom(h);
                }
            }
            (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateReconfigured);
            break;
        default:  // Initialised, InitWait, Reconfigured: wait for Connected
            break;
    }
    return true;
}

Result<void> VifDevice::connect_ctrl(unsigned queues) {
    // SPEC: Linux connect_ctrl_ring(): no ctrl-ring-ref, no ring; a ref without its channel
    // is an error.
    auto ref = xenbus::read_uint(xs_, fdir_ + "/ctrl-ring-ref", UINT32_MAX);
    if (!ref) {
        return is_errno(ref.error(), ENOENT) ? Result<void>{} : fail(ref.error());
    }
    auto port = xenbus::read_uint(xs_, fdir_ + "/event-channel-ctrl", UINT32_MAX);
    if (!port) {
        HV_WARN("netback %s: ctrl-ring-ref without event-channel-ctrl", bdir_.c_str());
        return fail(port.error());
    }
    if (ctrl_page_ == nullptr) {  // one own frame per device, kept across connections
        auto f = hv_.memory().alloc_extent(1);
        if (!f) {
            return fail(f.error());
        }
        auto p = hv_.memory().frame(*f);
        if (!p) {
            return fail(p.error());
        }
        ctrl_frame_ = *f;
        ctrl_page_ = *p;
    }
    auto m = hv_.grants().map(ref_.frontend, GrantRef(static_cast<std::uint32_t>(*ref)), false);
    if (!m) {
        return fail(m.error());
    }
    auto ring = rings::BackRing<rings::NetifCtrlProtocol>::attach(m->page());
    if (!ring) {
        return fail(ring.error());
    }
    auto ev = hv_.evtchn().bind_interdomain(ref_.frontend,
                                            EvtchnPort(static_cast<std::uint32_t>(*port)));
    if (!ev) {
        return fail(ev.error());
    }
    ctrl_map_ = std::move(*m);
    ctrl_ring_ = *ring;
    ctrl_ev_ = std::move(*ev);
    ctrl_.emplace(queues);
    return {};
}

void VifDevice::serve_ctrl() noexcept {
    if (!ctrl_ || !ctrl_ring_) {
        return;
    }
    (void)ctrl_ev_.ack();
    // GUEST: every request is the ring's private copy; a key or mapping is grant-copied
    // from the frontend into our own frame, then into the handler's scratch.
    const CtrlCopyFn copy = [&](std::uint32_t gref, std::span<std::byte> out) -> std::int16_t {
        rings::gnttab_copy op{};
        op.source.u.ref = gref;
        op.source.domid = ref_.frontend.get();
        op.source.offset = 0;
        op.dest.u.gmfn = ctrl_frame_;
        op.dest.domid = rings::DOMID_SELF;
        op.dest.offset = 0;
        op.len = static_cast<std::uint16_t>(out.size());
        op.flags = rings::GNTCOPY_source_gref;
        if (auto r = hv_.grants().copy({&op, 1}); !r) {
            return rings::GNTST_general_error;
        }
        if (op.status == rings::GNTST_okay) {
            std::memcpy(out.data(), ctrl_page_, out.size());
        }
        return op.status;
    };
    // Bounded per pass, so a frontend producing as fast as we answer cannot hold the control
    // thread (every vif's): what is left is served at the next pass (≤ the statistics
    // interval away, or at the next event).
    for (unsigned round = 0; round < 4; ++round) {
        // RING_FINAL_CHECK_FOR_REQUESTS: req_event armed before we sleep, so a frontend
        // pushing with the notify check kicks us.
        auto more = ctrl_ring_->final_check_for_requests();
        if (!more) {
            // A producer index past the ring: disabled as for tx/rx (Linux: fatal).
            fail_device(EPROTO, "ctrl ring: " + more.error().message());
            return;
        }
        if (!*more) {
            break;
        }
        bool set = false;
        while (auto req = ctrl_ring_->take_request()) {
            const auto rsp = ctrl_->handle(*req, copy);
            set = set || (rsp.status == rings::XEN_NETIF_CTRL_STATUS_SUCCESS &&
                          req->type != rings::XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS &&
                          req->type != rings::XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
            ctrl_ring_->put_response(rsp);
        }
        if (set && hash_) {
            // Before the answers: a frontend that saw SUCCESS finds the setting in effect at
            // each queue's next rx pass.
            hash_->publish(ctrl_->settings());
            update_steering();
        }
        if (ctrl_ring_->push_responses()) {
            (void)ctrl_ev_.notify();
        }
    }
}

void VifDevice::update_steering() noexcept {
    if (!tap_ || queues_.size() < 2 || !ctrl_) {
        return;  // one queue (or not a tap): there is nothing to choose
    }
    const HashSettings& s = ctrl_->settings();
    if (s.algorithm != rings::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ) {
        stop_steering();
        return;
    }
    if (!steer_) {
        if (steer_failed_) {
            return;
        }
        auto p = SteeringProgram::create();
        if (!p) {
            steer_failed_ = true;
            HV_WARN("netback %s: no rx queue steering (bpf: %s): the kernel picks the queues",
                    bdir_.c_str(), p.error().message().c_str());
            return;
        }
        steer_.emplace(std::move(*p));
    }
    if (auto r = steer_->update(s, static_cast<unsigned>(queues_.size())); !r) {
        HV_LOG_RL(warn, "netback %s: steering update: %s", bdir_.c_str(),
                  r.error().message().c_str());
        return;
    }
    if (!steering_) {
        if (auto r = tap_->set_steering(steer_->fd()); !r) {
            steer_failed_ = true;
            HV_WARN("netback %s: TUNSETSTEERINGEBPF: %s", bdir_.c_str(),
                    r.error().message().c_str());
            steer_.reset();
            return;
        }
        steering_ = true;
    }
}

void VifDevice::stop_steering() noexcept {
    if (steering_ && tap_) {
        if (auto r = tap_->set_steering(-1); !r) {
            HV_LOG_RL(warn, "netback %s: steering detach: %s", bdir_.c_str(),
                      r.error().message().c_str());
        }
    }
    steering_ = false;
}

void VifDevice::pollable(std::vector<int>& out) const {
    if (ctrl_ && ctrl_ev_.fd() >= 0) {
        out.push_back(ctrl_ev_.fd());
    }
    if (awaiting_link_ && port_ && port_->link_fd() >= 0) {
        out.push_back(port_->link_fd());
    }
}

void VifDevice::service() noexcept {
    serve_ctrl();
    if (!awaiting_link_ || !port_) {
        return;
    }
    if (const int fd = port_->link_fd(); fd >= 0) {
        std::uint64_t n = 0;
        (void)!::read(fd, &n, sizeof n);  // cleared first: a later change wakes us again
    }
    if (!port_->link_up()) {
        return;
    }
    awaiting_link_ = false;
    if (auto w = write_keys(xs_, bdir_, {{"hotplug-status", "connected"}}); !w) {
        fail_device(errno_of(w.error()), "hotplug-status: " + w.error().message());
        return;
    }
    HV_INFO("netback %s: a switch attached to DPDK port %s", bdir_.c_str(),
            port_->name().c_str());
    // netfront connected first (netback connects on its Connected): now we follow.
    if (auto fe = xenbus::read_state(xs_, fdir_);
        fe && *fe == XenbusState::XenbusStateConnected) {
        (void)xenbus::switch_state(xs_, bdir_, XenbusState::XenbusStateConnected);
    }
}

void VifDevice::check_queues() noexcept {
    for (std::size_t q = 0; q < queues_.size(); ++q) {
        if (queues_[q]->halted()) {
            fail_device(EPROTO, "queue " + std::to_string(q) + ": " + queues_[q]->halt_reason());
            return;
        }
    }
}

void VifDevice::write_statistics() noexcept {
    const VifStatsSnapshot s = stats();
    if (s == last_stats_) {
        return;
    }
    const std::string d = "statistics/";
    auto w = write_keys(xs_, bdir_,
                        {{d + "tx_packets", std::to_string(s.tx_packets)},
                         {d + "tx_bytes", std::to_string(s.tx_bytes)},
                         {d + "rx_packets", std::to_string(s.rx_packets)},
                         {d + "rx_bytes", std::to_string(s.rx_bytes)},
                         {d + "tx_dropped", std::to_string(s.tx_dropped)},
                         {d + "rx_dropped", std::to_string(s.rx_dropped)},
                         {d + "tx_errors", std::to_string(s.tx_errors)},
                         {d + "tx_grant_copies", std::to_string(s.tx_grant_copies)},
                         {d + "tx_grant_maps", std::to_string(s.tx_grant_maps)},
                         {d + "rx_grant_copies", std::to_string(s.rx_grant_copies)},
                         {d + "rx_grant_maps", std::to_string(s.rx_grant_maps)},
                         {d + "tx_grant_pool", std::to_string(s.tx_grant_pool)},
                         {d + "tx_direct", std::to_string(s.tx_direct)},
                         {d + "rx_direct", std::to_string(s.rx_direct)},
                         {d + "rx_grant_pool", std::to_string(s.rx_grant_pool)},
                         {d + "pool_maps", std::to_string(s.pool_maps)},
                         {d + "poll_wakeups", std::to_string(s.poll_wakeups)},
                         {d + "stream_spin_hits", std::to_string(s.stream_spin_hits)},
                         {d + "sleeps", std::to_string(s.sleeps)},
                         {d + "spins_skipped_busy", std::to_string(s.spins_skipped_busy)},
                         {d + "missed_wakeups", std::to_string(s.missed_wakeups)},
                         {d + "notify_tx", std::to_string(s.notify_tx)},
                         {d + "notify_rx", std::to_string(s.notify_rx)}});
    if (w) {
        last_stats_ = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Backend

namespace {

bool is_own_vif_key(std::string_view path) noexcept {
    // hotplug-status is not one: Connected waits for it, and a toolstack may write it.
    return path.ends_with("/hotplug-error");
}

}  // namespace

Result<std::unique_ptr<Backend>> Backend::create(hvmin::Services& hv, xs::Client& xs,
                                                 BackendOptions opt) {
    const xenbus::DriverConfig cfg{.type = kType, .name = "netback",
                                   .stats_interval = opt.stats_interval};
    using Factory = xenbus::DeviceFactoryOf<VifDevice, hvmin::Services, BackendOptions>;
    return make<Backend>(hv.domid(), xs, cfg,
                         std::make_unique<Factory>(hv, xs, std::move(opt), is_own_vif_key));
}

}  // namespace hv::net
