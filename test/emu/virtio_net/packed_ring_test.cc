// The packed ring format (VIRTIO_F_RING_PACKED, §2.8): traffic across many wraps,
// chains, indirect tables, event suppression, malformed rings and migration.
#include "test/emu/virtio_net/driver_harness.h"

namespace uvio::emu::virtio_net::testing {
namespace {

constexpr uint64_t kPacked = kBaseFeatures | spec::bit(spec::kFRingPacked);

std::vector<std::byte> payload_of(const std::vector<std::byte>& packet) {
  return std::vector<std::byte>(packet.begin() + spec::kNetHdrSize, packet.end());
}

TEST(VirtioNetPacked, OfferedOnlyWhenAsked) {
  TestPort plain("");
  EXPECT_FALSE(plain.driver.negotiate(kPacked));
  TestPort port("packed=1");
  EXPECT_TRUE(port.driver.device_features() & spec::bit(spec::kFRingPacked));
  EXPECT_TRUE(port.driver.negotiate(kPacked));
}

TEST(VirtioNetPacked, LoopbackAcrossManyWrapsWithOddQueueSize) {
  TestPort port("loopback=1,packed=1");
  ASSERT_TRUE(port.bring_up(kPacked, 6));  // packed sizes need not be powers of two
  for (uint32_t seq = 0; seq < 40; seq++) {
    port.post_rx(1, 2048);
    auto frame = make_frame(seq, 64 + seq * 11);
    // Header and frame in two descriptors, so chains straddle the ring's end.
    uint64_t hdr = port.mem.alloc(spec::kNetHdrSize);
    uint64_t body = port.mem.alloc(frame.size());
    ASSERT_TRUE(port.mem.write(body, frame.data(), frame.size()));
    uint16_t id = port.driver.add_chain(port.tx, {{hdr, spec::kNetHdrSize, false},
                                                  {body, static_cast<uint32_t>(frame.size()), false}});
    port.driver.kick(port.tx);
    port.model->poll();
    auto used = port.driver.next_used(port.tx);
    ASSERT_TRUE(used.has_value()) << seq;
    EXPECT_EQ(used->id, id);
    auto packet = port.receive();
    ASSERT_TRUE(packet.has_value()) << seq;
    EXPECT_EQ(payload_of(*packet), frame) << seq;
  }
  EXPECT_EQ(port.model->counters().rx_packets, 40u);
  EXPECT_FALSE(port.driver.status() & spec::kStatusNeedsReset);
}

TEST(VirtioNetPacked, BackToBackBatchesAndMergeableBuffers) {
  TestPort a("packed=1");
  TestPort b("packed=1");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up(kPacked, 16));
  ASSERT_TRUE(b.bring_up(kPacked | spec::bit(spec::kFMrgRxbuf), 16));
  b.post_rx(12, 256);
  std::vector<std::vector<std::byte>> sent;
  for (uint32_t seq = 0; seq < 3; seq++) {
    sent.push_back(make_frame(seq, 300));  // 312 bytes: two 256-byte buffers each
    a.send(sent.back(), false);
  }
  a.driver.kick(a.tx);
  a.model->poll();
  b.model->poll();
  for (auto& f : sent) {
    auto first = b.receive();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(num_buffers(*first), 2);
    auto second = b.receive();
    ASSERT_TRUE(second.has_value());
    auto joined = payload_of(*first);
    joined.insert(joined.end(), second->begin(), second->end());
    EXPECT_EQ(joined, f);
  }
  EXPECT_EQ(b.model->counters().rx_packets, 3u);
}

TEST(VirtioNetPacked, NotEnoughBuffersDropsAndLeavesThemForTheNextFrame) {
  TestPort port("loopback=1,packed=1");
  ASSERT_TRUE(port.bring_up(kPacked | spec::bit(spec::kFMrgRxbuf), 8));
  port.post_rx(1, 64);
  port.send(make_frame(0, 200));  // needs four 64-byte buffers
  port.model->poll();
  EXPECT_EQ(port.model->counters().rx_drops, 1u);
  EXPECT_FALSE(port.receive().has_value());
  auto small = make_frame(1, 40);
  port.send(small);
  port.model->poll();
  auto packet = port.receive();
  ASSERT_TRUE(packet.has_value());
  EXPECT_EQ(payload_of(*packet), small);
}

TEST(VirtioNetPacked, IndirectTableIsReadInOrder) {
  TestPort port("loopback=1,packed=1");
  ASSERT_TRUE(port.bring_up(kPacked | spec::bit(spec::kFIndirectDesc), 8));
  port.post_rx(1, 2048);
  auto frame = make_frame(4, 120);
  uint64_t hdr = port.mem.alloc(spec::kNetHdrSize);
  uint64_t body = port.mem.alloc(frame.size());
  ASSERT_TRUE(port.mem.write(body, frame.data(), frame.size()));
  spec::PackedDesc table[3] = {{hdr, spec::kNetHdrSize, 0, 0}, {body, 20, 0, 0}, {body + 20, 100, 0, 0}};
  uint64_t table_at = port.mem.alloc(sizeof(table), 16);
  ASSERT_TRUE(port.mem.write(table_at, table, sizeof(table)));
  port.driver.add_packed_chain(port.tx, {{table_at, sizeof(table), false}}, spec::kDescFIndirect);
  port.driver.kick(port.tx);
  port.model->poll();
  auto packet = port.receive();
  ASSERT_TRUE(packet.has_value());
  EXPECT_EQ(payload_of(*packet), frame);
}

TEST(VirtioNetPacked, DriverEventSuppression) {
  TestPort port("loopback=1,packed=1");
  ASSERT_TRUE(port.bring_up(kPacked | spec::bit(spec::kFEventIdx), 8));
  port.post_rx(8, 2048);
  port.mem.set<uint16_t>(port.tx.avail + spec::kEventSuppressFlagsOffset, spec::kEventFlagDisable);
  port.send(make_frame(0, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 0u);

  // DESC mode: interrupt once the used slot 2 (this lap) has been written.
  port.mem.set<uint16_t>(port.tx.avail, 2 | 1u << 15);
  port.mem.set<uint16_t>(port.tx.avail + spec::kEventSuppressFlagsOffset, spec::kEventFlagDesc);
  port.send(make_frame(1, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 0u);  // used slot 1
  port.send(make_frame(2, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 1u);  // used slot 2

  port.mem.set<uint16_t>(port.tx.avail + spec::kEventSuppressFlagsOffset, spec::kEventFlagEnable);
  port.send(make_frame(3, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 2u);
}

TEST(VirtioNetPacked, EndlessChainNeedsReset) {
  TestPort port("loopback=1,packed=1");
  ASSERT_TRUE(port.bring_up(kPacked, 4));
  uint64_t at = port.mem.alloc(64);
  // Every slot says NEXT: the chain would run around the ring forever.
  for (uint16_t slot = 0; slot < 4; slot++)
    port.mem.set(port.tx.desc + 16u * slot,
                 spec::PackedDesc{at, 64, 0, static_cast<uint16_t>(spec::kDescFNext | spec::kPackedDescFAvail)});
  port.driver.kick(port.tx);
  port.model->poll();
  EXPECT_TRUE(port.driver.status() & spec::kStatusNeedsReset);
  EXPECT_EQ(port.model->counters().tx_errors, 1u);
}

TEST(VirtioNetPacked, SaveLoadContinuesIdentically) {
  TestPort a("loopback=1,packed=1");
  ASSERT_TRUE(a.bring_up(kPacked | spec::bit(spec::kFMrgRxbuf), 5));
  for (uint32_t seq = 0; seq < 7; seq++) {  // past one lap of the ring
    a.post_rx(1, 512);
    a.send(make_frame(seq, 100));
    a.model->poll();
    while (a.driver.next_used(a.tx)) {
    }
    ASSERT_TRUE(a.receive().has_value());
  }
  std::vector<uint8_t> state;
  a.model->save_state(state);

  TestPort b("loopback=1,packed=1");
  b.mem = a.mem;
  b.rx = a.rx;
  b.tx = a.tx;
  b.rx_buffers = a.rx_buffers;
  ASSERT_TRUE(b.model->load_state(state).is_ok());
  for (TestPort* p : {&a, &b}) {
    for (uint32_t seq = 7; seq < 12; seq++) {
      p->post_rx(1, 512);
      p->send(make_frame(seq, 100 + seq));
      p->model->poll();
      while (p->driver.next_used(p->tx)) {
      }
      auto packet = p->receive();
      ASSERT_TRUE(packet.has_value());
      EXPECT_EQ(payload_of(*packet), make_frame(seq, 100 + seq));
    }
  }
  EXPECT_TRUE(a.mem.bytes() == b.mem.bytes());
  EXPECT_EQ(a.model->counters().rx_packets, b.model->counters().rx_packets);
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
