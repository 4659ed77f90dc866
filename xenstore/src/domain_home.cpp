// Core::make_domain_home: the toolstack's part of building a domain (libxl__domain_make) that
// hv-min performs when it creates a domain, so the domain can read its own home before its
// program runs. Done through an internal dom0 connection, so it follows the normal rules
// (permissions, quotas, watches fire as for any write).
#include <cerrno>
#include <cstring>
#include <string>

#include "xenstore/core.hpp"
#include "xenstore/wire.hpp"

namespace hv::xs {
namespace {

std::string message(MsgType type, const std::string& payload) {
    xsd_sockmsg h{};
    h.type = static_cast<std::uint32_t>(type);
    h.len = static_cast<std::uint32_t>(payload.size());
    std::string m(reinterpret_cast<const char*>(&h), sizeof h);
    return m + payload;
}

std::string nul(const std::string& s) { return s + '\0'; }

}  // namespace

Result<void> Core::make_domain_home(DomId domid, std::string_view name) {
    if (domid.get() == 0 || domid.get() >= DOMID_FIRST_RESERVED) {
        return fail_errno(EINVAL);
    }
    const std::string id = std::to_string(domid.get());
    const std::string home = "/local/domain/" + id;
    // SPEC: libxl_create.c — the home and device/, control/, memory/ are dom0's and readable
    // by the domain; data/, drivers/, feature/, attr/, error/ belong to the domain.
    const std::string ro = nul("n0") + nul("r" + id);
    const std::string rw = nul("n" + id);
    std::string batch;
    auto node = [&](const std::string& path, const std::string& perms) {
        batch += message(MsgType::XS_MKDIR, nul(path));
        batch += message(MsgType::XS_SET_PERMS, nul(path) + perms);
    };
    node(home, ro);
    for (const char* sub : {"device", "control", "memory"}) {
        node(home + "/" + sub, ro);
    }
    for (const char* sub : {"data", "drivers", "feature", "attr", "error"}) {
        node(home + "/" + sub, rw);
    }
    batch += message(MsgType::XS_WRITE, nul(home + "/domid") + id);
    if (!name.empty()) {
        batch += message(MsgType::XS_WRITE, nul(home + "/name") + std::string(name));
    }

    const ConnId conn = connect(DomId(0));
    auto fed = feed(conn, batch);
    // Every reply must be a success: scan the queued replies for XS_ERROR.
    bool ok = fed.has_value();
    std::string_view out = output(conn);
    while (ok && out.size() >= sizeof(xsd_sockmsg)) {
        xsd_sockmsg h{};
        std::memcpy(&h, out.data(), sizeof h);
        if (h.type == static_cast<std::uint32_t>(MsgType::XS_ERROR)) {
            ok = false;
        }
        const std::size_t whole = sizeof h + h.len;
        if (whole > out.size()) {
            break;
        }
        out.remove_prefix(whole);
    }
    disconnect(conn);
    if (!ok) {
        return fail_errno(EIO);
    }
    return {};
}

}  // namespace hv::xs
