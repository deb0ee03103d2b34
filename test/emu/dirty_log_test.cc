// Dirty logging, range merging and the bounds-checked DMA table, on their own.
#include "emu/dirty_log.h"
#include "emu/dma_map_table.h"
#include "iommu/iova_ranges.h"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace uvio::emu {
namespace {

using iommu::IovaRange;

TEST(IovaRanges, JoinsOverlappingAndAdjacentThenClosestFirst) {
  std::vector<IovaRange> r = {{0x9000, 0x9fff}, {0x0, 0xfff}, {0x1000, 0x1fff}, {0x1800, 0x27ff},
                              {0x5000, 0x5fff}, {0x20000, 0x20fff}};
  iommu::combine_iova_ranges(r, 0);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].start, 0u);
  EXPECT_EQ(r[0].last, 0x27ffu);
  // Gaps: 0x2800..0x4fff (0x2801), 0x6000..0x8fff (0x3001), 0xa000..0x1ffff (big).
  iommu::combine_iova_ranges(r, 3);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].last, 0x5fffu);
  EXPECT_EQ(r[1].start, 0x9000u);
  iommu::combine_iova_ranges(r, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].start, 0u);
  EXPECT_EQ(r[0].last, 0x20fffu);
}

TEST(IovaRanges, TopOfTheAddressSpaceDoesNotWrap) {
  std::vector<IovaRange> r = {{UINT64_MAX - 0xfff, UINT64_MAX}, {0, 0xfff}};
  iommu::combine_iova_ranges(r, 2);
  ASSERT_EQ(r.size(), 2u);
  iommu::combine_iova_ranges(r, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].last, UINT64_MAX);
}

TEST(DirtyLog, MarksOnlyTrackedPagesAndReadClears) {
  DirtyLog log;
  ASSERT_TRUE(log.start({{0x10000, 0x1ffff}}, 4096));
  log.mark(0x10000 + 3 * 4096 + 5, 1);
  log.mark(0x10000 + 4096 * 15 + 4000, 200);  // crosses the end of the range
  log.mark(0x50000, 4096);                     // untracked
  uint64_t bm[1];
  ASSERT_TRUE(log.read_and_clear(0x10000, 0x10000, 4096, bm));
  EXPECT_EQ(bm[0], (1ull << 3) | (1ull << 15));
  ASSERT_TRUE(log.read_and_clear(0x10000, 0x10000, 4096, bm));
  EXPECT_EQ(bm[0], 0u);
  // Reporting at a smaller page size replicates a tracking page's bit.
  log.mark(0x10000, 1);
  uint64_t fine[1];
  ASSERT_TRUE(log.read_and_clear(0x10000, 0x2000, 1024, fine));
  EXPECT_EQ(fine[0], 0xfu);
}

TEST(DirtyLog, RefusesBadArguments) {
  DirtyLog log;
  EXPECT_EQ(log.start({{0, 0xfff}}, 3000).code(), EINVAL);
  EXPECT_EQ(log.start({}, 4096).code(), EINVAL);
  EXPECT_EQ(log.start({{0x2000, 0x1000}}, 4096).code(), EINVAL);
  EXPECT_EQ(log.start({{0, UINT64_MAX}}, 4096).code(), E2BIG);
  uint64_t bm[1];
  EXPECT_EQ(log.read_and_clear(0, 4096, 4096, bm).code(), EINVAL);  // not started
  ASSERT_TRUE(log.start({{0, 0xffff}}, 4096));
  EXPECT_EQ(log.start({{0, 0xffff}}, 4096).code(), EBUSY);
  EXPECT_EQ(log.read_and_clear(0, 128 * 4096, 4096, bm).code(), EINVAL);  // bitmap too small
  log.stop();
  EXPECT_FALSE(log.active());
}

TEST(DirtyLog, MergesBeyondItsRangeLimit) {
  DirtyLog log;
  std::vector<IovaRange> r;
  for (uint64_t i = 0; i < 20; ++i) r.push_back({i * 0x10000, i * 0x10000 + 0xfff});
  ASSERT_TRUE(log.start(r, 4096));
  EXPECT_EQ(log.ranges().size(), DirtyLog::kMaxRanges);
}

struct Memfd {
  int fd;
  std::byte* p;
  size_t len;
  ~Memfd() {
    munmap(p, len);
    close(fd);
  }
  explicit Memfd(size_t n) : len(n) {
    fd = memfd_create("dma-table-test", MFD_CLOEXEC);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(len)), 0);
    p = static_cast<std::byte*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  }
};

TEST(DmaMapTable, BoundsCheckedAccessAcrossAdjacentMappings) {
  Memfd a(0x4000), b(0x4000);
  DmaMapTable t;
  ASSERT_TRUE(t.map(0x100000, 0x2000, dup(a.fd), 0x1000, true, true));
  ASSERT_TRUE(t.map(0x102000, 0x1000, dup(b.fd), 0, true, true));
  EXPECT_EQ(t.map(0x101000, 0x2000, -1, 0, true, true).code(), EEXIST);
  EXPECT_EQ(t.map(0xff000, 0x2000, -1, 0, true, true).code(), EEXIST);
  EXPECT_EQ(t.map(0x200000, 0, -1, 0, true, true).code(), EINVAL);

  // A write spanning both mappings lands in both files, at the right offsets.
  uint8_t data[32];
  for (int i = 0; i < 32; ++i) data[i] = static_cast<uint8_t>(i + 1);
  ASSERT_TRUE(t.write(0x102000 - 16, data, 32));
  EXPECT_EQ(std::memcmp(a.p + 0x1000 + 0x2000 - 16, data, 16), 0);
  EXPECT_EQ(std::memcmp(b.p, data + 16, 16), 0);
  uint8_t back[32] = {};
  ASSERT_TRUE(t.read(0x102000 - 16, back, 32));
  EXPECT_EQ(std::memcmp(back, data, 32), 0);

  // Past the end, before the start, or wrapping: refused, nothing touched.
  EXPECT_FALSE(t.write(0x103000 - 8, data, 16));
  EXPECT_FALSE(t.read(0xfffff, back, 2));
  EXPECT_FALSE(t.read(UINT64_MAX - 4, back, 16));
  EXPECT_EQ(t.translate(0x102000 - 16, 32), nullptr);  // spans two mappings
  EXPECT_NE(t.translate(0x100000, 0x2000), nullptr);

  EXPECT_EQ(t.unmap(0x100000, 0x1000).code(), EINVAL);  // not exact
  ASSERT_TRUE(t.unmap(0x100000, 0x2000));
  EXPECT_FALSE(t.read(0x100000, back, 1));
}

TEST(DmaMapTable, WithoutFdOrWritePermissionAccessFails) {
  Memfd a(0x1000);
  DmaMapTable t;
  ASSERT_TRUE(t.map(0x1000, 0x1000, -1, 0, true, true));
  ASSERT_TRUE(t.map(0x2000, 0x1000, dup(a.fd), 0, true, false));
  uint8_t x = 1;
  EXPECT_FALSE(t.read(0x1000, &x, 1));
  EXPECT_FALSE(t.write(0x2000, &x, 1));
  EXPECT_TRUE(t.read(0x2000, &x, 1));
}

TEST(DmaMapTable, WritesAreDirtyLogged) {
  Memfd a(0x10000);
  DmaMapTable t;
  ASSERT_TRUE(t.map(0x40000, 0x10000, dup(a.fd), 0, true, true));
  ASSERT_TRUE(t.dirty_log().start(t.ranges(), 4096));
  uint8_t x = 1;
  ASSERT_TRUE(t.write(0x40000 + 0x5000, &x, 1));
  t.mark_dirty(0x40000 + 0x7000, 1);
  uint64_t bm[1];
  ASSERT_TRUE(t.dirty_log().read_and_clear(0x40000, 0x10000, 4096, bm));
  EXPECT_EQ(bm[0], (1ull << 5) | (1ull << 7));
}

}  // namespace
}  // namespace uvio::emu
