#include "pmd/virtio/virtqueue_split.h"

#include <bit>
#include <cstring>

namespace uvio::virtio {
namespace {

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

}  // namespace

SplitVirtqueue::SplitVirtqueue(Memory& mem, uint16_t index, uint16_t size, bool event_idx)
    : mem_(mem), size_(size), mask_(static_cast<uint16_t>(size - 1)), event_idx_(event_idx) {
  layout_.index = index;
  layout_.size = size;
}

SplitVirtqueue::~SplitVirtqueue() {
  if (ring_mem_) mem_.free(ring_mem_);
}

Result<std::unique_ptr<SplitVirtqueue>> SplitVirtqueue::create(Memory& mem, uint16_t index, uint16_t size,
                                                               bool event_idx) {
  if (size < 2 || size > kMaxSplitQueueSize || !std::has_single_bit(size))
    return Status::error(EINVAL, "virtqueue size " + std::to_string(size) + " is not a power of two from 2 to 32768");
  std::unique_ptr<SplitVirtqueue> q(new SplitVirtqueue(mem, index, size, event_idx));

  size_t total = ring_bytes(size);
  void* base = mem.alloc(total, 4096);
  if (!base)
    return Status::error(ENOMEM, "no DMA memory left for a virtqueue of " + std::to_string(size) +
                                     " entries: give the runtime more memory (-m)");
  std::memset(base, 0, total);
  q->ring_mem_ = base;
  UVIO_TRY(q->place(base));

  q->next_.resize(size);
  q->chain_len_.assign(size, 0);
  q->cookie_.assign(size, nullptr);
  q->writable_len_.assign(size, 0);
  for (uint16_t i = 0; i < size; i++) q->next_[i] = static_cast<uint16_t>((i + 1) & q->mask_);
  q->free_head_ = 0;
  q->num_free_ = size;
  // Polling by default: no interrupts until a queue is armed.
  q->disarm_interrupt();
  return q;
}

// §2.7: descriptor table 16-byte aligned, available ring 2, used ring 4; the used ring
// gets its own cache lines so the device's writes do not share lines with ours.
size_t SplitVirtqueue::ring_bytes(uint16_t size) {
  size_t desc_bytes = 16u * size;
  size_t avail_bytes = 6u + 2u * size;
  size_t used_off = align_up(desc_bytes + avail_bytes, 64);
  return align_up(used_off + 6u + 8u * size, 64);
}

Status SplitVirtqueue::place(void* base) {
  size_t desc_bytes = 16u * size_;
  size_t used_off = align_up(desc_bytes + 6u + 2u * size_, 64);
  auto* bytes = static_cast<std::byte*>(base);
  desc_ = reinterpret_cast<VirtqDesc*>(bytes);
  std::byte* avail = bytes + desc_bytes;
  std::byte* used = bytes + used_off;
  avail_flags_ = reinterpret_cast<uint16_t*>(avail);
  avail_idx_ = reinterpret_cast<uint16_t*>(avail + 2);
  avail_ring_ = reinterpret_cast<uint16_t*>(avail + 4);
  used_event_ = reinterpret_cast<uint16_t*>(avail + 4 + 2u * size_);
  used_flags_ = reinterpret_cast<uint16_t*>(used);
  used_idx_ = reinterpret_cast<uint16_t*>(used + 2);
  used_ring_ = reinterpret_cast<VirtqUsedElem*>(used + 4);
  avail_event_ = reinterpret_cast<uint16_t*>(used + 4 + 8u * size_);
  layout_.desc_va = desc_;
  layout_.avail_va = avail;
  layout_.used_va = used;
  layout_.desc_iova = mem_.iova_of(desc_);
  layout_.avail_iova = mem_.iova_of(avail);
  layout_.used_iova = mem_.iova_of(used);
  if (layout_.desc_iova == kBadIova || layout_.avail_iova == kBadIova || layout_.used_iova == kBadIova)
    return Status::error(EFAULT, "virtqueue memory has no IOVA");
  return Status::ok();
}

bool SplitVirtqueue::arm_interrupt() {
  if (event_idx_) {
    // §2.7.7.2: interrupt when the device's used index passes the one we have seen.
    std::atomic_ref<uint16_t>(*used_event_).store(last_used_, std::memory_order_relaxed);
  } else {
    std::atomic_ref<uint16_t>(*avail_flags_).store(0, std::memory_order_relaxed);
  }
  // The arming store must be visible before we look at the used index again; a
  // completion that raced with it would otherwise go unsignalled.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return used_pending() == 0;
}

void SplitVirtqueue::disarm_interrupt() {
  if (event_idx_) {
    // With EVENT_IDX no flag exists (§2.7.7.2): put used_event as far behind as it goes,
    // so the device only crosses it after 2^15 completions we have not looked at.
    std::atomic_ref<uint16_t>(*used_event_).store(static_cast<uint16_t>(last_used_ - 0x8000 - 1),
                                                  std::memory_order_relaxed);
  } else {
    std::atomic_ref<uint16_t>(*avail_flags_).store(kAvailFNoInterrupt, std::memory_order_relaxed);
  }
}

}  // namespace uvio::virtio
