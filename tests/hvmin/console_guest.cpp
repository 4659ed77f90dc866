// hvmin_console_guest: a domain program for the console tests.
//   echo TEXT      prints TEXT, then answers each stdin line L with "got: L" ("quit" ends it)
//   bulk BYTES     prints BYTES bytes of numbered lines, then "bulk done", and exits
//   hostile WHAT [GO]  (HV_CONSOLE=off) corrupts its console ring: WHAT = out (out_prod beyond
//                  the ring) or in (in_cons beyond it), notifies, and waits to be destroyed; with
//                  GO, only once the file GO exists (the test connects its client first)
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "hvmin/client.hpp"
#include "hvmin/console.hpp"

int main(int argc, char** argv) {
    alarm(60);  // never outlive a broken test
    if (argc < 3) {
        return 2;
    }
    auto svc = hv::hvmin::attach();
    if (!svc) {
        std::fprintf(stderr, "attach: %s\n", svc.error().message().c_str());
        return 1;
    }
    const std::string mode = argv[1];
    if (mode == "echo") {
        std::printf("%s\n", argv[2]);
        std::string line;
        while (std::getline(std::cin, line)) {
            if (line == "quit") {
                std::printf("bye\n");
                return 0;
            }
            std::printf("got: %s\n", line.c_str());
        }
        return 0;
    }
    if (mode == "bulk") {
        const long want = std::atol(argv[2]);
        long done = 0;
        for (long i = 0; done < want; ++i) {
            done += std::printf("line %08ld ..................................................\n", i);
        }
        std::printf("bulk done\n");
        return 0;
    }
    if (mode == "hostile") {
        auto con = hv::hvmin::console_attach(*svc);
        if (!con) {
            return 1;
        }
        if (argc > 3) {
            while (::access(argv[3], F_OK) != 0) {
                ::usleep(5000);
            }
        }
        auto* intf = con->intf();
        if (std::strcmp(argv[2], "out") == 0) {
            std::atomic_ref(intf->out_prod).store(intf->out_cons + 5000, std::memory_order_release);
        } else {
            std::atomic_ref(intf->in_cons).store(intf->in_prod + 3000, std::memory_order_release);
        }
        const std::uint64_t one = 1;
        (void)!::write(con->notify.get(), &one, sizeof one);
        for (;;) {
            ::pause();
        }
    }
    return 2;
}
