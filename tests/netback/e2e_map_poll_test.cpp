// netback's two data paths (grant copy, and map mode for a trusted backend: map, memcpy, unmap)
// and polling (spin windows in netback's queues and in netfront), end to end: which path ran is
// read back from statistics/, hostile rx grants are refused on both paths, spinning shows in
// poll_wakeups and changes nothing the frontend sees.
#include <catch2/catch.hpp>
#include <thread>

#include "e2e_harness.hpp"

namespace hv::net::test {
namespace {

using netfront::Packet;
namespace wire = hv::rings;

const char* name(DataMode m) { return m == DataMode::map ? "map" : "copy"; }

BackendOptions options(std::optional<DataMode> mode, std::chrono::microseconds spin = {}) {
    BackendOptions o = Env::loop_options();
    o.mode = mode;
    o.spin = spin;
    return o;
}

std::uint64_t stat(Vif& v, const std::string& key) {
    const std::string s = v.backend_key("statistics/" + key);
    return s == "<absent>" ? 0 : std::stoull(s);
}

/// Waits until statistics/tx_packets reaches n (statistics are written every 50 ms).
bool stats_settled(Vif& v, std::uint64_t n) {
    // Both directions: a snapshot published between a packet's tx and its rx pass has
    // tx_packets = n with the rx counters one short (seen under load).
    return v.wait_backend_key("statistics/tx_packets", std::to_string(n)) &&
           v.wait_backend_key("statistics/rx_packets", std::to_string(n));
}

/// Sends `f` and returns the packets received within `timeout`.
std::size_t echo_count(Vif& v, const std::vector<std::byte>& f, std::chrono::milliseconds timeout) {
    REQUIRE(v.nf->send(0, f));
    std::vector<Packet> got;
    return v.nf->receive(got, 1, timeout);
}

}  // namespace

TEST_CASE("copy, map and persistent-pool mode each carry every frame size, and statistics say "
          "which ran",
          "[netback][e2e][map]") {
    // pool: map mode with feature-hvkit-persistent-pool (netfront offers it by default).
    enum class Path { copy, map, pool };
    const Path path = GENERATE(Path::copy, Path::map, Path::pool);
    const char* names[] = {"copy", "map", "pool"};
    INFO("path " << names[static_cast<int>(path)]);
    BackendOptions o = options(path == Path::copy ? DataMode::copy : DataMode::map);
    o.persistent_pool = path == Path::pool;
    Env env(o);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(v.nf->persistent_pool() == (path == Path::pool));
    CHECK(v.backend_key("feature-hvkit-persistent-pool") == (path == Path::pool ? "1" : "0"));
    unsigned n = 0;
    // Both directions, twice over, so the second round runs on mappings the first one kept.
    for (int round = 0; round < 2; ++round) {
        for (std::size_t len : {14U, 60U, 1514U, 4096U, 4097U, 20000U, 65535U}) {
            const auto f = raw_frame(len, static_cast<std::uint32_t>(len + round));
            REQUIRE(v.nf->send(0, f));
            std::vector<Packet> got;
            REQUIRE(v.nf->receive(got, 1, 5s) == 1);
            CHECK(got[0].data == f);
            ++n;
        }
    }
    REQUIRE(stats_settled(v, n));
    CHECK((stat(v, "tx_grant_maps") > 0) == (path == Path::map));
    CHECK((stat(v, "rx_grant_maps") > 0) == (path == Path::map));
    CHECK((stat(v, "tx_grant_copies") > 0) == (path == Path::copy));
    CHECK((stat(v, "rx_grant_copies") > 0) == (path == Path::copy));
    CHECK((stat(v, "tx_grant_pool") > 0) == (path == Path::pool));
    CHECK((stat(v, "rx_grant_pool") > 0) == (path == Path::pool));
    // Sent straight from kept pages: frames of 2048 bytes and more, with the pool only.
    CHECK((stat(v, "tx_direct") > 0) == (path == Path::pool));
    CHECK(stat(v, "tx_direct") <= 2 * 4);
    CHECK(stat(v, "rx_direct") == 0);  // too few frames for the pool's rx pages to be kept
    if (path == Path::pool) {
        // Each pool grant is mapped once: at most one per tx and rx buffer page, and fewer
        // maps than pieces moved (the second round found its grants mapped).
        const auto maps = stat(v, "pool_maps");
        CHECK(maps > 0);
        CHECK(maps <= 2 * 256);
        CHECK(maps < stat(v, "tx_grant_pool") + stat(v, "rx_grant_pool"));
    } else {
        CHECK(stat(v, "pool_maps") == 0);
    }
    CHECK(stat(v, "tx_errors") == 0);
    CHECK(stat(v, "rx_dropped") == 0);
}

TEST_CASE("the persistent pool maps each pool grant once however many frames pass",
          "[netback][e2e][map][pool]") {
    Env env(options(DataMode::map));
    Guest g(env, "g1");
    Vif v(env, g, 0);
    REQUIRE(v.nf->persistent_pool());
    // Windows of 64 frames: netfront's tx pages and all 256 rx buffers take turns.
    auto burst = [&](unsigned frames, std::uint32_t seed) {
        unsigned back = 0;
        for (unsigned sent = 0; sent < frames; sent += 64) {
            for (unsigned i = 0; i < 64; ++i) {
                REQUIRE(v.nf->send(0, raw_frame(64 + i, seed + sent + i)));
            }
            std::vector<Packet> got;
            back += static_cast<unsigned>(v.nf->receive(got, 64, 5s));
        }
        return back;
    };
    REQUIRE(burst(640, 1) == 640);
    REQUIRE(stats_settled(v, 640));
    const auto first = stat(v, "pool_maps");
    CHECK(first > 256);  // every rx buffer came round at least once
    CHECK(first <= 2 * 256);
    REQUIRE(burst(1280, 5000) == 1280);
    REQUIRE(stats_settled(v, 640 + 1280));
    CHECK(stat(v, "pool_maps") == first);
    // A frame may be two pieces (split at a local page boundary), never fewer than one.
    CHECK(stat(v, "tx_grant_pool") >= 640 + 1280);
    CHECK(stat(v, "rx_grant_pool") >= 640 + 1280);
    CHECK(stat(v, "tx_grant_maps") == 0);
    CHECK(stat(v, "rx_grant_maps") == 0);
}

TEST_CASE("with the persistent pool, long frames go to the engine from the kept pages with only "
          "their headers copied, frames come back read straight into the kept rx pages, byte "
          "for byte with their offloads",
          "[netback][e2e][map][pool]") {
    Env env(options(DataMode::map));
    Guest g(env, "g1");
    Vif v(env, g, 0);
    REQUIRE(v.nf->persistent_pool());
    const netfront::Offload tso4{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448};
    const netfront::Offload tso6{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV6, 1428};
    const netfront::Offload none{};
    struct Case {
        std::vector<std::byte> frame;
        netfront::Offload off;
    };
    unsigned n = 0, long_frames = 0;
    for (std::uint32_t i = 0; i < 40; ++i) {
        for (const Case& c : {Case{tcp4_frame(65535, i), tso4}, Case{tcp6_frame(30000, i), tso6},
                              Case{tcp4_frame(3000, i), netfront::Offload{true, false, 0, 0}},
                              Case{raw_frame(2048, i), none}, Case{raw_frame(2047, i), none},
                              Case{raw_frame(30000, i), none}, Case{raw_frame(60, i), none}}) {
            REQUIRE(v.nf->send(0, c.frame, c.off));
            std::vector<Packet> got;
            REQUIRE(v.nf->receive(got, 1, 5s) == 1);
            CHECK(got[0].data == c.frame);
            CHECK(got[0].offload.gso_type == c.off.gso_type);
            CHECK(got[0].offload.gso_size == c.off.gso_size);
            CHECK(got[0].offload.csum_blank == c.off.csum_blank);
            ++n;
            long_frames += c.frame.size() >= 2048 ? 1U : 0U;
        }
    }
    REQUIRE(stats_settled(v, n));
    // All but the frames whose pages were not kept yet (the first use of each tx page).
    CHECK(stat(v, "tx_direct") <= long_frames);
    CHECK(stat(v, "tx_direct") + 32 >= long_frames);
    CHECK(stat(v, "tx_errors") == 0);
    // rx: once the rx buffers of the next 18 requests were all used (and kept) by the copy
    // path, frames are read into the rx pages directly: GSO frames around their extra's slot,
    // plain multi-page frames moved up a page, one-page frames in place. A page that only
    // ever held a GSO extra is not kept yet, so the warm-up takes a few laps of the ring
    // (188 of 280 frames went direct when this was written).
    CHECK(stat(v, "rx_direct") >= n / 2);
    CHECK(stat(v, "rx_direct") <= n);
    CHECK(stat(v, "rx_dropped") == 0);
}

TEST_CASE("a frame whose offload headers end past the first 384 bytes is refused on every path",
          "[netback][e2e][map][pool][hostile]") {
    // IPv6 + 328 bytes of destination options + TCP: Linux refuses more than 256 bytes of IPv6
    // headers; netback parses only the head it copies privately.
    const auto mode = GENERATE(DataMode::copy, DataMode::map);
    INFO("mode " << name(mode));
    Env env(options(mode));
    Guest g(env, "g1");
    Vif v(env, g, 0);
    auto f = tcp6_frame(20000, 1);
    std::vector<std::byte> opts(328, std::byte{0});
    opts[0] = f[14 + 6];              // next header: what the IPv6 header named (TCP)
    opts[1] = std::byte{40};          // (40 + 1) * 8 bytes
    f[14 + 6] = std::byte{60};        // destination options
    f.insert(f.begin() + 54, opts.begin(), opts.end());
    f.resize(20000);
    const std::size_t plen = f.size() - 54;
    f[14 + 4] = static_cast<std::byte>(plen >> 8);
    f[14 + 5] = static_cast<std::byte>(plen & 0xff);
    // Twice: the second time the pool's pages are kept (the direct path).
    for (int i = 0; i < 2; ++i) {
        REQUIRE(v.nf->send(0, f, netfront::Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV6, 1428}));
        REQUIRE(v.wait_backend_key("statistics/tx_errors", std::to_string(i + 1)));
    }
    CHECK(stat(v, "tx_packets") == 0);
    // The vif keeps serving.
    CHECK(echo_count(v, tcp6_frame(20000, 2), 5s) == 1);
}

TEST_CASE("without the pool on either side, map mode maps and unmaps per batch",
          "[netback][e2e][map][pool]") {
    const bool backend_offers = GENERATE(false, true);
    INFO("backend offers the pool: " << backend_offers);
    BackendOptions o = options(DataMode::map);
    o.persistent_pool = backend_offers;
    Env env(o);
    Guest g(env, "g1");
    netfront::Options fo;
    fo.persistent_pool = false;  // when the backend offers it, the frontend declines
    Vif v(env, g, 0, backend_offers ? fo : netfront::Options{});
    CHECK_FALSE(v.nf->persistent_pool());
    CHECK(v.backend_key("feature-hvkit-persistent-pool") == (backend_offers ? "1" : "0"));
    CHECK(v.env.xs->read(v.fdir() + "/feature-hvkit-persistent-pool").value_or("") == "0");
    for (std::uint32_t i = 0; i < 3; ++i) {
        REQUIRE(echo_count(v, raw_frame(100, i), 5s) == 1);
    }
    REQUIRE(stats_settled(v, 3));
    CHECK(stat(v, "tx_grant_maps") == 3);
    CHECK(stat(v, "rx_grant_maps") == 3);
    CHECK(stat(v, "pool_maps") == 0);
    CHECK(stat(v, "tx_grant_pool") == 0);
}

TEST_CASE("a copying netback does not offer the persistent pool", "[netback][e2e][map][pool]") {
    Env env(options(DataMode::copy));
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(v.backend_key("feature-hvkit-persistent-pool") == "0");
    CHECK_FALSE(v.nf->persistent_pool());
    REQUIRE(echo_count(v, raw_frame(100, 1), 5s) == 1);
}

TEST_CASE("a trusted netback (dom0) uses map mode unless told to copy", "[netback][e2e][map]") {
    Env env(options(std::nullopt));
    REQUIRE(env.be_svc->trusted());
    Guest g(env, "g1");
    Vif v(env, g, 0);
    REQUIRE(echo_count(v, raw_frame(100, 1), 5s) == 1);
    REQUIRE(stats_settled(v, 1));
    // ... with the persistent pool: both pieces through mappings it keeps.
    CHECK(stat(v, "tx_grant_pool") == 1);
    CHECK(stat(v, "rx_grant_pool") == 1);
    CHECK(stat(v, "pool_maps") == 2);
    CHECK(stat(v, "tx_grant_maps") == 0);
    CHECK(stat(v, "tx_grant_copies") == 0);
}

TEST_CASE("an rx buffer whose grant does not exist, is another domain's, or is read-only is refused",
          "[netback][e2e][hostile][map]") {
    const DataMode mode = GENERATE(DataMode::copy, DataMode::map);
    INFO("mode " << name(mode));
    Env env(options(mode));
    Guest g1(env, "g1");
    Guest g2(env, "g2");
    Vif bad(env, g1, 0);
    Vif good(env, g2, 0);
    auto frame = g1.svc->memory().alloc_extent(1);
    REQUIRE(frame);
    std::uint32_t gref = 0;
    SECTION("a ref beyond the grant table") { gref = 1U << 30; }
    SECTION("a ref granted to another domain") {
        auto r = g1.svc->grants().grant_access(g2.domid, *frame, false);
        REQUIRE(r);
        gref = r->get();
    }
    SECTION("a ref granted read-only to the backend") {
        auto r = g1.svc->grants().grant_access(DomId(0), *frame, true);
        REQUIRE(r);
        gref = r->get();
    }
    // Every buffer posted from now on names the hostile grant: once the ring's good buffers are
    // used up (one per echoed frame), the next frame finds only hostile ones.
    bad.nf->raw_rx_gref(gref);
    const unsigned ring = 256;
    for (unsigned i = 0; i < ring; ++i) {
        REQUIRE(echo_count(bad, raw_frame(60, i), 5s) == 1);
    }
    const auto errors_before = bad.nf->counters().rx_errors;
    CHECK(echo_count(bad, raw_frame(60, 999), 300ms) == 0);
    CHECK(bad.nf->counters().rx_errors == errors_before + 1);
    CHECK(bad.wait_backend_key("statistics/rx_dropped", "1"));
    CHECK(bad.backend_key("state") == "4");  // refused packet, vif still connected
    // Real grants again: buffers posted from now on work, so traffic resumes.
    bad.nf->raw_rx_gref(std::nullopt);
    // The hostile buffers still posted are used up in bursts (each frame into one is refused).
    bool resumed = false;
    for (unsigned burst = 0; burst < 2 * ring / 64 && !resumed; ++burst) {
        unsigned sent = 0;
        while (sent < 64 && bad.nf->send(0, raw_frame(60, 2000 + burst * 64 + sent))) {
            ++sent;
        }
        std::vector<Packet> got;
        resumed = bad.nf->receive(got, sent, 300ms) > 0;
    }
    CHECK(resumed);
    CHECK(echo_count(good, raw_frame(60, 5), 5s) == 1);
}

TEST_CASE("a spinning netback and netfront carry the same traffic and netback's wakeups show it",
          "[netback][e2e][poll]") {
    const bool spinning = GENERATE(false, true);
    INFO("spinning " << spinning);
    const std::chrono::microseconds window = spinning ? 20ms : 0ms;
    const SpinIgnoringLoad spin_anyway;
    Env env(options(DataMode::map, window));
    Guest g(env, "g1");
    netfront::Options fo;
    fo.spin = window;
    Vif v(env, g, 0, fo);
    // Ping-pong: each frame is sent right after the previous one came back, well within the
    // window, so a spinning queue finds it without sleeping.
    const unsigned n = 300;
    for (unsigned i = 0; i < n; ++i) {
        const auto f = raw_frame(60 + i % 1500, i);
        REQUIRE(v.nf->send(0, f));
        std::vector<Packet> got;
        REQUIRE(v.nf->receive(got, 1, 5s) == 1);
        REQUIRE(got[0].data == f);
    }
    REQUIRE(stats_settled(v, n));
    if (spinning) {
        CHECK(stat(v, "poll_wakeups") > 0);
    } else {
        CHECK(stat(v, "poll_wakeups") == 0);
        CHECK(stat(v, "sleeps") > 0);  // between frames the queue has nothing to do
    }
    // No window, or the load ignored: no spin was given up for an oversubscribed machine.
    CHECK(stat(v, "spins_skipped_busy") == 0);
}

TEST_CASE("a vif's poll-us key sets its spin window and an unparseable one is ignored",
          "[netback][e2e][poll]") {
    const std::string value = GENERATE(std::string("20000"), std::string("fast"),
                                       std::string("99999999"));
    INFO("poll-us " << value);
    const SpinIgnoringLoad spin_anyway;
    Env env(options(DataMode::copy));
    Guest g(env, "g1");
    Vif v(env, g, 0, {}, {{"poll-us", value}});
    const unsigned n = 200;
    for (unsigned i = 0; i < n; ++i) {
        REQUIRE(echo_count(v, raw_frame(60, i), 5s) == 1);
    }
    REQUIRE(stats_settled(v, n));
    if (value == "20000") {
        CHECK(stat(v, "poll_wakeups") > 0);
    } else {
        CHECK(stat(v, "poll_wakeups") == 0);  // ignored: the backend's window (0) stays
    }
}

}  // namespace hv::net::test

namespace hv::net::test {

TEST_CASE("a frontend streaming bursts meets netback's stream spin, one frame at a time does not, "
          "and a zero stream spin never spins",
          "[netback][e2e][poll]") {
    // No spin window: only the stream spin (taken >= kStreamRequests requests since the last
    // sleep) may spin. A long one, so a frontend's next burst comes within it on a loaded
    // machine too.
    const std::chrono::microseconds stream = GENERATE(std::chrono::microseconds(20ms),
                                                      std::chrono::microseconds(0));
    INFO("stream spin " << stream.count() << " us");
    const SpinIgnoringLoad spin_anyway;
    BackendOptions o = options(DataMode::map);
    o.stream_spin = stream;
    Env env(o);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::this_thread::sleep_for(100ms);  // the rx buffers posted at connect: spun and slept

    // One frame at a time, 5 ms apart (within the stream spin, were it run): every wait after
    // one sleeps at once, having taken a frame and a few rx buffers since the last sleep.
    const std::uint64_t hits0 = stat(v, "stream_spin_hits");
    const unsigned singles = 10;
    for (unsigned i = 0; i < singles; ++i) {
        REQUIRE(echo_count(v, raw_frame(60, i), 5s) == 1);
        std::this_thread::sleep_for(5ms);
    }
    REQUIRE(stats_settled(v, singles));
    CHECK(stat(v, "stream_spin_hits") == hits0);
    CHECK(stat(v, "poll_wakeups") == 0);

    // Bursts of 64, each sent as soon as the previous one came back.
    const unsigned bursts = 10, per = 64;
    std::vector<std::vector<std::byte>> frames;
    for (unsigned i = 0; i < per; ++i) {
        frames.push_back(raw_frame(60, i));
    }
    std::vector<std::span<const std::byte>> spans(frames.begin(), frames.end());
    for (unsigned b = 0; b < bursts; ++b) {
        std::size_t sent = 0;
        while (sent < per) {
            auto k = v.nf->send_burst(0, std::span(spans).subspan(sent));
            REQUIRE(k);
            sent += *k;
        }
        std::vector<Packet> got;
        REQUIRE(v.nf->receive(got, per, 5s) == per);
        for (unsigned i = 0; i < per; ++i) {
            REQUIRE(got[i].data == frames[i]);
        }
    }
    REQUIRE(stats_settled(v, singles + bursts * per));
    if (stream.count() > 0) {
        CHECK(stat(v, "stream_spin_hits") > hits0);
    } else {
        CHECK(stat(v, "stream_spin_hits") == 0);
    }
    CHECK(stat(v, "poll_wakeups") == 0);  // the spin window is off: not a poll
    CHECK(stat(v, "spins_skipped_busy") == 0);
}

}  // namespace hv::net::test
