// The driver side of a packed virtqueue (virtio 1.2 §2.8): one descriptor ring the
// driver fills and the device writes back, with AVAIL/USED flag bits and wrap
// counters instead of indexes, and event suppression structures on both sides.
//
// The same interface as SplitVirtqueue, so the net driver's bursts are written once.
// As there, the device is not trusted: the driver's state (free buffer ids, cookies,
// chain lengths) is private; a used element naming an id that is not in flight is
// counted; the next element's ring position is then known only when every chain is
// one descriptor long (RX rings, single-segment TX), else the queue stops returning
// elements until the port is restarted. A device that writes more used elements than
// it took buffers has broken the ring for itself as well (§2.8.21): the driver then
// only promises to count, and to free each mbuf exactly once.
#pragma once

#include <uvio/mem.h>
#include <uvio/status.h>

#include "pmd/virtio/virtqueue_split.h"
#include "pmd/virtio/virtio_spec.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace uvio::virtio {

// §2.8.13: struct pvirtq_desc.
struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);
inline constexpr uint16_t kPackedDescFAvail = 1u << 7;
inline constexpr uint16_t kPackedDescFUsed = 1u << 15;
// §2.8.14: struct pvirtq_event_suppress { le16 desc (off:15, wrap:1); le16 flags; }.
inline constexpr uint16_t kEventFlagsEnable = 0;
inline constexpr uint16_t kEventFlagsDisable = 1;
inline constexpr uint16_t kEventFlagsDesc = 2;

class PackedVirtqueue {
 public:
  static Result<std::unique_ptr<PackedVirtqueue>> create(Memory& mem, uint16_t index, uint16_t size,
                                                         bool event_idx);
  ~PackedVirtqueue();
  PackedVirtqueue(const PackedVirtqueue&) = delete;
  PackedVirtqueue& operator=(const PackedVirtqueue&) = delete;

  // desc = the ring, avail = driver event suppression, used = device event suppression.
  const QueueLayout& layout() const { return layout_; }
  uint16_t size() const { return size_; }
  uint16_t free_descriptors() const { return num_free_; }
  uint16_t in_flight() const { return static_cast<uint16_t>(size_ - num_free_); }

  bool add(const BufferRef* bufs, uint16_t count, void* cookie, uint32_t writable_len) {
    if (count == 0 || count > num_free_) return false;
    uint16_t id = free_ids_[--free_id_count_];
    uint16_t head = next_avail_;
    uint16_t head_flags = 0;
    for (uint16_t i = 0; i < count; i++) {
      PackedDesc& d = ring_[next_avail_];
      d.addr = bufs[i].iova;
      d.len = bufs[i].len;
      d.id = id;
      // §2.8.1: available means AVAIL equal to the driver's wrap counter, USED not.
      uint16_t flags = static_cast<uint16_t>((bufs[i].writable ? kDescFWrite : 0) | (i + 1 < count ? kDescFNext : 0) |
                                             (avail_wrap_ ? kPackedDescFAvail : kPackedDescFUsed));
      if (i == 0) head_flags = flags;
      else d.flags = flags;
      if (++next_avail_ == size_) {
        next_avail_ = 0;
        avail_wrap_ = !avail_wrap_;
      }
    }
    // §2.8.21.1: the head's flags last, after everything else of the chain.
    std::atomic_ref<uint16_t>(ring_[head].flags).store(head_flags, std::memory_order_release);
    num_free_ = static_cast<uint16_t>(num_free_ - count);
    chain_len_[id] = count;
    if (count > longest_chain_) longest_chain_ = count;
    cookie_[id] = cookie;
    writable_len_[id] = writable_len;
    added_since_kick_ = static_cast<uint16_t>(added_since_kick_ + count);
    return true;
  }

  void publish() {}  // each chain became available when its head flags were stored

  // §2.8.10: the device's event suppression decides whether it wants a notification.
  bool kick_needed() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint16_t added = added_since_kick_;
    added_since_kick_ = 0;
    if (added == 0) return false;
    uint16_t flags = std::atomic_ref<uint16_t>(device_event_[1]).load(std::memory_order_relaxed);
    if (flags == kEventFlagsDisable) return false;
    if (flags != kEventFlagsDesc || !event_idx_) return true;
    uint16_t off_wrap = std::atomic_ref<uint16_t>(device_event_[0]).load(std::memory_order_relaxed);
    uint16_t event = off_wrap & 0x7FFF;
    bool wrap = off_wrap >> 15;
    // Positions as a continuous count, as the kernel's virtqueue_kick_prepare_packed.
    uint16_t now = next_avail_;
    uint16_t old = static_cast<uint16_t>(now - added);
    if (wrap != avail_wrap_) event = static_cast<uint16_t>(event - size_);
    return need_event(event, now, old);
  }

  // Finds the used elements the device has written since the last look.
  uint16_t used_pending() {
    while (!stop_scanning_ && cached_ < in_flight_chains()) {
      PackedDesc& d = ring_[scan_pos_];
      uint16_t flags = std::atomic_ref<uint16_t>(d.flags).load(std::memory_order_acquire);
      bool avail = flags & kPackedDescFAvail, used = flags & kPackedDescFUsed;
      // §2.8.1: used means both bits equal the used wrap counter.
      if (avail != used || used != scan_wrap_) {
        // The driver made this slot available in this lap (AVAIL = wrap, USED = !wrap);
        // both bits at !wrap is the device writing the previous lap's wrap counter. It
        // cannot be told apart from an element yet to come: count it, trust no more.
        if (avail == used) {
          errors_++;
          stop_scanning_ = true;
        }
        break;
      }
      Entry& e = cache_[(cache_head_ + cached_) & cache_mask_];
      e.elem = VirtqUsedElem{d.id, d.len};
      e.slots = d.id < size_ ? chain_len_[d.id] : 0;
      cached_++;
      if (e.slots == 0 || !cookie_[d.id]) {
        // Not a buffer in flight: the next element's position depends on a chain
        // length we do not know, unless every chain ever added was one descriptor.
        if (longest_chain_ != 1) {
          stop_scanning_ = true;
          break;
        }
        e.slots = 1;
      }
      advance(scan_pos_, scan_wrap_, e.slots);
    }
    return static_cast<uint16_t>(cached_);
  }

  VirtqUsedElem peek_used(uint16_t ahead) const { return cache_[(cache_head_ + ahead) & cache_mask_].elem; }
  void* cookie_of(uint32_t id) const { return id < size_ ? cookie_[id] : nullptr; }
  uint32_t writable_len_of(uint32_t id) const { return writable_len_[id]; }

  void skip_used() {
    cache_head_ = (cache_head_ + 1) & cache_mask_;
    cached_--;
  }
  void release(uint16_t id) { free_id(id); }

  void* take_used() {
    VirtqUsedElem e = peek_used(0);
    void* cookie = cookie_of(e.id);
    skip_used();
    if (!cookie) {
      errors_++;
      return nullptr;
    }
    // len counts bytes written into the chain's device-writable part (§2.7.8); a chain
    // without one has nothing to overrun, and DPDK's vhost puts the buffer length
    // there on its packed TX path, so only a writable chain's len is checked.
    if (writable_len_[e.id] != 0 && e.len > writable_len_[e.id]) errors_++;
    free_id(static_cast<uint16_t>(e.id));
    return cookie;
  }

  bool arm_interrupt();
  void disarm_interrupt();

  template <class Fn>
  void drain(Fn&& each) {
    for (uint16_t id = 0; id < size_; id++) {
      if (cookie_[id]) {
        void* c = cookie_[id];
        free_id(id);
        each(c);
      }
    }
  }

  uint64_t errors() const { return errors_; }

  // Migration: the private bookkeeping (indexes, free descriptors, cookies) and where
  // the ring is; the ring itself is runtime memory and moves with it. restore() checks
  // every field and that each descriptor is free or in exactly one chain; `cookie_ok`
  // judges each cookie in flight. Nothing in the ring is written.
  void save_state(StateWriter& w) const;
  static Result<std::unique_ptr<PackedVirtqueue>> restore(Memory& mem, StateReader& r,
                                                        const std::function<bool(void*)>& cookie_ok);
  // The ring memory moved to another queue object: the destructor leaves it alone.
  void release_memory() { ring_mem_ = nullptr; }

 private:
  struct Entry {
    VirtqUsedElem elem;
    uint16_t slots;
  };
  PackedVirtqueue(Memory& mem, uint16_t index, uint16_t size, bool event_idx);
  static size_t ring_bytes(uint16_t size) { return 16u * size + 128; }
  Status place(void* base);
  void advance(uint16_t& pos, bool& wrap, uint16_t by) {
    uint32_t p = uint32_t{pos} + by;
    if (p >= size_) {
      p -= size_;
      wrap = !wrap;
    }
    pos = static_cast<uint16_t>(p);
  }
  uint16_t in_flight_chains() const { return static_cast<uint16_t>(size_ - free_id_count_); }
  void free_id(uint16_t id) {
    num_free_ = static_cast<uint16_t>(num_free_ + chain_len_[id]);
    chain_len_[id] = 0;
    cookie_[id] = nullptr;
    free_ids_[free_id_count_++] = id;
  }

  Memory& mem_;
  void* ring_mem_ = nullptr;
  QueueLayout layout_;
  uint16_t size_;
  bool event_idx_;

  PackedDesc* ring_ = nullptr;
  uint16_t* driver_event_ = nullptr;  // [0] off_wrap, [1] flags
  uint16_t* device_event_ = nullptr;

  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;   // §2.8.1: both wrap counters start at 1
  uint16_t added_since_kick_ = 0;
  uint16_t scan_pos_ = 0;    // next ring position to look at for a used element
  bool scan_wrap_ = true;
  bool stop_scanning_ = false;  // an element named no buffer in flight: the ring is lost
  uint16_t longest_chain_ = 0;
  uint16_t num_free_ = 0;
  uint16_t free_id_count_ = 0;
  uint64_t errors_ = 0;
  std::vector<uint16_t> free_ids_;
  std::vector<uint16_t> chain_len_;
  std::vector<void*> cookie_;
  std::vector<uint32_t> writable_len_;
  // Used elements found and not consumed, in ring order.
  std::vector<Entry> cache_;
  uint32_t cache_mask_ = 0;
  uint32_t cache_head_ = 0;
  uint32_t cached_ = 0;
};

}  // namespace uvio::virtio
