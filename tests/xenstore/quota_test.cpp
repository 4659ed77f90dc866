// Quotas (xen-abi.md §4.8): each limit gives ENOSPC to an unprivileged domain; dom0 is exempt.
#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

namespace {
ServerConfig small_quotas() {
    ServerConfig cfg;
    cfg.quotas.nodes = 10;
    cfg.quotas.watches = 4;
    cfg.quotas.transactions = 2;
    cfg.quotas.transaction_nodes = 8;
    cfg.quotas.permissions = 3;
    cfg.quotas.path_max = 64;
    cfg.quotas.node_size = 256;
    cfg.quotas.memory = 100000;
    return cfg;
}
}  // namespace

TEST_CASE("a domain cannot own more nodes than its quota", "[xenstore][quota]") {
    Harness h(small_quotas());
    h.make_domain_home(3);  // the home counts as one node of dom3
    RawConn d = h.domain(3);
    int made = 0;
    for (int i = 0; i < 20; ++i) {
        Msg m = d.write("n" + std::to_string(i), "v");
        if (!ok(m)) {
            CHECK(m.is_error("ENOSPC"));
            break;
        }
        ++made;
    }
    CHECK(made == 9);
    CHECK(d.write("a/b", "v").is_error("ENOSPC"));
    CHECK(ok(d.rm("n0")));
    CHECK(ok(d.write("again", "v")));
    RawConn c = h.dom0();
    for (int i = 0; i < 30; ++i) {
        REQUIRE(ok(c.write("/dom0/n" + std::to_string(i), "v")));  // dom0: no quota
    }
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}

TEST_CASE("the watch quota counts per domain", "[xenstore][quota]") {
    Harness h(small_quotas());
    RawConn d = h.domain(3), d2 = h.domain(3);
    for (int i = 0; i < 3; ++i) {
        REQUIRE(ok(d.watch("/w" + std::to_string(i), "t")));
    }
    REQUIRE(ok(d2.watch("/w", "t")));
    CHECK(d.watch("/w9", "t").is_error("ENOSPC"));
    CHECK(d2.watch("/w9", "t").is_error("ENOSPC"));
    RawConn c = h.dom0();
    for (int i = 0; i < 50; ++i) {
        REQUIRE(ok(c.watch("/w" + std::to_string(i), "t")));
    }
}

TEST_CASE("open transactions are limited per domain", "[xenstore][quota]") {
    Harness h(small_quotas());
    RawConn d = h.domain(3);
    const std::uint32_t t1 = d.tx_start();
    d.tx_start();
    CHECK(d.call(MsgType::XS_TRANSACTION_START, std::string_view("", 1)).is_error("ENOSPC"));
    REQUIRE(ok(d.tx_end(t1, false)));
    CHECK(d.tx_start() != 0);
}

TEST_CASE("a transaction may touch only so many nodes", "[xenstore][quota]") {
    Harness h(small_quotas());
    RawConn c = h.dom0();
    REQUIRE(ok(c.mkdir("/many")));
    REQUIRE(ok(c.set_perms("/many", {"r0"})));
    for (int i = 0; i < 12; ++i) {
        REQUIRE(ok(c.write("/many/n" + std::to_string(i), "v")));
    }
    RawConn d = h.domain(3);
    const std::uint32_t t = d.tx_start();
    Msg last;
    int i = 0;
    for (; i < 12; ++i) {
        last = d.read("/many/n" + std::to_string(i), t);
        if (last.type == MsgType::XS_ERROR) {
            break;
        }
    }
    CHECK(last.is_error("ENOSPC"));
    CHECK(i == 8);
}

TEST_CASE("too many permission entries, too big nodes and too long paths are ENOSPC",
          "[xenstore][quota]") {
    Harness h(small_quotas());
    h.make_domain_home(3);
    RawConn d = h.domain(3);
    REQUIRE(ok(d.write("p", "")));
    CHECK(d.set_perms("p", {"n3", "r1", "r2", "r4"}).is_error("ENOSPC"));
    CHECK(ok(d.set_perms("p", {"n3", "r1", "r2"})));
    CHECK(d.write("big", std::string(300, 'x')).is_error("ENOSPC"));
    CHECK(ok(d.write("big", std::string(200, 'x'))));
    CHECK(d.write(std::string(65, 'l'), "v").is_error("ENOSPC"));
    CHECK(ok(d.write(std::string(64, 'l'), "v")));
    RawConn c = h.dom0();
    CHECK(ok(c.write("/d0big", std::string(3000, 'x'))));  // dom0 exempt
}

TEST_CASE("the memory quota bounds the bytes a domain stores", "[xenstore][quota]") {
    ServerConfig cfg = small_quotas();
    cfg.quotas.nodes = 1000;
    cfg.quotas.memory = 1000;
    Harness h(cfg);
    h.make_domain_home(3);
    RawConn d = h.domain(3);
    Msg m;
    int i = 0;
    for (; i < 20; ++i) {
        m = d.write("k" + std::to_string(i), std::string(200, 'v'));
        if (!ok(m)) {
            break;
        }
    }
    CHECK(m.is_error("ENOSPC"));
    CHECK(i == 4);
}

TEST_CASE("quota assignments parse by name", "[xenstore][quota]") {
    Quotas q;
    CHECK(q.apply("nodes=5").has_value());
    CHECK(q.nodes == 5);
    CHECK(q.apply("transaction-nodes=7").has_value());
    CHECK(q.transaction_nodes == 7);
    CHECK_FALSE(q.apply("nodes").has_value());
    CHECK_FALSE(q.apply("nodes=x").has_value());
    CHECK_FALSE(q.apply("bogus=1").has_value());
    CHECK(Quotas::names().size() == 9);
}
