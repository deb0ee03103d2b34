// Physical Region Page lists (NVMe 1.4 §4.3): turn PRP1/PRP2 of a command into the host
// memory segments of its data buffer.
#pragma once

#include "emu/device_model.h"
#include "emu/nvme/nvme_spec.h"

#include <array>
#include <cstddef>
#include <cstdint>

namespace uvio::emu::nvme {

struct DmaSegment {
  uint64_t iova = 0;
  uint64_t len = 0;
};

// The segments of one transfer, contiguous pages merged. Sized for the largest
// transfer (MDTS) at the smallest page size plus the unaligned first page.
struct PrpSegments {
  static constexpr size_t kCapacity = 40;
  std::array<DmaSegment, kCapacity> seg;
  size_t count = 0;
};

// Largest transfer, in bytes: Identify MDTS of 5 at CAP.MPSMIN 4 KiB (Identify Controller).
inline constexpr uint8_t kMdts = 5;
inline constexpr uint64_t kMaxTransferBytes = 4096ull << kMdts;

// `length` is at most kMaxTransferBytes. Returns PRP Offset Invalid for a misaligned
// entry, Data Transfer Error when a PRP list cannot be read.
CompletionStatus walk_prps(DmaAccess& dma, uint64_t prp1, uint64_t prp2, uint64_t length,
                           uint64_t page_size, PrpSegments* out);

}  // namespace uvio::emu::nvme
