#include <uvio/log.h>
#include <uvio/mempool.h>

#include <algorithm>
#include <vector>

namespace uvio {

Mempool::Mempool(Memory& mem, std::string_view name) : mem_(mem), name_(name) {}

Mempool::~Mempool() {
  if (base_) mem_.free(base_);
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
  uint32_t ring_size = 2;
  while (ring_size < count) ring_size <<= 1;
  auto ring = Ring::create(fmt::format("mp_{}", name), ring_size, Ring::kMultiProducerMultiConsumer);
  if (!ring) return ring.status();
  mp->ring_ = std::move(ring.value());
  size_t bytes = mp->stride_ * count;
  mp->base_ = static_cast<std::byte*>(mem.alloc(bytes, kCacheLine, numa_node));
  if (!mp->base_) {
    MemStats s = mem.stats();
    return Status::error(ENOMEM, fmt::format("mempool '{}': {} objects of {} bytes need {} KiB; the largest free block is {} KiB of {} KiB free",
                                             name, count, object_size, bytes >> 10, s.largest_free >> 10, s.free >> 10));
  }
  if (cache_size) {
    mp->caches_.reset(new Cache[kMaxLcores]);
    for (uint32_t i = 0; i < kMaxLcores; i++) {
      mp->caches_[i].size = cache_size;
      mp->caches_[i].flush_at = cache_size + cache_size / 2;
    }
  }
  std::vector<void*> objs(count);
  for (uint32_t i = 0; i < count; i++) {
    objs[i] = mp->object(i);
    if (init) init(*mp, objs[i], i);
  }
  if (mp->ring_->enqueue_bulk(objs.data(), count) != count)
    return Status::error(EIO, fmt::format("mempool '{}': could not fill its ring", name));
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

}  // namespace uvio
