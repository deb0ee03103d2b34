// The virtio-net driver migrating in one process: two linked emulated ports forward
// traffic; the driver pauses, the pools and ports save their state, each device's v2
// state moves into a fresh device (a new pair, on a new link), the pools and ports are
// restored from the bytes over the same memory, and traffic goes on. Every frame sent
// is then received, or counted as dropped by a device.
#include <uvio/ethdev.h>
#include <uvio/intr.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>

#include "emu/server.h"
#include "emu/virtio_net/virtio_net_model.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "test/emu/mig_walk.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

namespace uvio {
namespace {

namespace vn = emu::virtio_net;
using Clock = std::chrono::steady_clock;
using iommu::MigState;
// Upper bound for anything to happen: far above real delays, only hit on failure.
constexpr auto kPatience = std::chrono::seconds(10);

struct Device {
  vn::VirtioNetModel* model = nullptr;  // owned by the server
  std::unique_ptr<emu::Server> server;
  std::unique_ptr<iommu::Device> dev;
};

// Two ports linked back to back, each behind its own server.
void make_pair(iommu::DmaSpace& space, bool packed, Device (&out)[2], const char* names[2]) {
  vn::Options a, b;
  b.mac[5] = static_cast<uint8_t>(b.mac[5] + 1);
  a.packed = b.packed = packed;
  auto ma = vn::VirtioNetModel::create(a);
  auto mb = vn::VirtioNetModel::create(b);
  ASSERT_TRUE(ma && mb);
  vn::VirtioNetModel::connect(**ma, **mb);
  std::unique_ptr<vn::VirtioNetModel> models[2] = {std::move(*ma), std::move(*mb)};
  for (int i = 0; i < 2; i++) {
    out[i].model = models[i].get();
    auto s = emu::Server::create(std::move(models[i]));
    ASSERT_TRUE(s) << s.status().describe();
    out[i].server = std::move(*s);
    auto fd = out[i].server->connect();
    ASSERT_TRUE(fd) << fd.status().describe();
    auto d = iommu::open_vfio_user_fd(*fd, names[i], space, {});
    ASSERT_TRUE(d) << d.status().describe();
    out[i].dev = std::move(*d);
  }
}

class NetMigration : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    MemConfig cfg;
    cfg.total_bytes = 48u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    ASSERT_TRUE(m) << m.status().describe();
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    const char* names[2] = {"net-a0", "net-a1"};
    make_pair(*space, GetParam(), a, names);
    const char* pool_names[3] = {"rx0", "rx1", "tx"};
    for (int i = 0; i < 3; i++) {
      auto pool = mbuf_pool_create(*mem, pool_names[i], i == 2 ? 2048 : 512, 0);
      ASSERT_TRUE(pool) << pool.status().describe();
      pools[i] = std::move(*pool);
    }
    for (int i = 0; i < 2; i++) {
      auto eth = EthPort::open(*mem, *a[i].dev);
      ASSERT_TRUE(eth) << eth.status().describe();
      ports[i] = std::move(*eth);
      EthConfig c;
      c.ring_size = 64;
      c.rx_pool = pools[i].get();
      c.port_id = static_cast<uint16_t>(i);
      c.rx_interrupts = i == 1;
      ASSERT_TRUE(ports[i]->configure(c));
      ASSERT_TRUE(ports[i]->start());
    }
  }
  void TearDown() override {
    for (auto& p : ports) p.reset();
    for (auto& p : old_ports) p.reset();
    for (auto& p : pools) p.reset();
    for (auto& p : old_pools) p.reset();
    for (Device* pair : {a, b})
      for (int i = 0; i < 2; i++) {
        pair[i].dev.reset();
        if (pair[i].server) pair[i].server->stop();
      }
  }

  // Port 0 sends `count` frames numbered from `first`, retrying while its ring is full,
  // and port 1 receives what arrives meanwhile. Port 1 may fall behind: its device then
  // drops (and counts) what finds no buffer, which the accounting allows for.
  void send(uint32_t first, uint32_t count) {
    for (uint32_t seq = first; seq < first + count;) {
      Mbuf* m = mbuf_alloc(*pools[2]);
      ASSERT_NE(m, nullptr) << "tx pool empty: mbufs leak";
      std::byte* p = mbuf_append(m, 100);
      std::memset(p, 0xFF, 6);
      std::memcpy(p + 6, ports[0]->mac().data(), 6);
      p[12] = std::byte{0x88};
      p[13] = std::byte{0xB5};
      std::memcpy(p + 14, &seq, 4);
      auto deadline = Clock::now() + kPatience;
      while (ports[0]->tx_burst(0, &m, 1) == 0) {
        receive();
        ASSERT_LT(Clock::now(), deadline) << "TX ring stayed full";
      }
      generated++;
      seq++;
      receive();
    }
  }
  uint16_t receive() {
    Mbuf* got[32];
    uint16_t n = ports[1]->rx_burst(0, got, 32);
    for (uint16_t i = 0; i < n; i++) {
      uint32_t seq = 0;
      std::memcpy(&seq, got[i]->data() + 14, 4);
      EXPECT_TRUE(received.insert(seq).second) << "frame " << seq << " received twice";
      EXPECT_EQ(got[i]->pkt_len, 100u);
    }
    mbuf_free_bulk(got, n);
    return n;
  }
  uint64_t device_drops(Device (&pair)[2]) {
    vn::PortCounters c0 = pair[0].model->counters(), c1 = pair[1].model->counters();
    return c0.tx_drops + c1.rx_drops;
  }

  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  Device a[2], b[2];
  std::unique_ptr<Mempool> pools[3], old_pools[3];
  std::unique_ptr<EthPort> ports[2], old_ports[2];
  uint64_t generated = 0;
  std::set<uint32_t> received;
};

TEST_P(NetMigration, EveryFrameIsReceivedOrCountedAsDroppedAcrossTheSwap) {
  // Traffic with the rings wrapping, then a burst left in every stage: in port 0's TX
  // ring, on the wire, in port 1's RX ring not yet taken.
  send(0, 500);
  while (receive()) {}
  for (uint32_t seq = 500; seq < 540; seq++) {
    Mbuf* m = mbuf_alloc(*pools[2]);
    ASSERT_NE(m, nullptr);
    std::byte* p = mbuf_append(m, 100);
    std::memset(p, 0xFF, 6);
    std::memcpy(p + 6, ports[0]->mac().data(), 6);
    p[12] = std::byte{0x88};
    p[13] = std::byte{0xB5};
    std::memcpy(p + 14, &seq, 4);
    if (ports[0]->tx_burst(0, &m, 1) == 1) generated++;
    else mbuf_free(m);
  }
  // No receive now: the last frames wait in port 1's RX ring, on the wire and in port
  // 0's TX ring, wherever the device threads happen to have taken them.
  EthStats before0 = ports[0]->stats(), before1 = ports[1]->stats();

  // Pause (no burst runs from here), stop the devices, save everything of the driver.
  std::vector<uint8_t> pool_state[3], port_state[2];
  for (int i = 0; i < 3; i++) ASSERT_TRUE(pools[i]->save_state(pool_state[i]));
  for (int i = 0; i < 2; i++) ASSERT_TRUE(ports[i]->save_state(port_state[i]));
  const char* names[2] = {"net-b0", "net-b1"};
  make_pair(*space, GetParam(), b, names);
  for (int i = 0; i < 2; i++) {
    Status moved = emu::testing::mig_move_device_state(*a[i].dev, *b[i].dev);
    ASSERT_TRUE(moved) << moved.describe();
  }
  for (int i = 0; i < 2; i++) {
    ports[i]->release_after_migration();
    old_ports[i] = std::move(ports[i]);
  }
  for (int i = 0; i < 3; i++) {
    pools[i]->release_objects();
    old_pools[i] = std::move(pools[i]);
  }

  // Destination: pools first (ports find them), then ports, then the devices run.
  for (int i = 0; i < 3; i++) {
    auto pool = mbuf_pool_restore(*mem, pool_state[i]);
    ASSERT_TRUE(pool) << pool.status().describe();
    pools[i] = std::move(*pool);
  }
  for (int i = 0; i < 2; i++) {
    auto eth = EthPort::restore(*mem, *b[i].dev, port_state[i]);
    ASSERT_TRUE(eth) << eth.status().describe();
    ports[i] = std::move(*eth);
  }
  for (int i = 0; i < 2; i++) ASSERT_TRUE(emu::testing::mig_walk(*b[i].dev, MigState::Running));
  EXPECT_EQ(ports[0]->stats().tx_packets, before0.tx_packets);
  EXPECT_EQ(ports[1]->stats().rx_packets, before1.rx_packets);

  // Keep going across more wraps, then wait until every frame is accounted for.
  send(540, 400);
  auto deadline = Clock::now() + kPatience;
  while (received.size() + device_drops(b) < generated && Clock::now() < deadline) {
    if (receive() == 0) std::this_thread::yield();
  }
  EXPECT_EQ(received.size() + device_drops(b), generated)
      << received.size() << " received, " << device_drops(b) << " dropped by the devices";
  size_t after_swap = 0;
  for (uint32_t seq = 540; seq < 940; seq++) after_swap += received.count(seq);
  EXPECT_GT(after_swap, 0u) << "nothing sent after the swap arrived";
  EXPECT_EQ(ports[1]->stats().rx_packets, received.size());
  EXPECT_EQ(ports[1]->stats().rx_errors, 0u);
  EXPECT_EQ(ports[0]->stats().tx_errors, 0u);

  // The RX interrupt of port 1 is wired to the new device.
  int fd = ports[1]->rx_interrupt_fd(0);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(ports[1]->rx_interrupt_arm(0));
  send(940, 1);
  EXPECT_TRUE(wait_eventfd(fd, 10000)) << "no interrupt from the new device";
  ports[1]->rx_interrupt_disarm(0);
  deadline = Clock::now() + kPatience;
  while (!received.count(940) && Clock::now() < deadline) receive();
  EXPECT_EQ(received.count(940), 1u);

  // Every mbuf comes home once the ports stop.
  for (auto& p : ports) p->stop();
  EXPECT_EQ(pools[0]->available(), pools[0]->count());
  EXPECT_EQ(pools[1]->available(), pools[1]->count());
  EXPECT_EQ(pools[2]->available(), pools[2]->count());
}

TEST_P(NetMigration, DamagedPortStateIsRefused) {
  std::vector<uint8_t> state;
  ASSERT_TRUE(ports[1]->save_state(state));
  const char* names[2] = {"net-b0", "net-b1"};
  make_pair(*space, GetParam(), b, names);
  for (size_t len = 0; len < state.size(); len += 97) {
    auto r = EthPort::restore(*mem, *b[1].dev, std::span<const uint8_t>(state.data(), len));
    EXPECT_FALSE(r) << "truncated at " << len;
  }
  auto bad = state;
  bad[0] ^= 1;
  EXPECT_FALSE(EthPort::restore(*mem, *b[1].dev, bad));
  // A pool that was not restored (here: still the source's, released) is named.
  pools[1]->release_objects();
  auto r = EthPort::restore(*mem, *b[1].dev, state);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("rx1"), std::string::npos) << r.status().describe();
  ports[1]->release_after_migration();  // its mbufs now belong to no pool object
}

INSTANTIATE_TEST_SUITE_P(Rings, NetMigration, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Packed" : "Split"; });

TEST(NetMigrationUnsupported, APortWithoutMigrationRefusesWithAClearError) {
  // A port that cannot migrate says so rather than saving half.
  MemConfig cfg;
  cfg.total_bytes = 8u << 20;
  cfg.hugepages = false;
  auto m = Memory::create(cfg);
  ASSERT_TRUE(m);
  struct Plain final : EthPort {
    std::string_view name() const override { return "plain"; }
    uint16_t max_queue_pairs() const override { return 1; }
    std::array<uint8_t, 6> mac() const override { return {}; }
    Status configure(const EthConfig&) override { return Status::ok(); }
    Status start() override { return Status::ok(); }
    void stop() override {}
    uint16_t rx_burst(uint16_t, Mbuf**, uint16_t) override { return 0; }
    uint16_t tx_burst(uint16_t, Mbuf**, uint16_t) override { return 0; }
    EthStats stats() const override { return {}; }
    void reset_stats() override {}
    EthLink link() override { return {}; }
    int rx_interrupt_fd(uint16_t) const override { return -1; }
    bool rx_interrupt_arm(uint16_t) override { return false; }
    void rx_interrupt_disarm(uint16_t) override {}
  } plain;
  std::vector<uint8_t> out;
  Status s = plain.save_state(out);
  EXPECT_EQ(s.code(), ENOTSUP);
  EXPECT_NE(s.message().find("plain"), std::string::npos);
}

}  // namespace
}  // namespace uvio
