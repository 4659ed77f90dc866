// Transactions (xen-abi.md §4.7): private view, conflict detection per node read or written,
// EAGAIN at commit, independence of unrelated transactions.
#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

TEST_CASE("a transaction whose read node changed underneath fails with EAGAIN",
          "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0();
    REQUIRE(ok(a.write("/c/state", "1")));
    const std::uint32_t t = a.tx_start();
    CHECK(a.read("/c/state", t).payload == "1");
    REQUIRE(ok(b.write("/c/state", "2")));
    REQUIRE(ok(a.write("/c/other", "x", t)));
    CHECK(a.tx_end(t, true).is_error("EAGAIN"));
    CHECK(a.read("/c/other").is_error("ENOENT"));  // nothing of it was applied
    CHECK(a.read("/c/state").payload == "2");
}

TEST_CASE("a transaction whose written node changed underneath fails with EAGAIN",
          "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0();
    REQUIRE(ok(a.write("/c/n", "0")));
    const std::uint32_t t = a.tx_start();
    REQUIRE(ok(a.write("/c/n", "tx", t)));
    REQUIRE(ok(b.write("/c/n", "outside")));
    CHECK(a.tx_end(t, true).is_error("EAGAIN"));
    CHECK(a.read("/c/n").payload == "outside");
}

TEST_CASE("a node created underneath that the transaction looked for is a conflict",
          "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0();
    REQUIRE(ok(a.mkdir("/c")));
    const std::uint32_t t = a.tx_start();
    CHECK(a.read("/c/flag", t).is_error("ENOENT"));
    REQUIRE(ok(b.write("/c/flag", "1")));
    REQUIRE(ok(a.write("/c/seen-none", "1", t)));
    CHECK(a.tx_end(t, true).is_error("EAGAIN"));
}

TEST_CASE("unrelated changes do not make a transaction fail", "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0();
    REQUIRE(ok(a.write("/one/x", "1")));
    REQUIRE(ok(a.write("/two/y", "1")));
    const std::uint32_t t = a.tx_start();
    CHECK(a.read("/one/x", t).payload == "1");
    REQUIRE(ok(a.write("/one/x", "2", t)));
    REQUIRE(ok(b.write("/two/y", "2")));
    CHECK(ok(a.tx_end(t, true)));
    CHECK(a.read("/one/x").payload == "2");
}

TEST_CASE("a transaction sees its own writes, removals and directory changes",
          "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0();
    REQUIRE(ok(a.write("/v/keep", "k")));
    REQUIRE(ok(a.write("/v/drop/sub", "d")));
    const std::uint32_t t = a.tx_start();
    REQUIRE(ok(a.rm("/v/drop", t)));
    REQUIRE(ok(a.write("/v/new", "n", t)));
    CHECK(a.dir("/v", t).payload == nul_join({"keep", "new"}));
    CHECK(a.read("/v/drop/sub", t).is_error("ENOENT"));
    CHECK(a.dir("/v").payload == nul_join({"keep", "drop"}));
    REQUIRE(ok(a.tx_end(t, true)));
    CHECK(a.dir("/v").payload == nul_join({"keep", "new"}));
    CHECK(ok(a.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}

TEST_CASE("two transactions racing on one node: exactly one commits", "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0();
    REQUIRE(ok(a.write("/ctr", "0")));
    const std::uint32_t ta = a.tx_start();
    const std::uint32_t tb = b.tx_start();
    CHECK(a.read("/ctr", ta).payload == "0");
    CHECK(b.read("/ctr", tb).payload == "0");
    REQUIRE(ok(a.write("/ctr", "1", ta)));
    REQUIRE(ok(b.write("/ctr", "1", tb)));
    CHECK(ok(a.tx_end(ta, true)));
    CHECK(b.tx_end(tb, true).is_error("EAGAIN"));
    CHECK(a.read("/ctr").payload == "1");
}

TEST_CASE("transaction ids are per connection and reusable after the end",
          "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0();
    const std::uint32_t ta = a.tx_start();
    CHECK(b.read("/local", ta).is_error("ENOENT"));  // b has no transaction ta
    REQUIRE(ok(a.tx_end(ta, false)));
    const std::uint32_t t2 = a.tx_start();
    CHECK(t2 != 0);
    CHECK(ok(a.tx_end(t2, false)));
}

TEST_CASE("watch and unwatch ignore tx_id", "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0();
    const std::uint32_t t = a.tx_start();
    Msg m = a.call(MsgType::XS_WATCH, nul_join({"/w", "t"}), t);
    CHECK(ok(m));
    REQUIRE(a.event());
    CHECK(ok(a.call(MsgType::XS_UNWATCH, nul_join({"/w", "t"}), 999)));
}

TEST_CASE("a transaction that loses its conflict fires none of its events",
          "[xenstore][transaction]") {
    Harness h;
    RawConn a = h.dom0(), b = h.dom0(), w = h.dom0();
    REQUIRE(ok(a.write("/lost/n", "0")));
    REQUIRE(ok(w.watch("/lost/mine", "t")));
    REQUIRE(w.event());
    const std::uint32_t t = a.tx_start();
    REQUIRE(a.read("/lost/n", t).payload == "0");
    REQUIRE(ok(a.write("/lost/mine", "1", t)));
    REQUIRE(ok(b.write("/lost/n", "1")));
    CHECK(a.tx_end(t, true).is_error("EAGAIN"));
    CHECK(w.no_event());
    CHECK(a.read("/lost/mine").is_error("ENOENT"));
}
