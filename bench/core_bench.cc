// Ring, mempool and mbuf costs, uvio and DPDK side by side in one process and one run,
// built with the same -march. Each benchmark reports cycles per element (TSC); the
// program ends with the uvio/DPDK ratio of each pair.
//
//   uvio-bench-core [--no-huge] [google-benchmark flags]
// By default each benchmark runs 7 times, interleaved at random with the others.
#include <uvio/cycles.h>
#include <uvio/lcore.h>
#include <uvio/mbuf.h>
#include <uvio/mempool.h>
#include <uvio/ring.h>
#include <uvio/topology.h>

#include <benchmark/benchmark.h>

#ifdef UVIO_HAVE_DPDK
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#endif

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

std::unique_ptr<uvio::Memory> g_memory;
bool g_hugepages = true;

void report_cycles(benchmark::State& state, uint64_t cycles, uint64_t elements) {
  state.counters["cyc/elem"] = double(cycles) / double(elements ? elements : 1);
  state.SetItemsProcessed(int64_t(elements));
}

// The other core for two-core runs: the first usable CPU that is not the caller's.
int other_cpu() {
  int mine = sched_getcpu();
  for (int c : uvio::topology::usable_cpus())
    if (c != mine) return c;
  return -1;
}

// ---- ring ----

void UvioRingOneCore(benchmark::State& state) {
  const unsigned flags = unsigned(state.range(0)) ? uvio::Ring::kSingleProducer | uvio::Ring::kSingleConsumer : 0;
  const uint32_t burst = uint32_t(state.range(1));
  auto ring = std::move(uvio::Ring::create("b", 1024, flags).value());
  void* objs[64];
  for (uint32_t i = 0; i < 64; i++) objs[i] = &objs[i];
  uint64_t elements = 0, cyc = 0;
  for (auto _ : state) {
    uint64_t t0 = uvio::cycles();
    for (int i = 0; i < 1024; i++) {
      ring->enqueue_burst(objs, burst);
      ring->dequeue_burst(objs, burst);
    }
    cyc += uvio::cycles() - t0;
    elements += 1024ull * burst;
  }
  benchmark::DoNotOptimize(objs);
  report_cycles(state, cyc, elements);
}

template <class Enq, class Deq>
void two_core(benchmark::State& state, uint32_t burst, Enq enqueue, Deq dequeue) {
  int cpu = other_cpu();
  if (cpu < 0) {
    state.SkipWithError("needs two CPUs");
    return;
  }
  constexpr uint64_t kPerIteration = 1 << 20;
  uint64_t elements = 0, cyc = 0;
  void* in[64];
  void* out[64];
  for (uint32_t i = 0; i < 64; i++) in[i] = &in[i];
  for (auto _ : state) {
    std::atomic<bool> go{false};
    std::thread producer([&] {
      uvio::topology::pin_current_thread(cpu);
      while (!go.load(std::memory_order_acquire)) {}
      uint64_t sent = 0;
      while (sent < kPerIteration) sent += enqueue(in, uint32_t(std::min<uint64_t>(burst, kPerIteration - sent)));
    });
    go.store(true, std::memory_order_release);
    uint64_t t0 = uvio::cycles();
    uint64_t got = 0;
    while (got < kPerIteration) got += dequeue(out, burst);
    cyc += uvio::cycles() - t0;
    producer.join();
    elements += kPerIteration;
  }
  report_cycles(state, cyc, elements);
}

void UvioRingTwoCores(benchmark::State& state) {
  const unsigned flags = unsigned(state.range(0)) ? uvio::Ring::kSingleProducer | uvio::Ring::kSingleConsumer : 0;
  auto ring = std::move(uvio::Ring::create("b2", 1024, flags).value());
  two_core(state, uint32_t(state.range(1)), [&](void** o, uint32_t n) { return ring->enqueue_burst(o, n); },
           [&](void** o, uint32_t n) { return ring->dequeue_burst(o, n); });
}

// ---- mempool ----

void UvioMempool(benchmark::State& state) {
  const uint32_t n = uint32_t(state.range(0)), cache = uint32_t(state.range(1));
  auto mp = std::move(uvio::Mempool::create(*g_memory, "bench", 8192, 64, cache).value());
  uvio::set_lcore_id(0);
  void* objs[64];
  uint64_t elements = 0, cyc = 0;
  for (auto _ : state) {
    uint64_t t0 = uvio::cycles();
    for (int i = 0; i < 1024; i++) {
      mp->get_bulk(objs, n);
      mp->put_bulk(objs, n);
    }
    cyc += uvio::cycles() - t0;
    elements += 1024ull * n;
  }
  report_cycles(state, cyc, elements);
}

void UvioMbufBulk(benchmark::State& state) {
  auto mp = std::move(uvio::mbuf_pool_create(*g_memory, "mbufs", 8191, 256).value());
  uvio::set_lcore_id(0);
  uvio::Mbuf* m[32];
  uint64_t elements = 0, cyc = 0;
  for (auto _ : state) {
    uint64_t t0 = uvio::cycles();
    for (int i = 0; i < 1024; i++) {
      uvio::mbuf_alloc_bulk(*mp, m, 32);
      uvio::mbuf_free_bulk(m, 32);
    }
    cyc += uvio::cycles() - t0;
    elements += 1024ull * 32;
  }
  report_cycles(state, cyc, elements);
}

#ifdef UVIO_HAVE_DPDK
void DpdkRingOneCore(benchmark::State& state) {
  const unsigned flags = unsigned(state.range(0)) ? RING_F_SP_ENQ | RING_F_SC_DEQ : 0;
  const uint32_t burst = uint32_t(state.range(1));
  static int seq;
  std::string name = "dr" + std::to_string(seq++);
  rte_ring* ring = rte_ring_create(name.c_str(), 1024, SOCKET_ID_ANY, flags);
  void* objs[64];
  for (uint32_t i = 0; i < 64; i++) objs[i] = &objs[i];
  uint64_t elements = 0, cyc = 0;
  for (auto _ : state) {
    uint64_t t0 = uvio::cycles();
    for (int i = 0; i < 1024; i++) {
      rte_ring_enqueue_burst(ring, objs, burst, nullptr);
      rte_ring_dequeue_burst(ring, objs, burst, nullptr);
    }
    cyc += uvio::cycles() - t0;
    elements += 1024ull * burst;
  }
  benchmark::DoNotOptimize(objs);
  rte_ring_free(ring);
  report_cycles(state, cyc, elements);
}

void DpdkRingTwoCores(benchmark::State& state) {
  const unsigned flags = unsigned(state.range(0)) ? RING_F_SP_ENQ | RING_F_SC_DEQ : 0;
  static int seq;
  std::string name = "dr2_" + std::to_string(seq++);
  rte_ring* ring = rte_ring_create(name.c_str(), 1024, SOCKET_ID_ANY, flags);
  two_core(state, uint32_t(state.range(1)), [&](void** o, uint32_t n) { return rte_ring_enqueue_burst(ring, o, n, nullptr); },
           [&](void** o, uint32_t n) { return rte_ring_dequeue_burst(ring, o, n, nullptr); });
  rte_ring_free(ring);
}

void DpdkMempool(benchmark::State& state) {
  const uint32_t n = uint32_t(state.range(0)), cache = uint32_t(state.range(1));
  static int seq;
  std::string name = "dm" + std::to_string(seq++);
  rte_mempool* mp = rte_mempool_create(name.c_str(), 8192, 64, cache, 0, nullptr, nullptr, nullptr, nullptr, SOCKET_ID_ANY, 0);
  if (!mp) {
    state.SkipWithError("rte_mempool_create failed");
    return;
  }
  void* objs[64];
  uint64_t elements = 0, cyc = 0;
  for (auto _ : state) {
    uint64_t t0 = uvio::cycles();
    for (int i = 0; i < 1024; i++) {
      rte_mempool_get_bulk(mp, objs, n);
      rte_mempool_put_bulk(mp, objs, n);
    }
    cyc += uvio::cycles() - t0;
    elements += 1024ull * n;
  }
  rte_mempool_free(mp);
  report_cycles(state, cyc, elements);
}

void DpdkMbufBulk(benchmark::State& state) {
  static int seq;
  std::string name = "dmb" + std::to_string(seq++);
  rte_mempool* mp = rte_pktmbuf_pool_create(name.c_str(), 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (!mp) {
    state.SkipWithError("rte_pktmbuf_pool_create failed");
    return;
  }
  rte_mbuf* m[32];
  uint64_t elements = 0, cyc = 0;
  for (auto _ : state) {
    uint64_t t0 = uvio::cycles();
    for (int i = 0; i < 1024; i++) {
      rte_pktmbuf_alloc_bulk(mp, m, 32);
      rte_pktmbuf_free_bulk(m, 32);
    }
    cyc += uvio::cycles() - t0;
    elements += 1024ull * 32;
  }
  rte_mempool_free(mp);
  report_cycles(state, cyc, elements);
}
#endif

// Ring args: {single (1) or multi (0), burst}.
void ring_args(benchmark::internal::Benchmark* b) {
  for (int single : {1, 0})
    for (int burst : {8, 32}) b->Args({single, burst});
}
void two_core_args(benchmark::internal::Benchmark* b) {
  for (int single : {1, 0}) b->Args({single, 32});
}
// Mempool args: {objects per call, cache size}.
void mempool_args(benchmark::internal::Benchmark* b) {
  for (int cache : {0, 512})
    for (int n : {1, 4, 32}) b->Args({n, cache});
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Collects cyc/elem per benchmark name for the ratio table, and prints as usual.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, std::vector<double>> cycles;
  std::map<std::string, double> medians;
  double median_of(const std::string& name) {
    auto m = medians.find(name);
    return m != medians.end() ? m->second : median(cycles[name]);
  }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      auto it = r.counters.find("cyc/elem");
      if (it == r.counters.end()) continue;
      if (r.run_type == Run::RT_Iteration) cycles[r.run_name.str()].push_back(it->second);
      else if (r.aggregate_name == "median") medians[r.run_name.str()] = it->second;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

std::string describe(const std::string& kind, const std::string& args) {
  // args like "1/32" for rings, "32/512" for mempools
  auto slash = args.find('/');
  std::string a = args.substr(0, slash), b = slash == std::string::npos ? "" : args.substr(slash + 1);
  if (kind == "RingOneCore") return std::string(a == "1" ? "ring SP/SC" : "ring MP/MC") + " burst " + b + ", one core";
  if (kind == "RingTwoCores") return std::string(a == "1" ? "ring SP/SC" : "ring MP/MC") + " burst " + b + ", producer->consumer on two cores";
  if (kind == "Mempool") return "mempool get/put " + a + ", cache " + b;
  if (kind == "MbufBulk") return "mbuf alloc_bulk+free_bulk 32";
  return kind + " " + args;
}

}  // namespace

BENCHMARK(UvioRingOneCore)->Apply(ring_args);
BENCHMARK(UvioRingTwoCores)->Apply(two_core_args)->Iterations(20)->UseRealTime();
BENCHMARK(UvioMempool)->Apply(mempool_args);
BENCHMARK(UvioMbufBulk);
#ifdef UVIO_HAVE_DPDK
BENCHMARK(DpdkRingOneCore)->Apply(ring_args);
BENCHMARK(DpdkRingTwoCores)->Apply(two_core_args)->Iterations(20)->UseRealTime();
BENCHMARK(DpdkMempool)->Apply(mempool_args);
BENCHMARK(DpdkMbufBulk);
#endif

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; i++) {
    if (std::strcmp(argv[i], "--no-huge") == 0) g_hugepages = false;
    else args.push_back(argv[i]);
  }
  if (g_hugepages) {
    std::ifstream in("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    long free_pages = 0;
    in >> free_pages;
    if (free_pages < 512) {
      std::fprintf(stderr, "uvio-bench-core: %ld free 2 MiB hugepages (512 needed for both sides): running with --no-huge\n", free_pages);
      g_hugepages = false;
    }
  }
  int cpu0 = uvio::topology::usable_cpus().front();
  uvio::topology::pin_current_thread(cpu0);
#ifdef UVIO_HAVE_DPDK
  std::string lcore = "--lcores=0@" + std::to_string(cpu0);
  std::vector<const char*> eal = {"uvio-bench-core", lcore.c_str(), "--no-pci", "--file-prefix=uvio-bench", "--log-level=error", "-m", "512"};
  eal.push_back(g_hugepages ? "--in-memory" : "--no-huge");
  if (rte_eal_init(int(eal.size()), const_cast<char**>(eal.data())) < 0) {
    std::fprintf(stderr, "uvio-bench-core: DPDK EAL init failed; DPDK side skipped\n");
    return 1;
  }
#endif
  uvio::MemConfig mc;
  mc.total_bytes = 128 << 20;
  mc.hugepages = g_hugepages;
  auto mem = uvio::Memory::create(mc);
  if (!mem) {
    std::fprintf(stderr, "uvio-bench-core: %s\n", mem.status().message().c_str());
    return 1;
  }
  g_memory = std::move(mem.value());

  // Repetitions in random order, so that a burst of load on this machine hits both sides
  // alike; the table reports medians.
  bool has_reps = false;
  for (char* a : args) has_reps |= std::strncmp(a, "--benchmark_repetitions", 23) == 0;
  static char reps[] = "--benchmark_repetitions=7";
  static char interleave[] = "--benchmark_enable_random_interleaving=true";
  static char min_time[] = "--benchmark_min_time=0.05";
  static char aggregates[] = "--benchmark_display_aggregates_only=true";
  if (!has_reps) args.insert(args.begin() + 1, {reps, interleave, min_time, aggregates});
  int bargc = int(args.size());
  benchmark::Initialize(&bargc, args.data());
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  std::printf("\nmemory: %s\n", g_hugepages ? "2 MiB hugepages (both sides)" : "4 KiB pages (--no-huge, both sides)");
  std::printf("%-58s %10s %10s %8s\n", "what (cycles per element, median)", "uvio", "DPDK", "ratio");
  std::vector<std::string> names;
  for (auto& [name, vals] : reporter.cycles) names.push_back(name);
  for (auto& [name, v] : reporter.medians)
    if (!reporter.cycles.count(name)) names.push_back(name);
  for (const std::string& name : names) {
    if (name.rfind("Uvio", 0) != 0) continue;
    std::string rest = name.substr(4);
    auto slash = rest.find('/');
    std::string kind = rest.substr(0, slash);
    std::string args_text = slash == std::string::npos ? "" : rest.substr(slash + 1);
    // Drop Google Benchmark's suffixes (iterations:, real_time) from the argument text.
    for (const char* suffix : {"/iterations:20", "/real_time"}) {
      auto pos = args_text.find(suffix + 1);
      if (pos != std::string::npos) args_text = args_text.substr(0, pos ? pos - 1 : 0);
    }
    double u = reporter.median_of(name);
    std::string peer = "Dpdk" + rest;
    if (!reporter.cycles.count(peer) && !reporter.medians.count(peer)) {
      std::printf("%-58s %10.2f %10s %8s\n", describe(kind, args_text).c_str(), u, "-", "-");
      continue;
    }
    double d = reporter.median_of(peer);
    std::printf("%-58s %10.2f %10.2f %8.2f\n", describe(kind, args_text).c_str(), u, d, d > 0 ? u / d : 0.0);
  }
  benchmark::Shutdown();
  return 0;
}
