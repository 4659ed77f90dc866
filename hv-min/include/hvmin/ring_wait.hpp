// The wait of a ring consumer or producer with adaptive spinning (xen-abi §1.5): spin on the
// ring's indices while work flows, then arm the event threshold, re-check, and sleep on the
// event channel. Header-only, for backends, frontends and benches. Layer: hv-min (L1) over
// rings (L0) and common. One thread per ring, as the ring templates themselves.
//
//   hv::SpinPolicy spin(opts.spin_window);        // e.g. hv::default_spin()
//   for (;;) {
//       drain(ring); if (ring.push_responses()) ev.notify();
//       pollfd fds[] = {{ev.fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
//       switch (hv::hvmin::wait_for_requests(ring, fds, timeout_ms, spin)) {
//       case hv::WaitOutcome::fd: ev.ack(); break;       // and check stop_fd
//       ...
//   }
#pragma once

#include <poll.h>

#include <span>

#include "hv/rings/ring.hpp"
#include "hv/spin.hpp"
#include "hvmin/client.hpp"

namespace hv::hvmin {

/// Back end: returns once at least `batch` requests are ready (WaitOutcome::work; also when
/// the front end published an impossible req_prod: the next unconsumed() reports it), an fd
/// is readable (fd: ack the event channel), after `timeout_ms` (-1 = forever) or on a poll
/// error. Spins on req_prod first while `policy` allows; its final check arms req_event.
template <rings::RingProtocol P>
WaitOutcome wait_for_requests(rings::BackRing<P>& ring, std::span<pollfd> fds, int timeout_ms,
                              SpinPolicy& policy, unsigned batch = 1) {
    return spin_then_sleep(
        [&] {
            auto n = ring.unconsumed();
            return !n || *n >= batch;
        },
        [&] {
            auto more = ring.final_check_for_requests(batch);
            return !more || *more;
        },
        fds.data(), fds.size(), timeout_ms, policy);
}

/// Front end: the same for responses (a consumer of responses, or a producer waiting for
/// free slots: responses free them). Spins on rsp_prod; the final check arms rsp_event.
template <rings::RingProtocol P>
WaitOutcome wait_for_responses(rings::FrontRing<P>& ring, std::span<pollfd> fds, int timeout_ms,
                               SpinPolicy& policy, unsigned batch = 1) {
    return spin_then_sleep(
        [&] {
            auto n = ring.unconsumed_responses();
            return !n || *n >= batch;
        },
        [&] {
            auto more = ring.final_check_for_responses(batch);
            return !more || *more;
        },
        fds.data(), fds.size(), timeout_ms, policy);
}

/// The common case: sleep on one event channel only; its event is consumed (ack) when it
/// woke the caller, so the caller just drains again after `work` or `fd`.
template <class Ring>
WaitOutcome wait_on_channel(Ring& ring, EventChannelBinding& ev, int timeout_ms, SpinPolicy& policy,
                            unsigned batch = 1) {
    pollfd p{ev.fd(), POLLIN, 0};
    WaitOutcome w;
    if constexpr (requires { ring.final_check_for_requests(batch); }) {
        w = wait_for_requests(ring, std::span<pollfd>(&p, 1), timeout_ms, policy, batch);
    } else {
        w = wait_for_responses(ring, std::span<pollfd>(&p, 1), timeout_ms, policy, batch);
    }
    if (w == WaitOutcome::fd) {
        (void)ev.ack();
    }
    return w;
}

}  // namespace hv::hvmin
