// OVS control through ovs-vsctl (exec, no shell) and a private ovsdb-server + ovs-vswitchd.
#include "ovs.hpp"

#include <sys/stat.h>

#include <filesystem>

#include "engine.hpp"
#include "hv/log.hpp"

namespace hv::net {
namespace {

constexpr const char* schema = "/usr/share/openvswitch/vswitch.ovsschema";

int timeout_seconds(int timeout_ms) { return timeout_ms < 1000 ? 1 : timeout_ms / 1000; }

/// Keeps every OVS file (pid, ctl sockets, logs, db) inside the private run directory.
std::vector<std::string> private_env(const std::string& dir) {
    return {"OVS_RUNDIR=" + dir, "OVS_LOGDIR=" + dir, "OVS_DBDIR=" + dir,
            "OVS_SYSCONFDIR=" + dir};
}

hv::Result<std::string> run_tool(const std::vector<std::string>& argv, int timeout_ms,
                                 const std::vector<std::string>& env) noexcept {
    hv::SpawnOptions opt;
    opt.env = env;
    auto r = hv::run(argv, timeout_ms + 1000, opt);
    if (!r) {
        HV_ERROR("ovs: %s: %s", argv[0].c_str(), r.error().message().c_str());
        return hv::fail(r.error());
    }
    if (r->exit_code != 0) {
        HV_ERROR("ovs: %s %s exited %d: %s", argv[0].c_str(), argv.size() > 1 ? argv[1].c_str() : "",
                 r->exit_code, r->output.c_str());
        return hv::fail(Errc::protocol);
    }
    return std::move(r->output);
}

}  // namespace

hv::Result<std::string> ovs_vsctl(const std::string& db, const std::vector<std::string>& args,
                                  int timeout_ms) noexcept {
    std::vector<std::string> argv{"ovs-vsctl", "--db=" + db,
                                  "--timeout=" + std::to_string(timeout_seconds(timeout_ms))};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_tool(argv, timeout_ms, {});
}

hv::Result<void> ovs_add_port(const std::string& db, std::string_view bridge,
                              std::string_view port, int timeout_ms) noexcept {
    auto r = ovs_vsctl(db, {"--may-exist", "add-port", std::string(bridge), std::string(port)},
                       timeout_ms);
    if (!r) {
        return hv::fail(r.error());
    }
    return {};
}

hv::Result<void> ovs_del_port(const std::string& db, std::string_view bridge,
                              std::string_view port, int timeout_ms) noexcept {
    auto r = ovs_vsctl(db, {"--if-exists", "del-port", std::string(bridge), std::string(port)},
                       timeout_ms);
    if (!r) {
        return hv::fail(r.error());
    }
    return {};
}

hv::Result<OvsInstance> OvsInstance::start(const OvsOptions& opt) noexcept {
    if (opt.run_dir.empty()) {
        return hv::fail_errno(EINVAL);
    }
    std::error_code ec;
    std::filesystem::create_directories(opt.run_dir, ec);
    if (ec) {
        return hv::fail(ec);
    }
    OvsInstance o;
    o.run_dir_ = opt.run_dir;
    o.db_ = "unix:" + opt.run_dir + "/db.sock";
    o.timeout_ms_ = opt.timeout_ms;
    const auto env = private_env(opt.run_dir);
    const std::string conf = opt.run_dir + "/conf.db";
    std::filesystem::remove(conf, ec);

    auto created = run_tool({"ovsdb-tool", "create", conf, schema}, opt.timeout_ms, env);
    if (!created) {
        return hv::fail(created.error());
    }
    hv::SpawnOptions sp;
    sp.netns_fd = opt.netns_fd;
    sp.env = env;
    sp.capture_output = false;
    sp.log_path = opt.run_dir + "/ovsdb-server.out";
    auto db = hv::Subprocess::spawn(
        {"ovsdb-server", conf, "--remote=punix:" + opt.run_dir + "/db.sock",
         "--unixctl=" + opt.run_dir + "/ovsdb-server.ctl", "--no-chdir",
         "--pidfile=" + opt.run_dir + "/ovsdb-server.pid",
         "--log-file=" + opt.run_dir + "/ovsdb-server.log"},
        sp);
    if (!db) {
        return hv::fail(db.error());
    }
    o.ovsdb_ = std::move(*db);
    // --retry waits for the socket to appear (bounded by --timeout): the server's real signal.
    std::vector<std::string> init{"--no-wait", "--retry", "init"};
    if (opt.userspace_tso) {
        init.insert(init.end(), {"--", "set", "Open_vSwitch", ".",
                                 "other_config:userspace-tso-enable=true"});
    }
    auto inited = ovs_vsctl(o.db_, init, opt.timeout_ms);
    if (!inited) {
        return hv::fail(inited.error());
    }
    sp.log_path = opt.run_dir + "/ovs-vswitchd.out";
    auto sw = hv::Subprocess::spawn(
        {"ovs-vswitchd", o.db_, "--unixctl=" + opt.run_dir + "/ovs-vswitchd.ctl", "--no-chdir",
         "--pidfile=" + opt.run_dir + "/ovs-vswitchd.pid",
         "--log-file=" + opt.run_dir + "/ovs-vswitchd.log"},
        sp);
    if (!sw) {
        return hv::fail(sw.error());
    }
    o.vswitchd_ = std::move(*sw);
    // A no-op transaction without --no-wait returns once ovs-vswitchd has read the database.
    auto ready = ovs_vsctl(o.db_, {"--", "set", "Open_vSwitch", ".", "external_ids:hvkit=1"},
                           opt.timeout_ms);
    if (!ready) {
        return hv::fail(ready.error());
    }
    return o;
}

hv::Result<void> OvsInstance::add_bridge(std::string_view name) noexcept {
    auto r = ovs_vsctl(db_, {"--may-exist", "add-br", std::string(name), "--", "set", "Bridge",
                             std::string(name), "datapath_type=netdev"},
                       timeout_ms_);
    if (!r) {
        return hv::fail(r.error());
    }
    return {};
}

void OvsInstance::stop() noexcept {
    vswitchd_.terminate();
    ovsdb_.terminate();
}

}  // namespace hv::net
