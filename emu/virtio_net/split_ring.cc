// The split ring format (virtio 1.2 §2.7): a descriptor table, the driver's available
// ring and the device's used ring, indexes free-running modulo 2^16.
#include "emu/virtio_net/virtqueue.h"

#include <atomic>

namespace uvio::emu::virtio_net {

Pop Virtqueue::pop_split(DmaAccess& dma, bool indirect_allowed, Chain& chain, const char** why) {
  if (last_avail_idx == shadow_avail_idx_) {
    uint16_t avail_idx = 0;
    if (!dma.load_shared(avail_addr + spec::kAvailIdxOffset, &avail_idx)) {
      *why = "available ring index is outside the driver's DMA mappings";
      return Pop::kError;
    }
    if (static_cast<uint16_t>(avail_idx - last_avail_idx) > size) {
      *why = "available index moved by more than the queue size";
      return Pop::kError;
    }
    if (avail_idx == last_avail_idx) return Pop::kEmpty;
    // Ring entries written before idx are read after it (§2.7.13.3): the load acquired.
    shadow_avail_idx_ = avail_idx;
  }

  uint16_t head = 0;
  uint64_t slot = avail_addr + spec::kAvailRingOffset + 2ull * (last_avail_idx % size);
  if (!dma.read(slot, &head, sizeof(head))) {
    *why = "available ring entry is outside the driver's DMA mappings";
    return Pop::kError;
  }
  if (head >= size) {
    *why = "available ring names a descriptor beyond the queue size";
    return Pop::kError;
  }
  chain.id = head;
  chain.ring_slots = 1;

  uint16_t index = head;
  for (uint32_t walked = 1;; walked++) {
    // §2.7.5.2: a chain longer than the queue can only be a loop.
    if (walked > size) {
      *why = "descriptor chain loops (longer than the queue size)";
      return Pop::kError;
    }
    spec::Desc d;
    if (!dma.read(desc_addr + uint64_t{index} * sizeof(d), &d, sizeof(d))) {
      *why = "descriptor table is outside the driver's DMA mappings";
      return Pop::kError;
    }
    if (d.flags & spec::kDescFIndirect) {
      if (!indirect_allowed) {
        *why = "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
        return Pop::kError;
      }
      if (!add_indirect(dma, d.addr, d.len, d.flags, true, chain, why)) return Pop::kError;
      break;
    }
    if (!add_segment(chain, d.addr, d.len, d.flags & spec::kDescFWrite, why)) return Pop::kError;
    if (!(d.flags & spec::kDescFNext)) break;
    index = d.next;
    if (index >= size) {
      *why = "descriptor's next index is beyond the queue size";
      return Pop::kError;
    }
  }
  last_avail_idx++;
  return Pop::kChain;
}

bool Virtqueue::push_used_split(DmaAccess& dma, uint32_t id, uint32_t len) {
  uint32_t elem[2] = {id, len};
  uint64_t at = used_addr + spec::kUsedRingOffset + spec::kUsedElemSize * (used_idx % size);
  if (!dma.write(at, elem, sizeof(elem))) return false;
  used_idx++;
  unsignalled++;
  return true;
}

bool Virtqueue::publish_used_split(DmaAccess& dma) {
  // The elements must be visible before the index that exposes them (§2.7.8.2): the
  // store releases them.
  return dma.store_shared(used_addr + spec::kUsedIdxOffset, used_idx);
}

bool Virtqueue::should_interrupt_split(DmaAccess& dma, bool event_idx) {
  uint16_t old_idx = static_cast<uint16_t>(used_idx - unsignalled);
  unsignalled = 0;
  // The driver's suppression must be read after the used index was written.
  guest_fence(std::memory_order_seq_cst);
  if (event_idx) {
    uint16_t used_event = 0;
    if (!dma.load_shared(avail_addr + spec::kAvailRingOffset + 2ull * size, &used_event)) return true;
    return spec::need_event(used_event, used_idx, old_idx);
  }
  uint16_t flags = 0;
  if (!dma.load_shared(avail_addr, &flags)) return true;
  return !(flags & spec::kAvailFNoInterrupt);
}

bool Virtqueue::arm_notification_split(DmaAccess& dma, bool event_idx) {
  if (event_idx) {
    uint64_t avail_event = used_addr + spec::kUsedRingOffset + spec::kUsedElemSize * size;
    if (!dma.store_shared(avail_event, last_avail_idx)) return false;
  }
  // The event written above must be visible before the index is read again: the driver
  // does the mirror image (index stored, then the event read), so one of the two sides
  // sees the other's update and no kick is lost.
  guest_fence(std::memory_order_seq_cst);
  uint16_t avail_idx = 0;
  if (!dma.load_shared(avail_addr + spec::kAvailIdxOffset, &avail_idx)) return false;
  return avail_idx != last_avail_idx;
}

}  // namespace uvio::emu::virtio_net
