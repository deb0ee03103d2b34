// A pool of fixed-size objects carved once from runtime memory, so every object has an
// IOVA. A multi-producer/multi-consumer ring holds the free objects; each lcore keeps a
// cache in front of it, so the common get/put touches only lcore-local memory.
#pragma once

#include <uvio/lcore.h>
#include <uvio/mem.h>
#include <uvio/ring.h>

#include <cstring>
#include <functional>

namespace uvio {

class Mempool {
 public:
  static constexpr uint32_t kMaxCache = 512;
  // Called once per object at creation: (pool, object, index).
  using ObjectInit = std::function<void(Mempool&, void*, uint32_t)>;

  static Result<std::unique_ptr<Mempool>> create(Memory& mem, std::string_view name, uint32_t count,
                                                 size_t object_size, uint32_t cache_size, int numa_node = -1,
                                                 const ObjectInit& init = nullptr);
  ~Mempool();
  Mempool(const Mempool&) = delete;
  Mempool& operator=(const Mempool&) = delete;

  // All n objects or none (returns false).
  bool get_bulk(void** objs, uint32_t n) {
    Cache* c = cache();
    if (c && n <= c->len) {  // the fast path: the most recently freed, cache-hot objects
      c->len -= n;
      copy_pointers(objs, &c->objs[c->len], n);
      return true;
    }
    return get_slow(c, objs, n);
  }

  void put_bulk(void* const* objs, uint32_t n) {
    Cache* c = cache();
    if (c && c->len + n <= c->flush_at) {
      copy_pointers(&c->objs[c->len], objs, n);
      c->len += n;
      return;
    }
    put_slow(c, objs, n);
  }

  void* get() {
    void* o;
    return get_bulk(&o, 1) ? o : nullptr;
  }
  void put(void* o) { put_bulk(&o, 1); }

  // Objects in the ring and in every cache; exact when no lcore is mid-call.
  uint32_t available() const;
  uint32_t in_use() const { return count_ - available(); }
  uint32_t count() const { return count_; }
  size_t object_size() const { return object_size_; }
  uint32_t cache_size() const { return cache_size_; }
  const std::string& name() const { return name_; }
  Memory& memory() const { return mem_; }
  // The object with this index (creation order), for tests and inspection.
  void* object(uint32_t index) const { return base_ + size_t{index} * stride_; }
  bool owns(const void* p) const;
  // Returns the calling lcore's cached objects to the ring (before an lcore stops).
  void flush_cache();

 private:
  struct alignas(kCacheLine) Cache {
    uint32_t size = 0;      // refill target
    uint32_t flush_at = 0;  // above this, return the excess to the ring
    uint32_t len = 0;
    void* objs[kMaxCache * 3];
  };

  Mempool(Memory& mem, std::string_view name);
  Cache* cache() {
    unsigned id = lcore_id();
    return (cache_size_ && id < kMaxLcores) ? &caches_[id] : nullptr;
  }
  bool get_slow(Cache* c, void** objs, uint32_t n);
  void put_slow(Cache* c, void* const* objs, uint32_t n);

  Memory& mem_;
  std::string name_;
  std::unique_ptr<Ring> ring_;
  std::byte* base_ = nullptr;
  size_t stride_ = 0;
  size_t object_size_ = 0;
  uint32_t count_ = 0;
  uint32_t cache_size_ = 0;
  std::unique_ptr<Cache[]> caches_;
};

}  // namespace uvio
