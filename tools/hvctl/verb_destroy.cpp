// hvctl destroy NAME|ID. Layer: tools.
#include <ostream>

#include "cli.hpp"

namespace hv::tools {

int verb_destroy(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 1) {
        return verb_usage(cli, "destroy", args.empty() ? "which domain?" : "too many arguments");
    }
    if (!args[0].empty() && args[0][0] == '-') {
        return verb_usage(cli, "destroy", "unknown option '" + args[0] + "'");
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto rows = c->list();
    if (!rows) {
        cli.err << "hvctl destroy: " << rows.error().message() << "\n";
        return kExitFailure;
    }
    auto dom = resolve_domain(*rows, args[0]);
    if (!dom) {
        cli.err << "hvctl destroy: " << dom.error() << "\n";
        return kExitFailure;
    }
    if (dom->domid == 0) {
        cli.err << "hvctl destroy: Domain-0 cannot be destroyed\n";
        return kExitFailure;
    }
    auto r = c->destroy(dom->domid, std::chrono::seconds(10));
    if (!r) {
        cli.err << "hvctl destroy: " << dom->name << " (" << dom->domid
                << "): " << r.error().message() << "\n";
        return kExitFailure;
    }
    return kExitOk;
}

}  // namespace hv::tools
