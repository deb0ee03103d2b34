// Migration of the virtqueues' private bookkeeping. The rings are runtime memory and
// arrive with it; what is saved here is what the driver alone knows: its indexes and
// wrap counters, which descriptors are free, and the cookie of every chain in flight.
#include "pmd/virtio/virtqueue_packed.h"
#include "pmd/virtio/virtqueue_split.h"

#include <fmt/format.h>

#include <bit>

namespace uvio::virtio {
namespace {

Status refuse(const std::string& why) { return Status::error(EINVAL, "virtqueue state refused: " + why); }

// The ring must lie whole inside one runtime memory area, page aligned, as allocated.
bool ring_inside(Memory& mem, const void* base, size_t bytes) {
  const MemArea* a = mem.area_of(base);
  if (!a) return false;
  auto start = reinterpret_cast<uintptr_t>(base);
  return start % 4096 == 0 && bytes <= a->len - (start - reinterpret_cast<uintptr_t>(a->va));
}

struct Header {
  uint16_t index = 0, size = 0;
  bool event_idx = false;
  void* base = nullptr;
};

Status read_header(Memory& mem, StateReader& r, size_t (*bytes_for)(uint16_t), Header* h) {
  r.get(&h->index);
  r.get(&h->size);
  r.get_bool(&h->event_idx);
  r.get_address(&h->base);
  if (!r.ok()) return refuse("truncated header");
  if (h->size < 2 || h->size > kMaxSplitQueueSize || !std::has_single_bit(h->size))
    return refuse(fmt::format("queue {} size {} is not a power of two from 2 to 32768", h->index, h->size));
  if (!ring_inside(mem, h->base, bytes_for(h->size)))
    return refuse(fmt::format("queue {} ring at {} is not in runtime memory", h->index, h->base));
  return Status::ok();
}

template <class T>
bool read_array(StateReader& r, std::vector<T>& v, size_t n) {
  if (!r.has_room(n, sizeof(T))) return false;
  v.resize(n);
  for (T& x : v) r.get(&x);
  return r.ok();
}

bool read_cookies(StateReader& r, std::vector<void*>& v, size_t n) {
  if (!r.has_room(n, 8)) return false;
  v.resize(n);
  for (void*& c : v) r.get_address(&c);
  return r.ok();
}

}  // namespace

void SplitVirtqueue::save_state(StateWriter& w) const {
  w.put(layout_.index);
  w.put(size_);
  w.put_bool(event_idx_);
  w.put_address(desc_);
  w.put(avail_shadow_);
  w.put(kicked_at_);
  w.put(last_used_);
  w.put(free_head_);
  w.put(num_free_);
  w.put(errors_);
  for (uint16_t v : next_) w.put(v);
  for (uint16_t v : chain_len_) w.put(v);
  for (void* c : cookie_) w.put_address(c);
  for (uint32_t v : writable_len_) w.put(v);
}

Result<std::unique_ptr<SplitVirtqueue>> SplitVirtqueue::restore(Memory& mem, StateReader& r,
                                                                const std::function<bool(void*)>& cookie_ok) {
  Header h;
  UVIO_TRY(read_header(mem, r, &SplitVirtqueue::ring_bytes, &h));
  std::unique_ptr<SplitVirtqueue> q(new SplitVirtqueue(mem, h.index, h.size, h.event_idx));
  r.get(&q->avail_shadow_);
  r.get(&q->kicked_at_);
  r.get(&q->last_used_);
  r.get(&q->free_head_);
  r.get(&q->num_free_);
  r.get(&q->errors_);
  if (!read_array(r, q->next_, h.size) || !read_array(r, q->chain_len_, h.size) ||
      !read_cookies(r, q->cookie_, h.size) || !read_array(r, q->writable_len_, h.size))
    return refuse(fmt::format("queue {} is truncated", h.index));
  if (q->num_free_ > h.size || q->free_head_ >= h.size)
    return refuse(fmt::format("queue {}: {} free descriptors from {}", h.index, q->num_free_, q->free_head_));
  // Every descriptor is either on the free list or in exactly one chain in flight; a
  // cycle or a shared descriptor would corrupt the free list on the next add.
  std::vector<bool> seen(h.size, false);
  auto walk = [&](uint16_t from, uint32_t count) {
    uint16_t at = from;
    for (uint32_t i = 0; i < count; i++) {
      if (at >= h.size || seen[at]) return false;
      seen[at] = true;
      at = q->next_[at];
    }
    return true;
  };
  if (!walk(q->free_head_, q->num_free_)) return refuse(fmt::format("queue {}: the free list is broken", h.index));
  uint32_t in_chains = 0;
  for (uint16_t id = 0; id < h.size; id++) {
    void* c = q->cookie_[id];
    if (!c) {
      if (q->chain_len_[id] != 0) return refuse(fmt::format("queue {}: a chain length without a buffer", h.index));
      continue;
    }
    if (q->chain_len_[id] == 0 || !walk(id, q->chain_len_[id]))
      return refuse(fmt::format("queue {}: chain {} overlaps another or the free list", h.index, id));
    if (!cookie_ok(c)) return refuse(fmt::format("queue {}: buffer {} of chain {} is not one the port may hold", h.index, c, id));
    in_chains += q->chain_len_[id];
  }
  if (in_chains + q->num_free_ != h.size)
    return refuse(fmt::format("queue {}: {} descriptors in flight and {} free of {}", h.index, in_chains, q->num_free_,
                              h.size));
  UVIO_TRY(q->place(h.base));
  q->ring_mem_ = h.base;
  return q;
}

void PackedVirtqueue::save_state(StateWriter& w) const {
  w.put(layout_.index);
  w.put(size_);
  w.put_bool(event_idx_);
  w.put_address(ring_);
  w.put(next_avail_);
  w.put_bool(avail_wrap_);
  w.put(added_since_kick_);
  w.put(scan_pos_);
  w.put_bool(scan_wrap_);
  w.put_bool(stop_scanning_);
  w.put(longest_chain_);
  w.put(num_free_);
  w.put(free_id_count_);
  w.put(errors_);
  for (uint16_t i = 0; i < free_id_count_; i++) w.put(free_ids_[i]);
  for (uint16_t v : chain_len_) w.put(v);
  for (void* c : cookie_) w.put_address(c);
  for (uint32_t v : writable_len_) w.put(v);
  // Used elements already found and not yet consumed, oldest first.
  w.put(cached_);
  for (uint32_t i = 0; i < cached_; i++) {
    const Entry& e = cache_[(cache_head_ + i) & cache_mask_];
    w.put(e.elem.id);
    w.put(e.elem.len);
    w.put(e.slots);
  }
}

Result<std::unique_ptr<PackedVirtqueue>> PackedVirtqueue::restore(Memory& mem, StateReader& r,
                                                                  const std::function<bool(void*)>& cookie_ok) {
  Header h;
  UVIO_TRY(read_header(mem, r, &PackedVirtqueue::ring_bytes, &h));
  std::unique_ptr<PackedVirtqueue> q(new PackedVirtqueue(mem, h.index, h.size, h.event_idx));
  r.get(&q->next_avail_);
  r.get_bool(&q->avail_wrap_);
  r.get(&q->added_since_kick_);
  r.get(&q->scan_pos_);
  r.get_bool(&q->scan_wrap_);
  r.get_bool(&q->stop_scanning_);
  r.get(&q->longest_chain_);
  r.get(&q->num_free_);
  r.get(&q->free_id_count_);
  r.get(&q->errors_);
  if (!r.ok()) return refuse(fmt::format("queue {} is truncated", h.index));
  if (q->next_avail_ >= h.size || q->scan_pos_ >= h.size || q->num_free_ > h.size || q->free_id_count_ > h.size ||
      q->longest_chain_ > h.size)
    return refuse(fmt::format("queue {}: a ring position or count beyond its size {}", h.index, h.size));
  std::vector<uint16_t> free_ids;
  if (!read_array(r, free_ids, q->free_id_count_) || !read_array(r, q->chain_len_, h.size) ||
      !read_cookies(r, q->cookie_, h.size) || !read_array(r, q->writable_len_, h.size))
    return refuse(fmt::format("queue {} is truncated", h.index));
  std::vector<bool> is_free(h.size, false);
  for (uint16_t id : free_ids) {
    if (id >= h.size || is_free[id] || q->cookie_[id])
      return refuse(fmt::format("queue {}: free buffer id {} is out of range, repeated or in flight", h.index, id));
    is_free[id] = true;
  }
  uint32_t in_flight_slots = 0;
  for (uint16_t id = 0; id < h.size; id++) {
    if (is_free[id]) {
      if (q->chain_len_[id] != 0) return refuse(fmt::format("queue {}: free id {} has a chain length", h.index, id));
      continue;
    }
    void* c = q->cookie_[id];
    if (!c || q->chain_len_[id] == 0 || q->chain_len_[id] > q->longest_chain_)
      return refuse(fmt::format("queue {}: id {} is neither free nor a chain in flight", h.index, id));
    if (!cookie_ok(c)) return refuse(fmt::format("queue {}: buffer {} of id {} is not one the port may hold", h.index, c, id));
    in_flight_slots += q->chain_len_[id];
  }
  if (in_flight_slots + q->num_free_ != h.size)
    return refuse(fmt::format("queue {}: {} descriptors in flight and {} free of {}", h.index, in_flight_slots,
                              q->num_free_, h.size));
  uint32_t cached = 0;
  r.get(&cached);
  if (!r.ok() || cached > h.size || !r.has_room(cached, 10)) return refuse(fmt::format("queue {}: {} cached used elements", h.index, cached));
  q->free_ids_.assign(h.size, 0);
  std::copy(free_ids.begin(), free_ids.end(), q->free_ids_.begin());
  q->cache_.assign(h.size, Entry{});
  q->cache_mask_ = h.size - 1u;
  q->cache_head_ = 0;
  q->cached_ = cached;
  for (uint32_t i = 0; i < cached; i++) {
    Entry& e = q->cache_[i];
    r.get(&e.elem.id);
    r.get(&e.elem.len);
    r.get(&e.slots);
    // The element's id is the device's word and is checked when it is taken; its slot
    // count only moved the scan position, which is restored as it was.
    if (e.slots > h.size) return refuse(fmt::format("queue {}: a used element spans {} slots", h.index, e.slots));
  }
  if (!r.ok()) return refuse(fmt::format("queue {}: truncated used elements", h.index));
  UVIO_TRY(q->place(h.base));
  q->ring_mem_ = h.base;
  return q;
}

}  // namespace uvio::virtio
