// DPDK NetEngine (dpdk.hpp): one queue pair of one ethdev. send = copy the frame into one mbuf
// (checksum completed in software when F_NEEDS_CSUM), one tx burst; receive = rx bursts, each
// mbuf chain copied out and freed. The EAL starts once per process under a mutex; the thread
// that starts it keeps its CPU affinity (rte_eal_init pins its caller to the main lcore).
#include <pthread.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_net.h>
#include <rte_vhost.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "hv/cpu.hpp"
#include "hv/log.hpp"
#include "netback/dpdk.hpp"
#include "netback/netlink.hpp"

namespace hv::net {
namespace {

constexpr unsigned kBurst = 32;
constexpr std::uint16_t kRingSize = 1024;
/// Most segments one TSO frame may become (64 KiB at an MSS of 256): a smaller MSS from a
/// guest is refused rather than turned into thousands of frames.
constexpr unsigned kMaxSegments = 256;

struct Eal {
    std::mutex mu;
    std::string args;
    bool tried = false;
    int error = 0;  // errno of a failed start (the EAL cannot be started twice)
    std::atomic<bool> running{false};
    unsigned pools = 0;  // names of mbuf pools
};
Eal& eal() {
    static Eal e;
    return e;
}

Result<void> start_eal_locked(Eal& e) {
    if (e.tried) {
        return e.error == 0 ? Result<void>{} : fail_errno(e.error);
    }
    e.tried = true;
    const std::string args = e.args.empty() ? dpdk_default_eal_args() : e.args;
    std::vector<std::string> words{"netback"};
    for (std::size_t at = 0; at < args.size();) {
        const std::size_t sp = std::min(args.find(' ', at), args.size());
        if (sp > at) {
            words.push_back(args.substr(at, sp - at));
        }
        at = sp + 1;
    }
    std::vector<char*> argv;
    for (auto& w : words) {
        argv.push_back(w.data());
    }
    argv.push_back(nullptr);
    cpu_set_t saved;
    const bool have_affinity =
        ::pthread_getaffinity_np(::pthread_self(), sizeof saved, &saved) == 0;
    HV_INFO("netback: starting the DPDK EAL: %s", args.c_str());
    const int r = ::rte_eal_init(static_cast<int>(words.size()), argv.data());
    if (have_affinity) {
        (void)::pthread_setaffinity_np(::pthread_self(), sizeof saved, &saved);
    }
    if (r < 0) {
        e.error = rte_errno != 0 ? rte_errno : EINVAL;
        HV_WARN("netback: DPDK EAL start failed (%s): %s", args.c_str(), ::rte_strerror(rte_errno));
        return fail_errno(e.error);
    }
    // --no-shconf: no shared files, no multi-process socket; the runtime directory the EAL
    // made anyway stays empty, so it goes now rather than pile up in /var/run/dpdk.
    (void)::rmdir(::rte_eal_get_runtime_dir());
    e.running = true;
    return {};
}

/// Ones' complement sum of `len` bytes, big-endian 16-bit words (RFC 1071), not folded.
std::uint32_t sum16(const std::uint8_t* p, std::size_t len, std::uint32_t sum) noexcept {
    for (; len >= 2; p += 2, len -= 2) {
        sum += static_cast<std::uint32_t>(p[0]) << 8 | p[1];
    }
    if (len != 0) {
        sum += static_cast<std::uint32_t>(p[0]) << 8;
    }
    return sum;
}
std::uint16_t fold(std::uint32_t s) noexcept {
    while ((s >> 16) != 0) {
        s = (s & 0xffff) + (s >> 16);
    }
    return static_cast<std::uint16_t>(s);
}
std::uint16_t rd16(const std::uint8_t* p) noexcept {
    return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
void wr16(std::uint8_t* p, std::uint32_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}
std::uint32_t rd32(const std::uint8_t* p) noexcept {
    return static_cast<std::uint32_t>(rd16(p)) << 16 | rd16(p + 2);
}
void wr32(std::uint8_t* p, std::uint32_t v) noexcept {
    wr16(p, v >> 16);
    wr16(p + 2, v);
}

/// What F_NEEDS_CSUM asks of the device: the field at csum_start + csum_offset holds the
/// pseudo-header sum; the sum from csum_start to the end, complemented, replaces it.
void complete_checksum(std::uint8_t* frame, std::size_t len, const VnetHdr& h) noexcept {
    wr16(frame + h.csum_start + h.csum_offset,
         static_cast<std::uint16_t>(~fold(sum16(frame + h.csum_start, len - h.csum_start, 0))));
}

/// Where the headers of a TSO frame are: IP at l3, TCP at l4 (= csum_start), payload at hdr.
struct TcpLayout {
    std::size_t l3 = 0, l4 = 0, hdr = 0;
    bool v6 = false;
};

/// Checks a GSO frame's headers against its virtio-net header (which check_offload() has
/// already bounded): Ethernet (one optional VLAN tag), IPv4 (IHL
/// ending at csum_start, protocol TCP) or IPv6 (extension headers up to csum_start kept as
/// they are), a whole TCP header, the checksum field at offset 16.
Result<TcpLayout> tcp_layout(const std::uint8_t* f, std::size_t len, const VnetHdr& h) noexcept {
    TcpLayout t;
    t.v6 = (h.gso_type & ~VnetHdr::GSO_ECN) == VnetHdr::GSO_TCPV6;
    t.l3 = 14;
    std::uint16_t type = rd16(f + 12);
    if (type == 0x8100) {
        t.l3 = 18;
        if (len < t.l3) {
            return fail(Errc::bad_offload);
        }
        type = rd16(f + 16);
    }
    t.l4 = h.csum_start;
    if (type != (t.v6 ? 0x86dd : 0x0800) || h.csum_offset != 16 ||
        t.l4 < t.l3 + (t.v6 ? 40U : 20U) || t.l4 + 20 > len) {
        return fail(Errc::bad_offload);
    }
    if (t.v6 ? (f[t.l3] >> 4) != 6
             : ((f[t.l3] >> 4) != 4 || t.l3 + (f[t.l3] & 15U) * 4 != t.l4 || f[t.l3 + 9] != 6)) {
        return fail(Errc::bad_offload);
    }
    t.hdr = t.l4 + (f[t.l4 + 12] >> 4) * 4U;
    if (t.hdr < t.l4 + 20 || t.hdr > len) {
        return fail(Errc::bad_offload);
    }
    return t;
}

}  // namespace

std::string dpdk_default_eal_args() {
    return "-l " + std::to_string(hv::first_allowed_cpu()) +
           " --no-pci --no-huge -m 256 --no-shconf --file-prefix hvnb-" +
           std::to_string(::getpid()) + " --no-telemetry --log-level=notice";
}

Result<void> dpdk_set_eal_args(std::string args) {
    Eal& e = eal();
    std::lock_guard lk(e.mu);
    if (e.tried) {
        return fail_errno(EALREADY);
    }
    e.args = std::move(args);
    return {};
}

bool dpdk_eal_running() noexcept {
    return eal().running.load();
}

bool dpdk_built() noexcept {
    return true;
}

std::string vhost_server_args(const std::string& socket_path, unsigned queues) {
    return "iface=" + socket_path + ",queues=" + std::to_string(queues) + ",client=0";
}

struct DpdkPort::Impl {
    DpdkPortConfig cfg;
    std::uint16_t port = 0;
    bool probed = false;
    bool started = false;
    rte_mempool* pool = nullptr;
    std::uint16_t data_room = 0;
    std::size_t max_frame = 0;
    hv::UniqueFd link_event;  // written by on_link_event(); see DpdkPort::link_fd()
    bool link_callback = false;

    /// DPDK's interrupt thread: a link-state change. Only wakes the control thread.
    static int on_link_event(std::uint16_t, rte_eth_event_type, void* arg, void*) {
        const std::uint64_t one = 1;
        (void)!::write(static_cast<Impl*>(arg)->link_event.get(), &one, sizeof one);
        return 0;
    }

    ~Impl() {
        auto ns = ScopedNetns::enter(cfg.netns_fd);  // as in open(); -1 or gone: where we are
        // The callback goes before its eventfd: EAGAIN while it runs on the interrupt thread.
        while (link_callback && ::rte_eth_dev_callback_unregister(port, RTE_ETH_EVENT_INTR_LSC,
                                                                  &Impl::on_link_event,
                                                                  this) == -EAGAIN) {
            std::this_thread::yield();
        }
        if (started) {
            (void)::rte_eth_dev_stop(port);
        }
        if (probed) {
            (void)::rte_eth_dev_close(port);
            if (::rte_eal_hotplug_remove("vdev", cfg.name.c_str()) != 0) {
                HV_WARN("netback: removing DPDK device %s failed", cfg.name.c_str());
            }
        }
        if (pool != nullptr) {
            ::rte_mempool_free(pool);
        }
    }
};

namespace {

class DpdkEngine final : public NetEngine {
public:
    DpdkEngine(DpdkPort::Impl& port, std::uint16_t queue, hv::UniqueFd timer, Features rx)
        : port_(port), queue_(queue), timer_(std::move(timer)), rx_(rx) {}

    ~DpdkEngine() override {
        for (unsigned i = head_; i < count_; ++i) {
            ::rte_pktmbuf_free(pending_[i]);
        }
    }

    hv::Result<void> send(const VnetHdr& hdr, std::span<const iovec> frame) noexcept override {
        std::size_t len = 0;
        for (const auto& v : frame) {
            len += v.iov_len;
        }
        HV_TRY(check_offload(hdr, len, features()));  // also: shorter than an Ethernet header
        if (hdr.gso_type != VnetHdr::GSO_NONE) {
            return send_tso(hdr, frame, len);
        }
        if (len > port_.max_frame) {
            return hv::fail(Errc::frame_too_big);
        }
        rte_mbuf* m = ::rte_pktmbuf_alloc(port_.pool);
        if (m == nullptr) {
            return hv::fail(Errc::busy);  // every mbuf in flight: the peer is behind
        }
        auto* d = reinterpret_cast<std::uint8_t*>(
            ::rte_pktmbuf_append(m, static_cast<std::uint16_t>(len)));
        gather(d, frame);
        if ((hdr.flags & VnetHdr::F_NEEDS_CSUM) != 0) {
            complete_checksum(d, len, hdr);
        }
        if (::rte_eth_tx_burst(port_.port, queue_, &m, 1) == 1) {
            return {};
        }
        ::rte_pktmbuf_free(m);
        return not_sent();
    }

    hv::Result<unsigned> receive(std::span<RxBuffer> out) noexcept override {
        if (!out.empty() && out[0].data.size() < port_.max_frame) {
            return hv::fail(Errc::buffer_too_small);
        }
        unsigned n = 0;
        while (n < out.size()) {
            if (head_ == count_) {
                head_ = 0;
                count_ = ::rte_eth_rx_burst(port_.port, queue_, pending_.data(), kBurst);
                if (count_ == 0) {
                    break;
                }
            }
            RxBuffer& b = out[n];
            if (b.data.size() < port_.max_frame) {
                break;
            }
            rte_mbuf* m = pending_[head_++];
            const std::uint32_t len = m->pkt_len;
            if (len > b.data.size() || len < 14) {
                ++dropped_;
                HV_LOG_RL(warn, "netback dpdk %s: dropped a %u-byte frame", port_.cfg.name.c_str(),
                          len);
                ::rte_pktmbuf_free(m);
                continue;
            }
            b.hdr = VnetHdr{};
            if (partial_mark(m->ol_flags)) {
                // One that cannot be placed (SCTP's CRC, a tunnel) goes on unmarked, as the
                // vhost PMD's own software path leaves it: nothing could complete it further on.
                (void)partial_checksum(m, b.hdr);
            }
            std::size_t at = 0;
            for (const rte_mbuf* s = m; s != nullptr && at < len; s = s->next) {
                const std::size_t seg = std::min<std::size_t>(s->data_len, len - at);
                std::memcpy(b.data.data() + at, rte_pktmbuf_mtod(s, const void*), seg);
                at += seg;
            }
            ::rte_pktmbuf_free(m);
            b.len = static_cast<std::uint32_t>(at);
            if (b.hdr.flags == VnetHdr::F_NEEDS_CSUM && !rx_.csum) {
                // The frontend takes no blank checksum: completed here, as a tap's kernel does.
                complete_checksum(reinterpret_cast<std::uint8_t*>(b.data.data()), b.len, b.hdr);
                b.hdr = VnetHdr{};
            }
            ++n;
        }
        if (n == 0) {
            clear_tick();
        }
        return n;
    }

    int notify_fd() const noexcept override { return timer_.get(); }
    Features features() const noexcept override { return Features{true, true, true}; }
    std::size_t max_frame_bytes() const noexcept override { return port_.max_frame; }

private:
    static void gather(std::uint8_t* d, std::span<const iovec> frame) noexcept {
        for (const auto& v : frame) {
            if (v.iov_len != 0) {
                std::memcpy(d, v.iov_base, v.iov_len);
                d += v.iov_len;
            }
        }
    }

    /// Whether the vhost library marked a frame the peer sent with virtio's NEEDS_CSUM: in its
    /// compliant mode RX_L4_CKSUM_NONE, in its legacy mode (DPDK 22.11's vhost PMD default) a
    /// TX TCP/UDP checksum request, as if the frame were to be forwarded to a NIC.
    static bool partial_mark(std::uint64_t ol) noexcept {
        const std::uint64_t tx = ol & RTE_MBUF_F_TX_L4_MASK;
        return (ol & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_NONE ||
               tx == RTE_MBUF_F_TX_TCP_CKSUM || tx == RTE_MBUF_F_TX_UDP_CKSUM ||
               tx == RTE_MBUF_F_TX_SCTP_CKSUM;
    }

    /// A frame the peer sent with virtio's NEEDS_CSUM: the vhost library keeps only the mark
    /// (it drops csum_start/csum_offset), so they are found again from the headers: TCP or UDP
    /// straight after Ethernet (one VLAN tag at most) and IPv4 or IPv6, where a plain
    /// frame's checksum starts. False (h untouched) for what cannot be placed so.
    static bool partial_checksum(const rte_mbuf* m, VnetHdr& h) noexcept {
        rte_net_hdr_lens lens{};
        const std::uint32_t pt = ::rte_net_get_ptype(
            m, &lens, RTE_PTYPE_L2_MASK | RTE_PTYPE_L3_MASK | RTE_PTYPE_L4_MASK |
                          RTE_PTYPE_TUNNEL_MASK);
        if ((pt & RTE_PTYPE_TUNNEL_MASK) != 0) {
            return false;
        }
        const std::uint32_t l4 = pt & RTE_PTYPE_L4_MASK;
        const std::size_t start = std::size_t{lens.l2_len} + lens.l3_len;
        const std::uint16_t offset = l4 == RTE_PTYPE_L4_TCP ? 16 : l4 == RTE_PTYPE_L4_UDP ? 6 : 0;
        if (offset == 0 || start + offset + 2 > m->data_len) {
            return false;
        }
        h.flags = VnetHdr::F_NEEDS_CSUM;
        h.csum_start = static_cast<std::uint16_t>(start);
        h.csum_offset = offset;
        return true;
    }

    /// Nothing left: a peer that is not there (link down) or a full ring.
    hv::Result<void> not_sent() const noexcept {
        if (!link_up()) {
            return hv::fail_errno(ENETDOWN);
        }
        return hv::fail(Errc::busy);
    }

    /// Software TSO (what a tap's kernel would do): the frame becomes gso_size-payload TCP
    /// segments, each with the original headers, its own IP length (and IPv4 id and header
    /// checksum), sequence number, flags (FIN/PSH on the last only, CWR on the first only) and
    /// a full TCP checksum. Segments the peer's ring had no room for after the first are
    /// dropped (TCP resends them); none sent is busy, as for one frame.
    hv::Result<void> send_tso(const VnetHdr& h, std::span<const iovec> frame,
                              std::size_t len) noexcept {
        std::uint8_t* f = scratch_.data();
        gather(f, frame);
        auto lay = tcp_layout(f, len, h);
        if (!lay) {
            return hv::fail(lay.error());
        }
        const TcpLayout t = *lay;
        const std::size_t mss = h.gso_size;
        const std::size_t payload = len - t.hdr;
        const std::size_t n = payload == 0 ? 1 : (payload + mss - 1) / mss;
        if (n > kMaxSegments) {
            return hv::fail(Errc::bad_offload);
        }
        if (t.hdr + std::min(mss, payload) > port_.max_frame) {
            return hv::fail(Errc::frame_too_big);
        }
        std::array<rte_mbuf*, kMaxSegments> segs;
        if (::rte_pktmbuf_alloc_bulk(port_.pool, segs.data(), static_cast<unsigned>(n)) != 0) {
            return hv::fail(Errc::busy);
        }
        const std::uint32_t seq = rd32(f + t.l4 + 4);
        const std::uint16_t id = rd16(f + t.l3 + 4);
        const std::uint8_t flags = f[t.l4 + 13];
        for (std::size_t i = 0, off = 0; i < n; ++i, off += mss) {
            const std::size_t chunk = std::min(mss, payload - std::min(off, payload));
            const std::size_t seg_len = t.hdr + chunk;
            auto* d = reinterpret_cast<std::uint8_t*>(
                ::rte_pktmbuf_append(segs[i], static_cast<std::uint16_t>(seg_len)));
            std::memcpy(d, f, t.hdr);
            std::memcpy(d + t.hdr, f + t.hdr + off, chunk);
            if (t.v6) {
                wr16(d + t.l3 + 4, static_cast<std::uint32_t>(seg_len - t.l3 - 40));
            } else {
                wr16(d + t.l3 + 2, static_cast<std::uint32_t>(seg_len - t.l3));
                wr16(d + t.l3 + 4, static_cast<std::uint32_t>(id + i));
                wr16(d + t.l3 + 10, 0);
                wr16(d + t.l3 + 10,
                     static_cast<std::uint16_t>(~fold(sum16(d + t.l3, t.l4 - t.l3, 0))));
            }
            wr32(d + t.l4 + 4, static_cast<std::uint32_t>(seq + off));
            std::uint8_t fl = flags;
            if (i + 1 != n) {
                fl = static_cast<std::uint8_t>(fl & ~(0x01 | 0x08));  // FIN, PSH
            }
            if (i != 0) {
                fl = static_cast<std::uint8_t>(fl & ~0x80);  // CWR
            }
            d[t.l4 + 13] = fl;
            const std::size_t tcp_len = seg_len - t.l4;
            std::uint32_t ps = t.v6 ? sum16(d + t.l3 + 8, 32, 0) : sum16(d + t.l3 + 12, 8, 0);
            ps += 6 + static_cast<std::uint32_t>(tcp_len);
            wr16(d + t.l4 + 16, 0);
            wr16(d + t.l4 + 16, static_cast<std::uint16_t>(~fold(sum16(d + t.l4, tcp_len, ps))));
        }
        unsigned sent = 0;
        while (sent < n) {
            const std::uint16_t k = ::rte_eth_tx_burst(port_.port, queue_, segs.data() + sent,
                                                       static_cast<std::uint16_t>(n - sent));
            if (k == 0) {
                break;
            }
            sent += k;
        }
        if (sent < n) {
            ::rte_pktmbuf_free_bulk(segs.data() + sent, static_cast<unsigned>(n - sent));
            if (sent == 0) {
                return not_sent();
            }
            tso_dropped_ += n - sent;
            HV_LOG_RL(warn, "netback dpdk %s: %zu of %zu TSO segments found no room",
                      port_.cfg.name.c_str(), n - sent, n);
        }
        return {};
    }

    bool link_up() const noexcept {
        rte_eth_link l{};
        return ::rte_eth_link_get_nowait(port_.port, &l) == 0 && l.link_status == RTE_ETH_LINK_UP;
    }

    /// Nothing to receive: consume the tick, and slow it down while the link is down.
    void clear_tick() noexcept {
        std::uint64_t ticks = 0;
        if (::read(timer_.get(), &ticks, sizeof ticks) != sizeof ticks) {
            return;  // had not ticked yet
        }
        const bool up = link_up();
        if (up != ticking_fast_) {
            ticking_fast_ = up;
            arm_timer(timer_.get(),
                      up ? port_.cfg.tick : std::chrono::microseconds(port_.cfg.down_tick));
        }
    }

public:
    static bool arm_timer(int fd, std::chrono::microseconds period) noexcept {
        const auto us = std::max<long long>(period.count(), 10);
        itimerspec its{};
        its.it_interval.tv_sec = static_cast<time_t>(us / 1000000);
        its.it_interval.tv_nsec = static_cast<long>((us % 1000000) * 1000);
        its.it_value = its.it_interval;
        return ::timerfd_settime(fd, 0, &its, nullptr) == 0;
    }

private:
    DpdkPort::Impl& port_;
    std::uint16_t queue_;
    hv::UniqueFd timer_;
    Features rx_;  // offloads the frontend takes on receive (only csum matters here)
    std::array<rte_mbuf*, kBurst> pending_{};
    unsigned head_ = 0;
    unsigned count_ = 0;
    bool ticking_fast_ = true;
    std::uint64_t dropped_ = 0;
    std::uint64_t tso_dropped_ = 0;
    std::vector<std::uint8_t> scratch_ = std::vector<std::uint8_t>(max_gso_frame_bytes);
};

/// The value of `key=` in a devargs string, or "".
std::string devarg(const std::string& args, std::string_view key) {
    std::size_t at = 0;
    while (at < args.size()) {
        const std::size_t end = std::min(args.find(',', at), args.size());
        const std::string_view kv(args.data() + at, end - at);
        if (kv.size() > key.size() && kv.starts_with(key) && kv[key.size()] == '=') {
            return std::string(kv.substr(key.size() + 1));
        }
        at = end + 1;
    }
    return {};
}

}  // namespace

DpdkPort::DpdkPort(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
DpdkPort::~DpdkPort() = default;

const std::string& DpdkPort::name() const noexcept {
    return impl_->cfg.name;
}
std::uint16_t DpdkPort::port_id() const noexcept {
    return impl_->port;
}
bool DpdkPort::link_up() const noexcept {
    rte_eth_link l{};
    return ::rte_eth_link_get_nowait(impl_->port, &l) == 0 && l.link_status == RTE_ETH_LINK_UP;
}
int DpdkPort::link_fd() const noexcept {
    return impl_->link_callback ? impl_->link_event.get() : -1;
}

Result<std::unique_ptr<DpdkPort>> DpdkPort::open(const DpdkPortConfig& cfg) {
    if (cfg.queues == 0 || cfg.queues > 64 || cfg.mtu < 68 || cfg.mtu > 9600 || cfg.name.empty()) {
        return fail_errno(EINVAL);
    }
    Eal& e = eal();
    std::lock_guard lk(e.mu);
    HV_TRY(start_eal_locked(e));
    auto impl = std::make_unique<Impl>();
    impl->cfg = cfg;
    // A vhost-user server binds its socket path: a socket left by a dead netback would make
    // that fail, so it goes; any other file there is refused before DPDK sees the path (the
    // vhost library unlinks its path when it is unregistered, even after a failed bind).
    if (cfg.name.starts_with("net_vhost")) {
        const std::string path = devarg(cfg.args, "iface");
        struct stat st {};
        if (!path.empty() && ::lstat(path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                HV_WARN("netback: DPDK device %s: %s exists and is not a socket", cfg.name.c_str(),
                        path.c_str());
                return fail_errno(EEXIST);
            }
            (void)::unlink(path.c_str());
        }
    }
    // The af_packet and tap PMDs open their interface (and later ioctl it: flags, MTU) by
    // name in the namespace of the thread that calls them: every control step runs in cfg's.
    auto ns = ScopedNetns::enter(cfg.netns_fd);  // -1: stays where it is
    if (!ns) {
        return fail(ns.error());
    }
    const int r = ::rte_eal_hotplug_add("vdev", cfg.name.c_str(), cfg.args.c_str());
    if (r != 0) {
        HV_WARN("netback: DPDK device %s,%s: %s", cfg.name.c_str(), cfg.args.c_str(),
                ::rte_strerror(-r));
        return fail_errno(r < 0 ? -r : EINVAL);
    }
    impl->probed = true;
    if (::rte_eth_dev_get_port_by_name(cfg.name.c_str(), &impl->port) != 0) {
        return fail_errno(ENODEV);
    }
    // One mbuf holds a whole frame (MTU + Ethernet header + a VLAN tag).
    impl->max_frame = std::size_t{cfg.mtu} + 14 + 4;
    impl->data_room = static_cast<std::uint16_t>(
        std::max<std::size_t>(RTE_MBUF_DEFAULT_DATAROOM, impl->max_frame) + RTE_PKTMBUF_HEADROOM);
    const std::string pool_name = "hvnb" + std::to_string(e.pools++);
    const unsigned mbufs = cfg.queues * (2U * kRingSize + 4U * kBurst) + 512U;
    impl->pool =
        ::rte_pktmbuf_pool_create(pool_name.c_str(), mbufs, 0, 0, impl->data_room, SOCKET_ID_ANY);
    if (impl->pool == nullptr) {
        HV_WARN("netback: DPDK mbuf pool for %s: %s", cfg.name.c_str(), ::rte_strerror(rte_errno));
        return fail_errno(rte_errno != 0 ? rte_errno : ENOMEM);
    }
    rte_eth_conf conf{};
    rte_eth_dev_info info{};
    constexpr std::uint64_t kRxL4 = RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
    if (cfg.rx_csum && ::rte_eth_dev_info_get(impl->port, &info) == 0 &&
        (info.rx_offload_capa & kRxL4) == kRxL4) {
        // The vhost PMD then leaves a peer's partial checksum marked (RX_L4_CKSUM_NONE) for
        // the engine to pass on blank; without it the PMD completes it in software.
        conf.rxmode.offloads = kRxL4;
    }
    const auto q = static_cast<std::uint16_t>(cfg.queues);
    if (int c = ::rte_eth_dev_configure(impl->port, q, q, &conf); c != 0) {
        HV_WARN("netback: DPDK configure %s: %s", cfg.name.c_str(), ::rte_strerror(-c));
        return fail_errno(-c);
    }
    (void)::rte_eth_dev_set_mtu(impl->port, static_cast<std::uint16_t>(cfg.mtu));
    for (std::uint16_t i = 0; i < q; ++i) {
        int c =
            ::rte_eth_rx_queue_setup(impl->port, i, kRingSize, SOCKET_ID_ANY, nullptr, impl->pool);
        if (c == 0) {
            c = ::rte_eth_tx_queue_setup(impl->port, i, kRingSize, SOCKET_ID_ANY, nullptr);
        }
        if (c != 0) {
            HV_WARN("netback: DPDK queue %u of %s: %s", i, cfg.name.c_str(), ::rte_strerror(-c));
            return fail_errno(-c);
        }
    }
    // Link-state events (the vhost PMD raises one when a peer attaches or leaves), registered
    // before the start so none is missed.
    impl->link_event = hv::UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!impl->link_event) {
        return fail_errno();
    }
    impl->link_callback =
        ::rte_eth_dev_callback_register(impl->port, RTE_ETH_EVENT_INTR_LSC, &Impl::on_link_event,
                                        impl.get()) == 0;
    if (int c = ::rte_eth_dev_start(impl->port); c != 0) {
        HV_WARN("netback: DPDK start %s: %s", cfg.name.c_str(), ::rte_strerror(-c));
        return fail_errno(-c);
    }
    impl->started = true;
    return std::unique_ptr<DpdkPort>(new DpdkPort(std::move(impl)));
}

Result<std::unique_ptr<NetEngine>> DpdkPort::make_engine(unsigned queue, Features rx) {
    if (queue >= impl_->cfg.queues) {
        return fail_errno(EINVAL);
    }
    hv::UniqueFd t(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!t) {
        return fail_errno();
    }
    if (!DpdkEngine::arm_timer(t.get(), impl_->cfg.tick)) {
        return fail_errno();
    }
    return std::unique_ptr<NetEngine>(
        new DpdkEngine(*impl_, static_cast<std::uint16_t>(queue), std::move(t), rx));
}

}  // namespace hv::net
