#include "emu/dirty_log.h"

#include "iommu/iova_ranges.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

namespace uvio::emu {

Status DirtyLog::start(std::vector<iommu::IovaRange> ranges, uint64_t page_size) {
  if (active_) return Status::error(EBUSY, "dirty log: logging is already started; stop it first");
  if (page_size < 4096 || !std::has_single_bit(page_size))
    return Status::error(EINVAL, fmt::format("dirty log: page size {:#x} is not a power of two >= 4 KiB",
                                             page_size));
  if (ranges.empty()) return Status::error(EINVAL, "dirty log: no IOVA range to track");
  for (const auto& r : ranges)
    if (r.last < r.start)
      return Status::error(EINVAL, fmt::format("dirty log: range [{:#x}, {:#x}] is empty or wraps",
                                               r.start, r.last));
  iommu::combine_iova_ranges(ranges, kMaxRanges);
  unsigned shift = static_cast<unsigned>(std::countr_zero(page_size));
  uint64_t pages = 0;
  for (const auto& r : ranges) {
    uint64_t n = (r.last >> shift) - (r.start >> shift) + 1;
    pages += n;
    if (n > kMaxTrackedPages || pages > kMaxTrackedPages)
      return Status::error(E2BIG, fmt::format("dirty log: tracking more than {} pages of {:#x} bytes "
                                              "is not supported; use a larger page size",
                                              kMaxTrackedPages, page_size));
  }
  bits_.clear();
  for (const auto& r : ranges) {
    uint64_t n = (r.last >> shift) - (r.start >> shift) + 1;
    bits_.emplace_back(static_cast<size_t>((n + 63) / 64), 0);
  }
  ranges_ = std::move(ranges);
  page_size_ = page_size;
  page_shift_ = shift;
  active_ = true;
  return Status::ok();
}

void DirtyLog::stop() {
  active_ = false;
  ranges_.clear();
  bits_.clear();
  page_size_ = 0;
}

void DirtyLog::mark(uint64_t iova, uint64_t len) {
  if (!active_ || len == 0) return;
  uint64_t last = iova + len - 1;
  if (last < iova) last = UINT64_MAX;
  for (size_t r = 0; r < ranges_.size(); ++r) {
    const auto& range = ranges_[r];
    if (last < range.start || iova > range.last) continue;
    uint64_t lo = std::max(iova, range.start) >> page_shift_;
    uint64_t hi = std::min(last, range.last) >> page_shift_;
    uint64_t base = range.start >> page_shift_;
    for (uint64_t p = lo; p <= hi; ++p) {
      uint64_t bit = p - base;
      bits_[r][bit / 64] |= 1ull << (bit % 64);
    }
  }
}

Status DirtyLog::read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size,
                                std::span<uint64_t> bitmap) {
  if (!active_) return Status::error(EINVAL, "dirty log: report asked while logging is stopped");
  if (page_size == 0 || !std::has_single_bit(page_size))
    return Status::error(EINVAL, fmt::format("dirty log: report page size {:#x} is not a power of two",
                                             page_size));
  if (length == 0 || iova + (length - 1) < iova)
    return Status::error(EINVAL, "dirty log: report range is empty or wraps");
  uint64_t out_pages = (length + page_size - 1) / page_size;
  if (bitmap.size() < (out_pages + 63) / 64)
    return Status::error(EINVAL, "dirty log: report bitmap is too small for the range");
  std::fill(bitmap.begin(), bitmap.end(), 0);
  uint64_t last = iova + length - 1;
  for (size_t r = 0; r < ranges_.size(); ++r) {
    const auto& range = ranges_[r];
    if (last < range.start || iova > range.last) continue;
    uint64_t base = range.start >> page_shift_;
    uint64_t lo = std::max(iova, range.start) >> page_shift_;
    uint64_t hi = std::min(last, range.last) >> page_shift_;
    for (uint64_t p = lo; p <= hi; ++p) {
      uint64_t bit = p - base;
      uint64_t& word = bits_[r][bit / 64];
      if (!(word & (1ull << (bit % 64)))) continue;
      word &= ~(1ull << (bit % 64));
      // One tracking page sets every report bit it overlaps (report pages may be smaller).
      uint64_t page_lo = std::max(p << page_shift_, iova);
      uint64_t page_hi = std::min((p << page_shift_) + (page_size_ - 1), last);
      for (uint64_t o = (page_lo - iova) / page_size; o <= (page_hi - iova) / page_size; ++o)
        bitmap[o / 64] |= 1ull << (o % 64);
    }
  }
  return Status::ok();
}

}  // namespace uvio::emu
