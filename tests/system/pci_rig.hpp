// The PCI system tests' rig: hv-min (private rundir) and pciback hosting two emulated testdev
// devices, 0001:00:02.0 and 0001:00:03.0, made assignable; pciback runs either as a dom0
// program or as a driver domain (`kernel = pciback`, driver_domain = 1). Guests run
// `hvdemo-domain pci` (libpcifront), which reports the devices it sees on the status FIFO.
// Every wait is bounded.
#pragma once

#include <signal.h>

#include <catch2/catch.hpp>

#include "hv/subprocess.hpp"
#include "skip.hpp"
#include "tools_harness.hpp"
#include "xenstore/client.hpp"

namespace hv::test::tools {

inline constexpr const char* kTestdev = "1b36:0005";  // pciback's emulated "testdev" model

struct PciRig {
    /// How pciback runs.
    enum class Mode { dom0, driver_domain };
    static constexpr const char* kDriverDomain = "pcidd";

    Daemon d;
    hv::Subprocess pciback;  // Mode::dom0
    int pciback_domid = 0;   // Mode::driver_domain
    std::unique_ptr<hv::xs::Client> xs;

    explicit PciRig(Mode mode = Mode::dom0, const std::string& dd_extra = "") {
        hv::test::require_root();
        REQUIRE(d.ready());
        auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
        REQUIRE(x);
        xs = std::move(*x);
        const std::string emulate =
            "--emulate 0001:00:02.0=testdev --emulate 0001:00:03.0=testdev";
        if (mode == Mode::dom0) {
            hv::SpawnOptions o;
            o.capture_output = false;
            o.log_path = d.dir() + "/pciback.log";
            auto p = hv::Subprocess::spawn({bin_dir + "/pciback", "--rundir", d.rundir(),
                                            "--emulate", "0001:00:02.0=testdev", "--emulate",
                                            "0001:00:03.0=testdev"},
                                           o);
            REQUIRE(p);
            pciback = std::move(*p);
        } else {
            const std::string cfg = d.write_cfg(
                std::string(kDriverDomain) + ".cfg",
                std::string("name = \"") + kDriverDomain +
                    "\"\nmemory = 16\ndriver_domain = 1\nkernel = \"" + bin_dir +
                    "/pciback\"\ncmdline = \"" + emulate + "\"\n" + dd_extra);
            const ProcResult r = d.hvctl({"create", cfg});
            INFO(r.err << d.log());
            REQUIRE(r.rc == 0);
            pciback_domid = created_id(r.out);
        }
        REQUIRE(eventually(
            [&] { return xs->read("/hvkit/pci/emulated/0001-00-03-0").has_value(); }));
        REQUIRE(d.hvctl({"pci-assignable-add", "0001:00:02.0"}).rc == 0);
        REQUIRE(d.hvctl({"pci-assignable-add", "0001:00:03.0"}).rc == 0);
    }
    ~PciRig() {
        for (const char* n : {"hp", "hp2", "c0", "c25"}) {
            (void)d.hvctl({"destroy", n});
        }
        if (pciback_domid != 0) {
            (void)d.hvctl({"destroy", kDriverDomain});
        }
        pciback = hv::Subprocess{};
    }

    std::string logs() const {
        return d.log() + run_process({"/bin/cat", d.dir() + "/pciback.log"}).out;
    }

    /// A pcifront guest named `name` with `pci` as its pci list; its domid.
    int create(const std::string& name, const std::string& pci, const std::string& args = "") {
        const std::string cfg = d.write_cfg(
            name + ".cfg", "name = \"" + name + "\"\nmemory = 16\nkernel = \"" + bin_dir +
                               "/hvdemo-domain\"\ncmdline = \"pci --status " + d.status_fifo() +
                               (args.empty() ? "" : " " + args) + "\"\npci = [ " + pci + " ]\n");
        const ProcResult r = d.hvctl({"create", cfg});
        INFO(r.err << logs());
        REQUIRE(r.rc == 0);
        return created_id(r.out);
    }

    /// `hvctl pci-attach ARGS...`, which must succeed.
    void attach(std::vector<std::string> args) {
        args.insert(args.begin(), "pci-attach");
        const ProcResult r = d.hvctl(args);
        INFO(r.err << logs());
        REQUIRE(r.rc == 0);
    }

    /// hvdemo-domain's report of a bus with testdevs at virtual slot 0, or at slots 0 and 1.
    static std::string one_device() { return std::string("ok pci 0000:00:00.0=") + kTestdev; }
    static std::string two_devices() { return one_device() + " 0000:00:01.0=" + kTestdev; }

    /// The next report of domain `id` other than "attached" (bounded).
    std::string report(int id) {
        const std::string prefix = "pci " + std::to_string(id) + " ";
        for (;;) {
            const std::string l = d.status_line();
            if (l.empty()) {
                return "<no report>";
            }
            if (l.rfind(prefix, 0) == 0 && l != prefix + "attached") {
                return l.substr(prefix.size());
            }
        }
    }
};

}  // namespace hv::test::tools
