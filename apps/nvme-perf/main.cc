// uvio-nvme-perf: keeps a queue depth of I/O in flight on every worker lcore (one queue
// pair each) for a while, then reports IOPS, bandwidth and a latency distribution.
// Without -a or an emulated NVMe --vdev it runs on a built-in emulated controller.
#include <uvio/cycles.h>
#include <uvio/lcore.h>
#include <uvio/nvme.h>
#include <uvio/runtime.h>

#include "apps/nvme-perf/histogram.h"

#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace uvio;

constexpr const char* kUsage =
    "uvio-nvme-perf options (after --):\n"
    "  -q N          queue depth per worker (default 32)\n"
    "  -o BYTES      I/O size, a multiple of the LBA size (default 4096)\n"
    "  -w PATTERN    read | write | randread | randwrite | rw (default randread)\n"
    "  -M PERCENT    reads in an rw mix (default 50)\n"
    "  -t SECONDS    run time (default 5)\n"
    "  --verify      write a pattern derived from each LBA and a generation; check it on read\n"
    "  --interrupt   sleep on the completion queue's interrupt when idle\n"
    "  --help        this text\n"
    "Without -a or --vdev emu_nvmeN, a 256 MiB emulated controller is used.\n";

struct Options {
  uint32_t queue_depth = 32;
  uint64_t io_bytes = 4096;
  bool random = true;
  int read_percent = 100;  // read 100, write 0, rw -M
  uint64_t seconds = 5;
  bool verify = false;
  bool interrupt = false;
};

[[noreturn]] void bad_option(const std::string& why) {
  std::fprintf(stderr, "uvio-nvme-perf: %s (see -- --help)\n", why.c_str());
  std::exit(2);
}

uint64_t parse_number(const char* opt, const char* text, uint64_t min, uint64_t max) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (!text[0] || *end || errno || text[0] == '-' || v < min || v > max)
    bad_option(fmt::format("{} '{}' is not a number in [{}, {}]", opt, text, min, max));
  return v;
}

// The application's own options: everything after "--". Parsed before the runtime
// starts so a typo costs nothing.
Options parse_options(int argc, char** argv) {
  Options o;
  int first = argc;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") {
      first = i + 1;
      break;
    }
  std::string workload = "randread";
  int mix = 50;
  bool mix_given = false;
  for (int i = first; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) bad_option(fmt::format("{} needs a value", a));
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "-q") {
      o.queue_depth = static_cast<uint32_t>(parse_number("-q", value(), 1, 65535));
    } else if (a == "-o") {
      o.io_bytes = parse_number("-o", value(), 1, 1u << 30);
    } else if (a == "-w") {
      workload = value();
    } else if (a == "-M") {
      mix = static_cast<int>(parse_number("-M", value(), 0, 100));
      mix_given = true;
    } else if (a == "-t") {
      o.seconds = parse_number("-t", value(), 1, 86400);
    } else if (a == "--verify") {
      o.verify = true;
    } else if (a == "--interrupt") {
      o.interrupt = true;
    } else {
      bad_option(fmt::format("unknown option '{}'", a));
    }
  }
  if (workload == "read" || workload == "randread") o.read_percent = 100;
  else if (workload == "write" || workload == "randwrite") o.read_percent = 0;
  else if (workload == "rw") o.read_percent = mix;
  else bad_option(fmt::format("-w '{}' is not read, write, randread, randwrite or rw", workload));
  if (mix_given && workload != "rw") bad_option("-M only applies to -w rw");
  o.random = workload.rfind("rand", 0) == 0 || workload == "rw";
  return o;
}

struct Worker;

// One I/O kept in flight. In verify mode a slot owns its own LBA range, so no two I/Os
// in flight ever touch the same block and every read knows what it must find.
struct Slot {
  Worker* worker = nullptr;
  std::byte* buf = nullptr;
  uint64_t first_unit = 0, units = 0;  // the slot's range, in I/Os
  uint64_t unit = 0;
  uint64_t start = 0;
  uint32_t generation = 0;
  bool write = false;
  bool idle = true;
};

struct Worker {
  unsigned lcore = 0;
  nvme::QueuePair* queue = nullptr;
  uint32_t nsid = 0, block_bytes = 0, blocks_per_io = 0;
  uint64_t region_lba = 0, region_units = 0, next_sequential = 0;
  const Options* opt = nullptr;
  std::vector<Slot> slots;
  std::vector<uint32_t> generations;  // verify: the last generation written per unit (0: never)
  LatencyHistogram histogram;
  uint64_t rng = 0;
  uint64_t errors = 0, mismatches = 0;
  std::atomic<uint64_t> ios{0};
  bool stopping = false;

  uint64_t random() {  // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
  }
};

uint64_t pattern_word(uint64_t lba, uint32_t generation, size_t k) {
  return (lba * 0x9E3779B97F4A7C15ull) ^ (uint64_t(generation) << 32 | k);
}

void fill_pattern(std::byte* buf, uint64_t lba, uint32_t blocks, uint32_t block_bytes, uint32_t generation) {
  for (uint32_t b = 0; b < blocks; ++b) {
    auto* w = reinterpret_cast<uint64_t*>(buf + size_t(b) * block_bytes);
    for (size_t k = 0; k < block_bytes / 8; ++k) w[k] = pattern_word(lba + b, generation, k);
  }
}

// The first block that does not hold its pattern, or -1.
int64_t check_pattern(const std::byte* buf, uint64_t lba, uint32_t blocks, uint32_t block_bytes, uint32_t generation) {
  for (uint32_t b = 0; b < blocks; ++b) {
    auto* w = reinterpret_cast<const uint64_t*>(buf + size_t(b) * block_bytes);
    for (size_t k = 0; k < block_bytes / 8; ++k)
      if (w[k] != pattern_word(lba + b, generation, k)) return int64_t(lba + b);
  }
  return -1;
}

void on_complete(void* ctx, nvme::IoStatus status);

int submit(Slot& s) {
  Worker& w = *s.worker;
  s.write = w.opt->read_percent == 0 || int(w.random() % 100) >= w.opt->read_percent;
  if (w.opt->random) s.unit = s.first_unit + w.random() % s.units;
  else {
    s.unit = w.next_sequential;
    w.next_sequential = (w.next_sequential + 1) % w.region_units;
  }
  uint64_t lba = w.region_lba + s.unit * w.blocks_per_io;
  if (w.opt->verify && s.write) {
    s.generation = w.generations[s.unit] + 1;
    fill_pattern(s.buf, lba, w.blocks_per_io, w.block_bytes, s.generation);
  }
  s.start = cycles();
  int rc = s.write ? w.queue->submit_write(w.nsid, s.buf, lba, w.blocks_per_io, on_complete, &s)
                   : w.queue->submit_read(w.nsid, s.buf, lba, w.blocks_per_io, on_complete, &s);
  s.idle = rc != 0;
  return rc;
}

void on_complete(void* ctx, nvme::IoStatus status) {
  Slot& s = *static_cast<Slot*>(ctx);
  Worker& w = *s.worker;
  w.histogram.add(cycles() - s.start);
  w.ios.store(w.ios.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  s.idle = true;
  uint64_t lba = w.region_lba + s.unit * w.blocks_per_io;
  if (!nvme::status_ok(status)) {
    if (w.errors++ < 5)
      std::fprintf(stderr, "lcore %u: %s at LBA %lu failed: %s\n", w.lcore, s.write ? "write" : "read",
                   static_cast<unsigned long>(lba), nvme::nvme_status_string(status).c_str());
  } else if (w.opt->verify) {
    if (s.write) {
      w.generations[s.unit] = s.generation;
    } else if (uint32_t gen = w.generations[s.unit]) {
      int64_t bad = check_pattern(s.buf, lba, w.blocks_per_io, w.block_bytes, gen);
      if (bad >= 0 && w.mismatches++ < 5)
        std::fprintf(stderr, "lcore %u: verify mismatch at LBA %ld (generation %u)\n", w.lcore, long(bad), gen);
    }
  }
  if (!w.stopping) (void)submit(s);
}

void print_progress(std::vector<Worker*>& workers, uint64_t second, uint64_t* last, uint64_t io_bytes) {
  uint64_t total = 0;
  for (Worker* w : workers) total += w->ios.load(std::memory_order_relaxed);
  uint64_t delta = total - *last;
  *last = total;
  std::printf("[%3lus] %10lu IOPS %10.1f MiB/s\n", static_cast<unsigned long>(second),
              static_cast<unsigned long>(delta), double(delta) * double(io_bytes) / (1 << 20));
  std::fflush(stdout);
}

// The I/O loop of one lcore. `progress` is set on the main lcore when it is also the
// only worker, which then prints the progress lines itself.
int run(Worker& w, uint64_t end, std::vector<Worker*>* progress) {
  for (Slot& s : w.slots) (void)submit(s);
  uint64_t second = cycles_per_second(), next_tick = cycles() + second, last = 0, tick = 0;
  for (;;) {
    uint64_t now = cycles();
    if (now >= end) break;
    uint32_t done = w.queue->poll();
    for (Slot& s : w.slots)  // back-pressure or a queue re-created after a reset
      if (s.idle && submit(s) == -EIO) return 1;
    if (done == 0 && w.opt->interrupt && w.queue->outstanding()) w.queue->wait(100);
    if (progress && now >= next_tick) {
      next_tick += second;
      print_progress(*progress, ++tick, &last, w.opt->io_bytes);
    }
  }
  w.stopping = true;
  while (w.queue->outstanding()) w.queue->poll();
  return 0;
}

std::string summary_line(const std::string& who, uint64_t ios, double seconds, uint64_t io_bytes,
                         const LatencyHistogram& h) {
  double us_per_cycle = 1e6 / double(cycles_per_second());
  return fmt::format("{:>8} {:>12.0f} IOPS {:>10.1f} MiB/s   avg {:>8.1f} us  p50 {:>8.1f}  p99 {:>8.1f}  p99.9 {:>8.1f}",
                     who, double(ios) / seconds, double(ios) * double(io_bytes) / seconds / (1 << 20),
                     h.mean() * us_per_cycle, double(h.percentile(50)) * us_per_cycle,
                     double(h.percentile(99)) * us_per_cycle, double(h.percentile(99.9)) * us_per_cycle);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_options(argc, argv);
  EalApp app = eal_init_or_exit(argc, argv, kUsage, [](EalConfig& cfg) {
    bool has_nvme_vdev = false;
    for (auto& v : cfg.vdevs) has_nvme_vdev |= v.name.rfind("emu_nvme", 0) == 0;
    if (cfg.allow.empty() && !has_nvme_vdev) cfg.vdevs.push_back(VdevSpec{"emu_nvme0", {{"size", "256M"}}});
  });
  Runtime& rt = *app.runtime;

  const RuntimeDevice* dev = nullptr;
  for (auto& d : rt.devices())
    if (d.is_nvme()) {
      dev = &d;
      break;
    }
  if (!dev) {
    std::fprintf(stderr, "uvio-nvme-perf: no NVMe controller among the devices (-a or --vdev emu_nvme0)\n");
    return 1;
  }
  auto ctrl_or = nvme::Controller::open(rt, *dev);
  if (!ctrl_or) {
    std::fprintf(stderr, "uvio-nvme-perf: %s\n", ctrl_or.status().describe().c_str());
    return 1;
  }
  nvme::Controller& ctrl = **ctrl_or;
  if (ctrl.namespaces().empty()) {
    std::fprintf(stderr, "uvio-nvme-perf: %s has no active namespace\n", dev->name.c_str());
    return 1;
  }
  const nvme::NamespaceInfo& ns = ctrl.namespaces()[0];
  if (opt.io_bytes % ns.block_bytes || opt.io_bytes > ctrl.info().max_transfer_bytes)
    bad_option(fmt::format("-o {} must be a multiple of the {}-byte LBA size, at most {} bytes", opt.io_bytes,
                           ns.block_bytes, ctrl.info().max_transfer_bytes));

  std::vector<unsigned> lcores = rt.lcores().worker_lcores();
  bool main_works = lcores.empty();
  if (main_works) lcores.push_back(rt.lcores().main_lcore());
  uint32_t blocks_per_io = static_cast<uint32_t>(opt.io_bytes / ns.block_bytes);
  uint64_t units_per_worker = ns.blocks / blocks_per_io / lcores.size();
  uint64_t units_per_slot = units_per_worker / opt.queue_depth;
  if (units_per_slot == 0)
    bad_option(fmt::format("namespace {} holds {} I/Os of {} bytes: too few for {} worker(s) at depth {}", ns.id,
                           ns.blocks / blocks_per_io, opt.io_bytes, lcores.size(), opt.queue_depth));

  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<Worker*> all;
  for (size_t i = 0; i < lcores.size(); ++i) {
    auto w = std::make_unique<Worker>();
    w->lcore = lcores[i];
    w->opt = &opt;
    w->nsid = ns.id;
    w->block_bytes = ns.block_bytes;
    w->blocks_per_io = blocks_per_io;
    w->region_units = units_per_worker;
    w->region_lba = i * units_per_worker * blocks_per_io;
    w->rng = 0x9E3779B97F4A7C15ull * (i + 1);
    auto q = ctrl.create_queue_pair({.entries = opt.queue_depth + 1, .interrupts = opt.interrupt});
    if (!q) {
      std::fprintf(stderr, "uvio-nvme-perf: lcore %u: %s\n", w->lcore, q.status().describe().c_str());
      return 1;
    }
    w->queue = *q;
    if (w->queue->capacity() < opt.queue_depth)
      bad_option(fmt::format("-q {} is deeper than the controller's queues ({} commands)", opt.queue_depth,
                             w->queue->capacity()));
    if (opt.verify) w->generations.assign(units_per_worker, 0);
    w->slots.resize(opt.queue_depth);
    for (uint32_t s = 0; s < opt.queue_depth; ++s) {
      Slot& slot = w->slots[s];
      slot.worker = w.get();
      slot.buf = static_cast<std::byte*>(rt.memory().alloc(opt.io_bytes, 4096));
      if (!slot.buf) {
        std::fprintf(stderr, "uvio-nvme-perf: no DMA memory for %u buffers of %lu bytes (raise -m)\n",
                     opt.queue_depth, static_cast<unsigned long>(opt.io_bytes));
        return 1;
      }
      slot.first_unit = s * units_per_slot;
      slot.units = units_per_slot;
    }
    all.push_back(w.get());
    workers.push_back(std::move(w));
  }

  std::printf("%s: %s, namespace %u: %lu x %u-byte blocks; %zu worker(s), depth %u, %lu-byte I/O, %s%s\n",
              dev->name.c_str(), ctrl.info().model.c_str(), ns.id, static_cast<unsigned long>(ns.blocks),
              ns.block_bytes, all.size(), opt.queue_depth, static_cast<unsigned long>(opt.io_bytes),
              opt.interrupt ? "interrupts" : "polling", opt.verify ? ", verify" : "");
  uint64_t start = cycles();
  uint64_t end = start + opt.seconds * cycles_per_second();
  int failed = 0;
  if (main_works) {
    failed |= run(*all[0], end, &all);
  } else {
    for (Worker* w : all) {
      Status s = rt.lcores().remote_launch(w->lcore, [w, end] { return run(*w, end, nullptr); });
      if (!s) {
        std::fprintf(stderr, "uvio-nvme-perf: %s\n", s.describe().c_str());
        return 1;
      }
    }
    uint64_t last = 0, tick = 0;
    while (cycles() < end) {
      uint64_t next = start + (tick + 1) * cycles_per_second();
      while (cycles() < std::min(next, end)) usleep(1000);
      if (cycles() >= next) print_progress(all, ++tick, &last, opt.io_bytes);
    }
    for (Worker* w : all) failed |= rt.lcores().wait(w->lcore);
  }
  double seconds = cycles_to_seconds(cycles() - start);

  LatencyHistogram total;
  uint64_t total_ios = 0, errors = 0, mismatches = 0;
  for (Worker* w : all) {
    uint64_t ios = w->ios.load();
    std::printf("%s\n", summary_line(fmt::format("lcore {}", w->lcore), ios, seconds, opt.io_bytes, w->histogram).c_str());
    total.merge(w->histogram);
    total_ios += ios;
    errors += w->errors;
    mismatches += w->mismatches;
  }
  std::printf("%s\n", summary_line("total", total_ios, seconds, opt.io_bytes, total).c_str());
  if (errors || mismatches || failed) {
    std::fprintf(stderr, "uvio-nvme-perf: %lu I/O error(s), %lu verify mismatch(es)\n",
                 static_cast<unsigned long>(errors), static_cast<unsigned long>(mismatches));
    return 1;
  }
  for (Worker* w : all) (void)ctrl.destroy_queue_pair(w->queue);
  return 0;
}
