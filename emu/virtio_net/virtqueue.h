// The device side of a virtqueue: walking the descriptor chains the driver made
// available and returning them as used, in either ring format the driver negotiated —
// split (virtio 1.2 §2.7, split_ring.cc) or packed (§2.8, packed_ring.cc). Every guest
// address goes through DmaAccess; anything malformed is reported as an error string,
// never trusted.
#pragma once

#include "emu/device_model.h"
#include "emu/virtio_net/virtio_net_spec.h"

#include <atomic>
#include <cstdint>
#include <vector>

namespace uvio::emu::virtio_net {

// Orders guest-memory accesses (plain copies through DmaAccess) against the driver on
// another CPU. GCC refuses std::atomic_thread_fence under ThreadSanitizer, which does
// not model fences; there a compiler barrier stands in (the rings are never shared
// between two threads of a TSan test).
inline void guest_fence(std::memory_order order) {
#if defined(__SANITIZE_THREAD__)
  std::atomic_signal_fence(order);
#else
  std::atomic_thread_fence(order);
#endif
}

// One guest buffer of a chain.
struct Segment {
  uint64_t addr = 0;
  uint32_t len = 0;
  bool writable = false;
};

// A descriptor chain taken from the ring. Device-readable segments come first
// (§2.7.4.2, §2.8.4), so `segments[0, readable_count)` are the driver's output.
struct Chain {
  uint16_t id = 0;          // split: head index; packed: buffer id
  uint16_t ring_slots = 0;  // descriptors it occupies in the ring (packed used-ring step)
  std::vector<Segment> segments;
  size_t readable_count = 0;
  uint64_t readable_len = 0;
  uint64_t writable_len = 0;
};

// Longest indirect table accepted (the spec sets no limit; ours bounds the copy).
inline constexpr uint32_t kMaxIndirectDescs = 1024;

enum class Pop { kChain, kEmpty, kError };

class Virtqueue {
 public:
  Virtqueue();

  // Registers the driver programs through the common config (§4.1.4.3). For a packed
  // ring, avail_addr is the driver event suppression area and used_addr the device's.
  uint16_t size = 0;
  uint16_t msix_vector = spec::kNoVector;
  bool enabled = false;
  bool packed = false;
  uint64_t desc_addr = 0;
  uint64_t avail_addr = 0;
  uint64_t used_addr = 0;

  // Device-side progress, saved on migration. Split: free-running 16-bit indexes.
  // Packed: ring positions below size, with their wrap counters (§2.8.1).
  uint16_t last_avail_idx = 0;
  uint16_t used_idx = 0;
  bool avail_wrap = true;
  bool used_wrap = true;
  uint16_t unsignalled = 0;  // used entries (packed: ring slots) since the last interrupt decision
  // Fault injection (faults=used-wrap), packed only: the next used descriptor carries
  // the previous lap's wrap counter in its AVAIL and USED flags. Not migrated.
  bool stale_wrap_once = false;

  // Back to the state after a device reset, with `max_size` as the offered size.
  void reset(uint16_t max_size);
  // Call when the driver enables the queue: the ring format and a fresh position.
  void start(bool packed_ring);

  // After migration: forget what was read from the driver's rings before.
  void resume() { shadow_avail_idx_ = last_avail_idx; }

  // Checks the layout the driver enabled against §2.7 / §2.8 (size and alignment).
  const char* validate(uint16_t max_size) const;

  // Takes the next available chain into `chain`.
  Pop pop(DmaAccess& dma, bool indirect_allowed, Chain& chain, const char** why);

  // Where popping stands, to give back chains that were popped but not used.
  struct Position {
    uint16_t index;
    bool wrap;
  };
  Position position() const { return {last_avail_idx, avail_wrap}; }
  void rewind(Position p) {
    last_avail_idx = p.index;
    avail_wrap = p.wrap;
  }

  // Returns one chain; the driver may only see it after publish_used().
  // ring_slots: Chain::ring_slots of the chain being returned.
  bool push_used(DmaAccess& dma, uint32_t id, uint32_t len, uint16_t ring_slots);
  bool publish_used(DmaAccess& dma);

  // §2.7.7.2 / §2.8.10: whether the driver wants an interrupt for the entries used
  // since the last decision. Marks them signalled.
  bool should_interrupt(DmaAccess& dma, bool event_idx);

  // After a batch: ask to be notified for the next buffer (§2.7.10 with EVENT_IDX), then
  // look again so a buffer added meanwhile is not missed. True when chains are pending.
  bool arm_notification(DmaAccess& dma, bool event_idx);

 private:
  // split_ring.cc
  Pop pop_split(DmaAccess& dma, bool indirect_allowed, Chain& chain, const char** why);
  bool push_used_split(DmaAccess& dma, uint32_t id, uint32_t len);
  bool publish_used_split(DmaAccess& dma);
  bool should_interrupt_split(DmaAccess& dma, bool event_idx);
  bool arm_notification_split(DmaAccess& dma, bool event_idx);
  // packed_ring.cc
  Pop pop_packed(DmaAccess& dma, bool indirect_allowed, Chain& chain, const char** why);
  bool push_used_packed(DmaAccess& dma, uint32_t id, uint32_t len, uint16_t ring_slots);
  bool should_interrupt_packed(DmaAccess& dma, bool event_idx);
  bool packed_available(DmaAccess& dma, uint16_t index, bool wrap, bool* available);

  // virtqueue.cc: shared by both formats.
  static void clear(Chain& chain);
  static bool add_segment(Chain& chain, uint64_t addr, uint32_t len, bool writable, const char** why);
  // Reads an indirect table (§2.7.5.3, §2.8.13) and adds its segments.
  bool add_indirect(DmaAccess& dma, uint64_t addr, uint32_t len, uint16_t flags, bool follow_next, Chain& chain,
                    const char** why);

  uint16_t shadow_avail_idx_ = 0;  // split: the driver's idx as last read
  std::vector<spec::Desc> indirect_;  // scratch, allocated once
};

}  // namespace uvio::emu::virtio_net
