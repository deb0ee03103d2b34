// uvio-testpmd's option parsing and forwarding streams, on a port that records what it
// is given.
#include <uvio/ethdev.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>

#include "apps/testpmd/forward.h"
#include "apps/testpmd/options.h"

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <vector>

namespace uvio::testpmd {
namespace {

Result<Options> parse(std::vector<const char*> args) {
  args.insert(args.begin(), "uvio-testpmd");
  return parse_options(static_cast<int>(args.size()), const_cast<char* const*>(args.data()));
}

TEST(TestpmdOptions, ParsesWhatDpdkTestpmdSpells) {
  auto o = parse({"--forward-mode=macswap", "--burst=64", "--rxq=2", "--txq=2", "--nb-cores=1", "--txpkts=128",
                  "--stats-period=1", "-i", "--auto-start"});
  ASSERT_TRUE(o) << o.status().message();
  EXPECT_EQ(o->mode, ForwardMode::MacSwap);
  EXPECT_EQ(o->burst, 64);
  EXPECT_EQ(o->rxq, 2);
  EXPECT_EQ(o->txq, 2);
  EXPECT_EQ(o->nb_cores, 1u);
  EXPECT_EQ(o->txpkts, 128);
  EXPECT_EQ(o->stats_period, 1u);
  EXPECT_TRUE(o->interactive);
  EXPECT_TRUE(o->auto_start);
}

TEST(TestpmdOptions, BadOptionsNameTheOptionAndTheReason) {
  struct Case {
    const char* arg;
    const char* says;
  } cases[] = {
      {"--burst=0", "--burst=0"},       {"--burst=513", "1 to 512"},     {"--burst", "needs a value"},
      {"--forward-mode=fast", "fast"},  {"--txpkts=20", "42 to 1514"},   {"--rxq=x", "--rxq=x"},
      {"--frobnicate", "unknown option"}, {"-i=1", "unknown option"},
  };
  for (auto& c : cases) {
    auto o = parse({c.arg});
    ASSERT_FALSE(o) << c.arg;
    EXPECT_EQ(o.status().code(), EINVAL);
    EXPECT_NE(o.status().message().find(c.says), std::string::npos) << o.status().message();
  }
}

// A port that hands out queued packets and keeps what it is asked to send, up to a limit.
class RecordingPort final : public EthPort {
 public:
  std::deque<Mbuf*> to_receive;
  std::vector<Mbuf*> sent;
  size_t tx_room = 1000;

  std::string_view name() const override { return "recording"; }
  uint16_t max_queue_pairs() const override { return 1; }
  std::array<uint8_t, 6> mac() const override { return {2, 0, 0, 0, 0, 9}; }
  Status configure(const EthConfig&) override { return Status::ok(); }
  Status start() override { return Status::ok(); }
  void stop() override {}
  uint16_t rx_burst(uint16_t, Mbuf** pkts, uint16_t n) override {
    uint16_t k = 0;
    while (k < n && !to_receive.empty()) {
      pkts[k++] = to_receive.front();
      to_receive.pop_front();
    }
    return k;
  }
  uint16_t tx_burst(uint16_t, Mbuf** pkts, uint16_t n) override {
    uint16_t k = static_cast<uint16_t>(std::min<size_t>(n, tx_room - sent.size()));
    sent.insert(sent.end(), pkts, pkts + k);
    return k;
  }
  EthStats stats() const override { return {}; }
  void reset_stats() override {}
  EthLink link() override { return {true, 1500}; }
  int rx_interrupt_fd(uint16_t) const override { return -1; }
  bool rx_interrupt_arm(uint16_t) override { return false; }
  void rx_interrupt_disarm(uint16_t) override {}
};

class ForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MemConfig cfg;
    cfg.total_bytes = 8u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    ASSERT_TRUE(m);
    mem = std::move(*m);
    auto p = mbuf_pool_create(*mem, "fwd_test", 256, 0);
    ASSERT_TRUE(p);
    pool = std::move(*p);
    stream.rx_port = &rx;
    stream.tx_port = &tx;
    stream.burst = 8;
    stream.tx_pool = pool.get();
  }
  void TearDown() override {
    for (Mbuf* m : tx.sent) mbuf_free(m);
    for (Mbuf* m : rx.to_receive) mbuf_free(m);
    EXPECT_EQ(pool->available(), pool->count());
  }
  Mbuf* frame(uint8_t dst_last, uint8_t src_last) {
    Mbuf* m = mbuf_alloc(*pool);
    std::byte* p = mbuf_append(m, 60);
    std::memset(p, 0, 60);
    p[5] = std::byte{dst_last};
    p[11] = std::byte{src_last};
    return m;
  }
  std::unique_ptr<Memory> mem;
  std::unique_ptr<Mempool> pool;
  RecordingPort rx, tx;
  Stream stream;
};

TEST_F(ForwardTest, IoForwardsAndCountsWhatTxRefuses) {
  for (int i = 0; i < 10; i++) rx.to_receive.push_back(frame(1, 2));
  tx.tx_room = 5;
  stream.mode = ForwardMode::Io;
  EXPECT_EQ(forward_step(stream), 8 + 5);
  EXPECT_EQ(stream.rx_packets.get(), 8u);
  EXPECT_EQ(stream.tx_packets.get(), 5u);
  EXPECT_EQ(stream.fwd_drops.get(), 3u);  // freed, and the pool check in TearDown proves it
  EXPECT_EQ(tx.sent.size(), 5u);
}

TEST_F(ForwardTest, MacSwapSwapsAndMacRewrites) {
  rx.to_receive.push_back(frame(1, 2));
  stream.mode = ForwardMode::MacSwap;
  forward_step(stream);
  ASSERT_EQ(tx.sent.size(), 1u);
  EXPECT_EQ(tx.sent[0]->data()[5], std::byte{2});
  EXPECT_EQ(tx.sent[0]->data()[11], std::byte{1});

  rx.to_receive.push_back(frame(1, 2));
  stream.mode = ForwardMode::Mac;
  stream.eth_src = {0, 0, 0, 0, 0, 0x51};
  stream.eth_dst = {0, 0, 0, 0, 0, 0x52};
  forward_step(stream);
  ASSERT_EQ(tx.sent.size(), 2u);
  EXPECT_EQ(tx.sent[1]->data()[5], std::byte{0x52});
  EXPECT_EQ(tx.sent[1]->data()[11], std::byte{0x51});
}

TEST_F(ForwardTest, TxOnlyGeneratesTheTemplateAndRxOnlyFrees) {
  std::vector<std::byte> tmpl(64);
  build_udp_template(tmpl.data(), 64, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
  EXPECT_EQ(tmpl[12], std::byte{0x08});  // IPv4
  stream.mode = ForwardMode::TxOnly;
  stream.tx_template = tmpl.data();
  stream.tx_len = 64;
  tx.tx_room = 6;
  forward_step(stream);
  EXPECT_EQ(stream.generated.get(), 8u);
  EXPECT_EQ(stream.tx_packets.get() + stream.fwd_drops.get(), stream.generated.get());
  ASSERT_EQ(tx.sent.size(), 6u);
  EXPECT_EQ(tx.sent[0]->pkt_len, 64u);
  EXPECT_EQ(std::memcmp(tx.sent[0]->data(), tmpl.data(), 64), 0);

  stream.mode = ForwardMode::RxOnly;
  for (int i = 0; i < 3; i++) rx.to_receive.push_back(frame(1, 2));
  forward_step(stream);
  EXPECT_EQ(stream.rx_packets.get(), 3u);
  EXPECT_EQ(tx.sent.size(), 6u);
}

TEST_F(ForwardTest, TxOnlyStopsAtTheTxCountEvenAfterRefusals) {
  std::vector<std::byte> tmpl(64);
  build_udp_template(tmpl.data(), 64, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2});
  stream.mode = ForwardMode::TxOnly;
  stream.tx_template = tmpl.data();
  stream.tx_len = 64;
  stream.tx_limit = 13;
  tx.tx_room = 5;
  forward_step(stream);  // 8 generated, 5 taken, 3 refused and freed
  EXPECT_EQ(stream.tx_packets.get(), 5u);
  tx.tx_room = 1000;
  forward_step(stream);  // 8 more: 13 sent
  EXPECT_EQ(stream.tx_packets.get(), 13u);
  forward_step(stream);  // the limit is reached: nothing is generated
  EXPECT_EQ(stream.tx_packets.get(), 13u);
  EXPECT_EQ(stream.generated.get(), 16u);
  EXPECT_EQ(stream.fwd_drops.get(), 3u);
  EXPECT_EQ(tx.sent.size(), 13u);

  auto o = parse({"--forward-mode=txonly", "--tx-count=5000"});
  ASSERT_TRUE(o) << o.status().message();
  EXPECT_EQ(o->tx_count, 5000u);
  EXPECT_FALSE(parse({"--tx-count=-1"}));
  EXPECT_FALSE(parse({"--tx-count"}));
}

}  // namespace
}  // namespace uvio::testpmd
