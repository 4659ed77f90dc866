// Toolstack client: create/destroy/list/wait over a dom0 connection. Layer: hv-min (L1).
#include "hvmin/toolstack.hpp"

#include <cstring>

#include "transport.hpp"

namespace hv::hvmin {

namespace {
template <class T>
std::span<const std::byte> as_bytes_of(const T& v) {
    return {reinterpret_cast<const std::byte*>(&v), sizeof v};
}
Result<Channel::Reply> checked(Result<Channel::Reply> r) {
    if (!r) {
        return r;
    }
    if (r->hdr.rc != 0) {
        return fail_errno(-r->hdr.rc);
    }
    return r;
}
}  // namespace

Result<Toolstack> Toolstack::connect(const std::filesystem::path& rundir) {
    auto s = Services::connect_dom0(rundir);
    if (!s) {
        return fail(s.error());
    }
    return Toolstack(std::move(*s), rundir);
}

Result<DomId> Toolstack::create(const DomainConfig& cfg) {
    std::string strings;
    auto put = [&](const std::string& s) {
        strings += s;
        strings.push_back('\0');
    };
    if (cfg.name.find('\0') != std::string::npos || cfg.argv.empty() ||
        cfg.memory_pages > 0xFFFFFFFFull) {
        return fail_errno(EINVAL);
    }
    put(cfg.name);
    for (const auto& a : cfg.argv) {
        put(a);
    }
    for (const auto& e : cfg.env) {
        put(e);
    }
    wire::CreateRequest cr{};
    cr.mem_pages = static_cast<std::uint32_t>(cfg.memory_pages);
    cr.flags = (cfg.trusted ? wire::kCreateTrusted : 0) | (cfg.driver_domain ? wire::kCreateDriverDomain : 0);
    cr.argc = static_cast<std::uint32_t>(cfg.argv.size());
    cr.envc = static_cast<std::uint32_t>(cfg.env.size());
    cr.gnttab_frames = cfg.gnttab_frames;
    cr.strings_len = static_cast<std::uint32_t>(strings.size());
    std::vector<std::byte> body(sizeof cr + strings.size());
    std::memcpy(body.data(), &cr, sizeof cr);
    std::memcpy(body.data() + sizeof cr, strings.data(), strings.size());
    if (body.size() + sizeof(wire::Header) > wire::kMaxMessage) {
        return fail_errno(E2BIG);
    }
    auto r = checked(svc_.channel().call(wire::Op::domain_create, 1, body));
    if (!r) {
        return fail(r.error());
    }
    if (r->body.size() != sizeof(wire::DomainInfo)) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::DomainInfo info;
    std::memcpy(&info, r->body.data(), sizeof info);
    return DomId(info.domid);
}

Result<void> Toolstack::destroy(DomId domid) {
    wire::DomainRef ref{domid.get(), 0, 0};
    auto r = checked(svc_.channel().call(wire::Op::domain_destroy, 1, as_bytes_of(ref)));
    if (!r) {
        return fail(r.error());
    }
    return {};
}

Result<std::vector<DomainStatus>> Toolstack::list() {
    auto r = checked(svc_.channel().call(wire::Op::domain_list, 0, {}));
    if (!r) {
        return fail(r.error());
    }
    if (r->body.size() != r->hdr.count * sizeof(wire::DomainInfo)) {
        return fail(make_error_code(Errc::protocol));
    }
    std::vector<DomainStatus> out;
    for (std::uint32_t i = 0; i < r->hdr.count; ++i) {
        wire::DomainInfo info;
        std::memcpy(&info, r->body.data() + i * sizeof info, sizeof info);
        info.name[sizeof info.name - 1] = '\0';
        DomainStatus s;
        s.domid = DomId(info.domid);
        s.name = info.name;
        s.memory_pages = info.mem_pages;
        s.state = static_cast<wire::DomainState>(info.state);
        s.cpu_time_ns = info.cpu_time_ns;
        s.pid = info.pid;
        s.trusted = (info.flags & wire::kCreateTrusted) != 0;
        s.driver_domain = (info.flags & wire::kCreateDriverDomain) != 0;
        out.push_back(std::move(s));
    }
    return out;
}

Result<DomainDeath> Toolstack::wait_for_death(DomId domid, std::chrono::milliseconds timeout) {
    // Its own connection: the reply is deferred until the death, and must not hold up others.
    auto fd = transport::connect_control(rundir_);
    if (!fd) {
        return fail(fd.error());
    }
    Channel ch(std::move(*fd));
    wire::DomainRef ref{domid.get(), 0, 0};
    auto r = checked(ch.call(wire::Op::domain_wait, 1, as_bytes_of(ref), {},
                             static_cast<int>(timeout.count())));
    if (!r) {
        return fail(r.error());
    }
    if (r->body.size() != sizeof(wire::DeathInfo)) {
        return fail(make_error_code(Errc::protocol));
    }
    wire::DeathInfo d;
    std::memcpy(&d, r->body.data(), sizeof d);
    return DomainDeath{DomId(d.domid), static_cast<wire::DeathReason>(d.reason), d.status};
}

Result<EventChannelBinding> Toolstack::watch_deaths() {
    return svc_.evtchn().bind_virq(rings::VIRQ_DOM_EXC);
}

}  // namespace hv::hvmin
