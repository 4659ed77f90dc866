// blkback end-to-end harness implementation (see e2e_harness.hpp).
#include "e2e_harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>

#include "donor_channel.hpp"
#include "hv/rings/ring.hpp"

namespace hv::blk::test {

namespace {
using rings::RING_IDX;

rings::SringHeader& header(std::byte* mem) { return *reinterpret_cast<rings::SringHeader*>(mem); }

template <class T>
void append(std::vector<std::byte>& out, const T& v) {
    // resize and memcpy, not insert: g++ 12 at -O1 sees a memmove into a zero-sized region in
    // vector::insert's inlined growth path (-Wstringop-overflow, a false positive).
    const std::size_t at = out.size();
    out.resize(at + sizeof v);
    std::memcpy(out.data() + at, &v, sizeof v);
}
}  // namespace

// ---- Env ----

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

std::string Env::image(const std::string& name, std::uint64_t bytes) {
    const std::string p = (dir / name).string();
    const int fd = ::open(p.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
    ::close(fd);
    return p;
}

// ---- Guest ----

Guest::Guest(Env& e, const std::string& name, std::uint64_t pages) : env(e) {
    const std::string path = (env.dir / (name + ".sock")).string();
    UniqueFd listen = hv::test::listen_for_donor(path);
    hvmin::DomainConfig cfg;
    cfg.name = name;
    cfg.memory_pages = pages;
    cfg.argv = {BLKBACK_E2E_DONOR, path};
    auto d = env.ts->create(cfg);
    REQUIRE(d);
    domid = *d;
    auto s = hvmin::Services::attach_fd(hv::test::receive_donated_channel(listen.get(), donor_));
    REQUIRE(s);
    svc.emplace(std::move(*s));
    REQUIRE(svc->domid() == domid);
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
    donor_.reset();  // the donor exits: the domain dies
    (void)env.ts->wait_for_death(domid, 10s);
    svc.reset();
}

std::uint64_t Guest::alloc_frame() {
    REQUIRE(next_frame_ < svc->memory().initial_frames());
    return next_frame_++;
}

std::byte* Guest::frame_ptr(std::uint64_t frame) {
    auto p = svc->memory().frame(frame);
    REQUIRE(p);
    return *p;
}

// ---- Vbd ----

Vbd::Vbd(Env& e, Guest& g, std::uint32_t id, const std::string& params, VbdOptions o,
         std::map<std::string, std::string> extra)
    : env(e), guest(g), devid(id), o_(std::move(o)) {
    xenbus::DeviceSpec spec;
    spec.type = "vbd";
    spec.frontend = g.domid;
    spec.backend = o_.backend;
    spec.devid = id;
    spec.backend_keys = {{"params", params}, {"type", "file"}, {"mode", o_.mode},
                         {"dev", "xvda"}, {"device-type", "disk"}};
    for (auto& [k, v] : extra) {
        spec.backend_keys[k] = v;
    }
    spec.frontend_keys = {{"virtual-device", std::to_string(id)}, {"device-type", "disk"}};
    REQUIRE(xenbus::create_device(*env.xs, spec));
}

Vbd::~Vbd() {
    queues_.clear();
    (void)xenbus::remove_device(*env.xs, o_.backend, "vbd", guest.domid, devid);
}

std::string Vbd::bdir() const { return xenbus::backend_dir(o_.backend, "vbd", guest.domid, devid); }
std::string Vbd::fdir() const { return xenbus::frontend_dir(guest.domid, "vbd", devid); }

bool Vbd::wait_backend(XenbusState s, std::chrono::milliseconds timeout) {
    return wait_key("state", std::to_string(static_cast<int>(s)), timeout);
}

bool Vbd::wait_key(const std::string& key, const std::string& value,
                   std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    static std::atomic<unsigned> seq{0};
    const std::string path = bdir() + "/" + key;
    auto w = env.xs->watch_scoped(path, "wait" + std::to_string(seq++));
    REQUIRE(w);
    for (;;) {
        auto v = env.xs->read(path);
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

std::string Vbd::backend_key(const std::string& key) {
    auto v = env.xs->read(bdir() + "/" + key);
    return v ? *v : std::string("<absent>");
}

void Vbd::set_state(XenbusState s) { REQUIRE(xenbus::switch_state(*guest.xs, fdir(), s)); }

void Vbd::connect(XenbusState reached) {
    REQUIRE(wait_backend(XenbusState::XenbusStateInitWait));
    abi_native_ = o_.protocol == nullptr ? false : std::string(o_.protocol) != "x86_32-abi";
    const unsigned pages = 1U << o_.ring_order;
    ring_size_ = rings::ring_entries(std::size_t{pages} * 4096, entry_size());
    queues_.clear();
    queues_.resize(o_.queues);
    for (auto& q : queues_) {
        auto first = guest.svc->memory().alloc_extent(pages);
        REQUIRE(first);
        q.mem = guest.frame_ptr(*first);
        for (unsigned i = 0; i < pages; ++i) {
            REQUIRE(guest.frame_ptr(*first + i) == q.mem + std::size_t{i} * 4096);
            auto r = guest.svc->grants().grant_access(o_.backend, *first + i, false);
            REQUIRE(r);
            q.refs.push_back(*r);
        }
        std::memset(q.mem, 0, std::size_t{pages} * 4096);
        auto& h = header(q.mem);
        h.req_event = 1;
        h.rsp_event = 1;
        auto ch = guest.svc->evtchn().alloc_unbound(o_.backend);
        REQUIRE(ch);
        q.evtchn = std::move(*ch);
    }
    auto w = guest.xs->transaction([&](xs::TxId tx) -> Result<void> {
        const std::string d = fdir();
        const bool order_key = o_.ring_order > 0 || o_.write_order_key;
        if (order_key) {
            HV_TRY(guest.xs->write(d + "/ring-page-order", std::to_string(o_.ring_order), tx));
        }
        if (o_.queues > 1) {
            HV_TRY(guest.xs->write(d + "/multi-queue-num-queues", std::to_string(o_.queues), tx));
        }
        for (unsigned qi = 0; qi < o_.queues; ++qi) {
            const std::string qd = o_.queues > 1 ? d + "/queue-" + std::to_string(qi) : d;
            auto& q = queues_[qi];
            for (std::size_t i = 0; i < q.refs.size(); ++i) {
                const std::string key = order_key ? "/ring-ref" + std::to_string(i) : "/ring-ref";
                HV_TRY(guest.xs->write(qd + key, std::to_string(q.refs[i].get()), tx));
            }
            HV_TRY(guest.xs->write(qd + "/event-channel", std::to_string(q.evtchn.port().get()), tx));
        }
        if (o_.protocol != nullptr) {
            HV_TRY(guest.xs->write(d + "/protocol", o_.protocol, tx));
        }
        HV_TRY(guest.xs->write(d + "/feature-persistent", o_.persistent ? "1" : "0", tx));
        return {};
    });
    REQUIRE(w);
    set_state(XenbusState::XenbusStateInitialised);
    REQUIRE(wait_backend(reached));
}

void Vbd::drop_rings() {
    set_state(XenbusState::XenbusStateInitialising);
    REQUIRE(wait_backend(XenbusState::XenbusStateInitWait));
    for (auto& q : queues_) {
        for (GrantRef r : q.refs) {
            CHECK(guest.svc->grants().end_access(r));  // the backend unmapped the ring
        }
    }
    queues_.clear();
}

Page Vbd::page(bool readonly) {
    const std::uint64_t f = guest.alloc_frame();
    auto r = guest.svc->grants().grant_access(o_.backend, f, readonly);
    REQUIRE(r);
    return Page{f, *r, guest.frame_ptr(f)};
}

std::vector<std::byte> Vbd::rw(std::uint8_t op, std::uint64_t id, std::uint64_t sector,
                               const std::vector<rings::blkif_request_segment>& segs,
                               std::uint8_t nr_override) {
    std::vector<std::byte> out;
    const auto nr = nr_override != 0xFF ? nr_override : static_cast<std::uint8_t>(segs.size());
    if (native()) {
        rings::blkif_request r{};
        r.operation = op;
        r.nr_segments = nr;
        r.id = id;
        r.sector_number = sector;
        for (std::size_t i = 0; i < segs.size() && i < 11; ++i) {
            r.seg[i] = segs[i];
        }
        append(out, r);
    } else {
        rings::blkif_x86_32_request r{};
        r.operation = op;
        r.nr_segments = nr;
        r.id = id;
        r.sector_number = sector;
        for (std::size_t i = 0; i < segs.size() && i < 11; ++i) {
            r.seg[i] = segs[i];
        }
        append(out, r);
    }
    return out;
}

std::vector<std::byte> Vbd::discard(std::uint64_t id, std::uint64_t sector, std::uint64_t nr,
                                    std::uint8_t flag) {
    std::vector<std::byte> out;
    if (native()) {
        rings::blkif_request_discard r{};
        r.operation = rings::BLKIF_OP_DISCARD;
        r.flag = flag;
        r.id = id;
        r.sector_number = sector;
        r.nr_sectors = nr;
        append(out, r);
    } else {
        rings::blkif_x86_32_request_discard r{};
        r.operation = rings::BLKIF_OP_DISCARD;
        r.flag = flag;
        r.id = id;
        r.sector_number = sector;
        r.nr_sectors = nr;
        append(out, r);
    }
    return out;
}

std::vector<std::byte> Vbd::indirect(std::uint8_t indirect_op, std::uint64_t id,
                                     std::uint64_t sector, std::uint16_t nr_segments,
                                     const std::vector<GrantRef>& pages) {
    std::vector<std::byte> out;
    if (native()) {
        rings::blkif_request_indirect r{};
        r.operation = rings::BLKIF_OP_INDIRECT;
        r.indirect_op = indirect_op;
        r.nr_segments = nr_segments;
        r.id = id;
        r.sector_number = sector;
        for (std::size_t i = 0; i < pages.size() && i < 8; ++i) {
            r.indirect_grefs[i] = pages[i].get();
        }
        append(out, r);
    } else {
        rings::blkif_x86_32_request_indirect r{};
        r.operation = rings::BLKIF_OP_INDIRECT;
        r.indirect_op = indirect_op;
        r.nr_segments = nr_segments;
        r.id = id;
        r.sector_number = sector;
        for (std::size_t i = 0; i < pages.size() && i < 8; ++i) {
            r.indirect_grefs[i] = pages[i].get();
        }
        append(out, r);
    }
    return out;
}

void Vbd::put(unsigned qi, const std::vector<std::byte>& req) {
    auto& q = queues_.at(qi);
    REQUIRE(req.size() <= entry_size());
    REQUIRE(q.req_prod_pvt - q.rsp_cons < ring_size_);
    std::byte* slot = q.mem + 64 + std::size_t{q.req_prod_pvt & (ring_size_ - 1)} * entry_size();
    std::memset(slot, 0, entry_size());
    std::memcpy(slot, req.data(), req.size());
    ++q.req_prod_pvt;
}

void Vbd::push(unsigned qi) {
    auto& q = queues_.at(qi);
    // ORDER: release pairs with the backend's acquire load of req_prod. Always notify
    // (spurious events are legal).
    rings::detail::store_release(header(q.mem).req_prod, q.req_prod_pvt);
    REQUIRE(q.evtchn.notify());
}

void Vbd::set_req_prod(unsigned qi, std::uint32_t v) {
    auto& q = queues_.at(qi);
    rings::detail::store_release(header(q.mem).req_prod, v);
    REQUIRE(q.evtchn.notify());
}

std::vector<Response> Vbd::responses(unsigned qi, std::size_t n, std::chrono::milliseconds timeout) {
    auto& q = queues_.at(qi);
    auto& h = header(q.mem);
    std::vector<Response> out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < n) {
        const RING_IDX prod = rings::detail::load_acquire(h.rsp_prod);
        if (prod != q.rsp_cons) {
            REQUIRE(static_cast<RING_IDX>(prod - q.rsp_cons) <= ring_size_);
            while (q.rsp_cons != prod) {
                const std::byte* slot =
                    q.mem + 64 + std::size_t{q.rsp_cons & (ring_size_ - 1)} * entry_size();
                Response r{};
                std::memcpy(&r.id, slot, 8);
                std::memcpy(&r.operation, slot + 8, 1);
                std::memcpy(&r.status, slot + 10, 2);
                out.push_back(r);
                ++q.rsp_cons;
            }
            continue;
        }
        rings::detail::store_relaxed(h.rsp_event, q.rsp_cons + 1);
        // ORDER: pairs with the backend's fence between rsp_prod store and rsp_event load.
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (rings::detail::load_acquire(h.rsp_prod) != q.rsp_cons) {
            continue;
        }
        const auto left = deadline - std::chrono::steady_clock::now();
        if (left <= 0ms) {
            break;
        }
        (void)q.evtchn.wait(std::chrono::duration_cast<std::chrono::milliseconds>(left) + 1ms);
        (void)q.evtchn.ack();
    }
    return out;
}

Response Vbd::submit(unsigned q, const std::vector<std::byte>& req) {
    put(q, req);
    push(q);
    auto r = responses(q, 1);
    REQUIRE(r.size() == 1);
    return r[0];
}

std::vector<std::byte> read_file(const std::string& path, std::uint64_t off, std::size_t len) {
    std::vector<std::byte> out(len);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::pread(fd, out.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
    ::close(fd);
    return out;
}

void fill(std::byte* p, std::size_t len, std::uint32_t seed) {
    std::uint32_t x = seed * 2654435761U + 1;
    for (std::size_t i = 0; i < len; ++i) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = static_cast<std::byte>(x);
    }
}

void write_read_check(Vbd& v, const std::string& image, unsigned q, std::uint64_t sector,
                      unsigned pages, std::uint32_t seed) {
    std::vector<Page> wp;
    std::vector<rings::blkif_request_segment> segs;
    for (unsigned i = 0; i < pages; ++i) {
        wp.push_back(v.page());
        fill(wp.back().data, 4096, seed + i);
        segs.push_back(seg(wp.back().gref));
    }
    auto r = v.submit(q, v.rw(rings::BLKIF_OP_WRITE, 7000 + seed, sector, segs));
    CHECK(r.id == 7000 + seed);
    CHECK(r.operation == rings::BLKIF_OP_WRITE);
    REQUIRE(r.status == rings::BLKIF_RSP_OKAY);
    const auto file = read_file(image, sector * 512, std::size_t{pages} * 4096);
    for (unsigned i = 0; i < pages; ++i) {
        REQUIRE(std::memcmp(file.data() + std::size_t{i} * 4096, wp[i].data, 4096) == 0);
    }
    std::vector<Page> rp;
    segs.clear();
    for (unsigned i = 0; i < pages; ++i) {
        rp.push_back(v.page());
        std::memset(rp.back().data, 0xEE, 4096);
        segs.push_back(seg(rp.back().gref));
    }
    r = v.submit(q, v.rw(rings::BLKIF_OP_READ, 9000 + seed, sector, segs));
    CHECK(r.id == 9000 + seed);
    CHECK(r.operation == rings::BLKIF_OP_READ);
    REQUIRE(r.status == rings::BLKIF_RSP_OKAY);
    for (unsigned i = 0; i < pages; ++i) {
        REQUIRE(std::memcmp(rp[i].data, wp[i].data, 4096) == 0);
    }
}


rings::blkif_request_segment seg(GrantRef g, std::uint8_t first, std::uint8_t last) {
    rings::blkif_request_segment s{};
    s.gref = g.get();
    s.first_sect = first;
    s.last_sect = last;
    return s;
}

}  // namespace hv::blk::test
