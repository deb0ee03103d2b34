// save_state / load_state: a restored pair of ports continues exactly as the original,
// and a damaged or foreign stream is refused without touching the device.
#include "test/emu/virtio_net/driver_harness.h"

namespace uvio::emu::virtio_net::testing {
namespace {

constexpr uint64_t kFeatures = kBaseFeatures | spec::bit(spec::kFMrgRxbuf) | spec::bit(spec::kFEventIdx) |
                               spec::bit(spec::kFIndirectDesc);

// Everything the test driver knows, so a second driver can take over at the same point.
struct DriverView {
  TestMemory mem;
  DriverQueue rx, tx;
  std::map<uint16_t, uint64_t> rx_buffers;
};

DriverView snapshot(TestPort& p) { return DriverView{p.mem, p.rx, p.tx, p.rx_buffers}; }

void take_over(TestPort& p, const DriverView& v) {
  p.mem = v.mem;
  p.rx = v.rx;
  p.tx = v.tx;
  p.rx_buffers = v.rx_buffers;
}

// The second half of the scenario: queued frames, then more traffic.
void continue_traffic(TestPort& a, TestPort& b) {
  a.model->poll();
  b.model->poll();
  for (uint32_t seq = 10; seq < 14; seq++) a.send(make_frame(seq, 300 + seq));
  b.post_rx(2, 256);
  a.model->poll();
  b.model->poll();
  a.model->poll();
}

TEST(VirtioNetMigration, SaveLoadMidStreamContinuesIdentically) {
  TestPort a("queues=2");
  TestPort b("queues=2");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up(kFeatures));
  ASSERT_TRUE(b.bring_up(kFeatures));
  b.post_rx(6, 256);
  for (uint32_t seq = 0; seq < 3; seq++) a.send(make_frame(seq, 100 + 200 * seq));
  a.model->poll();
  b.model->poll();
  // Two frames queued and kicked but not yet transmitted when the ports stop.
  a.send(make_frame(3, 90));
  a.send(make_frame(4, 91));

  std::vector<uint8_t> state_a, state_b;
  a.model->save_state(state_a);
  b.model->save_state(state_b);
  DriverView view_a = snapshot(a), view_b = snapshot(b);
  size_t irq_a = a.irq.vectors.size(), irq_b = b.irq.vectors.size();

  TestPort a2("queues=2");
  TestPort b2("queues=2");
  VirtioNetModel::connect(*a2.model, *b2.model);
  take_over(a2, view_a);
  take_over(b2, view_b);
  ASSERT_TRUE(a2.model->load_state(state_a).is_ok());
  ASSERT_TRUE(b2.model->load_state(state_b).is_ok());

  continue_traffic(a, b);
  continue_traffic(a2, b2);

  EXPECT_GT(b.model->counters().rx_packets, 3u);
  EXPECT_TRUE(a.mem.bytes() == a2.mem.bytes()) << "port A's guest memory differs";
  EXPECT_TRUE(b.mem.bytes() == b2.mem.bytes()) << "port B's guest memory differs";
  std::vector<uint32_t> after_a(a.irq.vectors.begin() + irq_a, a.irq.vectors.end());
  std::vector<uint32_t> after_b(b.irq.vectors.begin() + irq_b, b.irq.vectors.end());
  EXPECT_EQ(after_a, a2.irq.vectors);
  EXPECT_EQ(after_b, b2.irq.vectors);
  PortCounters c1 = b.model->counters(), c2 = b2.model->counters();
  EXPECT_EQ(c1.rx_packets, c2.rx_packets);
  EXPECT_EQ(c1.rx_bytes, c2.rx_bytes);
  EXPECT_EQ(c1.rx_drops, c2.rx_drops);
  EXPECT_EQ(a.model->counters().tx_packets, a2.model->counters().tx_packets);

  std::vector<uint8_t> end_a, end_a2;
  a.model->save_state(end_a);
  a2.model->save_state(end_a2);
  EXPECT_EQ(end_a, end_a2);
}

uint32_t fnv1a(const uint8_t* data, size_t len) {
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < len; i++) hash = (hash ^ data[i]) * 16777619u;
  return hash;
}

// Rewrites the trailing checksum so only the semantic checks can catch a change.
void reseal(std::vector<uint8_t>& state) {
  uint32_t sum = fnv1a(state.data(), state.size() - 4);
  std::memcpy(state.data() + state.size() - 4, &sum, 4);
}

class VirtioNetBadState : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(port.bring_up(kFeatures));
    port.post_rx(3, 256);
    port.send(make_frame(0, 64));
    port.model->poll();
    port.model->save_state(good);
  }

  void expect_refused(const std::vector<uint8_t>& state) {
    std::vector<uint8_t> before;
    port.model->save_state(before);
    Status s = port.model->load_state(state);
    EXPECT_FALSE(s.is_ok());
    EXPECT_EQ(s.code(), EINVAL);
    EXPECT_FALSE(s.message().empty());
    std::vector<uint8_t> after;
    port.model->save_state(after);
    EXPECT_EQ(before, after) << "a refused load changed the device";
  }

  TestPort port{"loopback=1"};
  std::vector<uint8_t> good;
};

// Offsets in the version 1 layout (see virtio_net_state.cc).
constexpr size_t kStatusAt = 42;
constexpr size_t kCurrPairsAt = 50;
constexpr size_t kFirstQueueAt = 26 + 37 + 64 + 2;  // header+identity, registers, counters, count

TEST_F(VirtioNetBadState, ReloadingItsOwnStateWorks) { EXPECT_TRUE(port.model->load_state(good).is_ok()); }

TEST_F(VirtioNetBadState, FlippedByteFailsTheChecksum) {
  auto bad = good;
  bad[bad.size() / 2] ^= 0x40;
  expect_refused(bad);
}

TEST_F(VirtioNetBadState, TruncatedOrExtendedStreams) {
  expect_refused(std::vector<uint8_t>(good.begin(), good.begin() + 10));
  expect_refused(std::vector<uint8_t>(good.begin(), good.end() - 1));
  auto longer = good;
  longer.push_back(0);
  expect_refused(longer);
  expect_refused({});
}

TEST_F(VirtioNetBadState, WrongMagicOrVersion) {
  auto bad = good;
  bad[0] ^= 1;
  reseal(bad);
  expect_refused(bad);
  bad = good;
  bad[4] = 2;
  reseal(bad);
  expect_refused(bad);
}

TEST_F(VirtioNetBadState, SemanticallyInvalidFieldsAreRefused) {
  auto bad = good;
  bad[kCurrPairsAt] = 0;  // no active pair
  reseal(bad);
  expect_refused(bad);

  bad = good;
  bad[kStatusAt] = spec::kStatusDriverOk;  // DRIVER_OK without FEATURES_OK
  reseal(bad);
  expect_refused(bad);

  bad = good;
  bad[kFirstQueueAt] = 48;  // enabled RX queue of size 48
  reseal(bad);
  expect_refused(bad);

  bad = good;
  bad[kFirstQueueAt + 2] = 200;  // MSI-X vector beyond the table
  bad[kFirstQueueAt + 3] = 0;
  reseal(bad);
  expect_refused(bad);
}

TEST_F(VirtioNetBadState, StateOfADifferentlyConfiguredPortIsRefused) {
  TestPort other("queues=2");
  std::vector<uint8_t> foreign;
  other.model->save_state(foreign);
  expect_refused(foreign);
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing

namespace uvio::emu::virtio_net::testing {
namespace {

// Frames on the wire when the ports stop do not travel: the receiving port's saved
// rx_drops counts them, so the destination's statistics account for every frame the
// peer sent. Saving counts without consuming: the source, resumed, still receives them.
TEST(VirtioNetMigration, FramesLeftOnTheLinkAreCountedAsDroppedByTheReceiver) {
  TestPort a("queues=1");
  TestPort b("queues=1");
  VirtioNetModel::connect(*a.model, *b.model);
  ASSERT_TRUE(a.bring_up(kFeatures));
  ASSERT_TRUE(b.bring_up(kFeatures));
  for (uint32_t seq = 0; seq < 3; seq++) a.send(make_frame(seq, 100));
  a.model->poll();  // on the wire; B has not looked yet
  ASSERT_EQ(a.model->counters().tx_packets, 3u);
  uint64_t drops_before = b.model->counters().rx_drops;

  std::vector<uint8_t> state_b;
  b.model->save_state(state_b);
  TestPort a2("queues=1");
  TestPort b2("queues=1");
  VirtioNetModel::connect(*a2.model, *b2.model);
  take_over(b2, snapshot(b));
  ASSERT_TRUE(b2.model->load_state(state_b).is_ok());
  EXPECT_EQ(b2.model->counters().rx_drops, drops_before + 3);
  EXPECT_EQ(b2.model->counters().rx_packets, 0u);

  // The source port was not changed by saving: given buffers, it takes the frames.
  b.post_rx(3, 256);
  b.model->poll();
  EXPECT_EQ(b.model->counters().rx_packets, 3u);
  EXPECT_EQ(b.model->counters().rx_drops, drops_before);
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
