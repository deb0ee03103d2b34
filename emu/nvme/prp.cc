#include "emu/nvme/prp.h"

#include <algorithm>

namespace uvio::emu::nvme {
namespace {

bool append(PrpSegments* out, uint64_t iova, uint64_t len) {
  if (out->count && out->seg[out->count - 1].iova + out->seg[out->count - 1].len == iova) {
    out->seg[out->count - 1].len += len;
    return true;
  }
  if (out->count == PrpSegments::kCapacity) return false;
  out->seg[out->count++] = {iova, len};
  return true;
}

}  // namespace

CompletionStatus walk_prps(DmaAccess& dma, uint64_t prp1, uint64_t prp2, uint64_t length,
                           uint64_t page_size, PrpSegments* out) {
  const uint64_t page_mask = page_size - 1;
  out->count = 0;
  if (length == 0) return CompletionStatus::success();
  if (length > kMaxTransferBytes) return CompletionStatus::generic(kScInvalidField);
  // §4.3: PRP1 may carry an offset into its page, which must be dword aligned.
  if (prp1 & 3) return CompletionStatus::generic(kScPrpOffsetInvalid);
  uint64_t first = std::min(length, page_size - (prp1 & page_mask));
  append(out, prp1, first);
  uint64_t remaining = length - first;
  if (remaining == 0) return CompletionStatus::success();

  if (remaining <= page_size) {
    // PRP2 is the second (and last) page: offset 0.
    if (prp2 & page_mask) return CompletionStatus::generic(kScPrpOffsetInvalid);
    append(out, prp2, remaining);
    return CompletionStatus::success();
  }

  // PRP2 points at a PRP list; its entries have offset 0, and the last entry of a full
  // list page points at the next list page.
  if (prp2 & 7) return CompletionStatus::generic(kScPrpOffsetInvalid);
  uint64_t list = prp2;
  std::array<uint64_t, PrpSegments::kCapacity> entries;
  while (remaining) {
    uint64_t pages_left = (remaining + page_size - 1) / page_size;
    uint64_t slots = (page_size - (list & page_mask)) / 8;
    bool chained = pages_left > slots;
    uint64_t take = chained ? slots - 1 : pages_left;
    // With MDTS bounding the transfer, one list read never holds more than kCapacity.
    take = std::min<uint64_t>(take, entries.size() - 1);
    uint64_t read_count = take + (chained ? 1 : 0);
    if (take == 0 && !chained) return CompletionStatus::generic(kScInvalidField);
    if (!dma.read(list, entries.data(), read_count * 8)) return CompletionStatus::generic(kScDataTransferError);
    for (uint64_t i = 0; i < take; ++i) {
      if (entries[i] & page_mask) return CompletionStatus::generic(kScPrpOffsetInvalid);
      uint64_t len = std::min(remaining, page_size);
      if (!append(out, entries[i], len)) return CompletionStatus::generic(kScInvalidField);
      remaining -= len;
    }
    if (!remaining) break;
    if (!chained) return CompletionStatus::generic(kScInvalidField);
    list = entries[take];
    if (list & page_mask) return CompletionStatus::generic(kScPrpOffsetInvalid);
  }
  return CompletionStatus::success();
}

}  // namespace uvio::emu::nvme
