// feature-xdp-headroom end to end (xen-abi.md §6.4-6.6): netback offers it, puts each rx
// packet's first bytes at the frontend's xdp-headroom in its first rx page (grant copy, map and
// persistent-pool mode), reads it again when the frontend goes Reconfiguring, and bounds a
// hostile value as Linux netback does.
#include <catch2/catch.hpp>

#include <cstdint>
#include <thread>
#include <string>
#include <vector>

#include "e2e_harness.hpp"

namespace hv::net::test {
namespace {

/// One packet as lent by netfront: its bytes and where each slot's data starts in its page.
struct Lent {
    std::vector<std::byte> data;
    std::vector<std::size_t> page_offsets;
    std::vector<std::size_t> lens;
};

/// Sends `f` on queue 0 and takes the packet that comes back (lent, slots apart).
Lent echo_slots(Vif& v, const std::vector<std::byte>& f) {
    REQUIRE(v.nf->send(0, f));
    Lent got;
    bool have = false;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!have && std::chrono::steady_clock::now() < deadline) {
        v.nf->poll_each([&](const netfront::PacketView& p) {
            for (const iovec& part : p.parts) {
                const auto* b = static_cast<const std::byte*>(part.iov_base);
                got.data.insert(got.data.end(), b, b + part.iov_len);
                got.page_offsets.push_back(reinterpret_cast<std::uintptr_t>(part.iov_base) %
                                           rings::XEN_PAGE_SIZE);
                got.lens.push_back(part.iov_len);
            }
            have = true;
        });
        if (!have) {
            std::this_thread::sleep_for(1ms);
        }
    }
    REQUIRE(have);
    return got;
}

/// True when `f` comes back within `timeout` (else it was dropped).
bool comes_back(Vif& v, const std::vector<std::byte>& f, std::chrono::milliseconds timeout) {
    REQUIRE(v.nf->send(0, f));
    std::vector<netfront::Packet> got;
    return v.nf->receive(got, 1, timeout) == 1 && got[0].data == f;
}

/// The frontend went Reconfiguring: the backend answers Reconfigured, netfront returns to
/// Connected and so does the backend.
void finish_reconfigure(Vif& v) {
    REQUIRE(v.wait_backend(XenbusState::XenbusStateReconfigured));
    REQUIRE(v.nf->on_state_change());
    auto fs = xenbus::read_state(*v.guest.xs, v.fdir());
    REQUIRE(fs);
    CHECK(*fs == XenbusState::XenbusStateConnected);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateConnected));
}

/// Writes `value` as the frontend's xdp-headroom by hand (as a guest may) and reconfigures.
void reconfigure_raw(Vif& v, const std::string& value) {
    REQUIRE(v.guest.xs->write(v.fdir() + "/xdp-headroom", value));
    REQUIRE(xenbus::switch_state(*v.guest.xs, v.fdir(), XenbusState::XenbusStateReconfiguring));
    finish_reconfigure(v);
}

std::uint64_t xdp_stat(Vif& v, const std::string& key) {
    const std::string s = v.backend_key("statistics/" + key);
    return s == "<absent>" ? 0 : std::stoull(s);
}

/// Every frame size comes back intact with its first slot at `headroom` and the others at 0.
void check_layout(Vif& v, std::size_t headroom) {
    const std::size_t first = rings::XEN_PAGE_SIZE - headroom;  // what the first page holds
    for (std::size_t len : {std::size_t{14}, std::size_t{60}, std::size_t{1514}, first, first + 1,
                            std::size_t{9000}, std::size_t{65535}}) {
        if (len < 14) {
            continue;  // (headroom 4095: no frame fits the first page's one byte)
        }
        INFO("len " << len << " headroom " << headroom);
        const auto f = raw_frame(len, static_cast<std::uint32_t>(len + headroom));
        const Lent got = echo_slots(v, f);
        CHECK(got.data == f);
        REQUIRE(!got.page_offsets.empty());
        CHECK(got.page_offsets[0] == headroom);
        CHECK(got.lens[0] == std::min(len, first));
        for (std::size_t k = 1; k < got.page_offsets.size(); ++k) {
            CHECK(got.page_offsets[k] == 0);
        }
        // The headroom costs a slot exactly when the frame no longer fits the first page.
        const std::size_t slots = (len + headroom + rings::XEN_PAGE_SIZE - 1) / rings::XEN_PAGE_SIZE;
        CHECK(got.page_offsets.size() == slots);
    }
}

netfront::Options lending() {
    netfront::Options o;
    o.lend_slots = true;
    return o;
}

/// Two guests with one vif each on the loop engine: `v` changes its headroom, `other` must not
/// notice.
struct TwoVifs {
    Env env;
    Guest g{env, "g1"};
    Guest g2{env, "g2"};
    Vif v{env, g, 0, lending()};
    Vif other{env, g2, 0, lending()};
};

}  // namespace

TEST_CASE("xdp-headroom: rx data starts at the frontend's headroom in the first slot only, in "
          "copy, map and persistent-pool mode",
          "[netback][e2e][xdp][issue-5]") {
    enum class Path { copy, map, pool };
    const Path path = GENERATE(Path::copy, Path::map, Path::pool);
    const std::uint16_t headroom = GENERATE(std::uint16_t{0}, std::uint16_t{256});
    INFO("path " << static_cast<int>(path) << " headroom " << headroom);
    BackendOptions o = Env::loop_options();
    o.mode = path == Path::copy ? DataMode::copy : DataMode::map;
    o.persistent_pool = path == Path::pool;
    Env env(o);
    Guest g(env, "g1");
    netfront::Options fo = lending();
    fo.xdp_headroom = headroom;
    Vif v(env, g, 0, fo);
    CHECK(v.backend_key("feature-xdp-headroom") == "1");
    // Written only when asked for, as Linux netfront does without an XDP program.
    auto key = env.xs->read(v.fdir() + "/xdp-headroom");
    CHECK((key ? *key : std::string("<absent>")) ==
          (headroom == 0 ? std::string("<absent>") : std::to_string(headroom)));
    check_layout(v, headroom);
    // Twice: the second round runs on the mappings the first one kept (pool).
    check_layout(v, headroom);
    CHECK(xdp_stat(v, "rx_dropped") == 0);
}

TEST_CASE("a frontend changes xdp-headroom while connected through Reconfiguring, and another vif "
          "keeps its own",
          "[netback][e2e][xdp][state][issue-5]") {
    TwoVifs t;
    Vif& v = t.v;
    Vif& other = t.other;
    check_layout(v, 0);
    REQUIRE(v.nf->set_xdp_headroom(256));
    finish_reconfigure(v);
    check_layout(v, 256);
    check_layout(other, 0);
    REQUIRE(v.nf->set_xdp_headroom(1000));
    finish_reconfigure(v);
    check_layout(v, 1000);
    REQUIRE(v.nf->set_xdp_headroom(0));
    finish_reconfigure(v);
    check_layout(v, 0);
    check_layout(other, 0);
    CHECK(other.backend_key("state") == "4");
}

TEST_CASE("a hostile xdp-headroom is bounded as Linux netback bounds it: no number is 0, a "
          "larger one 0x7FFF, which leaves no room and drops the vif's rx only",
          "[netback][e2e][xdp][hostile][issue-5]") {
    TwoVifs t;
    Vif& v = t.v;
    Vif& other = t.other;
    const auto f = raw_frame(60, 1);
    // Linux takes "%hu" or 0: not a number is 0. Stricter than Linux's sscanf, which would
    // take the 256 of "256x" and " 256": a value that is not exactly a decimal is 0 here too.
    for (const char* junk : {"abc", "-5", "", "256x", " 256"}) {
        INFO("xdp-headroom '" << junk << "'");
        reconfigure_raw(v, junk);
        check_layout(v, 0);
    }
    // Above XEN_NETIF_MAX_XDP_HEADROOM: clamped to it, more than a page. Linux then copies past
    // the page and its grant copy fails; here the frames are dropped and counted. Nothing else
    // of the vif changes: tx still goes out, and the other vif is untouched.
    std::uint64_t dropped = 0;
    for (const char* big : {"32768", "65535", "70000", "99999999999999999999999", "4096"}) {
        INFO("xdp-headroom '" << big << "'");
        reconfigure_raw(v, big);
        CHECK_FALSE(comes_back(v, f, 300ms));
        ++dropped;
        CHECK(v.wait_backend_key("statistics/rx_dropped", std::to_string(dropped)));
        CHECK(comes_back(other, f, 5s));
    }
    // 5 junk values x 7 frames, then the 5 dropped: every one went out.
    CHECK(v.wait_backend_key("statistics/tx_packets", std::to_string(5 * 7 + dropped)));
    CHECK(v.backend_key("state") == "4");
    // The largest headroom that leaves a byte in the first page works; then none again.
    reconfigure_raw(v, "4095");
    check_layout(v, 4095);
    reconfigure_raw(v, "0");
    check_layout(v, 0);
}

}  // namespace hv::net::test
