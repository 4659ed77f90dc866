// The test side of hv_hypercall_donor (tests/support/donor/): a domain program that passes its
// hypercall channel to the test, which then attaches it in-process and plays that domain.
#pragma once

#include <string>

#include "hv/unique_fd.hpp"

namespace hv::test {

/// A listening Unix stream socket at `path` for the donor to connect to (REQUIREs).
UniqueFd listen_for_donor(const std::string& path);

/// Accepts the donor on `listen_fd` and receives the channel it passes (each step ≤ 10 s;
/// REQUIREs). `donor` keeps the connection: the domain lives until it is closed.
UniqueFd receive_donated_channel(int listen_fd, UniqueFd& donor);

}  // namespace hv::test
