#include "pmd/virtio/virtqueue_packed.h"

#include <bit>
#include <cstring>

namespace uvio::virtio {

PackedVirtqueue::PackedVirtqueue(Memory& mem, uint16_t index, uint16_t size, bool event_idx)
    : mem_(mem), size_(size), event_idx_(event_idx) {
  layout_.index = index;
  layout_.size = size;
}

PackedVirtqueue::~PackedVirtqueue() {
  if (ring_mem_) mem_.free(ring_mem_);
}

Result<std::unique_ptr<PackedVirtqueue>> PackedVirtqueue::create(Memory& mem, uint16_t index, uint16_t size,
                                                                 bool event_idx) {
  // §2.8.10.1: any size up to 32768; uvio keeps powers of two like the split ring.
  if (size < 2 || size > kMaxSplitQueueSize || !std::has_single_bit(size))
    return Status::error(EINVAL, "virtqueue size " + std::to_string(size) + " is not a power of two from 2 to 32768");
  std::unique_ptr<PackedVirtqueue> q(new PackedVirtqueue(mem, index, size, event_idx));
  size_t total = ring_bytes(size);
  void* base = mem.alloc(total, 4096);
  if (!base)
    return Status::error(ENOMEM, "no DMA memory left for a virtqueue of " + std::to_string(size) +
                                     " entries: give the runtime more memory (-m)");
  std::memset(base, 0, total);
  q->ring_mem_ = base;
  UVIO_TRY(q->place(base));

  q->free_ids_.resize(size);
  for (uint16_t i = 0; i < size; i++) q->free_ids_[i] = static_cast<uint16_t>(size - 1 - i);
  q->free_id_count_ = size;
  q->num_free_ = size;
  q->chain_len_.assign(size, 0);
  q->cookie_.assign(size, nullptr);
  q->writable_len_.assign(size, 0);
  q->cache_.resize(size);
  q->cache_mask_ = size - 1u;
  q->disarm_interrupt();
  return q;
}

// §2.8.10: ring 16-byte aligned, event suppression structures 4-byte aligned; each
// side's structure on its own cache line.
Status PackedVirtqueue::place(void* base) {
  size_t ring_bytes = 16u * size_;
  auto* bytes = static_cast<std::byte*>(base);
  ring_ = reinterpret_cast<PackedDesc*>(bytes);
  driver_event_ = reinterpret_cast<uint16_t*>(bytes + ring_bytes);
  device_event_ = reinterpret_cast<uint16_t*>(bytes + ring_bytes + 64);
  layout_.desc_va = ring_;
  layout_.avail_va = driver_event_;
  layout_.used_va = device_event_;
  layout_.desc_iova = mem_.iova_of(ring_);
  layout_.avail_iova = mem_.iova_of(driver_event_);
  layout_.used_iova = mem_.iova_of(device_event_);
  if (layout_.desc_iova == kBadIova || layout_.avail_iova == kBadIova || layout_.used_iova == kBadIova)
    return Status::error(EFAULT, "virtqueue memory has no IOVA");
  return Status::ok();
}

bool PackedVirtqueue::arm_interrupt() {
  if (event_idx_) {
    // §2.8.14: interrupt once the element at the next position we will look at is used.
    uint16_t off_wrap = static_cast<uint16_t>(scan_pos_ | (scan_wrap_ ? 0x8000 : 0));
    std::atomic_ref<uint16_t>(driver_event_[0]).store(off_wrap, std::memory_order_relaxed);
    std::atomic_ref<uint16_t>(driver_event_[1]).store(kEventFlagsDesc, std::memory_order_release);
  } else {
    std::atomic_ref<uint16_t>(driver_event_[1]).store(kEventFlagsEnable, std::memory_order_release);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return used_pending() == 0;
}

void PackedVirtqueue::disarm_interrupt() {
  std::atomic_ref<uint16_t>(driver_event_[1]).store(kEventFlagsDisable, std::memory_order_release);
}

}  // namespace uvio::virtio
