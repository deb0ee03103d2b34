#include "iommu/iova_ranges.h"

#include <algorithm>

namespace uvio::iommu {

void combine_iova_ranges(std::vector<IovaRange>& ranges, uint32_t max_ranges) {
  if (ranges.empty()) return;
  std::sort(ranges.begin(), ranges.end(),
            [](const IovaRange& a, const IovaRange& b) { return a.start < b.start; });
  std::vector<IovaRange> merged;
  merged.reserve(ranges.size());
  for (const IovaRange& r : ranges) {
    // Overlapping or adjacent (last + 1 == start) ranges become one; the +1 must not wrap.
    if (!merged.empty() && (merged.back().last == UINT64_MAX || r.start <= merged.back().last + 1)) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  if (max_ranges != 0) {
    while (merged.size() > max_ranges) {
      size_t best = 0;
      uint64_t best_gap = UINT64_MAX;
      for (size_t i = 0; i + 1 < merged.size(); ++i) {
        uint64_t gap = merged[i + 1].start - merged[i].last;
        if (gap < best_gap) {
          best_gap = gap;
          best = i;
        }
      }
      merged[best].last = merged[best + 1].last;
      merged.erase(merged.begin() + static_cast<long>(best) + 1);
    }
  }
  ranges = std::move(merged);
}

}  // namespace uvio::iommu
