// libhv's side of a domain's primary console (xen-abi §8): the ring page and port hv-min's
// domain builder made, and the pump that points fds 0/1/2 at it. Layer: hv-min (L1).
#pragma once

#include <cstdint>

#include "hv/expected.hpp"
#include "hv/mapping.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"
#include "hv/rings/protocols/console.hpp"

namespace hv::hvmin {

class Services;

/// The domain's console ring, mapped by this process (lives independently of Services).
struct GuestConsole {
    Mapping page;              ///< the xencons_interface page. GUEST-shared with hv-min.
    std::uint64_t frame = 0;   ///< its frame (what console/ring-ref says)
    EvtchnPort port{0};
    UniqueFd wait;             ///< readable when hv-min notified us (the port's receiver socket)
    UniqueFd notify;           ///< send a datagram (MSG_DONTWAIT) to notify hv-min
    rings::xencons_interface* intf() const noexcept { return page.as<rings::xencons_interface>(); }
};

/// Fetches the console (Op::console_attach). Errors: ENOENT (dom0, or no console), transport.
Result<GuestConsole> console_attach(Services& svc);

/// Points fds 1 and 2 (output) and 0 (input) at the console ring through pipes and a pump
/// thread; stdout becomes line-buffered. At exit, what was written is pushed to the ring
/// (bounded: 2 s). Called once by Services::attach() unless HV_CONSOLE=off; later calls are
/// no-ops. Errors: console_attach's, pipe/dup2 errno.
Result<void> redirect_stdio_to_console(Services& svc);

}  // namespace hv::hvmin
