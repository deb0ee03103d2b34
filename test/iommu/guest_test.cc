// Kernel VFIO backends against a real device and a real IOMMU: meant to run inside the
// QEMU test guest (test/vm/), not on the host, and not registered as a host test.
//
// Environment:
//   UVIO_TEST_BDF         PCI address of a device bound to vfio-pci (required; every test
//                         is skipped without it). The NVMe register checks run only when
//                         it is an NVMe controller (class 01:08:02), e.g. QEMU's nvme.
//   UVIO_TEST_VFIO_MODE   auto (default), iommufd, group or noiommu: the --vfio-mode.
//   UVIO_TEST_HUGEPAGES   1 (default): the DMA tests use 2 MiB hugepages (reserve at
//                         least 48 with /proc/sys/vm/nr_hugepages); 0: 4 KiB pages.
//
// The HWPT dirty-bitmap test needs /dev/iommu and a kernel with CONFIG_IOMMUFD_TEST
// (the iommufd selftest mock domain); it is skipped when either is missing.
#include <gtest/gtest.h>

#include <uvio/mem.h>

#include "iommu/abi/iommufd.h"
#include "iommu/abi/iommufd_test.h"
#include "iommu/dma_space.h"
#include "iommu/kernel_backends.h"
#include "iommu/sys.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace uvio::iommu {
namespace {

using namespace abi;

constexpr size_t kArea = 16u << 20;

std::string env(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

VfioMode env_mode() {
  std::string m = env("UVIO_TEST_VFIO_MODE", "auto");
  if (m == "iommufd") return VfioMode::Iommufd;
  if (m == "group") return VfioMode::Group;
  if (m == "noiommu") return VfioMode::NoIommu;
  return VfioMode::Auto;
}

std::unique_ptr<Memory> make_memory(size_t areas) {
  MemConfig cfg;
  cfg.total_bytes = areas * kArea;
  cfg.area_bytes = kArea;
  cfg.hugepages = env("UVIO_TEST_HUGEPAGES", "1") != "0";
  cfg.file_prefix = "uvio-guest-test";
  if (env_mode() == VfioMode::NoIommu) cfg.iova_mode = IovaMode::Pa;
  auto mem = Memory::create(cfg);
  if (!mem) {
    ADD_FAILURE() << mem.status().describe();
    return nullptr;
  }
  return std::move(mem.value());
}

class GuestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bdf_ = env("UVIO_TEST_BDF");
    if (bdf_.empty()) GTEST_SKIP() << "UVIO_TEST_BDF is not set";
    mem_ = make_memory(3);
    ASSERT_NE(mem_, nullptr);
    dma_ = std::make_unique<DmaSpace>(*mem_);
    OpenOptions o;
    o.mode = env_mode();
    auto dev = open_pci_device(bdf_, *dma_, o);
    ASSERT_TRUE(dev.is_ok()) << dev.status().describe();
    dev_ = std::move(dev.value());
  }
  void TearDown() override {
    dev_.reset();
    dma_.reset();
    mem_.reset();
  }
  bool is_nvme() {
    auto cls = dev_->config_read(0x08, 4);  // class code, PCI spec 7.5.1.1.6
    return cls && (*cls >> 8) == 0x010802;
  }

  std::string bdf_;
  std::unique_ptr<Memory> mem_;
  std::unique_ptr<DmaSpace> dma_;
  std::unique_ptr<Device> dev_;
};

TEST_F(GuestTest, OpensWithTheAskedBackendAndReadsRegions) {
  VfioMode m = env_mode();
  if (m == VfioMode::Iommufd) {
    EXPECT_EQ(dev_->backend(), "iommufd");
  } else if (m == VfioMode::Group) {
    EXPECT_EQ(dev_->backend(), "type1");
  }
  EXPECT_FALSE(dev_->backend_reason().empty());
  EXPECT_TRUE(dev_->info().is_pci());
  EXPECT_GE(dev_->info().num_regions, 9u);
  auto bar0 = dev_->region_info(kBar0);
  ASSERT_TRUE(bar0.is_ok()) << bar0.status().describe();
  EXPECT_GE(bar0->size, 4096u);
  EXPECT_TRUE(bar0->readable());
  auto cfg = dev_->region_info(kConfigRegion);
  ASSERT_TRUE(cfg.is_ok());
  EXPECT_GE(cfg->size, 256u);
  auto vendor = dev_->config_read(0, 2);
  ASSERT_TRUE(vendor.is_ok());
  EXPECT_NE(*vendor, 0xffffu);
}

TEST_F(GuestTest, NvmeCapReadsTheSameThroughMmapAndPread) {
  if (!is_nvme()) GTEST_SKIP() << bdf_ << " is not an NVMe controller";
  auto bar0 = dev_->region_info(kBar0);
  ASSERT_TRUE(bar0.is_ok());
  ASSERT_TRUE(bar0->mappable());
  uint64_t cap = 0;
  ASSERT_TRUE(dev_->region_read(kBar0, 0, &cap, sizeof(cap)).is_ok());
  auto mapped = dev_->region_map(kBar0, 0, 4096);
  ASSERT_TRUE(mapped.is_ok()) << mapped.status().describe();
  // NVMe base spec 3.1.4: 64-bit registers may be read as two 32-bit halves.
  auto* regs = static_cast<volatile uint32_t*>(*mapped);
  uint64_t cap_mmap = regs[0] | (uint64_t{regs[1]} << 32);
  EXPECT_EQ(cap_mmap, cap);
  // CAP (NVMe base spec 3.1.4.1): MQES 15:0 (0's based, >= 1), CQR bit 16,
  // TO 31:24 (> 0), CSS bit 37 (NVM command set), MPSMIN 51:48 <= MPSMAX 55:52.
  EXPECT_GE(cap & 0xffff, 1u);
  EXPECT_GT((cap >> 24) & 0xff, 0u);
  EXPECT_TRUE((cap >> 37) & 1);
  EXPECT_LE((cap >> 48) & 0xf, (cap >> 52) & 0xf);
  uint32_t vs = 0;  // VS (3.1.4.2): major in 31:16
  ASSERT_TRUE(dev_->region_read(kBar0, 8, &vs, sizeof(vs)).is_ok());
  EXPECT_GE(vs >> 16, 1u);
  EXPECT_EQ(regs[2], vs);
}

TEST_F(GuestTest, BatchedMapUsesOneCallPerContiguousRun) {
  std::string backend(dev_->backend());
  if (backend != "type1" && backend != "iommufd") GTEST_SKIP() << "noiommu maps nothing";
  DmaDomain& d = dev_->domain();
  // type1 maps by address: the three VA- and IOVA-contiguous areas are one call.
  // iommufd maps each area's own memfd (IOAS_MAP_FILE), or falls back per area.
  size_t expected = backend == "type1" ? 1 : mem_->areas().size();
  auto maps = dma_->mappings(&d);
  EXPECT_EQ(maps.size(), expected);
  EXPECT_EQ(d.map_calls(), expected);
  uint64_t mapped = 0;
  for (auto& m : maps) mapped += m.len;
  EXPECT_EQ(mapped, 3 * kArea);

  uint64_t before = d.map_calls();
  auto added = mem_->extend(kArea);
  ASSERT_TRUE(added.is_ok()) << added.status().describe();
  EXPECT_EQ(d.map_calls(), before + 1);  // memory added later reaches the domain at once
  size_t now = dma_->mappings(&d).size();
  EXPECT_EQ(now, expected + 1);

  auto shared = dma_->shared_domain(backend);
  ASSERT_NE(shared, nullptr);
  uint64_t unmaps = d.unmap_calls();
  ASSERT_TRUE(dma_->detach(&d).is_ok());
  EXPECT_EQ(d.unmap_calls(), unmaps + now);  // one unmap per mapping, never per page
  before = d.map_calls();
  ASSERT_TRUE(dma_->attach(shared).is_ok());  // everything comes back, batched again
  size_t again = backend == "type1" ? 1 : 4;
  EXPECT_EQ(dma_->mappings(&d).size(), again);
  EXPECT_EQ(d.map_calls(), before + again);
}

TEST_F(GuestTest, MapOutsideTheIovaRangesIsRefused) {
  DmaDomain& d = dev_->domain();
  auto ranges = d.iova_ranges();
  if (ranges.empty()) GTEST_SKIP() << "the domain reports no IOVA ranges";
  // The first gap between ranges, else just past the last one.
  uint64_t outside = ranges.back().last + 1;
  for (size_t i = 0; i + 1 < ranges.size(); ++i)
    if (ranges[i + 1].start > ranges[i].last + 1) {
      outside = (ranges[i].last + 1 + 4095) & ~uint64_t{4095};
      break;
    }
  if (outside == 0) GTEST_SKIP() << "the ranges cover the whole 64-bit space";
  size_t len = 4096;
  void* buf = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  ASSERT_NE(buf, MAP_FAILED);
  Status st = d.map(outside, buf, len, -1, 0);
  EXPECT_FALSE(st.is_ok()) << "IOVA " << std::hex << outside << " outside the ranges was accepted";
  if (st.is_ok()) (void)d.unmap(outside, len);
  munmap(buf, len);
}

TEST_F(GuestTest, Type1DirtyPagesReportPinnedPages) {
  if (std::string_view(dev_->backend()) != "type1") GTEST_SKIP() << "type1 only";
  DirtyTracker* t = dev_->domain().dirty_tracker();
  ASSERT_NE(t, nullptr) << "type1 reported no migration capability";
  auto maps = dma_->mappings(&dev_->domain());
  ASSERT_FALSE(maps.empty());
  IovaRange r{maps[0].iova, maps[0].iova + maps[0].len - 1};
  ASSERT_TRUE(t->start({&r, 1}, 4096).is_ok());
  uint64_t pages = maps[0].len / 4096;
  std::vector<uint64_t> bitmap((pages + 63) / 64);
  Status st = t->read_and_clear(maps[0].iova, maps[0].len, 4096, bitmap);
  ASSERT_TRUE(st.is_ok()) << st.describe();
  // With no hardware tracking behind it, type1 counts every pinned page as dirty.
  uint64_t dirty = 0;
  for (uint64_t w : bitmap) dirty += static_cast<uint64_t>(__builtin_popcountll(w));
  EXPECT_EQ(dirty, pages);
  EXPECT_TRUE(t->stop().is_ok());
}

TEST_F(GuestTest, MsixEventfdsWireUpAndCountsMatchConfigSpace) {
  auto info = dev_->irq_info(kMsixIrq);
  ASSERT_TRUE(info.is_ok()) << info.status().describe();
  if (info->count == 0) GTEST_SKIP() << "no MSI-X on this device";
  // The MSI-X capability (id 0x11, PCI spec 7.7.2): Table Size in Message Control 10:0.
  uint32_t table_size = 0;
  auto ptr = dev_->config_read(0x34, 1);
  ASSERT_TRUE(ptr.is_ok());
  for (uint32_t at = *ptr & 0xfc, hops = 0; at != 0 && hops < 48; ++hops) {
    auto hdr = dev_->config_read(at, 2);
    ASSERT_TRUE(hdr.is_ok());
    if ((*hdr & 0xff) == 0x11) {
      table_size = (*dev_->config_read(at + 2, 2) & 0x7ff) + 1;
      break;
    }
    at = (*hdr >> 8) & 0xfc;
  }
  EXPECT_EQ(info->count, table_size);
  size_t n = std::min<size_t>(info->count, 4);
  std::vector<int> fds;
  for (size_t i = 0; i < n; ++i) {
    int fd = sys().eventfd(0, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  Status st = dev_->set_irq_eventfds(kMsixIrq, 0, fds);
  EXPECT_TRUE(st.is_ok()) << st.describe();
  EXPECT_TRUE(dev_->disable_irqs(kMsixIrq).is_ok());
  for (int fd : fds) sys().close(fd);
}

// ---- the iommufd selftest mock domain: HWPT dirty bitmaps on real iommufd code ----

class MockDomainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = sys().open("/dev/iommu", O_RDWR);
    if (fd_ < 0) GTEST_SKIP() << "no /dev/iommu";
    IommuIoasAlloc alloc{};
    alloc.size = sizeof(alloc);
    ASSERT_EQ(sys().ioctl_ptr(fd_, kIommuIoasAlloc, &alloc), 0);
    ioas_ = alloc.out_ioas_id;
    // Without this, physically contiguous pages share one larger IOPTE and its dirty
    // bit marks the neighbours of a written page too: exact comparison needs 4 KiB IOPTEs.
    IommuOption opt{};
    opt.size = sizeof(opt);
    opt.option_id = kIommuOptionHugePages;
    opt.op = kIommuOptionOpSet;
    opt.object_id = ioas_;
    opt.val64 = 0;
    int orc = sys().ioctl_ptr(fd_, kIommuOption, &opt);
    ASSERT_EQ(orc, 0) << "IOMMU_OPTION_HUGE_PAGES=0: " << strerror(-orc);
    IommuTestCmd mock{};
    mock.size = sizeof(mock);
    mock.op = kIommuTestOpMockDomain;
    mock.id = ioas_;
    int rc = sys().ioctl_ptr(fd_, kIommuTestCmd, &mock);
    if (rc == -ENOTTY) GTEST_SKIP() << "the kernel has no iommufd selftest (CONFIG_IOMMUFD_TEST)";
    ASSERT_EQ(rc, 0) << strerror(-rc);
    idev_ = mock.mock_domain.out_idev_id;
  }
  void TearDown() override {
    if (buf_) munmap(buf_, kLen);
    if (fd_ >= 0) sys().close(fd_);
  }
  static constexpr size_t kLen = 2u << 20;
  int fd_ = -1;
  uint32_t ioas_ = 0, idev_ = 0;
  void* buf_ = nullptr;
};

TEST_F(MockDomainTest, HwptDirtyBitmapReturnsExactlyTheMarkedPages) {
  IommuHwptAlloc alloc{};
  alloc.size = sizeof(alloc);
  alloc.flags = kIommuHwptAllocDirtyTracking;
  alloc.dev_id = idev_;
  alloc.pt_id = ioas_;
  ASSERT_EQ(sys().ioctl_ptr(fd_, kIommuHwptAlloc, &alloc), 0);
  uint32_t hwpt = alloc.out_hwpt_id;
  // A second mock device attached to the dirty-tracking HWPT gives it a domain.
  IommuTestCmd attach{};
  attach.size = sizeof(attach);
  attach.op = kIommuTestOpMockDomain;
  attach.id = hwpt;
  ASSERT_EQ(sys().ioctl_ptr(fd_, kIommuTestCmd, &attach), 0);

  buf_ = mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  ASSERT_NE(buf_, MAP_FAILED);
  const uint64_t iova = kMockApertureStart;
  IommuIoasMap map{};
  map.size = sizeof(map);
  map.flags = kIommuIoasMapFixedIova | kIommuIoasMapReadable | kIommuIoasMapWriteable;
  map.ioas_id = ioas_;
  map.user_va = reinterpret_cast<uintptr_t>(buf_);
  map.length = kLen;
  map.iova = iova;
  ASSERT_EQ(sys().ioctl_ptr(fd_, kIommuIoasMap, &map), 0);

  auto tracker = make_hwpt_dirty_tracker(fd_, {hwpt});
  IovaRange r{iova, iova + kLen - 1};
  ASSERT_TRUE(tracker->start({&r, 1}, 4096).is_ok());

  constexpr uint64_t kPages = kLen / 4096;
  std::vector<uint64_t> marks(kPages / 64, 0);
  for (uint64_t page : {uint64_t{0}, uint64_t{3}, uint64_t{64}, uint64_t{200}, kPages - 1}) marks[page / 64] |= 1ull << (page % 64);
  IommuTestCmd dirty{};
  dirty.size = sizeof(dirty);
  dirty.op = kIommuTestOpDirty;
  dirty.id = hwpt;
  dirty.dirty.iova = iova;
  dirty.dirty.length = kLen;
  dirty.dirty.page_size = 4096;
  dirty.dirty.uptr = reinterpret_cast<uintptr_t>(marks.data());
  ASSERT_EQ(sys().ioctl_ptr(fd_, kIommuTestCmd, &dirty), 0);
  EXPECT_GT(dirty.dirty.out_nr_dirty, 0u);

  std::vector<uint64_t> bitmap(kPages / 64, ~0ull);  // garbage the tracker must clear
  Status st = tracker->read_and_clear(iova, kLen, 4096, bitmap);
  ASSERT_TRUE(st.is_ok()) << st.describe();
  EXPECT_EQ(bitmap, marks);
  // Read and clear: nothing is dirty the second time.
  ASSERT_TRUE(tracker->read_and_clear(iova, kLen, 4096, bitmap).is_ok());
  EXPECT_EQ(bitmap, std::vector<uint64_t>(kPages / 64, 0));
  EXPECT_TRUE(tracker->stop().is_ok());
}

}  // namespace
}  // namespace uvio::iommu
