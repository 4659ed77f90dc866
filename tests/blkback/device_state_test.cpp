// BlkDevice's xenbus state machine: errors close only the vbd concerned (with an error node),
// skipped states, removal with online=0, the directory vanishing, a frontend dying mid-I/O,
// and the `blkback` program itself.
#include <signal.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "e2e_harness.hpp"
#include "hv/subprocess.hpp"

using namespace hv::blk::test;
using namespace hv::rings;
using hv::blk::BackendOptions;

namespace {

constexpr std::uint64_t kStateDisk = 4ULL << 20;

/// Waits for a condition that has no signal of its own (the backend's device table), bounded.
template <class F>
bool eventually(F&& pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

std::string error_node(Env& env, Vbd& v) {
    auto e = env.xs->read("/local/domain/0/error/backend/vbd/" +
                          std::to_string(v.guest.domid.get()) + "/" + std::to_string(v.devid) +
                          "/error");
    return e ? *e : std::string();
}

void good_io(Vbd& v, const std::string& img, std::uint32_t seed) {
    Page p = v.page();
    fill(p.data, 4096, seed);
    REQUIRE(v.submit(0, v.rw(BLKIF_OP_WRITE, seed, 8, {seg(p.gref)})).status == BLKIF_RSP_OKAY);
    CHECK(std::memcmp(read_file(img, 8 * 512, 4096).data(), p.data, 4096) == 0);
}

}  // namespace

TEST_CASE("a backing file that cannot be opened closes that vbd with an error node",
          "[blkback][state]") {
    Env env;
    Guest g(env, "fe");
    const auto img = env.image("ok.img", kStateDisk);
    Vbd bad(env, g, 51712, (env.dir / "missing.img").string());
    Vbd ok(env, g, 51728, img);
    REQUIRE(bad.wait_backend(XenbusState::XenbusStateClosing));
    CHECK(error_node(env, bad).starts_with(std::to_string(ENOENT) + " "));
    ok.connect();
    good_io(ok, img, 1);
}

TEST_CASE("invalid frontend transport keys close the vbd, a clean restart reconnects",
          "[blkback][state][hostile]") {
    BackendOptions opt;
    opt.max_queues = 2;
    Env env(opt);
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    Vbd v(env, g, 51712, img);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    const std::string d = v.fdir();
    const auto which = GENERATE(0, 1, 2, 3, 4, 5, 6);
    INFO("case " << which);
    REQUIRE(g.xs->write(d + "/ring-ref", "9"));
    REQUIRE(g.xs->write(d + "/event-channel", "5"));
    REQUIRE(g.xs->write(d + "/protocol", "x86_64-abi"));
    switch (which) {
        case 0: REQUIRE(g.xs->write(d + "/ring-page-order", "5")); break;   // above max 4
        case 1: REQUIRE(g.xs->write(d + "/multi-queue-num-queues", "3")); break;  // above 2
        case 2: REQUIRE(g.xs->write(d + "/multi-queue-num-queues", "0")); break;
        case 3: REQUIRE(g.xs->write(d + "/protocol", "sparc-abi")); break;
        case 4: REQUIRE(g.xs->rm(d + "/ring-ref")); break;
        case 5: REQUIRE(g.xs->write(d + "/ring-ref", "12abc")); break;
        case 6: break;  // ring-ref 9 was never granted, port 5 not allocated
    }
    v.set_state(XenbusState::XenbusStateInitialised);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosing));
    CHECK_FALSE(error_node(env, v).empty());
    // The frontend closes and starts over with good keys.
    (void)g.xs->rm(d + "/ring-page-order");
    (void)g.xs->rm(d + "/multi-queue-num-queues");
    v.set_state(XenbusState::XenbusStateClosed);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosed));
    v.set_state(XenbusState::XenbusStateInitialising);
    v.connect();
    good_io(v, img, 2);
    CHECK(error_node(env, v).empty());  // cleared on a successful connect
}

TEST_CASE("a bad poll-us closes that vbd with an error node, a good one connects",
          "[blkback][state]") {
    Env env;
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    const std::string bad = GENERATE("abc", "1000001", "-1", "");
    INFO("poll-us '" << bad << "'");
    Vbd v(env, g, 51712, img, {}, {{"poll-us", bad}});
    v.connect(XenbusState::XenbusStateClosing);  // good rings and channel: only poll-us is bad
    const auto err = error_node(env, v);
    INFO("error node " << err);
    CHECK((err.starts_with(std::to_string(EINVAL) + " ") || err.starts_with(std::to_string(ERANGE) + " ")));
    Vbd ok(env, g, 51728, img, {}, {{"poll-us", "1000000"}});
    ok.connect();
    good_io(ok, img, 3);
}

TEST_CASE("a frontend that skips Initialised and goes straight to Connected is served",
          "[blkback][state]") {
    Env env;
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    Vbd v(env, g, 51712, img);
    v.connect();  // Initialised
    v.set_state(XenbusState::XenbusStateConnected);
    good_io(v, img, 3);
    // Closing twice in a row (double disconnect) and a direct Initialising.
    v.set_state(XenbusState::XenbusStateClosing);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosing));
    v.set_state(XenbusState::XenbusStateConnected);  // stale: the backend stays Closing
    v.set_state(XenbusState::XenbusStateClosing);
    v.set_state(XenbusState::XenbusStateClosed);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosed));
    v.set_state(XenbusState::XenbusStateInitialising);
    v.connect();
    good_io(v, img, 4);
}

TEST_CASE("online=0 removes the vbd once the frontend has closed", "[blkback][state]") {
    Env env;
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    Vbd v(env, g, 51712, img);
    v.connect();
    REQUIRE(env.backend->device_count() == 1);
    REQUIRE(hv::xenbus::request_close(*env.xs, hv::DomId(0), "vbd", g.domid, 51712));
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosing));
    good_io(v, img, 5);  // still served until the frontend lets go
    v.set_state(XenbusState::XenbusStateClosing);
    v.set_state(XenbusState::XenbusStateClosed);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosed));
    CHECK(eventually([&] { return env.backend->device_count() == 0; }));
}

TEST_CASE("a device directory removed while connected is torn down", "[blkback][state]") {
    Env env;
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    Vbd v(env, g, 51712, img);
    v.connect();
    REQUIRE(hv::xenbus::remove_device(*env.xs, hv::DomId(0), "vbd", g.domid, 51712));
    CHECK(eventually([&] { return env.backend->device_count() == 0; }));
    CHECK_FALSE(env.xs->read(v.bdir() + "/state"));  // never resurrected
}

TEST_CASE("a frontend that dies with I/O in flight leaves the backend serving others",
          "[blkback][state]") {
    Env env;
    Guest survivor(env, "survivor");
    const auto img2 = env.image("b.img", kStateDisk);
    Vbd vs(env, survivor, 51712, img2);
    vs.connect();
    {
        auto dying = std::make_unique<Guest>(env, "dying");
        const auto img = env.image("a.img", 64ULL << 20);
        auto v = std::make_unique<Vbd>(env, *dying, 51712, img, VbdOptions{.ring_order = 2});
        v->connect();
        std::vector<blkif_request_segment> segs;
        for (unsigned i = 0; i < 11; ++i) {
            segs.push_back(seg(v->page().gref));
        }
        for (unsigned i = 0; i < v->ring_size(); ++i) {
            v->put(0, v->rw(i % 2 ? BLKIF_OP_READ : BLKIF_OP_WRITE, i, std::uint64_t{i} * 88, segs));
        }
        v->push(0);
        dying->kill();  // mid-I/O: the domain's memory, grants and channels go away
        v.reset();      // the toolstack removes the device directories
        CHECK(eventually([&] { return env.backend->device_count() == 1; }));
    }
    good_io(vs, img2, 6);
}

TEST_CASE("the blkback program serves vbds and disconnects them on SIGTERM",
          "[blkback][e2e][state]") {
    Env env(std::nullopt);
    auto p = hv::Subprocess::spawn({BLKBACK_PROGRAM, "--rundir", env.dir.str()}, {});
    REQUIRE(p);
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    Vbd v(env, g, 51712, img);
    v.connect();
    good_io(v, img, 7);
    p->signal(SIGTERM);
    auto st = p->wait(10000);
    REQUIRE(st);
    CHECK(*st == 0);
    // A restarted backend picks the connected vbd up again from its rings.
    auto p2 = hv::Subprocess::spawn({BLKBACK_PROGRAM, "--rundir", env.dir.str()}, {});
    REQUIRE(p2);
    v.set_state(XenbusState::XenbusStateClosing);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosing));
    v.set_state(XenbusState::XenbusStateClosed);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosed));
    v.set_state(XenbusState::XenbusStateInitialising);
    v.connect();
    good_io(v, img, 8);
    p2->signal(SIGTERM);
    auto st2 = p2->wait(10000);
    REQUIRE(st2);
    CHECK(*st2 == 0);
}

TEST_CASE("blkback rejects unknown arguments with usage", "[blkback][e2e]") {
    auto r = hv::run({BLKBACK_PROGRAM, "--bogus"}, 10000);
    REQUIRE(r);
    CHECK(r->exit_code == 2);
    r = hv::run({BLKBACK_PROGRAM, "--help"}, 10000);
    REQUIRE(r);
    CHECK(r->exit_code == 0);
    CHECK(r->output.find("--rundir") != std::string::npos);
}

TEST_CASE("blkback run as an isolated driver domain serves a vbd with grant copies",
          "[blkback][e2e]") {
    Env env(std::nullopt);
    hv::hvmin::DomainConfig cfg;
    cfg.name = "storage";
    cfg.memory_pages = 256;
    cfg.argv = {BLKBACK_PROGRAM, "--max-queues", "2"};
    cfg.driver_domain = true;  // not trusted: may not map the frontend's memory
    auto dd = env.ts->create(cfg);
    REQUIRE(dd);
    // The toolstack gives a driver domain its backend tree (libxl: the domain may read its home).
    const std::string tree = "/local/domain/" + std::to_string(dd->get()) + "/backend/vbd";
    REQUIRE(env.xs->mkdir(tree));
    REQUIRE(env.xs->set_perms(tree, {{*dd, hv::xs::Access::none}}));
    Guest g(env, "fe");
    const auto img = env.image("disk.img", kStateDisk);
    VbdOptions o;
    o.backend = *dd;
    Vbd v(env, g, 51712, img, o);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    CHECK(v.backend_key("feature-persistent") == "0");
    CHECK(v.backend_key("multi-queue-max-queues") == "2");
    v.connect();
    good_io(v, img, 9);
    Page p = v.page();
    REQUIRE(v.submit(0, v.rw(BLKIF_OP_READ, 10, 8, {seg(p.gref)})).status == BLKIF_RSP_OKAY);
    CHECK(std::memcmp(read_file(img, 8 * 512, 4096).data(), p.data, 4096) == 0);
    REQUIRE(env.ts->destroy(*dd));
}
