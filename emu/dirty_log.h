// The device side of VFIO DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*): one bitmap
// per tracked IOVA range, set by every DMA write the device makes, read and cleared by
// the client's reports. Bitmaps are allocated at start, so marking never allocates.
#pragma once

#include <uvio/status.h>

#include "iommu/device.h"

#include <cstdint>
#include <span>
#include <vector>

namespace uvio::emu {

class DirtyLog {
 public:
  // Ranges beyond this many are merged (closest first) before tracking starts.
  static constexpr uint32_t kMaxRanges = 8;
  // Bitmap memory one START may ask for, so a client cannot make the server allocate
  // without bound (a 64 GiB span at 4 KiB pages costs 2 MiB).
  static constexpr uint64_t kMaxTrackedPages = 1ull << 24;

  bool active() const { return active_; }
  uint64_t page_size() const { return page_size_; }
  const std::vector<iommu::IovaRange>& ranges() const { return ranges_; }

  // page_size: a power of two >= 4 KiB. EINVAL for an empty or wrapping range, EBUSY
  // when already started (the kernel refuses a second START the same way).
  Status start(std::vector<iommu::IovaRange> ranges, uint64_t page_size);
  void stop();

  // Marks the pages of [iova, iova + len) that lie in tracked ranges.
  void mark(uint64_t iova, uint64_t len);

  // Fills `bitmap` (bit i: [iova + i * page_size, +page_size)) and clears the log for
  // the pages it covered. page_size may differ from the tracking page size. EINVAL when
  // not started, for a page size that is not a power of two, or a bitmap too small.
  Status read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size,
                        std::span<uint64_t> bitmap);

  static size_t bitmap_words(uint64_t length, uint64_t page_size) {
    uint64_t pages = (length + page_size - 1) / page_size;
    return static_cast<size_t>((pages + 63) / 64);
  }

 private:
  bool active_ = false;
  uint64_t page_size_ = 0;
  unsigned page_shift_ = 0;
  std::vector<iommu::IovaRange> ranges_;
  std::vector<std::vector<uint64_t>> bits_;  // per range, bit p: page p of the range
};

}  // namespace uvio::emu
