#include <uvio/mem.h>

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <fstream>
#include <set>

namespace uvio {
namespace {

MemConfig small_config(size_t bytes = 8 << 20) {
  MemConfig cfg;
  cfg.total_bytes = bytes;
  cfg.hugepages = false;
  cfg.file_prefix = "memtest";
  return cfg;
}

TEST(Memory, NoHugeAreaIsOneFdBackedMapping) {
  auto mem = Memory::create(small_config());
  ASSERT_TRUE(mem.is_ok()) << mem.status().message();
  auto areas = (*mem)->areas();
  ASSERT_EQ(areas.size(), 1u);
  const MemArea* a = areas[0];
  EXPECT_EQ(a->len, 8u << 20);
  EXPECT_EQ(a->page_size, 4096u);
  EXPECT_FALSE(a->hugepages);
  ASSERT_GE(a->fd, 0);
  struct stat st;
  ASSERT_EQ(fstat(a->fd, &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), a->len);
  // The memory is shared with its fd: what another process maps through the fd is what we wrote.
  a->va[12345] = std::byte{0x5a};
  unsigned char b = 0;
  ASSERT_EQ(pread(a->fd, &b, 1, 12345), 1);
  EXPECT_EQ(b, 0x5a);
  EXPECT_EQ((*mem)->iova_of(a->va + 100), a->iova + 100);
  EXPECT_EQ((*mem)->iova_of(&b), kBadIova);
}

TEST(Memory, HeapAlignsSplitsAndCoalesces) {
  auto mem = Memory::create(small_config(1 << 20));
  ASSERT_TRUE(mem.is_ok());
  Memory& m = **mem;
  MemStats before = m.stats();
  void* a = m.alloc(100, 4096);
  void* b = m.alloc(1000, 64);
  void* c = m.alloc(5000, 256);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 4096, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c) % 256, 0u);
  EXPECT_TRUE(m.contains(b));
  EXPECT_LT(m.stats().free, before.free);
  m.free(b);
  m.free(a);
  m.free(c);
  MemStats after = m.stats();
  EXPECT_EQ(after.free, before.free);
  EXPECT_EQ(after.largest_free, before.largest_free) << "freed blocks must merge back into one";
  EXPECT_EQ(m.alloc(2 << 20), nullptr) << "larger than all memory";
  EXPECT_EQ(m.alloc(64, 3), nullptr) << "alignment must be a power of two";
}

TEST(Memory, MemzonesAreNamedZeroedAndUnique) {
  auto mem = Memory::create(small_config(1 << 20));
  ASSERT_TRUE(mem.is_ok());
  Memory& m = **mem;
  auto z = m.memzone_reserve("state", 4096, 4096);
  ASSERT_TRUE(z.is_ok()) << z.status().message();
  EXPECT_EQ(m.memzone_lookup("state"), z.value());
  EXPECT_EQ(static_cast<unsigned char*>(z.value()->addr)[10], 0);
  EXPECT_EQ(z.value()->iova, m.iova_of(z.value()->addr));
  auto dup = m.memzone_reserve("state", 64);
  ASSERT_FALSE(dup.is_ok());
  EXPECT_EQ(dup.status().code(), EEXIST);
  auto huge = m.memzone_reserve("big", 64 << 20);
  ASSERT_FALSE(huge.is_ok());
  EXPECT_NE(huge.status().message().find("largest free block"), std::string::npos);
  EXPECT_TRUE(m.memzone_free("state").is_ok());
  EXPECT_EQ(m.memzone_lookup("state"), nullptr);
  EXPECT_EQ(m.memzone_free("state").code(), ENOENT);
}

TEST(Memory, ExtendNotifiesListenersAndStaysContiguous) {
  auto mem = Memory::create(small_config(1 << 20));
  ASSERT_TRUE(mem.is_ok());
  Memory& m = **mem;
  std::vector<uint32_t> seen;
  int id = m.add_listener([&](const MemArea& a) { seen.push_back(a.id); }, true);
  ASSERT_EQ(seen, std::vector<uint32_t>{0});
  auto added = m.extend(1 << 20);
  ASSERT_TRUE(added.is_ok());
  EXPECT_EQ(seen, (std::vector<uint32_t>{0, 1}));
  auto areas = m.areas();
  EXPECT_EQ(areas[0]->va + areas[0]->len, areas[1]->va) << "areas come from one reservation";
  EXPECT_NE(areas[0]->fd, areas[1]->fd);
  m.remove_listener(id);
  ASSERT_TRUE(m.extend(1 << 20).is_ok());
  EXPECT_EQ(seen.size(), 2u);
}

TEST(Memory, AssignIovaOnlyBeforeUse) {
  auto mem = Memory::create(small_config(1 << 20));
  ASSERT_TRUE(mem.is_ok());
  Memory& m = **mem;
  ASSERT_TRUE(m.assign_iova(0, 0x100000).is_ok());
  void* p = m.alloc(64);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(m.iova_of(p), 0x100000 + (static_cast<std::byte*>(p) - m.areas()[0]->va));
  EXPECT_EQ(m.assign_iova(0, 0x200000).code(), EBUSY);
  EXPECT_EQ(m.assign_iova(9, 0).code(), ENOENT);
}

// Sanitizers (and other mappings) can hold the preferred address range; the areas must
// then still be aligned for 2 MiB and 1 GiB pages.
TEST(Memory, AreasStayHugepageAlignedWhenThePreferredRangeIsTaken) {
  void* squat = mmap(reinterpret_cast<void*>(0x1000000000ull), 4096, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  auto mem = Memory::create(small_config(1 << 20));
  ASSERT_TRUE(mem.is_ok()) << mem.status().message();
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*mem)->areas()[0]->va) % (1ull << 30), 0u);
  if (squat != MAP_FAILED) munmap(squat, 4096);
}

long free_hugepages() {
  std::ifstream in("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  long v = 0;
  in >> v;
  return v;
}

TEST(Memory, ShortHugepagesSayWhatToDo) {
  MemConfig cfg;
  cfg.total_bytes = size_t(free_hugepages() + 4) * (2 << 20);
  cfg.hugepage_size = 2 << 20;
  auto mem = Memory::create(cfg);
  ASSERT_FALSE(mem.is_ok());
  EXPECT_EQ(mem.status().code(), ENOMEM);
  EXPECT_NE(mem.status().message().find("nr_hugepages"), std::string::npos) << mem.status().message();
  EXPECT_NE(mem.status().message().find("--no-huge"), std::string::npos);
}

TEST(Memory, HugepageAreaWhenHugepagesAreReserved) {
  if (free_hugepages() < 4) GTEST_SKIP() << "no free 2 MiB hugepages reserved";
  MemConfig cfg;
  cfg.total_bytes = 4 << 20;
  cfg.hugepage_size = 2 << 20;
  auto mem = Memory::create(cfg);
  ASSERT_TRUE(mem.is_ok()) << mem.status().message();
  const MemArea* a = (*mem)->areas()[0];
  EXPECT_TRUE(a->hugepages);
  EXPECT_EQ(a->page_size, 2u << 20);
  EXPECT_EQ(a->len, 4u << 20);
}

}  // namespace
}  // namespace uvio
