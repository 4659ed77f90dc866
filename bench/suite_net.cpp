// hvbench net: guest↔guest TCP throughput (iperf3, 1 and 4 streams) and UDP round trips through
// hv-guest NICs (netfront) → netback (tap mode) → a Linux bridge or a private OVS netdev bridge,
// each beside two plain namespaces joined to the same kind of bridge by veth pairs.
// Every link lives in namespaces this suite creates (net_topo.hpp); the guests' NICs live in
// their own namespaces (hv-guest unshares one per domain). Layer: tools (top).
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <poll.h>
#include <time.h>

#include <cmath>
#include <limits>

#include "frontends/netfront.hpp"
#include "hv/subprocess.hpp"
#include "hvmin/client.hpp"
#include "net_topo.hpp"
#include "netback/device.hpp"
#include "netback/ovs.hpp"
#include "procs.hpp"
#include "suites.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::bench {
namespace {

using namespace std::chrono_literals;

std::string self_dir() {
    std::error_code ec;
    return std::filesystem::read_symlink("/proc/self/exe", ec).parent_path().string();
}

/// How netback and the frontends are configured for a case: the data path and the spin window
/// (netback's queues, hv-guest's NICs through HVKIT_POLL_US, the pkt64 frontend's loop). The
/// suffix-less variant is the baseline every earlier table measured (grant copy, no spinning).
struct NetVariant {
    const char* suffix;
    hv::net::DataMode mode;
    unsigned spin_us;
    const char* describe;
    bool pool = true;  ///< map mode: feature-hvkit-persistent-pool offered (kept mappings)
};
/// A spin window long enough to cover a round trip through the guests on this machine.
constexpr unsigned kPollUs = 200;
constexpr NetVariant kBaseline{"", hv::net::DataMode::copy, 0, "grant copy, no polling"};
constexpr NetVariant kMap{"_map", hv::net::DataMode::map, 0, "map mode, no polling"};
constexpr NetVariant kPoll{"_poll", hv::net::DataMode::copy, kPollUs, "grant copy, polling"};
constexpr NetVariant kMapPoll{"_map_poll", hv::net::DataMode::map, kPollUs, "map mode, polling"};
/// Map mode as Xen's netback maps: every batch maps and unmaps (no persistent pool).
constexpr NetVariant kMapNoPool{"_map_nopool", hv::net::DataMode::map, 0,
                                "map mode, map+unmap per batch, no polling", false};
constexpr NetVariant kMapPollNoPool{"_map_poll_nopool", hv::net::DataMode::map, kPollUs,
                                    "map mode, map+unmap per batch, polling", false};

void add_variant_config(CaseSpec& cs, const NetVariant& v) {
    cs.config.emplace_back("data_path", v.mode == hv::net::DataMode::map ? "map" : "copy");
    cs.config.emplace_back("poll_us", std::to_string(v.spin_us));
    cs.config.emplace_back("variant", v.describe);
    if (v.mode == hv::net::DataMode::map) {
        cs.config.emplace_back("persistent_pool", v.pool ? "1" : "0");
    }
}

/// One bridge kind: a host namespace with the bridge for our guests ("hvg") and the one for the
/// peer's namespaces ("hvp"), both Linux bridges or both OVS netdev bridges of one private OVS.
struct Fabric {
    bool ovs = false;
    std::optional<nt::NamedNs> host;
    std::optional<hv::net::OvsInstance> ovsd;
    std::filesystem::path ovs_dir;

    Result<void> add_port(const std::string& bridge, const std::string& port) {
        if (ovs) {
            return ovsd->add_port(bridge, port);
        }
        return nt::ip({"-n", host->name(), "link", "set", port, "master", bridge});
    }
};

Result<std::unique_ptr<Fabric>> make_fabric(bool ovs, const std::filesystem::path& rundir) {
    auto f = std::make_unique<Fabric>();
    f->ovs = ovs;
    auto h = nt::NamedNs::create(ovs ? "ovs" : "br");
    if (!h) {
        return fail(h.error());
    }
    f->host.emplace(std::move(*h));
    if (ovs) {
        f->ovs_dir = rundir / "ovs";
        std::filesystem::create_directories(f->ovs_dir);
        hv::net::OvsOptions o;
        o.netns_fd = f->host->fd();
        o.run_dir = f->ovs_dir.string();
        auto inst = hv::net::OvsInstance::start(o);
        if (!inst) {
            return fail(inst.error());
        }
        f->ovsd.emplace(std::move(*inst));
        HV_TRY(f->ovsd->add_bridge("hvg"));
        HV_TRY(f->ovsd->add_bridge("hvp"));
        HV_TRY(nt::ip({"-n", f->host->name(), "link", "set", "hvg", "up"}));
        HV_TRY(nt::ip({"-n", f->host->name(), "link", "set", "hvp", "up"}));
    } else {
        for (const char* br : {"hvg", "hvp"}) {
            HV_TRY(nt::ip({"-n", f->host->name(), "link", "add", br, "type", "bridge"}));
            HV_TRY(nt::ip({"-n", f->host->name(), "link", "set", br, "up"}));
        }
    }
    return f;
}

/// The peer: two namespaces with eth0 = one end of a veth pair whose other end is on "hvp".
struct PeerPair {
    std::optional<nt::NamedNs> a, b;
};

Result<PeerPair> make_peer(Fabric& f) {
    PeerPair p;
    auto a = nt::NamedNs::create("pa");
    if (!a) {
        return fail(a.error());
    }
    p.a.emplace(std::move(*a));
    auto b = nt::NamedNs::create("pb");
    if (!b) {
        return fail(b.error());
    }
    p.b.emplace(std::move(*b));
    const std::string& hn = f.host->name();
    int i = 1;
    for (auto* ns : {&*p.a, &*p.b}) {
        const std::string port = "vp" + std::to_string(i);
        HV_TRY(nt::ip({"-n", hn, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                        "netns", ns->name()}));
        HV_TRY(f.add_port("hvp", port));
        HV_TRY(nt::ip({"-n", hn, "link", "set", port, "up"}));
        HV_TRY(nt::ip({"-n", ns->name(), "addr", "add", "10.78.0." + std::to_string(i) + "/24",
                        "dev", "eth0"}));
        HV_TRY(nt::ip({"-n", ns->name(), "link", "set", "eth0", "up"}));
        ++i;
    }
    HV_TRY(nt::wait_reachable(p.b->fd(), "10.78.0.1", 10000));
    return p;
}

/// Ours: an in-process hv-min (BenchHost), netback (tap mode, taps in the fabric's host
/// namespace) and two hv-guest domains with one vif each on "hvg".
struct GuestPair {
    std::unique_ptr<BenchHost> host;
    std::unique_ptr<xs::Client> xs;
    std::optional<hvmin::Services> be_svc;
    std::unique_ptr<xs::Client> be_xs;
    std::unique_ptr<hv::net::Backend> backend;
    std::vector<DomId> doms;
    UniqueFd ns_a, ns_b;

    ~GuestPair() {
        if (host) {
            for (DomId d : doms) {
                (void)host->toolstack().destroy(d);
                (void)host->toolstack().wait_for_death(d, 5s);
            }
        }
        backend.reset();
        be_xs.reset();
        be_svc.reset();
        xs.reset();
        host.reset();
    }

    Result<UniqueFd> guest(Fabric& f, const std::string& name, unsigned octet, unsigned spin_us) {
        const auto dir = host->rundir() / name;
        std::filesystem::create_directories(dir);
        const std::string pidfile = (dir / "ns.pid").string();
        const std::string script =
            "i=0; while ! ip link show eth0 >/dev/null 2>&1; do i=$((i+1)); "
            "[ $i -gt 400 ] && echo no eth0 && exit 90; sleep 0.05; done; "
            "ip addr add 10.77.0." + std::to_string(octet) + "/24 dev eth0 && ip link set eth0 up && "
            "echo $$ > " + pidfile + ".new && mv " + pidfile + ".new " + pidfile + " && exec sleep 600";
        hvmin::DomainConfig cfg;
        cfg.name = name;
        cfg.memory_pages = 256;
        cfg.argv = {self_dir() + "/hv-guest", "--nbd-dir", dir.string(), "--connect-timeout",
                    "10000", "--", "/bin/sh", "-c", script};
        cfg.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                   "HVKIT_POLL_US=" + std::to_string(spin_us)};
        auto d = host->toolstack().create(cfg);
        if (!d) {
            return fail(d.error());
        }
        doms.push_back(*d);
        xenbus::DeviceSpec spec;
        spec.type = "vif";
        spec.frontend = *d;
        spec.backend = DomId(0);
        spec.devid = 0;
        const std::string mac = "00:16:3e:00:01:" + std::to_string(10 + octet);
        spec.backend_keys = {{"mac", mac}, {"bridge", "hvg"}, {"handle", "0"},
                             {"script", f.ovs ? "vif-openvswitch" : "vif-bridge"}};
        spec.frontend_keys = {{"mac", mac}, {"handle", "0"}};
        HV_TRY(xenbus::create_device(*xs, spec));
        // The guest's script writes its pid once eth0 has its address; its namespace is the
        // guest's (the NIC's) namespace. Poll the file, bounded.
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (!std::filesystem::exists(pidfile)) {
            if (std::chrono::steady_clock::now() > deadline) {
                std::fprintf(stderr, "hvbench net: guest %s did not bring eth0 up\n", name.c_str());
                return fail(timed_out_error());
            }
            std::this_thread::sleep_for(20ms);
        }
        std::ifstream in(pidfile);
        long pid = 0;
        in >> pid;
        UniqueFd fd(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(),
                           O_RDONLY | O_CLOEXEC));
        if (!fd) {
            return fail_errno();
        }
        return fd;
    }
};

Result<std::unique_ptr<GuestPair>> make_guests(Fabric& f, const NetVariant& v) {
    auto g = std::make_unique<GuestPair>();
    auto h = BenchHost::create(true);
    if (!h) {
        return fail(h.error());
    }
    g->host = std::move(*h);
    const auto sock = (g->host->rundir() / "xenstored.sock").string();
    auto x = xs::Client::connect(sock);
    if (!x) {
        return fail(x.error());
    }
    g->xs = std::move(*x);
    auto s = hvmin::connect_dom0(g->host->rundir());
    if (!s) {
        return fail(s.error());
    }
    g->be_svc.emplace(std::move(*s));
    auto bx = xs::Client::connect(sock);
    if (!bx) {
        return fail(bx.error());
    }
    g->be_xs = std::move(*bx);
    hv::net::BackendOptions o;
    o.host = hv::net::HostMode::tap;
    o.netns_fd = f.host->fd();
    o.max_queues = 2;
    o.mode = v.mode;
    o.spin = std::chrono::microseconds(v.spin_us);
    if (f.ovs) {
        o.ovs_db = f.ovsd->db();
    }
    auto b = hv::net::Backend::create(*g->be_svc, *g->be_xs, o);
    if (!b) {
        return fail(b.error());
    }
    g->backend = std::move(*b);
    g->backend->start();
    auto a = g->guest(f, "ga", 1, v.spin_us);
    if (!a) {
        return fail(a.error());
    }
    g->ns_a = std::move(*a);
    auto bb = g->guest(f, "gb", 2, v.spin_us);
    if (!bb) {
        return fail(bb.error());
    }
    g->ns_b = std::move(*bb);
    HV_TRY(nt::wait_reachable(g->ns_b.get(), "10.77.0.1", 10000));
    return g;
}

/// Whether --case lets any of `names` run (skip set-up otherwise).
bool wanted(const Context& ctx, const std::vector<std::string>& names) {
    for (const auto& n : names) {
        if (ctx.options().selects(n)) {
            return true;
        }
    }
    return false;
}

Result<void> run_fabric(Context& ctx, bool ovs) {
    const std::string kind = ovs ? "ovs" : "bridge";
    const NetVariant variants[] = {kBaseline, kMap, kMapPoll};
    auto names = [&](const NetVariant& v) {
        return std::vector<std::string>{"tcp_" + kind + "_1stream" + v.suffix,
                                        "tcp_" + kind + "_4streams" + v.suffix,
                                        "udp_rtt_" + kind + v.suffix};
    };
    bool any = false;
    for (const auto& v : variants) {
        any = any || wanted(ctx, names(v));
    }
    if (!any) {
        return {};
    }
    const auto rundir = std::filesystem::temp_directory_path() /
                        ("hvbench-net-" + std::to_string(::getpid()) + "-" + kind);
    std::filesystem::create_directories(rundir);
    struct RmDir {
        std::filesystem::path p;
        ~RmDir() {
            std::error_code ec;
            std::filesystem::remove_all(p, ec);
        }
    } rm{rundir};
    std::fprintf(stderr, "hvbench net: setting up %s (bridges, peer namespaces)\n", kind.c_str());
    auto fab = make_fabric(ovs, rundir);
    if (!fab) {
        return fail(fab.error());
    }
    auto peer = make_peer(**fab);
    if (!peer) {
        return fail(peer.error());
    }
    PeerPair& p = *peer;
    const unsigned secs = static_cast<unsigned>(ctx.scale(5, 1));
    const std::string peer_name = ovs ? "veth_namespaces_ovs_netdev" : "veth_namespaces_bridge";
    const std::string fabric_cfg = ovs ? "ovs_netdev_private" : "linux_bridge";
    for (const auto& v : variants) {
        const auto n = names(v);
        if (!wanted(ctx, n)) {
            continue;
        }
        std::fprintf(stderr, "hvbench net: %s guests and netback (%s)\n", kind.c_str(), v.describe);
        auto guests = make_guests(**fab, v);
        if (!guests) {
            return fail(guests.error());
        }
        GuestPair& g = **guests;
        // CPU per byte moved, per run: both guests' domains (hv-guest: tap, netfront; from
        // hv-min's per-domain accounting) and this process (netback's queue threads, which
        // also write the taps and so run the bridge in their syscalls, and hv-min's core doing
        // the grant copies). It moves less than Gbit/s with the machine's load (bench/README.md).
        auto guests_cpu_ns = [&]() -> double {
            double ns = 0;
            for (const auto& d : g.host->toolstack().list().value_or(
                     std::vector<hvmin::DomainStatus>{})) {
                ns += static_cast<double>(d.cpu_time_ns);
            }
            return ns;
        };
        auto self_cpu_ns = [] {
            timespec ts{};
            ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
            return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
        };
        for (unsigned streams : {1u, 4u}) {
            std::vector<double> guest_ns_per_kb, backend_ns_per_kb;
            CaseSpec spec{n[streams == 1 ? 0 : 1],
                          "Gbit/s",
                          peer_name,
                          true,
                          {{"fabric", fabric_cfg},
                           {"streams", std::to_string(streams)},
                           {"seconds", std::to_string(secs)},
                           {"tool", "iperf3"},
                           {"path", "hv-guest netfront -> netback tap -> bridge"}}};
            add_variant_config(spec, v);
            auto cpu_figures = [&](std::vector<std::pair<std::string, std::string>>& cfg) {
                if (guest_ns_per_kb.empty()) {
                    return;
                }
                char buf[32];
                std::snprintf(buf, sizeof buf, "%.0f", percentile(guest_ns_per_kb, 50));
                cfg.emplace_back("cpu_ns_per_kb_guests", buf);
                std::snprintf(buf, sizeof buf, "%.0f", percentile(backend_ns_per_kb, 50));
                cfg.emplace_back("cpu_ns_per_kb_netback_hvmin", buf);
            };
            HV_TRY(ctx.run_case(
                spec,
                [&]() -> Result<Sample> {
                    const double g0 = guests_cpu_ns();
                    const double b0 = self_cpu_ns();
                    auto r = nt::iperf3_gbps(g.ns_a.get(), g.ns_b.get(), "10.77.0.1", streams, secs);
                    if (!r) {
                        return fail(r.error());
                    }
                    const double kb = *r * 1e9 / 8 * secs / 1024;
                    if (kb > 0) {
                        guest_ns_per_kb.push_back((guests_cpu_ns() - g0) / kb);
                        backend_ns_per_kb.push_back((self_cpu_ns() - b0) / kb);
                        std::fprintf(stderr, "hvbench net/%s: CPU per KiB: guests %.0f ns, "
                                     "netback+hv-min %.0f ns\n", spec.name.c_str(),
                                     guest_ns_per_kb.back(), backend_ns_per_kb.back());
                    }
                    return Sample{*r};
                },
                [&]() -> Result<Sample> {
                    auto r = nt::iperf3_gbps(p.a->fd(), p.b->fd(), "10.78.0.1", streams, secs);
                    if (!r) {
                        return fail(r.error());
                    }
                    return Sample{*r};
                },
                cpu_figures));
        }
        const unsigned count = static_cast<unsigned>(ctx.scale(20000, 300));
        CaseSpec rtt{n[2],
                     "ns",
                     peer_name,
                     false,
                     {{"fabric", fabric_cfg},
                      {"payload_bytes", "64"},
                      {"round_trips", std::to_string(count)}}};
        add_variant_config(rtt, v);
        HV_TRY(ctx.run_case(
            rtt, [&] { return nt::udp_rtt(g.ns_a.get(), g.ns_b.get(), "10.77.0.1", count); },
            [&] { return nt::udp_rtt(p.a->fd(), p.b->fd(), "10.78.0.1", count); }));
    }
    return {};
}

// ---- 64-byte packet rate, rings only: netfront (helper domain) -> netback loop engine ----

struct FrontState {
    std::unique_ptr<xs::Client> xs;
    std::unique_ptr<netfront::Device> dev;
};

Result<std::string> front_open(hvmin::Services& svc, FrontState& st, std::uint32_t devid) {
    st.dev.reset();  // the previous variant's vif closes first
    if (!st.xs) {
        auto x = xs::Client::from_fd(svc.take_xenstore_fd());
        if (!x) {
            return fail(x.error());
        }
        st.xs = std::move(*x);
    }
    netfront::Options o;
    o.max_queues = 1;
    auto d = netfront::Device::create(svc, *st.xs, devid, o);
    if (!d) {
        return fail(d.error());
    }
    HV_TRY((*d)->wait_connected(std::chrono::milliseconds(kWaitTimeoutMs)));
    st.dev = std::move(*d);
    return std::string("ok");
}

/// How a pkt64 case counts a frame done.
enum class Pkt64Path {
    loop,  ///< round trip: back on the rx ring from netback's loop engine
    tx,    ///< one way: answered OKAY on the tx ring by netback, whose sink engine dropped it
};

/// Sends `count` 64-byte frames (at most `window` unanswered) from CPU `cpu` (< 0: unpinned).
/// loop: counts them back from the loop engine. After 200 ms without a frame back (a stall:
/// netback or this loop starved of CPU on a loaded machine, or a lost wake-up) the frames out
/// are written off so the window reopens; the loop engine keeps order, so frames arriving
/// later are those written off first and are taken back from the write-off. Only frames still
/// missing 2 s after that are lost. The time (and so the rate) stops when the last frame is
/// back or written off.
/// tx: counts their tx responses; every one must be OKAY (an error response or a frame
/// unanswered for 2 s fails the run: nothing may be lost on the way into netback).
/// "ok <elapsed ns> <done by then> <lost> <stalls> <longest stall ms> <sleeps> <spins skipped>
/// [rings at the first stall]": sleeps = waits that slept in poll(2); spins skipped = waits
/// with a spin window that slept at once, the CPUs being oversubscribed.
Result<std::string> front_pkt64(FrontState& st, Pkt64Path path, std::uint64_t count,
                                std::uint64_t window, std::chrono::microseconds spin_window,
                                int cpu) {
    if (!st.dev) {
        return fail_errno(ENOTCONN);
    }
    ScopedPin pin(cpu);  // one CPU, as each testpmd process of the peer
    std::vector<std::byte> frame(64, std::byte{0x5a});
    for (int i = 0; i < 6; ++i) {
        frame[static_cast<std::size_t>(i)] = std::byte{0xff};                // broadcast
        frame[static_cast<std::size_t>(6 + i)] = std::byte{static_cast<unsigned char>(0x02 + i)};
    }
    frame[12] = std::byte{0x88};  // local experimental ethertype 0x88B5
    frame[13] = std::byte{0xb5};
    // Bursts of 32 like testpmd's: one producer-index update (and at most one kick) per burst.
    std::array<std::span<const std::byte>, 32> burst;
    burst.fill(frame);
    std::vector<pollfd> pfds;
    for (int fd : st.dev->pollable_fds()) {
        pfds.push_back(pollfd{fd, POLLIN, 0});
    }
    const netfront::Counters c0 = st.dev->counters();
    std::uint64_t sent = 0, received = 0, written_off = 0, stalls = 0, received_by_end = 0;
    std::chrono::milliseconds longest_stall{0};
    std::string first_stall;  // both rings' indices when the first stall was seen
    int idle_ms = 0;
    std::uint64_t sleeps = 0, spins_skipped = 0;
    hv::SpinPolicy spin(spin_window);  // like testpmd, poll the rings while frames flow
    const auto t0 = std::chrono::steady_clock::now();
    auto last_back = t0;
    std::optional<std::chrono::steady_clock::time_point> t_end;
    while (received < count) {
        if (!t_end && received + written_off >= count) {
            t_end = std::chrono::steady_clock::now();  // what is missing now is late or lost
            received_by_end = received;
        }
        while (sent < count && sent - received - written_off < window) {
            const std::uint64_t room = std::min<std::uint64_t>(
                {count - sent, window - (sent - received - written_off), burst.size()});
            auto k = st.dev->send_burst(0, {burst.data(), static_cast<std::size_t>(room)});
            if (!k) {
                return fail(k.error());
            }
            if (*k == 0) {
                break;  // busy: responses first
            }
            sent += *k;
        }
        // Each frame is lent in its rx page (no copy, no allocation) and let go, as testpmd's
        // rxonly frees its mbufs. Unarmed: while this loop spins the backend sends no event.
        std::size_t n =
            st.dev->poll_each([](const netfront::PacketView&) {}, netfront::Device::Arm::no);
        if (path == Pkt64Path::tx) {
            const netfront::Counters c = st.dev->counters();
            if (c.tx_errors != c0.tx_errors || n != 0) {
                return fail(bad_data_error());  // an error response, or a frame from a sink
            }
            n = static_cast<std::size_t>(c.tx_packets - c0.tx_packets - received);
        }
        if (n > 0) {
            const auto now = std::chrono::steady_clock::now();
            if (idle_ms >= 200) {
                longest_stall = std::max(
                    longest_stall,
                    std::chrono::duration_cast<std::chrono::milliseconds>(now - last_back));
            }
            last_back = now;
            received += n;
            written_off -= std::min<std::uint64_t>(n, written_off);  // late, not lost
            idle_ms = 0;
            spin.worked();
            continue;
        }
        // No spinning while the CPUs are oversubscribed: the backend we wait for would wait
        // for a CPU instead (netback/README.md "Polling").
        auto b = spin.budget();
        if (b.count() > 0 && hv::cpus_oversubscribed()) {
            b = std::chrono::microseconds{0};
            ++spins_skipped;
        }
        if (b.count() > 0 && hv::spin_until([&] { return st.dev->responses_pending(); }, b,
                                            hv::SpinYield::every_64)) {
            continue;
        }
        if (st.dev->arm()) {
            continue;  // responses came while arming: no sleep
        }
        ++sleeps;
        const int pr = ::poll(pfds.data(), pfds.size(), 50);
        if (pr < 0 && errno != EINTR) {
            return fail_errno();
        }
        if (pr != 0) {
            continue;
        }
        idle_ms += 50;
        if (st.dev->phase() != netfront::Phase::connected) {
            return fail(std::make_error_code(std::errc::not_connected));
        }
        if (path == Pkt64Path::tx) {
            if (idle_ms >= 2000) {
                return fail(timed_out_error());
            }
            continue;
        }
        if (sent == received + written_off) {
            // Nothing out that is not written off: wait for late frames, 2 s at most.
            if (idle_ms >= 2200) {
                break;
            }
            continue;
        }
        if (idle_ms == 200) {
            if (++stalls == 1) {
                first_stall = st.dev->ring_state();
            }
            written_off = sent - received;
            if (written_off > count / 10 + window) {
                return fail(timed_out_error());
            }
        }
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        t_end.value_or(std::chrono::steady_clock::now()) - t0)
                        .count();
    for (char& c : first_stall) {
        if (c == '\n') {
            c = ' ';
        }
    }
    return "ok " + std::to_string(ns) + " " + std::to_string(t_end ? received_by_end : received) +
           " " + std::to_string(count - received) + " " + std::to_string(stalls) + " " +
           std::to_string(longest_stall.count()) + " " + std::to_string(sleeps) + " " +
           std::to_string(spins_skipped) + (first_stall.empty() ? "" : " " + first_stall);
}

/// 2 MiB hugepages for the DPDK peer, set up for one run and given back after: the pool
/// (/proc/sys/vm/nr_hugepages) raised by `pages`, a hugetlbfs mounted at `dir`. Failure leaves
/// everything as it was (the peer then runs with --no-huge). Giving back subtracts what this run
/// added from the pool as it is then (not a write of the old value: another process may have
/// changed the pool meanwhile), and both steps are logged on stderr, where the smoke test
/// checks them (the machine-wide value is not ours to compare).
class HugePages {
public:
    static Result<std::unique_ptr<HugePages>> setup(const std::filesystem::path& dir,
                                                    long pages) {
        std::unique_ptr<HugePages> h(new HugePages);
        h->dir_ = dir;
        auto before = read_pool();
        if (!before) {
            return fail(before.error());
        }
        const auto raised = write_pool(*before + pages);
        auto now = read_pool();
        if (now && *now > *before) {
            h->added_ = *now - *before;  // what the kernel gave: the destructor returns it
            std::fprintf(stderr, "hvbench net: hugepages: pool raised by %ld (%ld -> %ld)\n",
                         h->added_, *before, *now);
        }
        if (!raised || !now || *now < *before + pages) {
            return fail_errno(ENOMEM);
        }
        std::filesystem::create_directories(dir);
        if (::mount("nodev", dir.c_str(), "hugetlbfs", MS_NOSUID | MS_NODEV, "pagesize=2M") != 0) {
            return fail_errno();
        }
        h->mounted_ = true;
        return h;
    }
    ~HugePages() {
        if (mounted_) {
            (void)::umount2(dir_.c_str(), MNT_DETACH);
        }
        if (added_ > 0) {
            auto now = read_pool();
            if (!now) {
                std::fprintf(stderr, "hvbench net: hugepages: cannot read the pool to give back "
                                     "%ld pages\n", added_);
                return;
            }
            const long target = std::max(0L, *now - added_);
            const bool ok = static_cast<bool>(write_pool(target));
            const long after = read_pool().value_or(-1);
            std::fprintf(stderr, "hvbench net: hugepages: gave back %ld (%ld -> %ld)%s\n",
                         *now - after, *now, after, ok ? "" : ": write refused");
        }
    }
    const std::filesystem::path& dir() const noexcept { return dir_; }

private:
    HugePages() = default;
    static constexpr const char* kPool = "/proc/sys/vm/nr_hugepages";
    static Result<long> read_pool() {
        std::ifstream in(kPool);
        long v = -1;
        if (!(in >> v) || v < 0) {
            return fail_errno(EIO);
        }
        return v;
    }
    static Result<void> write_pool(long v) {
        std::ofstream out(kPool);
        if (!(out << v << "\n") || !out.flush()) {
            return fail_errno(EIO);
        }
        return {};
    }
    std::filesystem::path dir_;
    long added_ = 0;  // pages this run added to the pool
    bool mounted_ = false;
};

/// The DPDK peer of pkt64: Debian's dpdk-testpmd twice, a vhost-user port (rxonly) and a
/// virtio-user port (txonly, 64-byte frames) joined by a unix socket in `dir`, each process on
/// one CPU (main and forwarding lcore share it; the main lcore only sleeps between stats).
/// Memory: `huge` (single-file segments, so virtio-user can share them with vhost-user in few
/// regions), or --no-huge (memfd) when there are none. Value: median of the vhost side's
/// per-second Rx-pps after one warm-up second.
Result<Sample> dpdk_pkt64(const std::string& testpmd, const std::filesystem::path& dir,
                          const HugePages* huge, unsigned seconds) {
    const std::string tag = "hvb-" + std::to_string(::getpid());
    const std::string sock = (dir / "vhost.sock").string();
    std::error_code ec;
    std::filesystem::remove(sock, ec);
    auto eal = [&](const std::string& cpu, const std::string& prefix, const std::string& vdev) {
        std::vector<std::string> a{testpmd, "--lcores", "0@" + cpu + ",1@" + cpu, "--no-pci",
                                   "-m", "256", "--file-prefix", prefix, "--vdev", vdev};
        if (huge != nullptr) {
            a.insert(a.end(), {"--huge-dir", huge->dir().string(), "--single-file-segments"});
        } else {
            a.emplace_back("--no-huge");
        }
        a.insert(a.end(), {"--", "--nb-cores=1", "--total-num-mbufs=8192", "--stats-period", "1"});
        return a;
    };
    struct RunDirs {
        std::vector<std::string> prefixes;
        ~RunDirs() {
            std::error_code e;
            for (const auto& p : prefixes) {
                std::filesystem::remove_all("/var/run/dpdk/" + p, e);  // testpmd's runtime dir
            }
        }
    } run_dirs{{tag + "-vh", tag + "-vu"}};
    auto vh_argv = eal("0", tag + "-vh", "net_vhost0,iface=" + sock + ",queues=1");
    vh_argv.push_back("--forward-mode=rxonly");
    auto vh = Subprocess::spawn(vh_argv);
    if (!vh) {
        return fail(vh.error());
    }
    // The vhost side creates the socket once its port is up; bounded wait.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!std::filesystem::exists(sock)) {
        if (std::chrono::steady_clock::now() > deadline || !vh->running()) {
            (void)vh->wait(0);
            std::fprintf(stderr, "hvbench net: dpdk-testpmd (vhost-user) did not start:\n%s\n",
                         vh->output().c_str());
            return fail(timed_out_error());
        }
        (void)vh->wait(20);
    }
    auto vu_argv = eal("1", tag + "-vu", "net_virtio_user0,path=" + sock + ",queues=1");
    vu_argv.push_back("--forward-mode=txonly");
    vu_argv.push_back("--txpkts=64");
    auto vu = Subprocess::spawn(vu_argv);
    if (!vu) {
        return fail(vu.error());
    }
    // The vhost side's per-second rates; those before the first packet arrived are zero.
    auto rates = [&] {
        std::vector<double> pps;
        const std::string& out = vh->output();
        for (std::size_t at = out.find("Rx-pps:"); at != std::string::npos;
             at = out.find("Rx-pps:", at + 1)) {
            const double v = std::strtod(out.c_str() + at + 7, nullptr);
            if (v > 0 || !pps.empty()) {
                pps.push_back(v);
            }
        }
        return pps;
    };
    // Start-up (the virtio-user side connecting) takes a while on a loaded machine: measure
    // from the first second with packets, bounded.
    const auto start_by = std::chrono::steady_clock::now() + 20s;
    while (rates().empty() && vu->running() && std::chrono::steady_clock::now() < start_by) {
        (void)vh->wait(100);  // collects output while it runs
    }
    (void)vh->wait(static_cast<int>(seconds * 1000 + 1500));
    const bool vu_alive = vu->running();
    std::vector<double> pps = rates();  // before stopping: later seconds see no packets
    vu->terminate();
    vh->terminate();
    if (pps.size() > 2) {
        pps.erase(pps.begin());  // the first second with packets is partial
    }
    if (!vu_alive || pps.empty()) {
        std::fprintf(stderr, "hvbench net: dpdk-testpmd peer gave no rate:\n%s\n%s\n",
                     vh->output().c_str(), vu->output().c_str());
        return fail(bad_data_error());
    }
    std::sort(pps.begin(), pps.end());
    return Sample{pps[pps.size() / 2]};
}

/// The pkt64 cases, one way first (the peer's shape), then the round trips.
struct Pkt64Case {
    Pkt64Path path;
    NetVariant variant;
    std::string name() const {
        return std::string(path == Pkt64Path::tx ? "pkt64_rings_tx" : "pkt64_rings_loop") +
               variant.suffix;
    }
};
const Pkt64Case kPkt64Cases[] = {
    {Pkt64Path::tx, kBaseline},      {Pkt64Path::tx, kMap},
    {Pkt64Path::tx, kPoll},          {Pkt64Path::tx, kMapPoll},
    {Pkt64Path::loop, kBaseline},    {Pkt64Path::loop, kMapNoPool},
    {Pkt64Path::loop, kMap},         {Pkt64Path::loop, kPoll},
    {Pkt64Path::loop, kMapPollNoPool}, {Pkt64Path::loop, kMapPoll},
};

/// Waits (bounded: statistics are written every 100 ms here) until netback's statistics for
/// the vif show `tx_packets` frames taken, with no tx error and no tx drop.
Result<void> check_tx_statistics(xs::Client& xs, DomId fe, std::uint32_t devid,
                                 std::uint64_t tx_packets) {
    const std::string dir =
        xenbus::backend_dir(DomId(0), "vif", fe, devid) + "/statistics/";
    auto get = [&](const char* key) { return xenbus::read_uint(xs, dir + key, UINT64_MAX); };
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    for (;;) {
        auto p = get("tx_packets");
        auto e = get("tx_errors");
        auto d = get("tx_dropped");
        if (p && e && d && *p == tx_packets && *e == 0 && *d == 0) {
            return {};
        }
        if (std::chrono::steady_clock::now() > deadline) {
            std::fprintf(stderr, "hvbench net: netback counted tx_packets %lld (want %llu), "
                         "tx_errors %lld, tx_dropped %lld\n",
                         p ? static_cast<long long>(*p) : -1LL,
                         static_cast<unsigned long long>(tx_packets),
                         e ? static_cast<long long>(*e) : -1LL,
                         d ? static_cast<long long>(*d) : -1LL);
            return fail(bad_data_error());
        }
        std::this_thread::sleep_for(20ms);
    }
}

/// netback's queue wait counters (statistics/, summed over the vif's queues).
struct WaitCounts {
    std::uint64_t sleeps = 0, poll_wakeups = 0, skipped = 0, stream_spins = 0;
};

/// Steal time of `cpu` so far (/proc/stat, USER_HZ ticks; 0 when unknown): the time the host
/// ran something else while this vCPU had work. A run slowed by the host shows it.
std::uint64_t steal_ticks(int cpu) {
    std::ifstream in("/proc/stat");
    const std::string want = "cpu" + std::to_string(cpu) + " ";
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(want, 0) == 0) {
            std::istringstream is(line.substr(want.size()));
            std::uint64_t v[8] = {};  // user nice system idle iowait irq softirq steal
            for (auto& x : v) {
                is >> x;
            }
            return is ? v[7] : 0;
        }
    }
    return 0;
}

/// One line per run on stderr: how often each side slept, how often a spin window was given
/// up because more threads were runnable than CPUs (hv::cpus_oversubscribed()), and the
/// host's steal time on the two CPUs during the run, and how often netback's stream spin
/// (netback QueueConfig::stream_spin) found the next requests. A polling run that sleeps is a
/// sleep/wake run, whatever its spin window (issue #5: the bimodal pkt64_rings_tx_map_poll).
/// netback's counters are those of its last statistics write (every 100 ms; after
/// check_tx_statistics, one from after the run's last frame).
void report_waits(xs::Client& xs, const std::string& name, DomId fe, std::uint32_t devid,
                  std::uint64_t fe_sleeps, std::uint64_t fe_skipped, WaitCounts& last,
                  std::uint64_t steal_be, std::uint64_t steal_fe) {
    const std::string dir = xenbus::backend_dir(DomId(0), "vif", fe, devid) + "/statistics/";
    auto get = [&](const char* key) {
        auto v = xenbus::read_uint(xs, dir + key, UINT64_MAX);
        return v ? *v : 0;
    };
    const WaitCounts now{get("sleeps"), get("poll_wakeups"), get("spins_skipped_busy"),
                         get("stream_spin_hits")};
    const auto hz = static_cast<std::uint64_t>(std::max(1L, ::sysconf(_SC_CLK_TCK)));
    std::fprintf(stderr,
                 "hvbench net/%s: frontend slept %llu times (spin skipped, CPUs "
                 "oversubscribed: %llu); netback slept %llu, polled %llu, spin skipped %llu; "
                 "steal %llu / %llu ms (netback / frontend CPU); netback stream spins %llu\n",
                 name.c_str(), static_cast<unsigned long long>(fe_sleeps),
                 static_cast<unsigned long long>(fe_skipped),
                 static_cast<unsigned long long>(now.sleeps - last.sleeps),
                 static_cast<unsigned long long>(now.poll_wakeups - last.poll_wakeups),
                 static_cast<unsigned long long>(now.skipped - last.skipped),
                 static_cast<unsigned long long>(steal_be * 1000 / hz),
                 static_cast<unsigned long long>(steal_fe * 1000 / hz),
                 static_cast<unsigned long long>(now.stream_spins - last.stream_spins));
    last = now;
}

Result<std::string> run_pkt64_case(Context& ctx) {
    std::vector<std::string> names;
    for (const auto& c : kPkt64Cases) {
        names.push_back(c.name());
    }
    if (!wanted(ctx, names)) {
        return std::string("ok");
    }
    std::string why_no_peer;
    const char* path_env = std::getenv("PATH");
    std::string testpmd;
    for (std::string dirs = path_env ? path_env : "/usr/bin:/usr/sbin"; !dirs.empty();) {
        const auto c = dirs.find(':');
        const std::string d = dirs.substr(0, c);
        dirs = c == std::string::npos ? "" : dirs.substr(c + 1);
        if (::access((d + "/dpdk-testpmd").c_str(), X_OK) == 0) {
            testpmd = d + "/dpdk-testpmd";
            break;
        }
    }
    if (testpmd.empty()) {
        why_no_peer = "dpdk-testpmd not found in PATH (Debian 12 ships it in dpdk-dev: "
                      "scripts/install-deps.sh)";
    }
    // Placement, as the peer's two testpmd processes (CPU 0: vhost-user, CPU 1: virtio-user):
    // netback's threads and hv-min's (which carry out its grant copies, as Xen does on the
    // backend's CPU) on the first CPU we may use, the frontend domain on the second.
    const int be_cpu = allowed_cpu(0);
    const int fe_cpu = allowed_cpu(1);
    const std::string placement =
        be_cpu < 0 ? std::string("unpinned (one CPU allowed)")
                   : "netback queue and hv-min on CPU " + std::to_string(be_cpu) +
                         ", frontend on CPU " + std::to_string(fe_cpu);
    std::unique_ptr<BenchHost> host;
    {
        ScopedPin pin(be_cpu);  // hv-min's threads start here and stay
        auto h = BenchHost::create(true);
        if (!h) {
            return fail(h.error());
        }
        host = std::move(*h);
    }
    const auto sock = (host->rundir() / "xenstored.sock").string();
    auto x = xs::Client::connect(sock);
    if (!x) {
        return fail(x.error());
    }
    auto s = hvmin::connect_dom0(host->rundir());
    if (!s) {
        return fail(s.error());
    }
    std::optional<hvmin::Services> be_svc;
    be_svc.emplace(std::move(*s));
    auto bx = xs::Client::connect(sock);
    if (!bx) {
        return fail(bx.error());
    }
    auto d = host->spawn("bench-netfront", "net", 4096, false);
    if (!d) {
        return fail(d.error());
    }
    const std::uint64_t count = ctx.scale(1'000'000, 20'000);
    const std::uint64_t window = 256;
    // Two testpmd processes of 256 MiB each, plus slack.
    std::unique_ptr<HugePages> huge;
    if (!testpmd.empty()) {
        if (auto hp = HugePages::setup(host->rundir() / "huge", 300)) {
            huge = std::move(*hp);
        } else {
            std::fprintf(stderr, "hvbench net: no hugepages for the DPDK peer (%s): --no-huge\n",
                         hp.error().message().c_str());
        }
    }
    // --quick (CI's smoke): the peer runs beside the first case only and its sample stands for
    // the others (each run starts two testpmd processes: seconds on a loaded machine).
    std::optional<Sample> quick_peer;
    std::uint32_t devid = 0;
    for (const Pkt64Case& pc : kPkt64Cases) {
        const NetVariant& v = pc.variant;
        const bool tx = pc.path == Pkt64Path::tx;
        const std::string name = pc.name();
        if (!wanted(ctx, {name})) {
            continue;
        }
        // A backend per variant (its data path and spin window), serving a fresh vif.
        hv::net::BackendOptions o;
        o.host = tx ? hv::net::HostMode::sink : hv::net::HostMode::loop;
        o.max_queues = 1;
        o.mode = v.mode;
        o.spin = std::chrono::microseconds(v.spin_us);
        o.persistent_pool = v.pool;
        o.stats_interval = 100ms;
        auto b = hv::net::Backend::create(*be_svc, **bx, o);
        if (!b) {
            return fail(b.error());
        }
        struct Stop {
            std::unique_ptr<hv::net::Backend>& b;
            ~Stop() { b->stop(); }
        } stop{*b};
        {
            ScopedPin pin(be_cpu);  // the control thread, and the queue threads it starts
            (*b)->start();
        }
        xenbus::DeviceSpec spec;
        spec.type = "vif";
        spec.frontend = d->domid;
        spec.backend = DomId(0);
        spec.devid = devid;
        spec.backend_keys = {{"mac", "00:16:3e:00:02:01"}, {"handle", std::to_string(devid)}};
        spec.frontend_keys = {{"mac", "00:16:3e:00:02:01"}, {"handle", std::to_string(devid)}};
        HV_TRY(xenbus::create_device(**x, spec));
        HV_TRY(d->ctl.call("open " + std::to_string(devid)));
        CaseSpec cs{name,
                    "pkt/s",
                    "dpdk_virtio_user_vhost_user",
                    true,
                    {{"frame_bytes", "64"},
                     {"frames", std::to_string(count)},
                     {"window", std::to_string(window)},
                     {"path", tx ? "one way: netfront tx -> netback (grant copy or map+memcpy "
                                   "into its own pages, checks, tx response) -> sink engine "
                                   "(helper domain)"
                                 : "round trip: netfront tx -> netback loop engine -> "
                                   "netfront rx (helper domain)"},
                     {"counted", tx ? "frames answered OKAY on the tx ring per second (netback's "
                                      "tx_packets checked equal, no tx error or drop)"
                                    : "frames back on rx per second (lost frames not counted)"},
                     {"placement", placement},
                     {"peer_path", "dpdk-testpmd virtio-user txonly -> vhost-user rxonly, one "
                                   "CPU each (polling), Rx-pps median"}}};
        add_variant_config(cs, v);
        if (!why_no_peer.empty()) {
            cs.config.emplace_back("peer_unavailable", why_no_peer);
        }
        cs.config.emplace_back("peer_memory", huge ? "2MiB hugepages (pool raised for the run, "
                                                     "restored after)"
                                                   : "--no-huge (memfd)");
        if (quick_peer) {
            cs.config.emplace_back("peer_measured", "beside the first pkt64 case (--quick)");
        }
        std::uint64_t taken = 0;  // frames netback's sink took on this vif (all runs)
        WaitCounts waits;         // netback's wait counters at the end of the last run
        HV_TRY(ctx.run_case(
            cs,
            [&]() -> Result<Sample> {
                const std::uint64_t steal_be0 = steal_ticks(be_cpu);
                const std::uint64_t steal_fe0 = steal_ticks(fe_cpu);
                auto r = d->ctl.call(std::string(tx ? "pkt64tx " : "pkt64 ") +
                                         std::to_string(count) + " " + std::to_string(window) +
                                         " " + std::to_string(v.spin_us) + " " +
                                         std::to_string(fe_cpu + 1),
                                     60000);
                if (!r) {
                    return fail(r.error());
                }
                if (r->size() < 8) {
                    return fail(bad_data_error());
                }
                auto ns = parse_u64((*r)[1]);
                auto rx = parse_u64((*r)[2]);
                auto lost = parse_u64((*r)[3]);
                auto stalls = parse_u64((*r)[4]);
                auto longest = parse_u64((*r)[5]);
                auto fe_sleeps = parse_u64((*r)[6]);
                auto fe_skipped = parse_u64((*r)[7]);
                if (!ns || *ns == 0 || !rx || !lost || !stalls || !longest || !fe_sleeps ||
                    !fe_skipped) {
                    return fail(bad_data_error());
                }
                if (*stalls > 0 || *lost > 0) {
                    std::string rings;
                    for (std::size_t i = 8; i < r->size(); ++i) {
                        rings += " " + (*r)[i];
                    }
                    std::fprintf(stderr,
                                 "hvbench net/%s: %llu stalls of 200+ ms (longest %llu ms), "
                                 "%llu of %llu frames lost; rings at the first stall:%s\n",
                                 name.c_str(), static_cast<unsigned long long>(*stalls),
                                 static_cast<unsigned long long>(*longest),
                                 static_cast<unsigned long long>(*lost),
                                 static_cast<unsigned long long>(count), rings.c_str());
                }
                if (tx) {
                    taken += *rx;
                    if (auto c = check_tx_statistics(**bx, d->domid, devid, taken); !c) {
                        return fail(c.error());
                    }
                }
                const std::uint64_t steal_be = steal_ticks(be_cpu) - steal_be0;
                const std::uint64_t steal_fe = steal_ticks(fe_cpu) - steal_fe0;
                report_waits(**bx, name, d->domid, devid, *fe_sleeps, *fe_skipped, waits,
                             steal_be, steal_fe);
                return Sample{static_cast<double>(*rx) * 1e9 / static_cast<double>(*ns)};
            },
            [&]() -> Result<Sample> {
                if (testpmd.empty()) {
                    return Sample{std::numeric_limits<double>::quiet_NaN()};
                }
                if (quick_peer) {
                    return *quick_peer;
                }
                auto p = dpdk_pkt64(testpmd, host->rundir(), huge.get(),
                                    static_cast<unsigned>(ctx.scale(5, 2)));
                if (p && ctx.quick()) {
                    quick_peer = *p;
                }
                return p;
            }));
        HV_TRY(d->ctl.call("close"));
        (void)xenbus::remove_device(**x, DomId(0), "vif", d->domid, devid);
        ++devid;
    }
    (void)d->ctl.write_line("exit");
    return std::string("ok");
}

}  // namespace

Result<std::string> net_helper(hvmin::Services& svc, const std::vector<std::string>& w,
                               ControlLine& /*ctl*/) {
    static FrontState state;
    std::vector<std::uint64_t> nums;
    for (std::size_t i = 1; i < w.size(); ++i) {
        auto n = parse_u64(w[i]);
        if (!n) {
            return fail(n.error());
        }
        nums.push_back(*n);
    }
    if (w.empty()) {
        return fail_errno(EINVAL);
    }
    if (w[0] == "open" && nums.size() == 1 && nums[0] < 65536) {
        return front_open(svc, state, static_cast<std::uint32_t>(nums[0]));
    }
    if (w[0] == "close" && nums.empty()) {
        state.dev.reset();
        return std::string("ok");
    }
    // pkt64[tx] COUNT WINDOW SPIN_US CPU+1 (0: unpinned)
    if ((w[0] == "pkt64" || w[0] == "pkt64tx") && nums.size() == 4 && nums[1] > 0 &&
        nums[2] <= 1000000 && nums[3] <= CPU_SETSIZE) {
        return front_pkt64(state, w[0] == "pkt64tx" ? Pkt64Path::tx : Pkt64Path::loop, nums[0],
                           nums[1], std::chrono::microseconds(nums[2]),
                           static_cast<int>(nums[3]) - 1);
    }
    return fail_errno(EINVAL);
}

int run_net_suite(Context& ctx) {
    if (::geteuid() != 0) {
        std::fprintf(stderr, "hvbench net: needs root (network namespaces); skipped\n");
        return 0;
    }
    int rc = 0;
    if (auto r = run_pkt64_case(ctx); !r) {
        std::fprintf(stderr, "hvbench net: pkt64 case failed: %s\n", r.error().message().c_str());
        rc = 1;
    }
    for (bool ovs : {false, true}) {
        if (auto r = run_fabric(ctx, ovs); !r) {
            std::fprintf(stderr, "hvbench net: %s cases failed: %s\n", ovs ? "ovs" : "bridge",
                         r.error().message().c_str());
            rc = 1;
        }
    }
    return rc;
}

}  // namespace hv::bench
