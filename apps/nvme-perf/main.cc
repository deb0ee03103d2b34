// uvio-nvme-perf: keeps a queue depth of I/O in flight on every worker lcore (one queue
// pair each) for a while, then reports IOPS, bandwidth and a latency distribution.
// Without -a or an emulated NVMe --vdev it runs on a built-in emulated controller.
#include <uvio/cycles.h>
#include <uvio/lcore.h>
#include <uvio/migrate.h>
#include <uvio/nvme.h>
#include <uvio/runtime.h>

#include "apps/nvme-perf/histogram.h"
#include "iommu/device.h"
#include "lib/state_io.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdint>
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
    "  -s BYTES      use only the first BYTES of the namespace (default: all of it); a small\n"
    "                span makes --verify reads find written blocks soon\n"
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
  uint64_t span_bytes = 0;  // 0: the whole namespace
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
    } else if (a == "-s") {
      o.span_bytes = parse_number("-s", value(), 1, UINT64_MAX);
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
  uint64_t verified_reads = 0;                  // reads checked against a known pattern
  uint64_t interrupt_waits = 0, interrupt_wakeups = 0;
  std::atomic<uint64_t> ios{0};
  bool stopping = false;
  // Service mode (worker lcores): when the run ends, and whether this worker is done
  // (nothing outstanding after the end) or hit an unrecoverable queue.
  uint64_t end = 0;
  bool failed = false;
  std::atomic<bool> finished{false};

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
      ++w.verified_reads;
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
    if (done == 0 && w.opt->interrupt && w.queue->outstanding()) {
      ++w.interrupt_waits;
      if (w.queue->wait(100)) ++w.interrupt_wakeups;
    }
    if (progress && now >= next_tick) {
      next_tick += second;
      print_progress(*progress, ++tick, &last, w.opt->io_bytes);
    }
  }
  w.stopping = true;
  while (w.queue->outstanding()) w.queue->poll();
  return 0;
}

// One step of a worker's service: reap completions, then fill the depth again. The
// service runner calls it in a loop and a migration pauses it between two steps.
void service_step(Worker& w) {
  if (w.finished.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));  // done: leave the CPU to others
    return;
  }
  if (!w.stopping && cycles() >= w.end) w.stopping = true;
  uint32_t done = w.queue->poll();
  if (!w.stopping) {
    for (Slot& s : w.slots)  // back-pressure or a queue re-created after a reset
      if (s.idle && submit(s) == -EIO) {
        w.failed = true;
        w.stopping = true;
        break;
      }
  }
  if (w.stopping) {
    if (!w.queue->outstanding()) w.finished.store(true, std::memory_order_release);
    return;
  }
  if (done == 0 && w.opt->interrupt && w.queue->outstanding()) {
    ++w.interrupt_waits;
    if (w.queue->wait(100)) ++w.interrupt_wakeups;
  }
}

std::string summary_line(const std::string& who, uint64_t ios, double seconds, uint64_t io_bytes,
                         const LatencyHistogram& h) {
  double us_per_cycle = 1e6 / double(cycles_per_second());
  return fmt::format("{:>8} {:>12.0f} IOPS {:>10.1f} MiB/s   avg {:>8.1f} us  p50 {:>8.1f}  p99 {:>8.1f}  p99.9 {:>8.1f}",
                     who, double(ios) / seconds, double(ios) * double(io_bytes) / seconds / (1 << 20),
                     h.mean() * us_per_cycle, double(h.percentile(50)) * us_per_cycle,
                     double(h.percentile(99)) * us_per_cycle, double(h.percentile(99.9)) * us_per_cycle);
}


// A run's state outside runtime memory: what a live migration carries (the slots'
// buffers are in runtime memory and arrive at the same addresses).
struct Job {
  Runtime* rt = nullptr;
  const Options* opt = nullptr;
  std::unique_ptr<nvme::Controller> ctrl;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<Worker*> all;
  uint64_t start = 0;              // cycles when this process's part of the run began
  uint64_t elapsed_before_ns = 0;  // a destination: how long the source ran
  uint64_t elapsed_ns() const {
    return elapsed_before_ns + static_cast<uint64_t>(cycles_to_seconds(cycles() - start) * 1e9);
  }
};

constexpr std::string_view kJobTag = "uvio-nvme-perf-state-v1";
constexpr uint32_t kMaxControllerState = 64u << 20;

// Source, lcores paused and the controller quiesced (every slot idle).
Status save_job(Job& job, std::vector<uint8_t>& out) {
  const Options& o = *job.opt;
  std::vector<nvme::QueuePair*> queues = job.ctrl->queue_pairs();
  std::vector<uint8_t> ctrl_state;
  UVIO_TRY(job.ctrl->save_state(ctrl_state));
  StateWriter w(out);
  w.put_string(kJobTag);
  w.put<uint32_t>(o.queue_depth);
  w.put<uint64_t>(o.io_bytes);
  w.put<int32_t>(o.read_percent);
  w.put_bool(o.random);
  w.put_bool(o.verify);
  w.put_bool(o.interrupt);
  w.put<uint64_t>(job.elapsed_ns());
  w.put<uint32_t>(static_cast<uint32_t>(job.all.size()));
  for (Worker* wk : job.all) {
    auto it = std::find(queues.begin(), queues.end(), wk->queue);
    if (it == queues.end()) return Status::error(EINVAL, fmt::format("lcore {}: its queue pair is gone", wk->lcore));
    w.put<uint32_t>(wk->lcore);
    w.put<uint32_t>(static_cast<uint32_t>(it - queues.begin()));
    w.put<uint32_t>(wk->nsid);
    w.put<uint32_t>(wk->block_bytes);
    w.put<uint32_t>(wk->blocks_per_io);
    w.put<uint64_t>(wk->region_lba);
    w.put<uint64_t>(wk->region_units);
    w.put<uint64_t>(wk->next_sequential);
    w.put<uint64_t>(wk->rng);
    w.put<uint64_t>(wk->errors);
    w.put<uint64_t>(wk->mismatches);
    w.put<uint64_t>(wk->verified_reads);
    w.put<uint64_t>(wk->interrupt_waits);
    w.put<uint64_t>(wk->interrupt_wakeups);
    w.put<uint64_t>(wk->ios.load());
    w.put_bool(wk->stopping);
    w.put_bool(wk->failed);
    w.put(wk->histogram);
    w.put<uint64_t>(wk->generations.size());
    for (uint32_t g : wk->generations) w.put<uint32_t>(g);
    w.put<uint32_t>(static_cast<uint32_t>(wk->slots.size()));
    for (const Slot& sl : wk->slots) {
      if (!sl.idle) return Status::error(EBUSY, fmt::format("lcore {}: an I/O is still in flight", wk->lcore));
      w.put_address(sl.buf);
      w.put<uint64_t>(sl.first_unit);
      w.put<uint64_t>(sl.units);
    }
  }
  w.put_string(std::string_view(reinterpret_cast<const char*>(ctrl_state.data()), ctrl_state.size()));
  return Status::ok();
}

bool in_runtime_memory(Runtime& rt, const std::byte* p, uint64_t len) {
  for (const MemArea* a : rt.memory().areas())
    if (p >= a->va && len <= a->len && p - a->va <= static_cast<ptrdiff_t>(a->len - len)) return true;
  return false;
}

// Destination, inside receive(): the controller on the NVMe device of this process, the
// workers on the same lcores with their queue pairs, ledgers and counters.
Status load_job(Job& job, std::span<const uint8_t> in) {
  const Options& o = *job.opt;
  Runtime& rt = *job.rt;
  StateReader r(in);
  std::string tag;
  if (!r.get_string(&tag, 64) || tag != kJobTag)
    return Status::error(EINVAL, "nvme-perf: the migrated state is not uvio-nvme-perf's (or of another version)");
  uint32_t depth = 0, n_workers = 0;
  uint64_t io_bytes = 0, elapsed_ns = 0;
  int32_t read_percent = 0;
  bool random = false, verify = false, interrupt = false;
  r.get(&depth), r.get(&io_bytes), r.get(&read_percent), r.get_bool(&random), r.get_bool(&verify);
  r.get_bool(&interrupt), r.get(&elapsed_ns), r.get(&n_workers);
  if (!r.ok()) return Status::error(EINVAL, "nvme-perf: the migrated state is truncated");
  if (depth != o.queue_depth || io_bytes != o.io_bytes || read_percent != o.read_percent || random != o.random ||
      verify != o.verify || interrupt != o.interrupt)
    return Status::error(EINVAL, "nvme-perf: the source runs another workload (-q, -o, -w, -M, --verify, "
                                 "--interrupt): start the destination with the same options");
  std::vector<unsigned> lcores = rt.lcores().worker_lcores();
  if (n_workers == 0 || n_workers > lcores.size())
    return Status::error(EINVAL, fmt::format("nvme-perf: the source had {} workers, this process has {} worker lcores",
                                             n_workers, lcores.size()));
  std::vector<uint32_t> queue_index(n_workers);
  for (uint32_t i = 0; i < n_workers; i++) {
    auto wk = std::make_unique<Worker>();
    wk->opt = &o;
    uint32_t lcore = 0, nslots = 0;
    uint64_t ios = 0, ngen = 0;
    r.get(&lcore), r.get(&queue_index[i]), r.get(&wk->nsid), r.get(&wk->block_bytes), r.get(&wk->blocks_per_io);
    r.get(&wk->region_lba), r.get(&wk->region_units), r.get(&wk->next_sequential), r.get(&wk->rng);
    r.get(&wk->errors), r.get(&wk->mismatches), r.get(&wk->verified_reads), r.get(&wk->interrupt_waits);
    r.get(&wk->interrupt_wakeups), r.get(&ios), r.get_bool(&wk->stopping), r.get_bool(&wk->failed);
    r.get(&wk->histogram), r.get(&ngen);
    if (!r.ok()) return Status::error(EINVAL, "nvme-perf: the migrated state is truncated");
    if (std::find(lcores.begin(), lcores.end(), lcore) == lcores.end())
      return Status::error(EINVAL, fmt::format("nvme-perf: the source worked on lcore {}, not a worker lcore here "
                                               "(give the same -l)", lcore));
    wk->lcore = lcore;
    wk->ios.store(ios);
    if (!r.has_room(ngen, 4) || (verify && ngen != wk->region_units) || (!verify && ngen != 0))
      return Status::error(EINVAL, "nvme-perf: the migrated verify ledger does not fit the worker's region");
    wk->generations.resize(ngen);
    for (uint32_t& g : wk->generations) r.get(&g);
    if (!r.get(&nslots) || nslots != depth)
      return Status::error(EINVAL, "nvme-perf: the migrated slots do not match the queue depth");
    if (wk->blocks_per_io == 0 || uint64_t(wk->blocks_per_io) * wk->block_bytes != io_bytes || wk->block_bytes % 8)
      return Status::error(EINVAL, "nvme-perf: the migrated I/O geometry is inconsistent");
    wk->slots.resize(nslots);
    for (Slot& sl : wk->slots) {
      sl.worker = wk.get();
      r.get_address(&sl.buf), r.get(&sl.first_unit), r.get(&sl.units);
      if (!r.ok()) return Status::error(EINVAL, "nvme-perf: the migrated state is truncated");
      if (!in_runtime_memory(rt, sl.buf, io_bytes))
        return Status::error(EINVAL, "nvme-perf: a migrated I/O buffer lies outside runtime memory");
      if (sl.units == 0 || sl.first_unit > wk->region_units || sl.units > wk->region_units - sl.first_unit)
        return Status::error(EINVAL, "nvme-perf: a migrated slot's range lies outside its worker's region");
    }
    job.all.push_back(wk.get());
    job.workers.push_back(std::move(wk));
  }
  std::string ctrl_state;
  if (!r.get_string(&ctrl_state, kMaxControllerState) || r.left() != 0)
    return Status::error(EINVAL, "nvme-perf: the migrated state is truncated or has trailing bytes");
  const RuntimeDevice* dev = nullptr;
  for (const RuntimeDevice& d : rt.devices())
    if (d.is_nvme() && !dev) dev = &d;
  if (!dev) return Status::error(ENODEV, "nvme-perf: no NVMe controller here to take the source's over");
  auto ctrl = nvme::Controller::restore(
      *dev->device, rt.memory(),
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ctrl_state.data()), ctrl_state.size()));
  if (!ctrl) return Status::error(ctrl.status().code(), fmt::format("{}: {}", dev->name, ctrl.status().message()));
  job.ctrl = std::move(*ctrl);
  std::vector<nvme::QueuePair*> queues = job.ctrl->queue_pairs();
  for (size_t i = 0; i < job.all.size(); i++) {
    if (queue_index[i] >= queues.size())
      return Status::error(EINVAL, fmt::format("nvme-perf: lcore {} used queue pair {}; the controller has {}",
                                               job.all[i]->lcore, queue_index[i], queues.size()));
    job.all[i]->queue = queues[queue_index[i]];
  }
  job.elapsed_before_ns = elapsed_ns;
  return Status::ok();
}

// Destination, after the run: every unit whose write was acknowledged, on either side of
// the migration, must read back with its last generation's pattern.
void read_back(Job& job, uint64_t* checked, uint64_t* mismatches, uint64_t* errors) {
  for (Worker* w : job.all) {
    std::byte* buf = w->slots[0].buf;
    for (uint64_t unit = 0; unit < w->generations.size(); unit++) {
      uint32_t gen = w->generations[unit];
      if (!gen) continue;
      uint64_t lba = w->region_lba + unit * w->blocks_per_io;
      Status st = nvme::sync_read(*w->queue, w->nsid, buf, lba, w->blocks_per_io);
      if (!st) {
        if ((*errors)++ < 5) std::fprintf(stderr, "read-back of LBA %lu: %s\n", static_cast<unsigned long>(lba),
                                          st.describe().c_str());
        continue;
      }
      ++*checked;
      int64_t bad = check_pattern(buf, lba, w->blocks_per_io, w->block_bytes, gen);
      if (bad >= 0 && (*mismatches)++ < 5)
        std::fprintf(stderr, "read-back mismatch at LBA %ld (generation %u)\n", long(bad), gen);
    }
  }
}

mig::Participant job_participant(Job& job) {
  mig::Participant p;
  p.name = "nvme-perf";
  // The lcores are paused between two steps; the controller completes what they had
  // submitted (the callbacks run on the migration's thread) and refuses new I/O.
  p.quiesce = [&job] { return job.ctrl->quiesce(5000); };
  p.save = [&job](std::vector<uint8_t>& out) { return save_job(job, out); };
  p.load = [&job](std::span<const uint8_t> in) { return load_job(job, in); };
  p.resume = [&job] { job.ctrl->resume(); };
  return p;
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
  Job job;
  job.rt = &rt;
  job.opt = &opt;

  std::vector<unsigned> lcores = rt.lcores().worker_lcores();
  bool main_works = lcores.empty();
  if (main_works) lcores.push_back(rt.lcores().main_lcore());
  // Live migration pauses services at their quiescent points: it needs the workers on
  // worker lcores (a loop on the main lcore cannot be paused).
  std::unique_ptr<mig::Migration> migration;
  if (!main_works) {
    migration = std::make_unique<mig::Migration>(rt);
    migration->add_participant(job_participant(job));
  } else if (!rt.config().migrate_listen.empty()) {
    std::fprintf(stderr, "uvio-nvme-perf: a migration needs worker lcores (-l 0-1 or more)\n");
    return 2;
  }
  const bool incoming = migration && migration->incoming();
  if (incoming) {
    // Nothing may be created in runtime memory before the source's memory is in.
    Status s = migration->receive();
    if (!s) {
      std::fprintf(stderr, "uvio-nvme-perf: the migration failed: %s\n", s.message().c_str());
      return 1;
    }
    std::printf("migration received: %zu worker(s) go on for the rest of the %lu s\n", job.all.size(),
                static_cast<unsigned long>(opt.seconds));
  } else {
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
    job.ctrl = std::move(*ctrl_or);
    nvme::Controller& ctrl = *job.ctrl;
    if (ctrl.namespaces().empty()) {
      std::fprintf(stderr, "uvio-nvme-perf: %s has no active namespace\n", dev->name.c_str());
      return 1;
    }
    const nvme::NamespaceInfo& ns = ctrl.namespaces()[0];
    if (opt.io_bytes % ns.block_bytes || opt.io_bytes > ctrl.info().max_transfer_bytes)
      bad_option(fmt::format("-o {} must be a multiple of the {}-byte LBA size, at most {} bytes", opt.io_bytes,
                             ns.block_bytes, ctrl.info().max_transfer_bytes));

    uint32_t blocks_per_io = static_cast<uint32_t>(opt.io_bytes / ns.block_bytes);
    uint64_t span_blocks = opt.span_bytes ? std::min(ns.blocks, opt.span_bytes / ns.block_bytes) : ns.blocks;
    uint64_t units_per_worker = span_blocks / blocks_per_io / lcores.size();
    uint64_t units_per_slot = units_per_worker / opt.queue_depth;
    if (units_per_slot == 0)
      bad_option(fmt::format("{} {} holds {} I/Os of {} bytes: too few for {} worker(s) at depth {}",
                             opt.span_bytes ? "the -s span of namespace" : "namespace", ns.id,
                             span_blocks / blocks_per_io, opt.io_bytes, lcores.size(), opt.queue_depth));

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
      job.all.push_back(w.get());
      job.workers.push_back(std::move(w));
    }

    std::printf("%s: %s, namespace %u: %lu x %u-byte blocks; %zu worker(s), depth %u, %lu-byte I/O, %s%s\n",
                dev->name.c_str(), ctrl.info().model.c_str(), ns.id, static_cast<unsigned long>(ns.blocks),
                ns.block_bytes, job.all.size(), opt.queue_depth, static_cast<unsigned long>(opt.io_bytes),
                opt.interrupt ? "interrupts" : "polling", opt.verify ? ", verify" : "");
  }
  std::vector<Worker*>& all = job.all;
  nvme::Controller& ctrl = *job.ctrl;
  const uint64_t total_ns = opt.seconds * 1000000000ull;
  const uint64_t left_ns = total_ns - std::min(total_ns, job.elapsed_before_ns);
  uint64_t start = cycles();
  job.start = start;
  uint64_t end = start + static_cast<uint64_t>(double(left_ns) / 1e9 * double(cycles_per_second()));
  int failed = 0;
  if (main_works) {
    failed |= run(*all[0], end, &all);
  } else {
    for (Worker* w : all) {
      w->end = end;
      rt.services().add(w->lcore, fmt::format("nvme-perf-{}", w->lcore), [w] { service_step(*w); });
    }
    if (Status s = rt.services().start(rt.lcores()); !s) {
      std::fprintf(stderr, "uvio-nvme-perf: %s\n", s.describe().c_str());
      return 1;
    }
    uint64_t last = 0, tick = job.elapsed_before_ns / 1000000000ull;
    if (incoming)
      for (Worker* w : all) last += w->ios.load(std::memory_order_relaxed);
    uint64_t next = start + (tick + 1 - job.elapsed_before_ns / 1e9) * cycles_per_second();
    for (;;) {
      if (migration->migrated()) {
        // The destination has taken over the controller, its queues and the run. The
        // lcores stay where the migration paused them; nothing touches the device again.
        rt.services().stop();
        job.ctrl->release_after_migration();
        uint64_t ios = 0;
        for (Worker* w : all) ios += w->ios.load();
        std::printf("migrated after %.2f s (%s); completions here %lu; the destination finishes the run\n",
                    double(job.elapsed_ns()) / 1e9, migration->progress().message.c_str(),
                    static_cast<unsigned long>(ios));
        std::fflush(stdout);
        return 0;
      }
      bool done = std::all_of(all.begin(), all.end(), [](Worker* w) { return w->finished.load(std::memory_order_acquire); });
      if (done) break;
      usleep(1000);
      uint64_t now = cycles();
      if (now >= next && now < end + cycles_per_second() / 2) {
        print_progress(all, ++tick, &last, opt.io_bytes);
        next += cycles_per_second();
      }
    }
    rt.services().stop();
    for (Worker* w : all) failed |= w->failed ? 1 : 0;
  }
  double seconds = double(job.elapsed_ns()) / 1e9;

  LatencyHistogram total;
  uint64_t total_ios = 0, errors = 0, mismatches = 0, verified = 0, waits = 0, wakeups = 0;
  for (Worker* w : all) {
    uint64_t ios = w->ios.load();
    std::printf("%s\n", summary_line(fmt::format("lcore {}", w->lcore), ios, seconds, opt.io_bytes, w->histogram).c_str());
    total.merge(w->histogram);
    total_ios += ios;
    errors += w->errors;
    mismatches += w->mismatches;
    verified += w->verified_reads;
    waits += w->interrupt_waits;
    wakeups += w->interrupt_wakeups;
  }
  std::printf("%s\n", summary_line("total", total_ios, seconds, opt.io_bytes, total).c_str());
  // One line a script can check: what completed, what failed, what the modes proved.
  std::printf("completions %lu, I/O errors %lu", static_cast<unsigned long>(total_ios),
              static_cast<unsigned long>(errors));
  if (opt.verify)
    std::printf(", verified reads %lu, verify mismatches %lu", static_cast<unsigned long>(verified),
                static_cast<unsigned long>(mismatches));
  if (opt.interrupt)
    std::printf(", interrupt wakeups %lu of %lu waits", static_cast<unsigned long>(wakeups),
                static_cast<unsigned long>(waits));
  std::printf("\n");
  if (incoming && opt.verify) {
    uint64_t checked = 0;
    read_back(job, &checked, &mismatches, &errors);
    std::printf("read-back of acknowledged writes: %lu units checked, I/O errors %lu, verify mismatches %lu\n",
                static_cast<unsigned long>(checked), static_cast<unsigned long>(errors),
                static_cast<unsigned long>(mismatches));
  }
  std::fflush(stdout);
  if (errors || mismatches || failed) {
    std::fprintf(stderr, "uvio-nvme-perf: %lu I/O error(s), %lu verify mismatch(es)\n",
                 static_cast<unsigned long>(errors), static_cast<unsigned long>(mismatches));
    return 1;
  }
  for (Worker* w : all) (void)ctrl.destroy_queue_pair(w->queue);
  return 0;
}
