// Two ports of a link polled from two threads, each with its own driver: every frame
// is either received intact and in order, or counted as a drop. Run under
// ThreadSanitizer too (suite 'concurrency').
#include "test/emu/virtio_net/driver_harness.h"

#include <chrono>
#include <thread>

namespace uvio::emu::virtio_net::testing {
namespace {

constexpr uint32_t kFrames = 3000;
constexpr uint16_t kQueueSize = 64;
constexpr uint32_t kRxBufferBytes = 2048;

size_t frame_len(uint32_t seq) { return 60 + (seq * 37) % 1400; }

// Runs `step` until it returns true; a generous bound turns a hang into a failure.
template <class F>
bool run_until(F step) {
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!step())
    if (std::chrono::steady_clock::now() > give_up) return false;
  return true;
}

void sender(TestPort& a, bool* finished) {
  std::vector<uint64_t> buffers(kQueueSize);
  for (auto& b : buffers) b = a.mem.alloc(spec::kNetHdrSize + 1500, 64);
  uint32_t next = 0, in_flight = 0;
  *finished = run_until([&] {
    while (a.driver.next_used(a.tx)) in_flight--;
    while (next < kFrames && in_flight < kQueueSize / 2) {
      auto frame = make_frame(next, frame_len(next));
      uint64_t at = buffers[a.tx.next_desc];
      EXPECT_TRUE(a.mem.write(at + spec::kNetHdrSize, frame.data(), frame.size()));
      a.driver.add_chain(a.tx, {{at, static_cast<uint32_t>(spec::kNetHdrSize + frame.size()), false}});
      next++;
      in_flight++;
    }
    a.driver.kick(a.tx);
    a.model->poll();
    return next == kFrames && in_flight == 0;
  });
}

void receiver(TestPort& b, uint32_t* received, bool* finished) {
  std::vector<uint64_t> buffers(kQueueSize);
  for (auto& buf : buffers) buf = b.mem.alloc(kRxBufferBytes, 64);
  auto post = [&] {
    uint64_t at = buffers[b.rx.next_desc];
    b.driver.add_chain(b.rx, {{at, kRxBufferBytes, true}});
  };
  for (uint16_t i = 0; i < kQueueSize; i++) post();
  b.driver.kick(b.rx);
  int64_t last_seq = -1;
  *finished = run_until([&] {
    b.model->poll();
    while (auto used = b.driver.next_used(b.rx)) {
      std::vector<std::byte> packet(used->len);
      EXPECT_TRUE(b.mem.read(buffers[used->id], packet.data(), packet.size()));
      uint32_t seq = 0;
      std::memcpy(&seq, packet.data() + spec::kNetHdrSize + 14, sizeof(seq));
      EXPECT_GT(int64_t{seq}, last_seq) << "frames out of order";
      last_seq = seq;
      std::vector<std::byte> expect = make_frame(seq, frame_len(seq));
      EXPECT_TRUE(std::equal(packet.begin() + spec::kNetHdrSize, packet.end(), expect.begin(), expect.end()))
          << "frame " << seq << " damaged";
      (*received)++;
      post();
    }
    PortCounters c = b.model->counters();
    return c.rx_packets + c.rx_drops == kFrames;
  });
}

TEST(VirtioNetLinkThreads, TwoDeviceThreadsDeliverEveryFrameOrCountIt) {
  TestPort a("");
  TestPort b("");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up(kBaseFeatures, kQueueSize));
  ASSERT_TRUE(b.bring_up(kBaseFeatures, kQueueSize));

  bool sent_all = false, received_all = false;
  uint32_t received = 0;
  std::thread tx_thread(sender, std::ref(a), &sent_all);
  std::thread rx_thread(receiver, std::ref(b), &received, &received_all);
  tx_thread.join();
  rx_thread.join();

  EXPECT_TRUE(sent_all);
  EXPECT_TRUE(received_all);
  PortCounters ca = a.model->counters(), cb = b.model->counters();
  EXPECT_EQ(ca.tx_packets, kFrames);
  EXPECT_EQ(ca.tx_drops + ca.tx_errors, 0u);
  EXPECT_EQ(cb.rx_packets, received);
  EXPECT_EQ(cb.rx_packets + cb.rx_drops, kFrames);
  EXPECT_GT(cb.rx_packets, 0u);
  EXPECT_EQ(cb.rx_errors, 0u);
}

TEST(VirtioNetLinkThreads, NamedPeersFindEachOther) {
  auto first = make_port("peer=wire-named-test");
  auto second = make_port("peer=wire-named-test");
  EXPECT_TRUE(first->link_up());
  EXPECT_TRUE(second->link_up());
  auto parsed = parse_options("peer=wire-named-test");
  ASSERT_TRUE(parsed.is_ok());
  auto third = VirtioNetModel::create(*parsed);
  EXPECT_FALSE(third.is_ok());
  EXPECT_EQ(third.status().code(), EBUSY);
  second.reset();
  EXPECT_FALSE(first->link_up());
  auto again = make_port("peer=wire-named-test");
  EXPECT_TRUE(first->link_up());
}

TEST(VirtioNetLinkThreads, PeerArrivingRaisesAConfigChange) {
  TestPort first("peer=wire-status-test");
  ASSERT_TRUE(first.bring_up());
  auto status = [&] { return first.model->bar_read(0, VirtioNetModel::kDeviceCfgOffset + spec::netcfg::kStatus, 2); };
  EXPECT_EQ(status(), 0u);
  uint8_t generation = first.driver.r8(spec::common::kConfigGeneration);
  first.model->poll();
  EXPECT_EQ(first.irq.count(TestPort::kConfigVector), 0u);

  auto second = make_port("peer=wire-status-test");
  first.model->poll();
  EXPECT_EQ(status(), spec::kNetSLinkUp);
  EXPECT_EQ(first.irq.count(TestPort::kConfigVector), 1u);
  EXPECT_NE(first.driver.r8(spec::common::kConfigGeneration), generation);

  second.reset();
  first.model->poll();
  EXPECT_EQ(status(), 0u);
  EXPECT_EQ(first.irq.count(TestPort::kConfigVector), 2u);
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
