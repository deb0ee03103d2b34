#include <uvio/mbuf.h>
#include <uvio/mempool.h>

#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace uvio {
namespace {

std::unique_ptr<Memory> make_memory(size_t bytes = 16 << 20) {
  MemConfig cfg;
  cfg.total_bytes = bytes;
  cfg.hugepages = false;
  auto m = Memory::create(cfg);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return std::move(m.value());
}

TEST(Mempool, RejectsBadParameters) {
  auto mem = make_memory();
  EXPECT_FALSE(Mempool::create(*mem, "p", 0, 64, 0).is_ok());
  EXPECT_FALSE(Mempool::create(*mem, "p", 100, 0, 0).is_ok());
  EXPECT_FALSE(Mempool::create(*mem, "p", 100, 64, 600).is_ok());
  EXPECT_FALSE(Mempool::create(*mem, "p", 100, 64, 80).is_ok()) << "cache * 1.5 > count";
  auto big = Mempool::create(*mem, "p", 1 << 20, 1024, 0);
  ASSERT_FALSE(big.is_ok());
  EXPECT_NE(big.status().message().find("largest free block"), std::string::npos);
}

TEST(Mempool, NoLossNoDoubleAllocationWithoutCache) {
  auto mem = make_memory();
  auto mp = Mempool::create(*mem, "p", 100, 200, 0, -1, [](Mempool&, void* o, uint32_t i) { *static_cast<uint32_t*>(o) = i; });
  ASSERT_TRUE(mp.is_ok());
  Mempool& pool = **mp;
  set_lcore_id(kNoLcore);
  std::vector<void*> objs(100);
  ASSERT_TRUE(pool.get_bulk(objs.data(), 100));
  EXPECT_EQ(pool.get(), nullptr);
  std::set<void*> unique(objs.begin(), objs.end());
  EXPECT_EQ(unique.size(), 100u);
  std::set<uint32_t> indexes;
  for (void* o : objs) {
    EXPECT_TRUE(pool.owns(o));
    EXPECT_TRUE(mem->contains(o));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(o) % 64, 0u);
    indexes.insert(*static_cast<uint32_t*>(o));
  }
  EXPECT_EQ(indexes.size(), 100u) << "the init callback ran once per object";
  EXPECT_EQ(pool.in_use(), 100u);
  pool.put_bulk(objs.data(), 100);
  EXPECT_EQ(pool.available(), 100u);
}

TEST(Mempool, CacheServesRefillsAndFlushes) {
  auto mem = make_memory();
  auto mp = Mempool::create(*mem, "c", 1024, 64, 32);
  ASSERT_TRUE(mp.is_ok());
  Mempool& pool = **mp;
  set_lcore_id(0);
  void* objs[64];
  ASSERT_TRUE(pool.get_bulk(objs, 8));
  EXPECT_EQ(pool.available(), 1024u - 8);  // the refill sits in the cache, still available
  pool.put_bulk(objs, 8);
  // Putting more than the flush threshold hands the excess back to the ring.
  std::vector<void*> many(600);
  ASSERT_TRUE(pool.get_bulk(many.data(), 600));
  pool.put_bulk(many.data(), 600);
  EXPECT_EQ(pool.available(), 1024u);
  pool.flush_cache();
  EXPECT_EQ(pool.available(), 1024u);
  // Everything can still be taken out, so nothing is stranded in a cache.
  set_lcore_id(1);
  std::vector<void*> all(1024);
  ASSERT_TRUE(pool.get_bulk(all.data(), 1024 - 32)) << "lcore 1 reaches what lcore 0 flushed";
  set_lcore_id(kNoLcore);
}

TEST(Mempool, ConcurrentLcoresNeverShareAnObject) {
  auto mem = make_memory();
  auto mp = Mempool::create(*mem, "mt", 4096, 64, 64);
  ASSERT_TRUE(mp.is_ok());
  Mempool& pool = **mp;
  constexpr int kThreads = 4;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      set_lcore_id(t);
      void* objs[48];
      for (int iter = 0; iter < 20000; iter++) {
        uint32_t n = 1 + iter % 48;
        if (!pool.get_bulk(objs, n)) continue;
        for (uint32_t i = 0; i < n; i++) {
          auto* word = static_cast<std::atomic<int>*>(objs[i]);
          if (word->exchange(1) != 0) errors++;  // someone else holds it
        }
        for (uint32_t i = 0; i < n; i++) static_cast<std::atomic<int>*>(objs[i])->store(0);
        pool.put_bulk(objs, n);
      }
      pool.flush_cache();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(pool.available(), 4096u);
}

TEST(Mbuf, AllocCarriesIovaAndResetsFields) {
  auto mem = make_memory();
  auto mp = mbuf_pool_create(*mem, "pkts", 256, 0, 16);
  ASSERT_TRUE(mp.is_ok()) << mp.status().message();
  Mempool& pool = **mp;
  Mbuf* m = mbuf_alloc(pool);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->pool, &pool);
  EXPECT_EQ(m->refcnt, 1);
  EXPECT_EQ(m->nb_segs, 1);
  EXPECT_EQ(m->data_off, kMbufHeadroom);
  EXPECT_EQ(m->buf_iova, mem->iova_of(m->buf_addr));
  EXPECT_EQ(m->data_iova(), mem->iova_of(m->data()));
  EXPECT_EQ(m->buf_addr, reinterpret_cast<std::byte*>(m) + sizeof(Mbuf) + 16);
  std::byte* p = mbuf_append(m, 60);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p, m->data());
  EXPECT_EQ(m->pkt_len, 60u);
  EXPECT_EQ(mbuf_append(m, 5000), nullptr);
  ASSERT_NE(mbuf_prepend(m, 14), nullptr);
  EXPECT_EQ(m->data_len, 74);
  EXPECT_TRUE(mbuf_adj(m, 14));
  EXPECT_TRUE(mbuf_trim(m, 10));
  EXPECT_EQ(m->pkt_len, 50u);
  EXPECT_FALSE(mbuf_adj(m, 51));
  m->ol_flags = 7;
  mbuf_free(m);
  Mbuf* again = mbuf_alloc(pool);
  EXPECT_EQ(again->ol_flags, 0u);
  EXPECT_EQ(again->data_len, 0);
  mbuf_free(again);
}

TEST(Mbuf, ChainsFreeEverySegmentAndRefcountsHold) {
  auto mem = make_memory();
  auto mp = mbuf_pool_create(*mem, "chain", 64, 0);
  ASSERT_TRUE(mp.is_ok());
  Mempool& pool = **mp;
  Mbuf* segs[3];
  ASSERT_TRUE(mbuf_alloc_bulk(pool, segs, 3));
  for (Mbuf* s : segs) mbuf_append(s, 100);
  ASSERT_TRUE(mbuf_chain(segs[0], segs[1]));
  ASSERT_TRUE(mbuf_chain(segs[0], segs[2]));
  EXPECT_EQ(segs[0]->nb_segs, 3);
  EXPECT_EQ(segs[0]->pkt_len, 300u);
  EXPECT_EQ(pool.available(), 61u);
  mbuf_refcnt_add(segs[2], 1);  // someone else holds the last segment
  mbuf_free(segs[0]);
  EXPECT_EQ(pool.available(), 63u);
  EXPECT_EQ(segs[2]->refcnt, 1);
  mbuf_free(segs[2]);
  EXPECT_EQ(pool.available(), 64u);
  // Freed chains come back as single segments.
  Mbuf* all[64];
  ASSERT_TRUE(mbuf_alloc_bulk(pool, all, 64));
  for (Mbuf* m : all) {
    EXPECT_EQ(m->next, nullptr);
    EXPECT_EQ(m->nb_segs, 1);
  }
  mbuf_free_bulk(all, 64);
  EXPECT_EQ(pool.available(), 64u);
}

}  // namespace
}  // namespace uvio
