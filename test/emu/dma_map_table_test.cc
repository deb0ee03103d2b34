// The server's table of client DMA mappings: what a client's DMA_MAP may ask for.
#include "emu/dma_map_table.h"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

namespace uvio::emu {
namespace {

int memfd_of(size_t bytes) {
  int fd = ::memfd_create("dma-map-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
  return fd;
}

// Found in review while writing the vfio-user server fuzz target: a mapping that
// reaches past the end of the client's file would map, then SIGBUS the server on the
// device's first access there.
TEST(DmaMapTable, RefusesAMappingBeyondTheEndOfTheClientsFile) {
  DmaMapTable t;
  // Each at its own IOVA, so no refusal comes from an overlap instead.
  EXPECT_FALSE(t.map(0x100000, 2 * 4096, memfd_of(4096), 0, true, true));
  EXPECT_FALSE(t.map(0x200000, 4096, memfd_of(4096), 4096, true, true));
  EXPECT_FALSE(t.map(0x300000, 4096, memfd_of(4096), ~uint64_t{0} - 4095, true, true));
  EXPECT_TRUE(t.ranges().empty());
}

TEST(DmaMapTable, MapsWhatTheFileHoldsAndReadsItBack) {
  DmaMapTable t;
  int fd = memfd_of(2 * 4096);
  int keep = ::dup(fd);
  ASSERT_TRUE(t.map(0x200000, 4096, fd, 4096, true, true));
  uint32_t v = 0x5a5aa5a5;
  ASSERT_EQ(::pwrite(keep, &v, sizeof(v), 4096 + 8), static_cast<ssize_t>(sizeof(v)));
  uint32_t back = 0;
  EXPECT_TRUE(t.read(0x200000 + 8, &back, sizeof(back)));
  EXPECT_EQ(back, v);
  EXPECT_FALSE(t.read(0x200000 + 4096, &back, sizeof(back)));  // beyond the mapping
  ::close(keep);
}

}  // namespace
}  // namespace uvio::emu
