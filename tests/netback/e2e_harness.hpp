// netback end-to-end harness: the real hv-min core in-process (with its XenStore), the real
// netback Backend (dom0: its own hv-min and XenStore connections), and frontend domains that are
// real hv-min domains whose hypercall channel the test attaches in-process (hv_hypercall_donor), each
// driving libnetfront.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "frontends/netfront.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"
#include "hvmin/toolstack.hpp"
#include "netback/device.hpp"
#include "temp_dir.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::net::test {

using namespace std::chrono_literals;
using xenbus::XenbusState;

struct Env {
    explicit Env(std::optional<BackendOptions> backend = loop_options());
    ~Env();
    /// The loop engine, up to 4 queues, statistics every 50 ms, and the product's rx drain
    /// timeout (10 s).
    static BackendOptions loop_options();
    /// An rx drain timeout for tests that wait for frames to be dropped for want of buffers.
    static constexpr std::chrono::milliseconds kShortDrain{200};
    void start_backend(BackendOptions opt);
    void stop_backend();

    hv::test::TempDir dir{"netback-e2e"};
    std::unique_ptr<hvmin::Core> core;
    std::optional<hvmin::Toolstack> ts;
    std::unique_ptr<xs::Client> xs;  // the toolstack's (dom0) connection
    std::optional<hvmin::Services> be_svc;
    std::unique_ptr<xs::Client> be_xs;
    std::unique_ptr<Backend> backend;
};

/// A frontend domain attached in this process.
class Guest {
public:
    Guest(Env& env, const std::string& name);
    ~Guest();
    void kill();
    /// Kills the domain (its connections close) but keeps `svc` and `xs` as objects, so a
    /// frontend built on them can still be destroyed afterwards (a crashed guest).
    void crash();
    Env& env;
    DomId domid{0};
    std::optional<hvmin::Services> svc;
    std::unique_ptr<xs::Client> xs;

private:
    UniqueFd donor_;
};

/// One vif: toolstack keys, then libnetfront connected to the backend.
class Vif {
public:
    Vif(Env& env, Guest& g, std::uint32_t devid, netfront::Options o = {},
        std::map<std::string, std::string> backend_keys = {}, bool connect = true);
    ~Vif();
    std::string bdir() const;
    std::string fdir() const;
    /// Waits (bounded) until the backend's `state` is `s`.
    bool wait_backend(XenbusState s, std::chrono::milliseconds timeout = 10s);
    /// Waits until `key` in the backend dir reads `value`.
    bool wait_backend_key(const std::string& key, const std::string& value,
                          std::chrono::milliseconds timeout = 10s);
    std::string backend_key(const std::string& key);
    void connect();
    /// Creates netfront and lets it write its keys and go Connected, without waiting for the
    /// backend (which may hold its Connected back).
    void start_frontend();
    /// The frontend closes (Closing, Closed: the backend follows each), is dropped, starts over
    /// from Initialising (the backend answers InitWait) and connects again.
    void reconnect();

    Env& env;
    Guest& guest;
    std::uint32_t devid;
    netfront::Options opt;
    std::unique_ptr<netfront::Device> nf;
};

/// While alive, spinning happens even on an oversubscribed machine (hv::cpus_oversubscribed()
/// would otherwise stop netback's and netfront's spinning on a loaded CI machine).
struct SpinIgnoringLoad {
    SpinIgnoringLoad() { hv::set_spin_ignores_load(true); }
    ~SpinIgnoringLoad() { hv::set_spin_ignores_load(false); }
    SpinIgnoringLoad(const SpinIgnoringLoad&) = delete;
    SpinIgnoringLoad& operator=(const SpinIgnoringLoad&) = delete;
};

/// The tx responses netfront saw (take_tx_responses), collected until there are at least `n`
/// (≤ 5 s; rx packets meanwhile are received and dropped).
std::vector<rings::netif_tx_response> tx_responses(Vif& v, std::size_t n);

/// A control-ring request (netfront::Options::ctrl_ring) the backend must answer SUCCESS.
void ctrl_ok(Vif& v, std::uint16_t type, std::uint32_t d0 = 0);
/// Over the control ring: algorithm Toeplitz, `key`, the hash types `flags`.
void set_toeplitz(Vif& v, std::span<const std::uint8_t> key, std::uint32_t flags);

/// With netfront's rx buffers held back (raw_rx_hold(true) first), sends raw_frame(60 + i, i)
/// for i < `frames` while receiving into `got`, until all are sent and answered and the 256
/// posted rx buffers are used (the rest wait in netback), or 10 s pass. Returns frames sent.
unsigned send_until_rx_buffers_used(Vif& v, unsigned frames, std::vector<netfront::Packet>& got);

/// An Ethernet + IPv4 + TCP frame of `len` bytes (payload pattern from `seed`); checksum field
/// holds what a partial-checksum sender leaves there.
std::vector<std::byte> tcp4_frame(std::size_t len, std::uint32_t seed);
/// Same with IPv6.
std::vector<std::byte> tcp6_frame(std::size_t len, std::uint32_t seed);
/// `sent` is tcp6_frame `orig` whose partial TCP checksum someone completed: equal to it but
/// for the checksum field, and summing (with the pseudo-header sum the field held in `orig`)
/// to all ones from the TCP header on.
bool tcp6_checksum_completed(const std::vector<std::byte>& sent,
                             const std::vector<std::byte>& orig);
/// A plain frame (ethertype 0x88B5, local experimental) of `len` bytes.
std::vector<std::byte> raw_frame(std::size_t len, std::uint32_t seed);

}  // namespace hv::net::test
