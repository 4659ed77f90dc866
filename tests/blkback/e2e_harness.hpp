// blkback end-to-end harness: the real hv-min core in-process (with its XenStore), the real
// Backend (dom0, its own hv-min and XenStore connections), and frontend domains that are real
// hv-min domains whose hypercall channel the test attaches in-process (hv_hypercall_donor). A raw test
// frontend builds real rings in the domain's memory, so hostile requests can be written too.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blkback/device.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"
#include "hvmin/toolstack.hpp"
#include "temp_dir.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::blk::test {

using namespace std::chrono_literals;
using xenbus::XenbusState;

/// hv-min core + toolstack (the test process is dom0) + the backend under test.
struct Env {
    explicit Env(std::optional<BackendOptions> backend = BackendOptions{});
    ~Env();
    void start_backend(BackendOptions opt);
    void stop_backend();
    /// A sparse image file of `bytes` in the temp dir.
    std::string image(const std::string& name, std::uint64_t bytes);

    hv::test::TempDir dir{"blkback-e2e"};
    std::unique_ptr<hvmin::Core> core;
    std::optional<hvmin::Toolstack> ts;
    std::unique_ptr<xs::Client> xs;  // the toolstack's (dom0) XenStore connection
    std::optional<hvmin::Services> be_svc;
    std::unique_ptr<xs::Client> be_xs;
    std::unique_ptr<Backend> backend;
};

/// A frontend domain, attached in this process.
class Guest {
public:
    Guest(Env& env, const std::string& name, std::uint64_t pages = 1024);
    ~Guest();
    /// The domain dies (its program exits); waits until hv-min has released it.
    void kill();
    /// A fresh frame of the domain's initial memory (never reused).
    std::uint64_t alloc_frame();
    std::byte* frame_ptr(std::uint64_t frame);

    Env& env;
    DomId domid{0};
    std::optional<hvmin::Services> svc;
    std::unique_ptr<xs::Client> xs;

private:
    UniqueFd donor_;
    std::uint64_t next_frame_ = 1;
};

struct VbdOptions {
    unsigned queues = 1;
    unsigned ring_order = 0;         ///< log2 ring pages
    bool write_order_key = false;    ///< write ring-page-order even for one page (ring-ref0)
    const char* protocol = "x86_64-abi";  ///< nullptr: do not write it (backend assumes x86_32)
    bool persistent = false;
    std::string mode = "w";
    DomId backend{0};                ///< the backend domain (a driver domain, or dom0)
};

struct Response {
    std::uint64_t id;
    std::uint8_t operation;
    std::int16_t status;
};

/// A data page of the guest, granted to the backend.
struct Page {
    std::uint64_t frame;
    GrantRef gref;
    std::byte* data;
};

/// The raw test frontend of one vbd (devid), following blkfront's handshake.
class Vbd {
public:
    Vbd(Env& env, Guest& g, std::uint32_t devid, const std::string& params, VbdOptions o = {},
        std::map<std::string, std::string> extra_backend_keys = {});
    ~Vbd();
    std::string bdir() const;
    std::string fdir() const;

    /// Waits (≤ 10 s) until the backend's state is `s`; false on timeout.
    bool wait_backend(XenbusState s, std::chrono::milliseconds timeout = 10s);
    /// Waits (bounded, on a watch) until backend key `key` reads `value`.
    bool wait_key(const std::string& key, const std::string& value,
                  std::chrono::milliseconds timeout = 10s);
    std::string backend_key(const std::string& key);
    /// Backend InitWait → rings, grants, channels, keys → Initialised → backend `reached`
    /// (Connected; Closing for a test of a vbd the backend must refuse).
    void connect(XenbusState reached = XenbusState::XenbusStateConnected);
    /// Frees rings, channels (not the data pages) and goes Initialising again.
    void drop_rings();
    void set_state(XenbusState s);

    bool native() const { return abi_native_; }
    std::size_t entry_size() const { return abi_native_ ? 112 : 108; }
    unsigned ring_size() const { return ring_size_; }

    /// A guest page granted to the backend (readonly grant when `readonly`).
    Page page(bool readonly = false);
    /// Request builders (the layout follows the negotiated ABI).
    std::vector<std::byte> rw(std::uint8_t op, std::uint64_t id, std::uint64_t sector,
                              const std::vector<rings::blkif_request_segment>& segs,
                              std::uint8_t nr_segments_override = 0xFF);
    std::vector<std::byte> discard(std::uint64_t id, std::uint64_t sector, std::uint64_t nr,
                                   std::uint8_t flag = 0);
    std::vector<std::byte> indirect(std::uint8_t indirect_op, std::uint64_t id,
                                    std::uint64_t sector, std::uint16_t nr_segments,
                                    const std::vector<GrantRef>& pages);
    /// Puts a request on queue q (not yet pushed).
    void put(unsigned q, const std::vector<std::byte>& req);
    void push(unsigned q);
    /// Overwrites req_prod (hostile) and kicks.
    void set_req_prod(unsigned q, std::uint32_t v);
    /// Collects n responses of queue q (≤ timeout). Fewer on timeout.
    std::vector<Response> responses(unsigned q, std::size_t n,
                                    std::chrono::milliseconds timeout = 10s);
    /// put + push + responses(1).
    Response submit(unsigned q, const std::vector<std::byte>& req);

    Env& env;
    Guest& guest;
    std::uint32_t devid;

private:
    struct Queue {
        std::byte* mem = nullptr;
        std::vector<GrantRef> refs;
        hvmin::EventChannelBinding evtchn;
        std::uint32_t req_prod_pvt = 0;
        std::uint32_t rsp_cons = 0;
    };
    VbdOptions o_;
    bool abi_native_ = true;
    unsigned ring_size_ = 0;
    std::vector<Queue> queues_;
};

/// Reads `len` bytes of a file at `off`.
std::vector<std::byte> read_file(const std::string& path, std::uint64_t off, std::size_t len);
/// Fills a page with a pattern derived from `seed`.
void fill(std::byte* p, std::size_t len, std::uint32_t seed);
rings::blkif_request_segment seg(GrantRef g, std::uint8_t first = 0, std::uint8_t last = 7);
/// Writes `pages` whole pages at `sector` through queue q (ids 7000/9000 + seed), reads them
/// back into fresh pages and checks both `image` (the backing file) and the data read.
void write_read_check(Vbd& v, const std::string& image, unsigned q, std::uint64_t sector,
                      unsigned pages, std::uint32_t seed);

}  // namespace hv::blk::test
