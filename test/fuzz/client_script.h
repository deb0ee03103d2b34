// What the vfio-user client fuzz target asks of a device: every call that parses a
// reply (regions with their capability chains, IRQs, region reads, the migration
// feature and data, a DMA logging report), in the order a driver would. The seed
// recorder runs the same calls against the real server, so the recorded replies answer
// exactly these requests.
#pragma once

#include "iommu/device.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace uvio::fuzz {

inline void exercise_vfio_user_client(iommu::Device& dev, uint64_t dirty_iova) {
  const uint32_t regions = std::min<uint32_t>(dev.info().num_regions, 9);
  for (uint32_t i = 0; i < regions; ++i) {
    auto info = dev.region_info(i);
    if (!info || info->size == 0) continue;
    uint8_t buf[64];
    (void)dev.region_read(i, 0, buf, std::min<uint64_t>(sizeof(buf), info->size));
    if (info->mappable()) (void)dev.region_map(i, 0, 4096);
  }
  for (uint32_t i = 0; i < std::min<uint32_t>(dev.info().num_irqs, 5); ++i) (void)dev.irq_info(i);
  auto caps = dev.migration_caps();
  if (caps && caps->supported) {
    (void)dev.mig_state();
    (void)dev.mig_data_size();
    if (dev.set_mig_state(iommu::MigState::Stop) && dev.set_mig_state(iommu::MigState::StopCopy)) {
      std::vector<uint8_t> state(8192);
      (void)dev.mig_read(state.data(), state.size());
    }
  }
  if (auto* log = dev.dma_logging()) {
    iommu::IovaRange range{dirty_iova, dirty_iova + 64 * 4096 - 1};
    if (log->start({&range, 1}, 4096)) {
      uint64_t bitmap[1] = {};
      (void)log->read_and_clear(dirty_iova, 64 * 4096, 4096, bitmap);
      (void)log->stop();
    }
  }
}

}  // namespace uvio::fuzz
