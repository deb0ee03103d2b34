// The cost of testpmd's io-forwarding loop (apps/testpmd/forward.cc) on a null port:
// rx_burst hands out freshly allocated mbufs with a length set, tx_burst frees what
// it gets; the same work as DPDK's net_null in dpdk-testpmd's io mode, so the cycles
// per packet compare the forwarding loop, the port call and the mbuf pool, nothing else.
#include <uvio/cycles.h>
#include <uvio/ethdev.h>
#include <uvio/lcore.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>

#include "apps/testpmd/forward.h"

#include <benchmark/benchmark.h>

#include <ctime>

namespace uvio {
namespace {

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

class NullPort final : public EthPort {
 public:
  explicit NullPort(Mempool& pool) : pool_(pool) {}
  std::string_view name() const override { return "null"; }
  uint16_t max_queue_pairs() const override { return 1; }
  std::array<uint8_t, 6> mac() const override { return {0x02, 0, 0, 0, 0, 1}; }
  Status configure(const EthConfig&) override { return Status::ok(); }
  Status start() override { return Status::ok(); }
  void stop() override {}
  uint16_t rx_burst(uint16_t, Mbuf** pkts, uint16_t n) override {
    if (!mbuf_alloc_bulk(pool_, pkts, n)) return 0;
    for (uint16_t i = 0; i < n; i++) {
      pkts[i]->data_len = 64;
      pkts[i]->pkt_len = 64;
    }
    rx_ += n;
    return n;
  }
  uint16_t tx_burst(uint16_t, Mbuf** pkts, uint16_t n) override {
    mbuf_free_bulk(pkts, n);
    tx_ += n;
    return n;
  }
  EthStats stats() const override {
    EthStats s;
    s.rx_packets = rx_;
    s.tx_packets = tx_;
    return s;
  }
  void reset_stats() override { rx_ = tx_ = 0; }
  EthLink link() override { return {true, 1500}; }
  int rx_interrupt_fd(uint16_t) const override { return -1; }
  bool rx_interrupt_arm(uint16_t) override { return false; }
  void rx_interrupt_disarm(uint16_t) override {}

 private:
  Mempool& pool_;
  uint64_t rx_ = 0, tx_ = 0;
};

void BM_IoForwardNullPort(benchmark::State& state) {
  set_lcore_id(0);  // mempool per-lcore cache, as on a forwarding lcore
  MemConfig cfg;
  cfg.total_bytes = 64u << 20;
  auto mem = Memory::create(cfg);  // hugepages when there are some, as DPDK would use
  if (!mem) {
    cfg.hugepages = false;
    mem = Memory::create(cfg);
  }
  if (!mem) {
    state.SkipWithError(mem.status().describe().c_str());
    return;
  }
  auto pool = mbuf_pool_create(**mem, "fwd_bench", 8191, 256);
  if (!pool) {
    state.SkipWithError(pool.status().describe().c_str());
    return;
  }
  NullPort port(**pool);
  testpmd::Stream s;
  s.rx_port = s.tx_port = &port;
  s.mode = testpmd::ForwardMode::Io;
  s.burst = static_cast<uint16_t>(state.range(0));
  uint64_t packets = 0;
  // The machine is shared: count the thread's CPU time in TSC cycles, not wall time,
  // so that being descheduled does not show up as cost.
  double cpu_start = thread_cpu_seconds();
  for (auto _ : state) packets += testpmd::forward_step(s);
  double cpu = thread_cpu_seconds() - cpu_start;
  double per_packet = cpu * static_cast<double>(cycles_per_second()) / static_cast<double>(packets ? packets : 1);
  state.counters["cycles/packet"] = per_packet;
  state.counters["Mpps(cpu)"] = static_cast<double>(packets) / cpu / 1e6;
  set_lcore_id(kNoLcore);
}
BENCHMARK(BM_IoForwardNullPort)->Arg(32)->Arg(64);

}  // namespace
}  // namespace uvio

BENCHMARK_MAIN();
