// Frames across a link, loopback, drops, mergeable buffers, indirect chains and
// interrupt suppression.
#include "test/emu/virtio_net/driver_harness.h"

namespace uvio::emu::virtio_net::testing {
namespace {

std::vector<std::byte> payload_of(const std::vector<std::byte>& packet) {
  return std::vector<std::byte>(packet.begin() + spec::kNetHdrSize, packet.end());
}

TEST(VirtioNetDatapath, FramesFromAArriveByteForByteOnB) {
  TestPort a("");
  TestPort b("");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up());
  ASSERT_TRUE(b.bring_up());
  b.post_rx(8, 2048);

  std::vector<std::vector<std::byte>> sent;
  for (uint32_t seq = 0; seq < 3; seq++) sent.push_back(make_frame(seq, 60 + 500 * seq));
  for (auto& f : sent) a.send(f, false);
  a.driver.kick(a.tx);

  EXPECT_EQ(a.model->poll(), 3u);
  EXPECT_EQ(b.model->poll(), 3u);

  for (auto& f : sent) {
    auto packet = b.receive();
    ASSERT_TRUE(packet.has_value());
    EXPECT_EQ(packet->size(), spec::kNetHdrSize + f.size());
    EXPECT_EQ(num_buffers(*packet), 1);
    EXPECT_EQ(payload_of(*packet), f);
  }
  EXPECT_FALSE(b.receive().has_value());

  // Every TX buffer came back, with length 0 (the device wrote nothing).
  for (int i = 0; i < 3; i++) {
    auto used = a.driver.next_used(a.tx);
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, 0u);
  }
  PortCounters ca = a.model->counters(), cb = b.model->counters();
  EXPECT_EQ(ca.tx_packets, 3u);
  EXPECT_EQ(ca.tx_bytes, 60u + 560 + 1060);
  EXPECT_EQ(cb.rx_packets, 3u);
  EXPECT_EQ(cb.rx_bytes, ca.tx_bytes);
  EXPECT_EQ(cb.rx_drops, 0u);
  EXPECT_GE(a.irq.count(TestPort::kTxVector), 1u);
  EXPECT_GE(b.irq.count(TestPort::kRxVector), 1u);
  EXPECT_EQ(b.irq.count(TestPort::kTxVector), 0u);
}

TEST(VirtioNetDatapath, TrafficFlowsBothWays) {
  TestPort a("");
  TestPort b("");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up());
  ASSERT_TRUE(b.bring_up());
  a.post_rx(4, 2048);
  b.post_rx(4, 2048);
  auto fa = make_frame(1, 100), fb = make_frame(2, 200);
  a.send(fa);
  b.send(fb);
  a.model->poll();
  b.model->poll();
  a.model->poll();
  auto at_b = b.receive();
  auto at_a = a.receive();
  ASSERT_TRUE(at_b && at_a);
  EXPECT_EQ(payload_of(*at_b), fa);
  EXPECT_EQ(payload_of(*at_a), fb);
}

TEST(VirtioNetDatapath, LoopbackReceivesItsOwnFrames) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(2, 1600);
  auto frame = make_frame(7, 1514);
  port.send(frame);
  port.model->poll();
  auto packet = port.receive();
  ASSERT_TRUE(packet.has_value());
  EXPECT_EQ(payload_of(*packet), frame);
  EXPECT_EQ(port.model->counters().rx_packets, 1u);
  EXPECT_EQ(port.model->counters().tx_packets, 1u);
}

TEST(VirtioNetDatapath, NoRxBuffersDropsAndCountsOnReceiver) {
  TestPort a("");
  TestPort b("");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up());
  ASSERT_TRUE(b.bring_up());
  a.send(make_frame(0, 64));
  a.send(make_frame(1, 64));
  a.model->poll();
  b.model->poll();
  EXPECT_EQ(a.model->counters().tx_packets, 2u);
  EXPECT_EQ(a.model->counters().tx_drops, 0u);
  EXPECT_EQ(b.model->counters().rx_drops, 2u);
  EXPECT_EQ(b.model->counters().rx_packets, 0u);

  // Buffers posted later receive the next frame, not the dropped ones.
  b.post_rx(1, 2048);
  auto next = make_frame(2, 64);
  a.send(next);
  a.model->poll();
  b.model->poll();
  auto packet = b.receive();
  ASSERT_TRUE(packet.has_value());
  EXPECT_EQ(payload_of(*packet), next);
}

TEST(VirtioNetDatapath, NoLinkDropsOnSender) {
  TestPort port("");
  ASSERT_TRUE(port.bring_up());
  port.send(make_frame(0, 64));
  port.model->poll();
  EXPECT_EQ(port.model->counters().tx_drops, 1u);
  EXPECT_EQ(port.model->counters().tx_packets, 0u);
  EXPECT_TRUE(port.driver.next_used(port.tx).has_value());
}

TEST(VirtioNetDatapath, OversizedAndRuntFramesAreTxErrors) {
  TestPort port("loopback=1,mtu=1500");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(4, 4096);
  port.send(make_frame(0, 1500 + 18 + 1));
  port.send(make_frame(1, 10));
  port.model->poll();
  EXPECT_EQ(port.model->counters().tx_errors, 2u);
  EXPECT_EQ(port.model->counters().rx_packets, 0u);
  EXPECT_FALSE(port.driver.status() & spec::kStatusNeedsReset);
}

TEST(VirtioNetDatapath, MergeableBuffersCarryOnePacketAcrossSeveral) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up(kBaseFeatures | spec::bit(spec::kFMrgRxbuf)));
  port.post_rx(8, 64);
  auto frame = make_frame(3, 200);  // 12 + 200 = 212 bytes: 64 + 64 + 64 + 20
  port.send(frame);
  port.model->poll();

  std::vector<std::byte> joined;
  auto first = port.receive();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(num_buffers(*first), 4);
  joined = payload_of(*first);
  for (uint32_t expected : {64u, 64u, 20u}) {
    auto more = port.receive();
    ASSERT_TRUE(more.has_value());
    EXPECT_EQ(more->size(), expected);
    joined.insert(joined.end(), more->begin(), more->end());
  }
  EXPECT_EQ(joined, frame);
}

TEST(VirtioNetDatapath, WithoutMergeableASmallBufferIsNotUsed) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(1, 64);
  port.send(make_frame(0, 200));
  port.model->poll();
  EXPECT_FALSE(port.receive().has_value());
  EXPECT_EQ(port.model->counters().rx_errors, 1u);
}

TEST(VirtioNetDatapath, ChainedAndIndirectDescriptorsAreGathered) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up(kBaseFeatures | spec::bit(spec::kFIndirectDesc)));
  port.post_rx(2, 2048);
  auto frame = make_frame(9, 300);

  // Header and frame in two chained descriptors.
  uint64_t hdr = port.mem.alloc(spec::kNetHdrSize);
  uint64_t body = port.mem.alloc(frame.size());
  ASSERT_TRUE(port.mem.write(body, frame.data(), frame.size()));
  port.driver.add_chain(port.tx, {{hdr, spec::kNetHdrSize, false}, {body, 100, false}, {body + 100, 200, false}});

  // The same through an indirect table of three entries.
  uint64_t table = port.mem.alloc(3 * 16, 16);
  spec::Desc entries[3] = {{hdr, spec::kNetHdrSize, spec::kDescFNext, 1},
                           {body, 150, spec::kDescFNext, 2},
                           {body + 150, 150, 0, 0}};
  ASSERT_TRUE(port.mem.write(table, entries, sizeof(entries)));
  uint16_t slot = port.tx.next_desc;
  port.driver.put_desc(port.tx, slot, spec::Desc{table, sizeof(entries), spec::kDescFIndirect, 0});
  port.tx.next_desc = static_cast<uint16_t>(slot + 1);
  port.driver.make_available(port.tx, slot);
  port.driver.kick(port.tx);

  port.model->poll();
  for (int i = 0; i < 2; i++) {
    auto packet = port.receive();
    ASSERT_TRUE(packet.has_value()) << i;
    EXPECT_EQ(payload_of(*packet), frame);
  }
  EXPECT_FALSE(port.driver.status() & spec::kStatusNeedsReset);
}

TEST(VirtioNetDatapath, NoKickNoTransmit) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(1, 2048);
  port.send(make_frame(0, 64), /*do_kick=*/false);
  EXPECT_EQ(port.model->poll(), 0u);
  port.driver.kick(port.tx);
  EXPECT_GT(port.model->poll(), 0u);
  // The device consumed the kick: its slot reads idle again.
  uint16_t slot = 0;
  std::memcpy(&slot, port.driver.bar0().data() + VirtioNetModel::kNotifyOffset + 4, 2);
  EXPECT_EQ(slot, VirtioNetModel::kNotifyIdle);
}

TEST(VirtioNetDatapath, TrappedNotifyWriteAlsoKicks) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(1, 2048);
  port.send(make_frame(0, 64), /*do_kick=*/false);
  port.model->bar_write(0, VirtioNetModel::kNotifyOffset + 4, 1, 2);
  port.model->poll();
  EXPECT_EQ(port.model->counters().rx_packets, 1u);
}

TEST(VirtioNetDatapath, AvailFlagSuppressesInterrupts) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up());
  port.post_rx(4, 2048);
  port.mem.set<uint16_t>(port.tx.avail, spec::kAvailFNoInterrupt);
  port.send(make_frame(0, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 0u);
  EXPECT_EQ(port.irq.count(TestPort::kRxVector), 1u);
  EXPECT_TRUE(port.driver.next_used(port.tx).has_value());  // completed all the same

  port.mem.set<uint16_t>(port.tx.avail, 0);
  port.send(make_frame(1, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 1u);
}

TEST(VirtioNetDatapath, EventIndexSuppressesUntilTheAskedEntry) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.bring_up(kBaseFeatures | spec::bit(spec::kFEventIdx)));
  port.post_rx(8, 2048);
  // used_event (after avail ring[size]): interrupt when used idx passes 2, i.e. at the 3rd.
  uint64_t used_event = port.tx.avail + 4 + 2u * port.tx.size;
  port.mem.set<uint16_t>(used_event, 2);
  for (uint32_t i = 0; i < 2; i++) {
    port.send(make_frame(i, 64));
    port.model->poll();
  }
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 0u);
  port.send(make_frame(2, 64));
  port.model->poll();
  EXPECT_EQ(port.irq.count(TestPort::kTxVector), 1u);
  // The device asks to be kicked for the next buffer (avail_event after used ring[size]).
  uint64_t avail_event = port.tx.used + 4 + 8u * port.tx.size;
  EXPECT_EQ(port.mem.get<uint16_t>(avail_event), 3);
}

TEST(VirtioNetDatapath, MsixVectorNoneStillSetsIsr) {
  TestPort port("loopback=1");
  ASSERT_TRUE(port.driver.negotiate(kBaseFeatures));
  port.rx = port.driver.setup_queue(0, 64, spec::kNoVector);
  port.tx = port.driver.setup_queue(1, 64, spec::kNoVector);
  port.driver.driver_ok();
  port.post_rx(1, 2048);
  port.send(make_frame(0, 64));
  port.model->poll();
  EXPECT_TRUE(port.irq.vectors.empty());
  EXPECT_EQ(port.model->bar_read(0, VirtioNetModel::kIsrOffset, 1) & spec::kIsrQueue, spec::kIsrQueue);
  EXPECT_EQ(port.model->bar_read(0, VirtioNetModel::kIsrOffset, 1), 0u);  // read clears
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
