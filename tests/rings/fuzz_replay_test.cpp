// Replays the libFuzzer target (tests/fuzz/rings_fuzz.cpp) on seeded random inputs so every
// build, not only the clang fuzz build, runs the reference-model checks.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

TEST_CASE("random shared pages and hostile indices never break the ring model",
          "[rings][hostile]") {
    const std::uint32_t seed = 0xF022u;
    std::printf("rings fuzz replay: seed %#x\n", seed);
    std::mt19937 rng(seed);
    std::vector<std::uint8_t> buf;
    for (int iter = 0; iter < 3000; ++iter) {
        buf.resize(rng() % 1200);
        for (auto& b : buf) {
            b = static_cast<std::uint8_t>(rng());
        }
        // Bias half the inputs towards plausible indices: small start, short patterns.
        if (iter % 2 == 0 && buf.size() > 6) {
            buf[1] = buf[2] = buf[3] = 0;
            buf[5] = static_cast<std::uint8_t>(buf[5] % 16);
        }
        REQUIRE(LLVMFuzzerTestOneInput(buf.data(), buf.size()) == 0);
    }
}
