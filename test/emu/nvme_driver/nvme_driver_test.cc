// The NVMe driver against the emulated controller, through the real vfio-user path: the
// server's device thread on one side of a socketpair, the vfio-user client backend on
// the other, DMA through the runtime's memory as in production.
#include <uvio/cycles.h>
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "emu/nvme/controller.h"
#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "pmd/nvme/driver.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <thread>
#include <string>
#include <vector>

namespace uvio::nvme {
namespace {

using Args = std::map<std::string, std::string>;

struct Emulated {
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  std::unique_ptr<emu::Server> server;
  std::unique_ptr<iommu::Device> dev;
  std::unique_ptr<Controller> ctrl;

  explicit Emulated(const Args& args = {}, ControllerOptions opts = {}) {
    MemConfig cfg;
    cfg.total_bytes = 32u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    EXPECT_TRUE(m) << m.status().describe();
    if (!m) return;
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    Args all = {{"size", "4M"}};
    for (auto& [k, v] : args) all[k] = v;
    auto o = emu::nvme::parse_nvme_options(all);
    EXPECT_TRUE(o) << o.status().describe();
    auto model = emu::nvme::NvmeController::create(*o);
    EXPECT_TRUE(model) << model.status().describe();
    auto s = emu::Server::create(std::move(*model));
    EXPECT_TRUE(s) << s.status().describe();
    server = std::move(*s);
    auto fd = server->connect();
    EXPECT_TRUE(fd) << fd.status().describe();
    auto d = iommu::open_vfio_user_fd(*fd, "emu-nvme", *space, {});
    EXPECT_TRUE(d) << d.status().describe();
    if (!d) return;
    dev = std::move(*d);
    auto c = Controller::open(*dev, *mem, opts);
    EXPECT_TRUE(c) << c.status().describe();
    if (c) ctrl = std::move(*c);
  }
  ~Emulated() {
    ctrl.reset();
    dev.reset();
    if (server) server->stop();
  }
  QueuePair* queue(QueueOptions q = {}) {
    auto r = ctrl->create_queue_pair(q);
    EXPECT_TRUE(r) << r.status().describe();
    return r ? *r : nullptr;
  }
  // DMA memory freed with the harness.
  std::byte* buffer(size_t bytes) {
    auto* p = static_cast<std::byte*>(mem->alloc(bytes, 4096));
    EXPECT_NE(p, nullptr);
    return p;
  }
};

void fill(std::byte* p, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; ++i) p[i] = std::byte((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}

struct Outcome {
  int calls = 0;
  IoStatus status = 0;
};
void record(void* ctx, IoStatus s) {
  auto* o = static_cast<Outcome*>(ctx);
  ++o->calls;
  o->status = s;
}

// Polls until every outcome has been called or the queue has nothing outstanding.
void drain(QueuePair& q) {
  while (q.outstanding()) q.poll();
}

class NvmeDriverDoorbells : public ::testing::TestWithParam<bool> {};

TEST_P(NvmeDriverDoorbells, BringUpAndIdentify) {
  ControllerOptions opts;
  opts.shadow_doorbells = GetParam();
  Emulated e({{"serial", "DRV42"}, {"ns", "2"}}, opts);
  ASSERT_TRUE(e.ctrl);
  const ControllerInfo& info = e.ctrl->info();
  EXPECT_EQ(info.serial, "DRV42");
  EXPECT_EQ(info.version, 0x00010400u);
  EXPECT_EQ(info.shadow_doorbells, GetParam());
  EXPECT_TRUE(info.write_zeroes);
  EXPECT_TRUE(info.dataset_management);
  EXPECT_GE(info.io_queues, 1u);
  EXPECT_EQ(info.max_transfer_bytes, 128u << 10);  // the model's MDTS of 5
  ASSERT_EQ(e.ctrl->namespaces().size(), 2u);
  EXPECT_EQ(e.ctrl->namespaces()[0].id, 1u);
  EXPECT_EQ(e.ctrl->namespaces()[0].block_bytes, 512u);
  EXPECT_EQ(e.ctrl->namespaces()[0].blocks, (4u << 20) / 512);
  EXPECT_NE(e.ctrl->find_namespace(2), nullptr);
  EXPECT_EQ(e.ctrl->find_namespace(3), nullptr);
}

// One page (PRP1 only), two pages (PRP2 is the second page), many pages (PRP2 points
// at a list), and a buffer starting mid-page so every page boundary moves.
TEST_P(NvmeDriverDoorbells, WriteReadBackEveryPrpShape) {
  ControllerOptions opts;
  opts.shadow_doorbells = GetParam();
  Emulated e({}, opts);
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  struct Case {
    size_t offset, bytes;
    uint64_t lba;
  } cases[] = {{0, 512, 0}, {0, 4096, 8}, {0, 8192, 16}, {0, 64 << 10, 64}, {512, 12288, 300},
               {3584, 8192, 400}, {0, 128 << 10, 1000}};
  uint32_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "offset " << c.offset << " bytes " << c.bytes);
    std::byte* out = e.buffer(c.offset + c.bytes);
    std::byte* in = e.buffer(c.offset + c.bytes);
    fill(out + c.offset, c.bytes, seed++);
    std::memset(in, 0xee, c.offset + c.bytes);
    uint32_t blocks = static_cast<uint32_t>(c.bytes / 512);
    ASSERT_TRUE(sync_write(*q, 1, out + c.offset, c.lba, blocks));
    ASSERT_TRUE(sync_read(*q, 1, in + c.offset, c.lba, blocks));
    EXPECT_EQ(std::memcmp(in + c.offset, out + c.offset, c.bytes), 0);
    for (size_t i = 0; i < c.offset; ++i) ASSERT_EQ(in[i], std::byte(0xee)) << "read wrote before its buffer";
  }
  EXPECT_EQ(q->stats().errors, 0u);
  EXPECT_EQ(q->stats().unknown_completions, 0u);
  EXPECT_EQ(q->stats().submitted, q->stats().completed);
  if (GetParam()) {
    // One command at a time: by each ring the model has consumed the last tail and set
    // EventIdx behind it, so only the first ring (EventIdx still 0) needs the MMIO write.
    EXPECT_LE(q->stats().sq_doorbell_writes, 1u);
    EXPECT_LE(q->stats().cq_doorbell_writes, 1u);
  } else {
    EXPECT_EQ(q->stats().sq_doorbell_writes, q->stats().submitted);
    EXPECT_EQ(q->stats().cq_doorbell_writes, q->stats().completed);
  }
}

TEST_P(NvmeDriverDoorbells, ManyInFlightCompleteExactlyOnceAcrossWraps) {
  ControllerOptions opts;
  opts.shadow_doorbells = GetParam();
  Emulated e({}, opts);
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue({.entries = 16});
  ASSERT_NE(q, nullptr);
  constexpr int kIos = 200;  // many laps of a 16-entry queue
  std::byte* data = e.buffer(kIos * 512);
  fill(data, kIos * 512, 9);
  std::vector<Outcome> outcomes(kIos);
  for (int i = 0; i < kIos;) {
    int rc = q->submit_write(1, data + i * 512, i, 1, record, &outcomes[i]);
    if (rc == -EAGAIN) {
      q->poll();
      continue;
    }
    ASSERT_EQ(rc, 0);
    ++i;
  }
  drain(*q);
  for (auto& o : outcomes) {
    EXPECT_EQ(o.calls, 1);
    EXPECT_EQ(o.status, kStatusSuccess);
  }
  std::byte* back = e.buffer(kIos * 512);
  ASSERT_TRUE(sync_read(*q, 1, back, 0, kIos));
  EXPECT_EQ(std::memcmp(back, data, kIos * 512), 0);
}

INSTANTIATE_TEST_SUITE_P(ShadowOnOff, NvmeDriverDoorbells, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "shadow" : "mmio"; });

TEST(NvmeDriver, FlushWriteZeroesAndDeallocate) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* data = e.buffer(16 * 512);
  std::byte* back = e.buffer(16 * 512);
  fill(data, 16 * 512, 3);
  ASSERT_TRUE(sync_write(*q, 1, data, 100, 16));
  ASSERT_TRUE(sync_flush(*q, 1));
  ASSERT_TRUE(sync_write_zeroes(*q, 1, 102, 2));  // blocks 102, 103
  ASSERT_TRUE(sync_read(*q, 1, back, 100, 16));
  for (size_t i = 0; i < 16 * 512; ++i) {
    bool zeroed = i >= 2 * 512 && i < 4 * 512;
    ASSERT_EQ(back[i], zeroed ? std::byte(0) : data[i]) << "byte " << i;
  }
  DsmRange ranges[] = {{.lba = 106, .blocks = 1}, {.lba = 110, .blocks = 3}};
  ASSERT_TRUE(sync_dsm(*q, 1, ranges, kDsmDeallocate));
  ASSERT_TRUE(sync_read(*q, 1, back, 100, 16));
  for (size_t i = 0; i < 16 * 512; ++i) {
    size_t block = 100 + i / 512;
    bool zeroed = block == 102 || block == 103 || block == 106 || (block >= 110 && block < 113);
    ASSERT_EQ(back[i], zeroed ? std::byte(0) : data[i]) << "byte " << i;
  }
}

TEST(NvmeDriver, QueueFullGivesBackPressure) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue({.entries = 8});
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(q->capacity(), 7u);
  std::byte* buf = e.buffer(4096);
  std::vector<Outcome> outcomes(8);
  for (int i = 0; i < 7; ++i) ASSERT_EQ(q->submit_read(1, buf, i, 1, record, &outcomes[i]), 0);
  EXPECT_EQ(q->submit_read(1, buf, 7, 1, record, &outcomes[7]), -EAGAIN);
  EXPECT_EQ(q->submit_flush(1, record, &outcomes[7]), -EAGAIN);
  EXPECT_EQ(q->outstanding(), 7u);
  drain(*q);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(outcomes[i].calls, 1);
  EXPECT_EQ(outcomes[7].calls, 0);
  EXPECT_EQ(q->submit_read(1, buf, 7, 1, record, &outcomes[7]), 0);
  drain(*q);
  EXPECT_EQ(outcomes[7].calls, 1);
}

TEST(NvmeDriver, BadArgumentsAreRefusedBeforeTheDevice) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* buf = e.buffer(4096);
  std::vector<std::byte> heap(4096);  // not runtime memory: no IOVA
  Outcome o;
  EXPECT_EQ(q->submit_read(1, heap.data(), 0, 1, record, &o), -EFAULT);
  EXPECT_EQ(q->submit_read(9, buf, 0, 1, record, &o), -EINVAL);       // no namespace 9
  EXPECT_EQ(q->submit_read(1, buf + 2, 0, 1, record, &o), -EINVAL);   // PRP1 must be dword aligned
  EXPECT_EQ(q->submit_read(1, buf, 0, 0, record, &o), -EINVAL);
  uint32_t too_many = e.ctrl->info().max_transfer_bytes / 512 + 1;     // above MDTS
  EXPECT_EQ(q->submit_read(1, buf, 0, too_many, record, &o), -EINVAL);
  EXPECT_EQ(q->submit_dsm(1, {}, kDsmDeallocate, record, &o), -EINVAL);
  EXPECT_EQ(q->outstanding(), 0u);
  EXPECT_EQ(q->stats().submitted, 0u);
  EXPECT_EQ(o.calls, 0);
}

TEST(NvmeDriver, DeviceErrorsAreDecoded) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* buf = e.buffer(4096);
  uint64_t blocks = e.ctrl->namespaces()[0].blocks;

  Status s = sync_read(*q, 1, buf, blocks - 1, 2);  // runs past the end
  EXPECT_EQ(s.code(), ERANGE);
  EXPECT_NE(s.message().find("LBA Out of Range"), std::string::npos) << s.message();

  Outcome o;
  ASSERT_EQ(q->submit_write(1, buf, blocks, 1, record, &o), 0);
  drain(*q);
  EXPECT_EQ(o.calls, 1);
  EXPECT_EQ(o.status & 0x7ff, 0x080);  // generic, LBA Out of Range

  s = sync_flush(*q, 77);  // the driver passes flush NSIDs through; the device refuses this one
  EXPECT_EQ(s.code(), EINVAL);
  EXPECT_NE(s.message().find("Invalid Namespace or Format"), std::string::npos) << s.message();

  DsmRange bad[] = {{.lba = blocks, .blocks = 4}};
  s = sync_dsm(*q, 1, bad, kDsmDeallocate);
  EXPECT_EQ(s.code(), ERANGE);
  EXPECT_EQ(q->stats().errors, 4u);
  // The queue goes on working after errors.
  EXPECT_TRUE(sync_read(*q, 1, buf, 0, 1));
}

TEST(NvmeDriver, EventIndexRuleAcrossTheWrap) {
  // EventIdx 5: moving from 5 to 6 passes it; from 6 to 9 does not.
  EXPECT_TRUE(doorbell_needed(5, 6, 5, 16));
  EXPECT_FALSE(doorbell_needed(5, 9, 6, 16));
  EXPECT_TRUE(doorbell_needed(5, 9, 3, 16));
  // Wrapping: from 14 to 2 passes EventIdx 15 and 0, not 3.
  EXPECT_TRUE(doorbell_needed(15, 2, 14, 16));
  EXPECT_TRUE(doorbell_needed(0, 2, 14, 16));
  EXPECT_FALSE(doorbell_needed(3, 2, 14, 16));
  // A device that consumed up to `old` and asks for nothing sets EventIdx = old - 1.
  EXPECT_FALSE(doorbell_needed(13, 2, 14, 16));
  // Garbage beyond the queue size is taken modulo it, never read out of range.
  EXPECT_TRUE(doorbell_needed(16 + 5, 6, 5, 16));
}

TEST(NvmeDriver, StatusStrings) {
  EXPECT_EQ(nvme_status_string(0x4080), "LBA Out of Range (generic, sc 0x80, do not retry)");
  EXPECT_EQ(nvme_status_string(0x0002), "Invalid Field in Command (generic, sc 0x02)");
  EXPECT_EQ(nvme_status_string(0x0101), "Invalid Queue Identifier (command specific, sc 0x01)");
  EXPECT_EQ(nvme_status_string(0x0281), "Unrecovered Read Error (media error, sc 0x81)");
  EXPECT_EQ(nvme_status_string(kStatusAbortedByHost), "Command Aborted By Host (path, sc 0x71)");
  EXPECT_EQ(nvme_status_string(0x2000 | 0x00fe), "Unknown Status (generic, sc 0xfe, more in log)");
  EXPECT_TRUE(status_ok(0));
  EXPECT_FALSE(status_ok(0x0007));
}

// CSTS.CFS after the 20th command: the queue's health check sees it, the controller is
// reset, what was outstanding completes once with an error, and I/O works again.
TEST(NvmeDriver, FatalStatusResetsAndFailsOutstandingOnce) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  Emulated e({{"faults", "cfs@20"}}, opts);
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* buf = e.buffer(64 * 512);
  // The model counts admin commands too: bring-up and queue creation take 7, so the
  // fault lands among the reads.
  std::vector<Outcome> outcomes(64);
  for (int i = 0; i < 64; ++i) ASSERT_EQ(q->submit_read(1, buf + i * 512, i, 1, record, &outcomes[i]), 0);
  q->flush_submissions();
  while (e.ctrl->resets() == 0 || q->outstanding()) q->poll();
  int ok = 0, failed = 0;
  for (auto& o : outcomes) {
    EXPECT_EQ(o.calls, 1);
    if (o.status == kStatusSuccess) ++ok;
    else {
      EXPECT_EQ(o.status, kStatusAbortedByHost);
      ++failed;
    }
  }
  EXPECT_EQ(ok + failed, 64);
  EXPECT_EQ(e.ctrl->resets(), 1u);
  EXPECT_EQ(q->stats().recoveries, 1u);
  EXPECT_FALSE(e.ctrl->failed());
  std::byte* data = e.buffer(4096);
  fill(data, 4096, 5);
  ASSERT_TRUE(sync_write(*q, 1, data, 8, 8));
  std::byte* back = e.buffer(4096);
  ASSERT_TRUE(sync_read(*q, 1, back, 8, 8));
  EXPECT_EQ(std::memcmp(back, data, 4096), 0);
}

// A completion the device never posts: timeout, Abort (which finds nothing to abort, the
// command having run), then a controller reset that fails the command with an error.
TEST(NvmeDriver, DroppedCompletionTimesOutAbortsThenResets) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  opts.io_timeout_us = 250000;  // far above a healthy command, even on a loaded machine
  Emulated e({{"faults", "timeout@20"}}, opts);
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* buf = e.buffer(4096);
  int errors = 0;
  Status last;
  for (int i = 0; i < 40; ++i) {
    Status s = sync_read(*q, 1, buf, i, 1);
    if (!s) {
      ++errors;
      last = s;
    }
  }
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(last.code(), ECANCELED);
  EXPECT_NE(last.message().find("Command Aborted By Host"), std::string::npos) << last.message();
  EXPECT_EQ(q->stats().timeouts, 1u);
  EXPECT_EQ(q->stats().aborts_sent, 1u);
  EXPECT_EQ(e.ctrl->resets(), 1u);
  EXPECT_EQ(q->stats().unknown_completions, 0u);
}

// A completion with a command id that is not outstanding is counted and ignored; the
// command it should have completed then times out and is ended by reset.
TEST(NvmeDriver, UnknownCommandIdIsCountedAndIgnored) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  opts.io_timeout_us = 250000;  // far above a healthy command, even on a loaded machine
  Emulated e({{"faults", "badcid@20"}}, opts);
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* buf = e.buffer(4096);
  std::vector<Outcome> outcomes(40);
  for (int i = 0; i < 40; ++i) {
    ASSERT_EQ(q->submit_read(1, buf, i, 1, record, &outcomes[i]), 0);
    drain(*q);
  }
  int failed = 0;
  for (auto& o : outcomes) {
    EXPECT_EQ(o.calls, 1);
    failed += o.status != kStatusSuccess;
  }
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(q->stats().unknown_completions, 1u);
  EXPECT_EQ(q->stats().timeouts, 1u);
}

// A completion posted with the previous lap's phase tag is invisible to the driver: the
// command times out like a dropped one, and the queue recovers.
TEST(NvmeDriver, StalePhaseTagIsNotTakenAsACompletion) {
  ControllerOptions opts;
  opts.health_check_polls = 1;
  opts.io_timeout_us = 250000;  // far above a healthy command, even on a loaded machine
  Emulated e({{"faults", "phase@20"}}, opts);
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue();
  ASSERT_NE(q, nullptr);
  std::byte* buf = e.buffer(4096);
  int errors = 0;
  for (int i = 0; i < 40; ++i) errors += !sync_read(*q, 1, buf, i, 1);
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(q->stats().timeouts, 1u);
  EXPECT_EQ(e.ctrl->resets(), 1u);
}

TEST(NvmeDriver, ExplicitResetRecreatesQueues) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* a = e.queue();
  QueuePair* b = e.queue();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->id(), b->id());
  std::byte* buf = e.buffer(4096);
  ASSERT_TRUE(e.ctrl->reset());
  EXPECT_EQ(e.ctrl->resets(), 1u);
  // Each queue notices the new generation at its next health check; the sync helper
  // polls until then.
  EXPECT_TRUE(sync_read(*a, 1, buf, 0, 1));
  EXPECT_TRUE(sync_read(*b, 1, buf, 0, 1));
  EXPECT_EQ(a->stats().recoveries, 1u);
  EXPECT_EQ(b->stats().recoveries, 1u);
  ASSERT_TRUE(e.ctrl->destroy_queue_pair(b));
  QueuePair* c = e.queue();
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(sync_read(*c, 1, buf, 0, 1));
}

// Two lcores, a queue pair each, while a third thread resets the controller: every I/O
// completes exactly once (success, or failed by the reset), and both queues come back.
TEST(NvmeDriver, ResetWhileTwoThreadsDoIo) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* queues[2] = {e.queue({.entries = 16}), e.queue({.entries = 16})};
  ASSERT_NE(queues[0], nullptr);
  ASSERT_NE(queues[1], nullptr);
  std::byte* bufs[2] = {e.buffer(8 * 4096), e.buffer(8 * 4096)};
  std::atomic<int> halfway{0};
  std::atomic<bool> reset_done{false};
  struct Tally {
    int ok = 0, aborted = 0, other = 0, submitted = 0;
  } tally[2];
  auto worker = [&](int id) {
    QueuePair& q = *queues[id];
    std::vector<Outcome> outcomes(8);
    auto round = [&] {
      for (int i = 0; i < 8; ++i) {
        outcomes[i] = {};
        int rc;
        while ((rc = q.submit_write(1, bufs[id] + i * 4096, 1000 * id + i * 8, 8, record, &outcomes[i])) == -EAGAIN)
          q.poll();
        ASSERT_EQ(rc, 0);
        ++tally[id].submitted;
      }
      drain(q);
      for (auto& o : outcomes) {
        ASSERT_EQ(o.calls, 1);
        if (o.status == kStatusSuccess) ++tally[id].ok;
        else if (o.status == kStatusAbortedByHost) ++tally[id].aborted;
        else ++tally[id].other;
      }
    };
    for (int r = 0; r < 10; ++r) round();
    halfway.fetch_add(1);
    while (!reset_done.load()) round();
    for (int r = 0; r < 10; ++r) round();
  };
  std::thread a(worker, 0), b(worker, 1);
  while (halfway.load() < 2) std::this_thread::yield();
  EXPECT_TRUE(e.ctrl->reset());
  reset_done = true;
  a.join();
  b.join();
  for (int id = 0; id < 2; ++id) {
    EXPECT_EQ(tally[id].ok + tally[id].aborted, tally[id].submitted);
    EXPECT_EQ(tally[id].other, 0);
    EXPECT_EQ(queues[id]->stats().recoveries, 1u);
    EXPECT_EQ(queues[id]->outstanding(), 0u);
  }
  EXPECT_EQ(e.ctrl->resets(), 1u);
}

TEST(NvmeDriver, InterruptModeWakesOnTheQueueEventfd) {
  Emulated e;
  ASSERT_TRUE(e.ctrl);
  QueuePair* q = e.queue({.entries = 32, .interrupts = true});
  ASSERT_NE(q, nullptr);
  ASSERT_GE(q->event_fd(), 0);
  std::byte* buf = e.buffer(4096);
  for (int round = 0; round < 3; ++round) {
    Outcome o;
    ASSERT_EQ(q->submit_read(1, buf, round, 8, record, &o), 0);
    q->flush_submissions();
    // Nothing but the vector can end this wait early; the bound only keeps a broken
    // build from hanging.
    ASSERT_TRUE(q->wait(10000)) << "round " << round;
    while (o.calls == 0) q->poll();
    EXPECT_EQ(o.calls, 1);
    EXPECT_EQ(o.status, kStatusSuccess);
  }
  // A queue without interrupts has no eventfd and never sleeps.
  QueuePair* polled = e.queue();
  ASSERT_NE(polled, nullptr);
  EXPECT_EQ(polled->event_fd(), -1);
  EXPECT_FALSE(polled->wait(1000));
}

}  // namespace
}  // namespace uvio::nvme
