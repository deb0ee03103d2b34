// The kernel backends and the DmaSpace against a fake kernel at the syscall boundary.
#include <gtest/gtest.h>

#include <uvio/log.h>
#include <uvio/mem.h>

#include "iommu/abi/iommufd.h"
#include "iommu/abi/vfio.h"
#include "iommu/dma_space.h"
#include "iommu/kernel_backends.h"
#include "iommu/pci_address.h"
#include "test/iommu/fake_kernel.h"

#include <cstring>
#include <mutex>

namespace uvio::iommu {
namespace {

using namespace abi;
using testing::FakeKernel;
using testing::kFakeBdf;

constexpr size_t kArea = 2u << 20;

std::unique_ptr<Memory> make_memory(size_t areas) {
  MemConfig cfg;
  cfg.total_bytes = areas * kArea;
  cfg.hugepages = false;
  cfg.area_bytes = kArea;
  auto mem = Memory::create(cfg);
  EXPECT_TRUE(mem.is_ok()) << mem.status().describe();
  return std::move(mem.value());
}

// Collects log lines while alive.
class LogCapture {
 public:
  LogCapture() { log::set_sink(&LogCapture::sink, this); }
  ~LogCapture() { log::set_sink(nullptr, nullptr); }
  bool contains(std::string_view text) {
    std::lock_guard lock(mu_);
    for (const std::string& l : lines_)
      if (l.find(text) != std::string::npos) return true;
    return false;
  }

 private:
  static void sink(log::Level, std::string_view component, std::string_view message, void* ctx) {
    auto* self = static_cast<LogCapture*>(ctx);
    std::lock_guard lock(self->mu_);
    self->lines_.push_back(std::string(component) + ": " + std::string(message));
  }
  std::mutex mu_;
  std::vector<std::string> lines_;
};

OpenOptions mode(VfioMode m) {
  OpenOptions o;
  o.mode = m;
  return o;
}

class KernelBackendTest : public ::testing::Test {
 protected:
  FakeKernel fake;
  ScopedSys scoped{fake};
};

// ---- type1 ----

TEST_F(KernelBackendTest, Type1MapsContiguousAreasWithOneCall) {
  auto mem = make_memory(4);
  ASSERT_EQ(mem->areas().size(), 4u);
  {
    DmaSpace dma(*mem);
    auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
    ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
    EXPECT_EQ((*dev)->backend(), "type1");
    EXPECT_EQ(fake.count(kVfioIommuMapDma), 1u);
    ASSERT_EQ(fake.type1_maps.size(), 1u);
    EXPECT_EQ(fake.type1_maps.begin()->second, 4 * kArea);
    EXPECT_EQ(fake.type1_maps.begin()->first, mem->areas()[0]->iova);
    EXPECT_EQ((*dev)->domain().map_calls(), 1u);
  }
  // The DmaSpace unmaps what it mapped, one call per mapping.
  EXPECT_EQ(fake.count(kVfioIommuUnmapDma), 1u);
  EXPECT_TRUE(fake.type1_maps.empty());
}

TEST_F(KernelBackendTest, Type1ReadsIommuInfoCapabilities) {
  fake.ranges = {{0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}};
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  DmaDomain& d = (*dev)->domain();
  auto ranges = d.iova_ranges();
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0].last, 0xfedfffffu);
  EXPECT_EQ(ranges[1].start, 0xfef00000u);
  EXPECT_EQ(d.page_size_mask(), 0x40201000u);
  EXPECT_EQ(d.max_mappings(), 65535u);
  EXPECT_NE(d.dirty_tracker(), nullptr);  // the migration capability was reported
  // GET_INFO asked twice: once for the size of the chain, once for the chain.
  EXPECT_EQ(fake.count(kVfioIommuGetInfo), 2u);
}

TEST_F(KernelBackendTest, MemoryAddedLaterReachesTheContainer) {
  auto mem = make_memory(2);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  ASSERT_EQ(fake.count(kVfioIommuMapDma), 1u);
  auto added = mem->extend(kArea);
  ASSERT_TRUE(added.is_ok()) << added.status().describe();
  EXPECT_EQ(fake.count(kVfioIommuMapDma), 2u);
  EXPECT_EQ(fake.type1_maps.count((*added)->iova), 1u);
  EXPECT_EQ(dma.mappings(&(*dev)->domain()).size(), 2u);
}

TEST_F(KernelBackendTest, Type1MappingLimitIsAClearErrorAndNoCall) {
  fake.dma_limit = 1;
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ((*dev)->domain().max_mappings(), 1u);
  LogCapture logs;
  auto added = mem->extend(kArea);
  ASSERT_TRUE(added.is_ok());
  EXPECT_EQ(fake.count(kVfioIommuMapDma), 1u);  // refused before asking the kernel
  EXPECT_TRUE(logs.contains("accepts at most 1 DMA mappings"));
}

TEST_F(KernelBackendTest, Type1RefusesPartialUnmapWithAClearError) {
  auto mem = make_memory(2);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  uint64_t iova = mem->areas()[0]->iova;
  size_t unmaps = fake.count(kVfioIommuUnmapDma);
  Status st = (*dev)->domain().unmap(iova, kArea);  // half of the one mapping
  EXPECT_EQ(st.code(), EINVAL);
  EXPECT_NE(st.message().find("cuts the mapping"), std::string::npos) << st.message();
  EXPECT_EQ(fake.count(kVfioIommuUnmapDma), unmaps);
  EXPECT_EQ(fake.type1_maps.size(), 1u);
}

TEST_F(KernelBackendTest, EnomemFromMapNamesTheLockedMemoryLimit) {
  fake.map_errno = ENOMEM;
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_FALSE(dev.is_ok());
  EXPECT_EQ(dev.status().code(), ENOMEM);
  EXPECT_NE(dev.status().message().find("RLIMIT_MEMLOCK"), std::string::npos) << dev.status().message();
}

TEST_F(KernelBackendTest, IovaOutsideTheRangesMovesMemoryBeforeAnythingIsMapped) {
  fake.ranges = {{0x100000, 0xfedfffff}};
  auto mem = make_memory(3);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  ASSERT_EQ(fake.type1_maps.size(), 1u);  // still contiguous, still one call
  auto [iova, len] = *fake.type1_maps.begin();
  EXPECT_GE(iova, 0x100000u);
  EXPECT_LE(iova + len - 1, 0xfedfffffu);
  EXPECT_EQ(mem->iova_of(mem->areas()[0]->va), iova);
  EXPECT_EQ(mem->iova_of(mem->areas()[2]->va), iova + 2 * kArea);
}

TEST_F(KernelBackendTest, Type1DirtyBitmapIsZeroedAndCoversWholeMappings) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  DirtyTracker* t = (*dev)->domain().dirty_tracker();
  ASSERT_NE(t, nullptr);
  uint64_t iova = mem->areas()[0]->iova;
  IovaRange r{iova, iova + kArea - 1};
  ASSERT_TRUE(t->start({&r, 1}, 4096).is_ok());
  fake.dirty_iovas = {iova + 5 * 4096, iova + 130 * 4096};
  std::vector<uint64_t> bitmap(kArea / 4096 / 64, ~0ull);
  Status st = t->read_and_clear(iova, kArea, 4096, bitmap);
  ASSERT_TRUE(st.is_ok()) << st.describe();
  std::vector<uint64_t> want(bitmap.size(), 0);
  want[0] = 1ull << 5;
  want[2] = 1ull << 2;
  EXPECT_EQ(bitmap, want);
  EXPECT_EQ(t->start({&r, 1}, 8192).code(), EINVAL);  // not a size type1 tracks in
  EXPECT_TRUE(t->stop().is_ok());
  EXPECT_FALSE(fake.type1_dirty_started);
}

TEST_F(KernelBackendTest, GroupNotViableNamesTheDeviceStillBound) {
  fake.group_viable = false;
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_FALSE(dev.is_ok());
  EXPECT_EQ(dev.status().code(), EPERM);
  EXPECT_NE(dev.status().message().find("0000:01:00.1 (bound to e1000e)"), std::string::npos) << dev.status().message();
}

// ---- iommufd ----

TEST_F(KernelBackendTest, IommufdMapsEachAreaByFile) {
  auto mem = make_memory(3);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ((*dev)->backend(), "iommufd");
  EXPECT_EQ(fake.count(kIommuIoasMapFile), 3u);
  EXPECT_EQ(fake.count(kIommuIoasMap), 0u);
  for (auto& [iova, m] : fake.ioas_maps) EXPECT_TRUE(m.by_file);
  EXPECT_EQ(fake.count(kVfioDeviceBindIommufd), 1u);
  EXPECT_EQ(fake.attached_pt, testing::kFakeIoasId);
  EXPECT_EQ(fake.count(kIommuGetHwInfo), 1u);
}

TEST_F(KernelBackendTest, IommufdMapFileFallsBackToMapOnEnotty) {
  fake.map_file_supported = false;
  LogCapture logs;
  auto mem = make_memory(3);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ(fake.count(kIommuIoasMapFile), 1u);  // asked once, then never again
  EXPECT_EQ(fake.count(kIommuIoasMap), 3u);
  EXPECT_EQ(fake.ioas_maps.size(), 3u);
  EXPECT_TRUE(logs.contains("IOMMU_IOAS_MAP_FILE is not supported by this kernel (ENOTTY)"));
  // Memory added later is now mapped by address and coalesced where it is contiguous.
  EXPECT_TRUE((*dev)->domain().maps_by_address());
}

TEST_F(KernelBackendTest, IommufdWithoutDirtyCapabilityAttachesToTheIoas) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ(fake.count(kIommuHwptAlloc), 0u);
  EXPECT_EQ(fake.attached_pt, testing::kFakeIoasId);
  EXPECT_EQ((*dev)->domain().dirty_tracker(), nullptr);
}

TEST_F(KernelBackendTest, IommufdDirtyTrackingHwptAndZeroedBitmap) {
  fake.hw_caps = kIommuHwCapDirtyTracking;
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ(fake.count(kIommuHwptAlloc), 1u);
  EXPECT_EQ(fake.hwpt_alloc_flags, kIommuHwptAllocDirtyTracking);
  EXPECT_EQ(fake.attached_pt, testing::kFakeHwptId);
  DirtyTracker* t = (*dev)->domain().dirty_tracker();
  ASSERT_NE(t, nullptr);
  uint64_t iova = mem->areas()[0]->iova;
  IovaRange r{iova, iova + kArea - 1};
  ASSERT_TRUE(t->start({&r, 1}, 4096).is_ok());
  EXPECT_TRUE(fake.hwpt_dirty_enabled);
  fake.dirty_iovas = {iova, iova + 63 * 4096, iova + 64 * 4096};
  std::vector<uint64_t> bitmap(kArea / 4096 / 64, 0xa5a5a5a5a5a5a5a5ull);  // stale garbage
  ASSERT_TRUE(t->read_and_clear(iova, kArea, 4096, bitmap).is_ok());
  std::vector<uint64_t> want(bitmap.size(), 0);
  want[0] = 1ull | (1ull << 63);
  want[1] = 1;
  EXPECT_EQ(bitmap, want);
  // Read and clear: the second read finds nothing, and the garbage is gone again.
  std::fill(bitmap.begin(), bitmap.end(), ~0ull);
  ASSERT_TRUE(t->read_and_clear(iova, kArea, 4096, bitmap).is_ok());
  EXPECT_EQ(bitmap, std::vector<uint64_t>(bitmap.size(), 0));
  EXPECT_EQ(t->read_and_clear(iova + 1, kArea, 4096, bitmap).code(), EINVAL);
  EXPECT_TRUE(t->stop().is_ok());
  EXPECT_FALSE(fake.hwpt_dirty_enabled);
}

TEST_F(KernelBackendTest, IommufdPassesTheVfToken) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  OpenOptions o = mode(VfioMode::Iommufd);
  o.vf_token = "00112233-4455-6677-8899-aabbccddeeff";
  auto dev = open_pci_device(kFakeBdf, dma, o);
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  std::vector<uint8_t> want{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                            0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
  EXPECT_EQ(fake.bind_token, want);
  o.vf_token = "not-a-uuid";
  auto bad = open_pci_device(kFakeBdf, dma, o);
  EXPECT_EQ(bad.status().code(), EINVAL);
}

TEST_F(KernelBackendTest, AutoModePicksIommufdOnlyWhenBothNodesExist) {
  auto mem = make_memory(1);
  {
    DmaSpace dma(*mem);
    auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Auto));
    ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
    EXPECT_EQ((*dev)->backend(), "iommufd");
    EXPECT_NE((*dev)->backend_reason().find("/dev/iommu and /dev/vfio/devices exist"), std::string_view::npos);
  }
  FakeKernel legacy;
  legacy.have_cdev = false;
  ScopedSys use_legacy(legacy);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Auto));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ((*dev)->backend(), "type1");
  EXPECT_NE((*dev)->backend_reason().find("/dev/vfio/devices is missing"), std::string_view::npos);
}

// ---- the DmaSpace with several domains ----

// A domain that records what it is asked to do.
class RecordingDomain final : public DmaDomain {
 public:
  explicit RecordingDomain(bool by_address) : by_address_(by_address) {}
  std::string_view name() const override { return "recording"; }
  Status map(uint64_t iova, void*, uint64_t len, int fd, uint64_t) override {
    maps.push_back({iova, len, fd});
    return Status::ok();
  }
  Status unmap(uint64_t iova, uint64_t len) override {
    unmaps.push_back({iova, len, -1});
    return Status::ok();
  }
  std::vector<IovaRange> iova_ranges() const override { return {}; }
  uint64_t page_size_mask() const override { return 4096; }
  bool maps_by_address() const override { return by_address_; }
  uint64_t map_calls() const override { return maps.size(); }
  uint64_t unmap_calls() const override { return unmaps.size(); }
  struct Op {
    uint64_t iova, len;
    int fd;
  };
  std::vector<Op> maps, unmaps;

 private:
  bool by_address_;
};

TEST_F(KernelBackendTest, DomainAttachedLaterGetsAllMemoryAndNewMemoryReachesEveryDomain) {
  auto mem = make_memory(3);
  DmaSpace dma(*mem);
  auto by_fd = std::make_shared<RecordingDomain>(false);
  ASSERT_TRUE(dma.attach(by_fd).is_ok());
  EXPECT_EQ(by_fd->maps.size(), 3u);  // one per area, each with its own fd
  for (auto& op : by_fd->maps) EXPECT_GE(op.fd, 0);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));  // a device added later
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ(fake.type1_maps.size(), 1u);
  EXPECT_EQ(fake.type1_maps.begin()->second, 3 * kArea);
  ASSERT_TRUE(mem->extend(kArea).is_ok());
  EXPECT_EQ(by_fd->maps.size(), 4u);
  EXPECT_EQ(fake.type1_maps.size(), 2u);
  ASSERT_TRUE(dma.detach(by_fd.get()).is_ok());
  EXPECT_EQ(by_fd->unmaps.size(), 4u);
  EXPECT_TRUE(dma.mappings(by_fd.get()).empty());
}

// ---- the device fd ----

TEST_F(KernelBackendTest, RegionInfoIsAskedTwiceForCapabilities) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  auto bar0 = (*dev)->region_info(kBar0);
  ASSERT_TRUE(bar0.is_ok()) << bar0.status().describe();
  EXPECT_EQ(fake.region_info_calls[kBar0], 2);
  EXPECT_EQ(bar0->size, 16384u);
  ASSERT_EQ(bar0->sparse.size(), 2u);
  EXPECT_EQ(bar0->sparse[1].offset, 12288u);
  EXPECT_TRUE(bar0->msix_mappable);
  EXPECT_EQ(bar0->cap_ids, (std::vector<uint16_t>{kVfioRegionInfoCapSparseMmap, kVfioRegionInfoCapMsixMappable}));
  auto cfg = (*dev)->region_info(kConfigRegion);
  ASSERT_TRUE(cfg.is_ok());
  EXPECT_EQ(fake.region_info_calls[kConfigRegion], 1);  // no capabilities, no second call
  // Cached: asking again costs no ioctl.
  ASSERT_TRUE((*dev)->region_info(kBar0).is_ok());
  EXPECT_EQ(fake.region_info_calls[kBar0], 2);
}

TEST_F(KernelBackendTest, LoopingCapabilityChainIsRefused) {
  fake.corrupt_region_caps = true;
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  auto bar0 = (*dev)->region_info(kBar0);
  EXPECT_EQ(bar0.status().code(), EPROTO);
}

TEST_F(KernelBackendTest, RegionAccessAndMmapRespectBoundsAndSparseAreas) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  uint8_t buf[8];
  ASSERT_TRUE((*dev)->region_read(kBar0, 4096, buf, sizeof(buf)).is_ok());
  EXPECT_EQ(buf[1], static_cast<uint8_t>(4097 * 7));
  EXPECT_EQ((*dev)->region_read(kBar0, 16380, buf, sizeof(buf)).code(), EINVAL);  // runs past the end
  auto vendor = (*dev)->config_read(0, 2);
  ASSERT_TRUE(vendor.is_ok());
  EXPECT_EQ(*vendor, 0x1b36u);
  EXPECT_EQ((*dev)->config_read(1, 2).status().code(), EINVAL);  // unaligned
  ASSERT_TRUE((*dev)->config_write(4, 2, 0x0406).is_ok());
  EXPECT_EQ(*(*dev)->config_read(4, 2), 0x0406u);
  auto mapped = (*dev)->region_map(kBar0, 0, 8192);
  ASSERT_TRUE(mapped.is_ok()) << mapped.status().describe();
  EXPECT_EQ(static_cast<uint8_t*>(*mapped)[4097], static_cast<uint8_t>(4097 * 7));
  // The MSI-X table page between the sparse areas stays unmappable.
  EXPECT_EQ((*dev)->region_map(kBar0, 8192, 4096).status().code(), EINVAL);
  EXPECT_EQ((*dev)->region_map(kConfigRegion, 0, 4096).status().code(), ENOTSUP);
}

TEST_F(KernelBackendTest, SetIrqsLaysOutEventfdsAfterTheHeader) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  auto info = (*dev)->irq_info(kMsixIrq);
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->count, 16u);
  int e1 = fake.eventfd(0, 0), e2 = fake.eventfd(0, 0);
  int fds[] = {e1, e2, -1};
  Status st = (*dev)->set_irq_eventfds(kMsixIrq, 2, fds);
  ASSERT_TRUE(st.is_ok()) << st.describe();
  ASSERT_EQ(fake.irq_sets.size(), 1u);
  const auto& rec = fake.irq_sets[0];
  EXPECT_EQ(rec.argsz, sizeof(VfioIrqSet) + 3 * sizeof(int32_t));
  EXPECT_EQ(rec.flags, kVfioIrqSetDataEventfd | kVfioIrqSetActionTrigger);
  EXPECT_EQ(rec.index, kMsixIrq);
  EXPECT_EQ(rec.start, 2u);
  EXPECT_EQ(rec.count, 3u);
  EXPECT_EQ(rec.fds, (std::vector<int32_t>{e1, e2, -1}));
  // Past the vector count: the kernel's EINVAL comes back as a Status.
  EXPECT_EQ((*dev)->set_irq_eventfds(kMsixIrq, 15, fds).code(), EINVAL);
  ASSERT_TRUE((*dev)->disable_irqs(kMsixIrq).is_ok());
  EXPECT_EQ(fake.irq_sets.back().flags, kVfioIrqSetDataNone | kVfioIrqSetActionTrigger);
  EXPECT_EQ(fake.irq_sets.back().count, 0u);
}

TEST_F(KernelBackendTest, MigrationKeepsTheDataFdAndReadsAndWritesIt) {
  fake.migration = true;
  fake.mig_blob.assign(300, 0x5a);
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  auto caps = (*dev)->migration_caps();
  ASSERT_TRUE(caps.is_ok());
  EXPECT_TRUE(caps->supported);
  EXPECT_EQ(caps->flags, kVfioMigrationStopCopy | kVfioMigrationPreCopy);
  ASSERT_TRUE((*dev)->set_mig_state(MigState::Stop).is_ok());
  EXPECT_EQ((*dev)->mig_read(nullptr, 0).status().code(), EBADF);  // no data in STOP
  ASSERT_TRUE((*dev)->set_mig_state(MigState::StopCopy).is_ok());
  EXPECT_EQ(*(*dev)->mig_state(), MigState::StopCopy);
  EXPECT_EQ(*(*dev)->mig_data_size(), 300u);
  std::vector<uint8_t> got(512);
  size_t total = 0;
  for (;;) {
    auto n = (*dev)->mig_read(got.data() + total, got.size() - total);
    ASSERT_TRUE(n.is_ok());
    if (*n == 0) break;
    total += *n;
  }
  EXPECT_EQ(total, 300u);
  int fds_before = fake.open_fds();
  ASSERT_TRUE((*dev)->set_mig_state(MigState::Stop).is_ok());
  EXPECT_EQ(fake.open_fds(), fds_before - 1);  // the data fd is closed with the data phase
  ASSERT_TRUE((*dev)->set_mig_state(MigState::Resuming).is_ok());
  ASSERT_TRUE((*dev)->mig_write(got.data(), 250).is_ok());
  EXPECT_EQ(fake.mig_received.size(), 250u);  // the fake takes 100 bytes a call: the write loops
}

TEST_F(KernelBackendTest, DeviceDmaLoggingStartsReportsZeroedAndStops) {
  fake.dma_logging = true;
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Iommufd));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  DirtyTracker* t = (*dev)->dma_logging();
  ASSERT_NE(t, nullptr);
  IovaRange ranges[] = {{0x100000, 0x1fffff}, {0x400000, 0x4fffff}};
  ASSERT_TRUE(t->start(ranges, 4096).is_ok());
  ASSERT_EQ(fake.logging_ranges.size(), 2u);
  EXPECT_EQ(fake.logging_ranges[1].start, 0x400000u);
  EXPECT_EQ(fake.logging_ranges[1].last, 0x4fffffu);
  EXPECT_EQ(fake.logging_page_size, 4096u);
  fake.dirty_iovas = {0x100000 + 2 * 4096, 0x400000};
  std::vector<uint64_t> bitmap(4, ~0ull);  // 256 pages, garbage to start with
  ASSERT_TRUE(t->read_and_clear(0x100000, 256 * 4096, 4096, bitmap).is_ok());
  EXPECT_EQ(bitmap, (std::vector<uint64_t>{1ull << 2, 0, 0, 0}));
  EXPECT_EQ(t->read_and_clear(0x100000, 512 * 4096, 4096, bitmap).code(), EINVAL);  // bitmap too small
  ASSERT_TRUE(t->stop().is_ok());
  EXPECT_FALSE(fake.logging_started);
}

TEST_F(KernelBackendTest, DomainWhoseRangesMissMappedMemoryIsRefused) {
  auto mem = make_memory(2);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));  // memory is now mapped
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  class NarrowDomain final : public DmaDomain {
   public:
    std::string_view name() const override { return "narrow"; }
    Status map(uint64_t, void*, uint64_t, int, uint64_t) override {
      ++maps;
      return Status::ok();
    }
    Status unmap(uint64_t, uint64_t) override { return Status::ok(); }
    std::vector<IovaRange> iova_ranges() const override { return {{0x1000, 0xfffff}}; }
    uint64_t page_size_mask() const override { return 4096; }
    uint64_t map_calls() const override { return maps; }
    uint64_t unmap_calls() const override { return 0; }
    uint64_t maps = 0;
  };
  auto narrow = std::make_shared<NarrowDomain>();
  Status st = dma.attach(narrow);
  EXPECT_EQ(st.code(), ERANGE);
  EXPECT_NE(st.message().find("already mapped"), std::string::npos) << st.message();
  EXPECT_EQ(narrow->maps, 0u);
  EXPECT_EQ(mem->iova_of(mem->areas()[0]->va), fake.type1_maps.begin()->first);  // nothing moved
}

TEST_F(KernelBackendTest, NoMigrationFeatureMeansUnsupportedNotAnError) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  auto dev = open_pci_device(kFakeBdf, dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  auto caps = (*dev)->migration_caps();
  ASSERT_TRUE(caps.is_ok());
  EXPECT_FALSE(caps->supported);
  EXPECT_EQ((*dev)->dma_logging(), nullptr);
}

TEST_F(KernelBackendTest, BadSpecsGetClearErrors) {
  auto mem = make_memory(1);
  DmaSpace dma(*mem);
  EXPECT_EQ(open_pci_device("nonsense", dma, {}).status().code(), EINVAL);
  EXPECT_EQ(open_pci_device("0000:02:00.0", dma, {}).status().code(), ENODEV);
  // open_device routes: a socket spec never reaches the PCI path, a PCI address does.
  EXPECT_EQ(open_device("vfio-user:", dma, {}).status().code(), EINVAL);
  EXPECT_FALSE(open_device("vfio-user:/nonexistent/uvio-test.sock", dma, {}).is_ok());
  auto dev = open_device("01:00.0", dma, mode(VfioMode::Group));
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
  EXPECT_EQ((*dev)->name(), kFakeBdf);
}

TEST(PciAddress, ParsesAndCanonicalizes) {
  std::string out;
  EXPECT_TRUE(parse_pci_address("01:00.0", &out));
  EXPECT_EQ(out, "0000:01:00.0");
  EXPECT_TRUE(parse_pci_address("0001:AF:1f.7", &out));
  EXPECT_EQ(out, "0001:af:1f.7");
  EXPECT_FALSE(parse_pci_address("01:20.0", &out));  // device number is 5 bits
  EXPECT_FALSE(parse_pci_address("01:00.8", &out));
  EXPECT_FALSE(parse_pci_address("01:00", &out));
  EXPECT_FALSE(parse_pci_address("x1:00.0", &out));
  EXPECT_FALSE(parse_pci_address("00000:01:00.0", &out));
  std::array<uint8_t, 16> uuid{};
  EXPECT_TRUE(parse_uuid("00112233-4455-6677-8899-AABBCCDDEEFF", &uuid));
  EXPECT_EQ(uuid[15], 0xff);
  EXPECT_FALSE(parse_uuid("00112233-4455-6677-8899-aabbccddeef", &uuid));
  EXPECT_FALSE(parse_uuid("0011223344556677-8899-aabb-ccddeeff", &uuid));
}

}  // namespace
}  // namespace uvio::iommu
