// Malformed descriptor chains from the driver, and the faults the device injects for
// driver hardening tests.
#include "test/emu/virtio_net/driver_harness.h"

namespace uvio::emu::virtio_net::testing {
namespace {

struct MalformedCase {
  const char* name;
  // Puts a broken chain on the TX queue of a running port (features include INDIRECT).
  void (*build)(TestPort& port);
};

void needs_reset_after(TestPort& port) {
  uint8_t generation = port.driver.r8(spec::common::kConfigGeneration);
  port.model->poll();
  EXPECT_TRUE(port.driver.status() & spec::kStatusNeedsReset);
  EXPECT_GE(port.model->counters().tx_errors, 1u);
  EXPECT_EQ(port.irq.count(TestPort::kConfigVector), 1u);
  EXPECT_NE(port.driver.r8(spec::common::kConfigGeneration), generation);
  // A broken device does no more work until reset, and a reset brings it back.
  port.send(make_frame(0, 64));
  EXPECT_EQ(port.model->poll(), 0u);
  port.driver.w8(spec::common::kDeviceStatus, 0);
  EXPECT_EQ(port.driver.status(), 0);
}

uint64_t packet(TestPort& port) {
  uint64_t at = port.mem.alloc(spec::kNetHdrSize + 64);
  return at;
}

void put_and_kick(TestPort& port, uint16_t head) {
  port.driver.make_available(port.tx, head);
  port.driver.kick(port.tx);
}

const MalformedCase kCases[] = {
    {"LoopingChain",
     [](TestPort& p) {
       uint64_t at = packet(p);
       p.driver.put_desc(p.tx, 0, {at, 76, spec::kDescFNext, 1});
       p.driver.put_desc(p.tx, 1, {at, 76, spec::kDescFNext, 0});
       put_and_kick(p, 0);
     }},
    {"NextIndexOutOfRange",
     [](TestPort& p) {
       p.driver.put_desc(p.tx, 0, {packet(p), 76, spec::kDescFNext, 64});
       put_and_kick(p, 0);
     }},
    {"HeadOutOfRange", [](TestPort& p) { put_and_kick(p, 64); }},
    {"BufferOutsideMemory",
     [](TestPort& p) {
       p.driver.put_desc(p.tx, 0, {0xdead0000000, 76, 0, 0});
       put_and_kick(p, 0);
     }},
    {"LengthOverflows32Bits",
     [](TestPort& p) {
       uint64_t at = packet(p);
       p.driver.put_desc(p.tx, 0, {at, 0xFFFFFFF0, spec::kDescFNext, 1});
       p.driver.put_desc(p.tx, 1, {at, 0x100, 0, 0});
       put_and_kick(p, 0);
     }},
    {"ReadableAfterWritable",
     [](TestPort& p) {
       uint64_t at = packet(p);
       p.driver.put_desc(p.tx, 0, {at, 12, spec::kDescFWrite | spec::kDescFNext, 1});
       p.driver.put_desc(p.tx, 1, {at, 64, 0, 0});
       put_and_kick(p, 0);
     }},
    {"IndirectWithNext",
     [](TestPort& p) {
       uint64_t table = p.mem.alloc(16, 16);
       p.driver.put_desc(p.tx, 0, {table, 16, spec::kDescFIndirect | spec::kDescFNext, 1});
       put_and_kick(p, 0);
     }},
    {"IndirectBadLength",
     [](TestPort& p) {
       uint64_t table = p.mem.alloc(32, 16);
       p.driver.put_desc(p.tx, 0, {table, 24, spec::kDescFIndirect, 0});
       put_and_kick(p, 0);
     }},
    {"NestedIndirect",
     [](TestPort& p) {
       uint64_t table = p.mem.alloc(16, 16);
       p.mem.set(table, spec::Desc{table, 16, spec::kDescFIndirect, 0});
       p.driver.put_desc(p.tx, 0, {table, 16, spec::kDescFIndirect, 0});
       put_and_kick(p, 0);
     }},
    {"IndirectLoop",
     [](TestPort& p) {
       uint64_t at = packet(p);
       uint64_t table = p.mem.alloc(32, 16);
       spec::Desc entries[2] = {{at, 12, spec::kDescFNext, 1}, {at, 64, spec::kDescFNext, 0}};
       ASSERT_TRUE(p.mem.write(table, entries, sizeof(entries)));
       p.driver.put_desc(p.tx, 0, {table, 32, spec::kDescFIndirect, 0});
       put_and_kick(p, 0);
     }},
    {"AvailIndexJumpsPastQueueSize",
     [](TestPort& p) {
       p.mem.set<uint16_t>(p.tx.avail + 2, 65);
       p.driver.kick(p.tx);
     }},
};

class VirtioNetMalformed : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(VirtioNetMalformed, SetsNeedsResetAndCountsAnError) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up(kBaseFeatures | spec::bit(spec::kFIndirectDesc)));
  GetParam().build(port);
  needs_reset_after(port);
}

INSTANTIATE_TEST_SUITE_P(Chains, VirtioNetMalformed, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(VirtioNetHardening, IndirectWithoutNegotiationNeedsReset) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  uint64_t table = port.mem.alloc(16, 16);
  port.driver.put_desc(port.tx, 0, {table, 16, spec::kDescFIndirect, 0});
  put_and_kick(port, 0);
  needs_reset_after(port);
}

TEST(VirtioNetHardening, RxBufferOutsideMemoryNeedsReset) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  port.driver.put_desc(port.rx, 0, {0xbad00000000, 2048, spec::kDescFWrite, 0});
  port.driver.make_available(port.rx, 0);
  port.rx.next_desc = 1;
  port.send(make_frame(0, 64));
  port.model->poll();
  EXPECT_TRUE(port.driver.status() & spec::kStatusNeedsReset);
  EXPECT_EQ(port.model->counters().rx_errors, 1u);
}

// ---- injected faults -------------------------------------------------------------------

TEST(VirtioNetFaults, UsedIdOutOfRangeOnce) {
  TestPort port("loopback=1,faults=used-id-range");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(2, 2048);
  port.send(make_frame(0, 64));
  port.send(make_frame(1, 64));
  port.model->poll();
  auto first = port.driver.next_used(port.tx);
  auto second = port.driver.next_used(port.tx);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->id, port.tx.size);  // beyond the queue
  EXPECT_EQ(second->id, 1u);           // then back to normal
}

TEST(VirtioNetFaults, UsedIdRepeated) {
  TestPort port("loopback=1,faults=used-id-repeat");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(2, 2048);
  uint16_t head = port.send(make_frame(0, 64));
  port.model->poll();
  auto first = port.driver.next_used(port.tx);
  auto second = port.driver.next_used(port.tx);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->id, head);
  EXPECT_EQ(second->id, head);
  EXPECT_FALSE(port.driver.next_used(port.tx).has_value());
}

TEST(VirtioNetFaults, UsedLengthBeyondBuffer) {
  TestPort port("loopback=1,faults=used-len");
  ASSERT_TRUE(port.bring_up());
  port.send(make_frame(0, 64));
  port.model->poll();
  auto used = port.driver.next_used(port.tx);
  ASSERT_TRUE(used.has_value());
  EXPECT_GT(used->len, 0u);  // a TX buffer has no device-writable bytes at all
}

TEST(VirtioNetFaults, ConfigGenerationMovesUnderTheDriver) {
  TestPort port("faults=config-change");
  ASSERT_TRUE(port.bring_up());
  // §2.5.1's read loop: generation, fields, generation; the fault makes one pass unstable.
  int passes = 0;
  for (;;) {
    passes++;
    uint8_t before = port.driver.r8(spec::common::kConfigGeneration);
    auto mac = port.driver.config_mac();
    uint8_t after = port.driver.r8(spec::common::kConfigGeneration);
    EXPECT_EQ(mac[0], 0x52);
    if (before == after) break;
    ASSERT_LT(passes, 5);
  }
  EXPECT_EQ(passes, 2);
  EXPECT_EQ(port.irq.count(TestPort::kConfigVector), 1u);
}

TEST(VirtioNetFaults, OffByDefault) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  uint16_t head = port.send(make_frame(0, 64));
  port.model->poll();
  auto used = port.driver.next_used(port.tx);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 0u);
  EXPECT_FALSE(port.driver.next_used(port.tx).has_value());
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
