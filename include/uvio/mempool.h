// A pool of fixed-size objects carved once from runtime memory, so every object has an
// IOVA. A multi-producer/multi-consumer ring holds the free objects; each lcore keeps a
// cache in front of it, so the common get/put touches only lcore-local memory.
#pragma once

#include <uvio/lcore.h>
#include <uvio/mem.h>
#include <uvio/ring.h>

#include <cstring>
#include <functional>
#include <span>
#include <vector>

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

  // Migration. With no lcore inside get/put: returns every lcore's cache to the ring and
  // records the geometry, the name, the objects' address and the free objects (by index,
  // in ring order). The pool goes on working afterwards.
  Status save_state(std::vector<uint8_t>& out);
  // Rebuilds a saved pool over memory that already holds the source's bytes at the same
  // addresses (a migration's destination): no object is written and nothing is taken
  // from the DMA heap, whose allocations moved with the memory. `state` comes from
  // outside and is checked whole before anything is built.
  static Result<std::unique_ptr<Mempool>> restore(Memory& mem, std::span<const uint8_t> state);
  // Another Mempool has taken over these objects (restored in the same process, or the
  // state moved to another): the destructor no longer frees their memory, and
  // owner_of() no longer finds this pool.
  void release_objects();
  // The live pool (created or restored) that owns object `p`, or nullptr. Control path.
  static Mempool* owner_of(const void* p);

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
  void init_caches();
  void register_live();
  void unregister_live();
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
  bool owns_objects_ = true;  // false after release_objects()
};

}  // namespace uvio
