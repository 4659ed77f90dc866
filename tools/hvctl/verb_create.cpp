// hvctl create [-n] [-q] [-c] [-e] CFG [KEY=VALUE...]. Layer: tools.
#include <filesystem>
#include <ostream>
#include <chrono>
#include <algorithm>

#include "cli.hpp"
#include "devices.hpp"
#include "pci.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

namespace {

/// The program's environment: a fixed PATH and nothing of hvctl's own (hv-min adds
/// HV_HYPERCALL_FD), so a domain's behaviour does not depend on who ran hvctl.
const std::vector<std::string> domain_env = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};

void print_config(std::ostream& o, const DomainConfig& c, const CreateSpec& s) {
    o << "name: " << c.name << "\n";
    o << "memory: " << c.memory_mib << " MiB (" << s.memory_pages << " pages)\n";
    o << "maxmem: " << c.maxmem_mib << " MiB\n";
    o << "vcpus: " << c.vcpus << "\n";
    o << "kernel: " << s.argv[0] << "\n";
    o << "argv:";
    for (const std::string& a : s.argv) {
        o << " [" << a << "]";
    }
    o << "\n";
    o << "trusted: " << (c.trusted ? 1 : 0) << "\n";
    o << "driver_domain: " << (c.driver_domain ? 1 : 0) << "\n";
    o << "on_poweroff: " << to_string(c.on_poweroff) << "\n";
    o << "on_reboot: " << to_string(c.on_reboot) << "\n";
    o << "on_crash: " << to_string(c.on_crash) << "\n";
    for (const DiskSpec& d : c.disks) {
        o << "disk " << d.vdev << " (" << d.virtual_device << "): target=" << d.target
          << " format=" << to_string(d.format) << " mode=" << d.mode()
          << " device-type=" << d.device_type()
          << " backend=" << (d.backend.empty() ? "Domain-0" : d.backend) << "\n";
    }
    for (const VifSpec& v : c.vifs) {
        o << "vif " << v.devid.value_or(0) << ":";
        if (v.mac) {
            o << " mac=" << v.mac_string();
        }
        if (!v.bridge.empty()) {
            o << " bridge=" << v.bridge;
        }
        if (v.rate) {
            o << " rate=" << v.rate->bytes_per_interval << "," << v.rate->interval_usecs;
        }
        o << " backend=" << (v.backend.empty() ? "Domain-0" : v.backend) << "\n";
    }
    for (const PciSpec& p : c.pcis) {
        o << "pci " << p.bdf() << ": permissive=" << (p.permissive ? 1 : 0)
          << " backend=" << (p.backend.empty() ? "Domain-0" : p.backend) << "\n";
    }
}

/// The xenstore keys libxl writes for each disk and vif of `c`.
std::vector<DeviceReq> device_requests(const DomainConfig& c) {
    std::vector<DeviceReq> out;
    for (const DiskSpec& d : c.disks) {
        out.push_back(disk_device(d));
    }
    std::uint32_t next_devid = 0;
    for (const VifSpec& v : c.vifs) {
        const std::uint32_t devid = v.devid.value_or(next_devid);
        next_devid = devid + 1;
        out.push_back(vif_device(v, devid));
    }
    return out;
}

/// "vbd 51712: backend domain 'NAME' does not exist" (or "... is not a driver domain ...") for
/// the first device whose `backend=` names no live domain or a plain one, "" when all can
/// serve (or the list cannot be read: add_device reports).
std::string missing_backend(Control& c, const std::vector<DeviceReq>& devices) {
    auto rows = c.list();
    if (!rows) {
        return {};
    }
    for (const DeviceReq& dev : devices) {
        if (auto why = check_backend(*rows, dev.backend_domain); why != BackendCheck::ok) {
            return dev.type + " " + std::to_string(dev.devid) + ": " +
                   backend_refusal(why, dev.backend_domain, dev.type);
        }
    }
    return {};
}

/// Every pci device of `cfg` is assignable (seize=1 makes it so) and held by no domain, and
/// all of them name one backend, dom0 or a live driver domain; each registry entry is then
/// made readable by that backend. False after printing why.
bool pci_devices_free(Cli& cli, Control& c, const DomainConfig& cfg) {
    auto rows = c.list();
    if (!rows) {
        cli.err << "hvctl create: " << cfg.name << ": " << rows.error().message() << "\n";
        return false;
    }
    for (const PciSpec& p : cfg.pcis) {
        if (p.backend != cfg.pcis.front().backend) {
            // SPEC: §7.3 one pci device (one backend directory) per guest.
            cli.err << "hvctl create: " << cfg.name << ": pci " << p.bdf() << ": backend '"
                    << p.backend << "' differs from the first device's '"
                    << cfg.pcis.front().backend << "': one backend serves a domain's PCI bus\n";
            return false;
        }
    }
    const auto be = pci_backend_domain(cli, "create", *rows, cfg.pcis.front().backend);
    if (!be) {
        return false;
    }
    const auto held = pci_assignments(c, *rows);
    for (const PciSpec& p : cfg.pcis) {
        const PciAddr a = pci_addr(p);
        if (p.seize && !assignable_driver(c, a) &&
            make_pci_assignable(cli, c, "create", a) != kExitOk) {
            return false;
        }
        if (!pci_check_free(cli, c, "create", *rows, held, a)) {
            return false;
        }
    }
    std::vector<StoreOp> perms;
    for (const PciSpec& p : cfg.pcis) {
        perms.push_back(pci_registry_perms(pci_addr(p), be->domid));
    }
    if (auto r = c.store_transaction(perms); !r) {
        cli.err << "hvctl create: " << cfg.name << ": pci registry permissions: "
                << r.error().message() << "\n";
        return false;
    }
    return true;
}

}  // namespace

int verb_create(Cli& cli, std::span<const std::string> args) {
    bool dry_run = false;
    bool quiet = false;
    bool console = false;
    bool watch = true;
    std::string cfg_path;
    std::vector<std::string> overrides;
    for (const std::string& a : args) {
        if (cfg_path.empty() && a.size() > 1 && a[0] == '-') {
            for (std::size_t k = 1; k < a.size(); ++k) {
                switch (a[k]) {
                    case 'n':
                        dry_run = true;
                        break;
                    case 'q':
                        quiet = true;
                        break;
                    case 'c':
                        console = true;
                        break;
                    case 'e':
                        watch = false;
                        break;
                    default:
                        return verb_usage(cli, "create", "unknown option '" + a + "'");
                }
            }
        } else if (cfg_path.empty()) {
            cfg_path = a;
        } else if (a.find('=') == std::string::npos) {
            return verb_usage(cli, "create", "'" + a + "' is not KEY=VALUE");
        } else {
            overrides.push_back(a);
        }
    }
    if (cfg_path.empty()) {
        return verb_usage(cli, "create", "no domain file given");
    }
    if (!quiet) {
        cli.err << "Parsing config from " << cfg_path << "\n";
    }
    auto cfg = parse_domain_file(cfg_path, overrides);
    if (!cfg) {
        cli.err << cfg.error().message() << "\n";
        return kExitFailure;
    }
    for (const std::string& w : cfg->warnings) {
        cli.err << "warning: " << w << "\n";
    }
    auto argv = split_cmdline(cfg->cmdline);
    if (!argv) {
        cli.err << cfg_path << ": " << argv.error() << "\n";
        return kExitFailure;
    }
    std::error_code ec;
    const std::filesystem::path kernel = std::filesystem::absolute(cfg->kernel, ec);
    if (ec) {
        cli.err << cfg_path << ": kernel '" << cfg->kernel << "': " << ec.message() << "\n";
        return kExitFailure;
    }
    CreateSpec spec;
    spec.name = cfg->name;
    spec.memory_pages = cfg->memory_mib * 256;  // MiB of 4096-byte pages
    spec.argv.push_back(kernel.lexically_normal().string());
    spec.argv.insert(spec.argv.end(), argv->begin(), argv->end());
    spec.env = domain_env;
    spec.trusted = cfg->trusted;
    spec.driver_domain = cfg->driver_domain;

    if (dry_run) {
        print_config(cli.out, *cfg, spec);
        return kExitOk;
    }
    for (const PciSpec& p : cfg->pcis) {
        if (p.all_functions) {
            std::string bdf = p.bdf();
            bdf.back() = '*';
            cli.err << "hvctl create: " << cfg_path << ": pci " << bdf
                    << ": list each function (.F) by itself\n";
            return kExitFailure;
        }
    }
    if (cfg->vcpus != 1 || cfg->maxmem_mib != cfg->memory_mib) {
        cli.err << "warning: " << cfg_path
                << ": vcpus and maxmem are recorded but not enforced: a domain is one process "
                   "with `memory` MiB\n";
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    std::vector<DeviceReq> devices = device_requests(*cfg);
    if (auto missing = missing_backend(*c, devices); !missing.empty()) {
        cli.err << "hvctl create: " << spec.name << ": " << missing << "\n";
        return kExitFailure;
    }
    if (!cfg->pcis.empty()) {
        if (!pci_devices_free(cli, *c, *cfg)) {
            return kExitFailure;
        }
        devices.push_back(pci_device(cfg->pcis, spec.name, cfg->pcis.front().backend));
    }
    // A pciback driver domain's emulated devices: the toolstack records them (the registry is
    // dom0's), and refuses an address someone emulates already.
    std::vector<std::pair<PciAddr, std::string>> emulated;
    if (spec.driver_domain && kernel.filename() == "pciback") {
        emulated = pciback_emulated(*argv);
        if (auto a = emulated_already(*c, emulated)) {
            cli.err << "hvctl create: " << spec.name << ": pci " << to_string(*a)
                    << " is emulated already (" << kPciEmulatedDir << "/" << registry_name(*a)
                    << "): one backend emulates an address\n";
            return kExitFailure;
        }
    }
    auto domid = c->create(spec);
    if (!domid) {
        cli.err << "hvctl create: " << spec.name << ": " << domid.error().message() << "\n";
        return kExitFailure;
    }
    if (auto g = declare_emulated_registry(*c, *domid, emulated); !g) {
        cli.err << "warning: " << spec.name << ": " << kPciEmulatedDir << ": "
                << g.error().message() << " (its emulated devices stay unannounced)\n";
    }
    // libxl's memory keys: static-max (maxmem) and target (memory), in KiB; mem-set and list
    // use them.
    if (auto m = c->set_memory(*domid, cfg->maxmem_mib * 1024, cfg->memory_mib * 1024); !m) {
        cli.err << "warning: " << spec.name << ": memory keys: " << m.error().message() << "\n";
    }
    // hv-guest attaches devices that appear after it started, so writing them now is safe.
    for (const DeviceReq& dev : devices) {
        auto r = c->add_device(*domid, dev);
        if (!r) {
            cli.err << "hvctl create: " << spec.name << ": " << dev.type << " " << dev.devid
                    << ": "
                    << (r.error() == std::errc::no_such_file_or_directory
                            ? "backend domain '" + dev.backend_domain + "' does not exist"
                            : r.error().message())
                    << "\n";
            auto devs = c->devices(*domid);
            if (devs) {
                (void)c->close_devices(*domid, *devs, std::chrono::seconds(2));
            }
            (void)c->destroy(*domid, std::chrono::seconds(10));
            if (devs) {
                (void)c->remove_devices(*domid, *devs);
            }
            return kExitFailure;
        }
    }
    if (watch) {
        (void)start_watcher(cli, *domid, spec.name, spec.driver_domain,
                            to_string(cfg->on_poweroff), to_string(cfg->on_crash), cfg_path,
                            overrides);
    }
    if (!quiet) {
        cli.out << "Created domain " << spec.name << " (id " << *domid << ")\n";
    }
    if (console) {
        cli.out.flush();
        return attach_console(cli, *domid, spec.name);
    }
    return kExitOk;
}

}  // namespace hv::tools
