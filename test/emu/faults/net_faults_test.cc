// The virtio-net driver (pmd/virtio) against emulated ports that misbehave: a device
// that stops consuming, a packed-ring used descriptor carrying the previous lap's wrap
// counter, config space that changes under a read. Two ports linked back to back, each
// behind its own vfio-user server, as in production. Whatever the device does, every
// call returns, nothing is invented, and every mbuf is back in its pool after stop.
#include <uvio/ethdev.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>

#include "emu/server.h"
#include "emu/virtio_net/virtio_net_model.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "pmd/virtio/net.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace uvio {
namespace {

namespace vn = emu::virtio_net;
using Clock = std::chrono::steady_clock;
constexpr auto kPatience = std::chrono::seconds(10);  // only reached on failure
constexpr uint16_t kRing = 32;

struct Port {
  vn::VirtioNetModel* model = nullptr;
  std::unique_ptr<emu::Server> server;
  std::unique_ptr<iommu::Device> dev;
  std::unique_ptr<Mempool> pool;
  std::unique_ptr<EthPort> eth;
};

class LinkedPorts {
 public:
  LinkedPorts(vn::Options a, vn::Options b, bool packed) {
    MemConfig cfg;
    cfg.total_bytes = 32u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    EXPECT_TRUE(m) << m.status().describe();
    if (!m) return;
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    b.mac[5] = static_cast<uint8_t>(b.mac[5] + 1);
    a.packed = b.packed = packed;
    auto ma = vn::VirtioNetModel::create(a);
    auto mb = vn::VirtioNetModel::create(b);
    EXPECT_TRUE(ma && mb);
    if (!ma || !mb) return;
    vn::VirtioNetModel::connect(**ma, **mb);
    std::unique_ptr<vn::VirtioNetModel> models[2] = {std::move(*ma), std::move(*mb)};
    for (int i = 0; i < 2; i++) {
      ports[i].model = models[i].get();
      auto s = emu::Server::create(std::move(models[i]));
      EXPECT_TRUE(s) << s.status().describe();
      if (!s) return;
      ports[i].server = std::move(*s);
      auto fd = ports[i].server->connect();
      EXPECT_TRUE(fd) << fd.status().describe();
      if (!fd) return;
      auto d = iommu::open_vfio_user_fd(*fd, i == 0 ? "net0" : "net1", *space, {});
      EXPECT_TRUE(d) << d.status().describe();
      if (!d) return;
      ports[i].dev = std::move(*d);
      auto pool = mbuf_pool_create(*mem, i == 0 ? "rxpool0" : "rxpool1", 512, 0);
      EXPECT_TRUE(pool) << pool.status().describe();
      if (!pool) return;
      ports[i].pool = std::move(*pool);
      auto eth = EthPort::open(*mem, *ports[i].dev);
      EXPECT_TRUE(eth) << eth.status().describe();
      if (!eth) return;
      ports[i].eth = std::move(*eth);
    }
    auto p = mbuf_pool_create(*mem, "txpool", 1024, 0);
    EXPECT_TRUE(p) << p.status().describe();
    if (p) txpool = std::move(*p);
    ready = true;
  }
  ~LinkedPorts() {
    for (auto& p : ports) {
      p.eth.reset();
      p.dev.reset();
      p.server.reset();
    }
  }

  Status start_both() {
    for (int i = 0; i < 2; i++) {
      EthConfig cfg;
      cfg.rx_pool = ports[i].pool.get();
      cfg.port_id = static_cast<uint16_t>(i);
      cfg.ring_size = kRing;
      UVIO_TRY(ports[i].eth->configure(cfg));
      UVIO_TRY(ports[i].eth->start());
    }
    return Status::ok();
  }
  // Broadcast, ethertype 0x88B5, `seq` after the header.
  Mbuf* frame(int from, uint32_t seq) {
    Mbuf* m = mbuf_alloc(*txpool);
    EXPECT_NE(m, nullptr);
    if (!m) return nullptr;
    std::byte* p = mbuf_append(m, 96);
    std::memset(p, 0xFF, 6);
    auto mac = ports[from].eth->mac();
    std::memcpy(p + 6, mac.data(), 6);
    p[12] = std::byte{0x88};
    p[13] = std::byte{0xB5};
    std::memcpy(p + 14, &seq, 4);
    for (int i = 18; i < 96; i++) p[i] = static_cast<std::byte>(seq + i);
    return m;
  }
  // One frame per call; what the port does not take goes back to the pool here.
  uint32_t offer(int from, uint32_t frames) {
    uint32_t sent = 0;
    for (uint32_t i = 0; i < frames; i++) {
      Mbuf* m = frame(from, i);
      if (!m) break;
      if (ports[from].eth->tx_burst(0, &m, 1) == 1) sent++;
      else mbuf_free(m);
    }
    return sent;
  }
  // After the ports stop every mbuf must be back: none leaked, none freed twice.
  void expect_pools_whole() {
    for (auto& p : ports) {
      p.eth->stop();
      EXPECT_EQ(p.pool->available(), p.pool->count()) << p.pool->name();
    }
    EXPECT_EQ(txpool->available(), txpool->count()) << "txpool";
  }
  vn::PortCounters counters(int i) { return ports[i].model->counters(); }

  bool ready = false;
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  Port ports[2];
  std::unique_ptr<Mempool> txpool;
};

class VirtioNetHostileDevice : public ::testing::TestWithParam<bool> {
 protected:
  bool packed() const { return GetParam(); }
};

// faults=stall on port 0: its queues are never served. TX takes what the ring holds and
// then refuses (counted as tx_ring_full), never blocks; RX returns nothing; stop gives
// every buffer the device held back to its pool.
TEST_P(VirtioNetHostileDevice, DeviceThatStopsConsumingKeepsEveryMbuf) {
  vn::Options stalled;
  stalled.faults = vn::kFaultStall;
  LinkedPorts t(stalled, {}, packed());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.start_both());
  constexpr uint32_t kOffered = 200;
  uint32_t sent = t.offer(0, kOffered);
  // Single-descriptor frames: exactly one ring's worth fits, then nothing more.
  EXPECT_EQ(sent, kRing);
  EthStats st = t.ports[0].eth->stats();
  EXPECT_EQ(st.tx_packets, kRing);
  EXPECT_EQ(st.tx_ring_full, kOffered - kRing);
  EXPECT_EQ(st.tx_errors, 0u);  // a quiet device is not a malformed one
  EXPECT_EQ(t.counters(0).tx_packets, 0u);
  EXPECT_EQ(t.counters(1).rx_packets, 0u);
  EXPECT_EQ(t.txpool->available(), t.txpool->count() - kRing);

  // Frames sent to the stalled port never arrive, and polling it stays cheap and empty.
  EXPECT_EQ(t.offer(1, 20), 20u);
  Mbuf* burst[16];
  for (int i = 0; i < 1000; i++) ASSERT_EQ(t.ports[0].eth->rx_burst(0, burst, 16), 0);
  EXPECT_EQ(t.ports[0].eth->stats().rx_packets, 0u);
  EXPECT_EQ(t.ports[0].eth->stats().rx_errors, 0u);
  // Port 1's frames left its TX ring; drain them so its own pool accounting is whole.
  ASSERT_TRUE([&] {
    auto deadline = Clock::now() + kPatience;
    while (t.counters(1).tx_packets + t.counters(1).tx_drops < 20) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
  }());
  t.expect_pools_whole();
}

// faults=device-error on port 0: its first transmit request fails the device
// (DEVICE_NEEDS_RESET). The port reports it through link(), the other port does not,
// and stopping the port still gives every buffer back, the one the device dropped
// mid-request included.
TEST_P(VirtioNetHostileDevice, DeviceErrorShowsInLinkAndLosesNoMbuf) {
  vn::Options failing;
  failing.faults = vn::kFaultDeviceError;
  LinkedPorts t(failing, {}, packed());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.start_both());
  EXPECT_FALSE(t.ports[0].eth->link().needs_reset);
  EXPECT_TRUE(t.ports[0].eth->link().up);
  ASSERT_EQ(t.offer(0, 4), 4u);
  ASSERT_TRUE([&] {
    auto deadline = Clock::now() + kPatience;
    while (!t.ports[0].eth->link().needs_reset) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
  }());
  EthLink failed = t.ports[0].eth->link();
  EXPECT_FALSE(failed.up);
  EXPECT_EQ(t.counters(0).tx_errors, 1u);
  EXPECT_EQ(t.counters(0).tx_packets, 0u);
  EXPECT_FALSE(t.ports[1].eth->link().needs_reset);
  EXPECT_TRUE(t.ports[1].eth->link().up);
  t.expect_pools_whole();
}

// faults=used-wrap on the receiver: its first used descriptor carries the previous lap's
// wrap counter (AVAIL = USED = !wrap). On a packed ring the driver counts it and takes
// nothing from that ring any more; a split ring has no wrap counter and ignores it.
TEST_P(VirtioNetHostileDevice, ReceiverStaleWrapCounterIsCountedNeverTaken) {
  vn::Options bad;
  bad.faults = vn::kFaultUsedWrap;
  LinkedPorts t({}, bad, packed());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.start_both());
  ASSERT_EQ(t.offer(0, 10), 10u);
  std::vector<Mbuf*> got;
  Mbuf* burst[8];
  auto done = [&] { return packed() ? t.ports[1].eth->stats().rx_errors > 0 : got.size() == 10; };
  auto deadline = Clock::now() + kPatience;
  while (!done() && Clock::now() < deadline) {
    uint16_t n = t.ports[1].eth->rx_burst(0, burst, 8);
    got.insert(got.end(), burst, burst + n);
  }
  if (packed()) {
    EXPECT_EQ(t.ports[1].eth->stats().rx_errors, 1u);
    // The stale element was the first: nothing may be taken after it, even once the
    // device has written good elements behind it.
    ASSERT_TRUE([&] {
      while (t.counters(1).rx_packets + t.counters(1).rx_drops < 10) {
        if (Clock::now() > deadline) return false;
        std::this_thread::yield();
      }
      return true;
    }());
    for (int i = 0; i < 100; i++) EXPECT_EQ(t.ports[1].eth->rx_burst(0, burst, 8), 0);
    EXPECT_TRUE(got.empty());
    EXPECT_EQ(t.ports[1].eth->stats().rx_errors, 1u);  // counted once, not per poll
  } else {
    EXPECT_EQ(got.size(), 10u);
    EXPECT_EQ(t.ports[1].eth->stats().rx_errors, 0u);
  }
  if (!got.empty()) mbuf_free_bulk(got.data(), static_cast<uint32_t>(got.size()));
  t.expect_pools_whole();
}

// The same fault on the sender's TX completions: counted once, then the ring fills and
// further frames stay with the caller, counted as tx_ring_full.
TEST_P(VirtioNetHostileDevice, SenderStaleWrapCounterIsCountedNeverTaken) {
  vn::Options bad;
  bad.faults = vn::kFaultUsedWrap;
  LinkedPorts t(bad, {}, packed());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.start_both());
  Mbuf* rx[32];
  uint32_t sent = 0;
  auto drain_receiver = [&] {
    uint16_t n = t.ports[1].eth->rx_burst(0, rx, 32);
    if (n) mbuf_free_bulk(rx, n);
  };
  // Until the lie is seen (packed), or for several laps of the TX ring (split).
  auto done = [&] { return packed() ? t.ports[0].eth->stats().tx_errors > 0 : sent >= 8 * kRing; };
  auto deadline = Clock::now() + kPatience;
  while (!done() && Clock::now() < deadline) {
    sent += t.offer(0, 1);
    drain_receiver();
  }
  ASSERT_TRUE(done());
  if (packed()) {
    EXPECT_EQ(t.ports[0].eth->stats().tx_errors, 1u);
    // The stale element was the ring's first: nothing is reclaimed after it, so the
    // ring holds at most one lap and then refuses, counting what it refused.
    EXPECT_LE(sent, kRing);
    uint32_t more = t.offer(0, kRing + 10);
    EXPECT_EQ(sent + more, kRing);
    EthStats st = t.ports[0].eth->stats();
    EXPECT_EQ(st.tx_packets, kRing);
    EXPECT_GE(st.tx_ring_full, 10u);
    EXPECT_EQ(st.tx_errors, 1u);
  } else {
    EXPECT_EQ(t.ports[0].eth->stats().tx_errors, 0u);
  }
  drain_receiver();
  t.expect_pools_whole();
}

// faults=config-change: config_generation moves under the driver's first config read
// after DRIVER_OK; the driver reads again (§2.5.1) and reports the right values.
TEST_P(VirtioNetHostileDevice, ConfigChangingUnderTheReadIsReadAgain) {
  vn::Options changing;
  changing.faults = vn::kFaultConfigChange;
  changing.mtu = 1400;
  LinkedPorts t(changing, {}, packed());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.start_both());
  for (int i = 0; i < 3; i++) {
    EthLink l = t.ports[0].eth->link();
    EXPECT_TRUE(l.up) << "read " << i;
    EXPECT_EQ(l.mtu, 1400) << "read " << i;
  }
  t.expect_pools_whole();
}

INSTANTIATE_TEST_SUITE_P(Rings, VirtioNetHostileDevice, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Packed" : "Split"; });

}  // namespace
}  // namespace uvio
