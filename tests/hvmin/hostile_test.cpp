// Hostile hypercall input: malformed, short, random, out-of-range datagrams and bursts from a
// guest domain while a second guest's real hypercalls are served throughout (SteadyGuest);
// floods, a domain that never reads replies.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <optional>
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <thread>

#include "harness.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace hv::rings;
using namespace std::chrono_literals;

namespace {

std::vector<std::byte> datagram(std::uint32_t magic, std::uint16_t op, std::uint16_t flags,
                                std::uint32_t count, std::size_t body_len, std::uint32_t seq = 9) {
    wire::Header h{magic, op, flags, count, seq};
    std::vector<std::byte> d(sizeof h + body_len);
    std::memcpy(d.data(), &h, sizeof h);
    return d;
}

std::int32_t rc_of(Services& s, const std::vector<std::byte>& d) {
    auto r = s.channel().call_raw(d, 5000);
    REQUIRE(r);
    return r->hdr.rc;
}

constexpr auto op_of(wire::Op o) { return static_cast<std::uint16_t>(o); }

/// A guest's answer to "raw HEX" (hvmin_test_guest): the reply to that datagram, sent on the
/// guest's own hypercall socket.
struct RawReply {
    std::int32_t rc = 0;
    std::uint32_t seq = 0;
    std::uint32_t count = 0;
    std::vector<std::byte> body;
};

RawReply raw_of(Puppet& g, std::span<const std::byte> d) {
    static const char* digits = "0123456789abcdef";
    std::string line = "raw ";
    for (auto b : d) {
        line += digits[static_cast<unsigned>(b) >> 4];
        line += digits[static_cast<unsigned>(b) & 15];
    }
    const auto r = g.cmd(line);
    INFO(r);
    const auto w = words(r);
    REQUIRE(w.size() >= 4);
    REQUIRE(w[0] == "ok");
    RawReply out{std::stoi(w[1]),
                 static_cast<std::uint32_t>(std::stoul(w[2])),
                 static_cast<std::uint32_t>(std::stoul(w[3])),
                 {}};
    const std::string hex = w.size() > 4 ? w[4] : "";
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.body.push_back(static_cast<std::byte>(std::stoul(hex.substr(i, 2), nullptr, 16)));
    }
    return out;
}

std::int32_t rc_of(Puppet& g, const std::vector<std::byte>& d) {
    return raw_of(g, d).rc;
}

/// A second guest domain making real hypercalls with checked results, one after another, from
/// construction until stop(): a gnttab_copy between its own frames (bytes read back) and an
/// EVTCHNOP_send to dom0 (seen pending there). Every call must answer "ok" within
/// Puppet::kCmdTimeout, a bound only a hang reaches; the first that does not is kept.
class SteadyGuest {
public:
    explicit SteadyGuest(Harness& h) : g_(h, "steady") {
        port_ = g_.num("unbound 0");
        auto b = h.dom0().evtchn().bind_interdomain(g_.domid,
                                                    EvtchnPort(static_cast<std::uint32_t>(port_)));
        REQUIRE(b);
        dom0_end_.emplace(std::move(*b));
        thread_ = std::thread([this] { run(); });
    }
    ~SteadyGuest() { (void)stop(); }
    SteadyGuest(const SteadyGuest&) = delete;
    SteadyGuest& operator=(const SteadyGuest&) = delete;

    long calls() const { return calls_.load(); }
    bool failed() const { return failed_.load(); }
    /// Returns once `n` calls have completed after the first `mark` ones, or one failed.
    void wait_calls(long mark, long n) const {
        while (calls_.load() < mark + n && !failed_.load()) {
            std::this_thread::sleep_for(1ms);
        }
    }
    /// Stops the stream: "" if every call succeeded, else the first failure.
    std::string stop() {
        done_ = true;
        if (thread_.joinable()) {
            thread_.join();
        }
        return failure_;
    }
    Puppet& puppet() { return g_; }
    /// dom0's end of the channel the guest sends on: pending once a send arrived.
    EventChannelBinding& dom0_end() { return *dom0_end_; }

private:
    void run() {
        const std::string notify = "notify " + std::to_string(port_);
        for (std::uint64_t seq = 1; !done_.load(); ++seq) {
            const std::string line = seq % 2 ? "selfcopy 10 " + std::to_string(seq) : notify;
            const std::string r = g_.cmd(line);
            if (r != "ok") {
                failure_ = line + " -> '" + r + "'";
                failed_ = true;
                return;
            }
            calls_++;
        }
    }

    Puppet g_;
    long port_ = 0;
    std::optional<EventChannelBinding> dom0_end_;
    std::atomic<bool> done_{false};
    std::atomic<bool> failed_{false};
    std::atomic<long> calls_{0};
    std::string failure_;
    std::thread thread_;
};

/// Repeats `round` (at least once) until the steady guest has completed `calls` calls since
/// the first round began, so the hostile stream overlaps its service; stops if a call fails.
template <class F>
int hostile_throughout(SteadyGuest& steady, F round, long calls = 20) {
    steady.wait_calls(0, 1);  // served before the hostile stream starts
    const long mark = steady.calls();
    int rounds = 0;
    do {
        round(rounds);
        rounds++;
    } while (steady.calls() < mark + calls && !steady.failed());
    return rounds;
}

/// What must hold after every hostile stream that is answered (not dropped): the steady guest
/// was served without a failure, dom0 and both guests are still listed and answered.
void check_served_throughout(Harness& h, SteadyGuest& steady, Puppet& bad) {
    const auto failure = steady.stop();
    CHECK(failure == "");  // the expansion shows the failed call
    CHECK(steady.calls() > 0);
    CHECK(steady.dom0_end().ack());  // the guest's sends arrived
    CHECK(h.core->dropped_connections() == 0);
    CHECK(bad.cmd("info").rfind("ok", 0) == 0);
    CHECK(steady.puppet().cmd("selfcopy 20 1") == "ok");
    auto l = h.ts->list();
    REQUIRE(l);
    CHECK(l->size() == 3);
}

}  // namespace

TEST_CASE(
    "malformed requests from a guest get error replies while another guest is served throughout",
    "[hvmin][hostile]") {
    Harness h;
    SteadyGuest steady(h);
    Puppet bad(h, "hostile");
    auto& s = h.dom0();
    const auto copy = op_of(wire::Op::gnttab_copy);
    const int rounds = hostile_throughout(steady, [&](int) {
        CHECK(rc_of(bad, datagram(0xdeadbeef, copy, 0, 1, sizeof(gnttab_copy))) ==
              -EINVAL);  // magic
        CHECK(rc_of(bad, datagram(wire::kMagic, copy, 1, 1, sizeof(gnttab_copy))) ==
              -EINVAL);                                                         // flags
        CHECK(rc_of(bad, datagram(wire::kMagic, 0x0999, 0, 0, 0)) == -ENOSYS);  // unknown
        CHECK(rc_of(bad, datagram(wire::kMagic, 0x0104, 0, 1, 8)) == -ENOSYS);  // transfer
        CHECK(rc_of(bad, datagram(wire::kMagic, copy, 0, 2, sizeof(gnttab_copy))) ==
              -EINVAL);  // count ≠ len
        CHECK(rc_of(bad, datagram(wire::kMagic, copy, 0, 1, sizeof(gnttab_copy) + 1)) == -EINVAL);
        CHECK(rc_of(bad, datagram(wire::kMagic, copy, 0, wire::kMaxBatch + 1, 0)) ==
              -EINVAL);  // too many
        CHECK(rc_of(bad, datagram(wire::kMagic, copy, 0, 0xFFFFFFFFu, 0)) == -EINVAL);
        CHECK(rc_of(bad, datagram(wire::kMagic, op_of(wire::Op::evtchn_send), 0, 2, 8)) == -EINVAL);
        CHECK(rc_of(bad, datagram(wire::kMagic, op_of(wire::Op::attach), 0, 1, 1)) == -EINVAL);
        CHECK(rc_of(bad, datagram(wire::kMagic, op_of(wire::Op::domain_create), 0, 1, 4)) ==
              -EINVAL);
        {
            // A create whose strings_len overstates the datagram: the decoder's, for anyone.
            auto d = datagram(wire::kMagic, op_of(wire::Op::domain_create), 0, 1, sizeof(wire::CreateRequest));
            wire::CreateRequest cr{1, 0, 1, 0, 0, 0xFFFFFFF0u};
            std::memcpy(d.data() + sizeof(wire::Header), &cr, sizeof cr);
            CHECK(rc_of(bad, d) == -EINVAL);
            CHECK(rc_of(s, d) == -EINVAL);
            // Strings that do not match argc/envc: dom0's are parsed and refused; a guest's
            // toolstack request is refused before its body is looked at.
            cr.strings_len = 4;
            d.resize(d.size() + 4);
            std::memcpy(d.data() + sizeof(wire::Header) + sizeof cr, "a\0b\0", 4);
            cr.argc = 3;
            std::memcpy(d.data() + sizeof(wire::Header), &cr, sizeof cr);
            CHECK(rc_of(s, d) == -EINVAL);
            CHECK(rc_of(bad, d) == -EPERM);
        }
        {
            // Short messages, shorter than a header: the reply has seq 0.
            for (std::size_t n : {1u, 5u, 15u}) {
                const std::vector<std::byte> d(n, std::byte{0x48});
                const auto r = raw_of(bad, d);
                CHECK(r.rc == -EINVAL);
                CHECK(r.seq == 0);
            }
        }
    });
    INFO("rounds " << rounds);
    check_served_throughout(h, steady, bad);
}

TEST_CASE(
    "random datagrams from a guest never break hv-min while another guest is served throughout",
    "[hvmin][hostile]") {
    Harness h;
    SteadyGuest steady(h);
    Puppet bad(h, "hostile");
    const auto seed = std::random_device{}();
    INFO("seed " << seed);
    std::printf("hvmin random datagrams: seed %u\n", seed);
    std::mt19937 rng(seed);
    const std::uint16_t ops[] = {0x100, 0x101, 0x102, 0x105, 0x106, 0x200, 0x201, 0x203, 0x204,
                                 0x205, 0x206, 0x209, 0x302, 0x400, 0x401, 0x402, 0x403, 0x777};
    int sent = 0;
    hostile_throughout(steady, [&](int round) {
        for (int i = 0; i < (round == 0 ? 3000 : 200); ++i, ++sent) {
            const std::uint16_t op = ops[rng() % std::size(ops)];
            const std::uint32_t count = rng() % 4;
            const std::size_t len =
                (rng() % 2) ? count * wire::element_size(static_cast<wire::Op>(op)) : rng() % 200;
            const auto seq = static_cast<std::uint32_t>(sent + 1000);
            auto d = datagram(wire::kMagic, op, 0, count, len, seq);
            for (std::size_t k = sizeof(wire::Header); k < d.size(); ++k) {
                d[k] = static_cast<std::byte>(rng());
            }
            const auto r = raw_of(bad, d);  // answered, with its own seq
            REQUIRE(r.seq == seq);
            if (op >= 0x400) {
                REQUIRE(r.rc < 0);  // a guest never runs a toolstack operation
            }
        }
    });
    check_served_throughout(h, steady, bad);
}

TEST_CASE(
    "foreign, read-only, page-crossing and out-of-range hypercalls from a guest get Xen's "
    "statuses while another guest is served throughout",
    "[hvmin][hostile]") {
    Harness h;
    SteadyGuest steady(h);
    Puppet bad(h, "hostile");
    Puppet granter(h, "granter");
    const auto bd = std::to_string(bad.domid.get());
    const auto gd = granter.domid.get();
    REQUIRE(granter.cmd("write 3 0 grantdat") == "ok");
    const auto rw = static_cast<grant_ref_t>(granter.num("grant " + bd + " 3 0"));
    const auto ro = static_cast<grant_ref_t>(granter.num("grant " + bd + " 3 1"));
    const auto other = static_cast<grant_ref_t>(granter.num("grant 0 3 0"));  // dom0's, not bad's
    const auto gntst = [](int st) { return "err gntst " + std::to_string(st); };
    struct Case {
        gnttab_copy op;
        std::int16_t status;
    };
    const auto op = make_copy;
    const std::vector<Case> cases = {
        {op(true, rw, gd, 0, false, 5, DOMID_SELF, 0, 8), GNTST_okay},
        {op(true, ro, gd, 0, false, 5, DOMID_SELF, 8, 8), GNTST_okay},
        {op(false, 5, DOMID_SELF, 0, true, ro, gd, 0, 8), GNTST_general_error},     // read-only dest
        {op(true, other, gd, 0, false, 5, DOMID_SELF, 0, 8), GNTST_general_error},  // not granted to it
        {op(true, rw, gd, 4090, false, 5, DOMID_SELF, 0, 8), GNTST_bad_copy_arg},   // crosses the page
        {op(true, rw, gd, 0, false, 5, DOMID_SELF, 4095, 2), GNTST_bad_copy_arg},
        {op(true, 100000, gd, 0, false, 5, DOMID_SELF, 0, 8), GNTST_bad_gntref},
        {op(true, rw, 999, 0, false, 5, DOMID_SELF, 0, 8), GNTST_bad_domain},
        {op(true, rw, DOMID_IO, 0, false, 5, DOMID_SELF, 0, 8), GNTST_bad_domain},
        {op(false, 3, gd, 0, false, 5, DOMID_SELF, 0, 8), GNTST_permission_denied},  // another's frame
        {op(true, rw, gd, 0, false, 1u << 30, DOMID_SELF, 0, 8), GNTST_bad_page},
    };
    std::vector<gnttab_copy> ops;
    for (const auto& c : cases) {
        ops.push_back(c.op);
    }
    auto d = datagram(wire::kMagic, op_of(wire::Op::gnttab_copy), 0,
                      static_cast<std::uint32_t>(ops.size()), ops.size() * sizeof(gnttab_copy));
    std::memcpy(d.data() + sizeof(wire::Header), ops.data(), ops.size() * sizeof(gnttab_copy));
    const std::string bind_err = "err system " + std::to_string(EINVAL);
    hostile_throughout(steady, [&](int) {
        const auto r = raw_of(bad, d);
        REQUIRE(r.rc == 0);
        REQUIRE(r.body.size() == cases.size() * sizeof(wire::CopyStatus));
        for (std::size_t i = 0; i < cases.size(); ++i) {
            wire::CopyStatus st;
            std::memcpy(&st, r.body.data() + i * sizeof st, sizeof st);
            INFO("copy case " << i);
            CHECK(st == cases[i].status);
        }
        CHECK(bad.cmd("read 5 0 16") == "ok grantdatgrantdat");
        // Maps: beyond the table, not granted to it, a read-only grant mapped writable.
        CHECK(bad.cmd("map " + std::to_string(gd) + " 100000 0") == gntst(GNTST_bad_gntref));
        CHECK(bad.cmd("map " + std::to_string(gd) + " " + std::to_string(other) + " 0") ==
              gntst(GNTST_general_error));
        CHECK(bad.cmd("map " + std::to_string(gd) + " " + std::to_string(ro) + " 0") ==
              gntst(GNTST_general_error));
        CHECK(bad.cmd("map 999 " + std::to_string(rw) + " 0") == gntst(GNTST_bad_domain));
        // Event channels: ports out of range or not offered, other domains' business.
        CHECK(bad.cmd("bind 0 99999") == bind_err);
        CHECK(bad.cmd("bind 0 0") == bind_err);
        CHECK(bad.cmd("bind 999 1") == "err system " + std::to_string(ESRCH));
        CHECK(bad.cmd("allocin 0 0") == "ok " + std::to_string(-EPERM));
        CHECK(bad.cmd("status 1 0") == "err system " + std::to_string(EPERM));
    });
    // The copies held no pin, the granter's page is untouched.
    CHECK(granter.num("flags " + std::to_string(rw)) == GTF_permit_access);
    CHECK(granter.cmd("read 3 0 8") == "ok grantdat");
    const auto failure = steady.stop();
    CHECK(failure == "");  // the expansion shows the failed call
    CHECK(h.core->dropped_connections() == 0);
    CHECK(bad.cmd("info").rfind("ok", 0) == 0);
    CHECK(steady.dom0_end().ack());
}

TEST_CASE(
    "a domain that floods hypercalls without reading replies is dropped while others are served",
    "[hvmin][hostile]") {
    Harness h;
    SteadyGuest steady(h);
    Puppet bad(h, "flooder");
    steady.wait_calls(0, 1);
    const auto r = bad.cmd("burst 100000", 60s);  // "" once hv-min drops and kills it
    auto d = h.ts->wait_for_death(bad.domid, 10000ms);
    if (d) {
        CHECK(d->reason == wire::DeathReason::disconnected);
    } else {
        CHECK(d.error() == std::errc::no_such_process);
    }
    // The steady guest goes on being served after the flooder is gone.
    steady.wait_calls(steady.calls(), 5);
    const auto failure = steady.stop();
    CHECK(failure == "");  // the expansion shows the failed call
    CHECK(r.empty());
    CHECK(h.core->dropped_connections() >= 1);
    CHECK(steady.dom0_end().ack());
}

TEST_CASE(
    "100000 pipelined hypercalls from a guest are all answered while another guest is served "
    "throughout",
    "[hvmin][hostile]") {
    Harness h;
    SteadyGuest steady(h);
    Puppet bad(h, "burster");
    // Each round: 100000 gnttab_query_size calls, up to 64 outstanding, every reply read and
    // checked by the guest (in order, rc 0, GNTST_okay).
    const int rounds = hostile_throughout(
        steady, [&](int) { CHECK(bad.cmd("pipeline 100000", 300s) == "ok 100000"); }, 5);
    INFO("rounds " << rounds);
    check_served_throughout(h, steady, bad);
}

TEST_CASE("fds sent with requests that take none are closed, not kept", "[hvmin][hostile]") {
    Harness h;
    auto& s = h.dom0();
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    UniqueFd rd(p[0]);
    {
        UniqueFd wr(p[1]);
        const int fds[] = {wr.get()};
        auto r = s.channel().call(wire::Op::domain_list, 0, {}, fds);
        REQUIRE(r);
    }
    // hv-min closed its copy of the write end: the read end sees EOF.
    pollfd pf{rd.get(), POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 5000) == 1);
    char c;
    CHECK(::read(rd.get(), &c, 1) == 0);
}

TEST_CASE("replies queued for a slow reader are all delivered in order once it reads", "[hvmin][hostile]") {
    Harness h;
    auto c = h.dom0().clone();
    REQUIRE(c);
    const int fd = c->channel().fd();
    constexpr int kRequests = 1100;  // more than the socket buffer holds, fewer than the queue limit
    wire::Header hd{wire::kMagic, op_of(wire::Op::evtchn_unmask), 0, 1, 0};
    std::byte msg[sizeof hd + sizeof(evtchn_unmask)]{};
    for (int i = 0; i < kRequests; ++i) {
        hd.seq = static_cast<std::uint32_t>(i);
        std::memcpy(msg, &hd, sizeof hd);
        pollfd p{fd, POLLOUT, 0};
        REQUIRE(::poll(&p, 1, 5000) == 1);
        REQUIRE(::send(fd, msg, sizeof msg, MSG_NOSIGNAL) == sizeof msg);
    }
    std::byte rbuf[256];
    for (int i = 0; i < kRequests; ++i) {
        pollfd p{fd, POLLIN, 0};
        REQUIRE(::poll(&p, 1, 5000) == 1);
        REQUIRE(::recv(fd, rbuf, sizeof rbuf, 0) > 0);
        wire::ReplyHeader rh;
        std::memcpy(&rh, rbuf, sizeof rh);
        REQUIRE(rh.seq == static_cast<std::uint32_t>(i));
    }
    CHECK(h.core->dropped_connections() == 0);
}

TEST_CASE("an oversized datagram gets its connection dropped, not read past", "[hvmin][hostile]") {
    Harness h;
    auto c = h.dom0().clone();
    REQUIRE(c);
    std::vector<std::byte> big(wire::kMaxMessage + 4096);
    wire::Header hd{wire::kMagic, op_of(wire::Op::gnttab_copy), 0, 1, 1};
    std::memcpy(big.data(), &hd, sizeof hd);
    REQUIRE(::send(c->channel().fd(), big.data(), big.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(big.size()));
    pollfd p{c->channel().fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    std::byte b[64];
    CHECK(::recv(c->channel().fd(), b, sizeof b, 0) == 0);  // EOF
    CHECK(h.core->dropped_connections() == 1);
    CHECK(h.ts->list());  // the rest is served
}

TEST_CASE("a dom0 connection that closes releases its ports and wakes their peers", "[hvmin][evtchn]") {
    Harness h;
    Puppet g(h, "guest");
    const long gp = g.num("unbound 0");
    {
        auto c = Services::connect_dom0(h.dir.path());
        REQUIRE(c);
        auto b = c->evtchn().bind_interdomain(g.domid, EvtchnPort(static_cast<std::uint32_t>(gp)));
        REQUIRE(b);
        CHECK(g.cmd("ack " + std::to_string(gp)) == "ok 0");
        (void)b->release();
    }  // the connection closes with the port still bound
    CHECK(g.cmd("wait " + std::to_string(gp) + " 5000") == "ok");
    CHECK(g.cmd("status " + std::to_string(gp)) == "ok 1 0 0");
}
