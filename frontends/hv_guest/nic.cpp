// hv-guest's NICs (design §9): each device/vif/N becomes a tap `eth<N>` inside the domain's own
// network namespace (created here with unshare(CLONE_NEWNET) on the main thread before the
// command starts, so the command inherits it), MAC from the vif's `mac` key, one tap queue per
// netfront queue; frames are pumped between the tap and libnetfront. Tx offloads (partial
// checksums, TSO) go to netback as csum_blank / GSO extras, and the tap is given only those the
// backend offered (netfront::Device::tx_offloads()); rx offloads come back the same way
// and are written to the tap as its virtio-net header (NEEDS_CSUM at the spot netfront found,
// GSO type and MSS), so a 64 KiB TSO segment crosses whole in both directions.
// Layer: frontends (program). Threads: the main thread only.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <net/if_arp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "frontends/netfront.hpp"
#include "guest.hpp"
#include "hv/log.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "xenbus/xenbus.hpp"

namespace hv::guest {
namespace {

namespace wire = hv::rings;
/// Devids probed when device/vif cannot be listed.
constexpr std::uint32_t kProbeDevids = 16;
constexpr std::size_t kHdr = 12;  // struct virtio_net_hdr_mrg_rxbuf (TUNSETVNETHDRSZ 12)
/// Data slots of a received packet at most (netfront's limit: XEN_NETIF_NR_SLOTS_MIN).
constexpr std::size_t kMaxParts = wire::XEN_NETIF_NR_SLOTS_MIN + 2;
/// Largest frame read from a tap: 64 KiB (a TSO frame the tap hands us) in 16 tx pages.
constexpr std::size_t kMaxTxFrame = 65536;

/// struct virtio_net_hdr (linux/virtio_net.h is not valid C++: a member named `class`).
struct VirtioNetHdr {
    std::uint8_t flags;
    std::uint8_t gso_type;
    std::uint16_t hdr_len;
    std::uint16_t gso_size;
    std::uint16_t csum_start;
    std::uint16_t csum_offset;
};
static_assert(sizeof(VirtioNetHdr) == 10);
constexpr std::uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
constexpr std::uint8_t VIRTIO_NET_HDR_F_DATA_VALID = 2;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_TCPV6 = 4;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

/// Sets flags / MAC on `name` through an ioctl socket of the current namespace.
Result<void> link_ioctl(const std::string& name, unsigned long req, ifreq& ifr) {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (s.get() < 0) {
        return fail_errno();
    }
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
    if (::ioctl(s.get(), req, &ifr) != 0) {
        return fail_errno();
    }
    return {};
}

Result<void> set_up(const std::string& name) {
    ifreq ifr{};
    HV_TRY(link_ioctl(name, SIOCGIFFLAGS, ifr));
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    return link_ioctl(name, SIOCSIFFLAGS, ifr);
}

bool parse_mac(const std::string& s, std::array<unsigned char, 6>& out) {
    unsigned v[6];
    char tail = 0;
    if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                    &tail) != 6) {
        return false;
    }
    for (int i = 0; i < 6; ++i) {
        if (v[i] > 0xFF) {
            return false;
        }
        out[static_cast<std::size_t>(i)] = static_cast<unsigned char>(v[i]);
    }
    return true;
}

/// The tap's TUNSETOFFLOAD flags: what the guest's stack may hand us, which is what the backend
/// takes (netfront's negotiated tx offloads). TUN_F_CSUM covers both IP versions: with only one
/// of them taken, netfront completes the other's checksums. No TSO without its checksum
/// offload (the kernel refuses TSO without CSUM; netfront's TxOffloads already implies it).
unsigned tap_offloads(const netfront::TxOffloads& t) {
    unsigned f = 0;
    if (t.csum4 || t.csum6) {
        f |= TUN_F_CSUM;
        f |= t.gso_tcpv4 ? TUN_F_TSO4 : 0U;
        f |= t.gso_tcpv6 ? TUN_F_TSO6 : 0U;
    }
    return f;
}

/// Opens the tap `name` with `queues` queues in the current namespace.
Result<std::vector<UniqueFd>> open_tap(const std::string& name, unsigned queues,
                                       unsigned offloads) {
    std::vector<UniqueFd> fds;
    for (unsigned q = 0; q < queues; ++q) {
        UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
        if (fd.get() < 0) {
            return fail_errno();
        }
        ifreq ifr{};
        std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
        ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                                           (queues > 1 ? IFF_MULTI_QUEUE : 0));
        if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
            return fail_errno();
        }
        int hdr = static_cast<int>(kHdr);
        if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr) != 0) {
            return fail_errno();
        }
        // What the guest's stack may hand us: partial checksums and TSO go to the backend as
        // csum_blank and GSO extras, so only what it offered (tap_offloads()).
        if (::ioctl(fd.get(), TUNSETOFFLOAD, offloads) != 0) {
            return fail_errno();
        }
        fds.push_back(std::move(fd));
    }
    return fds;
}

struct Nic {
    std::uint32_t devid = 0;
    std::unique_ptr<netfront::Device> nf;
    std::vector<UniqueFd> taps;  // one per queue, opened once connected
    std::string name;
    bool failed = false;
    std::uint64_t tx_dropped = 0;
    /// Per queue: a frame read into netfront's lent tx pages that found no ring room (sent
    /// first next time; the tap is not read meanwhile, so the guest's stack sees backpressure,
    /// not loss).
    struct Held {
        netfront::Offload off;
        std::size_t len = 0;
    };
    std::vector<std::optional<Held>> held;
    /// Per queue: netfront had no free pages for a largest frame: the tap is not read (nor
    /// polled) until tx responses free some, instead of reading into a buffer of our own to
    /// be copied (and, with the ring full, copied again to be held).
    std::vector<bool> blocked;
    /// Per queue: the tap may hold frames: its last read stopped short of EAGAIN (the batch
    /// bound, a held frame, no pages) or a poll found it readable since. A tap read to EAGAIN
    /// is not read again until a poll says so (a pass the event channel woke would otherwise
    /// start with an empty tap read).
    std::vector<bool> tap_ready;
};

class Nics final : public DeviceKind {
public:
    explicit Nics(Context& ctx) : ctx_(ctx), dir_(ctx.home + "/device/vif") {}
    const char* name() const noexcept override { return "nics"; }

    Result<void> start() override {
        auto w = ctx_.xs.watch_scoped(dir_, "hv-guest-nics");
        if (!w) {
            return fail(w.error());
        }
        watch_.emplace(std::move(*w));
        // Always a namespace of its own, even before the first NIC: the command must never
        // start in (and configure) the namespace hv-min runs in. Without the privilege the
        // NICs fail instead (logged), and nothing is created outside.
        if (auto r = enter_netns(); !r) {
            HV_WARN("hv-guest: no network namespace of its own (%s): NICs disabled",
                    r.error().message().c_str());
        }
        rescan({});
        initial_ = nics_.size();
        return {};
    }

    bool on_watch(const xs::WatchEvent& ev) override {
        if (ev.token == "hv-guest-nics") {
            // The event names the node: device/vif itself may not be listable by this domain
            // (the toolstack created it), the vif's own directory is.
            std::vector<std::uint32_t> seen;
            const std::string prefix = dir_ + "/";
            if (ev.path.rfind(prefix, 0) == 0) {
                const std::string rest = ev.path.substr(prefix.size());
                if (auto id = xenbus::parse_uint(rest.substr(0, rest.find('/')), UINT32_MAX)) {
                    seen.push_back(static_cast<std::uint32_t>(*id));
                }
            }
            rescan(seen);
            return true;
        }
        for (auto& [id, n] : nics_) {
            if (n.nf && ev.token == n.nf->watch_token()) {
                state_change(n);
                return true;
            }
        }
        return false;
    }

    void poll_fds(std::vector<pollfd>& out) override {
        for (auto& [id, n] : nics_) {
            if (!n.nf || n.taps.empty()) {
                continue;
            }
            for (int fd : n.nf->pollable_fds()) {
                out.push_back({fd, POLLIN, 0});
            }
            for (std::size_t q = 0; q < n.taps.size(); ++q) {
                if (!n.held[q] && !n.blocked[q]) {
                    out.push_back({n.taps[q].get(), POLLIN, 0});
                }
            }
        }
    }

    void handle(std::span<const pollfd> fds) override {
        // Only the channels the sleep found readable are acked (one read each); the passes
        // below arm without acking (Arm::unacked): ~80 % of the reads were empty before.
        for (auto& [id, n] : nics_) {
            if (n.nf && !n.taps.empty()) {
                n.nf->ack_ready(fds);
                note_taps(n, fds);
            }
        }
        if (pump_all()) {
            spin_.worked();
        }
        // Polling: while frames flowed within the spin window (HVKIT_POLL_US), keep serving
        // instead of going back to the main loop's sleep: netfront's response indices are
        // watched without a syscall, the taps every few probes. One pass is bounded so XenStore
        // events and the command's exit are not held up; the main loop's poll() stays the sleep.
        const auto pass_end = std::chrono::steady_clock::now() + kMaxSpinPass;
        while (spin_.budget().count() > 0 && std::chrono::steady_clock::now() < pass_end) {
            unsigned probe = 0;
            const bool ready = hv::spin_until(
                [&] { return responses_pending() || ((++probe % 8) == 0 && taps_readable()); },
                spin_.budget(), hv::SpinYield::every_64);
            if (!ready) {
                break;
            }
            if (pump_all()) {
                spin_.worked();
            }
        }
    }

    bool ready() const override {
        std::size_t done = 0;
        for (const auto& [id, n] : nics_) {
            done += (n.failed || !n.taps.empty()) ? 1 : 0;
        }
        return done >= initial_;
    }

    void env(std::vector<std::string>& out) const override {
        std::string names;
        for (const auto& [id, n] : nics_) {
            if (!n.taps.empty()) {
                names += (names.empty() ? "" : " ") + n.name;
            }
        }
        out.push_back("HV_NET_IFACES=" + names);
    }

private:
    /// Longest stretch handle() spins before returning to the main loop.
    static constexpr std::chrono::milliseconds kMaxSpinPass{2};

    bool pump_all() {
        bool moved = false;
        for (auto& [id, n] : nics_) {
            if (n.nf && !n.taps.empty()) {
                moved = pump(n) || moved;
            }
        }
        return moved;
    }
    bool responses_pending() {
        for (auto& [id, n] : nics_) {
            if (n.nf && !n.taps.empty() && n.nf->responses_pending()) {
                return true;
            }
        }
        return false;
    }
    bool taps_readable() {
        spin_fds_.clear();
        for (auto& [id, n] : nics_) {
            for (std::size_t q = 0; q < n.taps.size(); ++q) {
                if (!n.held[q] && !n.blocked[q]) {
                    spin_fds_.push_back({n.taps[q].get(), POLLIN, 0});
                }
            }
        }
        if (spin_fds_.empty() || ::poll(spin_fds_.data(), spin_fds_.size(), 0) <= 0) {
            return false;
        }
        for (auto& [id, n] : nics_) {
            note_taps(n, spin_fds_);
        }
        return true;
    }
    /// Marks the taps of `n` a poll found readable (or failed: the read reports it).
    static void note_taps(Nic& n, std::span<const pollfd> polled) {
        for (const pollfd& p : polled) {
            if ((p.revents & (POLLIN | POLLERR | POLLHUP)) == 0) {
                continue;
            }
            for (std::size_t q = 0; q < n.taps.size(); ++q) {
                if (p.fd == n.taps[q].get()) {
                    n.tap_ready[q] = true;
                }
            }
        }
    }

    Result<void> enter_netns() {
        if (in_netns_) {
            return {};
        }
        if (netns_failed_) {
            return fail_errno(EPERM);
        }
        // The domain's own network namespace: this (main) thread enters it, and so does the
        // command spawned from it; XenStore's reader thread keeps its connected socket.
        if (::unshare(CLONE_NEWNET) != 0) {
            netns_failed_ = true;
            return fail_errno();
        }
        in_netns_ = true;
        if (auto r = set_up("lo"); !r) {
            HV_WARN("hv-guest: lo up: %s", r.error().message().c_str());
        }
        return {};
    }

    void rescan(std::vector<std::uint32_t> ids) {
        auto list = ctx_.xs.directory(dir_);
        if (list) {
            for (const auto& e : *list) {
                if (auto v = xenbus::parse_uint(e, UINT32_MAX)) {
                    ids.push_back(static_cast<std::uint32_t>(*v));
                }
            }
        } else {
            // device/vif not listable (created by the toolstack without our read permission)
            // and its events may have fired before our watch: probe the usual devids.
            for (std::uint32_t i = 0; i < kProbeDevids; ++i) {
                ids.push_back(i);
            }
        }
        for (auto it = nics_.begin(); it != nics_.end();) {
            // Gone: its frontend directory was removed (netfront then reports dead).
            auto st = xenbus::read_optional(ctx_.xs, it->second.nf ? it->second.nf->frontend_dir() + "/state"
                                                                     : dir_ + "/" + std::to_string(it->first) + "/state");
            if (st && !*st) {
                HV_INFO("hv-guest: %s removed", it->second.name.c_str());
                it = nics_.erase(it);
            } else {
                ++it;
            }
        }
        for (auto id : ids) {
            if (nics_.count(id) != 0) {
                continue;
            }
            auto st = xenbus::read_optional(ctx_.xs, dir_ + "/" + std::to_string(id) + "/state");
            if (!st || !*st) {
                continue;  // not (yet) a complete device directory
            }
            Nic& n = nics_[id];
            n.devid = id;
            n.name = "eth" + std::to_string(id);
            netfront::Options o;
            o.max_queues = 4;
            // Received packets are written to the tap from their rx pages (writev), not joined.
            o.lend_slots = true;
            // rx with offloads too: a 64 KiB TSO segment crosses as one packet and goes to the
            // tap with its partial checksum and GSO type (the guest's stack takes both).
            auto d = netfront::Device::create(ctx_.hv, ctx_.xs, id, o);
            if (!d) {
                HV_WARN("hv-guest: vif %u: %s", id, d.error().message().c_str());
                n.failed = true;
                continue;
            }
            n.nf = std::move(*d);
            state_change(n);
        }
    }

    void state_change(Nic& n) {
        (void)n.nf->on_state_change();
        if (n.nf->phase() == netfront::Phase::connected && n.taps.empty() && !n.failed) {
            if (auto r = bring_up(n); !r) {
                HV_WARN("hv-guest: %s: %s", n.name.c_str(), r.error().message().c_str());
                n.failed = true;
            }
        } else if (n.nf->phase() != netfront::Phase::connected && !n.taps.empty()) {
            n.taps.clear();  // the tap goes away with its queues; it returns on reconnect
        }
    }

    Result<void> bring_up(Nic& n) {
        HV_TRY(enter_netns());
        const netfront::TxOffloads t = n.nf->tx_offloads();
        auto taps = open_tap(n.name, n.nf->queues(), tap_offloads(t));
        if (!taps) {
            return fail(taps.error());
        }
        n.taps = std::move(*taps);
        n.held.assign(n.taps.size(), std::nullopt);
        n.blocked.assign(n.taps.size(), false);
        n.tap_ready.assign(n.taps.size(), true);
        std::array<unsigned char, 6> mac{};
        if (parse_mac(n.nf->mac(), mac)) {
            ifreq ifr{};
            ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
            std::memcpy(ifr.ifr_hwaddr.sa_data, mac.data(), mac.size());
            HV_TRY(link_ioctl(n.name, SIOCSIFHWADDR, ifr));
        }
        HV_TRY(set_up(n.name));
        HV_INFO("hv-guest: %s up (%u queue(s), mac %s, tx offloads:%s%s%s%s)", n.name.c_str(),
                n.nf->queues(), n.nf->mac().c_str(), t.csum4 ? " csum4" : "",
                t.csum6 ? " csum6" : "", t.gso_tcpv4 ? " tso4" : "", t.gso_tcpv6 ? " tso6" : "");
        return {};
    }

    /// tap → netfront, then netfront → tap, until both are idle (bounded per call). True when a
    /// frame moved either way.
    bool pump(Nic& n) {
        bool moved = false;
        for (unsigned q = 0; q < n.taps.size(); ++q) {
            if (n.held[q]) {
                auto s = n.nf->send_pages(q, n.held[q]->len, n.held[q]->off);
                if (!s && s.error() == netfront::make_error_code(netfront::Errc::busy)) {
                    continue;  // still no room: wait for tx responses
                }
                if (!s) {
                    ++n.tx_dropped;
                }
                n.held[q].reset();
            }
            if (!n.tap_ready[q] && !n.blocked[q]) {
                continue;  // read to EAGAIN and not found readable since: it is polled
            }
            for (int i = 0; i < 256; ++i) {
                // The frame goes straight into free tx pages netfront lends (readv: the header
                // here, the frame there; one spill byte to notice a frame the tap would
                // truncate). No pages free: take the responses that came, else stop reading.
                auto pages = n.nf->tx_pages(q, kMaxTxFrame);
                if (!pages && pages.error() == netfront::make_error_code(netfront::Errc::busy)) {
                    (void)deliver(n);
                    pages = n.nf->tx_pages(q, kMaxTxFrame);
                }
                n.blocked[q] =
                    !pages && pages.error() == netfront::make_error_code(netfront::Errc::busy);
                if (!pages) {
                    break;
                }
                iov_[0] = {hdr_.data(), kHdr};
                std::copy(pages->begin(), pages->end(), iov_.begin() + 1);
                iov_[1 + pages->size()] = {&spill_, 1};
                const ssize_t r =
                    ::readv(n.taps[q].get(), iov_.data(), static_cast<int>(pages->size() + 2));
                if (r < static_cast<ssize_t>(kHdr)) {
                    n.tap_ready[q] = false;  // drained (or failed): wait for a poll to say more
                    break;
                }
                const std::size_t len = static_cast<std::size_t>(r) - kHdr;
                moved = true;
                if (len > kMaxTxFrame) {
                    ++n.tx_dropped;  // longer than the tap may hand us: torn, not sent
                    HV_LOG_RL(warn, "hv-guest: %s: tx frame over %zu bytes dropped", n.name.c_str(),
                              kMaxTxFrame);
                    continue;
                }
                VirtioNetHdr h{};
                std::memcpy(&h, hdr_.data(), sizeof h);
                netfront::Offload off;
                off.csum_blank = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0;
                off.data_validated = off.csum_blank || (h.flags & VIRTIO_NET_HDR_F_DATA_VALID) != 0;
                switch (h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) {
                    case VIRTIO_NET_HDR_GSO_TCPV4:
                        off.gso_type = wire::XEN_NETIF_GSO_TYPE_TCPV4;
                        off.gso_size = h.gso_size;
                        break;
                    case VIRTIO_NET_HDR_GSO_TCPV6:
                        off.gso_type = wire::XEN_NETIF_GSO_TYPE_TCPV6;
                        off.gso_size = h.gso_size;
                        break;
                    default:
                        break;
                }
                auto s = n.nf->send_pages(q, len, off);
                if (!s && s.error() == netfront::make_error_code(netfront::Errc::busy)) {
                    (void)deliver(n);
                    s = n.nf->send_pages(q, len, off);
                }
                if (!s && s.error() == netfront::make_error_code(netfront::Errc::busy)) {
                    n.held[q] = Nic::Held{off, len};  // held in the lent pages until there is room
                    break;
                }
                if (!s) {
                    // A frame netfront cannot carry (never an offload the tap was not given:
                    // the kernel hands us only what TUNSETOFFLOAD allowed).
                    ++n.tx_dropped;
                    HV_LOG_RL(warn, "hv-guest: %s: tx frame dropped (%zu bytes, gso type %u): %s",
                              n.name.c_str(), len, unsigned{off.gso_type},
                              s.error().message().c_str());
                }
            }
        }
        const std::size_t got = deliver(n);
        return moved || got > 0;
    }

    /// netfront → tap: each received packet, lent by netfront (a one-slot packet in its rx
    /// page, a longer one joined in netfront's reused buffer), is written with one writev: no
    /// allocation or copy per packet here.
    std::size_t deliver(Nic& n) {
        return n.nf->poll_each(
            [&](const netfront::PacketView& p) {
            VirtioNetHdr h{};
            if (p.offload.csum_blank || p.offload.gso_type != wire::XEN_NETIF_GSO_TYPE_NONE) {
                h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;  // netfront located the checksum field
                h.csum_start = p.offload.csum_start;
                h.csum_offset = p.offload.csum_offset;
            } else if (p.offload.data_validated) {
                h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
            }
            if (p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4 ||
                p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV6) {
                h.gso_type = p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4
                                 ? VIRTIO_NET_HDR_GSO_TCPV4
                                 : VIRTIO_NET_HDR_GSO_TCPV6;
                h.gso_size = p.offload.gso_size;
            }
            std::array<std::byte, kHdr> hdr{};
            std::memcpy(hdr.data(), &h, sizeof h);
            // The header, then the packet straight from its rx pages (one iovec per slot).
            std::array<iovec, 1 + kMaxParts> iov;
            iov[0] = {hdr.data(), kHdr};
            const std::size_t parts = std::min(p.parts.size(), kMaxParts);
            std::copy_n(p.parts.begin(), parts, iov.begin() + 1);
            const unsigned q = std::min<unsigned>(p.queue, static_cast<unsigned>(n.taps.size() - 1));
            (void)!::writev(n.taps[q].get(), iov.data(), static_cast<int>(1 + parts));
            },
            netfront::Device::Arm::unacked);
    }

    Context& ctx_;
    std::string dir_;
    std::optional<xs::ScopedWatch> watch_;
    std::map<std::uint32_t, Nic> nics_;
    std::size_t initial_ = 0;
    bool in_netns_ = false;
    bool netns_failed_ = false;
    std::array<std::byte, kHdr> hdr_{};                    // a frame read into lent tx pages: its header
    std::array<iovec, 2 + kMaxTxFrame / 4096> iov_{};      // that header, the pages, the spill byte
    std::byte spill_{};
    hv::SpinPolicy spin_{hv::default_spin()};
    std::vector<pollfd> spin_fds_;
};

}  // namespace

std::unique_ptr<DeviceKind> make_nics(Context& ctx) { return std::make_unique<Nics>(ctx); }

}  // namespace hv::guest
