// hv-guest's PCI bus (device/pci/0, libpcifront) and, with --pci-sysfs DIR, its devices as a
// directory shaped like Linux's /sys/bus/pci: DIR/devices/<dddd:bb:dd.f>/{config, vendor,
// device, subsystem_vendor, subsystem_device, class, revision, irq, resource, modalias, vpd},
// the files pciutils' linux-sysfs method reads (lspci/setpci -A linux-sysfs -O
// sysfs.path=DIR). `config` reads and writes are pcifront config ops, so pciback's
// virtualisation applies; the text files are read from config space at each read (no
// cache: direct I/O); `resource` is sized once per device when it appears. A FUSE mount in
// the domain's mount namespace (FuseMount).
// Layer: frontends (program). Threads: the main thread only; pcifront ops run synchronously
// inside the FUSE handlers (a slow path: each is one op, answered or timed out in 2 s).
#define FUSE_USE_VERSION 314
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "frontends/pcifront.hpp"
#include "fuse_file.hpp"
#include "guest.hpp"
#include "pci_sysfs.hpp"
#include "hv/log.hpp"
#include "hvmin/client.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::guest {
namespace {

constexpr const char* kWatchToken = "hv-guest-pci";
constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kDevicesIno = 2;
constexpr fuse_ino_t kSlotInoBase = 64;  // device k: directory 64·(k+1), its files after it
using sysfs::File;
using sysfs::kFileNames;
using sysfs::kVpdSize;

struct Slot {
    pcifront::Address addr;
    bool present = true;
    unsigned config_size = 256;
    unsigned vpd_cap = 0;  // 0: none (no vpd file)
    std::string resource;
};

class SysfsTree {
public:
    explicit SysfsTree(pcifront::Device*& front) : front_(front) {}

    /// Brings the slots in line with the bus's devices (new ones sized, gone ones hidden).
    void sync() {
        std::vector<pcifront::Address> now;
        // While Reconfiguring, devices() already lacks the ones being unplugged and still has
        // the others: they stay listed.
        if (front_ != nullptr && (front_->phase() == pcifront::Phase::connected ||
                                  front_->phase() == pcifront::Phase::reconfiguring)) {
            now = front_->devices();
        }
        for (auto& s : slots_) {
            s.present = std::find(now.begin(), now.end(), s.addr) != now.end();
            if (!s.present) {
                s.resource.clear();  // whatever is plugged in here next is probed afresh
            }
        }
        for (const auto& a : now) {
            auto it = std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.addr == a; });
            if (it == slots_.end()) {
                Slot fresh;
                fresh.addr = a;
                it = slots_.insert(slots_.end(), std::move(fresh));
            }
            if (it->resource.empty()) {
                probe(*it);  // new, or plugged in again: the address keeps its inodes
            }
            it->present = true;
        }
    }

    // ---- FUSE operations (ino arithmetic: see kSlotInoBase)
    void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
        fuse_entry_param e{};
        fuse_ino_t ino = 0;
        if (parent == kRootIno && std::strcmp(name, "devices") == 0) {
            ino = kDevicesIno;
        } else if (parent == kDevicesIno) {
            for (std::size_t k = 0; k < slots_.size(); ++k) {
                if (slots_[k].present && pcifront::to_string(slots_[k].addr) == name) {
                    ino = dir_ino(k);
                }
            }
        } else if (const Slot* s = slot_of_dir(parent)) {
            for (unsigned f = 0; f < kFileNames.size(); ++f) {
                if (std::strcmp(kFileNames[f], name) == 0 && has_file(*s, static_cast<File>(f))) {
                    ino = parent + 1 + f;
                }
            }
        }
        if (ino == 0 || !attr(ino, e.attr)) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        e.ino = ino;
        e.attr_timeout = 0;  // hot-plug: nothing is cached
        e.entry_timeout = 0;
        fuse_reply_entry(req, &e);
    }

    void getattr(fuse_req_t req, fuse_ino_t ino) {
        struct stat st{};
        if (!attr(ino, st)) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        fuse_reply_attr(req, &st, 0);
    }

    void readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off) {
        std::vector<std::pair<std::string, fuse_ino_t>> ents = {{".", ino}, {"..", kRootIno}};
        if (ino == kRootIno) {
            ents.emplace_back("devices", kDevicesIno);
        } else if (ino == kDevicesIno) {
            for (std::size_t k = 0; k < slots_.size(); ++k) {
                if (slots_[k].present) {
                    ents.emplace_back(pcifront::to_string(slots_[k].addr), dir_ino(k));
                }
            }
        } else if (const Slot* s = slot_of_dir(ino)) {
            ents[1].second = kDevicesIno;
            for (unsigned f = 0; f < kFileNames.size(); ++f) {
                if (has_file(*s, static_cast<File>(f))) {
                    ents.emplace_back(kFileNames[f], ino + 1 + f);
                }
            }
        } else {
            fuse_reply_err(req, ENOTDIR);
            return;
        }
        std::vector<char> buf(size);
        std::size_t used = 0;
        for (std::size_t i = off < 0 ? ents.size() : static_cast<std::size_t>(off); i < ents.size(); ++i) {
            struct stat st{};
            st.st_ino = ents[i].second;
            st.st_mode = ents[i].second < kSlotInoBase || is_dir(ents[i].second) ? S_IFDIR : S_IFREG;
            const std::size_t n = fuse_add_direntry(req, buf.data() + used, size - used, ents[i].first.c_str(),
                                                    &st, static_cast<off_t>(i + 1));
            if (n > size - used) {
                break;
            }
            used += n;
        }
        fuse_reply_buf(req, buf.data(), used);
    }

    void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
        const auto f = file_of(ino);
        if (!f) {
            fuse_reply_err(req, is_dir(ino) || ino < kSlotInoBase ? EISDIR : ENOENT);
            return;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY && f->second != File::config) {
            fuse_reply_err(req, EACCES);
            return;
        }
        if ((fi->flags & O_TRUNC) != 0) {
            fuse_reply_err(req, EPERM);
            return;
        }
        fi->direct_io = 1;  // every read reaches the device: no page cache
        fuse_reply_open(req, fi);
    }

    void read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off) {
        const auto f = file_of(ino);
        if (!f || off < 0) {
            fuse_reply_err(req, f ? EINVAL : ENOENT);
            return;
        }
        Slot& s = *f->first;
        const auto o = static_cast<std::uint64_t>(off);
        if (f->second == File::config || f->second == File::vpd) {
            const unsigned limit = f->second == File::config ? s.config_size : kVpdSize;
            if (o >= limit) {
                fuse_reply_buf(req, nullptr, 0);
                return;
            }
            std::vector<std::uint8_t> out(std::min<std::uint64_t>(size, limit - o));
            const std::size_t got = f->second == File::config ? config_read(s, static_cast<unsigned>(o), out)
                                                              : vpd_read(s, static_cast<unsigned>(o), out);
            if (got == 0 && !out.empty()) {
                fuse_reply_err(req, EIO);
                return;
            }
            fuse_reply_buf(req, reinterpret_cast<const char*>(out.data()), got);
            return;
        }
        const auto text = attribute(s, f->second);
        if (!text) {
            fuse_reply_err(req, EIO);
            return;
        }
        if (o >= text->size()) {
            fuse_reply_buf(req, nullptr, 0);
            return;
        }
        fuse_reply_buf(req, text->data() + o, std::min<std::size_t>(size, text->size() - o));
    }

    void write(fuse_req_t req, fuse_ino_t ino, const char* data, std::size_t size, off_t off) {
        const auto f = file_of(ino);
        if (!f || f->second != File::config) {
            fuse_reply_err(req, f ? EACCES : ENOENT);
            return;
        }
        Slot& s = *f->first;
        if (off < 0 || static_cast<std::uint64_t>(off) >= s.config_size) {
            fuse_reply_err(req, off < 0 ? EINVAL : EFBIG);
            return;
        }
        // Split into naturally aligned 4/2/1-byte config writes, as the kernel's does.
        auto pos = static_cast<unsigned>(off);
        const unsigned end = static_cast<unsigned>(std::min<std::uint64_t>(pos + size, s.config_size));
        std::size_t done = 0;
        while (pos < end) {
            const unsigned n = sysfs::access_size(pos, end - pos);
            std::uint32_t v = 0;
            std::memcpy(&v, data + done, n);
            auto r = front_->conf_write(s.addr, pos, n, v);
            if (!r) {
                if (done == 0) {
                    fuse_reply_err(req, errno_of(r.error()));
                    return;
                }
                break;
            }
            pos += n;
            done += n;
        }
        fuse_reply_write(req, done);
    }

private:
    static fuse_ino_t dir_ino(std::size_t k) { return kSlotInoBase * (k + 1); }
    static bool is_dir(fuse_ino_t ino) { return ino >= kSlotInoBase && ino % kSlotInoBase == 0; }
    /// pciback's answers as errnos: access_denied (a field guests may not write) is EPERM.
    static int errno_of(const std::error_code& e) {
        if (e == pcifront::op_error(rings::XEN_PCI_ERR_access_denied)) {
            return EPERM;
        }
        return e == pcifront::make_error_code(pcifront::Errc::timed_out) ? ETIMEDOUT : EIO;
    }

    Slot* slot_of_dir(fuse_ino_t ino) {
        if (!is_dir(ino)) {
            return nullptr;
        }
        const std::size_t k = ino / kSlotInoBase - 1;
        return k < slots_.size() && slots_[k].present ? &slots_[k] : nullptr;
    }
    std::optional<std::pair<Slot*, File>> file_of(fuse_ino_t ino) {
        if (ino < kSlotInoBase || is_dir(ino)) {
            return std::nullopt;
        }
        Slot* s = slot_of_dir(ino / kSlotInoBase * kSlotInoBase);
        const auto f = static_cast<unsigned>(ino % kSlotInoBase - 1);
        if (s == nullptr || f >= kFileNames.size() || !has_file(*s, static_cast<File>(f))) {
            return std::nullopt;
        }
        return std::make_pair(s, static_cast<File>(f));
    }
    static bool has_file(const Slot& s, File f) { return f != File::vpd || s.vpd_cap != 0; }

    bool attr(fuse_ino_t ino, struct stat& st) {
        st = {};
        st.st_ino = ino;
        st.st_nlink = 1;
        if (ino == kRootIno || ino == kDevicesIno || slot_of_dir(ino) != nullptr) {
            st.st_mode = S_IFDIR | 0755;
            st.st_nlink = 2;
            return true;
        }
        const auto f = file_of(ino);
        if (!f) {
            return false;
        }
        st.st_mode = S_IFREG | (f->second == File::config ? 0644 : 0444);
        st.st_size = f->second == File::config ? f->first->config_size
                     : f->second == File::vpd  ? 0  // as Linux: the size is the device's business
                                               : 4096;
        return true;
    }

    /// One slot's config space through pcifront's ops (the backend's answers).
    class FrontConfig final : public sysfs::ConfigSpace {
    public:
        FrontConfig(pcifront::Device* front, const pcifront::Address& addr)
            : front_(front), addr_(addr) {}
        std::optional<std::uint32_t> read(unsigned off, unsigned size) override {
            if (front_ == nullptr) {
                return std::nullopt;
            }
            auto v = front_->conf_read(addr_, off, size);
            return v ? std::optional<std::uint32_t>(*v) : std::nullopt;
        }
        bool write(unsigned off, unsigned size, std::uint32_t value) override {
            return front_ != nullptr && static_cast<bool>(front_->conf_write(addr_, off, size, value));
        }

    private:
        pcifront::Device* front_;
        pcifront::Address addr_;
    };

    std::size_t config_read(const Slot& s, unsigned off, std::vector<std::uint8_t>& out) {
        FrontConfig cs(front_, s.addr);
        return sysfs::config_read(cs, off, out);
    }
    std::size_t vpd_read(const Slot& s, unsigned off, std::vector<std::uint8_t>& out) {
        FrontConfig cs(front_, s.addr);
        return sysfs::vpd_read(cs, s.vpd_cap, off, out);
    }
    std::optional<std::string> attribute(const Slot& s, File f) {
        if (f == File::resource) {
            return s.resource;
        }
        FrontConfig cs(front_, s.addr);
        return sysfs::attribute(cs, f);
    }
    /// What Linux knows from enumeration (sysfs::probe), kept until the device goes.
    void probe(Slot& s) {
        FrontConfig cs(front_, s.addr);
        auto p = sysfs::probe(cs);
        if (!p) {
            return;
        }
        s.resource = std::move(p->resource);
        s.config_size = p->config_size;
        s.vpd_cap = p->vpd_cap;
    }

    pcifront::Device*& front_;
    std::vector<Slot> slots_;  // index = inode slot; never reused, so inodes stay stable
};

SysfsTree& tree_of(fuse_req_t req) { return *static_cast<SysfsTree*>(fuse_req_userdata(req)); }

const fuse_lowlevel_ops kTreeOps = [] {
    fuse_lowlevel_ops o{};
    o.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) { tree_of(req).lookup(req, parent, name); };
    o.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) { tree_of(req).getattr(req, ino); };
    o.readdir = [](fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*) {
        tree_of(req).readdir(req, ino, size, off);
    };
    o.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { tree_of(req).open(req, ino, fi); };
    o.read = [](fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*) {
        tree_of(req).read(req, ino, size, off);
    };
    o.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, std::size_t size, off_t off, fuse_file_info*) {
        tree_of(req).write(req, ino, buf, size, off);
    };
    return o;
}();

/// device/pci/0 through libpcifront (hot-plug included), and the sysfs tree over it.
class PciBus final : public DeviceKind {
public:
    explicit PciBus(Context& ctx) : ctx_(ctx), dir_(ctx.home + "/device/pci") {}
    const char* name() const noexcept override { return "pci"; }

    Result<void> start() override {
        auto w = ctx_.xs.watch_scoped(dir_, kWatchToken);
        if (!w) {
            return fail(w.error());
        }
        watch_.emplace(std::move(*w));
        if (!ctx_.pci_sysfs.empty()) {
            if (ctx_.mount_ns == nullptr) {
                return fail_errno(EINVAL);
            }
            tree_ = std::make_unique<SysfsTree>(raw_);
            auto m = FuseMount::mount(*ctx_.mount_ns, ctx_.pci_sysfs.string(), true, "hvpci", kTreeOps, tree_.get());
            if (!m) {
                return fail(m.error());
            }
            mount_ = std::move(*m);
        }
        try_create();
        initial_ = front_ != nullptr;
        return {};
    }

    bool on_watch(const xs::WatchEvent& ev) override {
        if (ev.token == kWatchToken) {
            try_create();
            return true;
        }
        if (front_ && ev.token == front_->watch_token()) {
            state_change();
            return true;
        }
        return false;
    }

    void poll_fds(std::vector<pollfd>& out) override {
        if (mount_ && !mount_->dead()) {
            out.push_back({mount_->fd(), POLLIN, 0});
        }
    }
    void handle(std::span<const pollfd> fds) override {
        if (!mount_) {
            return;
        }
        for (const auto& p : fds) {
            if (p.fd == mount_->fd() && p.revents != 0) {
                mount_->handle(p.revents);
            }
        }
    }
    bool ready() const override {
        const bool connected = front_ && front_->phase() == pcifront::Phase::connected;
        if (ctx_.wait_pci > 0) {  // bounded by --connect-timeout like the disks
            return connected && front_->devices().size() >= ctx_.wait_pci;
        }
        return !initial_ || failed_ || connected;
    }
    void env(std::vector<std::string>& out) const override {
        if (mount_) {
            out.push_back("HV_PCI_SYSFS=" + mount_->path());
        }
    }

private:
    void try_create() {
        if (front_) {
            return;
        }
        if (!ctx_.xs.read(dir_ + "/0/backend")) {
            return;  // no bus (yet)
        }
        auto d = pcifront::Device::create(ctx_.hv, ctx_.xs, 0);
        if (!d) {
            HV_WARN("hv-guest: pci: %s", d.error().message().c_str());
            failed_ = true;
            return;
        }
        front_ = std::move(*d);
        raw_ = front_.get();
        failed_ = false;
        state_change();
    }

    void state_change() {
        auto r = front_->on_state_change();
        const auto phase = front_->phase();
        if (!r || phase == pcifront::Phase::dead || phase == pcifront::Phase::closed) {
            if (!r) {
                HV_WARN("hv-guest: pci: %s", r.error().message().c_str());
            }
            if (phase == pcifront::Phase::dead || phase == pcifront::Phase::closed) {
                failed_ = true;
                raw_ = nullptr;
                front_.reset();  // a bus attached again later is a new Device
            }
        }
        if (front_ && front_->generation() != generation_) {
            generation_ = front_->generation();
            HV_INFO("hv-guest: pci: %zu device(s)", front_->devices().size());
        }
        if (tree_) {
            tree_->sync();
        }
    }

    Context& ctx_;
    std::string dir_;
    std::optional<xs::ScopedWatch> watch_;
    std::unique_ptr<pcifront::Device> front_;
    pcifront::Device* raw_ = nullptr;  // what the tree uses (null while there is no bus)
    std::uint64_t generation_ = 0;
    bool initial_ = false;
    bool failed_ = false;
    std::unique_ptr<SysfsTree> tree_;
    std::unique_ptr<FuseMount> mount_;  // destroyed before tree_
};

}  // namespace

std::unique_ptr<DeviceKind> make_pci(Context& ctx) { return std::make_unique<PciBus>(ctx); }

}  // namespace hv::guest
