#include <uvio/log.h>
#include <uvio/mempool.h>

#include "lib/state_io.h"

#include <algorithm>
#include <mutex>
#include <vector>

namespace uvio {
namespace {

constexpr uint32_t kStateMagic = 0x4c504d55;  // "UMPL"
constexpr uint32_t kStateVersion = 1;
constexpr uint32_t kMaxNameBytes = 256;

// Every live pool, so that a migrated driver finds the pool of the mbufs it holds.
std::mutex g_live_mu;
std::vector<Mempool*>& live_pools() {
  static std::vector<Mempool*> pools;
  return pools;
}

uint32_t ring_size_for(uint32_t count) {
  uint32_t size = 2;
  while (size < count) size <<= 1;
  return size;
}

}  // namespace

Mempool::Mempool(Memory& mem, std::string_view name) : mem_(mem), name_(name) {}

Mempool::~Mempool() {
  unregister_live();
  if (base_ && owns_objects_) mem_.free(base_);
}

void Mempool::register_live() {
  std::lock_guard lock(g_live_mu);
  live_pools().push_back(this);
}

void Mempool::unregister_live() {
  std::lock_guard lock(g_live_mu);
  auto& pools = live_pools();
  pools.erase(std::remove(pools.begin(), pools.end(), this), pools.end());
}

Mempool* Mempool::owner_of(const void* p) {
  std::lock_guard lock(g_live_mu);
  for (Mempool* mp : live_pools())
    if (mp->owns(p)) return mp;
  return nullptr;
}

void Mempool::release_objects() {
  owns_objects_ = false;
  unregister_live();
}

void Mempool::init_caches() {
  if (!cache_size_) return;
  caches_.reset(new Cache[kMaxLcores]);
  for (uint32_t i = 0; i < kMaxLcores; i++) {
    caches_[i].size = cache_size_;
    caches_[i].flush_at = cache_size_ + cache_size_ / 2;
  }
}

Result<std::unique_ptr<Mempool>> Mempool::create(Memory& mem, std::string_view name, uint32_t count, size_t object_size,
                                                 uint32_t cache_size, int numa_node, const ObjectInit& init) {
  if (count == 0) return Status::error(EINVAL, fmt::format("mempool '{}': count is 0", name));
  if (object_size == 0) return Status::error(EINVAL, fmt::format("mempool '{}': object size is 0", name));
  if (cache_size > kMaxCache)
    return Status::error(EINVAL, fmt::format("mempool '{}': cache {} is above the maximum {}", name, cache_size, kMaxCache));
  // A cache that can hold the whole pool strands objects on one lcore (as DPDK: 1.5x rule).
  if (cache_size && uint64_t{cache_size} * 3 / 2 > count)
    return Status::error(EINVAL, fmt::format("mempool '{}': cache {} is too large for {} objects (cache * 1.5 must not exceed the count)",
                                             name, cache_size, count));
  std::unique_ptr<Mempool> mp(new Mempool(mem, name));
  mp->count_ = count;
  mp->object_size_ = object_size;
  mp->cache_size_ = cache_size;
  mp->stride_ = (object_size + kCacheLine - 1) / kCacheLine * kCacheLine;
  auto ring = Ring::create(fmt::format("mp_{}", name), ring_size_for(count), Ring::kMultiProducerMultiConsumer);
  if (!ring) return ring.status();
  mp->ring_ = std::move(ring.value());
  size_t bytes = mp->stride_ * count;
  mp->base_ = static_cast<std::byte*>(mem.alloc(bytes, kCacheLine, numa_node));
  if (!mp->base_) {
    MemStats s = mem.stats();
    return Status::error(ENOMEM, fmt::format("mempool '{}': {} objects of {} bytes need {} KiB; the largest free block is {} KiB of {} KiB free",
                                             name, count, object_size, bytes >> 10, s.largest_free >> 10, s.free >> 10));
  }
  mp->init_caches();
  std::vector<void*> objs(count);
  for (uint32_t i = 0; i < count; i++) {
    objs[i] = mp->object(i);
    if (init) init(*mp, objs[i], i);
  }
  if (mp->ring_->enqueue_bulk(objs.data(), count) != count)
    return Status::error(EIO, fmt::format("mempool '{}': could not fill its ring", name));
  mp->register_live();
  return mp;
}

bool Mempool::get_slow(Cache* c, void** objs, uint32_t n) {
  if (c && n <= c->size) {
    // Refill to `size` plus what is asked, then serve from the cache.
    uint32_t want = c->size + n - c->len;
    uint32_t got = ring_->dequeue_burst(&c->objs[c->len], want);
    c->len += got;
    if (n <= c->len) {
      c->len -= n;
      copy_pointers(objs, &c->objs[c->len], n);
      return true;
    }
    // The ring ran dry: what it gave stays cached; the request fails as a whole.
    return false;
  }
  return ring_->dequeue_bulk(objs, n) == n;
}

void Mempool::put_slow(Cache* c, void* const* objs, uint32_t n) {
  if (c && n <= c->flush_at && c->len + n <= std::size(c->objs)) {
    copy_pointers(&c->objs[c->len], objs, n);
    c->len += n;
    // Keep `size` cached, hand the excess back in one bulk.
    uint32_t excess = c->len - c->size;
    uint32_t put = ring_->enqueue_burst(&c->objs[c->size], excess);
    c->len -= put;
    return;
  }
  uint32_t put = ring_->enqueue_burst(objs, n);
  if (put != n) UVIO_LOG(Crit, "mempool", "'{}': {} objects put back that the pool cannot hold (double free?)", name_, n - put);
}

uint32_t Mempool::available() const {
  uint32_t n = ring_->count();
  if (caches_)
    for (uint32_t i = 0; i < kMaxLcores; i++) n += caches_[i].len;
  return n;
}

bool Mempool::owns(const void* p) const {
  auto* b = static_cast<const std::byte*>(p);
  return b >= base_ && b < base_ + stride_ * count_ && (b - base_) % stride_ == 0;
}

void Mempool::flush_cache() {
  Cache* c = cache();
  if (!c || c->len == 0) return;
  uint32_t put = ring_->enqueue_burst(c->objs, c->len);
  c->len -= put;
}

Status Mempool::save_state(std::vector<uint8_t>& out) {
  if (caches_) {
    for (uint32_t i = 0; i < kMaxLcores; i++) {
      Cache& c = caches_[i];
      uint32_t put = ring_->enqueue_burst(c.objs, c.len);
      if (put != c.len)
        return Status::error(EIO, fmt::format("mempool '{}': lcore {} caches {} objects the ring cannot take back",
                                              name_, i, c.len - put));
      c.len = 0;
    }
  }
  // Take every free object out and put it back in the same order: the ring then holds
  // what it held, and the indexes say which objects those are.
  std::vector<void*> free_objs(ring_->count());
  uint32_t n = ring_->dequeue_burst(free_objs.data(), static_cast<uint32_t>(free_objs.size()));
  free_objs.resize(n);
  uint32_t back = ring_->enqueue_burst(free_objs.data(), n);
  if (back != n) return Status::error(EIO, fmt::format("mempool '{}': its ring lost objects while saving", name_));

  StateWriter w(out);
  w.put(kStateMagic);
  w.put(kStateVersion);
  w.put_string(name_);
  w.put(count_);
  w.put<uint64_t>(object_size_);
  w.put<uint64_t>(stride_);
  w.put(cache_size_);
  w.put_address(base_);
  w.put(n);
  for (void* o : free_objs) {
    if (!owns(o))
      return Status::error(EIO, fmt::format("mempool '{}': its ring holds {}, which is not one of its objects", name_, o));
    w.put(static_cast<uint32_t>((static_cast<std::byte*>(o) - base_) / stride_));
  }
  return Status::ok();
}

Result<std::unique_ptr<Mempool>> Mempool::restore(Memory& mem, std::span<const uint8_t> state) {
  auto refuse = [](const std::string& why) {
    return Status::error(EINVAL, "mempool state refused: " + why);
  };
  StateReader r(state);
  uint32_t magic = 0, version = 0, count = 0, cache_size = 0, free_count = 0;
  uint64_t object_size = 0, stride = 0;
  std::string name;
  std::byte* base = nullptr;
  if (!r.get(&magic) || magic != kStateMagic) return refuse("not a mempool state (bad magic)");
  if (!r.get(&version) || version != kStateVersion)
    return refuse(fmt::format("format version {} is not the supported version {}", version, kStateVersion));
  r.get_string(&name, kMaxNameBytes);
  r.get(&count);
  r.get(&object_size);
  r.get(&stride);
  r.get(&cache_size);
  r.get_address(&base);
  r.get(&free_count);
  if (!r.ok()) return refuse("truncated header");
  if (count == 0 || object_size == 0 || stride != (object_size + kCacheLine - 1) / kCacheLine * kCacheLine)
    return refuse(fmt::format("'{}': {} objects of {} bytes at a stride of {} is not a pool's geometry", name, count,
                              object_size, stride));
  if (cache_size > kMaxCache || (cache_size && uint64_t{cache_size} * 3 / 2 > count))
    return refuse(fmt::format("'{}': cache size {} does not fit {} objects", name, cache_size, count));
  // The objects must lie inside one area of runtime memory, exactly as on the source.
  uint64_t bytes = stride * count;
  const MemArea* area = mem.area_of(base);
  auto first = reinterpret_cast<uintptr_t>(base);
  if (!area || bytes / count != stride || first + bytes < first ||
      first + bytes > reinterpret_cast<uintptr_t>(area->va) + area->len)
    return refuse(fmt::format("'{}': objects at {} (+{} bytes) are not inside runtime memory", name,
                              static_cast<void*>(base), bytes));
  if (free_count > count) return refuse(fmt::format("'{}': {} free objects of {}", name, free_count, count));
  if (!r.has_room(free_count, sizeof(uint32_t))) return refuse(fmt::format("'{}': truncated free list", name));
  std::vector<bool> seen(count, false);
  std::vector<void*> free_objs(free_count);
  for (uint32_t i = 0; i < free_count; i++) {
    uint32_t index = 0;
    r.get(&index);
    if (index >= count || seen[index])
      return refuse(fmt::format("'{}': free object index {} is out of range or repeated", name, index));
    seen[index] = true;
    free_objs[i] = base + size_t{index} * stride;
  }
  if (!r.ok() || r.left() != 0) return refuse(fmt::format("'{}': {} bytes after the free list", name, r.left()));

  std::unique_ptr<Mempool> mp(new Mempool(mem, name));
  mp->count_ = count;
  mp->object_size_ = object_size;
  mp->cache_size_ = cache_size;
  mp->stride_ = stride;
  auto ring = Ring::create(fmt::format("mp_{}", name), ring_size_for(count), Ring::kMultiProducerMultiConsumer);
  if (!ring) return ring.status();
  mp->ring_ = std::move(ring.value());
  mp->init_caches();
  if (mp->ring_->enqueue_bulk(free_objs.data(), free_count) != free_count)
    return Status::error(EIO, fmt::format("mempool '{}': could not fill its ring", name));
  // Owned from here on: the DMA heap's record of this block moved with the memory.
  mp->base_ = base;
  mp->register_live();
  return mp;
}

}  // namespace uvio
