// What must be sent again: one bitmap per memory area at 4 KiB granularity, filled
// from the CPU tracker's written runs (by VA) and the devices' DMA logs (by IOVA, at the
// tracker's own page size), and walked as runs of dirty pages.
#pragma once

#include "iommu/device.h"

#include <uvio/status.h>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace uvio::mig {

inline constexpr uint64_t kDirtyPageBytes = 4096;

// Merges ranges until at most `max_ranges` remain (0 = no limit), always closing the
// smallest gap first, as the kernel's vfio_combine_iova_ranges does: the merged ranges
// cover a little more than asked, never less. `ranges` must be sorted and disjoint.
std::vector<iommu::IovaRange> combine_iova_ranges(std::vector<iommu::IovaRange> ranges, uint32_t max_ranges);

class DirtyBitmap {
 public:
  struct AreaSpan {
    uint64_t va = 0;
    uint64_t len = 0;   // a multiple of kDirtyPageBytes
    uint64_t iova = 0;  // contiguous: IOVA-as-VA or an assigned IOVA range
  };
  explicit DirtyBitmap(std::vector<AreaSpan> areas);

  // Every page of [va, va + len) touched by the range; parts outside the areas are
  // ignored and counted (outside()).
  void mark_va(uint64_t va, uint64_t len);
  // Bit i of `bits` set: [iova + i * page_size, + page_size) is dirty, for i < pages.
  void mark_iova_bitmap(uint64_t iova, uint64_t page_size, uint64_t pages, std::span<const uint64_t> bits);
  void mark_all();
  void clear();

  uint64_t dirty_pages() const { return dirty_pages_; }
  uint64_t dirty_bytes() const { return dirty_pages_ * kDirtyPageBytes; }
  uint64_t outside() const { return outside_; }
  const std::vector<AreaSpan>& areas() const { return areas_; }

  // Calls fn for each run of dirty pages (VA order, at most max_run bytes each) and
  // clears the pages as it goes; stops early when fn returns an error.
  Status drain_runs(uint64_t max_run, const std::function<Status(uint64_t va, uint64_t len)>& fn);

 private:
  void mark_area_pages(size_t area, uint64_t first, uint64_t last);  // inclusive page indexes
  std::vector<AreaSpan> areas_;
  std::vector<std::vector<uint64_t>> bits_;
  uint64_t dirty_pages_ = 0;
  uint64_t outside_ = 0;
};

// Reads and clears `tracker`'s log over `ranges` (the ranges it was started with) into
// `bitmap`; `scratch` is reused between calls.
Status read_tracker_into(iommu::DirtyTracker& tracker, std::span<const iommu::IovaRange> ranges,
                         uint64_t page_size, DirtyBitmap& bitmap, std::vector<uint64_t>& scratch);

}  // namespace uvio::mig
