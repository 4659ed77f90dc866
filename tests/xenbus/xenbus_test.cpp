// xenbus conventions against the real XenStore server, with real domain-bound connections.
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include <future>
#include <memory>
#include <thread>

#include "temp_dir.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/server.hpp"

namespace {

using namespace hv;
using rings::XenbusStateClosed;
using rings::XenbusStateClosing;
using rings::XenbusStateConnected;
using rings::XenbusStateInitialising;
using rings::XenbusStateInitWait;
using rings::XenbusStateUnknown;

bool is_errno(const std::error_code& ec, int e) {
    return ec == std::error_code(e, std::system_category());
}

/// A XenStore server in its own thread, a dom0 client, and clients bound to other domids.
struct Store {
    test::TempDir dir{"hvkit-xenbus"};
    std::unique_ptr<xs::Server> server;
    std::jthread thread;
    std::unique_ptr<xs::Client> dom0;

    Store() {
        auto s = xs::Server::create();
        REQUIRE(s);
        server = std::move(*s);
        REQUIRE(server->listen_unix(dir.str() + "/xs.sock"));
        thread = std::jthread([this] { (void)server->run(); });
        auto c = xs::Client::connect(dir.str() + "/xs.sock");
        REQUIRE(c);
        dom0 = std::move(*c);
    }
    ~Store() {
        server->stop();
    }
    std::unique_ptr<xs::Client> domain(std::uint16_t domid) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        REQUIRE(server->introduce_domain(DomId(domid)));
        REQUIRE(server->add_connection(UniqueFd(sv[0]), DomId(domid)));
        auto c = xs::Client::from_fd(UniqueFd(sv[1]));
        REQUIRE(c);
        return std::move(*c);
    }
};

xenbus::DeviceSpec vbd(std::uint16_t fe, std::uint16_t be) {
    xenbus::DeviceSpec s;
    s.type = "vbd";
    s.frontend = DomId(fe);
    s.backend = DomId(be);
    s.devid = 51712;
    s.backend_keys = {{"params", "/tmp/disk.img"}, {"mode", "w"}};
    s.frontend_keys = {{"virtual-device", "51712"}};
    return s;
}

}  // namespace

TEST_CASE("device paths follow Xen's conventions", "[xenbus]") {
    CHECK(xenbus::frontend_dir(DomId(3), "vbd", 51712) == "/local/domain/3/device/vbd/51712");
    CHECK(xenbus::backend_dir(DomId(0), "vif", DomId(3), 0) ==
          "/local/domain/0/backend/vif/3/0");
    auto d = xenbus::device_of_backend_path("/local/domain/0/backend/vbd/7/768/state", DomId(0),
                                            "vbd");
    REQUIRE(d);
    CHECK(d->frontend == DomId(7));
    CHECK(d->devid == 768);
    CHECK_FALSE(xenbus::device_of_backend_path("/local/domain/0/backend/vbd/7", DomId(0), "vbd"));
    CHECK_FALSE(
        xenbus::device_of_backend_path("/local/domain/0/backend/vbd/x/1", DomId(0), "vbd"));
    CHECK_FALSE(
        xenbus::device_of_backend_path("/local/domain/1/backend/vbd/7/1", DomId(0), "vbd"));
}

TEST_CASE("unsigned nodes reject anything but plain decimals", "[xenbus][hostile]") {
    CHECK(*xenbus::parse_uint("42") == 42);
    CHECK(is_errno(xenbus::parse_uint("").error(), EINVAL));
    CHECK(is_errno(xenbus::parse_uint("-1").error(), EINVAL));
    CHECK(is_errno(xenbus::parse_uint(" 1").error(), EINVAL));
    CHECK(is_errno(xenbus::parse_uint("12abc").error(), EINVAL));
    CHECK(is_errno(xenbus::parse_uint("0x10").error(), EINVAL));
    CHECK(is_errno(xenbus::parse_uint("99999999999999999999999").error(), ERANGE));
    CHECK(is_errno(xenbus::parse_uint("17", 16).error(), ERANGE));
}

TEST_CASE("create_device writes both directories with libxl's permissions", "[xenbus][state]") {
    Store s;
    REQUIRE(xenbus::create_device(*s.dom0, vbd(3, 0)));
    const auto fdir = xenbus::frontend_dir(DomId(3), "vbd", 51712);
    const auto bdir = xenbus::backend_dir(DomId(0), "vbd", DomId(3), 51712);
    CHECK(*s.dom0->read(fdir + "/backend") == bdir);
    CHECK(*s.dom0->read(fdir + "/backend-id") == "0");
    CHECK(*s.dom0->read(bdir + "/frontend") == fdir);
    CHECK(*s.dom0->read(bdir + "/frontend-id") == "3");
    CHECK(*s.dom0->read(bdir + "/online") == "1");
    CHECK(*s.dom0->read(bdir + "/params") == "/tmp/disk.img");
    CHECK(*xenbus::read_state(*s.dom0, fdir) == XenbusStateInitialising);
    CHECK(*xenbus::read_state(*s.dom0, bdir) == XenbusStateInitialising);

    auto fe = s.domain(3);
    auto other = s.domain(4);
    // The frontend owns its directory and may read the backend's, but not write it.
    CHECK(fe->write(fdir + "/ring-ref", "8"));
    CHECK(*fe->read(bdir + "/params") == "/tmp/disk.img");
    CHECK(is_errno(fe->write(bdir + "/params", "/etc/shadow").error(), EACCES));
    // A third domain sees neither.
    CHECK(is_errno(other->read(fdir + "/state").error(), EACCES));
    CHECK(is_errno(other->read(bdir + "/state").error(), EACCES));
    // A second create of the same device is refused and changes nothing.
    CHECK(is_errno(xenbus::create_device(*s.dom0, vbd(3, 0)).error(), EEXIST));
    CHECK(*s.dom0->read(fdir + "/ring-ref") == "8");
}

TEST_CASE("switch_state never resurrects a removed device directory", "[xenbus][state]") {
    Store s;
    REQUIRE(xenbus::create_device(*s.dom0, vbd(3, 0)));
    const auto bdir = xenbus::backend_dir(DomId(0), "vbd", DomId(3), 51712);
    CHECK(*xenbus::switch_state(*s.dom0, bdir, XenbusStateInitWait));
    CHECK(*xenbus::read_state(*s.dom0, bdir) == XenbusStateInitWait);
    CHECK(*xenbus::switch_state(*s.dom0, bdir, XenbusStateInitWait));  // unchanged: fine
    REQUIRE(xenbus::remove_device(*s.dom0, DomId(0), "vbd", DomId(3), 51712));
    CHECK_FALSE(*xenbus::switch_state(*s.dom0, bdir, XenbusStateConnected));
    CHECK(is_errno(s.dom0->read(bdir).error(), ENOENT));
    CHECK(is_errno(s.dom0->read(xenbus::frontend_dir(DomId(3), "vbd", 51712)).error(), ENOENT));
}

TEST_CASE("a missing or garbage state reads as Unknown", "[xenbus][hostile]") {
    Store s;
    CHECK(*xenbus::read_state(*s.dom0, "/local/domain/9/device/vbd/1") == XenbusStateUnknown);
    REQUIRE(s.dom0->write("/x/state", "4junk"));
    CHECK(*xenbus::read_state(*s.dom0, "/x") == XenbusStateUnknown);
    REQUIRE(s.dom0->write("/x/state", "9"));
    CHECK(*xenbus::read_state(*s.dom0, "/x") == XenbusStateUnknown);
    REQUIRE(s.dom0->write("/x/state", "4"));
    CHECK(*xenbus::read_state(*s.dom0, "/x") == XenbusStateConnected);
}

TEST_CASE("request_close takes the device offline and to Closing unless Closed",
          "[xenbus][state]") {
    Store s;
    REQUIRE(xenbus::create_device(*s.dom0, vbd(3, 0)));
    const auto bdir = xenbus::backend_dir(DomId(0), "vbd", DomId(3), 51712);
    REQUIRE(xenbus::request_close(*s.dom0, DomId(0), "vbd", DomId(3), 51712));
    CHECK(*s.dom0->read(bdir + "/online") == "0");
    CHECK(*xenbus::read_state(*s.dom0, bdir) == XenbusStateClosing);
    REQUIRE(xenbus::switch_state(*s.dom0, bdir, XenbusStateClosed));
    REQUIRE(xenbus::request_close(*s.dom0, DomId(0), "vbd", DomId(3), 51712));
    CHECK(*xenbus::read_state(*s.dom0, bdir) == XenbusStateClosed);
    CHECK(is_errno(xenbus::request_close(*s.dom0, DomId(0), "vbd", DomId(5), 1).error(), ENOENT));
}

TEST_CASE("backend devices are listed and junk entries skipped", "[xenbus][hostile]") {
    Store s;
    REQUIRE(xenbus::create_device(*s.dom0, vbd(3, 0)));
    auto second = vbd(4, 0);
    second.devid = 51728;
    REQUIRE(xenbus::create_device(*s.dom0, second));
    REQUIRE(s.dom0->write("/local/domain/0/backend/vbd/junk/1/state", "1"));
    REQUIRE(s.dom0->write("/local/domain/0/backend/vbd/3/notanumber", "1"));
    auto devs = xenbus::list_backend_devices(*s.dom0, DomId(0), "vbd");
    REQUIRE(devs);
    REQUIRE(devs->size() == 2);
    CHECK((*devs)[0] == xenbus::DeviceRef{DomId(3), 51712});
    CHECK((*devs)[1] == xenbus::DeviceRef{DomId(4), 51728});
    CHECK(xenbus::list_backend_devices(*s.dom0, DomId(0), "vif")->empty());
}

TEST_CASE("errors are reported under the reporter's home as Linux does", "[xenbus]") {
    Store s;
    const auto bdir = xenbus::backend_dir(DomId(0), "vbd", DomId(3), 51712);
    xenbus::report_error(*s.dom0, DomId(0), bdir, 5, "mapping ring-ref 8");
    CHECK(*s.dom0->read("/local/domain/0/error/backend/vbd/3/51712/error") ==
          "5 mapping ring-ref 8");
    xenbus::clear_error(*s.dom0, DomId(0), bdir);
    CHECK(is_errno(s.dom0->read("/local/domain/0/error/backend/vbd/3/51712").error(), ENOENT));
}

TEST_CASE("a domain home made as libxl makes it lets the domain find its devices",
          "[xenbus][xenstore]") {
    Store s;
    REQUIRE(s.server->make_domain_home(DomId(3), "guest"));
    REQUIRE(xenbus::create_device(*s.dom0, vbd(3, 0)));
    auto fe = s.domain(3);
    auto other = s.domain(4);
    CHECK(*fe->read("/local/domain/3/name") == "guest");
    CHECK(*fe->read("/local/domain/3/domid") == "3");
    // device/vbd inherits device/'s permissions: the domain can list its vbds.
    auto vbds = fe->directory("/local/domain/3/device/vbd");
    REQUIRE(vbds);
    CHECK(*vbds == std::vector<std::string>{"51712"});
    // Its own data/ and error/ are writable, the home's keys are not.
    CHECK(fe->write("/local/domain/3/data/x", "1"));
    CHECK(fe->write("/local/domain/3/error/device/vbd/51712/error", "5 oops"));
    CHECK(is_errno(fe->write("/local/domain/3/name", "evil").error(), EACCES));
    CHECK(is_errno(fe->write("/local/domain/3/device/vbd/99", "x").error(), EACCES));
    // Another domain sees none of it.
    CHECK(is_errno(other->read("/local/domain/3/name").error(), EACCES));
    CHECK(is_errno(other->directory("/local/domain/3/device").error(), EACCES));
    CHECK(is_errno(s.server->make_domain_home(DomId(0), "x").error(), EINVAL));
}

TEST_CASE("write_keys writes in one go and never resurrects a removed device directory",
          "[xenbus][state]") {
    Store s;
    REQUIRE(xenbus::create_device(*s.dom0, vbd(3, 0)));
    const auto bdir = xenbus::backend_dir(DomId(0), "vbd", DomId(3), 51712);
    auto w = xenbus::write_keys(*s.dom0, bdir, {{"sectors", "2048"}, {"info", "0"}});
    REQUIRE(w);
    CHECK(*w);
    CHECK(*s.dom0->read(bdir + "/sectors") == "2048");
    CHECK(*s.dom0->read(bdir + "/info") == "0");
    REQUIRE(xenbus::remove_device(*s.dom0, DomId(0), "vbd", DomId(3), 51712));
    w = xenbus::write_keys(*s.dom0, bdir, {{"sectors", "4096"}});
    REQUIRE(w);
    CHECK_FALSE(*w);
    CHECK(is_errno(s.dom0->read(bdir).error(), ENOENT));

    CHECK(xenbus::errno_of(std::error_code(ENOSPC, std::system_category())) == ENOSPC);
    CHECK(xenbus::errno_of(std::make_error_code(std::future_errc::no_state)) == EIO);
}
