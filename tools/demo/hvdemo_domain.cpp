// hvdemo-domain: a small domain program (the `kernel` of demo and system-test domains) that
// attaches to hv-min and does real work with it. Layer: tools. One thread.
//
//   hvdemo-domain idle    --status FIFO                 attach, report, wait to be destroyed
//   hvdemo-domain crash   --status FIFO                 attach, report, abort()
//   hvdemo-domain peer    --status FIFO --rendezvous FIFO --seed N
//   hvdemo-domain granter --status FIFO --rendezvous FIFO --seed N --peer DOMID
//   hvdemo-domain pci     --status FIFO [--conf-ops N]  pcifront on device/pci/0, report devices
//
// granter: fills the first half of a page (alone in its extent) with a seeded pattern,
// grants it to the peer, allocates an unbound event channel for it and sends
// "<domid> <gref> <port>" through the rendezvous FIFO; then waits for the event, checks the
// second half holds the peer's pattern and revokes the grant (which fails if still mapped).
// peer: binds the event channel, GNTTABOP_copy's the first half into its own memory and
// checks it, maps the grant, checks it again, writes its pattern into the second half,
// unmaps and notifies. Each reports one line per step to the status FIFO:
// "<role> <domid> attached|ok <what>|FAIL <why>". Exit: 0 never (waits to be destroyed),
// 1 on failure (after reporting it), 2 usage.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "hv/rings/xen/grant_table.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#ifdef HVDEMO_PCI
#include <chrono>

#include "frontends/pcifront.hpp"
#include "xenstore/client.hpp"
#endif

namespace {

using hv::hvmin::Services;

constexpr std::size_t kPage = 4096;
constexpr std::size_t kHalf = kPage / 2;
constexpr int kRendezvousTimeoutMs = 20000;
constexpr auto kEventTimeout = std::chrono::seconds(20);

struct Args {
    std::string role;
    std::string status;
    std::string rendezvous;
    std::uint64_t seed = 1;
    long peer = -1;
    long conf_ops = -1;  // pci: config ops to make once connected (-1: none)
};

/// The pattern both sides compute: xorshift64 from the seed (salt separates the halves).
void fill_pattern(std::span<std::byte> out, std::uint64_t seed, std::uint64_t salt) {
    std::uint64_t x = (seed ^ salt) | 1;
    for (auto& b : out) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b = static_cast<std::byte>(x & 0xff);
    }
}

bool matches(std::span<const std::byte> got, std::uint64_t seed, std::uint64_t salt) {
    std::byte want[kPage];
    fill_pattern(std::span(want, got.size()), seed, salt);
    return std::memcmp(got.data(), want, got.size()) == 0;
}

constexpr std::uint64_t kGranterSalt = 0x6772616e746572ull;  // "granter"
constexpr std::uint64_t kPeerSalt = 0x70656572ull;           // "peer"

class Reporter {
public:
    Reporter(const std::string& path, std::string role) : role_(std::move(role)) {
        // The reader (demo script or test) holds the FIFO open, so this does not block.
        fd_ = hv::UniqueFd(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    }
    void set_domid(unsigned d) { domid_ = d; }
    /// One line per write(): under PIPE_BUF, so lines of different domains never interleave.
    void line(const std::string& what) {
        const std::string l = role_ + " " + std::to_string(domid_) + " " + what + "\n";
        if (fd_) {
            (void)!::write(fd_.get(), l.data(), l.size());
        }
        std::fputs(l.c_str(), stderr);
    }
    int fail(const std::string& why) {
        line("FAIL " + why);
        return 1;
    }

private:
    hv::UniqueFd fd_;
    std::string role_;
    unsigned domid_ = 0;
};

[[noreturn]] void wait_to_be_destroyed() {
    // hv-min ends a destroyed domain by killing its process group.
    for (;;) {
        ::pause();
    }
}

int run_granter(Services& svc, Reporter& rep, const Args& a) {
    const hv::DomId peer(static_cast<std::uint16_t>(a.peer));
    auto frame = svc.memory().alloc_extent(1);  // alone in its extent: any peer may map it
    if (!frame) {
        return rep.fail("alloc_extent: " + frame.error().message());
    }
    auto page = svc.memory().frame(*frame);
    if (!page) {
        return rep.fail("frame: " + page.error().message());
    }
    const std::span<std::byte> mem(*page, kPage);
    fill_pattern(mem.first(kHalf), a.seed, kGranterSalt);
    std::memset(mem.data() + kHalf, 0, kHalf);
    auto gref = svc.grants().grant_access(peer, *frame, /*readonly=*/false);
    if (!gref) {
        return rep.fail("grant_access: " + gref.error().message());
    }
    auto port = svc.evtchn().alloc_unbound(peer);
    if (!port) {
        return rep.fail("alloc_unbound: " + port.error().message());
    }
    rep.line("ok granted gref " + std::to_string(gref->get()) + " and port " +
             std::to_string(port->port().get()) + " to domain " + std::to_string(a.peer));

    hv::UniqueFd rv(::open(a.rendezvous.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!rv) {
        return rep.fail("open rendezvous: " + std::string(std::strerror(errno)));
    }
    const std::string msg = std::to_string(svc.domid().get()) + " " + std::to_string(gref->get()) +
                            " " + std::to_string(port->port().get()) + "\n";
    if (::write(rv.get(), msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) {
        return rep.fail("write rendezvous: " + std::string(std::strerror(errno)));
    }

    if (auto w = port->wait(kEventTimeout); !w) {
        return rep.fail("no event from the peer: " + w.error().message());
    }
    port->ack();
    // GUEST: the peer wrote this half through its mapping; it has unmapped before notifying.
    if (!matches(mem.subspan(kHalf), a.seed, kPeerSalt)) {
        return rep.fail("second half does not hold the peer's pattern");
    }
    if (auto e = svc.grants().end_access(*gref); !e) {
        return rep.fail("end_access (the peer should have unmapped): " + e.error().message());
    }
    rep.line("ok event received, peer's " + std::to_string(kHalf) +
             " bytes verified, grant revoked");
    wait_to_be_destroyed();
}

hv::Result<std::string> read_rendezvous(int fd) {
    std::string got;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kRendezvousTimeoutMs);
    while (got.find('\n') == std::string::npos) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return hv::fail(std::make_error_code(std::errc::timed_out));
        }
        pollfd p{fd, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0 && errno != EINTR) {
            return hv::fail_errno();
        }
        if (n > 0) {
            char buf[128];
            const ssize_t r = ::read(fd, buf, sizeof buf);
            if (r > 0) {
                got.append(buf, static_cast<std::size_t>(r));
            }
            if (got.size() > 256) {
                return hv::fail(std::make_error_code(std::errc::message_size));
            }
        }
    }
    return got.substr(0, got.find('\n'));
}

int run_peer(Services& svc, Reporter& rep, const Args& a, int rv_fd) {
    auto msg = read_rendezvous(rv_fd);
    if (!msg) {
        return rep.fail("rendezvous: " + msg.error().message());
    }
    unsigned granter = 0;
    unsigned gref = 0;
    unsigned port = 0;
    if (std::sscanf(msg->c_str(), "%u %u %u", &granter, &gref, &port) != 3 || granter > 0x7fef) {
        return rep.fail("bad rendezvous message '" + *msg + "'");
    }
    const hv::DomId gdom(static_cast<std::uint16_t>(granter));
    auto bound = svc.evtchn().bind_interdomain(gdom, hv::EvtchnPort(port));
    if (!bound) {
        return rep.fail("bind_interdomain: " + bound.error().message());
    }

    // 1. GNTTABOP_copy the first half into our own frame 0.
    auto own = svc.memory().frame(0);
    if (!own) {
        return rep.fail("own frame: " + own.error().message());
    }
    std::memset(*own, 0, kPage);
    hv::rings::gnttab_copy op{};
    op.source.u.ref = gref;
    op.source.domid = gdom.get();
    op.source.offset = 0;
    op.dest.u.gmfn = 0;
    op.dest.domid = hv::rings::DOMID_SELF;
    op.dest.offset = 0;
    op.len = static_cast<std::uint16_t>(kHalf);
    op.flags = hv::rings::GNTCOPY_source_gref;
    if (auto c = svc.grants().copy(std::span(&op, 1)); !c) {
        return rep.fail("gnttab_copy: " + c.error().message());
    }
    if (op.status != hv::rings::GNTST_okay) {
        return rep.fail("gnttab_copy status " + std::to_string(op.status));
    }
    if (!matches(std::span<const std::byte>(*own, kHalf), a.seed, kGranterSalt)) {
        return rep.fail("copied bytes differ from the granter's pattern");
    }
    rep.line("ok grant-copied " + std::to_string(kHalf) + " bytes of gref " + std::to_string(gref) +
             " from domain " + std::to_string(granter) + ", verified");

    // 2. Map it, check again, answer in the second half, unmap.
    {
        auto map = svc.grants().map(gdom, hv::GrantRef(gref), /*readonly=*/false);
        if (!map) {
            return rep.fail("map_grant_ref: " + map.error().message());
        }
        const std::span<std::byte> page = map->page();
        // GUEST: the granter's page; it does not change it while we hold the grant.
        if (!matches(page.first(kHalf), a.seed, kGranterSalt)) {
            return rep.fail("mapped bytes differ from the granter's pattern");
        }
        fill_pattern(page.subspan(kHalf), a.seed, kPeerSalt);
        if (auto u = map->reset(); !u) {
            return rep.fail("unmap: " + u.error().message());
        }
    }
    // Report before notifying: the granter's report follows the event, so this keeps the
    // status lines in causal order.
    rep.line("ok mapped gref " + std::to_string(gref) + ", wrote " + std::to_string(kHalf) +
             " bytes, unmapped; notifying port " + std::to_string(bound->port().get()));
    if (auto n = bound->notify(); !n) {
        return rep.fail("notify: " + n.error().message());
    }
    wait_to_be_destroyed();
}

#ifdef HVDEMO_PCI
/// The PCI bus's devices as one report: "vBDF=vendor:device ..." (conf_read of the ID
/// registers through pcifront), "none" when the bus is empty.
std::string describe_pci(hv::pcifront::Device& dev) {
    std::string out;
    for (const hv::pcifront::Address& a : dev.devices()) {
        auto id = dev.conf_read(a, 0, 4);
        char ids[16] = "?";
        if (id) {
            std::snprintf(ids, sizeof ids, "%04x:%04x", *id & 0xffffu, *id >> 16);
        }
        out += (out.empty() ? "" : " ") + hv::pcifront::to_string(a) + "=" + ids;
    }
    return out.empty() ? "none" : out;
}

/// --conf-ops N, once, on every device of the bus: N config reads (ID registers), N config
/// writes (cache line size), one read past the config space (refused: an error) and MSI
/// enabled then disabled; so pciback's counters grow by known amounts. "ok pci-ops N" or the
/// first failure.
std::string make_conf_ops(hv::pcifront::Device& dev, long n) {
    for (const hv::pcifront::Address& a : dev.devices()) {
        for (long i = 0; i < n; ++i) {
            if (auto r = dev.conf_read(a, 0, 4); !r) {
                return "fail conf_read: " + r.error().message();
            }
            if (auto w = dev.conf_write(a, 0x0c, 1, static_cast<std::uint32_t>(i & 0xff)); !w) {
                return "fail conf_write: " + w.error().message();
            }
        }
        if (dev.conf_read(a, 0x1000, 4)) {
            return "fail conf_read at 0x1000 succeeded";
        }
        auto msi = dev.enable_msi(a);
        if (!msi) {
            return "fail enable_msi: " + msi.error().message();
        }
        if (auto d = dev.disable_msi(a); !d) {
            return "fail disable_msi: " + d.error().message();
        }
    }
    return "ok pci-ops " + std::to_string(n);
}

/// pci: waits for the toolstack to give the domain a PCI bus (device/pci/0), connects it
/// with libpcifront and reports "ok pci <devices>" whenever the set of devices changes
/// (hot-plug and unplug), after the first of them --conf-ops' result; runs until destroyed.
int run_pci(Services& svc, Reporter& rep, long conf_ops) {
    auto xs = hv::xs::Client::from_fd(svc.take_xenstore_fd());
    if (!xs) {
        return rep.fail("xenstore: " + xs.error().message());
    }
    const std::string dir =
        "/local/domain/" + std::to_string(svc.domid().get()) + "/device/pci/0";
    auto w = (*xs)->watch_scoped(dir, "pci-bus");
    if (!w) {
        return rep.fail("watch " + dir + ": " + w.error().message());
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!(*xs)->read(dir + "/backend-id")) {
        if (std::chrono::steady_clock::now() > deadline) {
            return rep.fail("no pci bus within 60 s");
        }
        (void)(*xs)->wait_event(std::chrono::milliseconds(500));
    }
    auto dev = hv::pcifront::Device::create(svc, **xs, 0);
    if (!dev) {
        return rep.fail("pcifront: " + dev.error().message());
    }
    if (auto r = (*dev)->on_state_change(); !r) {
        rep.line("pcifront: " + r.error().message());
    }
    std::uint64_t reported = UINT64_MAX;
    for (;;) {
        if ((*dev)->phase() == hv::pcifront::Phase::connected &&
            (*dev)->generation() != reported) {
            reported = (*dev)->generation();
            rep.line("ok pci " + describe_pci(**dev));
            if (conf_ops >= 0) {
                rep.line(make_conf_ops(**dev, conf_ops));
                conf_ops = -1;
            }
        }
        auto ev = (*xs)->wait_event(std::chrono::seconds(1));
        if (!ev && ev.error() == std::errc::connection_reset) {
            return rep.fail("xenstore connection lost");
        }
        if (ev && ev->token == (*dev)->watch_token()) {
            if (auto r = (*dev)->on_state_change(); !r) {
                rep.line("pcifront: " + r.error().message());
            }
        }
    }
}
#endif

int usage() {
    std::fputs(
        "usage: hvdemo-domain idle|crash|peer|granter|pci --status FIFO "
        "[--rendezvous FIFO] [--seed N] [--peer DOMID] [--conf-ops N]\n",
        stderr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    if (argc < 2) {
        return usage();
    }
    a.role = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        const char* v = argv[i + 1];
        if (k == "--status") {
            a.status = v;
        } else if (k == "--rendezvous") {
            a.rendezvous = v;
        } else if (k == "--seed") {
            a.seed = std::strtoull(v, nullptr, 0);
        } else if (k == "--peer") {
            a.peer = std::strtol(v, nullptr, 0);
        } else if (k == "--conf-ops") {
            a.conf_ops = std::strtol(v, nullptr, 0);
        } else {
            return usage();
        }
    }
    if (argc % 2 != 0 || a.status.empty() ||
        (a.role != "idle" && a.role != "crash" && a.role != "peer" && a.role != "granter" &&
         a.role != "pci") ||
        ((a.role == "peer" || a.role == "granter") && a.rendezvous.empty()) ||
        (a.role == "granter" && (a.peer <= 0 || a.peer > 0x7fef))) {
        return usage();
    }
    ::signal(SIGPIPE, SIG_IGN);
    Reporter rep(a.status, a.role);
    // The peer opens the rendezvous FIFO before it reports "attached", so the granter
    // (created after that report) always finds a reader. O_RDWR: never an EOF while waiting.
    hv::UniqueFd rv;
    if (a.role == "peer") {
        rv = hv::UniqueFd(::open(a.rendezvous.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
        if (!rv) {
            return rep.fail("open rendezvous: " + std::string(std::strerror(errno)));
        }
    }
    auto svc = hv::hvmin::attach();
    if (!svc) {
        return rep.fail("attach: " + svc.error().message());
    }
    rep.set_domid(svc->domid().get());
    rep.line("attached");
    if (a.role == "idle") {
        wait_to_be_destroyed();
    }
    if (a.role == "crash") {
        std::abort();
    }
    if (a.role == "granter") {
        return run_granter(*svc, rep, a);
    }
    if (a.role == "pci") {
#ifdef HVDEMO_PCI
        return run_pci(*svc, rep, a.conf_ops);
#else
        return rep.fail("built without libpcifront");
#endif
    }
    return run_peer(*svc, rep, a, rv.get());
}
