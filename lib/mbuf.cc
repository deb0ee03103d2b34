#include <uvio/mbuf.h>

#include <fmt/format.h>

namespace uvio {

Result<std::unique_ptr<Mempool>> mbuf_pool_create(Memory& mem, std::string_view name, uint32_t count, uint32_t cache_size,
                                                  uint16_t priv_size, uint16_t data_room, int numa_node) {
  if (priv_size % 8 != 0) return Status::error(EINVAL, fmt::format("mbuf pool '{}': priv_size {} is not a multiple of 8", name, priv_size));
  size_t object = sizeof(Mbuf) + priv_size + data_room;
  return Mempool::create(mem, name, count, object, cache_size, numa_node, [priv_size, data_room](Mempool& mp, void* obj, uint32_t) {
    auto* m = static_cast<Mbuf*>(obj);
    *m = Mbuf{};
    m->buf_addr = reinterpret_cast<std::byte*>(m) + sizeof(Mbuf) + priv_size;
    m->buf_iova = mp.memory().iova_of(m->buf_addr);
    m->buf_len = data_room;
    m->priv_size = priv_size;
    m->pool = &mp;
    m->refcnt = 1;
    m->nb_segs = 1;
    m->next = nullptr;
    mbuf_reset(m);
  });
}

Result<std::unique_ptr<Mempool>> mbuf_pool_restore(Memory& mem, std::span<const uint8_t> state) {
  auto mp = Mempool::restore(mem, state);
  if (!mp) return mp.status();
  Mempool& pool = **mp;
  if (pool.object_size() < sizeof(Mbuf)) {
    pool.release_objects();  // a refused state leaves the memory as it found it
    return Status::error(EINVAL, fmt::format("mbuf pool '{}': objects of {} bytes cannot hold an mbuf", pool.name(),
                                             pool.object_size()));
  }
  for (uint32_t i = 0; i < pool.count(); i++) static_cast<Mbuf*>(pool.object(i))->pool = &pool;
  return mp;
}

void mbuf_free_bulk(Mbuf** mbufs, uint32_t n) {
  constexpr uint32_t kBatch = 64;
  void* batch[kBatch];
  uint32_t len = 0;
  Mempool* pool = nullptr;
  for (uint32_t i = 0; i < n; i++) {
    Mbuf* seg = mbufs[i];
    while (seg) {
      Mbuf* next = seg->next;
      if (mbuf_release_segment(seg)) {
        if (seg->pool != pool || len == kBatch) {
          if (len) pool->put_bulk(batch, len);
          len = 0;
          pool = seg->pool;
        }
        batch[len++] = seg;
      }
      seg = next;
    }
  }
  if (len) pool->put_bulk(batch, len);
}

Mbuf* mbuf_last_segment(Mbuf* m) {
  while (m->next) m = m->next;
  return m;
}

std::byte* mbuf_append(Mbuf* m, uint16_t len) {
  Mbuf* last = mbuf_last_segment(m);
  if (len > last->tailroom()) return nullptr;
  std::byte* tail = last->data() + last->data_len;
  last->data_len = static_cast<uint16_t>(last->data_len + len);
  m->pkt_len += len;
  return tail;
}

std::byte* mbuf_prepend(Mbuf* m, uint16_t len) {
  if (len > m->data_off) return nullptr;
  m->data_off = static_cast<uint16_t>(m->data_off - len);
  m->data_len = static_cast<uint16_t>(m->data_len + len);
  m->pkt_len += len;
  return m->data();
}

bool mbuf_adj(Mbuf* m, uint16_t len) {
  if (len > m->data_len) return false;
  m->data_off = static_cast<uint16_t>(m->data_off + len);
  m->data_len = static_cast<uint16_t>(m->data_len - len);
  m->pkt_len -= len;
  return true;
}

bool mbuf_trim(Mbuf* m, uint16_t len) {
  Mbuf* last = mbuf_last_segment(m);
  if (len > last->data_len) return false;
  last->data_len = static_cast<uint16_t>(last->data_len - len);
  m->pkt_len -= len;
  return true;
}

bool mbuf_chain(Mbuf* head, Mbuf* tail) {
  if (uint32_t{head->nb_segs} + tail->nb_segs > 0xffff) return false;
  mbuf_last_segment(head)->next = tail;
  head->nb_segs = static_cast<uint16_t>(head->nb_segs + tail->nb_segs);
  head->pkt_len += tail->pkt_len;
  return true;
}

}  // namespace uvio
