// Faults under load: the emulated controller (in-process, through the vfio-user client)
// fails while a full queue of writes is in flight. Whatever happens, every request's
// callback runs exactly once, every failure is reported as such, and every write the
// driver acknowledged reads back with its data after recovery.
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "emu/nvme/controller.h"
#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace uvio::nvme {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPatience = std::chrono::seconds(30);  // only reached on failure
constexpr uint32_t kBlock = 512;
constexpr uint32_t kBlocksPerWrite = 8;
constexpr size_t kBytes = size_t(kBlock) * kBlocksPerWrite;

struct Harness {
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  std::unique_ptr<emu::Server> server;
  std::unique_ptr<iommu::Device> dev;
  std::unique_ptr<Controller> ctrl;

  Harness(const std::string& faults, const ControllerOptions& opts) {
    MemConfig cfg;
    cfg.total_bytes = 32u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    EXPECT_TRUE(m) << m.status().describe();
    if (!m) return;
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    auto o = emu::nvme::parse_nvme_options({{"size", "16M"}, {"faults", faults}});
    EXPECT_TRUE(o) << o.status().describe();
    if (!o) return;
    auto model = emu::nvme::NvmeController::create(*o);
    EXPECT_TRUE(model) << model.status().describe();
    if (!model) return;
    auto s = emu::Server::create(std::move(*model));
    EXPECT_TRUE(s) << s.status().describe();
    if (!s) return;
    server = std::move(*s);
    auto fd = server->connect();
    EXPECT_TRUE(fd) << fd.status().describe();
    if (!fd) return;
    auto d = iommu::open_vfio_user_fd(*fd, "emu-nvme", *space, {});
    EXPECT_TRUE(d) << d.status().describe();
    if (!d) return;
    dev = std::move(*d);
    auto c = Controller::open(*dev, *mem, opts);
    EXPECT_TRUE(c) << c.status().describe();
    if (c) ctrl = std::move(*c);
  }
  ~Harness() {
    ctrl.reset();
    dev.reset();
    if (server) server->stop();
  }
};

void fill(std::byte* p, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; ++i) p[i] = std::byte((i * 131 + seed * 29 + (i >> 9)) & 0xff);
}

struct Request {
  uint64_t lba = 0;
  int calls = 0;
  IoStatus status = 0;
};
void on_done(void* ctx, IoStatus s) {
  auto* r = static_cast<Request*>(ctx);
  ++r->calls;
  r->status = s;
}

struct Tally {
  uint32_t acknowledged = 0, failed = 0;
};

// Checks the accounting of every request and reads back each acknowledged write.
void verify(Harness& h, QueuePair& q, const std::vector<Request>& reqs, const std::byte* data, Tally* out) {
  Tally t;
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].calls, 1) << "request " << i << " completed " << reqs[i].calls << " times";
    if (reqs[i].status == kStatusSuccess) {
      ++t.acknowledged;
    } else {
      // The driver's own status for commands it ended itself at reset.
      EXPECT_EQ(reqs[i].status, kStatusAbortedByHost) << "request " << i;
      ++t.failed;
    }
  }
  EXPECT_EQ(q.outstanding(), 0u);
  EXPECT_EQ(q.stats().submitted, q.stats().completed);
  auto* back = static_cast<std::byte*>(h.mem->alloc(kBytes, 4096));
  ASSERT_NE(back, nullptr);
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i].status != kStatusSuccess) continue;
    std::memset(back, 0, kBytes);
    Status s = sync_read(q, 1, back, reqs[i].lba, kBlocksPerWrite);
    ASSERT_TRUE(s) << s.describe();
    ASSERT_EQ(std::memcmp(back, data + i * kBytes, kBytes), 0) << "acknowledged write " << i << " reads back wrong";
  }
  h.mem->free(back);
  *out = t;
}

// `total` writes, write i carrying pattern fill(seed.first * i + seed.second), submitted
// as fast as the queue takes them and polled until none is outstanding (or kPatience
// passes). Returns how many were submitted; *data and *reqs are what verify() checks.
uint32_t write_stream(Harness& h, QueuePair& q, uint32_t total, std::pair<uint32_t, uint32_t> seed, std::byte** data,
                      std::vector<Request>* reqs) {
  *data = static_cast<std::byte*>(h.mem->alloc(total * kBytes, 4096));
  if (!*data) {
    ADD_FAILURE() << "no memory for " << total << " writes";
    return 0;
  }
  reqs->assign(total, Request{});
  for (uint32_t i = 0; i < total; ++i) {
    (*reqs)[i].lba = uint64_t(i) * kBlocksPerWrite;
    fill(*data + i * kBytes, kBytes, seed.first * i + seed.second);
  }
  uint32_t next = 0;
  auto deadline = Clock::now() + kPatience;
  while ((next < total || q.outstanding()) && Clock::now() < deadline) {
    while (next < total) {
      int rc = q.submit_write(1, *data + next * kBytes, (*reqs)[next].lba, kBlocksPerWrite, on_done, &(*reqs)[next]);
      if (rc == -EAGAIN) break;
      if (rc != 0) {
        ADD_FAILURE() << "submit_write returned " << rc;
        return next;
      }
      ++next;
    }
    q.poll();
  }
  return next;
}

// CSTS.CFS lands inside a batch of writes that were all in the submission queue before
// the doorbell rang: the controller stops there, so the rest of that batch is certainly
// outstanding when the driver sees the fatal status.
TEST(NvmeFaultsUnderLoad, FatalStatusAmongABatchOfWrites) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  // Bring-up and one queue take 7 admin commands; 7 + 63 * 3 + 20 is the 20th write of
  // the fourth batch.
  Harness h("cfs@" + std::to_string(7 + 63 * 3 + 20), opts);
  ASSERT_TRUE(h.ctrl);
  auto qp = h.ctrl->create_queue_pair({.entries = 64});
  ASSERT_TRUE(qp) << qp.status().describe();
  QueuePair& q = **qp;
  ASSERT_EQ(q.capacity(), 63u);

  constexpr uint32_t kBatches = 10;
  const uint32_t total = kBatches * q.capacity();
  auto* data = static_cast<std::byte*>(h.mem->alloc(total * kBytes, 4096));
  ASSERT_NE(data, nullptr);
  std::vector<Request> reqs(total);
  for (uint32_t i = 0; i < total; ++i) {
    reqs[i].lba = uint64_t(i) * kBlocksPerWrite;
    fill(data + i * kBytes, kBytes, i + 1);
  }
  uint32_t next = 0;
  for (uint32_t b = 0; b < kBatches; ++b) {
    // After the reset the queue takes submissions again once poll() re-created it.
    auto deadline = Clock::now() + kPatience;
    uint32_t end = next + q.capacity();
    while (next < end && Clock::now() < deadline) {
      int rc = q.submit_write(1, data + next * kBytes, reqs[next].lba, kBlocksPerWrite, on_done, &reqs[next]);
      if (rc == -EAGAIN) {
        q.poll();
        continue;
      }
      ASSERT_EQ(rc, 0);
      ++next;
    }
    ASSERT_EQ(next, end) << "batch " << b << " could not be submitted";
    q.flush_submissions();
    while (q.outstanding() && Clock::now() < deadline) q.poll();
    ASSERT_EQ(q.outstanding(), 0u) << "batch " << b << " never completed";
  }
  EXPECT_EQ(h.ctrl->resets(), 1u);
  EXPECT_EQ(q.stats().recoveries, 1u);
  EXPECT_FALSE(h.ctrl->failed());
  Tally t;
  verify(h, q, reqs, data, &t);
  // The 43 writes after the 20th of the fourth batch were never processed.
  EXPECT_GE(t.failed, 63u - 20u);
  EXPECT_EQ(t.acknowledged + t.failed, total);
  EXPECT_EQ(q.stats().errors, t.failed);
  EXPECT_EQ(q.stats().unknown_completions, 0u);
}

// A completion never posted, while the queue is kept full: timeout, abort, reset; the
// lost command and whatever was in flight at the reset fail once, the rest succeed, and
// the stream goes on after recovery.
TEST(NvmeFaultsUnderLoad, DroppedCompletionWithAFullQueue) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  opts.io_timeout_us = 500000;  // far above a healthy command, even on a loaded machine
  Harness h("timeout@300", opts);
  ASSERT_TRUE(h.ctrl);
  auto qp = h.ctrl->create_queue_pair({.entries = 64});
  ASSERT_TRUE(qp) << qp.status().describe();
  QueuePair& q = **qp;

  constexpr uint32_t total = 1200;
  std::byte* data = nullptr;
  std::vector<Request> reqs;
  ASSERT_EQ(write_stream(h, q, total, {7, 3}, &data, &reqs), total);
  ASSERT_EQ(q.outstanding(), 0u);
  EXPECT_EQ(q.stats().timeouts, 1u);
  EXPECT_EQ(q.stats().aborts_sent, 1u);
  EXPECT_EQ(h.ctrl->resets(), 1u);
  EXPECT_EQ(q.stats().unknown_completions, 0u);
  Tally t;
  verify(h, q, reqs, data, &t);
  EXPECT_GE(t.failed, 1u);
  EXPECT_EQ(t.acknowledged + t.failed, total);
  EXPECT_EQ(q.stats().errors, t.failed);
}

// A submission queue whose head stops moving (stall@N: the controller no longer fetches
// I/O, the admin queue still answers) with the queue full: every command waiting in it
// times out, aborts are tried, then one reset ends them all with an error, and the
// stream of writes completes on the re-created queue.
TEST(NvmeFaultsUnderLoad, SubmissionQueueThatNeverMoves) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  opts.io_timeout_us = 500000;  // far above a healthy command, even on a loaded machine
  Harness h("stall@200", opts);
  ASSERT_TRUE(h.ctrl);
  auto qp = h.ctrl->create_queue_pair({.entries = 64});
  ASSERT_TRUE(qp) << qp.status().describe();
  QueuePair& q = **qp;

  constexpr uint32_t total = 800;
  std::byte* data = nullptr;
  std::vector<Request> reqs;
  ASSERT_EQ(write_stream(h, q, total, {5, 1}, &data, &reqs), total);
  ASSERT_EQ(q.outstanding(), 0u);
  EXPECT_GE(q.stats().timeouts, 1u);
  EXPECT_GE(q.stats().aborts_sent, 1u);
  EXPECT_EQ(h.ctrl->resets(), 1u);
  EXPECT_EQ(q.stats().recoveries, 1u);
  EXPECT_FALSE(h.ctrl->failed());
  Tally t;
  verify(h, q, reqs, data, &t);
  EXPECT_GE(t.failed, 1u);
  EXPECT_EQ(t.acknowledged + t.failed, total);
  EXPECT_EQ(q.stats().errors, t.failed);
  EXPECT_EQ(q.stats().unknown_completions, 0u);
}

}  // namespace
}  // namespace uvio::nvme
