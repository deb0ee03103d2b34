// The vfio-user server framework driven through the vfio-user client backend over a
// socketpair: the golden flows, interrupts, DMA, dirty logging and migration.
#include <uvio/mem.h>

#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/mig_fsm.h"
#include "iommu/vfio_user_client.h"
#include "test/emu/test_device.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace uvio::emu {
namespace {

MemConfig small_memory() {
  MemConfig cfg;
  cfg.total_bytes = 4u << 20;
  cfg.hugepages = false;
  return cfg;
}

using iommu::MigState;
using testing::TestDevice;

constexpr uint32_t kFeatureGet = 1u << 16, kFeatureProbe = 1u << 18;

// Waits (up to a bound far above any real delay) for an eventfd to fire and consumes it.
bool wait_eventfd(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return false;
  eventfd_t v;
  return eventfd_read(fd, &v) == 0 && v > 0;
}

bool eventfd_quiet(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

struct Harness {
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  TestDevice* model = nullptr;
  std::unique_ptr<Server> server;
  std::unique_ptr<iommu::Device> dev;

  explicit Harness(std::string type = "test-dev", uint32_t version = 1, ServerOptions opts = {}) {
    auto m = Memory::create(small_memory());
    EXPECT_TRUE(m) << m.status().describe();
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    auto dev_model = std::make_unique<TestDevice>(std::move(type), version);
    model = dev_model.get();
    auto s = Server::create(std::move(dev_model), opts);
    EXPECT_TRUE(s) << s.status().describe();
    server = std::move(*s);
    connect();
  }
  ~Harness() {
    dev.reset();
    server.reset();
  }
  void connect() {
    auto fd = server->connect();
    ASSERT_TRUE(fd) << fd.status().describe();
    auto d = iommu::open_vfio_user_fd(*fd, "emu-test", *space, {});
    ASSERT_TRUE(d) << d.status().describe();
    dev = std::move(*d);
  }
  uint64_t reg(uint64_t offset) {
    uint64_t v = 0;
    EXPECT_TRUE(dev->region_read(iommu::kBar0, offset, &v, sizeof(v)));
    return v;
  }
  void set_reg(uint64_t offset, uint64_t v) { EXPECT_TRUE(dev->region_write(iommu::kBar0, offset, &v, sizeof(v))); }
  // Walks the device to `target` one arc at a time, as mig/ does.
  Status walk(MigState target) {
    auto caps = dev->migration_caps();
    if (!caps) return caps.status();
    auto f = iommu::MigFeatures::from_flags(caps->flags);
    for (;;) {
      auto cur = dev->mig_state();
      if (!cur) return cur.status();
      if (*cur == target) return Status::ok();
      MigState next = iommu::mig_next_state(*cur, target, f);
      if (next == MigState::Error) return Status::error(EINVAL, "no path");
      UVIO_TRY(dev->set_mig_state(next));
    }
  }
};

struct EventFds {
  int fd[2];
  EventFds() {
    for (int& f : fd) f = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  ~EventFds() {
    for (int f : fd) ::close(f);
  }
};

TEST(EmuServer, VersionAndDeviceInfo) {
  Harness h;
  EXPECT_EQ(h.dev->backend(), "vfio-user");
  EXPECT_TRUE(h.dev->info().is_pci());
  EXPECT_TRUE(h.dev->info().can_reset());
  EXPECT_EQ(h.dev->info().num_regions, 9u);
  EXPECT_EQ(h.dev->info().num_irqs, 5u);
}

TEST(EmuServer, RegionInfoCarriesSparseMmapAndFd) {
  Harness h;
  auto bar0 = h.dev->region_info(iommu::kBar0);
  ASSERT_TRUE(bar0) << bar0.status().describe();
  EXPECT_EQ(bar0->size, TestDevice::kBarSize);
  EXPECT_TRUE(bar0->readable() && bar0->writable() && bar0->mappable());
  ASSERT_EQ(bar0->sparse.size(), 1u);
  EXPECT_EQ(bar0->sparse[0].offset, TestDevice::kDoorbellPage);
  EXPECT_EQ(bar0->sparse[0].size, 0x1000u);
  EXPECT_NE(std::find(bar0->cap_ids.begin(), bar0->cap_ids.end(), 1), bar0->cap_ids.end());

  auto cfg = h.dev->region_info(iommu::kConfigRegion);
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->size, 4096u);
  EXPECT_FALSE(cfg->mappable());
  auto bar1 = h.dev->region_info(1);
  ASSERT_TRUE(bar1);
  EXPECT_EQ(bar1->size, 0u);
  auto bad = h.dev->region_info(9);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().code(), EINVAL);

  // Only the shared page maps; trapped registers do not.
  auto page = h.dev->region_map(iommu::kBar0, TestDevice::kDoorbellPage, 0x1000);
  EXPECT_TRUE(page) << page.status().describe();
  EXPECT_FALSE(h.dev->region_map(iommu::kBar0, 0, 0x1000));
  EXPECT_FALSE(h.dev->region_map(iommu::kBar0, TestDevice::kDoorbellPage, 0x2000));
}

TEST(EmuServer, ConfigSpaceHasIdentityCapabilitiesAndBarSizing) {
  Harness h;
  uint32_t id = 0;
  ASSERT_TRUE(h.dev->region_read(iommu::kConfigRegion, 0, &id, 4));
  EXPECT_EQ(id, 0x00ff1b36u);
  uint8_t cfg[256];
  ASSERT_TRUE(h.dev->region_read(iommu::kConfigRegion, 0, cfg, sizeof(cfg)));
  EXPECT_TRUE(cfg[0x06] & 0x10);  // capability list present
  std::vector<uint8_t> ids;
  for (uint8_t at = cfg[0x34]; at != 0 && ids.size() < 16; at = cfg[at + 1]) ids.push_back(cfg[at]);
  EXPECT_EQ(ids, (std::vector<uint8_t>{0x10, 0x11, 0x09}));

  uint32_t all = 0xffffffff, back = 0;
  ASSERT_TRUE(h.dev->region_write(iommu::kConfigRegion, 0x10, &all, 4));
  ASSERT_TRUE(h.dev->region_read(iommu::kConfigRegion, 0x10, &back, 4));
  EXPECT_EQ(back, ~static_cast<uint32_t>(TestDevice::kBarSize - 1));
  // Read-only fields ignore writes.
  uint16_t vendor = 0xdead;
  ASSERT_TRUE(h.dev->region_write(iommu::kConfigRegion, 0, &vendor, 2));
  ASSERT_TRUE(h.dev->region_read(iommu::kConfigRegion, 0, &vendor, 2));
  EXPECT_EQ(vendor, 0x1b36);
}

TEST(EmuServer, TrappedRegistersReachTheModel) {
  Harness h;
  EXPECT_EQ(h.reg(TestDevice::kRegId), TestDevice::kIdValue);
  h.set_reg(TestDevice::kRegScratch, 0x1122334455667788ull);
  EXPECT_EQ(h.reg(TestDevice::kRegScratch), 0x1122334455667788ull);
  // A 2-byte access reaches the model as one 2-byte access.
  uint16_t low = 0;
  ASSERT_TRUE(h.dev->region_read(iommu::kBar0, TestDevice::kRegScratch, &low, 2));
  EXPECT_EQ(low, 0x7788);
  uint64_t v;
  auto st = h.dev->region_read(iommu::kBar0, TestDevice::kBarSize - 4, &v, 8);
  EXPECT_FALSE(st);
}

TEST(EmuServer, SharedDoorbellPageWakesTheDeviceThread) {
  Harness h;
  EventFds ev;
  ASSERT_TRUE(h.dev->set_irq_eventfds(iommu::kMsixIrq, 0, ev.fd));
  auto page = h.dev->region_map(iommu::kBar0, TestDevice::kDoorbellPage, 0x1000);
  ASSERT_TRUE(page);
  auto* doorbell = static_cast<volatile uint32_t*>(*page);
  *doorbell = 0x1234;
  ASSERT_TRUE(wait_eventfd(ev.fd[1]));
  EXPECT_EQ(h.reg(TestDevice::kRegDoorbellSeen), 0x1234u);
}

TEST(EmuServer, IrqInfoAndEventfdDelivery) {
  Harness h;
  auto msix = h.dev->irq_info(iommu::kMsixIrq);
  ASSERT_TRUE(msix);
  EXPECT_EQ(msix->count, 2u);
  EXPECT_TRUE(msix->flags & 1u);  // EVENTFD
  auto intx = h.dev->irq_info(iommu::kIntxIrq);
  ASSERT_TRUE(intx);
  EXPECT_EQ(intx->count, 0u);

  EventFds ev;
  ASSERT_TRUE(h.dev->set_irq_eventfds(iommu::kMsixIrq, 0, ev.fd));
  h.set_reg(TestDevice::kRegIrq, 0);
  EXPECT_TRUE(wait_eventfd(ev.fd[0]));
  EXPECT_TRUE(eventfd_quiet(ev.fd[1]));

  // INTx is refused cleanly and the connection stays usable.
  int one[1] = {ev.fd[0]};
  auto st = h.dev->set_irq_eventfds(iommu::kIntxIrq, 0, one);
  EXPECT_EQ(st.code(), EINVAL);
  // Unwiring vector 0 (fd -1) stops its delivery.
  int unwire[1] = {-1};
  ASSERT_TRUE(h.dev->set_irq_eventfds(iommu::kMsixIrq, 0, unwire));
  h.set_reg(TestDevice::kRegIrq, 0);
  EXPECT_EQ(h.reg(TestDevice::kRegId), TestDevice::kIdValue);  // the write was handled
  EXPECT_TRUE(eventfd_quiet(ev.fd[0]));
  ASSERT_TRUE(h.dev->disable_irqs(iommu::kMsixIrq));
}

TEST(EmuServer, MaskedMsixVectorIsPendingUntilUnmasked) {
  Harness h;
  EventFds ev;
  ASSERT_TRUE(h.dev->set_irq_eventfds(iommu::kMsixIrq, 0, ev.fd));
  uint32_t ctrl = 1;  // vector control of entry 0: masked
  ASSERT_TRUE(h.dev->region_write(iommu::kBar0, TestDevice::kMsixTable + 12, &ctrl, 4));
  h.set_reg(TestDevice::kRegIrq, 0);
  EXPECT_TRUE(eventfd_quiet(ev.fd[0]));
  uint64_t pba = 0;
  ASSERT_TRUE(h.dev->region_read(iommu::kBar0, TestDevice::kMsixPba, &pba, 8));
  EXPECT_EQ(pba, 1u);
  ctrl = 0;
  ASSERT_TRUE(h.dev->region_write(iommu::kBar0, TestDevice::kMsixTable + 12, &ctrl, 4));
  EXPECT_TRUE(wait_eventfd(ev.fd[0]));
  ASSERT_TRUE(h.dev->region_read(iommu::kBar0, TestDevice::kMsixPba, &pba, 8));
  EXPECT_EQ(pba, 0u);
  // The table reads back what was written, and MSI-X shows enabled in config space.
  uint32_t data = 0xabcd, back = 0;
  ASSERT_TRUE(h.dev->region_write(iommu::kBar0, TestDevice::kMsixTable + 16 + 8, &data, 4));
  ASSERT_TRUE(h.dev->region_read(iommu::kBar0, TestDevice::kMsixTable + 16 + 8, &back, 4));
  EXPECT_EQ(back, 0xabcdu);
}

TEST(EmuServer, DeviceCopiesBetweenMappedBuffers) {
  Harness h;
  EventFds ev;
  ASSERT_TRUE(h.dev->set_irq_eventfds(iommu::kMsixIrq, 0, ev.fd));
  auto* src = static_cast<uint8_t*>(h.mem->alloc(8192, 4096));
  auto* dst = static_cast<uint8_t*>(h.mem->alloc(8192, 4096));
  ASSERT_TRUE(src && dst);
  for (int i = 0; i < 8192; ++i) src[i] = static_cast<uint8_t>(i * 7);
  std::memset(dst, 0, 8192);
  h.set_reg(TestDevice::kRegDmaSrc, h.mem->iova_of(src));
  h.set_reg(TestDevice::kRegDmaDst, h.mem->iova_of(dst));
  h.set_reg(TestDevice::kRegDmaLen, 8192);
  h.set_reg(TestDevice::kRegDmaGo, 1);
  EXPECT_TRUE(wait_eventfd(ev.fd[0]));
  EXPECT_EQ(h.reg(TestDevice::kRegStatus), 1u);
  EXPECT_EQ(std::memcmp(src, dst, 8192), 0);

  // An IOVA the client never mapped fails inside the device, never faults.
  h.set_reg(TestDevice::kRegDmaSrc, 0x1000);
  h.set_reg(TestDevice::kRegDmaGo, 1);
  EXPECT_EQ(h.reg(TestDevice::kRegStatus), 2u);
  EXPECT_GT(h.dev->domain().map_calls(), 0u);
}

TEST(EmuServer, ResetClearsTheModel) {
  Harness h;
  h.set_reg(TestDevice::kRegScratch, 99);
  uint64_t before = h.model->resets.load();
  ASSERT_TRUE(h.dev->reset());
  EXPECT_EQ(h.reg(TestDevice::kRegScratch), 0u);
  EXPECT_EQ(h.model->resets.load(), before + 1);
}

TEST(EmuServer, InterruptsSurviveDeviceReset) {
  Harness h;
  EventFds ev;
  ASSERT_TRUE(h.dev->set_irq_eventfds(iommu::kMsixIrq, 0, ev.fd));
  ASSERT_TRUE(h.dev->reset());
  h.set_reg(TestDevice::kRegIrq, 1);
  EXPECT_TRUE(wait_eventfd(ev.fd[1]));
  uint16_t ctrl = 0;  // MSI-X enable (bit 15) still reads set at capability + 2
  uint8_t cap = 0x40 + 0x3c;
  ASSERT_TRUE(h.dev->region_read(iommu::kConfigRegion, cap + 2, &ctrl, 2));
  EXPECT_TRUE(ctrl & 0x8000);
}

TEST(EmuServer, FeaturesReportMigrationAndProbe) {
  Harness h;
  auto caps = h.dev->migration_caps();
  ASSERT_TRUE(caps);
  EXPECT_TRUE(caps->supported);
  EXPECT_EQ(caps->flags, 1u | 4u);  // STOP_COPY | PRE_COPY
  auto st = h.dev->mig_state();
  ASSERT_TRUE(st);
  EXPECT_EQ(*st, MigState::Running);
  EXPECT_TRUE(h.dev->feature(kFeatureGet | kFeatureProbe, 6 /* DMA_LOGGING_START */, {}).code() == EINVAL);
  EXPECT_TRUE(h.dev->feature(kFeatureGet | kFeatureProbe, 8 /* DMA_LOGGING_REPORT */, {}));
  EXPECT_EQ(h.dev->feature(kFeatureGet, 42, {}).code(), ENOTTY);
  auto size = h.dev->mig_data_size();
  ASSERT_TRUE(size);
  EXPECT_GT(*size, 0u);
  EXPECT_EQ(h.dev->precopy_info().status().code(), ENOTSUP);
}

TEST(EmuServer, DirtyLoggingReportsExactlyTheWrittenPages) {
  Harness h;
  auto* src = static_cast<uint8_t*>(h.mem->alloc(4096, 4096));
  auto* dst = static_cast<uint8_t*>(h.mem->alloc(16 * 4096, 4096));
  ASSERT_TRUE(src && dst);
  uint64_t base = h.mem->iova_of(dst);
  iommu::DirtyTracker* log = h.dev->dma_logging();
  ASSERT_NE(log, nullptr);
  iommu::IovaRange range{base, base + 16 * 4096 - 1};
  ASSERT_TRUE(log->start({&range, 1}, 4096));
  EXPECT_EQ(log->start({&range, 1}, 4096).code(), EBUSY);

  // The device writes 100 bytes at page 3 and 5000 bytes from the end of page 9.
  auto copy = [&](uint64_t dst_iova, uint64_t len) {
    h.set_reg(TestDevice::kRegDmaSrc, h.mem->iova_of(src));
    h.set_reg(TestDevice::kRegDmaDst, dst_iova);
    h.set_reg(TestDevice::kRegDmaLen, len);
    h.set_reg(TestDevice::kRegDmaGo, 1);
    ASSERT_EQ(h.reg(TestDevice::kRegStatus), 1u);
  };
  copy(base + 3 * 4096 + 10, 100);
  copy(base + 10 * 4096 - 100, 4096);  // pages 9 and 10
  uint64_t bitmap[1] = {};
  ASSERT_TRUE(log->read_and_clear(base, 16 * 4096, 4096, bitmap));
  EXPECT_EQ(bitmap[0], (1ull << 3) | (1ull << 9) | (1ull << 10));
  // Reading cleared the log.
  ASSERT_TRUE(log->read_and_clear(base, 16 * 4096, 4096, bitmap));
  EXPECT_EQ(bitmap[0], 0u);
  // A coarser report page folds tracking pages together.
  copy(base + 5 * 4096, 8);
  ASSERT_TRUE(log->read_and_clear(base, 16 * 4096, 4 * 4096, bitmap));
  EXPECT_EQ(bitmap[0], 1ull << 1);
  ASSERT_TRUE(log->stop());
  EXPECT_FALSE(log->read_and_clear(base, 16 * 4096, 4096, bitmap));
}

TEST(EmuServer, DirtyLoggingMergesRangesBeyondTheDeviceLimit) {
  Harness h;
  auto* src = static_cast<uint8_t*>(h.mem->alloc(4096, 4096));
  auto* dst = static_cast<uint8_t*>(h.mem->alloc(64 * 4096, 4096));
  ASSERT_TRUE(src && dst);
  uint64_t base = h.mem->iova_of(dst);
  // 20 one-page ranges on even pages: more than the device tracks (8); it merges them.
  std::vector<iommu::IovaRange> ranges;
  for (uint64_t i = 0; i < 20; ++i) ranges.push_back({base + 2 * i * 4096, base + 2 * i * 4096 + 4095});
  ASSERT_TRUE(h.dev->dma_logging()->start(ranges, 4096));
  h.set_reg(TestDevice::kRegDmaSrc, h.mem->iova_of(src));
  h.set_reg(TestDevice::kRegDmaDst, base + 38 * 4096);
  h.set_reg(TestDevice::kRegDmaLen, 64);
  h.set_reg(TestDevice::kRegDmaGo, 1);
  uint64_t bitmap[1] = {};
  ASSERT_TRUE(h.dev->dma_logging()->read_and_clear(base, 64 * 4096, 4096, bitmap));
  EXPECT_EQ(bitmap[0], 1ull << 38);
  ASSERT_TRUE(h.dev->dma_logging()->stop());
}

TEST(EmuServer, ClientGoneResetsDeviceAndNextClientIsServed) {
  Harness h;
  h.set_reg(TestDevice::kRegScratch, 5);
  h.dev.reset();
  for (int i = 0; i < 10000 && h.server->clients_served() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(h.server->clients_served(), 1u);
  h.connect();
  EXPECT_EQ(h.reg(TestDevice::kRegScratch), 0u);
}

// Reads the whole saving stream: in PRE_COPY until a 0-byte read.
std::vector<uint8_t> read_all(iommu::Device& dev) {
  std::vector<uint8_t> out;
  uint8_t buf[7];  // small on purpose: many short reads
  for (;;) {
    auto n = dev.mig_read(buf, sizeof(buf));
    EXPECT_TRUE(n) << n.status().describe();
    if (!n || *n == 0) break;
    out.insert(out.end(), buf, buf + *n);
  }
  return out;
}

TEST(EmuServer, MigrationMovesTheStateToAnotherServer) {
  Harness src, dst;
  src.set_reg(TestDevice::kRegScratch, 42);
  ASSERT_TRUE(src.walk(MigState::StopCopy));
  std::vector<uint8_t> stream = read_all(*src.dev);
  ASSERT_FALSE(stream.empty());
  ASSERT_TRUE(src.walk(MigState::Running));

  ASSERT_TRUE(dst.walk(MigState::Resuming));
  EXPECT_EQ(dst.server->mig_state(), MigState::Resuming);
  ASSERT_TRUE(dst.dev->mig_write(stream.data(), stream.size()));
  ASSERT_TRUE(dst.walk(MigState::Running));
  EXPECT_EQ(dst.reg(TestDevice::kRegScratch), 42u);
}

TEST(EmuServer, PreCopyThenStopCopyStreamLoads) {
  Harness src, dst;
  src.set_reg(TestDevice::kRegScratch, 1);
  ASSERT_TRUE(src.walk(MigState::PreCopy));
  std::vector<uint8_t> stream = read_all(*src.dev);
  EXPECT_FALSE(stream.empty());
  src.set_reg(TestDevice::kRegScratch, 2);  // the device still runs in PRE_COPY
  ASSERT_TRUE(src.walk(MigState::StopCopy));
  auto rest = read_all(*src.dev);
  stream.insert(stream.end(), rest.begin(), rest.end());

  ASSERT_TRUE(dst.walk(MigState::Resuming));
  ASSERT_TRUE(dst.dev->mig_write(stream.data(), stream.size()));
  ASSERT_TRUE(dst.walk(MigState::Stop));
  ASSERT_TRUE(dst.walk(MigState::Running));
  EXPECT_EQ(dst.reg(TestDevice::kRegScratch), 2u);  // the last record wins
}

TEST(EmuServer, P2pStatesWhenOffered) {
  Harness src("test-dev", 1, ServerOptions{.p2p_states = true});
  Harness dst("test-dev", 1, ServerOptions{.p2p_states = true});
  auto caps = src.dev->migration_caps();
  ASSERT_TRUE(caps);
  EXPECT_EQ(caps->flags, 1u | 2u | 4u);
  src.set_reg(TestDevice::kRegScratch, 9);
  ASSERT_TRUE(src.walk(MigState::PreCopyP2P));  // RUNNING -> RUNNING_P2P -> PRE_COPY_P2P
  std::vector<uint8_t> stream = read_all(*src.dev);
  ASSERT_TRUE(src.walk(MigState::StopCopy));
  auto rest = read_all(*src.dev);
  stream.insert(stream.end(), rest.begin(), rest.end());
  ASSERT_TRUE(dst.walk(MigState::Resuming));
  ASSERT_TRUE(dst.dev->mig_write(stream.data(), stream.size()));
  ASSERT_TRUE(dst.walk(MigState::RunningP2P));
  EXPECT_EQ(dst.reg(TestDevice::kRegScratch), 9u);
  ASSERT_TRUE(dst.walk(MigState::Running));
}

TEST(EmuServer, MigrationRefusesAnotherDeviceTypeOrVersion) {
  Harness src;
  ASSERT_TRUE(src.walk(MigState::StopCopy));
  std::vector<uint8_t> stream = read_all(*src.dev);

  for (auto [type, version] : {std::pair<std::string, uint32_t>{"other-dev", 1}, {"test-dev", 2}}) {
    Harness dst(type, version);
    dst.set_reg(TestDevice::kRegScratch, 77);
    ASSERT_TRUE(dst.walk(MigState::Resuming));
    ASSERT_TRUE(dst.dev->mig_write(stream.data(), stream.size()));
    Status st = dst.dev->set_mig_state(MigState::Stop);
    EXPECT_FALSE(st);
    EXPECT_NE(st.message().find("refused"), std::string::npos);
    EXPECT_EQ(dst.server->mig_state(), MigState::Resuming);
    // The device kept its own state; a reset ends the RESUMING session.
    EXPECT_EQ(dst.reg(TestDevice::kRegScratch), 77u);
    ASSERT_TRUE(dst.dev->reset());
    EXPECT_EQ(dst.server->mig_state(), MigState::Running);
  }
}

TEST(EmuServer, MigrationDataOnlyInTheRightStates) {
  Harness h;
  uint8_t buf[16];
  EXPECT_EQ(h.dev->mig_read(buf, sizeof(buf)).status().code(), EINVAL);
  EXPECT_EQ(h.dev->mig_write(buf, sizeof(buf)).code(), EINVAL);
  // STOP_COPY -> PRE_COPY has no legal path.
  ASSERT_TRUE(h.walk(MigState::StopCopy));
  EXPECT_EQ(h.dev->set_mig_state(MigState::PreCopy).code(), EINVAL);
  // The connection is still fine.
  EXPECT_EQ(h.reg(TestDevice::kRegId), TestDevice::kIdValue);
}

TEST(EmuServer, ListensOnASocketPath) {
  auto m = Memory::create(small_memory());
  ASSERT_TRUE(m);
  iommu::DmaSpace space(**m);
  auto server = Server::create(std::make_unique<TestDevice>());
  ASSERT_TRUE(server);
  std::string path = fmt::format("{}/uvio-emu-test-{}.sock", ::testing::TempDir(), ::getpid());
  ASSERT_TRUE((*server)->listen(path));
  auto dev = iommu::open_vfio_user(path, space, {});
  ASSERT_TRUE(dev) << dev.status().describe();
  uint64_t id = 0;
  ASSERT_TRUE((*dev)->region_read(iommu::kBar0, TestDevice::kRegId, &id, 8));
  EXPECT_EQ(id, TestDevice::kIdValue);
  *dev = nullptr;
  (*server)->stop();
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

// Models whose layout the server cannot honour are refused before any thread starts.
class BadLayout : public TestDevice {
 public:
  explicit BadLayout(int kind) : kind_(kind) {}
  std::vector<BarLayout> bars() const override {
    switch (kind_) {
      case 0: return {BarLayout{0, 3000, {}}};                       // not a power of two
      case 1: return {BarLayout{0, kBarSize, {{0x1800, 0x1000}}}};   // shared page unaligned
      case 2: return {BarLayout{0, kBarSize, {{0x2000, 0x1000}}}};   // shared page on MSI-X
      default: return {BarLayout{0, kBarSize, {}}, BarLayout{0, kBarSize, {}}};  // BAR twice
    }
  }
 private:
  int kind_;
};

TEST(EmuServer, RefusesModelsWithImpossibleLayouts) {
  for (int kind = 0; kind < 4; ++kind) {
    auto s = Server::create(std::make_unique<BadLayout>(kind));
    ASSERT_FALSE(s) << kind;
    EXPECT_EQ(s.status().code(), EINVAL);
  }
  EXPECT_EQ(Server::create(nullptr).status().code(), EINVAL);
}

}  // namespace
}  // namespace uvio::emu
