// xenbus conventions over the XenStore client. See xenbus.hpp.
#include "xenbus/xenbus.hpp"

#include <cerrno>
#include <charconv>
#include <string>

#include "hv/log.hpp"

namespace hv::xenbus {
namespace {

bool is_errno(const std::error_code& ec, int e) {
    return ec == std::error_code(e, std::system_category());
}

std::string dom_str(DomId d) { return std::to_string(d.get()); }

/// The device directory relative to the reporter's home, or the full path if it is not below.
std::string relative_to_home(DomId reporter, std::string_view dir) {
    const std::string home = domain_path(reporter) + "/";
    if (dir.substr(0, home.size()) == home) {
        return std::string(dir.substr(home.size()));
    }
    while (!dir.empty() && dir.front() == '/') {
        dir.remove_prefix(1);
    }
    return std::string(dir);
}

}  // namespace

std::string domain_path(DomId domid) { return "/local/domain/" + dom_str(domid); }

std::string frontend_dir(DomId frontend, std::string_view type, std::uint32_t devid) {
    return domain_path(frontend) + "/device/" + std::string(type) + "/" + std::to_string(devid);
}

std::string backend_dir(DomId backend, std::string_view type, DomId frontend,
                        std::uint32_t devid) {
    return domain_path(backend) + "/backend/" + std::string(type) + "/" + dom_str(frontend) +
           "/" + std::to_string(devid);
}

Result<XenbusState> read_state(xs::Client& xs, std::string_view dir) {
    auto v = xs.read(std::string(dir) + "/state");
    if (!v) {
        if (is_errno(v.error(), ENOENT)) {
            return rings::XenbusStateUnknown;
        }
        return fail(v.error());
    }
    // GUEST: the peer writes this node; every text maps to a valid state.
    return rings::parse_xenbus_state(*v);
}

Result<bool> switch_state(xs::Client& xs, std::string_view dir, XenbusState state) {
    const std::string node = std::string(dir) + "/state";
    const std::string text = std::to_string(static_cast<int>(state));
    return xs.transaction([&](xs::TxId tx) -> Result<bool> {
        auto cur = xs.read(node, tx);
        if (!cur) {
            if (is_errno(cur.error(), ENOENT)) {
                return false;  // SPEC: never resurrect a removed device directory
            }
            return fail(cur.error());
        }
        if (*cur == text) {
            return true;
        }
        HV_TRY(xs.write(node, text, tx));
        return true;
    });
}

Result<bool> write_keys(xs::Client& xs, std::string_view dir,
                        const std::vector<std::pair<std::string, std::string>>& kv) {
    const std::string base(dir);
    return xs.transaction([&](xs::TxId tx) -> Result<bool> {
        auto st = read_optional(xs, base + "/state", tx);
        if (!st) {
            return fail(st.error());
        }
        if (!*st) {
            return false;  // SPEC: never resurrect a removed device directory
        }
        for (const auto& [k, v] : kv) {
            HV_TRY(xs.write(base + "/" + k, v, tx));
        }
        return true;
    });
}

int errno_of(const std::error_code& ec) noexcept {
    return ec.category() == std::system_category() ? ec.value() : EIO;
}

Result<std::optional<std::string>> read_optional(xs::Client& xs, std::string_view path,
                                                 xs::TxId tx) {
    auto v = xs.read(path, tx);
    if (!v) {
        if (is_errno(v.error(), ENOENT)) {
            return std::optional<std::string>();
        }
        return fail(v.error());
    }
    return std::optional<std::string>(std::move(*v));
}

Result<std::uint64_t> parse_uint(std::string_view text, std::uint64_t max) {
    std::uint64_t v = 0;
    const char* first = text.data();
    const char* last = first + text.size();
    auto [ptr, ec] = std::from_chars(first, last, v, 10);
    if (text.empty() || ptr != last) {
        return fail_errno(EINVAL);
    }
    if (ec == std::errc::result_out_of_range || v > max) {
        return fail_errno(ERANGE);
    }
    if (ec != std::errc{}) {
        return fail_errno(EINVAL);
    }
    return v;
}

Result<std::uint64_t> read_uint(xs::Client& xs, std::string_view path, std::uint64_t max,
                                xs::TxId tx) {
    auto v = xs.read(path, tx);
    if (!v) {
        return fail(v.error());
    }
    return parse_uint(*v, max);
}

void report_error(xs::Client& xs, DomId reporter, std::string_view device_dir, int err,
                  std::string_view message) {
    const std::string node =
        domain_path(reporter) + "/error/" + relative_to_home(reporter, device_dir) + "/error";
    const std::string text = std::to_string(err) + " " + std::string(message);
    HV_WARN("%.*s: %s", static_cast<int>(device_dir.size()), device_dir.data(), text.c_str());
    if (auto r = xs.write(node, text); !r) {
        HV_WARN("cannot write %s: %s", node.c_str(), r.error().message().c_str());
    }
}

void clear_error(xs::Client& xs, DomId reporter, std::string_view device_dir) {
    const std::string node = domain_path(reporter) + "/error/" + relative_to_home(reporter, device_dir);
    (void)xs.rm(node);
}

Result<std::vector<DeviceRef>> list_backend_devices(xs::Client& xs, DomId backend,
                                                    std::string_view type) {
    std::vector<DeviceRef> out;
    const std::string base = domain_path(backend) + "/backend/" + std::string(type);
    auto fes = xs.directory(base);
    if (!fes) {
        if (is_errno(fes.error(), ENOENT)) {
            return out;
        }
        return fail(fes.error());
    }
    for (const auto& fe : *fes) {
        auto fe_id = parse_uint(fe, 0x7FEF);
        if (!fe_id) {
            continue;
        }
        auto devs = xs.directory(base + "/" + fe);
        if (!devs) {
            continue;  // removed meanwhile
        }
        for (const auto& d : *devs) {
            if (auto id = parse_uint(d, UINT32_MAX)) {
                out.push_back({DomId(static_cast<std::uint16_t>(*fe_id)),
                               static_cast<std::uint32_t>(*id)});
            }
        }
    }
    return out;
}

std::optional<DeviceRef> device_of_backend_path(std::string_view path, DomId backend,
                                                std::string_view type) {
    const std::string base = domain_path(backend) + "/backend/" + std::string(type) + "/";
    if (path.substr(0, base.size()) != base) {
        return std::nullopt;
    }
    path.remove_prefix(base.size());
    const auto slash = path.find('/');
    if (slash == std::string_view::npos) {
        return std::nullopt;
    }
    auto fe = parse_uint(path.substr(0, slash), 0x7FEF);
    path.remove_prefix(slash + 1);
    const auto end = path.find('/');
    auto dev = parse_uint(path.substr(0, end), UINT32_MAX);
    if (!fe || !dev) {
        return std::nullopt;
    }
    return DeviceRef{DomId(static_cast<std::uint16_t>(*fe)), static_cast<std::uint32_t>(*dev)};
}

Result<std::optional<XenbusState>> backend_state_unless_removed(xs::Client& xs,
                                                                std::string_view fdir,
                                                                std::string_view bdir) {
    auto own = read_optional(xs, std::string(fdir) + "/state");
    if (!own) {
        return fail(own.error());
    }
    if (!*own) {
        return std::optional<XenbusState>();
    }
    auto bs = read_state(xs, bdir);
    if (!bs) {
        return fail(bs.error());
    }
    return std::optional<XenbusState>(*bs);
}

Result<void> wait_connected(xs::Client& xs, const FrontendWait& wait,
                            std::chrono::milliseconds timeout,
                            const std::function<void(const std::string&, const std::string&)>& other) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    HV_TRY(wait.on_change());
    for (;;) {
        auto done = wait.connected();
        if (!done) {
            return fail(done.error());
        }
        if (*done) {
            return {};
        }
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) {
            return fail(wait.timed_out);
        }
        auto ev = xs.wait_event(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
        if (!ev) {
            return fail(is_errno(ev.error(), ETIMEDOUT) ? wait.timed_out : ev.error());
        }
        if (ev->token == wait.token) {
            HV_TRY(wait.on_change());
        } else if (other) {
            other(ev->path, ev->token);
        }
    }
}

Result<void> create_device(xs::Client& xs, const DeviceSpec& spec) {
    const std::string& fe_type = spec.frontend_type.empty() ? spec.type : spec.frontend_type;
    const std::string fdir = frontend_dir(spec.frontend, fe_type, spec.devid);
    const std::string bdir = backend_dir(spec.backend, spec.type, spec.frontend, spec.devid);
    // SPEC: libxl_device.c — each side owns its directory and the other may read it.
    const std::vector<xs::Permission> fperms{{spec.frontend, xs::Access::none},
                                             {spec.backend, xs::Access::read}};
    const std::vector<xs::Permission> bperms{{spec.backend, xs::Access::none},
                                             {spec.frontend, xs::Access::read}};
    return xs.transaction([&](xs::TxId tx) -> Result<void> {
        for (const auto& dir : {fdir, bdir}) {
            auto existing = read_optional(xs, dir, tx);
            if (!existing) {
                return fail(existing.error());
            }
            if (existing->has_value()) {
                return fail_errno(EEXIST);
            }
        }
        HV_TRY(xs.mkdir(fdir, tx));
        HV_TRY(xs.set_perms(fdir, fperms, tx));
        HV_TRY(xs.mkdir(bdir, tx));
        HV_TRY(xs.set_perms(bdir, bperms, tx));
        auto put = [&](const std::string& dir, const std::string& key,
                       const std::string& value) { return xs.write(dir + "/" + key, value, tx); };
        HV_TRY(put(fdir, "backend", bdir));
        HV_TRY(put(fdir, "backend-id", dom_str(spec.backend)));
        HV_TRY(put(fdir, "state", "1"));
        for (const auto& [k, v] : spec.frontend_keys) {
            HV_TRY(put(fdir, k, v));
        }
        HV_TRY(put(bdir, "frontend", fdir));
        HV_TRY(put(bdir, "frontend-id", dom_str(spec.frontend)));
        HV_TRY(put(bdir, "online", "1"));
        HV_TRY(put(bdir, "state", "1"));
        for (const auto& [k, v] : spec.backend_keys) {
            HV_TRY(put(bdir, k, v));
        }
        return {};
    });
}

Result<void> request_close(xs::Client& xs, DomId backend, std::string_view type, DomId frontend,
                           std::uint32_t devid) {
    const std::string bdir = backend_dir(backend, type, frontend, devid);
    return xs.transaction([&](xs::TxId tx) -> Result<void> {
        auto st = read_optional(xs, bdir + "/state", tx);
        if (!st) {
            return fail(st.error());
        }
        if (!st->has_value()) {
            return fail_errno(ENOENT);
        }
        HV_TRY(xs.write(bdir + "/online", "0", tx));
        if (rings::parse_xenbus_state(**st) != rings::XenbusStateClosed) {
            HV_TRY(xs.write(bdir + "/state", std::to_string(int{rings::XenbusStateClosing}), tx));
        }
        return {};
    });
}

Result<void> remove_device(xs::Client& xs, DomId backend, std::string_view type, DomId frontend,
                           std::uint32_t devid, std::string_view frontend_type) {
    const std::string fdir =
        frontend_dir(frontend, frontend_type.empty() ? type : frontend_type, devid);
    const std::string bdir = backend_dir(backend, type, frontend, devid);
    return xs.transaction([&](xs::TxId tx) -> Result<void> {
        for (const auto& dir : {fdir, bdir}) {
            if (auto r = xs.rm(dir, tx); !r && !is_errno(r.error(), ENOENT)) {
                return r;
            }
        }
        return {};
    });
}

}  // namespace hv::xenbus
