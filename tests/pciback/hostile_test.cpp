// Hostile frontends against pciback (xen-abi.md §7.2, §7.4): each gets an error status or its
// own bus closed with a logged reason; pciback keeps serving the other domains.
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "harness.hpp"

using namespace hv;
using namespace hv::pci;
using namespace hv::pci::test;
using namespace hv::rings;

namespace {

/// A frontend that writes its own keys (possibly lies) instead of libpcifront's.
struct RawFront {
    RawFront(Env& e, Guest& g) : env(e), guest(g) {
        auto f = g.svc->memory().alloc_extent(1);
        REQUIRE(f);
        frame = *f;
        page = reinterpret_cast<xen_pci_sharedinfo*>(g.svc->memory().frame(frame).value());
        auto r = g.svc->grants().grant_access(DomId(0), frame, false);
        REQUIRE(r);
        ref = *r;
        auto p = g.svc->evtchn().alloc_unbound(DomId(0));
        REQUIRE(p);
        port = std::move(*p);
    }
    /// Writes the keys (with the given overrides) and goes Initialised.
    void publish(std::string op_ref = "", std::string magic = "7") {
        const std::string f = env.fdir(guest.domid);
        REQUIRE(guest.xs->write(f + "/pci-op-ref", op_ref.empty() ? std::to_string(ref.get()) : op_ref));
        REQUIRE(guest.xs->write(f + "/event-channel", std::to_string(port.port().get())));
        REQUIRE(guest.xs->write(f + "/magic", magic));
        REQUIRE(guest.xs->write(f + "/state", "3"));
    }
    Env& env;
    Guest& guest;
    std::uint64_t frame = 0;
    xen_pci_sharedinfo* page = nullptr;
    GrantRef ref{0};
    hvmin::EventChannelBinding port;
};

std::string error_node(Env& env, DomId fe) {
    return env.read("/local/domain/0/error/backend/pci/" + std::to_string(fe.get()) + "/0/error");
}

/// A second, well-behaved guest on its own device: proves the backend still serves others.
void other_guest_works(Env& env, const char* bdf) {
    Guest g(env, "bystander");
    env.attach_bus(g.domid, {bdf});
    auto front = g.connect();
    CHECK(front->conf_read(kDev0, 0, 4).value() == 0x00051b36);
}

}  // namespace

TEST_CASE("a magic mismatch closes that bus with a logged reason", "[pciback][hostile]") {
    Env env(emulating({"0001:00:02.0", "0001:00:03.0"}));
    Guest g(env, "liar");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    REQUIRE(env.wait_value(env.bdir(g.domid) + "/state", "3"));
    RawFront raw(env, g);
    raw.publish("", "6");
    CHECK(env.wait_value(env.bdir(g.domid) + "/state", "5"));
    CHECK(error_node(env, g.domid).find("magic") != std::string::npos);
    other_guest_works(env, "0001:00:03.0");
}

TEST_CASE("a pci-op-ref that is not a grant closes that bus", "[pciback][hostile]") {
    Env env(emulating({"0001:00:02.0", "0001:00:03.0"}));
    Guest g(env, "liar");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    REQUIRE(env.wait_value(env.bdir(g.domid) + "/state", "3"));
    RawFront raw(env, g);
    SECTION("an unused grant ref") { raw.publish("4000"); }
    SECTION("not a number") { raw.publish("12abc"); }
    CHECK(env.wait_value(env.bdir(g.domid) + "/state", "5"));
    CHECK_FALSE(error_node(env, g.domid).empty());
    other_guest_works(env, "0001:00:03.0");
}

TEST_CASE("bad ops from a connected frontend get error statuses and leave the bus usable", "[pciback][hostile]") {
    Env env;
    Guest g(env, "g");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    const auto run = [&](xen_pci_op op) {
        auto r = front->do_op(op);
        REQUIRE(r);
        return *r;
    };
    xen_pci_op op{};
    op.cmd = XEN_PCI_OP_conf_read;
    op.offset = 3;
    op.size = 2;
    CHECK(run(op).err == XEN_PCI_ERR_invalid_offset);
    op.offset = 0;
    op.size = 3;
    CHECK(run(op).err == XEN_PCI_ERR_invalid_offset);
    op.size = 4;
    op.devfn = 0x9;
    CHECK(run(op).err == XEN_PCI_ERR_dev_not_found);
    op.devfn = 0;
    op.cmd = 77;
    CHECK(run(op).err == XEN_PCI_ERR_not_implemented);
    // MSI-X with more than SH_INFO_MAX_VEC entries.
    REQUIRE(front->conf_write(kDev0, 0x04, 2, 0x2));
    op.cmd = XEN_PCI_OP_enable_msix;
    op.value = 1000;
    CHECK(run(op).err == kEINVAL);
    CHECK(front->conf_read(kDev0, 0, 2).value() == 0x1b36);
}

TEST_CASE("a frontend that kicks without setting the active flag gets nothing and harms nobody", "[pciback][hostile]") {
    Env env(emulating({"0001:00:02.0", "0001:00:03.0"}));
    Guest g(env, "spammer");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    auto* sh = front->shared_for_test();
    REQUIRE(sh != nullptr);
    sh->op = xen_pci_op{};
    sh->op.cmd = XEN_PCI_OP_conf_read;
    sh->op.size = 4;
    sh->op.err = 12345;
    std::atomic<bool> stop{false};
    std::thread spam([&] {
        while (!stop.load()) {
            front->kick_for_test();
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    });
    other_guest_works(env, "0001:00:03.0");
    stop = true;
    spam.join();
    CHECK(sh->op.err == 12345);  // never executed: the flag was not set
    // A frontend that sets the flag and never looks again: answered once, nothing else.
    std::atomic_ref(sh->flags).fetch_or(XEN_PCIF_active);
    front->kick_for_test();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while ((std::atomic_ref(sh->flags).load() & XEN_PCIF_active) != 0) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(1ms);
    }
    CHECK(sh->op.err == XEN_PCI_ERR_success);
    CHECK(sh->op.value == 0x00051b36);
}

TEST_CASE("a frontend that dies mid-op releases its device for the next guest", "[pciback][hostile]") {
    Env env;
    {
        Guest g(env, "dying");
        env.attach_bus(g.domid, {"0001:00:02.0"});
        auto front = g.connect();
        auto* sh = front->shared_for_test();
        sh->op = xen_pci_op{};
        sh->op.cmd = XEN_PCI_OP_conf_write;
        sh->op.offset = 4;
        sh->op.size = 2;
        sh->op.value = 0x6;
        std::atomic_ref(sh->flags).fetch_or(XEN_PCIF_active);
        front->kick_for_test();
        // Dies without waiting for the answer.
        REQUIRE(env.ts->destroy(g.domid));
        REQUIRE(env.ts->wait_for_death(g.domid, 10s));
        front.reset();  // its hypercalls and XenStore requests now fail; nothing to wait for
        // What the toolstack does after a death: close and remove the bus.
        (void)xenbus::request_close(*env.xs, DomId(0), "pci", g.domid, 0);
        (void)xenbus::remove_device(*env.xs, DomId(0), "pci", g.domid, 0);
    }
    Guest g2(env, "next");
    env.attach_bus(g2.domid, {"0001:00:02.0"});
    auto front = g2.connect();
    CHECK(front->conf_read(kDev0, 0x04, 2).value() == 0);  // reset
}
