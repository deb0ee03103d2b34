// The control virtqueue (§5.1.6.5): multiqueue, MAC and RX mode commands.
#include "test/emu/virtio_net/driver_harness.h"

namespace uvio::emu::virtio_net::testing {
namespace {

constexpr uint64_t kCtrlFeatures = kBaseFeatures | spec::bit(spec::kFCtrlVq) | spec::bit(spec::kFCtrlRx) |
                                   spec::bit(spec::kFCtrlMacAddr);

// Sends one command and returns the ack byte the device wrote (0xEE if none).
uint8_t command(TestPort& port, DriverQueue& ctrl, uint8_t cls, uint8_t cmd, std::vector<uint8_t> data) {
  std::vector<uint8_t> out{cls, cmd};
  out.insert(out.end(), data.begin(), data.end());
  uint64_t cmd_at = port.mem.alloc(out.size());
  uint64_t ack_at = port.mem.alloc(1);
  EXPECT_TRUE(port.mem.write(cmd_at, out.data(), out.size()));
  port.mem.set<uint8_t>(ack_at, 0xEE);
  port.driver.add_chain(ctrl, {{cmd_at, static_cast<uint32_t>(out.size()), false}, {ack_at, 1, true}});
  port.driver.kick(ctrl);
  port.model->poll();
  auto used = port.driver.next_used(ctrl);
  EXPECT_TRUE(used.has_value());
  if (used) {
    EXPECT_EQ(used->len, 1u);
  }
  return port.mem.get<uint8_t>(ack_at);
}

TEST(VirtioNetControl, MqPairsSetChangesActivePairs) {
  TestPort port("queues=4");
  ASSERT_TRUE(port.driver.negotiate(kCtrlFeatures | spec::bit(spec::kFMq)));
  port.rx = port.driver.setup_queue(0, 64, 1);
  port.tx = port.driver.setup_queue(1, 64, 2);
  DriverQueue ctrl = port.driver.setup_queue(8, 16, 9);  // 2N with MQ
  port.driver.driver_ok();
  EXPECT_EQ(port.model->active_queue_pairs(), 1);

  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {3, 0}), spec::kCtrlOk);
  EXPECT_EQ(port.model->active_queue_pairs(), 3);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {5, 0}), spec::kCtrlErr);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {0, 0}), spec::kCtrlErr);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {4}), spec::kCtrlErr);  // short
  EXPECT_EQ(port.model->active_queue_pairs(), 3);
  EXPECT_EQ(command(port, ctrl, 99, 0, {}), spec::kCtrlErr);
  EXPECT_GE(port.irq.count(9), 1u);
}

TEST(VirtioNetControl, WithoutMqTheControlQueueIsQueueTwoAndMqIsRefused) {
  TestPort port("queues=4");
  ASSERT_TRUE(port.driver.negotiate(kCtrlFeatures));
  port.rx = port.driver.setup_queue(0, 64, 1);
  port.tx = port.driver.setup_queue(1, 64, 2);
  DriverQueue ctrl = port.driver.setup_queue(2, 16, 3);
  port.driver.driver_ok();
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {2, 0}), spec::kCtrlErr);
  EXPECT_EQ(port.model->active_queue_pairs(), 1);
}

TEST(VirtioNetControl, MacAddrSetShowsInConfigAndRxModeIsAcked) {
  TestPort port("");
  ASSERT_TRUE(port.driver.negotiate(kCtrlFeatures));
  port.driver.w16(spec::common::kConfigMsixVector, 0);
  DriverQueue ctrl = port.driver.setup_queue(2, 16, 3);
  port.driver.driver_ok();
  uint8_t generation = port.driver.r8(spec::common::kConfigGeneration);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMac, spec::kCtrlMacAddrSet, {0x02, 1, 2, 3, 4, 5}), spec::kCtrlOk);
  EXPECT_EQ(port.driver.config_mac(), (std::array<uint8_t, 6>{0x02, 1, 2, 3, 4, 5}));
  EXPECT_NE(port.driver.r8(spec::common::kConfigGeneration), generation);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassRx, spec::kCtrlRxPromisc, {1}), spec::kCtrlOk);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassRx, 17, {1}), spec::kCtrlErr);
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMac, spec::kCtrlMacTableSet, {0, 0, 0, 0, 0, 0, 0, 0}),
            spec::kCtrlOk);
  // A long multicast table (le32 count, entries) is more data than any other command.
  std::vector<uint8_t> table = {0, 0, 0, 0, 20, 0, 0, 0};
  for (int i = 0; i < 20; i++) table.insert(table.end(), {0x01, 0x00, 0x5e, 0, 0, static_cast<uint8_t>(i)});
  EXPECT_EQ(command(port, ctrl, spec::kCtrlClassMac, spec::kCtrlMacTableSet, table), spec::kCtrlOk);
  EXPECT_FALSE(port.driver.status() & spec::kStatusNeedsReset);
}

TEST(VirtioNetControl, CommandWithoutAckByteNeedsReset) {
  TestPort port("");
  ASSERT_TRUE(port.driver.negotiate(kCtrlFeatures));
  DriverQueue ctrl = port.driver.setup_queue(2, 16, 3);
  port.driver.driver_ok();
  uint64_t at = port.mem.alloc(4);
  port.driver.add_chain(ctrl, {{at, 4, false}});
  port.driver.kick(ctrl);
  port.model->poll();
  EXPECT_TRUE(port.driver.status() & spec::kStatusNeedsReset);
}

TEST(VirtioNetControl, TrafficUsesTheActivatedPairs) {
  TestPort a("queues=2");
  TestPort b("queues=2");
  VirtioNetModel::connect(*a.model, *b.model);
  for (TestPort* p : {&a, &b}) {
    ASSERT_TRUE(p->driver.negotiate(kCtrlFeatures | spec::bit(spec::kFMq)));
    p->rx = p->driver.setup_queue(0, 64, 1);
    p->tx = p->driver.setup_queue(1, 64, 2);
  }
  DriverQueue a_tx1 = a.driver.setup_queue(3, 64, 4);
  DriverQueue b_rx1 = b.driver.setup_queue(2, 64, 3);
  DriverQueue b_ctrl = b.driver.setup_queue(4, 16, 5);
  DriverQueue a_ctrl = a.driver.setup_queue(4, 16, 5);
  a.driver.driver_ok();
  b.driver.driver_ok();
  EXPECT_EQ(command(a, a_ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {2, 0}), spec::kCtrlOk);
  EXPECT_EQ(command(b, b_ctrl, spec::kCtrlClassMq, spec::kCtrlMqVqPairsSet, {2, 0}), spec::kCtrlOk);

  uint64_t rx_buf = b.mem.alloc(2048);
  b.driver.add_chain(b_rx1, {{rx_buf, 2048, true}});
  auto frame = make_frame(5, 128);
  uint64_t tx_buf = a.mem.alloc(spec::kNetHdrSize + frame.size());
  ASSERT_TRUE(a.mem.write(tx_buf + spec::kNetHdrSize, frame.data(), frame.size()));
  a.driver.add_chain(a_tx1, {{tx_buf, static_cast<uint32_t>(spec::kNetHdrSize + frame.size()), false}});
  a.driver.kick(a_tx1);
  a.model->poll();
  b.model->poll();
  auto used = b.driver.next_used(b_rx1);
  ASSERT_TRUE(used.has_value());  // pair 1's TX lands in pair 1's RX
  std::vector<std::byte> got(frame.size());
  ASSERT_TRUE(b.mem.read(rx_buf + spec::kNetHdrSize, got.data(), got.size()));
  EXPECT_EQ(got, frame);
  EXPECT_FALSE(b.driver.next_used(b.rx).has_value());
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
