// hv-guest disks: every vbd under device/vbd is connected with libblkfront and served as an NBD
// export on <socket_dir>/<dev>.nbd. Hot-attach (a new vbd) and removal (backend Closing with
// online=0, or the directory removed) are followed through XenStore watches.
// Layer: frontends (program). Main thread only.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cerrno>
#include <map>
#include <unordered_map>

#include "frontends/blkfront.hpp"
#include "frontends/nbd.hpp"
#include "fuse_file.hpp"
#include "guest.hpp"
#include "hv/log.hpp"
#include "hvmin/client.hpp"
#include "xenbus/xenbus.hpp"

namespace hv::guest {

namespace {

std::uint32_t to_nbd_error(int status) {
    switch (-status) {
        case 0:
            return 0;
        case EOPNOTSUPP:
            return nbd::NBD_ENOTSUP;
        case ENODEV:
            return nbd::NBD_ESHUTDOWN;
        case EINVAL:
            return nbd::NBD_EINVAL;
        default:
            return nbd::NBD_EIO;
    }
}

std::uint32_t to_nbd_error(std::error_code ec) {
    if (ec == blkfront::Errc::read_only) {
        return nbd::NBD_EPERM;
    }
    if (ec == blkfront::Errc::bad_request) {
        return nbd::NBD_EINVAL;
    }
    if (ec == std::error_code(EOPNOTSUPP, std::system_category())) {
        return nbd::NBD_ENOTSUP;
    }
    if (ec == blkfront::Errc::not_connected || ec == blkfront::Errc::device_gone) {
        return nbd::NBD_ESHUTDOWN;
    }
    return nbd::NBD_EIO;
}

/// The NBD face of one blkfront Device. Completions come back through complete().
class BlkExport final : public nbd::Export {
public:
    explicit BlkExport(std::string name) : name_(std::move(name)) {}

    void attach(blkfront::Device* dev) noexcept { dev_ = dev; }

    nbd::ExportInfo info() const override {
        nbd::ExportInfo i;
        i.name = name_;
        i.description = "hvkit vbd " + name_;
        if (dev_ != nullptr) {
            const auto& d = dev_->info();
            i.size = d.size_bytes();
            i.min_block = d.sector_size;
            i.read_only = d.read_only;
            i.flush = d.flush || d.barrier;
            i.trim = d.discard;
        }
        return i;
    }

    void start(const nbd::Command& cmd, std::function<void(std::uint32_t)> done) override {
        if (dev_ == nullptr || closing_) {
            done(nbd::NBD_ESHUTDOWN);
            return;
        }
        blkfront::Io io;
        io.offset_bytes = cmd.offset;
        io.length = cmd.length;
        io.buf = cmd.data;
        switch (cmd.type) {
            case nbd::CmdType::read:
                io.op = blkfront::Op::read;
                break;
            case nbd::CmdType::write:
                io.op = blkfront::Op::write;
                break;
            case nbd::CmdType::flush:
                io.op = blkfront::Op::flush;
                break;
            case nbd::CmdType::trim:
                io.op = blkfront::Op::discard;
                break;
        }
        const std::uint64_t cookie = next_++;
        if (cmd.type == nbd::CmdType::write && cmd.fua) {
            // FUA = the write, then a flush, before the reply.
            auto inner = std::move(done);
            done = [this, inner = std::move(inner)](std::uint32_t err) mutable {
                if (err != 0 || dev_ == nullptr) {
                    inner(err != 0 ? err : nbd::NBD_ESHUTDOWN);
                    return;
                }
                const std::uint64_t c2 = next_++;
                pending_.emplace(c2, std::move(inner));
                blkfront::Io fl;
                fl.op = blkfront::Op::flush;
                fl.cookie = c2;
                auto r = dev_->submit(fl);
                if (!r) {
                    auto f = std::move(pending_[c2]);
                    pending_.erase(c2);
                    f(to_nbd_error(r.error()));
                }
            };
        }
        io.cookie = cookie;
        pending_.emplace(cookie, std::move(done));
        auto r = dev_->submit(io);
        if (!r) {
            auto f = std::move(pending_[cookie]);
            pending_.erase(cookie);
            f(to_nbd_error(r.error()));
        }
    }

    /// Commands started and not yet answered.
    std::size_t in_flight() const noexcept { return pending_.size(); }
    /// The device is going away: new commands are refused, started ones finish.
    void close_to_new() noexcept { closing_ = true; }

    void complete(std::uint64_t cookie, int status) {
        auto it = pending_.find(cookie);
        if (it == pending_.end()) {
            return;
        }
        auto f = std::move(it->second);
        pending_.erase(it);
        f(to_nbd_error(status));
    }

private:
    std::string name_;
    blkfront::Device* dev_ = nullptr;
    std::uint64_t next_ = 1;
    bool closing_ = false;
    std::unordered_map<std::uint64_t, std::function<void(std::uint32_t)>> pending_;
};

/// How long a removed disk may take to finish the commands it had started.
constexpr auto kDrainLimit = std::chrono::seconds(5);

struct Vbd {
    std::uint32_t devid = 0;
    std::string name;
    std::string backend;  // the backend directory (frontend's `backend` key)
    bool draining = false;
    std::chrono::steady_clock::time_point drain_deadline;
    std::string socket;
    std::shared_ptr<BlkExport> exp;
    std::unique_ptr<FuseFile> fuse;         // --fuse-dir: the disk as a file (after exp, before dev)
    std::unique_ptr<blkfront::Device> dev;  // after exp and fuse: completions reach them while it dies
    bool exported = false;
};

/// Keeps a device name safe as a file name: [a-z0-9]+ or the devid.
std::string safe_name(const std::string& dev, std::uint32_t devid) {
    const bool ok = !dev.empty() && dev.size() <= 32 &&
                    std::all_of(dev.begin(), dev.end(), [](char c) {
                        return std::islower(static_cast<unsigned char>(c)) ||
                               std::isdigit(static_cast<unsigned char>(c));
                    });
    return ok ? dev : std::to_string(devid);
}

class Disks final : public DeviceKind {
public:
    explicit Disks(Context& ctx) : ctx_(ctx) {}
    ~Disks() override {
        for (auto& [id, v] : vbds_) {
            if (v.exported) {
                server_.remove(v.socket);
            }
        }
    }

    const char* name() const noexcept override { return "disks"; }

    Result<void> start() override {
        auto w = ctx_.xs.watch_scoped(ctx_.home + "/device/vbd", kListToken);
        if (!w) {
            return fail(w.error());
        }
        list_watch_ = std::move(*w);
        rescan();
        initial_.clear();
        for (const auto& [id, v] : vbds_) {
            initial_.push_back(id);
        }
        return {};
    }

    bool on_watch(const xs::WatchEvent& ev) override {
        if (ev.token == kListToken) {
            // The event names the node: a vbd we cannot list (device/vbd not readable by
            // this domain) is still found through its own nodes.
            const std::string prefix = ctx_.home + "/device/vbd/";
            if (ev.path.rfind(prefix, 0) == 0) {
                const std::string rest = ev.path.substr(prefix.size());
                auto id = xenbus::parse_uint(rest.substr(0, rest.find('/')), UINT32_MAX);
                if (id && vbds_.count(static_cast<std::uint32_t>(*id)) == 0) {
                    add(static_cast<std::uint32_t>(*id));
                }
            }
            rescan();
            return true;
        }
        for (auto& [id, v] : vbds_) {
            if (v.dev && ev.token == v.dev->watch_token()) {
                step_or_drain(v);
                reap();
                return true;
            }
        }
        return ev.token.rfind("blkfront/", 0) == 0;  // a device we already dropped
    }

    void poll_fds(std::vector<pollfd>& out) override {
        for (auto& [id, v] : vbds_) {
            if (v.dev) {
                for (int fd : v.dev->pollable_fds()) {
                    out.push_back(pollfd{fd, POLLIN, 0});
                }
            }
        }
        server_.poll_fds(out);
        for (auto& [id, v] : vbds_) {
            if (v.fuse) {
                out.push_back(pollfd{v.fuse->fd(), POLLIN, 0});
            }
        }
    }

    void handle(std::span<const pollfd> fds) override {
        for (auto& [id, v] : vbds_) {
            if (v.dev) {
                v.dev->poll();  // cheap when nothing is pending; takes any ready responses
            }
        }
        for (const auto& p : fds) {
            server_.handle(p);
            for (auto& [id, v] : vbds_) {
                if (v.fuse && p.fd == v.fuse->fd()) {
                    v.fuse->handle(p.revents);
                }
            }
        }
        for (auto& [id, v] : vbds_) {
            if (v.dev) {
                v.dev->poll();  // commands started by the NBD input above
            }
        }
        for (auto& [id, v] : vbds_) {
            if (v.dev && v.draining) {
                step_or_drain(v);  // done once its started commands are answered
            }
        }
        server_.flush_all();
        reap();
    }

    bool ready() const override {
        unsigned connected = 0;
        for (const auto& [id, v] : vbds_) {
            connected += v.exported ? 1U : 0U;
        }
        if (connected < ctx_.wait_disks) {
            return false;
        }
        for (auto id : initial_) {
            auto it = vbds_.find(id);
            if (it != vbds_.end() && it->second.dev &&
                it->second.dev->phase() == blkfront::Phase::waiting) {
                return false;
            }
        }
        return true;
    }

    void env(std::vector<std::string>& out) const override {
        out.push_back("HV_NBD_DIR=" + ctx_.socket_dir.string());
        for (const auto& [id, v] : vbds_) {
            if (!v.exported) {
                continue;
            }
            std::string up = v.name;
            std::transform(up.begin(), up.end(), up.begin(),
                           [](char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); });
            out.push_back("HV_NBD_" + up + "=" + v.socket);
            out.push_back("HV_NBD_URI_" + up + "=nbd+unix:///?socket=" + v.socket);
            if (v.fuse) {
                out.push_back("HV_DISK_" + up + "=" + v.fuse->path());
            }
        }
    }

private:
    static constexpr const char* kListToken = "hvguest/vbd";

    void rescan() {
        auto list = ctx_.xs.directory(ctx_.home + "/device/vbd");
        std::vector<std::uint32_t> present;
        if (!list) {
            return;  // unreadable or absent: devices are found through watch events instead
        }
        {
            for (const auto& e : *list) {
                auto id = xenbus::parse_uint(e, UINT32_MAX);
                if (id) {
                    present.push_back(static_cast<std::uint32_t>(*id));
                }
            }
        }
        for (auto id : present) {
            if (vbds_.count(id) == 0) {
                add(id);
            }
        }
        for (auto& [id, v] : vbds_) {
            if (std::find(present.begin(), present.end(), id) == present.end() && v.dev) {
                step(v);  // the device reads its removal and dies
            }
        }
        reap();
    }

    void add(std::uint32_t devid) {
        Vbd v;
        v.devid = devid;
        auto be = ctx_.xs.read(xenbus::frontend_dir(ctx_.domid, "vbd", devid) + "/backend");
        std::string dev;
        if (be) {
            v.backend = *be;
            auto online = xenbus::read_optional(ctx_.xs, *be + "/online");
            if (online && *online && **online == "0") {
                // Being removed (or just removed by us): never attach it again. A removal
                // that came before we saw the vbd at all (a detach right after the attach)
                // still waits for our Closed: answer it, as a Linux frontend probed with its
                // backend Closing does, or the backend never reaches Closed and the detach
                // times out. switch_state writes nothing once the directory is gone.
                auto bs = xenbus::read_state(ctx_.xs, *be);
                if (bs && (*bs == rings::XenbusStateClosing || *bs == rings::XenbusStateClosed)) {
                    (void)xenbus::switch_state(
                        ctx_.xs, xenbus::frontend_dir(ctx_.domid, "vbd", devid), rings::XenbusStateClosed);
                }
                return;
            }
            auto d = ctx_.xs.read(*be + "/dev");
            if (d) {
                dev = *d;
            }
        }
        v.name = safe_name(dev, devid);
        v.socket = (ctx_.socket_dir / (v.name + ".nbd")).string();
        v.exp = std::make_shared<BlkExport>(v.name);
        auto exp = v.exp;
        auto d = blkfront::Device::create(
            ctx_.hv, ctx_.xs, devid, blkfront::Options{},
            [exp](std::uint64_t cookie, int status) { exp->complete(cookie, status); });
        if (!d) {
            // ENOENT: the last events of a removed vbd's directory, nothing to attach.
            if (d.error() != std::errc::no_such_file_or_directory) {
                HV_WARN("hv-guest: vbd %u: %s", devid, d.error().message().c_str());
            }
            return;  // not ready yet (keys missing): the list watch will bring it back
        }
        v.dev = std::move(*d);
        v.exp->attach(v.dev.get());
        auto [it, _] = vbds_.emplace(devid, std::move(v));
        step(it->second);
    }

    /// The toolstack's removal (backend `online = 0`) while NBD commands are in flight: the
    /// backend keeps serving the rings until the frontend closes, so the frontend is held
    /// open (new commands refused) until every started command has its answer, or
    /// kDrainLimit passed; then it closes. Nothing a client was told is written gets lost,
    /// and nothing in flight is failed for the removal's sake.
    void step_or_drain(Vbd& v) {
        const auto now = std::chrono::steady_clock::now();
        if (!v.draining && v.exp->in_flight() > 0 && !v.backend.empty()) {
            auto online = xenbus::read_optional(ctx_.xs, v.backend + "/online");
            if (online && *online && **online == "0") {
                v.draining = true;
                v.drain_deadline = now + kDrainLimit;
                v.exp->close_to_new();
                HV_INFO("hv-guest: vbd %s: removal requested with %zu command(s) in flight: "
                        "draining",
                        v.name.c_str(), v.exp->in_flight());
            }
        }
        if (v.draining) {
            if (v.exp->in_flight() > 0 && now < v.drain_deadline) {
                return;
            }
            if (v.exp->in_flight() > 0) {
                HV_WARN("hv-guest: vbd %s: %zu command(s) still in flight after %lld s; closing",
                        v.name.c_str(), v.exp->in_flight(),
                        static_cast<long long>(kDrainLimit.count()));
            }
            v.draining = false;
        }
        step(v);
    }

    void step(Vbd& v) {
        auto r = v.dev->on_state_change();
        if (!r) {
            HV_WARN("hv-guest: vbd %u (%s): %s", v.devid, v.name.c_str(), r.error().message().c_str());
        }
        if (v.dev->phase() == blkfront::Phase::connected && !v.exported) {
            auto l = server_.listen(v.socket, v.exp);
            if (!l) {
                HV_ERROR("hv-guest: vbd %s: NBD socket %s: %s", v.name.c_str(), v.socket.c_str(),
                         l.error().message().c_str());
                return;
            }
            v.exported = true;
            const auto& i = v.dev->info();
            HV_INFO("hv-guest: vbd %s connected: %llu sectors, %u queue(s) x %u page(s), "
                    "persistent=%d indirect=%u; NBD on %s",
                    v.name.c_str(), static_cast<unsigned long long>(i.sectors), i.queues,
                    i.ring_pages, i.persistent ? 1 : 0, i.indirect_segments, v.socket.c_str());
        }
        if (v.exported && !v.fuse && ctx_.mount_ns != nullptr) {
            std::error_code ec;
            std::filesystem::create_directories(ctx_.fuse_dir, ec);
            auto f = FuseFile::mount(*ctx_.mount_ns, (ctx_.fuse_dir / v.name).string(), v.exp);
            if (!f) {
                HV_ERROR("hv-guest: vbd %s: FUSE file %s: %s", v.name.c_str(),
                         (ctx_.fuse_dir / v.name).c_str(), f.error().message().c_str());
                return;
            }
            v.fuse = std::move(*f);
            HV_INFO("hv-guest: vbd %s: file %s", v.name.c_str(), v.fuse->path().c_str());
        }
    }

    /// Drops dead devices: their export and socket go away.
    void reap() {
        server_.flush_all();  // error replies of a dying device go out before its sockets close
        for (auto it = vbds_.begin(); it != vbds_.end();) {
            Vbd& v = it->second;
            if (v.fuse && v.fuse->dead()) {
                v.fuse.reset();  // unmounted from outside: the NBD export stays
            }
            if (v.dev && v.dev->phase() == blkfront::Phase::dead) {
                HV_INFO("hv-guest: vbd %s removed", v.name.c_str());
                if (v.exported) {
                    server_.remove(v.socket);
                }
                v.exp->attach(nullptr);
                v.dev.reset();
                it = vbds_.erase(it);
            } else {
                ++it;
            }
        }
    }

    Context& ctx_;
    xs::ScopedWatch list_watch_;
    nbd::Server server_;
    std::map<std::uint32_t, Vbd> vbds_;
    std::vector<std::uint32_t> initial_;
};

}  // namespace

std::unique_ptr<DeviceKind> make_disks(Context& ctx) { return std::make_unique<Disks>(ctx); }

}  // namespace hv::guest
