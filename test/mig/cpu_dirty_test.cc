// CPU dirty tracking over real runtime memory: the pages this process writes, exactly.
#include "mig/cpu_dirty.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

namespace uvio::mig {
namespace {

constexpr uint64_t kPage = 4096;

std::unique_ptr<Memory> make_memory(bool huge, size_t bytes) {
  MemConfig cfg;
  cfg.total_bytes = bytes;
  cfg.hugepages = huge;
  cfg.file_prefix = "cpu-dirty-test";
  auto mem = Memory::create(cfg);
  return mem ? std::move(mem.value()) : nullptr;
}

std::set<uint64_t> collect_pages(CpuDirtyTracker& t, uint64_t granule) {
  std::set<uint64_t> pages;
  Status st = t.collect([&](uint64_t va, uint64_t len) {
    EXPECT_EQ(va % granule, 0u);
    EXPECT_EQ(len % granule, 0u);
    for (uint64_t p = va; p < va + len; p += granule) pages.insert(p);
  });
  EXPECT_TRUE(st) << st.message();
  return pages;
}

void check_mode(CpuTrackMode mode, bool huge) {
  auto mem = make_memory(huge, huge ? 16u << 20 : 2u << 20);  // 8 pages either way at least
  if (!mem) GTEST_SKIP() << "no memory of that kind here";
  auto tracker = CpuDirtyTracker::create(*mem, &mode);
  if (!tracker) GTEST_SKIP() << cpu_track_mode_name(mode) << ": " << tracker.status().message();
  CpuDirtyTracker& t = **tracker;
  const MemArea* a = mem->areas().front();
  const uint64_t granule = a->page_size;
  auto base = reinterpret_cast<uint64_t>(a->va);
  ASSERT_TRUE(t.start());

  // Nothing written yet: nothing reported.
  EXPECT_TRUE(collect_pages(t, granule).empty());
  // Written pages come back, once.
  a->va[0] = std::byte{1};
  a->va[3 * granule + 17] = std::byte{2};
  a->va[a->len - 1] = std::byte{3};
  std::set<uint64_t> want = {base, base + 3 * granule, base + a->len - granule};
  EXPECT_EQ(collect_pages(t, granule), want);
  EXPECT_TRUE(collect_pages(t, granule).empty());
  // Reading is not writing.
  volatile std::byte sink = a->va[5 * granule];
  (void)sink;
  EXPECT_TRUE(collect_pages(t, granule).empty());
  // A page written again after a collect is reported again.
  a->va[3 * granule] = std::byte{4};
  EXPECT_EQ(collect_pages(t, granule), std::set<uint64_t>{base + 3 * granule});

  // An area added while tracking is reported whole, then tracked like the others.
  auto added = mem->extend(huge ? 2u << 20 : 64 * kPage);
  ASSERT_TRUE(added) << added.status().message();
  auto added_base = reinterpret_cast<uint64_t>((*added)->va);
  auto pages = collect_pages(t, granule);
  EXPECT_EQ(pages.size(), (*added)->len / granule);
  EXPECT_EQ(*pages.begin(), added_base);
  (*added)->va[(*added)->len - 1] = std::byte{5};
  EXPECT_EQ(collect_pages(t, granule), std::set<uint64_t>{added_base + (*added)->len - granule});

  ASSERT_TRUE(t.stop());
  // Memory stays writable once tracking stops.
  a->va[7 * granule] = std::byte{6};
  EXPECT_EQ(a->va[7 * granule], std::byte{6});
}

TEST(CpuDirty, UffdAsyncSmallPages) { check_mode(CpuTrackMode::UffdWpAsync, false); }
TEST(CpuDirty, UffdAsyncHugetlb) { check_mode(CpuTrackMode::UffdWpAsync, true); }
TEST(CpuDirty, SoftDirtySmallPages) { check_mode(CpuTrackMode::SoftDirty, false); }

TEST(CpuDirty, SoftDirtyRefusesHugetlb) {
  auto mem = make_memory(true, 2u << 20);
  if (!mem) GTEST_SKIP() << "no hugepages here";
  CpuTrackMode mode = CpuTrackMode::SoftDirty;
  auto tracker = CpuDirtyTracker::create(*mem, &mode);
  ASSERT_FALSE(tracker);
  EXPECT_NE(tracker.status().message().find("hugetlb"), std::string::npos);
}

TEST(CpuDirty, EverythingReportsAllMemory) {
  auto mem = make_memory(false, 1u << 20);
  ASSERT_TRUE(mem);
  CpuTrackMode mode = CpuTrackMode::Everything;
  auto tracker = CpuDirtyTracker::create(*mem, &mode);
  ASSERT_TRUE(tracker);
  ASSERT_TRUE((*tracker)->start());
  uint64_t total = 0;
  ASSERT_TRUE((*tracker)->collect([&](uint64_t, uint64_t len) { total += len; }));
  EXPECT_EQ(total, mem->areas().front()->len);
}

}  // namespace
}  // namespace uvio::mig
