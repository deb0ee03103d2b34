#include <uvio/ring.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace uvio {
namespace {

void* tag(uintptr_t v) { return reinterpret_cast<void*>(v); }

TEST(Ring, SizeMustBeAPowerOfTwo) {
  EXPECT_FALSE(Ring::create("r", 3, 0).is_ok());
  EXPECT_FALSE(Ring::create("r", 0, 0).is_ok());
  EXPECT_FALSE(Ring::create("r", 8, 0x80).is_ok());
  EXPECT_TRUE(Ring::create("r", 8, 0).is_ok());
}

class RingModes : public testing::TestWithParam<unsigned> {};

TEST_P(RingModes, BurstBulkFullEmptyAndWrap) {
  auto r = Ring::create("r", 8, GetParam());
  ASSERT_TRUE(r.is_ok());
  Ring& ring = **r;
  void* in[12];
  void* out[12];
  for (uintptr_t i = 0; i < 12; i++) in[i] = tag(i + 1);
  EXPECT_EQ(ring.dequeue_burst(out, 4), 0u);
  EXPECT_EQ(ring.enqueue_bulk(in, 12), 0u) << "bulk is all or nothing";
  EXPECT_EQ(ring.enqueue_burst(in, 12), 8u) << "the whole size is usable";
  EXPECT_EQ(ring.count(), 8u);
  EXPECT_EQ(ring.free_count(), 0u);
  EXPECT_EQ(ring.enqueue_burst(in, 1), 0u);
  EXPECT_EQ(ring.dequeue_bulk(out, 9), 0u);
  EXPECT_EQ(ring.dequeue_burst(out, 5), 5u);
  for (uintptr_t i = 0; i < 5; i++) EXPECT_EQ(out[i], tag(i + 1));
  // Wrap around the end of the slot array.
  EXPECT_EQ(ring.enqueue_bulk(in + 8, 4), 4u);
  EXPECT_EQ(ring.dequeue_burst(out, 12), 7u);
  uintptr_t expect[] = {6, 7, 8, 9, 10, 11, 12};
  for (int i = 0; i < 7; i++) EXPECT_EQ(out[i], tag(expect[i]));
  EXPECT_TRUE(ring.empty());
}

INSTANTIATE_TEST_SUITE_P(AllModes, RingModes,
                         testing::Values(0u, unsigned(Ring::kSingleProducer), unsigned(Ring::kSingleConsumer),
                                         unsigned(Ring::kSingleProducer | Ring::kSingleConsumer)));

// Every element is delivered exactly once, in order per producer, whatever the mode.
void stress(unsigned flags, int producers, int consumers, uint32_t per_producer) {
  auto r = Ring::create("stress", 256, flags);
  ASSERT_TRUE(r.is_ok());
  Ring& ring = **r;
  std::atomic<uint32_t> consumed{0};
  const uint32_t total = per_producer * producers;
  std::vector<std::vector<uint8_t>> seen(producers, std::vector<uint8_t>(per_producer, 0));
  std::atomic<int> order_errors{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; p++) {
    threads.emplace_back([&, p] {
      uint32_t next = 0;
      void* batch[16];
      while (next < per_producer) {
        uint32_t n = std::min<uint32_t>(1 + next % 16, per_producer - next);
        for (uint32_t i = 0; i < n; i++) batch[i] = tag((uintptr_t(p) << 32) | (next + i));
        next += (next & 1) ? ring.enqueue_bulk(batch, n) : ring.enqueue_burst(batch, n);
      }
    });
  }
  for (int c = 0; c < consumers; c++) {
    threads.emplace_back([&] {
      std::vector<int64_t> last(producers, -1);
      void* batch[16];
      while (consumed.load(std::memory_order_relaxed) < total) {
        uint32_t n = ring.dequeue_burst(batch, 1 + consumed.load(std::memory_order_relaxed) % 16);
        for (uint32_t i = 0; i < n; i++) {
          uintptr_t v = reinterpret_cast<uintptr_t>(batch[i]);
          int p = int(v >> 32);
          uint32_t seq = uint32_t(v);
          seen[p][seq]++;
          if (int64_t(seq) <= last[p]) order_errors++;
          last[p] = seq;
        }
        consumed.fetch_add(n, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(consumed.load(), total);
  EXPECT_EQ(order_errors.load(), 0) << "one consumer sees each producer's elements in order";
  for (int p = 0; p < producers; p++)
    for (uint32_t i = 0; i < per_producer; i++) ASSERT_EQ(seen[p][i], 1) << "producer " << p << " element " << i;
  EXPECT_TRUE(ring.empty());
}

TEST(RingStress, SingleProducerSingleConsumer) { stress(Ring::kSingleProducer | Ring::kSingleConsumer, 1, 1, 200000); }
TEST(RingStress, MultiProducerSingleConsumer) { stress(Ring::kSingleConsumer, 2, 1, 50000); }

// With several consumers, order per producer is not defined across consumers: check
// exactly-once only.
TEST(RingStress, MultiProducerMultiConsumerExactlyOnce) {
  auto r = Ring::create("mpmc", 64, 0);
  ASSERT_TRUE(r.is_ok());
  Ring& ring = **r;
  constexpr int kProducers = 2, kConsumers = 2;
  constexpr uint32_t kEach = 20000;
  std::vector<std::atomic<uint8_t>> seen(kProducers * kEach);
  std::atomic<uint32_t> consumed{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; p++)
    threads.emplace_back([&, p] {
      for (uint32_t i = 0; i < kEach;) {
        void* o = tag(uintptr_t(p) * kEach + i + 1);
        i += ring.enqueue_burst(&o, 1);
      }
    });
  for (int c = 0; c < kConsumers; c++)
    threads.emplace_back([&] {
      void* batch[8];
      while (consumed.load() < kProducers * kEach) {
        uint32_t n = ring.dequeue_burst(batch, 8);
        for (uint32_t i = 0; i < n; i++) seen[reinterpret_cast<uintptr_t>(batch[i]) - 1]++;
        consumed += n;
      }
    });
  for (auto& t : threads) t.join();
  for (auto& s : seen) ASSERT_EQ(s.load(), 1);
}

}  // namespace
}  // namespace uvio
