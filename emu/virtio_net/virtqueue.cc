#include "emu/virtio_net/virtqueue.h"

#include <atomic>
#include <bit>
#include <cstring>

namespace uvio::emu::virtio_net {

Virtqueue::Virtqueue() { indirect_.resize(kMaxIndirectDescs); }

void Virtqueue::reset(uint16_t max_size) {
  size = max_size;
  msix_vector = spec::kNoVector;
  enabled = false;
  packed = false;
  desc_addr = avail_addr = used_addr = 0;
  start(false);
}

void Virtqueue::start(bool packed_ring) {
  packed = packed_ring;
  last_avail_idx = used_idx = shadow_avail_idx_ = 0;
  // §2.8.1: both wrap counters start at 1.
  avail_wrap = used_wrap = true;
  unsignalled = 0;
}

const char* Virtqueue::validate(uint16_t max_size) const {
  if (size == 0 || size > max_size) return "queue size is zero or larger than the size the device offered";
  if (packed) {
    // §2.8.10.1 / §2.8.20: descriptors 16-byte, event suppression areas 4-byte aligned.
    if (desc_addr % 16 != 0) return "descriptor ring is not 16-byte aligned";
    if (avail_addr % 4 != 0 || used_addr % 4 != 0) return "event suppression area is not 4-byte aligned";
    return nullptr;
  }
  // §2.7: a power-of-two size; descriptor table 16-byte, available ring 2-byte, used
  // ring 4-byte aligned.
  if (!std::has_single_bit(size)) return "split queue size is not a power of two";
  if (desc_addr % 16 != 0) return "descriptor table is not 16-byte aligned";
  if (avail_addr % 2 != 0) return "available ring is not 2-byte aligned";
  if (used_addr % 4 != 0) return "used ring is not 4-byte aligned";
  return nullptr;
}

Pop Virtqueue::pop(DmaAccess& dma, bool indirect_allowed, Chain& chain, const char** why) {
  clear(chain);
  return packed ? pop_packed(dma, indirect_allowed, chain, why) : pop_split(dma, indirect_allowed, chain, why);
}

bool Virtqueue::push_used(DmaAccess& dma, uint32_t id, uint32_t len, uint16_t ring_slots) {
  return packed ? push_used_packed(dma, id, len, ring_slots) : push_used_split(dma, id, len);
}

bool Virtqueue::publish_used(DmaAccess& dma) {
  // A packed used descriptor is published by its own flags as it is written.
  return packed ? true : publish_used_split(dma);
}

bool Virtqueue::should_interrupt(DmaAccess& dma, bool event_idx) {
  if (unsignalled == 0) return false;
  return packed ? should_interrupt_packed(dma, event_idx) : should_interrupt_split(dma, event_idx);
}

bool Virtqueue::arm_notification(DmaAccess& dma, bool event_idx) {
  if (packed) {
    // The device event suppression area stays at ENABLE (zero): the driver kicks for
    // every batch, so only look for buffers added meanwhile.
    guest_fence(std::memory_order_seq_cst);
    bool available = false;
    return packed_available(dma, last_avail_idx, avail_wrap, &available) && available;
  }
  return arm_notification_split(dma, event_idx);
}

void Virtqueue::clear(Chain& chain) {
  chain.segments.clear();
  chain.readable_count = 0;
  chain.readable_len = chain.writable_len = 0;
  chain.ring_slots = 0;
}

bool Virtqueue::add_segment(Chain& chain, uint64_t addr, uint32_t len, bool writable, const char** why) {
  if (addr + len < addr) {
    *why = "descriptor buffer wraps around the address space";
    return false;
  }
  if (chain.segments.size() == chain.segments.capacity()) {
    *why = "descriptor chain has more segments than the device accepts";
    return false;
  }
  if (writable) {
    chain.writable_len += len;
  } else {
    // §2.7.4.2: device-readable descriptors come before device-writable ones.
    if (chain.readable_count != chain.segments.size()) {
      *why = "device-readable descriptor after a device-writable one";
      return false;
    }
    chain.readable_len += len;
    chain.readable_count++;
  }
  if (chain.readable_len > UINT32_MAX || chain.writable_len > UINT32_MAX) {
    *why = "descriptor chain length overflows 32 bits";
    return false;
  }
  chain.segments.push_back(Segment{addr, len, writable});
  return true;
}

bool Virtqueue::add_indirect(DmaAccess& dma, uint64_t addr, uint32_t len, uint16_t flags, bool follow_next,
                             Chain& chain, const char** why) {
  // §2.7.5.3.1 / §2.8.13: never together with NEXT, a whole number of descriptors,
  // and no nesting.
  if (flags & spec::kDescFNext) {
    *why = "indirect descriptor also has the NEXT flag";
    return false;
  }
  if (len == 0 || len % sizeof(spec::Desc) != 0 || len / sizeof(spec::Desc) > kMaxIndirectDescs) {
    *why = "indirect table length is zero, not a multiple of 16, or too long";
    return false;
  }
  uint32_t entries = len / sizeof(spec::Desc);
  if (!dma.read(addr, indirect_.data(), len)) {
    *why = "indirect table is outside the driver's DMA mappings";
    return false;
  }
  if (!follow_next) {
    // A packed ring's table is used in order, entry after entry (§2.8.13).
    for (uint32_t i = 0; i < entries; i++) {
      spec::PackedDesc e;
      std::memcpy(&e, &indirect_[i], sizeof(e));
      if (e.flags & spec::kDescFIndirect) {
        *why = "indirect table contains an indirect descriptor";
        return false;
      }
      if (!add_segment(chain, e.addr, e.len, e.flags & spec::kDescFWrite, why)) return false;
    }
    return true;
  }
  uint32_t at = 0;
  for (uint32_t seen = 1;; seen++) {
    if (seen > entries) {
      *why = "indirect descriptor chain loops";
      return false;
    }
    const spec::Desc& e = indirect_[at];
    if (e.flags & spec::kDescFIndirect) {
      *why = "indirect table contains an indirect descriptor";
      return false;
    }
    if (!add_segment(chain, e.addr, e.len, e.flags & spec::kDescFWrite, why)) return false;
    if (!(e.flags & spec::kDescFNext)) return true;
    at = e.next;
    if (at >= entries) {
      *why = "indirect descriptor's next index is beyond its table";
      return false;
    }
  }
}

}  // namespace uvio::emu::virtio_net
