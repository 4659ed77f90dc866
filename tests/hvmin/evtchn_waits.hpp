// The ways a domain waits for an event on a port, shared by the tests and hvmin_test_guest
// (their random mixes prove that no way loses a wake-up of another).
#pragma once

#include <poll.h>

#include <cerrno>

#include "hvmin/client.hpp"

namespace hv::hvmin::test {

/// Waits for an event on `b` the way a backend's main loop does: poll(2) on fd(), then ack().
/// A poller never looks at the shared words, so each event that comes while no wait() runs
/// must bring a datagram. False if nothing came for `timeout_ms`.
inline bool poll_and_ack(EventChannelBinding& b, int timeout_ms) {
    for (;;) {
        pollfd p{b.fd(), POLLIN, 0};
        const int n = ::poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n != 1) {
            return false;
        }
        if (b.ack()) {
            return true;
        }  // a spurious wake-up (legal): poll again
    }
}

}  // namespace hv::hvmin::test
