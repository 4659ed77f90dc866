// The BlockEngine contract (style.md §5, §12), run against every engine that works here without
// root: null, memory, and io_uring over a sparse file.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <optional>

#include "blkback/engine.hpp"
#include "engine_test_util.hpp"
#include "temp_dir.hpp"

namespace hv::blk::test {
namespace {

struct Opts {
    std::uint64_t capacity = 4 << 20;
    std::uint32_t queue_depth = 8;
    std::uint32_t max_segments = 16;
    ReadOnly read_only = ReadOnly::no;
};

struct NullKind {
    static constexpr bool stores_data = false;
    std::unique_ptr<BlockEngine> make(const Opts& o) {
        MemoryEngineOptions m;
        m.queue_depth = o.queue_depth;
        m.max_segments = o.max_segments;
        m.read_only = o.read_only;
        auto e = make_null_engine(o.capacity, m);
        REQUIRE(e.has_value());
        return std::move(*e);
    }
};

struct MemoryKind {
    static constexpr bool stores_data = true;
    std::unique_ptr<BlockEngine> make(const Opts& o) {
        MemoryEngineOptions m;
        m.queue_depth = o.queue_depth;
        m.max_segments = o.max_segments;
        m.read_only = o.read_only;
        auto e = make_memory_engine(o.capacity, m);
        REQUIRE(e.has_value());
        return std::move(*e);
    }
};

struct UringFileKind {
    static constexpr bool stores_data = true;
    hv::test::TempDir dir{"hvkit-blk"};
    std::unique_ptr<BlockEngine> make(const Opts& o) {
        const std::string path = (dir / "disk.img").string();
        const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(o.capacity)) == 0);  // sparse image
        ::close(fd);
        UringEngineOptions u;
        u.queue_depth = o.queue_depth;
        u.max_segments = o.max_segments;
        u.read_only = o.read_only;
        auto e = make_uring_engine(path, u);
        REQUIRE(e.has_value());
        return std::move(*e);
    }
};

#define ENGINES NullKind, MemoryKind, UringFileKind

TEMPLATE_TEST_CASE("every queued request completes exactly once with its cookie",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    AlignedBuf buf(8 * 4096);
    buf.fill(1);
    REQUIRE(e->queue_writev(0, std::vector<iovec>{buf.iov(0, 4096)}, 100).has_value());
    REQUIRE(e->queue_readv(4096, std::vector<iovec>{buf.iov(4096, 8192)}, 101).has_value());
    REQUIRE(e->queue_flush(102).has_value());
    REQUIRE(e->queue_writev(65536, std::vector<iovec>{buf.iov(0, 512), buf.iov(8192, 1024)}, 103)
                .has_value());
    REQUIRE(e->queue_discard(1 << 20, 1 << 20, 104).has_value());
    CHECK(e->in_flight() == 5);
    REQUIRE(e->submit().has_value());
    auto got = reap_n(*e, 5);
    REQUIRE(got.size() == 5);
    std::map<std::uint64_t, std::int32_t> by_cookie;
    for (const auto& c : got) {
        CHECK(by_cookie.emplace(c.cookie, c.result).second);  // never twice
    }
    CHECK(by_cookie == std::map<std::uint64_t, std::int32_t>{
                           {100, 4096}, {101, 8192}, {102, 0}, {103, 1536}, {104, 0}});
    CHECK(e->in_flight() == 0);
    IoCompletion extra[4];
    CHECK(e->reap(extra) == 0);
}

TEMPLATE_TEST_CASE("nothing completes before submit", "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    AlignedBuf buf(4096);
    REQUIRE(e->queue_readv(0, std::vector<iovec>{buf.iov(0, 4096)}, 7).has_value());
    IoCompletion out[4];
    CHECK(e->reap(out) == 0);
    pollfd p{e->notify_fd(), POLLIN, 0};
    CHECK(::poll(&p, 1, 20) == 0);
    CHECK(run_one(*e, 7) == 4096);
}

TEMPLATE_TEST_CASE("a full engine answers busy, queues nothing, and accepts again after reaping",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    Opts o;
    o.queue_depth = 4;
    auto e = kind.make(o);
    AlignedBuf buf(4096);
    for (std::uint64_t i = 0; i < 4; ++i) {
        REQUIRE(e->queue_readv(i * 4096, std::vector<iovec>{buf.iov(0, 4096)}, i).has_value());
    }
    auto busy = e->queue_readv(0, std::vector<iovec>{buf.iov(0, 4096)}, 99);
    REQUIRE_FALSE(busy.has_value());
    CHECK(busy.error() == Errc::busy);
    CHECK(e->queue_flush(98).error() == Errc::busy);
    CHECK(e->queue_discard(0, 4096, 97).error() == Errc::busy);
    CHECK(e->in_flight() == 4);
    REQUIRE(e->submit().has_value());
    auto got = reap_n(*e, 4);
    REQUIRE(got.size() == 4);
    for (const auto& c : got) {
        CHECK(c.cookie < 4);  // the refused cookies never complete
    }
    REQUIRE(e->queue_readv(0, std::vector<iovec>{buf.iov(0, 4096)}, 5).has_value());
    CHECK(run_one(*e, 5) == 4096);
}

TEMPLATE_TEST_CASE("data written through scattered iovecs reads back the same",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    const std::uint32_t seed = 0x5eed01;
    INFO("seed " << seed);
    AlignedBuf src(64 * 1024), dst(64 * 1024);
    src.fill(seed);
    // Uneven pieces: 512, 3584, 4096*3, then the rest.
    std::vector<iovec> w{src.iov(0, 512), src.iov(512, 3584), src.iov(4096, 12288),
                         src.iov(16384, 49152)};
    REQUIRE(e->queue_writev(1 << 20, w, 1).has_value());
    CHECK(run_one(*e, 1) == 65536);
    std::vector<iovec> r{dst.iov(0, 32768), dst.iov(32768, 32768)};
    REQUIRE(e->queue_readv(1 << 20, r, 2).has_value());
    CHECK(run_one(*e, 2) == 65536);
    if constexpr (TestType::stores_data) {
        CHECK(dst.same(src));
    } else {
        CHECK(dst.all_zero());  // the null engine never touches buffers
    }
}

TEMPLATE_TEST_CASE("flush completes with result 0", "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    REQUIRE(e->queue_flush(42).has_value());
    CHECK(run_one(*e, 42) == 0);
}

TEMPLATE_TEST_CASE("a discarded range reads back as zeroes and its neighbours keep their data",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    REQUIRE(e->properties().discard);
    AlignedBuf src(3 * 4096), dst(3 * 4096);
    src.fill(7);
    REQUIRE(e->queue_writev(8192, std::vector<iovec>{src.iov(0, 3 * 4096)}, 1).has_value());
    CHECK(run_one(*e, 1) == 3 * 4096);
    REQUIRE(e->queue_discard(12288, 4096, 2).has_value());
    CHECK(run_one(*e, 2) == 0);
    REQUIRE(e->queue_readv(8192, std::vector<iovec>{dst.iov(0, 3 * 4096)}, 3).has_value());
    CHECK(run_one(*e, 3) == 3 * 4096);
    if constexpr (TestType::stores_data) {
        REQUIRE(e->properties().discard_zeroes);
        CHECK(std::memcmp(dst.data(), src.data(), 4096) == 0);
        CHECK(std::all_of(dst.data() + 4096, dst.data() + 8192,
                          [](std::byte b) { return b == std::byte{0}; }));
        CHECK(std::memcmp(dst.data() + 8192, src.data() + 8192, 4096) == 0);
    }
}

TEMPLATE_TEST_CASE("fixed buffers carry data both ways", "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    AlignedBuf arena(16 * 4096);
    arena.fill(11);
    const std::vector<iovec> bufs{arena.iov(0, 8 * 4096), arena.iov(8 * 4096, 8 * 4096)};
    REQUIRE(e->register_buffers(bufs).has_value());
    // Write pages 1 and 3 of buffer 0 and page 0 of buffer 1 as one request.
    const std::vector<FixedIovec> w{{arena.data() + 4096, 4096, 0},
                                    {arena.data() + 3 * 4096, 4096, 0},
                                    {arena.data() + 8 * 4096, 2048, 1}};
    REQUIRE(e->queue_writev_fixed(4096, w, 1).has_value());
    CHECK(run_one(*e, 1) == 4096 + 4096 + 2048);
    // Read them back into pages 12..14 (buffer 1).
    const std::vector<FixedIovec> r{{arena.data() + 12 * 4096, 3 * 4096 - 2048, 1}};
    REQUIRE(e->queue_readv_fixed(4096, r, 2).has_value());
    CHECK(run_one(*e, 2) == 10240);
    if constexpr (TestType::stores_data) {
        const std::byte* got = arena.data() + 12 * 4096;
        CHECK(std::memcmp(got, arena.data() + 4096, 4096) == 0);
        CHECK(std::memcmp(got + 4096, arena.data() + 3 * 4096, 4096) == 0);
        CHECK(std::memcmp(got + 8192, arena.data() + 8 * 4096, 2048) == 0);
    }
    REQUIRE(e->unregister_buffers().has_value());
    CHECK(e->queue_readv_fixed(4096, r, 3).error() == Errc::bad_buffer);
}

TEMPLATE_TEST_CASE("fixed iovecs outside their registered buffer are refused",
                   "[blkback][contract][hostile]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    AlignedBuf arena(4 * 4096);
    REQUIRE(e->register_buffers(std::vector<iovec>{arena.iov(0, 2 * 4096)}).has_value());
    auto refuse = [&](FixedIovec v) {
        auto r = e->queue_readv_fixed(0, std::vector<FixedIovec>{v}, 9);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error() == Errc::bad_buffer);
    };
    refuse({arena.data(), 4096, 1});                  // unknown index
    refuse({arena.data() + 4096, 8192, 0});           // runs past the end
    refuse({arena.data() + 2 * 4096, 4096, 0});       // starts after the end
    refuse({arena.data() - 4096, 4096, 0});           // starts before
    CHECK(e->in_flight() == 0);
    CHECK(e->submit().has_value());
    IoCompletion out[2];
    CHECK(e->reap(out) == 0);
}

TEMPLATE_TEST_CASE("buffers cannot be registered while requests are in flight",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    AlignedBuf arena(4096);
    REQUIRE(e->queue_flush(1).has_value());
    CHECK(e->register_buffers(std::vector<iovec>{arena.iov(0, 4096)}).error() == Errc::in_use);
    CHECK(e->unregister_buffers().error() == Errc::in_use);
    CHECK(run_one(*e, 1) == 0);
    CHECK(e->register_buffers(std::vector<iovec>{arena.iov(0, 4096)}).has_value());
    CHECK(e->register_buffers(std::vector<iovec>{}).error() == Errc::invalid_argument);
}

TEMPLATE_TEST_CASE("misaligned, out-of-range, empty and oversized requests are refused",
                   "[blkback][contract][hostile]", ENGINES) {
    TestType kind;
    Opts o;
    o.max_segments = 4;
    auto e = kind.make(o);
    const std::uint64_t cap = e->properties().capacity_bytes;
    CHECK(cap == o.capacity);
    AlignedBuf buf(8 * 4096);
    auto one = [&](std::size_t len) { return std::vector<iovec>{buf.iov(0, len)}; };
    CHECK(e->queue_readv(100, one(512), 1).error() == Errc::misaligned);
    CHECK(e->queue_readv(0, one(100), 1).error() == Errc::misaligned);
    CHECK(e->queue_writev(cap - 512, one(1024), 1).error() == Errc::out_of_range);
    CHECK(e->queue_readv(cap, one(512), 1).error() == Errc::out_of_range);
    CHECK(e->queue_readv(~std::uint64_t{0} - 511, one(512), 1).error() == Errc::out_of_range);
    CHECK(e->queue_readv(0, std::vector<iovec>{}, 1).error() == Errc::invalid_argument);
    CHECK(e->queue_discard(0, 0, 1).error() == Errc::invalid_argument);
    CHECK(e->queue_discard(cap - 512, 1024, 1).error() == Errc::out_of_range);
    CHECK(e->queue_discard(512, 100, 1).error() == Errc::misaligned);
    std::vector<iovec> five(5, buf.iov(0, 512));
    CHECK(e->queue_readv(0, five, 1).error() == Errc::too_many_parts);
    CHECK(e->in_flight() == 0);
    REQUIRE(e->submit().has_value());
    IoCompletion out[2];
    CHECK(e->reap(out) == 0);
    // The last block is still reachable.
    REQUIRE(e->queue_readv(cap - 512, one(512), 2).has_value());
    CHECK(run_one(*e, 2) == 512);
}

TEMPLATE_TEST_CASE("a read-only engine refuses writes and discards but serves reads and flushes",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    Opts o;
    o.read_only = ReadOnly::yes;
    auto e = kind.make(o);
    CHECK(e->properties().read_only == ReadOnly::yes);
    AlignedBuf buf(4096);
    CHECK(e->queue_writev(0, std::vector<iovec>{buf.iov(0, 4096)}, 1).error() == Errc::read_only);
    CHECK(e->queue_discard(0, 4096, 1).error() == Errc::read_only);
    REQUIRE(e->register_buffers(std::vector<iovec>{buf.iov(0, 4096)}).has_value());
    CHECK(e->queue_writev_fixed(0, std::vector<FixedIovec>{{buf.data(), 4096, 0}}, 1).error() ==
          Errc::read_only);
    REQUIRE(e->queue_readv(0, std::vector<iovec>{buf.iov(0, 4096)}, 2).has_value());
    CHECK(run_one(*e, 2) == 4096);
    REQUIRE(e->queue_flush(3).has_value());
    CHECK(run_one(*e, 3) == 0);
}

TEMPLATE_TEST_CASE("notify_fd is readable while completions wait and quiet once reaped",
                   "[blkback][contract]", ENGINES) {
    TestType kind;
    auto e = kind.make({});
    for (std::uint64_t i = 0; i < 3; ++i) {
        REQUIRE(e->queue_flush(i).has_value());
    }
    REQUIRE(e->submit().has_value());
    pollfd p{e->notify_fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    // Reap one at a time: the fd must stay readable until the last one is taken.
    std::size_t total = 0;
    for (int round = 0; round < 50 && total < 3; ++round) {
        IoCompletion one[1];
        const unsigned n = e->reap(one);
        total += n;
        if (total < 3) {
            p.revents = 0;
            REQUIRE(::poll(&p, 1, 5000) == 1);
        }
    }
    CHECK(total == 3);
    p.revents = 0;
    CHECK(::poll(&p, 1, 0) == 0);
}

}  // namespace
}  // namespace hv::blk::test
