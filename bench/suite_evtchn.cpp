// hvbench suite `evtchn`: event-channel notify round trip between two real domains of an
// in-process hv-min (two hvbench helper processes created through the Toolstack, bound with
// alloc_unbound/bind_interdomain), beside a bare eventfd ping-pong between two processes.
// Sleeping (`notify_rtt_2domains`) and spinning (`notify_rtt_2domains_spin`: each side's
// EventChannelBinding::wait polls for a budget before it sleeps; the peer the same budget).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "procs.hpp"
#include "suites.hpp"

namespace hv::bench {

namespace {

using Clock = std::chrono::steady_clock;

/// Waits (bounded) until `fd` is readable, polling with zero timeouts for `spin` first.
Result<void> wait_readable(int fd, std::chrono::microseconds spin = {}) {
    pollfd p{fd, POLLIN, 0};
    int rc;
    do {
        rc = hv::spin_poll(&p, 1, kWaitTimeoutMs, spin);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        return fail_errno();
    }
    if (rc == 0) {
        return fail(timed_out_error());
    }
    return {};
}

// ---- helper domain side (runs in the domains' processes) ----

std::optional<hvmin::EventChannelBinding> helper_binding;

/// Waits for the port's next event and consumes it. A wake-up whose ack() finds nothing (a
/// spurious event, legal in Xen: e.g. a datagram that raced a spinner's ack) waits again, at
/// most a few times.
Result<void> wait_event(hvmin::EventChannelBinding& b) {
    for (int tries = 0; tries < 16; ++tries) {
        HV_TRY(b.wait(std::chrono::milliseconds(kWaitTimeoutMs)));
        if (b.ack()) {
            return {};
        }
    }
    return fail(bad_data_error());
}

Result<std::string> pong(hvmin::EventChannelBinding& b, std::uint64_t n, ControlLine& ctl) {
    pin_to_cpu(1);
    (void)b.ack();  // nothing stale may answer early
    HV_TRY(ctl.write_line("ok"));
    for (std::uint64_t i = 0; i < n; ++i) {
        HV_TRY(wait_event(b));
        HV_TRY(b.notify());
    }
    return std::string("done");
}

Result<std::string> ping(hvmin::EventChannelBinding& b, std::uint64_t n) {
    pin_to_cpu(0);
    (void)b.ack();
    std::vector<double> ns;
    ns.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        HV_TRY(b.notify());
        HV_TRY(wait_event(b));
        ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
    }
    const Sample s = latency_sample(ns);
    return "ok " + std::to_string(s.p50) + " " + std::to_string(s.p99);
}

}  // namespace

/// Commands: "alloc DOMID" → "ok PORT"; "bind DOMID PORT" → "ok PORT"; "pong N SPIN_US" →
/// "ok", then "done" after answering N events; "ping N SPIN_US" → "ok P50_NS P99_NS" after N
/// round trips. SPIN_US: the binding's wait spin (EventChannelBinding::set_spin).
Result<std::string> evtchn_helper(hvmin::Services& svc, const std::vector<std::string>& w,
                                  ControlLine& ctl) {
    if (w[0] == "alloc" && w.size() == 2) {
        auto dom = parse_u64(w[1]);
        if (!dom) {
            return fail(dom.error());
        }
        auto b = svc.evtchn().alloc_unbound(DomId(static_cast<std::uint16_t>(*dom)));
        if (!b) {
            return fail(b.error());
        }
        helper_binding.emplace(std::move(*b));
        return "ok " + std::to_string(helper_binding->port().get());
    }
    if (w[0] == "bind" && w.size() == 3) {
        auto dom = parse_u64(w[1]);
        auto port = parse_u64(w[2]);
        if (!dom || !port) {
            return fail_errno(EINVAL);
        }
        auto b = svc.evtchn().bind_interdomain(DomId(static_cast<std::uint16_t>(*dom)),
                                               EvtchnPort(static_cast<std::uint32_t>(*port)));
        if (!b) {
            return fail(b.error());
        }
        helper_binding.emplace(std::move(*b));
        return "ok " + std::to_string(helper_binding->port().get());
    }
    if ((w[0] == "pong" || w[0] == "ping") && w.size() == 3 && helper_binding) {
        auto n = parse_u64(w[1]);
        auto spin = parse_u64(w[2]);
        if (!n || !spin || *spin > 1'000'000) {
            return fail_errno(EINVAL);
        }
        helper_binding->set_spin(std::chrono::microseconds(*spin));
        return w[0] == "pong" ? pong(*helper_binding, *n, ctl) : ping(*helper_binding, *n);
    }
    return fail_errno(EINVAL);
}

namespace {

/// Two domains bound to each other: `ping` measures, `pong` answers.
struct DomainPair {
    std::unique_ptr<BenchHost> host;
    std::optional<BenchHost::Domain> ping;
    std::optional<BenchHost::Domain> pong;

    static Result<DomainPair> create() {
        DomainPair p;
        auto h = BenchHost::create();
        if (!h) {
            return fail(h.error());
        }
        p.host = std::move(*h);
        auto a = p.host->spawn("bench-pong", "evtchn", 16, false);
        if (!a) {
            return fail(a.error());
        }
        p.pong.emplace(std::move(*a));
        auto b = p.host->spawn("bench-ping", "evtchn", 16, false);
        if (!b) {
            return fail(b.error());
        }
        p.ping.emplace(std::move(*b));
        auto port = p.pong->ctl.call("alloc " + std::to_string(p.ping->domid.get()));
        if (!port || port->size() != 2) {
            return fail(port ? bad_data_error() : port.error());
        }
        auto bound =
            p.ping->ctl.call("bind " + std::to_string(p.pong->domid.get()) + " " + (*port)[1]);
        if (!bound) {
            return fail(bound.error());
        }
        return p;
    }

    Result<Sample> round_trips(std::uint64_t n, std::chrono::microseconds spin) {
        const std::string args = std::to_string(n) + " " + std::to_string(spin.count());
        HV_TRY(pong->ctl.call("pong " + args));
        auto r = ping->ctl.call("ping " + args, 60'000);
        if (!r) {
            return fail(r.error());
        }
        auto done = pong->ctl.read_line();
        if (!done) {
            return fail(done.error());
        }
        if (*done != "done" || r->size() != 3) {
            return fail(bad_data_error());
        }
        Sample s;
        s.p50 = std::stod((*r)[1]);
        s.p99 = std::stod((*r)[2]);
        s.value = s.p50;
        return s;
    }
};

/// The peer: the same ping-pong over two bare nonblocking eventfds between this process and a
/// forked child (poll, read, write: what an event-channel binding does without hv-min), each
/// wait polling with zero timeouts for `spin` first, as the bindings do.
Result<Sample> eventfd_ping_pong(std::uint64_t n, std::chrono::microseconds spin) {
    UniqueFd to_pong(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    UniqueFd to_ping(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!to_pong.valid() || !to_ping.valid()) {
        return fail_errno();
    }
    auto child = Child::fork([&]() -> Result<void> {
        std::uint64_t v;
        const std::uint64_t one = 1;
        for (std::uint64_t i = 0; i < n; ++i) {
            HV_TRY(wait_readable(to_pong.get(), spin));
            if (::read(to_pong.get(), &v, sizeof v) != sizeof v ||
                ::write(to_ping.get(), &one, sizeof one) != sizeof one) {
                return fail_errno();
            }
        }
        return {};
    });
    if (!child) {
        return fail(child.error());
    }
    std::vector<double> ns;
    ns.reserve(n);
    Result<void> rc;
    std::thread t([&] {
        pin_to_cpu(0);
        rc = [&]() -> Result<void> {
            std::uint64_t v;
            const std::uint64_t one = 1;
            for (std::uint64_t i = 0; i < n; ++i) {
                const auto t0 = Clock::now();
                if (::write(to_pong.get(), &one, sizeof one) != sizeof one) {
                    return fail_errno();
                }
                HV_TRY(wait_readable(to_ping.get(), spin));
                if (::read(to_ping.get(), &v, sizeof v) != sizeof v) {
                    return fail_errno();
                }
                ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
            }
            return {};
        }();
    });
    t.join();
    HV_TRY(rc);
    HV_TRY(child->wait());
    return latency_sample(ns);
}

}  // namespace

int run_evtchn_suite(Context& ctx) {
    const std::uint64_t n = ctx.scale(20'000, 200);
    // Sleeping (the original case), then spinning 50 us before each sleep on both sides.
    struct Mode {
        const char* name;
        const char* peer;
        std::chrono::microseconds spin;
    };
    const Mode modes[] = {
        {"notify_rtt_2domains", "eventfd_2proc", std::chrono::microseconds{0}},
        {"notify_rtt_2domains_spin", "eventfd_2proc_spin", std::chrono::microseconds{50}}};
    std::optional<DomainPair> pair;
    int failures = 0;
    for (const Mode& m : modes) {
        if (!ctx.options().selects(m.name)) {
            continue;
        }
        if (!pair) {
            auto p = DomainPair::create();
            if (!p) {
                std::fprintf(stderr, "hvbench evtchn: cannot set up two domains: %s\n",
                             p.error().message().c_str());
                return 1;
            }
            pair.emplace(std::move(*p));
        }
        auto rc = ctx.run_case(
            {m.name,
             "ns",
             m.peer,
             false,
             {{"round_trips_per_run", std::to_string(n)},
              {"ours", "hv-min event channel, two helper domains"},
              {"peer_sides", "processes"},
              {"spin_us", std::to_string(m.spin.count())}}},
            [&] { return pair->round_trips(n, m.spin); },
            [&] { return eventfd_ping_pong(n, m.spin); });
        failures += rc ? 0 : 1;
    }
    return failures == 0 ? 0 : 1;
}

}  // namespace hv::bench
