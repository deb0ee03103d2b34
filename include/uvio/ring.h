// A fixed-size ring of pointers: single or multi producer, single or multi consumer,
// burst (as many as fit) and bulk (all or nothing). Lock-free; indexes run free over
// 32 bits and are masked on access, so the whole power-of-two size is usable.
#pragma once

#include <uvio/status.h>

#include <sched.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace uvio {

inline constexpr size_t kCacheLine = 64;
// Producer and consumer state sit this far apart: x86's adjacent-line prefetcher moves
// cache lines in pairs, so 64 bytes of separation still shares.
inline constexpr size_t kFalseSharingRange = 128;

// Copies n object pointers between non-overlapping arrays. Four per step: the compiler
// turns each step into two 16-byte moves.
inline void copy_pointers(void** __restrict dst, void* const* __restrict src, uint32_t n) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    dst[i] = src[i];
    dst[i + 1] = src[i + 1];
    dst[i + 2] = src[i + 2];
    dst[i + 3] = src[i + 3];
  }
  for (; i < n; i++) dst[i] = src[i];
}

class Ring {
 public:
  enum Flags : unsigned { kMultiProducerMultiConsumer = 0, kSingleProducer = 1, kSingleConsumer = 2 };

  // `size` must be a power of two (2 .. 2^31); flags fix the synchronisation mode.
  static Result<std::unique_ptr<Ring>> create(std::string_view name, uint32_t size, unsigned flags);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Burst: enqueues/dequeues up to n and returns how many. Bulk: n or 0.
  uint32_t enqueue_burst(void* const* objs, uint32_t n) { return enqueue(objs, n, false); }
  uint32_t enqueue_bulk(void* const* objs, uint32_t n) { return enqueue(objs, n, true); }
  uint32_t dequeue_burst(void** objs, uint32_t n) { return dequeue(objs, n, false); }
  uint32_t dequeue_bulk(void** objs, uint32_t n) { return dequeue(objs, n, true); }

  uint32_t size() const { return mask_ + 1; }
  uint32_t count() const {
    uint32_t n = prod_.tail.load(std::memory_order_acquire) - cons_.tail.load(std::memory_order_acquire);
    return n > size() ? size() : n;
  }
  uint32_t free_count() const { return size() - count(); }
  bool empty() const { return count() == 0; }
  const std::string& name() const { return name_; }
  unsigned flags() const { return flags_; }

 private:
  // One side of the ring (producer or consumer), alone on its cache lines. `other_tail`
  // caches the opposite side's tail: in single mode it is re-read only when the cached
  // value says the ring is full (or empty), which saves a cache-line transfer per burst
  // when producer and consumer run on different cores.
  struct alignas(kFalseSharingRange) Side {
    std::atomic<uint32_t> head{0};
    std::atomic<uint32_t> tail{0};
    uint32_t other_tail = 0;
    bool single = false;
  };

  Ring(std::string_view name, uint32_t size, unsigned flags);

  uint32_t enqueue(void* const* objs, uint32_t n, bool all) {
    Side& p = prod_;
    uint32_t head, next;
    if (p.single) {
      head = p.tail.load(std::memory_order_relaxed);
      uint32_t space = size() + p.other_tail - head;
      if (space < n) {
        p.other_tail = cons_.tail.load(std::memory_order_acquire);
        space = size() + p.other_tail - head;
        if (space < n) {
          if (all || space == 0) return 0;
          n = space;
        }
      }
      next = head + n;
    } else {
      n = reserve_multi(p, cons_, n, all, size(), &head);
      if (n == 0) return 0;
      next = head + n;
    }
    copy_in(head, objs, n);
    if (!p.single) wait_turn(p, head);
    p.tail.store(next, std::memory_order_release);
    return n;
  }

  uint32_t dequeue(void** objs, uint32_t n, bool all) {
    Side& c = cons_;
    uint32_t head, next;
    if (c.single) {
      head = c.tail.load(std::memory_order_relaxed);
      uint32_t avail = c.other_tail - head;
      if (avail < n) {
        c.other_tail = prod_.tail.load(std::memory_order_acquire);
        avail = c.other_tail - head;
        if (avail < n) {
          if (all || avail == 0) return 0;
          n = avail;
        }
      }
      next = head + n;
    } else {
      n = reserve_multi(c, prod_, n, all, 0, &head);
      if (n == 0) return 0;
      next = head + n;
    }
    copy_out(head, objs, n);
    if (!c.single) wait_turn(c, head);
    c.tail.store(next, std::memory_order_release);
    return n;
  }

  // Multi mode: claim [head, head + n) with a CAS on this side's head. `offset` is the
  // ring size for producers (free space = size + cons.tail - head) and 0 for consumers.
  static uint32_t reserve_multi(Side& me, const Side& other, uint32_t n, bool all, uint32_t offset, uint32_t* head_out) {
    uint32_t head = me.head.load(std::memory_order_relaxed);
    for (;;) {
      uint32_t room = offset + other.tail.load(std::memory_order_acquire) - head;
      uint32_t take = n;
      if (room < take) {
        if (all || room == 0) return 0;
        take = room;
      }
      if (me.head.compare_exchange_weak(head, head + take, std::memory_order_acquire, std::memory_order_relaxed)) {
        *head_out = head;
        return take;
      }
    }
  }

  // Multi mode: earlier claimants publish first, so the tail moves in order. Acquire:
  // our release of the tail then also publishes the earlier claimants' slots to a
  // consumer (a plain store does not extend their release sequence). When the earlier
  // claimant was preempted (more threads than CPUs), spinning cannot help: yield.
  static void wait_turn(Side& me, uint32_t head) {
    for (unsigned spins = 0; me.tail.load(std::memory_order_acquire) != head; spins++) {
      if (spins < 256) __builtin_ia32_pause();
      else sched_yield();
    }
  }

  void copy_in(uint32_t head, void* const* objs, uint32_t n) {
    uint32_t idx = head & mask_;
    if (__builtin_expect(idx + n <= size(), 1)) {
      copy(&slots_[idx], objs, n);
    } else {
      uint32_t first = size() - idx;
      copy(&slots_[idx], objs, first);
      copy(slots_, objs + first, n - first);
    }
  }

  void copy_out(uint32_t head, void** objs, uint32_t n) const {
    uint32_t idx = head & mask_;
    if (__builtin_expect(idx + n <= size(), 1)) {
      copy(objs, &slots_[idx], n);
    } else {
      uint32_t first = size() - idx;
      copy(objs, &slots_[idx], first);
      copy(objs + first, slots_, n - first);
    }
  }

  static void copy(void** dst, void* const* src, uint32_t n) { copy_pointers(dst, src, n); }

  // Read by both sides, written never after creation.
  alignas(kFalseSharingRange) void** slots_ = nullptr;
  uint32_t mask_ = 0;
  unsigned flags_ = 0;
  std::string name_;
  Side prod_;
  Side cons_;
};

}  // namespace uvio
