// hvmin_test_guest: a domain program driven line by line by a test (hv-min tests only).
// argv[1] = path of the test's control socket. Each command line gets one reply line,
// "ok ..." or "err ...". It is a real domain: started by hv-min, attached through libhv.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "evtchn_waits.hpp"
#include "hvmin/client.hpp"
#include "hvmin/wire.hpp"
#ifdef HVMIN_TEST_HAVE_XENSTORE
#include "xenstore/client.hpp"
#endif

using namespace hv;
using namespace hv::hvmin;

namespace {

int connect_ctl(const char* path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        std::perror("connect");
        std::exit(3);
    }
    return fd;
}

std::string err(const std::error_code& ec) {
    if (ec.category() == gntst_category()) {
        return "err gntst " + std::to_string(-ec.value());
    }
    return "err " + std::string(ec.category().name()) + " " + std::to_string(ec.value());
}

/// "fds": memfd-backed fds held; "maps": sizes of memfd mappings (for isolation checks).
std::string describe_fds() {
    std::string out;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        auto t = std::filesystem::read_symlink(e.path(), ec);
        if (!ec && t.string().rfind("/memfd:", 0) == 0) {
            out += " " + t.string().substr(7);
        }
    }
    return out;
}

/// Hostile: what a domain can do to the descriptors of one of its ports to block others (the
/// eventfd attack: clear O_NONBLOCK, saturate). Both descriptors are set blocking; the peer's
/// queue is filled; threads are left in the kernel on them for good: writing 2^64-2 to each
/// until that blocks, and splicing the port's own receiver into a full pipe. Returns how many
/// datagrams filled the peer's queue.
int sabotage_port(const EventChannelBinding& b) {
    const int rfd = b.fd();
    const int sfd = b.notify_fd();
    const std::uint64_t big = 0xfffffffffffffffe;
    int sent = 0;
    if (sfd >= 0) {
        while (sent < 4096 && ::send(sfd, &big, sizeof big, MSG_DONTWAIT) > 0) {
            ++sent;
        }
        (void)::fcntl(sfd, F_SETFL, 0);
        std::thread([sfd, big] {
            while (::write(sfd, &big, sizeof big) > 0) {
            }
        }).detach();
    }
    // Written to as well (a port's own eventfd took writes; a receiver socket refuses them).
    (void)::fcntl(rfd, F_SETFL, 0);
    std::thread([rfd, big] {
        while (::write(rfd, &big, sizeof big) > 0) {
        }
    }).detach();
    int pp[2];
    if (::pipe2(pp, O_CLOEXEC | O_NONBLOCK) == 0) {
        (void)::fcntl(pp[1], F_SETPIPE_SZ, 4096);
        char fill[4096] = {};
        while (::write(pp[1], fill, sizeof fill) > 0) {
        }
        (void)::fcntl(pp[1], F_SETFL, 0);
        (void)::fcntl(rfd, F_SETFL, 0);
        std::thread([rfd, w = pp[1]] {
            while (::splice(rfd, nullptr, w, nullptr, 4096, 0) > 0) {
            }
        }).detach();
    }
    return sent;
}

/// See "spinpong" below.
unsigned long spin_pong(EventChannelBinding& b, unsigned long n, unsigned seed) {
    static constexpr int kSpinUs[] = {0, 1, 2, 3, 5, 8, 13, 50};
    unsigned long answers = 0;
    while (answers < n) {
        seed = seed * 1103515245U + 12345U;
        if ((seed >> 24) % 3 == 0) {
            if (!hv::hvmin::test::poll_and_ack(b, 2000)) {
                break;
            }
        } else {
            b.set_spin(std::chrono::microseconds(kSpinUs[(seed >> 16) % 8]));  // 0: sleep at once
            if (!b.wait(std::chrono::milliseconds(2000))) {
                break;
            }
            if (!b.ack()) {
                continue;  // a spurious wake-up (legal)
            }
        }
        seed = seed * 1103515245U + 12345U;
        const unsigned pause = (seed >> 16) % 64;
        if (pause == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(300));
        } else {
            const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(pause % 16);
            while (std::chrono::steady_clock::now() < end) {
            }
        }
        if (!b.notify()) {
            break;
        }
        ++answers;
    }
    return answers;
}

/// See "smash" below.
std::string smash_words(Services& svc, unsigned dom, unsigned port) {
    rings::evtchn_bind_interdomain bi{static_cast<std::uint16_t>(dom), port, 0};
    auto r = svc.channel().call(wire::Op::evtchn_bind_interdomain, 1, std::as_bytes(std::span(&bi, 1)));
    if (!r) {
        return err(r.error());
    }
    if (r->hdr.rc != 0 || r->fds.size() != 3 || r->body.size() != sizeof bi + sizeof(wire::EvtchnWords)) {
        return "err reply " + std::to_string(r->hdr.rc) + " " + std::to_string(r->fds.size());
    }
    std::memcpy(&bi, r->body.data(), sizeof bi);
    const int page = r->fds[2].release();
    const int e = ::ftruncate(page, 0) == 0 ? 0 : errno;
    void* p = ::mmap(nullptr, wire::kEvtchnWordsPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, page, 0);
    if (p == MAP_FAILED) {
        return "err mmap";
    }
    std::thread([page, w = static_cast<std::uint32_t*>(p)] {
        std::uint32_t x = 0x9e3779b9U;
        for (unsigned round = 0;; ++round) {
            for (std::size_t i = 0; i < wire::kEvtchnWordsPageBytes / 4; ++i) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Odd rounds garbage; even rounds every word set to one of the states a
                // waiter publishes (idle, spinning, futex-sleeping) or ~0, in turn.
                const std::uint32_t v = (round / 2) % 4 == 3 ? ~0U : (round / 2) % 4;
                std::atomic_ref<std::uint32_t>(w[i]).store((round & 1) != 0 ? x : v,
                                                           std::memory_order_relaxed);
            }
            if (round % 64 == 0) {
                (void)::fallocate(page, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                                  wire::kEvtchnWordsPageBytes);
            }
        }
    }).detach();
    return "ok " + std::to_string(bi.local_port) + " " + std::to_string(e);
}

/// "raw HEX": HEX (two digits a byte) sent as one hypercall datagram on the domain's own
/// socket; "ok RC SEQ COUNT BODYHEX" from the reply.
std::string raw_call(Services& svc, const std::string& hex) {
    std::vector<std::byte> d;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        d.push_back(static_cast<std::byte>(std::stoul(hex.substr(i, 2), nullptr, 16)));
    }
    auto r = svc.channel().call_raw(d, 5000);
    if (!r) {
        return err(r.error());
    }
    std::string out = "ok " + std::to_string(r->hdr.rc) + " " + std::to_string(r->hdr.seq) + " " +
                      std::to_string(r->hdr.count) + " ";
    char b[3];
    for (auto x : r->body) {
        std::snprintf(b, sizeof b, "%02x", static_cast<unsigned>(x));
        out += b;
    }
    return out;
}

/// "pipeline N": N gnttab_query_size calls on the domain's own socket, up to 64 outstanding,
/// every reply read and checked (in order, rc 0, status okay). "ok N" or where it went wrong.
std::string pipeline_calls(Services& svc, unsigned long n) {
    const int fd = svc.channel().fd();
    wire::Header h{wire::kMagic, static_cast<std::uint16_t>(wire::Op::gnttab_query_size), 0, 1, 0};
    rings::gnttab_query_size q{};
    q.dom = rings::DOMID_SELF;
    std::byte msg[sizeof h + sizeof q];
    std::memcpy(msg + sizeof h, &q, sizeof q);
    std::byte rbuf[256];
    unsigned long sent = 0;
    unsigned long answered = 0;
    while (answered < n) {
        while (sent < n && sent - answered < 64) {
            h.seq = static_cast<std::uint32_t>(sent);
            std::memcpy(msg, &h, sizeof h);
            if (::send(fd, msg, sizeof msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof msg)) {
                return "err send " + std::to_string(sent);
            }
            sent++;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10000) != 1) {
            return "err noreply " + std::to_string(answered);
        }
        const auto got = ::recv(fd, rbuf, sizeof rbuf, 0);
        wire::ReplyHeader rh;
        rings::gnttab_query_size a;
        if (got != static_cast<ssize_t>(sizeof rh + sizeof a)) {
            return "err size " + std::to_string(answered) + " " + std::to_string(got);
        }
        std::memcpy(&rh, rbuf, sizeof rh);
        std::memcpy(&a, rbuf + sizeof rh, sizeof a);
        if (rh.seq != static_cast<std::uint32_t>(answered) || rh.rc != 0 ||
            a.status != rings::GNTST_okay || a.nr_frames == 0) {
            return "err reply " + std::to_string(answered) + " " + std::to_string(rh.seq) + " " +
                   std::to_string(rh.rc) + " " + std::to_string(a.status);
        }
        answered++;
    }
    return "ok " + std::to_string(answered);
}

/// "selfcopy FRAME SEQ": writes 8 bytes made of SEQ into FRAME, gnttab_copy's them (one
/// hypercall, both sides the domain's own frames) into FRAME+1 and reads them back there.
std::string self_copy(Services& svc, std::uint64_t frame, std::uint64_t seq) {
    auto src = svc.memory().frame(frame);
    auto dst = svc.memory().frame(frame + 1);
    if (!src || !dst) {
        return "err frame";
    }
    const std::uint16_t off = static_cast<std::uint16_t>((seq % 512) * 8);
    const std::uint64_t v = seq * 0x9E3779B97F4A7C15ull;
    std::memcpy(*src + off, &v, 8);
    rings::gnttab_copy c{};
    c.source.u.gmfn = frame;
    c.source.domid = rings::DOMID_SELF;
    c.source.offset = off;
    c.dest.u.gmfn = frame + 1;
    c.dest.domid = rings::DOMID_SELF;
    c.dest.offset = off;
    c.len = 8;
    if (auto r = svc.grants().copy(std::span(&c, 1)); !r) {
        return err(r.error());
    }
    if (c.status != rings::GNTST_okay) {
        return "err gntst " + std::to_string(c.status);
    }
    std::uint64_t back = 0;
    std::memcpy(&back, *dst + off, 8);
    return back == v ? "ok" : "err bytes";
}

std::string describe_maps() {
    std::ifstream f("/proc/self/maps");
    std::string line;
    std::string out;
    while (std::getline(f, line)) {
        const auto m = line.find("/memfd:");
        if (m == std::string::npos) {
            continue;
        }
        unsigned long lo = 0;
        unsigned long hi = 0;
        std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi);
        char perms[8] = {};
        std::sscanf(line.c_str(), "%*x-%*x %4s", perms);
        std::string name = line.substr(m + 7);
        name = name.substr(0, name.find(' '));
        out += " " + name + ":" + std::to_string(hi - lo) + ":" + perms;
    }
    return out;
}

#ifdef HVMIN_TEST_HAVE_XENSTORE
/// The XenStore commands, on the domain's own connection:
///   xsread PATH | xswrite PATH VALUE | xsrm PATH | xswatch PATH TOKEN | xsunwatch PATH TOKEN
///   xsevent MS (next watch event: "ok PATH TOKEN", or the error, e.g. ETIMEDOUT)
///   xsperms PATH PERM... (SET_PERMS, e.g. "xsperms data/x n5 r0") | xsgetperms PATH
///   xsraw TYPE ARG... (any message: each ARG NUL-terminated; reply NULs shown as spaces)
std::string xs_command(xs::Client& xs, const std::string& cmd, std::istringstream& is) {
    std::string path;
    is >> path;
    auto done = [](const Result<void>& r) { return r ? std::string("ok") : err(r.error()); };
    if (cmd == "xswrite") {
        std::string value;
        is >> value;
        return done(xs.write(path, value));
    }
    if (cmd == "xsread") {
        auto r = xs.read(path);
        return r ? "ok " + *r : err(r.error());
    }
    if (cmd == "xsrm") {
        return done(xs.rm(path));
    }
    if (cmd == "xswatch" || cmd == "xsunwatch") {
        std::string token;
        is >> token;
        return done(cmd == "xswatch" ? xs.watch(path, token) : xs.unwatch(path, token));
    }
    if (cmd == "xsevent") {
        auto e = xs.wait_event(std::chrono::milliseconds(std::stol(path)));
        return e ? "ok " + e->path + " " + e->token : err(e.error());
    }
    if (cmd == "xsperms") {
        std::vector<xs::Permission> perms;
        std::string p;
        while (is >> p) {
            auto parsed = xs::parse_permission(p);
            if (!parsed) {
                return "err perm";
            }
            perms.push_back(*parsed);
        }
        return done(xs.set_perms(path, perms));
    }
    if (cmd == "xsgetperms") {
        auto r = xs.get_perms(path);
        if (!r) {
            return err(r.error());
        }
        std::string out = "ok";
        for (const auto& p : *r) {
            out += " " + xs::to_string(p);
        }
        return out;
    }
    if (cmd == "xsraw") {
        std::string payload;
        std::string a;
        while (is >> a) {
            payload += a;
            payload += '\0';
        }
        auto r = xs.request(static_cast<xs::MsgType>(std::stoul(path)), payload);
        if (!r) {
            return err(r.error());
        }
        std::string out = *r;
        std::replace(out.begin(), out.end(), '\0', ' ');
        return "ok " + out;
    }
    return "err usage";
}
#endif

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        return 2;
    }
    auto svc = attach();
    if (!svc) {
        std::fprintf(stderr, "attach: %s\n", svc.error().message().c_str());
        return 4;
    }
    const int ctl = connect_ctl(argv[1]);
    FILE* in = ::fdopen(ctl, "r");
    std::map<int, GrantMapping> maps;
    std::map<int, IomemMapping> iomaps;
    std::map<int, UniqueFd> iofds;
    std::map<std::uint32_t, EventChannelBinding> ports;
    int next_map = 1;
    UniqueFd xsfd = svc->take_xenstore_fd();
#ifdef HVMIN_TEST_HAVE_XENSTORE
    std::unique_ptr<xs::Client> xs;
#else
    bool xs = false;
#endif
    char buf[4096];
    while (std::fgets(buf, sizeof buf, in) != nullptr) {
        std::istringstream is(buf);
        std::string cmd;
        is >> cmd;
        std::string reply = "err usage";
        if (cmd == "info") {
            reply = "ok " + std::to_string(svc->domid().get()) + " " + (svc->trusted() ? "1" : "0") +
                    " " + std::to_string(svc->memory().nr_frames()) + " " +
                    (xsfd.valid() || xs ? "xs" : "noxs");
        } else if (cmd == "grant") {
            unsigned dom = 0;
            unsigned long long frame = 0;
            int ro = 0;
            is >> dom >> frame >> ro;
            auto r = svc->grants().grant_access(DomId(static_cast<std::uint16_t>(dom)), frame, ro != 0);
            reply = r ? "ok " + std::to_string(r->get()) : err(r.error());
        } else if (cmd == "end") {
            unsigned ref = 0;
            is >> ref;
            auto r = svc->grants().end_access(GrantRef(ref));
            reply = r ? "ok" : err(r.error());
        } else if (cmd == "flags") {
            unsigned ref = 0;
            is >> ref;
            reply = "ok " + std::to_string(svc->grants().entry_flags(GrantRef(ref)));
        } else if (cmd == "write" || cmd == "read") {
            unsigned long long frame = 0;
            unsigned off = 0;
            is >> frame >> off;
            auto p = svc->memory().frame(frame);
            if (!p || off >= 4096) {
                reply = "err frame";
            } else if (cmd == "write") {
                std::string s;
                is >> s;
                std::memcpy(*p + off, s.data(), std::min<std::size_t>(s.size(), 4096 - off));
                reply = "ok";
            } else {
                unsigned len = 0;
                is >> len;
                reply = "ok " + std::string(reinterpret_cast<const char*>(*p + off),
                                            std::min<std::size_t>(len, 4096 - off));
            }
        } else if (cmd == "extent") {
            unsigned pages = 0;
            is >> pages;
            auto r = svc->memory().alloc_extent(pages);
            reply = r ? "ok " + std::to_string(*r) : err(r.error());
        } else if (cmd == "map") {
            unsigned dom = 0;
            unsigned ref = 0;
            int ro = 0;
            is >> dom >> ref >> ro;
            auto r = svc->grants().map(DomId(static_cast<std::uint16_t>(dom)), GrantRef(ref), ro != 0);
            if (r) {
                maps.emplace(next_map, std::move(*r));
                reply = "ok " + std::to_string(next_map++);
            } else {
                reply = err(r.error());
            }
        } else if (cmd == "mapread" || cmd == "mapwrite") {
            int id = 0;
            unsigned off = 0;
            is >> id >> off;
            auto it = maps.find(id);
            if (it == maps.end() || off >= 4096) {
                reply = "err nomap";
            } else if (cmd == "mapwrite") {
                std::string s;
                is >> s;
                std::memcpy(it->second.data() + off, s.data(), std::min<std::size_t>(s.size(), 4096 - off));
                reply = "ok";
            } else {
                unsigned len = 0;
                is >> len;
                reply = "ok " + std::string(reinterpret_cast<const char*>(it->second.data() + off),
                                            std::min<std::size_t>(len, 4096 - off));
            }
        } else if (cmd == "unmap") {
            int id = 0;
            is >> id;
            auto it = maps.find(id);
            if (it == maps.end()) {
                reply = "err nomap";
            } else {
                auto r = it->second.reset();
                maps.erase(it);
                reply = r ? "ok" : err(r.error());
            }
        } else if (cmd == "iomap") {  // iomap GRANTER HANDLE → ok ID SIZE W
            unsigned dom = 0;
            unsigned handle = 0;
            is >> dom >> handle;
            auto r = svc->iomem().map(DomId(static_cast<std::uint16_t>(dom)), handle);
            if (r) {
                reply = "ok " + std::to_string(next_map) + " " + std::to_string(r->size()) + " " +
                        (r->writable() ? "1" : "0");
                iomaps.emplace(next_map++, std::move(*r));
            } else {
                reply = err(r.error());
            }
        } else if (cmd == "iogrant") {  // iogrant DOM: a guest trying to grant I/O memory
            unsigned dom = 0;
            is >> dom;
            UniqueFd m(::memfd_create("guest-bar", MFD_CLOEXEC));
            if (!m || ::ftruncate(m.get(), 4096) != 0) {
                reply = "err memfd";
            } else {
                auto r = svc->iomem().grant(m.get(), 4096, DomId(static_cast<std::uint16_t>(dom)), false);
                reply = r ? "ok " + std::to_string(*r) : err(r.error());
            }
        } else if (cmd == "iofd") {  // iofd GRANTER HANDLE → ok ID (the fd itself, kept)
            unsigned dom = 0;
            unsigned handle = 0;
            is >> dom >> handle;
            auto r = svc->iomem().open(DomId(static_cast<std::uint16_t>(dom)), handle);
            if (r) {
                iofds.emplace(next_map, std::move(*r));
                reply = "ok " + std::to_string(next_map++);
            } else {
                reply = err(r.error());
            }
        } else if (cmd == "iofdmap") {  // iofdmap ID W: mmap the kept fd (W=1: PROT_WRITE too)
            int id = 0;
            int w = 0;
            is >> id >> w;
            auto it = iofds.find(id);
            if (it == iofds.end()) {
                reply = "err nofd";
            } else {
                auto m = Mapping::map_shared(it->second.get(), 4096, 0,
                                             w != 0 ? PROT_READ | PROT_WRITE : PROT_READ);
                reply = m ? "ok" : err(m.error());
            }
        } else if (cmd == "ioprotect") {  // ioprotect ID: try to make a mapping writable
            int id = 0;
            is >> id;
            auto it = iomaps.find(id);
            if (it == iomaps.end()) {
                reply = "err nomap";
            } else {
                reply = ::mprotect(it->second.data(), it->second.size(), PROT_READ | PROT_WRITE) == 0
                            ? "ok"
                            : err(std::error_code(errno, std::system_category()));
            }
        } else if (cmd == "iowrite" || cmd == "ioread") {  // io{write,read} ID OFF {TEXT|LEN}
            int id = 0;
            std::size_t off = 0;
            is >> id >> off;
            auto it = iomaps.find(id);
            if (it == iomaps.end() || off >= it->second.size()) {
                reply = "err nomap";
            } else if (cmd == "iowrite") {
                std::string t;
                is >> t;
                std::memcpy(it->second.data() + off, t.data(), std::min(t.size(), it->second.size() - off));
                reply = "ok";
            } else {
                std::size_t len = 0;
                is >> len;
                reply = "ok " + std::string(reinterpret_cast<const char*>(it->second.data() + off),
                                            std::min(len, it->second.size() - off));
            }
        } else if (cmd == "iounmap" || cmd == "ioclose") {
            int id = 0;
            is >> id;
            const std::size_t n = cmd == "iounmap" ? iomaps.erase(id) : iofds.erase(id);
            reply = n != 0 ? "ok" : "err nomap";
        } else if (cmd == "iochild") {  // iochild ID: a child process keeps fd ID; ours is closed
            int id = 0;
            is >> id;
            auto it = iofds.find(id);
            if (it == iofds.end()) {
                reply = "err nofd";
            } else {
                const pid_t child = ::fork();
                if (child == 0) {
                    for (;;) {
                        ::pause();
                    }
                }
                iofds.erase(it);
                reply = child > 0 ? "ok " + std::to_string(child) : "err fork";
            }
        } else if (cmd == "fds") {
            reply = "ok" + describe_fds();
        } else if (cmd == "maps") {
            reply = "ok" + describe_maps();
        } else if (cmd == "unbound") {
            unsigned dom = 0;
            is >> dom;
            auto r = svc->evtchn().alloc_unbound(DomId(static_cast<std::uint16_t>(dom)));
            if (r) {
                const auto port = r->port().get();
                ports[port] = std::move(*r);
                reply = "ok " + std::to_string(port);
            } else {
                reply = err(r.error());
            }
        } else if (cmd == "bind") {
            unsigned dom = 0;
            unsigned port = 0;
            is >> dom >> port;
            auto r = svc->evtchn().bind_interdomain(DomId(static_cast<std::uint16_t>(dom)), EvtchnPort(port));
            if (r) {
                const auto lp = r->port().get();
                ports[lp] = std::move(*r);
                reply = "ok " + std::to_string(lp);
            } else {
                reply = err(r.error());
            }
        } else if (cmd == "sabotage") {  // sabotage PORT → ok DATAGRAMS (see sabotage_port)
            unsigned port = 0;
            is >> port;
            auto it = ports.find(port);
            reply = it == ports.end() ? "err noport" : "ok " + std::to_string(sabotage_port(it->second));
        } else if (cmd == "notify" || cmd == "wait" || cmd == "ack" || cmd == "close") {
            unsigned port = 0;
            is >> port;
            auto it = ports.find(port);
            if (it == ports.end()) {
                reply = "err noport";
            } else if (cmd == "notify") {
                auto r = it->second.notify();
                reply = r ? "ok" : err(r.error());
            } else if (cmd == "wait") {
                int ms = 0;
                is >> ms;
                auto r = it->second.wait(std::chrono::milliseconds(ms));
                reply = r ? "ok" : err(r.error());
            } else if (cmd == "ack") {
                reply = it->second.ack() ? "ok 1" : "ok 0";
            } else {
                auto r = it->second.close();
                ports.erase(it);
                reply = r ? "ok" : err(r.error());
            }
        } else if (cmd == "status") {
            unsigned port = 0;
            unsigned dom = rings::DOMID_SELF;
            is >> port >> dom;
            auto r = svc->evtchn().status(DomId(static_cast<std::uint16_t>(dom)), EvtchnPort(port));
            reply = r ? "ok " + std::to_string(r->status) + " " +
                            std::to_string(r->u.interdomain.dom) + " " +
                            std::to_string(r->u.interdomain.port)
                      : err(r.error());
        } else if (cmd == "virq") {
            unsigned virq = 0;
            is >> virq;
            auto r = svc->evtchn().bind_virq(virq);
            reply = r ? "ok " + std::to_string(r->port().get()) : err(r.error());
        } else if (cmd == "burst") {
            // Hostile: n hypercalls without ever reading a reply.
            unsigned long n = 0;
            is >> n;
            wire::Header h{wire::kMagic, static_cast<std::uint16_t>(wire::Op::gnttab_query_size), 0, 1, 0};
            rings::gnttab_query_size q{};
            q.dom = rings::DOMID_SELF;
            char msg[sizeof h + sizeof q];
            std::memcpy(msg + sizeof h, &q, sizeof q);
            unsigned long sent = 0;
            for (; sent < n; ++sent) {
                h.seq = static_cast<std::uint32_t>(sent);
                std::memcpy(msg, &h, sizeof h);
                if (::send(svc->channel().fd(), msg, sizeof msg, MSG_NOSIGNAL) < 0) {
                    break;  // hv-min dropped us
                }
            }
            reply = "ok " + std::to_string(sent);
        } else if (cmd == "raw") {
            std::string hex;
            is >> hex;
            reply = raw_call(*svc, hex);
        } else if (cmd == "pipeline") {
            unsigned long n = 0;
            is >> n;
            reply = pipeline_calls(*svc, n);
        } else if (cmd == "selfcopy") {
            unsigned long long frame = 0;
            unsigned long long seq = 0;
            is >> frame >> seq;
            reply = self_copy(*svc, frame, seq);
        } else if (cmd == "pagespam") {
            // Hostile: sets up the primary connection's hypercall page, then a thread posts
            // garbage requests (random op, flags, count, ops; a new seq each time, never
            // waiting for a reply) and rings the doorbell, until the domain dies.
            if (auto r = svc->channel().setup_page(); !r) {
                reply = err(r.error());
            } else {
                HypercallPage* page = svc->channel().page();
                std::thread([page] {
                    std::uint64_t x = 0x9E3779B97F4A7C15ull;
                    auto next = [&x] {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        return x;
                    };
                    for (std::uint32_t seq = 1;; ++seq) {
                        wire::PageHeader* h = page->header();
                        for (std::size_t i = wire::kPageOpsOffset; i + 8 <= wire::kPageBytes;
                             i += 8) {
                            const std::uint64_t v = next();
                            std::memcpy(page->data() + i, &v, 8);
                        }
                        const std::uint64_t v = next();
                        h->req.op = (v & 1) ? static_cast<std::uint16_t>(wire::Op::gnttab_copy)
                                            : static_cast<std::uint16_t>(v >> 8);
                        h->req.flags = (v & 6) == 6 ? 1 : 0;
                        h->req.count = static_cast<std::uint32_t>((v >> 24) % 300);
                        h->req.caller_sleeping = static_cast<std::uint32_t>(v >> 40) & 1;
                        std::atomic_ref(h->req.seq).store(seq, std::memory_order_release);
                        if ((seq & 15) == 0) {
                            page->ring();
                        }
                    }
                }).detach();
                reply = "ok";
            }
        } else if (cmd == "rawentry") {
            // Writes a grant entry directly, bypassing libhv's checks (hostile granter).
            unsigned ref = 0;
            unsigned flags = 0;
            unsigned dom = 0;
            unsigned long frame = 0;
            is >> ref >> flags >> dom >> frame;
            reply = "err range";
            if (ref < svc->grants().nr_entries()) {
                // Reaches the table through libhv's own mapping: frame 0 of the table is the
                // grant-table fd; entries are plain shared memory.
                auto* e = svc->grants().entry_for_test(rings::grant_ref_t(ref));
                e->domid = static_cast<std::uint16_t>(dom);
                e->frame = static_cast<std::uint32_t>(frame);
                std::atomic_thread_fence(std::memory_order_release);
                e->flags = static_cast<std::uint16_t>(flags);
                reply = "ok";
            }
        } else if (cmd == "allocin") {
            // EVTCHNOP_alloc_unbound with an explicit dom (only dom0 may name another domain).
            unsigned dom = 0;
            unsigned remote = 0;
            is >> dom >> remote;
            rings::evtchn_alloc_unbound a{static_cast<std::uint16_t>(dom), static_cast<std::uint16_t>(remote), 0};
            auto r = svc->channel().call(wire::Op::evtchn_alloc_unbound, 1,
                                         std::as_bytes(std::span(&a, 1)));
            reply = r ? "ok " + std::to_string(r->hdr.rc) : err(r.error());
#ifdef HVMIN_TEST_HAVE_XENSTORE
        } else if (cmd.rfind("xs", 0) == 0) {
            if (!xs && xsfd.valid()) {
                auto c = xs::Client::from_fd(std::move(xsfd), {std::chrono::milliseconds(5000)});
                if (c) {
                    xs = std::move(*c);
                }
            }
            reply = xs ? xs_command(*xs, cmd, is) : "err noxs";
#endif
        } else if (cmd == "mapmany") {
            // One batched map of refs first..first+n-1: "ok <okay count> <status of the last>".
            unsigned dom = 0;
            unsigned first = 0;
            unsigned n = 0;
            is >> dom >> first >> n;
            std::vector<MapRequest> reqs;
            for (unsigned i = 0; i < n; ++i) {
                reqs.push_back({DomId(static_cast<std::uint16_t>(dom)), GrantRef(first + i), false});
            }
            auto r = svc->grants().map_batch(reqs);
            if (!r) {
                reply = err(r.error());
            } else {
                int okay = 0;
                std::string last = "ok";
                for (auto& m : *r) {
                    if (m) {
                        okay++;
                        maps.emplace(next_map++, std::move(*m));
                    } else {
                        last = err(m.error());
                    }
                }
                reply = "ok " + std::to_string(okay) + " " + last;
            }
        } else if (cmd == "getenv") {
            std::string name;
            is >> name;
            const char* v = std::getenv(name.c_str());
            reply = v != nullptr ? std::string("ok ") + v : "err unset";
        } else if (cmd == "toolop") {
            auto r = svc->channel().call(wire::Op::domain_list, 0, {});
            reply = r ? "ok " + std::to_string(r->hdr.rc) : err(r.error());
        } else if (cmd == "hangup") {
            // Closes the hypercall socket as a program leaving main does, then exits with
            // `code` after `ms` (or, with code -1, keeps running).
            int code = 0;
            int ms = 0;
            is >> code >> ms;
            ::shutdown(svc->channel().fd(), SHUT_RDWR);
            ::usleep(static_cast<useconds_t>(ms) * 1000);
            if (code >= 0) {
                std::_Exit(code);
            }
            reply = "ok";
        } else if (cmd == "spinpong") {
            // spinpong PORT N SEED: answers each event on PORT with a notify, up to N answers
            // or until no event comes for 2 s, waiting each time in a random way: wait() with
            // a random spin budget (0-50 us, so that spins end at every possible moment; 0
            // sleeps on the futex at once) or, one time in three, poll(2) on the fd as a
            // backend's main loop does; then a random pause before each answer (mostly short,
            // sometimes long enough for the peer to go to sleep). "ok ANSWERS".
            unsigned port = 0;
            unsigned long n = 0;
            unsigned seed = 0;
            is >> port >> n >> seed;
            auto it = ports.find(port);
            if (it == ports.end()) {
                reply = "err noport";
            } else {
                reply = "ok " + std::to_string(spin_pong(it->second, n, seed));
            }
        } else if (cmd == "smash") {
            // smash DOM PORT: binds PORT of DOM by hand, then a thread writes garbage over the
            // whole page of the channel's shared words until the domain dies, and punches it out
            // now and then. "ok LPORT E": E is ftruncate's errno on the page (0 if it shrank).
            unsigned dom = 0;
            unsigned port = 0;
            is >> dom >> port;
            reply = smash_words(*svc, dom, port);
        } else if (cmd == "crash") {
            std::abort();
        } else if (cmd == "exit") {
            int code = 0;
            is >> code;
            std::_Exit(code);
        }
        reply += "\n";
        if (::write(ctl, reply.data(), reply.size()) < 0) {
            return 5;
        }
    }
    return 0;
}
