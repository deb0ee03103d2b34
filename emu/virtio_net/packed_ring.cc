// The packed ring format (virtio 1.2 §2.8): one descriptor ring shared by driver and
// device, ownership of each slot told by its AVAIL/USED flags against wrap counters,
// and event suppression structures instead of ring flags.
#include "emu/virtio_net/virtqueue.h"

#include <atomic>

namespace uvio::emu::virtio_net {

bool Virtqueue::packed_available(DmaAccess& dma, uint16_t index, bool wrap, bool* available) {
  uint16_t flags = 0;
  if (!dma.load_shared(desc_addr + uint64_t{index} * sizeof(spec::PackedDesc) + spec::kPackedDescFlagsOffset, &flags))
    return false;
  // §2.8.1: available when AVAIL matches the wrap counter and USED does not.
  bool avail = flags & spec::kPackedDescFAvail;
  bool used = flags & spec::kPackedDescFUsed;
  *available = avail == wrap && used != wrap;
  return true;
}

Pop Virtqueue::pop_packed(DmaAccess& dma, bool indirect_allowed, Chain& chain, const char** why) {
  bool available = false;
  if (!packed_available(dma, last_avail_idx, avail_wrap, &available)) {
    *why = "descriptor ring is outside the driver's DMA mappings";
    return Pop::kError;
  }
  // The descriptor's other fields are read after the flags that publish it (§2.8.21):
  // the flags' load acquired.
  if (!available) return Pop::kEmpty;

  uint16_t index = last_avail_idx;
  bool wrap = avail_wrap;
  uint16_t slots = 0;
  for (;;) {
    // A chain longer than the ring cannot be one the driver made.
    if (++slots > size) {
      *why = "descriptor chain is longer than the queue size";
      return Pop::kError;
    }
    spec::PackedDesc d;
    if (!dma.read(desc_addr + uint64_t{index} * sizeof(d), &d, sizeof(d))) {
      *why = "descriptor ring is outside the driver's DMA mappings";
      return Pop::kError;
    }
    if (d.flags & spec::kDescFIndirect) {
      if (!indirect_allowed) {
        *why = "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
        return Pop::kError;
      }
      if (!add_indirect(dma, d.addr, d.len, d.flags, false, chain, why)) return Pop::kError;
    } else if (!add_segment(chain, d.addr, d.len, d.flags & spec::kDescFWrite, why)) {
      return Pop::kError;
    }
    // §2.8.6: the buffer id is the one in the chain's last descriptor.
    chain.id = d.id;
    if (++index == size) {
      index = 0;
      wrap = !wrap;
    }
    if (!(d.flags & spec::kDescFNext)) break;
  }
  chain.ring_slots = slots;
  last_avail_idx = index;
  avail_wrap = wrap;
  return Pop::kChain;
}

bool Virtqueue::push_used_packed(DmaAccess& dma, uint32_t id, uint32_t len, uint16_t ring_slots) {
  // §2.8.7: one used descriptor per buffer, written at the next used slot, which then
  // skips the slots the buffer occupied. Its flags, written last, hand it over.
  uint64_t at = desc_addr + uint64_t{used_idx} * sizeof(spec::PackedDesc);
  uint16_t id16 = static_cast<uint16_t>(id);
  if (!dma.write(at + 8, &len, sizeof(len)) || !dma.write(at + spec::kPackedDescIdOffset, &id16, sizeof(id16)))
    return false;
  bool wrap = used_wrap != stale_wrap_once;
  stale_wrap_once = false;
  uint16_t flags = wrap ? (spec::kPackedDescFAvail | spec::kPackedDescFUsed) : 0;
  if (len > 0) flags |= spec::kDescFWrite;
  // The store releases id and len with the flags that hand the descriptor over.
  if (!dma.store_shared(at + spec::kPackedDescFlagsOffset, flags)) return false;
  uint16_t step = ring_slots == 0 ? 1 : ring_slots;
  uint32_t next = uint32_t{used_idx} + step;
  if (next >= size) {
    next -= size;
    used_wrap = !used_wrap;
  }
  used_idx = static_cast<uint16_t>(next);
  unsignalled = static_cast<uint16_t>(unsignalled + step);
  return true;
}

bool Virtqueue::should_interrupt_packed(DmaAccess& dma, bool event_idx) {
  uint16_t count = unsignalled;
  unsignalled = 0;
  guest_fence(std::memory_order_seq_cst);
  uint16_t driver_event[2] = {};  // desc (offset | wrap << 15), flags
  if (!dma.load_shared(avail_addr + 2, &driver_event[1]) || !dma.load_shared(avail_addr, &driver_event[0]))
    return true;
  uint16_t flags = driver_event[1] & 3;
  if (flags == spec::kEventFlagDisable) return false;
  if (flags != spec::kEventFlagDesc || !event_idx) return true;
  // §2.8.10: interrupt when the used slots passed the one the driver named; an offset
  // from the previous lap counts one ring size back.
  uint16_t event_off = driver_event[0] & 0x7FFF;
  bool event_wrap = driver_event[0] >> 15;
  if (event_wrap != used_wrap) event_off = static_cast<uint16_t>(event_off - size);
  uint16_t old_idx = static_cast<uint16_t>(used_idx - count);
  return spec::need_event(event_off, used_idx, old_idx);
}

}  // namespace uvio::emu::virtio_net
