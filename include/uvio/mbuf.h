// Packet buffers: a 128-byte header followed by headroom and data room, all inside one
// mempool object, so buf_iova is known at creation and never looked up on the fast path.
// Free mbufs keep refcnt 1, nb_segs 1 and next null, so allocation writes only the rest.
#pragma once

#include <uvio/mempool.h>

#include <atomic>
#include <cstdint>

namespace uvio {

inline constexpr uint16_t kMbufHeadroom = 128;
inline constexpr uint16_t kMbufDefaultDataRoom = 2048 + kMbufHeadroom;
inline constexpr uint16_t kNoPort = 0xffff;

struct alignas(kCacheLine) Mbuf {
  // Cache line 0: everything rx/tx touch.
  std::byte* buf_addr;
  uint64_t buf_iova;
  uint16_t data_off;
  uint16_t refcnt;  // atomic through std::atomic_ref when shared
  uint16_t nb_segs;
  uint16_t port;
  uint64_t ol_flags;
  uint32_t packet_type;
  uint32_t pkt_len;   // the whole chain
  uint16_t data_len;  // this segment
  uint16_t vlan_tci;
  uint32_t rss_hash;
  uint16_t buf_len;
  uint16_t priv_size;
  uint32_t seqn;
  Mempool* pool;
  // Cache line 1: chains, offloads, the application's own word.
  Mbuf* next;
  uint64_t tx_offload;
  uint64_t user_data;
  uint64_t reserved[5];

  std::byte* data() { return buf_addr + data_off; }
  template <class T>
  T* data_as() { return reinterpret_cast<T*>(buf_addr + data_off); }
  uint64_t data_iova() const { return buf_iova + data_off; }
  uint16_t headroom() const { return data_off; }
  uint16_t tailroom() const { return static_cast<uint16_t>(buf_len - data_off - data_len); }
};
static_assert(sizeof(Mbuf) == 2 * kCacheLine);

// A pool of mbufs with `data_room` bytes of buffer (headroom included) and `priv_size`
// bytes of application area between the header and the buffer.
Result<std::unique_ptr<Mempool>> mbuf_pool_create(Memory& mem, std::string_view name, uint32_t count, uint32_t cache_size,
                                                  uint16_t priv_size = 0, uint16_t data_room = kMbufDefaultDataRoom,
                                                  int numa_node = -1);

// Migration's destination: Mempool::restore, then every mbuf of the pool (free or in
// use) is pointed at the restored pool, the one word of an mbuf that named the source's
// heap. Nothing else in the mbufs changes.
Result<std::unique_ptr<Mempool>> mbuf_pool_restore(Memory& mem, std::span<const uint8_t> state);

inline void mbuf_reset(Mbuf* m) {
  m->data_off = m->buf_len < kMbufHeadroom ? m->buf_len : kMbufHeadroom;
  m->pkt_len = 0;
  m->data_len = 0;
  m->ol_flags = 0;
  m->packet_type = 0;
  m->vlan_tci = 0;
  m->port = kNoPort;
}

inline bool mbuf_alloc_bulk(Mempool& pool, Mbuf** mbufs, uint32_t n) {
  if (!pool.get_bulk(reinterpret_cast<void**>(mbufs), n)) return false;
  for (uint32_t i = 0; i < n; i++) mbuf_reset(mbufs[i]);
  return true;
}

inline Mbuf* mbuf_alloc(Mempool& pool) {
  Mbuf* m;
  return mbuf_alloc_bulk(pool, &m, 1) ? m : nullptr;
}

// Drops one reference to a segment; true when it is now free (refcnt back to 1, unlinked).
inline bool mbuf_release_segment(Mbuf* m) {
  if (m->refcnt != 1) {
    if (std::atomic_ref<uint16_t>(m->refcnt).fetch_sub(1, std::memory_order_acq_rel) != 1) return false;
    m->refcnt = 1;
  }
  if (m->next) {
    m->next = nullptr;
    m->nb_segs = 1;
  }
  return true;
}

// Frees n packets (whole chains), returning segments to their pools in bursts.
void mbuf_free_bulk(Mbuf** mbufs, uint32_t n);
inline void mbuf_free(Mbuf* m) { mbuf_free_bulk(&m, 1); }

inline void mbuf_refcnt_add(Mbuf* m, int16_t delta) {
  std::atomic_ref<uint16_t>(m->refcnt).fetch_add(static_cast<uint16_t>(delta), std::memory_order_acq_rel);
}

// Grows the data at the end of the last segment; nullptr when there is no tailroom.
std::byte* mbuf_append(Mbuf* m, uint16_t len);
// Grows the data in front; nullptr when there is no headroom.
std::byte* mbuf_prepend(Mbuf* m, uint16_t len);
// Removes len bytes from the front / the end; false when the packet is shorter.
bool mbuf_adj(Mbuf* m, uint16_t len);
bool mbuf_trim(Mbuf* m, uint16_t len);
// Appends the chain `tail` to `head`; false if nb_segs would overflow.
bool mbuf_chain(Mbuf* head, Mbuf* tail);
Mbuf* mbuf_last_segment(Mbuf* m);

}  // namespace uvio
