#include "mig/dirty_bitmap.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

namespace uvio::mig {

std::vector<iommu::IovaRange> combine_iova_ranges(std::vector<iommu::IovaRange> ranges, uint32_t max_ranges) {
  if (max_ranges == 0) return ranges;
  while (ranges.size() > max_ranges) {
    // The pair with the smallest hole between them becomes one range.
    size_t best = 0;
    uint64_t best_gap = ~0ull;
    for (size_t i = 0; i + 1 < ranges.size(); i++) {
      uint64_t gap = ranges[i + 1].start - ranges[i].last;
      if (gap < best_gap) {
        best_gap = gap;
        best = i;
      }
    }
    ranges[best].last = ranges[best + 1].last;
    ranges.erase(ranges.begin() + static_cast<long>(best) + 1);
  }
  return ranges;
}

DirtyBitmap::DirtyBitmap(std::vector<AreaSpan> areas) : areas_(std::move(areas)) {
  std::sort(areas_.begin(), areas_.end(), [](const AreaSpan& a, const AreaSpan& b) { return a.va < b.va; });
  for (const AreaSpan& a : areas_) bits_.emplace_back((a.len / kDirtyPageBytes + 63) / 64, 0);
}

void DirtyBitmap::mark_area_pages(size_t area, uint64_t first, uint64_t last) {
  auto& words = bits_[area];
  for (uint64_t p = first; p <= last;) {
    uint64_t w = p / 64;
    uint64_t lo = p % 64;
    uint64_t hi = std::min<uint64_t>(63, lo + (last - p));
    uint64_t mask = (hi == 63 ? ~0ull : ((1ull << (hi + 1)) - 1)) & ~((1ull << lo) - 1);
    dirty_pages_ += static_cast<uint64_t>(std::popcount(mask & ~words[w]));
    words[w] |= mask;
    p += hi - lo + 1;
  }
}

void DirtyBitmap::mark_va(uint64_t va, uint64_t len) {
  if (len == 0) return;
  uint64_t end = va + len;
  uint64_t covered = 0;
  for (size_t i = 0; i < areas_.size(); i++) {
    const AreaSpan& a = areas_[i];
    uint64_t lo = std::max(va, a.va), hi = std::min(end, a.va + a.len);
    if (lo >= hi) continue;
    covered += hi - lo;
    mark_area_pages(i, (lo - a.va) / kDirtyPageBytes, (hi - 1 - a.va) / kDirtyPageBytes);
  }
  outside_ += len - covered;
}

void DirtyBitmap::mark_iova_bitmap(uint64_t iova, uint64_t page_size, uint64_t pages, std::span<const uint64_t> bits) {
  pages = std::min<uint64_t>(pages, bits.size() * 64);
  for (size_t i = 0; i < areas_.size(); i++) {
    const AreaSpan& a = areas_[i];
    // Only the tracker pages that overlap this area.
    uint64_t lo = std::max(iova, a.iova);
    uint64_t hi = std::min(iova + pages * page_size, a.iova + a.len);
    if (lo >= hi) continue;
    for (uint64_t p = (lo - iova) / page_size; p <= (hi - 1 - iova) / page_size; p++) {
      if (bits[p / 64] == 0) {  // skip a clean word at once
        p = p / 64 * 64 + 63;
        continue;
      }
      if (!(bits[p / 64] >> (p % 64) & 1)) continue;
      uint64_t start = std::max(iova + p * page_size, a.iova);
      uint64_t end = std::min(iova + (p + 1) * page_size, a.iova + a.len);
      mark_area_pages(i, (start - a.iova) / kDirtyPageBytes, (end - 1 - a.iova) / kDirtyPageBytes);
    }
  }
}

void DirtyBitmap::mark_all() {
  for (size_t i = 0; i < areas_.size(); i++)
    if (areas_[i].len) mark_area_pages(i, 0, areas_[i].len / kDirtyPageBytes - 1);
}

void DirtyBitmap::clear() {
  for (auto& w : bits_) std::fill(w.begin(), w.end(), 0);
  dirty_pages_ = 0;
}

Status DirtyBitmap::drain_runs(uint64_t max_run, const std::function<Status(uint64_t va, uint64_t len)>& fn) {
  uint64_t max_pages = std::max<uint64_t>(1, max_run / kDirtyPageBytes);
  for (size_t i = 0; i < areas_.size(); i++) {
    auto& words = bits_[i];
    uint64_t pages = areas_[i].len / kDirtyPageBytes;
    uint64_t p = 0;
    while (p < pages) {
      if (words[p / 64] == 0) {
        p = (p / 64 + 1) * 64;
        continue;
      }
      if (!(words[p / 64] >> (p % 64) & 1)) {
        p++;
        continue;
      }
      uint64_t first = p;
      while (p < pages && p - first < max_pages && (words[p / 64] >> (p % 64) & 1)) {
        words[p / 64] &= ~(1ull << (p % 64));
        p++;
      }
      dirty_pages_ -= p - first;
      UVIO_TRY(fn(areas_[i].va + first * kDirtyPageBytes, (p - first) * kDirtyPageBytes));
    }
  }
  return Status::ok();
}

Status read_tracker_into(iommu::DirtyTracker& tracker, std::span<const iommu::IovaRange> ranges, uint64_t page_size,
                         DirtyBitmap& bitmap, std::vector<uint64_t>& scratch) {
  for (const iommu::IovaRange& r : ranges) {
    uint64_t len = r.length();
    uint64_t pages = (len + page_size - 1) / page_size;
    scratch.assign((pages + 63) / 64, 0);
    Status st = tracker.read_and_clear(r.start, len, page_size, scratch);
    if (!st)
      return Status::error(st.code(), fmt::format("{}: reading dirty pages of {:#x}-{:#x}: {}", tracker.name(),
                                                  r.start, r.last, st.message()));
    bitmap.mark_iova_bitmap(r.start, page_size, pages, scratch);
  }
  return Status::ok();
}

}  // namespace uvio::mig
