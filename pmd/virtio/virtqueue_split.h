// The driver side of a split virtqueue (virtio 1.2 §2.7): the descriptor table, the
// available ring and the used ring in runtime DMA memory, and the driver's private
// bookkeeping (free descriptors, the cookie of each chain in flight).
//
// The device is not trusted: a used element naming a descriptor out of range, one not
// in flight, or a used index that moved by more than the queue size is counted and
// skipped; the driver's own state (free list, cookies) lives in private memory the
// device cannot write. Single-threaded: one lcore owns a queue.
#pragma once

#include <uvio/mem.h>
#include <uvio/status.h>

#include "lib/state_io.h"
#include "pmd/virtio/virtio_spec.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace uvio::virtio {

// One buffer of a chain: device-readable (`writable` false) or device-writable.
struct BufferRef {
  uint64_t iova;
  uint32_t len;
  bool writable;
};

// Where a queue's three parts live, for the transport (PCI wants IOVAs, vhost-user
// wants the frontend's virtual addresses).
struct QueueLayout {
  uint16_t index = 0;
  uint16_t size = 0;
  uint64_t desc_iova = 0, avail_iova = 0, used_iova = 0;
  void* desc_va = nullptr;
  void* avail_va = nullptr;
  void* used_va = nullptr;
};

class SplitVirtqueue {
 public:
  // size: a power of two, 2..32768. event_idx: VIRTIO_F_EVENT_IDX was negotiated.
  static Result<std::unique_ptr<SplitVirtqueue>> create(Memory& mem, uint16_t index, uint16_t size,
                                                        bool event_idx);
  ~SplitVirtqueue();
  SplitVirtqueue(const SplitVirtqueue&) = delete;
  SplitVirtqueue& operator=(const SplitVirtqueue&) = delete;

  const QueueLayout& layout() const { return layout_; }
  uint16_t size() const { return size_; }
  uint16_t free_descriptors() const { return num_free_; }
  uint16_t in_flight() const { return static_cast<uint16_t>(size_ - num_free_); }

  // Writes a chain and puts its head in the available ring (unpublished); `cookie`
  // comes back when the device returns the chain. False when descriptors are short.
  bool add(const BufferRef* bufs, uint16_t count, void* cookie, uint32_t writable_len) {
    if (count == 0 || count > num_free_) return false;
    uint16_t head = free_head_;
    uint16_t at = head;
    for (uint16_t i = 0; i < count; i++) {
      VirtqDesc& d = desc_[at];
      d.addr = bufs[i].iova;
      d.len = bufs[i].len;
      d.flags = static_cast<uint16_t>((bufs[i].writable ? kDescFWrite : 0) | (i + 1 < count ? kDescFNext : 0));
      d.next = next_[at];
      if (i + 1 < count) at = next_[at];
    }
    free_head_ = next_[at];
    num_free_ = static_cast<uint16_t>(num_free_ - count);
    chain_len_[head] = count;
    cookie_[head] = cookie;
    writable_len_[head] = writable_len;
    avail_ring_[avail_shadow_ & mask_] = head;
    avail_shadow_++;
    return true;
  }

  // Makes the added chains visible to the device (§2.7.13: ring entries before idx).
  void publish() {
    std::atomic_ref<uint16_t>(*avail_idx_).store(avail_shadow_, std::memory_order_release);
  }

  // After publish(): whether the device asked to be notified (§2.7.10: avail_event
  // with EVENT_IDX, else the used ring's NO_NOTIFY flag). Remembers what it decided on.
  bool kick_needed() {
    // The device's suppression must be read after our index store is visible.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint16_t old = kicked_at_;
    uint16_t now = avail_shadow_;
    kicked_at_ = now;
    if (old == now) return false;
    if (event_idx_) return need_event(std::atomic_ref<uint16_t>(*avail_event_).load(std::memory_order_relaxed), now, old);
    return !(std::atomic_ref<uint16_t>(*used_flags_).load(std::memory_order_relaxed) & kUsedFNoNotify);
  }

  // Used elements the device has returned and the driver has not consumed. A used
  // index that moved by more than the queue size means the device overwrote elements
  // we had not read (or invented some): those are counted as errors and skipped, and
  // only the last `size` elements, the ones still in the ring, are looked at. Chains
  // whose elements were lost stay in flight until the queue is drained.
  uint16_t used_pending() {
    uint16_t idx = std::atomic_ref<uint16_t>(*used_idx_).load(std::memory_order_acquire);
    uint16_t pending = static_cast<uint16_t>(idx - last_used_);
    if (pending > size_) {
      errors_ += pending - size_;
      last_used_ = static_cast<uint16_t>(idx - size_);
      pending = size_;
    }
    return pending;
  }

  // The used element `ahead` entries after the next unconsumed one (< used_pending()).
  VirtqUsedElem peek_used(uint16_t ahead) const {
    const VirtqUsedElem& e = used_ring_[static_cast<uint16_t>(last_used_ + ahead) & mask_];
    return VirtqUsedElem{e.id, e.len};
  }

  // The cookie of a chain the device returned, when `id` is a head in flight; else
  // nullptr (out of range, or not in flight: a repeated or invented id).
  void* cookie_of(uint32_t id) const { return id < size_ ? cookie_[id] : nullptr; }
  uint32_t writable_len_of(uint32_t id) const { return writable_len_[id]; }

  // Consumes the next used element and frees its chain. Returns the chain's cookie,
  // or nullptr (and counts an error) when the element does not name a chain in flight.
  void* take_used() {
    VirtqUsedElem e = peek_used(0);
    last_used_++;
    void* cookie = cookie_of(e.id);
    if (!cookie) {
      errors_++;
      return nullptr;
    }
    // len counts bytes written into the chain's device-writable part (§2.7.8); a chain
    // without one has nothing to overrun, and DPDK's vhost puts the buffer length
    // there on its packed TX path, so only a writable chain's len is checked.
    if (writable_len_[e.id] != 0 && e.len > writable_len_[e.id]) errors_++;
    free_chain(static_cast<uint16_t>(e.id));
    return cookie;
  }
  // Consumes the next used element without looking at it (after peek_used decided).
  void skip_used() { last_used_++; }
  void release(uint16_t id) { free_chain(id); }

  // Interrupt suppression (§2.7.7): with EVENT_IDX the device interrupts once used idx
  // passes used_event; without it, unless NO_INTERRUPT is set.
  // Arms the interrupt for the next used element. Returns false when elements are
  // already pending (the caller must not sleep).
  bool arm_interrupt();
  void disarm_interrupt();

  // Takes every chain in flight back (after a device reset), returning the cookies.
  template <class Fn>
  void drain(Fn&& each) {
    for (uint16_t id = 0; id < size_; id++) {
      if (cookie_[id]) {
        void* c = cookie_[id];
        free_chain(id);
        each(c);
      }
    }
  }

  // Device misbehaviour seen on this queue (bad used ids or lengths, a used index
  // that jumped).
  uint64_t errors() const { return errors_; }

  // Migration: the private bookkeeping (indexes, free descriptors, cookies) and where
  // the ring is; the ring itself is runtime memory and moves with it. restore() checks
  // every field and that each descriptor is free or in exactly one chain; `cookie_ok`
  // judges each cookie in flight. Nothing in the ring is written.
  void save_state(StateWriter& w) const;
  static Result<std::unique_ptr<SplitVirtqueue>> restore(Memory& mem, StateReader& r,
                                                        const std::function<bool(void*)>& cookie_ok);
  // The ring memory moved to another queue object: the destructor leaves it alone.
  void release_memory() { ring_mem_ = nullptr; }

 private:
  SplitVirtqueue(Memory& mem, uint16_t index, uint16_t size, bool event_idx);
  static size_t ring_bytes(uint16_t size);
  // Points the shared parts into `base` (ring_bytes(size) of runtime memory).
  Status place(void* base);
  void free_chain(uint16_t head) {
    uint16_t count = chain_len_[head];
    uint16_t last = head;
    for (uint16_t i = 1; i < count; i++) last = next_[last];
    next_[last] = free_head_;
    free_head_ = head;
    num_free_ = static_cast<uint16_t>(num_free_ + count);
    cookie_[head] = nullptr;
    chain_len_[head] = 0;
  }

  Memory& mem_;
  void* ring_mem_ = nullptr;
  QueueLayout layout_;
  uint16_t size_;
  uint16_t mask_;
  bool event_idx_;

  // Shared with the device.
  VirtqDesc* desc_ = nullptr;
  uint16_t* avail_flags_ = nullptr;
  uint16_t* avail_idx_ = nullptr;
  uint16_t* avail_ring_ = nullptr;
  uint16_t* used_event_ = nullptr;
  uint16_t* used_flags_ = nullptr;
  uint16_t* used_idx_ = nullptr;
  VirtqUsedElem* used_ring_ = nullptr;
  uint16_t* avail_event_ = nullptr;

  // Private.
  uint16_t avail_shadow_ = 0;
  uint16_t kicked_at_ = 0;
  uint16_t last_used_ = 0;
  uint16_t free_head_ = 0;
  uint16_t num_free_ = 0;
  uint64_t errors_ = 0;
  std::vector<uint16_t> next_;
  std::vector<uint16_t> chain_len_;
  std::vector<void*> cookie_;
  std::vector<uint32_t> writable_len_;
};

}  // namespace uvio::virtio
