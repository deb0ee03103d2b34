// Mempool and mbuf pool migration: save_state on the source, restore over the same
// memory, and refusal of damaged states.
#include <uvio/mbuf.h>
#include <uvio/mempool.h>

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <vector>

namespace uvio {
namespace {

std::unique_ptr<Memory> make_memory() {
  MemConfig cfg;
  cfg.total_bytes = 16 << 20;
  cfg.hugepages = false;
  auto m = Memory::create(cfg);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return std::move(m.value());
}

// Everything the pool can hand out, taken without caches (lcore none).
std::set<void*> drain_all(Mempool& pool) {
  set_lcore_id(kNoLcore);
  std::set<void*> out;
  while (void* o = pool.get()) EXPECT_TRUE(out.insert(o).second) << "object handed out twice";
  return out;
}

struct Saved {
  std::unique_ptr<Memory> mem;
  std::unique_ptr<Mempool> pool;
  std::vector<void*> in_use;
  std::vector<uint8_t> state;
};

// A pool with objects cached on three lcores and 40 held by the "application".
Saved make_saved(uint32_t cache) {
  Saved s;
  s.mem = make_memory();
  auto mp = Mempool::create(*s.mem, "pkts", 256, 100, cache, -1,
                            [](Mempool&, void* o, uint32_t i) { std::memset(o, static_cast<int>(i & 0xff), 100); });
  EXPECT_TRUE(mp.is_ok()) << mp.status().describe();
  s.pool = std::move(*mp);
  for (unsigned lcore : {0u, 3u, 7u}) {
    set_lcore_id(lcore);
    std::vector<void*> objs(20);
    EXPECT_TRUE(s.pool->get_bulk(objs.data(), 20));
    s.pool->put_bulk(objs.data(), 10);  // 10 go back into this lcore's cache
    s.in_use.insert(s.in_use.end(), objs.begin() + 10, objs.end());
  }
  set_lcore_id(kNoLcore);
  for (int i = 0; i < 10; i++) s.in_use.push_back(s.pool->get());
  EXPECT_TRUE(s.pool->save_state(s.state).is_ok());
  return s;
}

TEST(MempoolState, RestoredPoolHandsOutExactlyTheFreeObjectsAndWritesNone) {
  Saved s = make_saved(8);
  EXPECT_EQ(s.pool->available(), 256u - 40u);
  // The memory is the source's: snapshot it and check restore leaves every byte alone.
  std::vector<std::byte> before(static_cast<std::byte*>(s.pool->object(0)),
                                static_cast<std::byte*>(s.pool->object(255)) + 100);
  s.pool->release_objects();
  auto restored = Mempool::restore(*s.mem, s.state);
  ASSERT_TRUE(restored.is_ok()) << restored.status().describe();
  Mempool& pool = **restored;
  EXPECT_EQ(std::memcmp(before.data(), pool.object(0), before.size()), 0);
  EXPECT_EQ(pool.name(), "pkts");
  EXPECT_EQ(pool.count(), 256u);
  EXPECT_EQ(pool.cache_size(), 8u);
  EXPECT_EQ(pool.object(0), s.pool->object(0));
  EXPECT_EQ(pool.available(), 256u - 40u);
  EXPECT_EQ(Mempool::owner_of(s.in_use[0]), &pool);

  std::set<void*> free_objs = drain_all(pool);
  EXPECT_EQ(free_objs.size(), 256u - 40u);
  for (void* o : s.in_use) EXPECT_EQ(free_objs.count(o), 0u) << "an object in use was handed out";
  // The objects in use come back and the pool is whole.
  for (void* o : s.in_use) pool.put(o);
  for (void* o : free_objs) pool.put(o);
  EXPECT_EQ(pool.available(), 256u);
}

TEST(MempoolState, SourceKeepsWorkingAfterSave) {
  Saved s = make_saved(8);
  std::set<void*> free_objs = drain_all(*s.pool);
  EXPECT_EQ(free_objs.size(), 256u - 40u);
  for (void* o : free_objs) s.pool->put(o);
}

TEST(MempoolState, MbufPoolPointsEveryMbufAtTheRestoredPool) {
  auto mem = make_memory();
  auto mp = mbuf_pool_create(*mem, "mbufs", 64, 0);
  ASSERT_TRUE(mp.is_ok());
  std::unique_ptr<Mempool> source = std::move(*mp);
  set_lcore_id(kNoLcore);
  Mbuf* held = mbuf_alloc(*source);
  ASSERT_NE(held, nullptr);
  std::memcpy(mbuf_append(held, 5), "hello", 5);
  std::vector<uint8_t> state;
  ASSERT_TRUE(source->save_state(state).is_ok());
  source->release_objects();
  auto restored = mbuf_pool_restore(*mem, state);
  ASSERT_TRUE(restored.is_ok()) << restored.status().describe();
  Mempool& pool = **restored;
  for (uint32_t i = 0; i < pool.count(); i++) ASSERT_EQ(static_cast<Mbuf*>(pool.object(i))->pool, &pool);
  EXPECT_EQ(std::memcmp(held->data(), "hello", 5), 0);
  EXPECT_EQ(pool.available(), 63u);
  mbuf_free(held);  // goes back to the restored pool, found through the rewritten word
  EXPECT_EQ(pool.available(), 64u);
}

class MempoolBadState : public ::testing::Test {
 protected:
  void SetUp() override {
    s = make_saved(0);
    // The first restore of the test must not find the source pool.
    s.pool->release_objects();
  }
  void expect_refused(std::vector<uint8_t> bytes, const char* why) {
    auto r = Mempool::restore(*s.mem, bytes);
    EXPECT_FALSE(r.is_ok()) << why;
    if (!r) {
      EXPECT_EQ(r.status().code(), EINVAL) << why;
    }
  }
  // Offsets in the layout: magic 4, version 4, name len 4 + 4 bytes, count 4,
  // object size 8, stride 8, cache 4, base 8, free count 4, then indexes.
  static constexpr size_t kCount = 16, kBase = 40, kFreeCount = 48, kFirstIndex = 52;
  Saved s;
};

TEST_F(MempoolBadState, TheUndamagedStateRestores) { EXPECT_TRUE(Mempool::restore(*s.mem, s.state).is_ok()); }

TEST_F(MempoolBadState, EveryTruncationAndExtensionIsRefused) {
  for (size_t len = 0; len < s.state.size(); len++)
    expect_refused(std::vector<uint8_t>(s.state.begin(), s.state.begin() + static_cast<long>(len)), "truncated");
  auto longer = s.state;
  longer.push_back(0);
  expect_refused(longer, "trailing byte");
}

TEST_F(MempoolBadState, DamagedFieldsAreRefused) {
  auto bad = s.state;
  bad[0] ^= 1;
  expect_refused(bad, "magic");
  bad = s.state;
  bad[kCount] = 0, bad[kCount + 1] = 0;
  expect_refused(bad, "count 0");
  bad = s.state;
  uint64_t outside = 0x1000;
  std::memcpy(&bad[kBase], &outside, 8);
  expect_refused(bad, "objects outside runtime memory");
  bad = s.state;
  const MemArea* area = s.mem->area_of(s.pool->object(0));
  ASSERT_NE(area, nullptr);
  // Starts inside the area, runs past its end.
  uint64_t base = reinterpret_cast<uintptr_t>(area->va) + area->len - 64 * 128;
  std::memcpy(&bad[kBase], &base, 8);
  expect_refused(bad, "objects past the area");
  bad = s.state;
  uint32_t index = 256;
  std::memcpy(&bad[kFirstIndex], &index, 4);
  expect_refused(bad, "index out of range");
  bad = s.state;
  std::memcpy(&bad[kFirstIndex], &bad[kFirstIndex + 4], 4);
  expect_refused(bad, "repeated index");
  bad = s.state;
  uint32_t huge = 0xffffffff;
  std::memcpy(&bad[kFreeCount], &huge, 4);
  expect_refused(bad, "free count above count");
}

}  // namespace
}  // namespace uvio
