// xenbus::BackendDriver (the loop blkback, netback and pciback share) and the frontend helpers,
// against the real XenStore server, with a recording device type as the per-type part.
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "temp_dir.hpp"
#include "xenbus/backend_driver.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/server.hpp"

namespace {

using namespace hv;
using namespace std::chrono_literals;
using rings::XenbusState;

/// What the recording devices saw; read by the test thread while the driver runs.
struct Journal {
    std::mutex mu;
    std::map<xenbus::DeviceRef, int> reevaluations;
    std::multiset<std::string> calls;  // "made 3/1", "halt 3/1", "disconnect 3/1", "gone 3/1"
    std::atomic<int> halt_fd{-1};

    void note(const std::string& what, xenbus::DeviceRef ref) {
        std::lock_guard lk(mu);
        calls.insert(what + " " + std::to_string(ref.frontend.get()) + "/" +
                     std::to_string(ref.devid));
    }
    std::size_t count(const std::string& call) {
        std::lock_guard lk(mu);
        return calls.count(call);
    }
    int evaluated(xenbus::DeviceRef ref) {
        std::lock_guard lk(mu);
        return reevaluations[ref];
    }
};

class RecordingDevice final : public xenbus::BackendDevice {
public:
    RecordingDevice(xs::Client& xs, Journal& j, xenbus::DeviceRef ref)
        : xs_(xs), j_(j), ref_(ref),
          bdir_(xenbus::backend_dir(DomId(0), "tdev", ref.frontend, ref.devid)),
          fe_state_(xenbus::frontend_dir(ref.frontend, "tdev", ref.devid) + "/state") {
        auto w = xs_.watch_scoped(fe_state_, "tdev-fe");
        if (w) {
            watch_.emplace(std::move(*w));
        }
    }
    ~RecordingDevice() override { j_.note("gone", ref_); }

    bool reevaluate() noexcept override {
        {
            std::lock_guard lk(j_.mu);
            ++j_.reevaluations[ref_];
        }
        // As a real backend: gone once the directory is, or Closed with online = 0.
        auto st = xenbus::read_optional(xs_, bdir_ + "/state");
        if (!st || !*st) {
            return false;
        }
        auto online = xenbus::read_optional(xs_, bdir_ + "/online");
        return !(online && *online && **online == "0" &&
                 rings::parse_xenbus_state(**st) == XenbusState::XenbusStateClosed);
    }
    void disconnect() noexcept override { j_.note("disconnect", ref_); }
    void write_statistics() noexcept override {}
    void on_halt() noexcept override { j_.note("halt", ref_); }
    const std::string& backend_dir() const noexcept override { return bdir_; }
    const std::string& frontend_state_path() const noexcept override { return fe_state_; }

private:
    xs::Client& xs_;
    Journal& j_;
    xenbus::DeviceRef ref_;
    std::string bdir_, fe_state_;
    std::optional<xs::ScopedWatch> watch_;
};

class RecordingFactory final : public xenbus::DeviceFactory {
public:
    RecordingFactory(xs::Client& xs, Journal& j) : xs_(xs), j_(j) {}
    Result<std::unique_ptr<xenbus::BackendDevice>> make_device(xenbus::DeviceRef ref,
                                                               int halt_fd) override {
        if (ref.devid == 666) {
            return fail_errno(EINVAL);  // a device this type refuses
        }
        j_.halt_fd.store(halt_fd);
        j_.note("made", ref);
        return std::unique_ptr<xenbus::BackendDevice>(new RecordingDevice(xs_, j_, ref));
    }
    bool is_own_key(std::string_view path) const noexcept override {
        return path.ends_with("/feature-x");
    }

private:
    xs::Client& xs_;
    Journal& j_;
};

struct Rig {
    test::TempDir dir{"hvkit-bdrv"};
    std::unique_ptr<xs::Server> server;
    std::jthread thread;
    std::unique_ptr<xs::Client> tool;  // the toolstack
    std::unique_ptr<xs::Client> be;    // the driver's own connection
    Journal journal;
    std::unique_ptr<xenbus::BackendDriver> driver;

    Rig() {
        auto s = xs::Server::create();
        REQUIRE(s);
        server = std::move(*s);
        REQUIRE(server->listen_unix(dir.str() + "/xs.sock"));
        thread = std::jthread([this] { (void)server->run(); });
        tool = connect();
        be = connect();
    }
    ~Rig() {
        driver.reset();
        server->stop();
    }
    std::unique_ptr<xs::Client> connect() {
        auto c = xs::Client::connect(dir.str() + "/xs.sock");
        REQUIRE(c);
        return std::move(*c);
    }
    void start(xenbus::CloseOnStop close = xenbus::CloseOnStop::yes) {
        auto d = xenbus::BackendDriver::create(
            DomId(0), *be,
            {.type = "tdev", .name = "tdev-back", .stats_interval = 50ms, .close_on_stop = close},
            std::make_unique<RecordingFactory>(*be, journal));
        REQUIRE(d);
        driver = std::move(*d);
        driver->start();
    }
    void add(std::uint16_t fe, std::uint32_t devid,
             std::map<std::string, std::string> backend_keys = {}) {
        xenbus::DeviceSpec spec;
        spec.backend_keys = std::move(backend_keys);
        spec.type = "tdev";
        spec.frontend = DomId(fe);
        spec.backend = DomId(0);
        spec.devid = devid;
        REQUIRE(xenbus::create_device(*tool, spec));
    }
    std::string bdir(std::uint16_t fe, std::uint32_t devid) {
        return xenbus::backend_dir(DomId(0), "tdev", DomId(fe), devid);
    }
};

template <class Pred>
bool eventually(Pred&& p, std::chrono::milliseconds limit = 5s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (p()) {
            return true;
        }
        std::this_thread::sleep_for(2ms);
    }
    return p();
}

/// The count `read()` returns once it has not changed for 150 ms (watch events of earlier
/// writes still in flight, slow under ASan, settle first), bounded by 5 s.
template <class Read>
int settled(Read&& read) {
    const auto end = std::chrono::steady_clock::now() + 5s;
    int last = read();
    auto since = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(5ms);
        const int now = read();
        if (now != last) {
            last = now;
            since = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - since >= 150ms) {
            break;
        }
    }
    return last;
}

}  // namespace

TEST_CASE("the backend driver makes a device per directory and drops it when it goes",
          "[xenbus][backend]") {
    Rig r;
    r.add(3, 1);  // present before the driver starts: found by the first scan
    r.start();
    const xenbus::DeviceRef d31{DomId(3), 1}, d42{DomId(4), 2};
    REQUIRE(eventually([&] { return r.driver->device_count() == 1; }));
    CHECK(r.journal.count("made 3/1") == 1);

    r.add(4, 2);  // appears while it runs
    REQUIRE(eventually([&] { return r.driver->device_count() == 2; }));

    // A frontend state change re-evaluates that device only. (Counts are taken once the
    // events of the devices' creation have all arrived.)
    const int before = settled([&] { return r.journal.evaluated(d42); });
    const int other_before = settled([&] { return r.journal.evaluated(d31); });
    REQUIRE(r.tool->write(xenbus::frontend_dir(DomId(4), "tdev", 2) + "/state", "3"));
    REQUIRE(eventually([&] { return r.journal.evaluated(d42) > before; }));
    // The backend's own keys and statistics are echoes: no re-evaluation.
    const int after = settled([&] { return r.journal.evaluated(d42); });
    REQUIRE(r.tool->write(r.bdir(4, 2) + "/feature-x", "1"));
    REQUIRE(r.tool->write(r.bdir(4, 2) + "/statistics/x", "1"));
    REQUIRE(r.tool->write(r.bdir(4, 2) + "/other", "1"));  // not an echo: re-evaluates
    REQUIRE(eventually([&] { return r.journal.evaluated(d42) > after; }));
    std::this_thread::sleep_for(50ms);
    CHECK(r.journal.evaluated(d42) == after + 1);
    CHECK(r.journal.evaluated(d31) == other_before);

    // The directory removed: the device is destroyed.
    REQUIRE(xenbus::remove_device(*r.tool, DomId(0), "tdev", DomId(4), 2));
    REQUIRE(eventually([&] { return r.driver->device_count() == 1; }));
    CHECK(eventually([&] { return r.journal.count("gone 4/2") == 1; }));
    CHECK(r.journal.count("gone 3/1") == 0);
}

TEST_CASE("the backend driver adopts no device being removed, incomplete or refused",
          "[xenbus][backend][hostile]") {
    Rig r;
    r.start();
    // online = 0 (in the same transaction): the toolstack is removing it.
    r.add(5, 1, {{"online", "0"}});
    // No state node: not a complete device directory.
    REQUIRE(r.tool->write(r.bdir(6, 1) + "/params", "x"));
    // Junk names in the tree, and a device the type refuses.
    REQUIRE(r.tool->write("/local/domain/0/backend/tdev/junk/1/state", "1"));
    r.add(7, 666);
    r.add(8, 1);  // a good one after them: the driver is still serving
    REQUIRE(eventually([&] { return r.journal.count("made 8/1") == 1; }));
    std::this_thread::sleep_for(50ms);
    CHECK(r.journal.count("made 5/1") == 0);
    CHECK(r.journal.count("made 6/1") == 0);
    CHECK(r.journal.count("made 7/666") == 0);
    CHECK(r.driver->device_count() == 1);
}

TEST_CASE("the backend driver passes a halt to its devices and closes Closing ones on stop",
          "[xenbus][backend][state]") {
    for (const auto close : {xenbus::CloseOnStop::yes, xenbus::CloseOnStop::no}) {
        Rig r;
        r.add(3, 1);
        r.add(3, 2);
        r.start(close);
        REQUIRE(eventually([&] { return r.driver->device_count() == 2; }));
        const int halt = r.journal.halt_fd.load();
        REQUIRE(halt >= 0);
        const std::uint64_t one = 1;
        REQUIRE(::write(halt, &one, sizeof one) == static_cast<ssize_t>(sizeof one));
        REQUIRE(eventually([&] {
            return r.journal.count("halt 3/1") == 1 && r.journal.count("halt 3/2") == 1;
        }));

        REQUIRE(xenbus::switch_state(*r.tool, r.bdir(3, 1), XenbusState::XenbusStateClosing));
        REQUIRE(xenbus::switch_state(*r.tool, r.bdir(3, 2), XenbusState::XenbusStateConnected));
        REQUIRE(eventually([&] { return r.journal.evaluated({DomId(3), 2}) >= 2; }));
        r.driver->stop();
        CHECK(r.driver->device_count() == 0);
        CHECK(r.journal.count("disconnect 3/1") == 1);
        CHECK(r.journal.count("disconnect 3/2") == 1);
        CHECK(*xenbus::read_state(*r.tool, r.bdir(3, 1)) ==
              (close == xenbus::CloseOnStop::yes ? XenbusState::XenbusStateClosed
                                                 : XenbusState::XenbusStateClosing));
        CHECK(*xenbus::read_state(*r.tool, r.bdir(3, 2)) == XenbusState::XenbusStateConnected);
        r.driver->stop();  // idempotent
    }
}

TEST_CASE("a frontend sees its device removed before it reads the backend's state",
          "[xenbus][state]") {
    Rig r;
    r.add(3, 1);
    const auto fdir = xenbus::frontend_dir(DomId(3), "tdev", 1);
    REQUIRE(xenbus::switch_state(*r.tool, r.bdir(3, 1), XenbusState::XenbusStateInitWait));
    auto st = xenbus::backend_state_unless_removed(*r.tool, fdir, r.bdir(3, 1));
    REQUIRE(st);
    REQUIRE(*st);
    CHECK(**st == XenbusState::XenbusStateInitWait);
    REQUIRE(r.tool->write(r.bdir(3, 1) + "/state", "junk"));  // GUEST: any text is a state
    CHECK(**xenbus::backend_state_unless_removed(*r.tool, fdir, r.bdir(3, 1)) ==
          XenbusState::XenbusStateUnknown);
    REQUIRE(xenbus::remove_device(*r.tool, DomId(0), "tdev", DomId(3), 1));
    st = xenbus::backend_state_unless_removed(*r.tool, fdir, r.bdir(3, 1));
    REQUIRE(st);
    CHECK_FALSE(*st);
}

TEST_CASE("a frontend's wait for Connected acts on its events, passes others on and times out",
          "[xenbus][state]") {
    Rig r;
    auto fe = r.connect();
    REQUIRE(fe->watch("/own", "own-token"));
    REQUIRE(fe->watch("/other", "other-token"));
    // Let both initial watch events arrive first.
    int changes = 0;
    bool connected = false;
    std::vector<std::string> others;
    const std::error_code timed_out = std::make_error_code(std::errc::stream_timeout);
    xenbus::FrontendWait w{.token = "own-token",
                           .on_change = [&]() -> Result<void> {
                               ++changes;
                               auto v = xenbus::read_optional(*fe, "/own");
                               connected = v && *v && **v == "4";
                               return {};
                           },
                           .connected = [&]() -> Result<bool> { return connected; },
                           .timed_out = timed_out};
    auto other = [&](const std::string& path, const std::string&) { others.push_back(path); };

    std::jthread writer([&] {
        std::this_thread::sleep_for(20ms);
        (void)r.tool->write("/other", "x");
        std::this_thread::sleep_for(20ms);
        (void)r.tool->write("/own", "4");
    });
    REQUIRE(xenbus::wait_connected(*fe, w, 5s, other));
    CHECK(connected);
    CHECK(changes >= 2);  // once at the start, once for the write
    CHECK(std::find(others.begin(), others.end(), "/other") != others.end());
    writer.join();

    // Never connected: the frontend's own timeout error.
    connected = false;
    w.on_change = [&]() -> Result<void> { return {}; };
    auto t = xenbus::wait_connected(*fe, w, 30ms, other);
    REQUIRE_FALSE(t);
    CHECK(t.error() == timed_out);

    // A device that died ends the wait with its error.
    w.connected = [&]() -> Result<bool> { return fail_errno(ENODEV); };
    auto d = xenbus::wait_connected(*fe, w, 5s, other);
    REQUIRE_FALSE(d);
    CHECK(d.error() == std::error_code(ENODEV, std::system_category()));
}
