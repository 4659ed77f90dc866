// netback end-to-end harness (see e2e_harness.hpp).
#include "e2e_harness.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>

#include "donor_channel.hpp"
#include "hv/rings/netif_l4.hpp"

namespace hv::net::test {

// ---- Env ----

BackendOptions Env::loop_options() {
    BackendOptions o;
    o.host = HostMode::loop;
    o.max_queues = 4;
    o.stats_interval = 50ms;
    // rx_drain_timeout stays the product's 10 s (Linux's rx_drain_timeout_msecs): a loaded
    // machine can leave a frontend's thread unscheduled for hundreds of ms, and tests that
    // expect every frame back must not lose one to a short drain. Tests of the drain set
    // kShortDrain.
    return o;
}

Env::Env(std::optional<BackendOptions> backend_opt) {
    hvmin::CoreConfig cfg;
    cfg.rundir = dir.path();
    auto c = hvmin::Core::create(cfg);
    REQUIRE(c);
    core = std::move(*c);
    REQUIRE(core->start());
    auto t = hvmin::Toolstack::connect(dir.path());
    REQUIRE(t);
    ts.emplace(std::move(*t));
    auto x = xs::Client::connect((dir / "xenstored.sock").string());
    REQUIRE(x);
    xs = std::move(*x);
    if (backend_opt) {
        start_backend(*backend_opt);
    }
}

void Env::start_backend(BackendOptions opt) {
    auto s = hvmin::connect_dom0(dir.path());
    REQUIRE(s);
    be_svc.emplace(std::move(*s));
    auto x = xs::Client::connect((dir / "xenstored.sock").string());
    REQUIRE(x);
    be_xs = std::move(*x);
    auto b = Backend::create(*be_svc, *be_xs, std::move(opt));
    REQUIRE(b);
    backend = std::move(*b);
    backend->start();
}

void Env::stop_backend() {
    backend.reset();
    be_xs.reset();
    be_svc.reset();
}

Env::~Env() {
    stop_backend();
    xs.reset();
    ts.reset();
    core.reset();
}

// ---- Guest ----

Guest::Guest(Env& e, const std::string& name) : env(e) {
    const std::string path = (env.dir / (name + ".sock")).string();
    UniqueFd listen = hv::test::listen_for_donor(path);
    hvmin::DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = 64;
    cfg.argv = {NETBACK_E2E_DONOR, path};
    auto d = env.ts->create(cfg);
    REQUIRE(d);
    domid = *d;
    auto s = hvmin::Services::attach_fd(hv::test::receive_donated_channel(listen.get(), donor_));
    REQUIRE(s);
    svc.emplace(std::move(*s));
    auto x = xs::Client::from_fd(svc->take_xenstore_fd());
    REQUIRE(x);
    xs = std::move(*x);
}

Guest::~Guest() { kill(); }

void Guest::kill() {
    if (!donor_.valid()) {
        return;
    }
    xs.reset();
    donor_.reset();
    (void)env.ts->wait_for_death(domid, 10s);
    svc.reset();
}

void Guest::crash() {
    donor_.reset();
    (void)env.ts->wait_for_death(domid, 10s);
}

// ---- Vif ----

Vif::Vif(Env& e, Guest& g, std::uint32_t id, netfront::Options o,
         std::map<std::string, std::string> keys, bool do_connect)
    : env(e), guest(g), devid(id), opt(o) {
    xenbus::DeviceSpec spec;
    spec.type = "vif";
    spec.frontend = g.domid;
    spec.backend = DomId(0);
    spec.devid = id;
    const std::string mac = "00:16:3e:00:" + std::to_string(10 + g.domid.get() % 80) + ":" +
                            std::to_string(10 + id % 80);
    spec.backend_keys = {{"mac", mac}, {"handle", std::to_string(id)}, {"script", "vif-bridge"}};
    for (auto& [k, v] : keys) {
        spec.backend_keys[k] = v;
    }
    spec.frontend_keys = {{"mac", mac}, {"handle", std::to_string(id)}};
    REQUIRE(xenbus::create_device(*env.xs, spec));
    if (do_connect) {
        connect();
    }
}

void Vif::connect() {
    auto d = netfront::Device::create(*guest.svc, *guest.xs, devid, opt);
    REQUIRE(d);
    nf = std::move(*d);
    auto r = nf->wait_connected(10s);
    INFO("netfront: " << (r ? std::string("ok") : r.error().message()));
    REQUIRE(r);
    REQUIRE(wait_backend(XenbusState::XenbusStateConnected));
}

void Vif::start_frontend() {
    auto d = netfront::Device::create(*guest.svc, *guest.xs, devid, opt);
    REQUIRE(d);
    nf = std::move(*d);
    REQUIRE(nf->on_state_change());
}

void Vif::reconnect() {
    REQUIRE(xenbus::switch_state(*guest.xs, fdir(), XenbusState::XenbusStateClosing));
    REQUIRE(wait_backend(XenbusState::XenbusStateClosing));
    REQUIRE(xenbus::switch_state(*guest.xs, fdir(), XenbusState::XenbusStateClosed));
    REQUIRE(wait_backend(XenbusState::XenbusStateClosed));
    nf.reset();
    REQUIRE(xenbus::switch_state(*guest.xs, fdir(), XenbusState::XenbusStateInitialising));
    REQUIRE(wait_backend(XenbusState::XenbusStateInitWait));
    connect();
}

Vif::~Vif() {
    nf.reset();
    (void)xenbus::remove_device(*env.xs, DomId(0), "vif", guest.domid, devid);
}

std::string Vif::bdir() const { return xenbus::backend_dir(DomId(0), "vif", guest.domid, devid); }
std::string Vif::fdir() const { return xenbus::frontend_dir(guest.domid, "vif", devid); }

bool Vif::wait_backend_key(const std::string& key, const std::string& value,
                           std::chrono::milliseconds timeout) {
    static std::atomic<unsigned> seq{0};
    const std::string tok = "nbwait" + std::to_string(seq++);
    auto w = env.xs->watch_scoped(bdir(), tok);
    REQUIRE(w);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto v = env.xs->read(bdir() + "/" + key);
        if (v && *v == value) {
            return true;
        }
        const auto left = deadline - std::chrono::steady_clock::now();
        if (left <= 0ms) {
            return false;
        }
        (void)env.xs->wait_event(std::chrono::duration_cast<std::chrono::milliseconds>(left) + 1ms);
    }
}

bool Vif::wait_backend(XenbusState s, std::chrono::milliseconds timeout) {
    return wait_backend_key("state", std::to_string(static_cast<int>(s)), timeout);
}

std::string Vif::backend_key(const std::string& key) {
    auto v = env.xs->read(bdir() + "/" + key);
    return v ? *v : std::string("<absent>");
}

// ---- frames ----

namespace {
void put_be16(std::vector<std::byte>& f, std::size_t off, unsigned v) {
    f[off] = std::byte(v >> 8);
    f[off + 1] = std::byte(v & 0xFF);
}
void fill_eth(std::vector<std::byte>& f, unsigned type, std::uint32_t seed) {
    for (std::size_t i = 0; i < 6; ++i) {
        f[i] = std::byte(0x02);
        f[6 + i] = std::byte(0x06);
    }
    put_be16(f, 12, type);
    for (std::size_t i = 14; i < f.size(); ++i) {
        f[i] = std::byte((i * 31 + seed) & 0xFF);
    }
}
}  // namespace

unsigned send_until_rx_buffers_used(Vif& v, unsigned frames, std::vector<netfront::Packet>& got) {
    unsigned sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((sent < frames || got.size() < 256 || v.nf->tx_outstanding() > 0) &&
           std::chrono::steady_clock::now() < deadline) {
        if (sent < frames && v.nf->send(0, raw_frame(60 + sent, sent))) {
            ++sent;
        } else {
            v.nf->receive(got, 1, 10ms);
        }
    }
    return sent;
}

std::vector<rings::netif_tx_response> tx_responses(Vif& v, std::size_t n) {
    std::vector<rings::netif_tx_response> all;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    std::vector<netfront::Packet> ignored;
    while (all.size() < n && std::chrono::steady_clock::now() < deadline) {
        v.nf->receive(ignored, 1, 20ms);
        auto r = v.nf->take_tx_responses();
        all.insert(all.end(), r.begin(), r.end());
    }
    return all;
}

std::vector<std::byte> raw_frame(std::size_t len, std::uint32_t seed) {
    std::vector<std::byte> f(len);
    fill_eth(f, 0x88B5, seed);
    return f;
}

void ctrl_ok(Vif& v, std::uint16_t type, std::uint32_t d0) {
    auto r = v.nf->ctrl_request(type, d0);
    REQUIRE(r);
    REQUIRE(r->status == rings::XEN_NETIF_CTRL_STATUS_SUCCESS);
}

void set_toeplitz(Vif& v, std::span<const std::uint8_t> key, std::uint32_t flags) {
    ctrl_ok(v, rings::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
            rings::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
    REQUIRE(v.nf->set_hash_key(key));
    ctrl_ok(v, rings::XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, flags);
}

std::vector<std::byte> tcp4_frame(std::size_t len, std::uint32_t seed) {
    std::vector<std::byte> f(len);
    fill_eth(f, 0x0800, seed);
    f[14] = std::byte(0x45);
    f[15] = std::byte(0);
    put_be16(f, 16, static_cast<unsigned>(len - 14));
    put_be16(f, 20, 0x4000);  // DF, no fragment
    f[22] = std::byte(64);
    f[23] = std::byte(6);
    f[46] = std::byte(0x50);  // TCP data offset 5 words
    return f;
}

std::vector<std::byte> tcp6_frame(std::size_t len, std::uint32_t seed) {
    std::vector<std::byte> f(len);
    fill_eth(f, 0x86DD, seed);
    f[14] = std::byte(0x60);
    f[15] = f[16] = f[17] = std::byte(0);
    put_be16(f, 18, static_cast<unsigned>(len - 54));
    f[20] = std::byte(6);
    f[21] = std::byte(64);
    f[54 + 12] = std::byte(0x50);
    return f;
}

bool tcp6_checksum_completed(const std::vector<std::byte>& sent,
                             const std::vector<std::byte>& orig) {
    constexpr std::size_t l4 = 14 + 40;  // tcp6_frame: no extension headers
    constexpr std::size_t field = l4 + 16;
    if (sent.size() != orig.size() || sent.size() < field + 2 ||
        !std::equal(sent.begin(), sent.begin() + field, orig.begin()) ||
        !std::equal(sent.begin() + field + 2, sent.end(), orig.begin() + field + 2)) {
        return false;
    }
    const std::uint32_t pseudo = std::to_integer<std::uint32_t>(orig[field]) << 8 |
                                 std::to_integer<std::uint32_t>(orig[field + 1]);
    const auto* b = reinterpret_cast<const std::uint8_t*>(sent.data());
    std::uint32_t sum = hv::rings::netif_sum16({b + l4, sent.size() - l4}, pseudo);
    while ((sum >> 16) != 0) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return sum == 0xffff;
}

}  // namespace hv::net::test
