// hvctl create/destroy with disks and vifs against the real hv-min: the vbd/vif keys libxl
// writes (both directories, permissions, cross links) and their removal on destroy.
#include <catch2/catch.hpp>

#include "skip.hpp"
#include "text_match.hpp"
#include "tools_harness.hpp"
#include "xenstore/client.hpp"

using namespace hv::test::tools;

TEST_CASE("hvctl create with a disk and a vif writes libxl's keys and destroy removes them",
          "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::string cfg = d.write_cfg(
        "dev.cfg", "name = \"devs\"\nmemory = 16\nkernel = \"" + bin_dir +
                       "/hvdemo-domain\"\ncmdline = \"idle --status " + d.status_fifo() +
                       "\"\ndisk = [ 'format=raw, vdev=xvdb, access=ro, target=/tmp/img.raw' ]\n"
                       "vif = [ 'bridge=xenbr0, rate=1MB/s' ]\n");
    const ProcResult c = d.hvctl({"create", cfg});
    INFO(c.err << d.log());
    REQUIRE(c.rc == 0);
    const int id = created_id(c.out);
    REQUIRE(id > 0);
    const std::string fe = "/local/domain/" + std::to_string(id);
    auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
    REQUIRE(x);
    hv::xs::Client& xs = **x;

    // vbd: xvdb = 51728.
    const std::string vbd_be = "/local/domain/0/backend/vbd/" + std::to_string(id) + "/51728";
    const std::string vbd_fe = fe + "/device/vbd/51728";
    CHECK(rd(xs, vbd_be + "/params") == "/tmp/img.raw");
    CHECK(rd(xs, vbd_be + "/type") == "phy");
    CHECK(rd(xs, vbd_be + "/mode") == "r");
    CHECK(rd(xs, vbd_be + "/dev") == "xvdb");
    CHECK(rd(xs, vbd_be + "/device-type") == "disk");
    CHECK(rd(xs, vbd_be + "/state") == "1");
    CHECK(rd(xs, vbd_be + "/online") == "1");
    CHECK(rd(xs, vbd_be + "/frontend") == vbd_fe);
    CHECK(rd(xs, vbd_fe + "/virtual-device") == "51728");
    CHECK(rd(xs, vbd_fe + "/backend") == vbd_be);
    CHECK(rd(xs, vbd_fe + "/backend-id") == "0");
    CHECK(rd(xs, vbd_fe + "/state") == "1");
    // libxl: the backend dir is the backend's, readable by the frontend; and vice versa.
    CHECK(perms_text(xs, vbd_be) == "n0 r" + std::to_string(id));
    CHECK(perms_text(xs, vbd_fe) == "n" + std::to_string(id) + " r0");

    const std::string vif_be = "/local/domain/0/backend/vif/" + std::to_string(id) + "/0";
    const std::string vif_fe = fe + "/device/vif/0";
    const std::string mac = rd(xs, vif_be + "/mac");
    CHECK(hv::test::re_match(mac, "00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}"));
    CHECK(rd(xs, vif_fe + "/mac") == mac);
    CHECK(rd(xs, vif_be + "/bridge") == "xenbr0");
    CHECK(rd(xs, vif_be + "/handle") == "0");
    CHECK(rd(xs, vif_fe + "/handle") == "0");
    CHECK(rd(xs, vif_be + "/type") == "vif");
    CHECK(rd(xs, vif_be + "/rate") == "50000,50000");
    CHECK(perms_text(xs, vif_be) == "n0 r" + std::to_string(id));

    // No backend runs here: destroy asks, waits its bounded time, then removes both sides.
    const ProcResult r = d.hvctl({"destroy", "devs"});
    INFO(r.err);
    CHECK(r.rc == 0);
    CHECK(r.err.find("did not reach Closed") != std::string::npos);
    CHECK_FALSE(xs.read(vbd_be + "/params"));
    CHECK_FALSE(xs.read(vif_be + "/mac"));
    CHECK_FALSE(xs.read(vbd_fe + "/state"));
    auto left = xs.directory("/local/domain/0/backend/vbd");
    CHECK((!left || left->empty()));
}

TEST_CASE("hvctl create refuses a disk whose backend domain does not exist and leaves no domain",
          "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::string cfg = d.write_cfg(
        "bad.cfg", "name = \"nobe\"\nmemory = 16\nkernel = \"" + bin_dir +
                       "/hvdemo-domain\"\ncmdline = \"idle --status " + d.status_fifo() +
                       "\"\ndisk = [ 'vdev=xvda, backend=ghost, target=/tmp/x' ]\n");
    const ProcResult c = d.hvctl({"create", cfg});
    CHECK(c.rc != 0);
    CHECK(c.err.find("vbd 51712") != std::string::npos);
    const ProcResult l = d.hvctl({"list"});
    CHECK(l.out.find("\nnobe ") == std::string::npos);
}
