// Open vSwitch, control path only: attach/detach a vif's tap to an OVS bridge through ovs-vsctl,
// and (tests, demos) a private OVS instance — ovsdb-server + ovs-vswitchd with the userspace
// `netdev` datapath (no kernel module) — in a given network namespace with its own run directory.
// Layer: L3 (netback engines). Not thread-safe; spawn from a long-lived thread (hv/subprocess.hpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"
#include "hv/subprocess.hpp"

namespace hv::net {

/// Runs `ovs-vsctl --db=<db> --timeout=<s> <args…>`; a non-zero exit becomes Errc::protocol
/// (the tool's message is logged). `db` is an OVSDB remote such as "unix:/run/x/db.sock".
hv::Result<std::string> ovs_vsctl(const std::string& db, const std::vector<std::string>& args,
                                  int timeout_ms = 10000) noexcept;

/// Attaches `port` (an existing link, e.g. the tap vif1.0) to `bridge`; idempotent.
hv::Result<void> ovs_add_port(const std::string& db, std::string_view bridge,
                              std::string_view port, int timeout_ms = 10000) noexcept;
/// Detaches `port` from `bridge`; detaching a port that is not there succeeds.
hv::Result<void> ovs_del_port(const std::string& db, std::string_view bridge,
                              std::string_view port, int timeout_ms = 10000) noexcept;

struct OvsOptions {
    int netns_fd = -1;       // where ovs-vswitchd runs (its ports and bridges live there)
    std::string run_dir;     // private: database, sockets, pid and log files
    bool userspace_tso = true;  // other_config:userspace-tso-enable (64 KiB GSO frames pass)
    int timeout_ms = 20000;  // bound for each start-up step
};

/// A private OVS. stop() (or the destructor) ends both daemons by pid and waits for them.
class OvsInstance {
public:
    /// Creates the database, starts ovsdb-server and ovs-vswitchd and waits until both answer.
    static hv::Result<OvsInstance> start(const OvsOptions& opt) noexcept;

    OvsInstance(OvsInstance&&) noexcept = default;
    OvsInstance& operator=(OvsInstance&&) = delete;
    ~OvsInstance() { stop(); }

    /// "unix:<run_dir>/db.sock"
    const std::string& db() const noexcept { return db_; }
    /// add-br with datapath_type=netdev; waits until ovs-vswitchd has created it.
    hv::Result<void> add_bridge(std::string_view name) noexcept;
    hv::Result<void> add_port(std::string_view bridge, std::string_view port) noexcept {
        return ovs_add_port(db_, bridge, port, timeout_ms_);
    }
    hv::Result<void> del_port(std::string_view bridge, std::string_view port) noexcept {
        return ovs_del_port(db_, bridge, port, timeout_ms_);
    }
    /// vswitchd first (it holds the ports), then ovsdb-server. Idempotent.
    void stop() noexcept;
    bool running() const noexcept { return vswitchd_.running() || ovsdb_.running(); }

private:
    OvsInstance() = default;
    std::string run_dir_;
    std::string db_;
    int timeout_ms_ = 20000;
    // Destroyed in reverse: vswitchd ends before the database it reads.
    hv::Subprocess ovsdb_;
    hv::Subprocess vswitchd_;
};

}  // namespace hv::net
