// Merging IOVA ranges until a tracker's limit is met, as the kernel's
// vfio_combine_iova_ranges does: the two neighbours with the smallest gap between them
// are joined first, so the extra IOVA covered (and logged for nothing) stays small.
#pragma once

#include "iommu/device.h"

#include <cstdint>
#include <vector>

namespace uvio::iommu {

// Sorts `ranges`, joins overlapping and touching ones, then joins the closest
// neighbours until at most `max_ranges` remain (max_ranges 0: no limit; 1: one span).
void combine_iova_ranges(std::vector<IovaRange>& ranges, uint32_t max_ranges);

}  // namespace uvio::iommu
