// Memory::save_state / load_state: the DMA heap and memzones move; bad input changes nothing.
#include <uvio/mem.h>

#include <gtest/gtest.h>

#include <cstring>

namespace uvio {
namespace {

std::unique_ptr<Memory> make_memory(size_t bytes = 4u << 20) {
  MemConfig cfg;
  cfg.total_bytes = bytes;
  cfg.hugepages = false;
  cfg.file_prefix = "mem-state-test";
  auto mem = Memory::create(cfg);
  EXPECT_TRUE(mem) << mem.status().message();
  return std::move(mem.value());
}

TEST(MemState, RoundTripRestoresHeapAndZones) {
  auto src = make_memory();
  void* a = src->alloc(1000);
  void* b = src->alloc(5000, 4096);
  auto z = src->memzone_reserve("zone.one", 12345, 256);
  ASSERT_TRUE(z);
  void* zone_addr = (*z)->addr;  // load_state replaces the Memzone objects
  src->free(a);
  std::vector<uint8_t> saved;
  ASSERT_TRUE(src->save_state(saved));
  MemStats before = src->stats();

  // Loading into the same Memory (the same layout a destination has) gives back the state:
  // allocate after saving, load, and the heap is as saved again.
  void* extra = src->alloc(100000);
  ASSERT_NE(extra, nullptr);
  ASSERT_TRUE(src->memzone_reserve("zone.two", 64));
  Status st = src->load_state(saved);
  ASSERT_TRUE(st) << st.message();
  EXPECT_EQ(src->stats().free, before.free);
  EXPECT_EQ(src->memzone_lookup("zone.two"), nullptr);
  const Memzone* one = src->memzone_lookup("zone.one");
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->addr, zone_addr);
  EXPECT_EQ(one->len, 12345u);
  EXPECT_EQ(one->iova, src->iova_of(one->addr));
  // b is still a live allocation of the restored heap: freeing it gives its block back.
  size_t free_before = src->stats().free;
  src->free(b);
  EXPECT_GE(src->stats().free, free_before + 5000);
}

TEST(MemState, RefusesBadInputAndKeepsState) {
  auto mem = make_memory();
  ASSERT_TRUE(mem->memzone_reserve("keep", 4096));
  std::vector<uint8_t> good;
  ASSERT_TRUE(mem->save_state(good));
  MemStats before = mem->stats();

  auto refused = [&](std::vector<uint8_t> bad, const char* what) {
    Status st = mem->load_state(bad);
    EXPECT_FALSE(st) << what;
    EXPECT_EQ(mem->stats().free, before.free) << what;
    EXPECT_NE(mem->memzone_lookup("keep"), nullptr) << what;
  };
  // Every truncation is refused.
  for (size_t n = 0; n < good.size(); n += 3) refused(std::vector<uint8_t>(good.begin(), good.begin() + n), "truncated");
  // Trailing bytes.
  auto longer = good;
  longer.push_back(0);
  refused(longer, "trailing");
  // Bad magic, version, area length.
  auto b1 = good;
  b1[0] ^= 1;
  refused(b1, "magic");
  auto b2 = good;
  b2[4] = 9;
  refused(b2, "version");
  auto b3 = good;
  b3[12 + 4 + 8] ^= 0x10;  // the area's length
  refused(b3, "area length");
  // Flip each byte in turn: whatever still parses must describe a consistent heap.
  for (size_t i = 0; i < good.size(); i++) {
    auto f = good;
    f[i] ^= 0x80;
    Status st = mem->load_state(f);
    if (st) {
      // Accepted: it must still be a heap whose blocks tile the area (stats stay sane).
      MemStats s = mem->stats();
      EXPECT_LE(s.free, s.total) << i;
      ASSERT_TRUE(mem->load_state(good));
    }
  }
  EXPECT_TRUE(mem->load_state(good));
}

TEST(MemState, RefusesAnotherLayout) {
  auto small = make_memory(4u << 20);
  std::vector<uint8_t> saved;
  ASSERT_TRUE(small->save_state(saved));
  small.reset();
  auto big = make_memory(8u << 20);
  Status st = big->load_state(saved);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("area"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace uvio
