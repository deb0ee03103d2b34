// A log-linear latency histogram: exact below 32, then 16 linear steps per power of two
// (about 6 % resolution), so recording is a shift and an increment.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

class LatencyHistogram {
 public:
  static constexpr unsigned kExact = 32;
  static constexpr unsigned kSteps = 16;
  static constexpr unsigned kBuckets = kExact + (64 - 5) * kSteps;

  static unsigned bucket_of(uint64_t v) {
    if (v < kExact) return static_cast<unsigned>(v);
    unsigned msb = 63 - std::countl_zero(v);
    return kExact + (msb - 5) * kSteps + static_cast<unsigned>((v >> (msb - 4)) & (kSteps - 1));
  }
  // The smallest value that falls in bucket b.
  static uint64_t lower_bound(unsigned b) {
    if (b < kExact) return b;
    unsigned msb = (b - kExact) / kSteps + 5;
    return (uint64_t(1) << msb) | uint64_t((b - kExact) % kSteps) << (msb - 4);
  }

  void add(uint64_t v) {
    ++counts_[bucket_of(v)];
    ++count_;
    sum_ += v;
  }
  void merge(const LatencyHistogram& o) {
    for (unsigned i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
  }
  uint64_t count() const { return count_; }
  double mean() const { return count_ ? double(sum_) / double(count_) : 0; }
  // The lower bound of the bucket holding the p-th percentile (0 < p <= 100).
  uint64_t percentile(double p) const {
    if (!count_) return 0;
    uint64_t rank = static_cast<uint64_t>(double(count_) * p / 100.0 + 0.5);
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return lower_bound(i);
    }
    return lower_bound(kBuckets - 1);
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
};
