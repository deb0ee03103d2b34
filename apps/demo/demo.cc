// uvio-demo: the runtime on its own. Reserves memory, starts lcores, and moves packets
// from a generator lcore through a ring to a checker lcore, with mbufs from a pool.
#include <uvio/cycles.h>
#include <uvio/mbuf.h>
#include <uvio/ring.h>
#include <uvio/runtime.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr const char* kUsage = R"(Application options:
  --packets N    packets to move (default 10000000)
  --burst N      packets per ring operation, 1..256 (default 32)
)";

struct Options {
  uint64_t packets = 10'000'000;
  uint32_t burst = 32;
};

bool parse_u64(const char* s, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || !end || *end || end == s || s[0] == '-') return false;
  *out = v;
  return true;
}

Options parse_app(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "uvio-demo: option %s: missing value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    uint64_t v;
    if (a == "--packets") {
      const char* s = value("--packets");
      if (!parse_u64(s, &v) || v == 0) {
        std::fprintf(stderr, "uvio-demo: option --packets: '%s' is not a positive number\n", s);
        std::exit(2);
      }
      o.packets = v;
    } else if (a == "--burst") {
      const char* s = value("--burst");
      if (!parse_u64(s, &v) || v == 0 || v > 256) {
        std::fprintf(stderr, "uvio-demo: option --burst: '%s' is not in 1..256\n", s);
        std::exit(2);
      }
      o.burst = uint32_t(v);
    } else {
      std::fprintf(stderr, "uvio-demo: unknown application option '%s' (see --help)\n", a.c_str());
      std::exit(2);
    }
  }
  return o;
}

struct Counters {
  uint64_t generated = 0;
  uint64_t received = 0;
  uint64_t out_of_order = 0;
  uint64_t bad_payload = 0;
};

// Generator: fill mbufs with a sequence number and a pattern, push them into the ring.
void generate(uvio::Mempool& pool, uvio::Ring& ring, const Options& o, Counters& c) {
  uvio::Mbuf* burst[256];
  while (c.generated < o.packets) {
    uint32_t n = uint32_t(std::min<uint64_t>(o.burst, o.packets - c.generated));
    if (!uvio::mbuf_alloc_bulk(pool, burst, n)) continue;  // the checker still holds them
    for (uint32_t i = 0; i < n; i++) {
      auto* p = reinterpret_cast<uint64_t*>(uvio::mbuf_append(burst[i], 64));
      p[0] = c.generated + i;
      p[1] = ~p[0];
    }
    uint32_t sent = 0;
    while (sent < n) sent += ring.enqueue_burst(reinterpret_cast<void**>(burst) + sent, n - sent);
    c.generated += n;
  }
}

// Checker: every packet arrives once, in order, with its payload intact.
bool check(uvio::Ring& ring, const Options& o, Counters& c) {
  uvio::Mbuf* burst[256];
  uint32_t n = ring.dequeue_burst(reinterpret_cast<void**>(burst), o.burst);
  for (uint32_t i = 0; i < n; i++) {
    auto* p = burst[i]->data_as<uint64_t>();
    if (p[0] != c.received) c.out_of_order++;
    if (p[1] != ~p[0] || burst[i]->pkt_len != 64) c.bad_payload++;
    c.received++;
  }
  uvio::mbuf_free_bulk(burst, n);
  return c.received < o.packets;
}

}  // namespace

int main(int argc, char** argv) {
  uvio::EalApp app = uvio::eal_init_or_exit(argc, argv, kUsage);
  Options o = parse_app(app.argc, app.argv);
  uvio::Runtime& rt = *app.runtime;

  uvio::MemStats ms = rt.memory().stats();
  for (const uvio::MemArea* a : rt.memory().areas())
    std::printf("memory: area %u, %zu MiB of %s pages at %p, fd %d, IOVA 0x%" PRIx64 "\n", a->id, a->len >> 20,
                a->hugepages ? "2 MiB huge" : "4 KiB", static_cast<void*>(a->va), a->fd, a->iova);
  std::printf("memory: %zu MiB total, %zu MiB free\n", ms.total >> 20, ms.free >> 20);
  for (const uvio::RuntimeDevice& d : rt.devices())
    std::printf("device: %s, PCI %04x:%04x class %06x (%s)\n", d.name.c_str(), d.vendor_id, d.device_id, d.class_code,
                d.is_nvme() ? "NVMe" : d.is_virtio_net() ? "virtio-net" : "other");

  auto pool = uvio::mbuf_pool_create(rt.memory(), "demo_pkts", 8191, 256);
  if (!pool) {
    std::fprintf(stderr, "uvio-demo: %s\n", pool.status().message().c_str());
    return 1;
  }
  auto ring = uvio::Ring::create("demo_ring", 1024, uvio::Ring::kSingleProducer | uvio::Ring::kSingleConsumer);
  if (!ring) {
    std::fprintf(stderr, "uvio-demo: %s\n", ring.status().message().c_str());
    return 1;
  }
  std::printf("pool: %u mbufs of %zu bytes; ring: %u slots, SP/SC\n", (*pool)->count(), (*pool)->object_size(),
              (*ring)->size());

  Counters c;
  auto workers = rt.lcores().worker_lcores();
  uint64_t t0 = uvio::cycles();
  if (!workers.empty()) {
    unsigned gen_lcore = workers.front();
    std::printf("lcores: generator on lcore %u (CPU %d), checker on main lcore %u (CPU %d)\n", gen_lcore,
                rt.lcores().cpu_of(gen_lcore), rt.lcores().main_lcore(), rt.lcores().cpu_of(rt.lcores().main_lcore()));
    Counters gen;
    auto st = rt.lcores().remote_launch(gen_lcore, [&] {
      generate(**pool, **ring, o, gen);
      (*pool)->flush_cache();
      return 0;
    });
    if (!st) {
      std::fprintf(stderr, "uvio-demo: %s\n", st.message().c_str());
      return 1;
    }
    while (check(**ring, o, c)) {}
    rt.lcores().wait(gen_lcore);
    c.generated = gen.generated;
  } else {
    std::printf("lcores: one lcore; generator and checker take turns on lcore %u\n", rt.lcores().main_lcore());
    Options step = o;
    while (c.received < o.packets) {
      step.packets = std::min(o.packets, c.generated + 512);
      generate(**pool, **ring, step, c);
      while (c.received < c.generated) check(**ring, o, c);
    }
  }
  uint64_t cyc = uvio::cycles() - t0;
  (*pool)->flush_cache();
  double secs = uvio::cycles_to_seconds(cyc);
  std::printf("moved: %" PRIu64 " packets in %.3f s: %.2f Mpps, %.1f cycles/packet (generate + ring + check + free)\n",
              c.received, secs, double(c.received) / secs / 1e6, double(cyc) / double(c.received));
  std::printf("check: %" PRIu64 " generated, %" PRIu64 " received, %" PRIu64 " out of order, %" PRIu64 " bad payloads, %u mbufs still in use\n",
              c.generated, c.received, c.out_of_order, c.bad_payload, (*pool)->in_use());
  bool ok = c.generated == c.received && c.out_of_order == 0 && c.bad_payload == 0 && (*pool)->in_use() == 0;
  std::printf("%s\n", ok ? "demo: OK" : "demo: FAILED");
  return ok ? 0 : 1;
}
