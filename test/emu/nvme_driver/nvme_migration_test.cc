// The NVMe driver migrating between two emulated controllers in one process: driver A
// on device A drains and saves; device A's v2 state moves into a fresh device B; driver
// B is restored from A's bytes over the same memory and carries on.
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "emu/nvme/controller.h"
#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "test/emu/mig_walk.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace uvio::nvme {
namespace {

using emu::testing::mig_move_device_state;
using emu::testing::mig_walk;
using iommu::MigState;

constexpr uint32_t kBlock = 512;
constexpr uint32_t kBlocksPerIo = 8;

struct EmulatedDevice {
  std::unique_ptr<emu::Server> server;
  std::unique_ptr<iommu::Device> dev;

  EmulatedDevice(iommu::DmaSpace& space, const char* name) {
    auto o = emu::nvme::parse_nvme_options({{"size", "4M"}, {"queues", "4"}});
    EXPECT_TRUE(o) << o.status().describe();
    auto model = emu::nvme::NvmeController::create(*o);
    EXPECT_TRUE(model) << model.status().describe();
    auto s = emu::Server::create(std::move(*model));
    EXPECT_TRUE(s) << s.status().describe();
    server = std::move(*s);
    auto fd = server->connect();
    EXPECT_TRUE(fd) << fd.status().describe();
    auto d = iommu::open_vfio_user_fd(*fd, name, space, {});
    EXPECT_TRUE(d) << d.status().describe();
    if (d) dev = std::move(*d);
  }
  ~EmulatedDevice() {
    dev.reset();
    if (server) server->stop();
  }
};

uint64_t pattern(uint64_t lba, uint32_t round, size_t k) { return lba * 0x9E3779B97F4A7C15ull ^ (uint64_t(round) << 40) ^ k; }

void fill(std::byte* buf, uint64_t lba, uint32_t round) {
  auto* w = reinterpret_cast<uint64_t*>(buf);
  for (size_t k = 0; k < kBlocksPerIo * kBlock / 8; ++k) w[k] = pattern(lba, round, k);
}

bool matches(const std::byte* buf, uint64_t lba, uint32_t round) {
  auto* w = reinterpret_cast<const uint64_t*>(buf);
  for (size_t k = 0; k < kBlocksPerIo * kBlock / 8; ++k)
    if (w[k] != pattern(lba, round, k)) return false;
  return true;
}

// One write in flight, acknowledged through its callback.
struct Write {
  std::byte* buf = nullptr;
  uint64_t lba = 0;
  uint32_t round = 0;
  bool acked = false;
  IoStatus status = 0;
};
void on_write(void* ctx, IoStatus s) {
  auto* w = static_cast<Write*>(ctx);
  w->acked = true;
  w->status = s;
}

class NvmeMigration : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    MemConfig cfg;
    cfg.total_bytes = 32u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    ASSERT_TRUE(m) << m.status().describe();
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    a = std::make_unique<EmulatedDevice>(*space, "nvme-a");
    ASSERT_TRUE(a->dev);
    ControllerOptions opts;
    opts.shadow_doorbells = GetParam();
    auto c = Controller::open(*a->dev, *mem, opts);
    ASSERT_TRUE(c) << c.status().describe();
    ctrl_a = std::move(*c);
  }
  void TearDown() override {
    ctrl_b.reset();
    ctrl_a.reset();
    b.reset();
    a.reset();
  }

  // Writes queued on `q` with distinct LBAs; none are polled yet.
  void submit_writes(QueuePair& q, std::vector<Write>& writes, uint64_t first_lba, uint32_t round) {
    for (Write& w : writes) {
      w.buf = static_cast<std::byte*>(mem->alloc(kBlocksPerIo * kBlock, 4096));
      ASSERT_NE(w.buf, nullptr);
      w.lba = first_lba;
      w.round = round;
      first_lba += kBlocksPerIo;
      fill(w.buf, w.lba, round);
      ASSERT_EQ(q.submit_write(1, w.buf, w.lba, kBlocksPerIo, on_write, &w), 0);
    }
    q.flush_submissions();
  }

  void expect_reads_back(QueuePair& q, const std::vector<Write>& writes) {
    auto* buf = static_cast<std::byte*>(mem->alloc(kBlocksPerIo * kBlock, 4096));
    ASSERT_NE(buf, nullptr);
    for (const Write& w : writes) {
      std::memset(buf, 0, kBlocksPerIo * kBlock);
      Status s = sync_read(q, 1, buf, w.lba, kBlocksPerIo);
      ASSERT_TRUE(s) << s.describe();
      EXPECT_TRUE(matches(buf, w.lba, w.round)) << "LBA " << w.lba << " lost its data";
    }
    mem->free(buf);
  }

  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  std::unique_ptr<EmulatedDevice> a, b;
  std::unique_ptr<Controller> ctrl_a, ctrl_b;
};

TEST_P(NvmeMigration, AcknowledgedWritesReadBackThroughTheRestoredDriver) {
  auto q1 = ctrl_a->create_queue_pair({.entries = 64});
  auto q2 = ctrl_a->create_queue_pair({.entries = 16, .interrupts = true});
  ASSERT_TRUE(q1 && q2);
  // Let the queues wrap a few times first, so indexes and phases are far from their start.
  std::vector<Write> warmup(40);
  for (int lap = 0; lap < 5; ++lap) {
    submit_writes(**q1, warmup, 0, lap);
    while ((*q1)->outstanding()) (*q1)->poll();
  }
  std::vector<Write> early(30), late(10);
  submit_writes(**q1, early, 4096, 7);
  submit_writes(**q2, late, 6000, 8);
  // Quiesce completes what was submitted, refuses new submissions, and resume undoes it.
  ASSERT_TRUE(ctrl_a->quiesce(5000));
  for (const Write& w : early) EXPECT_TRUE(w.acked && status_ok(w.status));
  for (const Write& w : late) EXPECT_TRUE(w.acked && status_ok(w.status));
  Write refused;
  refused.buf = early[0].buf;
  EXPECT_EQ((*q1)->submit_write(1, refused.buf, 0, kBlocksPerIo, on_write, &refused), -EAGAIN);
  QueueStats stats_a = (*q1)->stats();

  std::vector<uint8_t> state;
  ASSERT_TRUE(ctrl_a->save_state(state));
  b = std::make_unique<EmulatedDevice>(*space, "nvme-b");
  ASSERT_TRUE(b->dev);
  Status moved = mig_move_device_state(*a->dev, *b->dev);
  ASSERT_TRUE(moved) << moved.describe();
  ctrl_a->release_after_migration();
  auto restored = Controller::restore(*b->dev, *mem, state);
  ASSERT_TRUE(restored) << restored.status().describe();
  ctrl_b = std::move(*restored);
  ASSERT_TRUE(mig_walk(*b->dev, MigState::Running));

  EXPECT_EQ(ctrl_b->info().serial, ctrl_a->info().serial);
  EXPECT_EQ(ctrl_b->info().shadow_doorbells, GetParam());
  ASSERT_EQ(ctrl_b->namespaces().size(), 1u);
  std::vector<QueuePair*> queues = ctrl_b->queue_pairs();
  ASSERT_EQ(queues.size(), 2u);
  EXPECT_EQ(queues[0]->id(), (*q1)->id());
  EXPECT_EQ(queues[1]->id(), (*q2)->id());
  EXPECT_EQ(queues[0]->stats().submitted, stats_a.submitted);
  EXPECT_EQ(queues[0]->outstanding(), 0u);

  expect_reads_back(*queues[0], early);
  expect_reads_back(*queues[1], late);
  expect_reads_back(*queues[0], warmup);
  // New writes on the restored queues, across more wraps.
  std::vector<Write> after(40);
  for (int lap = 0; lap < 3; ++lap) {
    submit_writes(*queues[0], after, 7000, 20 + lap);
    while (queues[0]->outstanding()) queues[0]->poll();
    for (const Write& w : after) EXPECT_TRUE(w.acked && status_ok(w.status));
  }
  expect_reads_back(*queues[1], after);
  // The interrupt queue's eventfd is wired to device B: a completion wakes it.
  auto* buf = static_cast<std::byte*>(mem->alloc(kBlocksPerIo * kBlock, 4096));
  Write probe;
  ASSERT_EQ(queues[1]->submit_write(1, buf, 7800, kBlocksPerIo, on_write, &probe), 0);
  queues[1]->flush_submissions();
  EXPECT_TRUE(queues[1]->wait(10000)) << "no interrupt from the new device";
  while (queues[1]->outstanding()) queues[1]->poll();
  EXPECT_TRUE(probe.acked && status_ok(probe.status));
  EXPECT_EQ(ctrl_b->resets(), 0u);
  EXPECT_FALSE(ctrl_b->failed());
}

INSTANTIATE_TEST_SUITE_P(ShadowOnOff, NvmeMigration, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "ShadowDoorbells" : "MmioDoorbells"; });

TEST_P(NvmeMigration, SaveRefusesWhileCommandsAreOutstanding) {
  auto q = ctrl_a->create_queue_pair({.entries = 16});
  ASSERT_TRUE(q);
  std::vector<Write> writes(4);
  submit_writes(**q, writes, 0, 1);
  std::vector<uint8_t> state;
  // The device may already have completed them; until the driver reaps, they count.
  Status s = ctrl_a->save_state(state);
  EXPECT_EQ(s.code(), EBUSY) << s.describe();
  ASSERT_TRUE(ctrl_a->quiesce(5000));
  EXPECT_TRUE(ctrl_a->save_state(state));
  ctrl_a->resume();
  std::vector<Write> more(2);
  submit_writes(**q, more, 100, 2);  // accepted again after resume
  while ((*q)->outstanding()) (*q)->poll();
  for (const Write& w : more) EXPECT_TRUE(w.acked);
}

TEST_P(NvmeMigration, DamagedDriverStateIsRefused) {
  auto q = ctrl_a->create_queue_pair({.entries = 16});
  ASSERT_TRUE(q);
  ASSERT_TRUE(ctrl_a->quiesce(1000));
  std::vector<uint8_t> state;
  ASSERT_TRUE(ctrl_a->save_state(state));
  ctrl_a->resume();
  b = std::make_unique<EmulatedDevice>(*space, "nvme-b");
  ASSERT_TRUE(b->dev);
  for (size_t len = 0; len < state.size(); len += 7) {
    auto r = Controller::restore(*b->dev, *mem, std::span<const uint8_t>(state.data(), len));
    EXPECT_FALSE(r) << "truncated at " << len;
  }
  auto longer = state;
  longer.push_back(0);
  EXPECT_FALSE(Controller::restore(*b->dev, *mem, longer));
  auto bad = state;
  bad[0] ^= 0xff;
  EXPECT_FALSE(Controller::restore(*b->dev, *mem, bad));
  // The admin submission queue's address (after the header, options, info, CAP, stride
  // and the namespace list) pointed outside runtime memory.
  bad = state;
  size_t asq_at = state.size() - 4 - (2 + 4 + 1 + 4 + 24 + 16 + 3 + 72) - (40 + 8 + 2 + 1 + 16 + 1);
  uint64_t outside = 0x10000;
  std::memcpy(&bad[asq_at], &outside, 8);
  auto r = Controller::restore(*b->dev, *mem, bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("runtime memory"), std::string::npos) << r.status().describe();
  // The good state still restores onto the device (which stays stopped: nothing ran).
  ctrl_a->release_after_migration();
  auto good = Controller::restore(*b->dev, *mem, state);
  ASSERT_TRUE(good) << good.status().describe();
  (*good)->release_after_migration();  // device B was never given A's state
}

}  // namespace
}  // namespace uvio::nvme
