#include "mig/dirty_bitmap.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace uvio::mig {
namespace {

using Runs = std::vector<std::pair<uint64_t, uint64_t>>;

Runs drain(DirtyBitmap& b, uint64_t max_run = ~0ull) {
  Runs runs;
  EXPECT_TRUE(b.drain_runs(max_run, [&](uint64_t va, uint64_t len) {
    runs.emplace_back(va, len);
    return Status::ok();
  }));
  return runs;
}

TEST(CombineIovaRanges, ClosesSmallestGapsFirst) {
  std::vector<iommu::IovaRange> r = {{0x0000, 0x0fff}, {0x2000, 0x2fff}, {0x10000, 0x10fff}, {0x11000 + 0x100, 0x11fff}};
  auto two = combine_iova_ranges(r, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].start, 0x0000u);
  EXPECT_EQ(two[0].last, 0x2fffu);
  EXPECT_EQ(two[1].start, 0x10000u);
  EXPECT_EQ(two[1].last, 0x11fffu);
  auto one = combine_iova_ranges(r, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].start, 0u);
  EXPECT_EQ(one[0].last, 0x11fffu);
  EXPECT_EQ(combine_iova_ranges(r, 0).size(), 4u);  // no limit
  EXPECT_EQ(combine_iova_ranges(r, 8).size(), 4u);
}

TEST(DirtyBitmap, MarksByVaAndDrainsRuns) {
  DirtyBitmap b({{0x100000, 64 * 4096, 0x100000}, {0x400000, 16 * 4096, 0x400000}});
  b.mark_va(0x100000 + 10, 1);                 // inside page 0
  b.mark_va(0x100000 + 4095, 2);               // straddles pages 0 and 1
  b.mark_va(0x100000 + 63 * 4096, 4096 * 4);   // last page, then past the area's end
  b.mark_va(0x400000 + 2 * 4096, 3 * 4096);
  EXPECT_EQ(b.dirty_pages(), 2u + 1 + 3);
  EXPECT_EQ(b.outside(), 3u * 4096);
  Runs want = {{0x100000, 2 * 4096}, {0x100000 + 63 * 4096, 4096}, {0x400000 + 2 * 4096, 3 * 4096}};
  EXPECT_EQ(drain(b), want);
  EXPECT_EQ(b.dirty_pages(), 0u);
  EXPECT_TRUE(drain(b).empty());
}

TEST(DirtyBitmap, RunsAreSplitAtMaxRun) {
  DirtyBitmap b({{0x100000, 200 * 4096, 0x100000}});
  b.mark_all();
  EXPECT_EQ(b.dirty_pages(), 200u);
  Runs runs = drain(b, 64 * 4096);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[3], std::make_pair(uint64_t{0x100000 + 192 * 4096}, uint64_t{8 * 4096}));
}

TEST(DirtyBitmap, MergesDeviceBitmapsAtOtherPageSizes) {
  // IOVA differs from VA; the tracker works in 2 MiB pages.
  constexpr uint64_t va = 0x7f0000000000, iova = 0x200000000;
  DirtyBitmap b({{va, 4u << 20, iova}});
  std::vector<uint64_t> bits = {0b10};  // the second 2 MiB page of [iova - 2 MiB, ...)
  b.mark_iova_bitmap(iova - (2u << 20), 2u << 20, 3, bits);
  EXPECT_EQ(b.dirty_pages(), 512u);
  Runs want = {{va, 2u << 20}};
  EXPECT_EQ(drain(b), want);
  // A 1 KiB tracker page marks the 4 KiB page that holds it.
  std::vector<uint64_t> small(1, 1ull << 9);
  b.mark_iova_bitmap(iova + (1u << 20), 1024, 64, small);
  Runs want_small = {{va + (1u << 20) + 8192, 4096}};
  EXPECT_EQ(drain(b), want_small);
}

TEST(DirtyBitmap, DrainStopsOnError) {
  DirtyBitmap b({{0x100000, 8 * 4096, 0x100000}});
  b.mark_va(0x100000, 4096);
  b.mark_va(0x100000 + 4 * 4096, 4096);
  int calls = 0;
  Status st = b.drain_runs(~0ull, [&](uint64_t, uint64_t) {
    calls++;
    return Status::error(EPIPE, "gone");
  });
  EXPECT_FALSE(st);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace uvio::mig
