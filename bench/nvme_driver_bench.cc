// What the NVMe driver costs per I/O, without any device cost mixed in: the driver runs
// against a loopback controller that completes every command the moment it reads it
// (SQE in, CQE out with the phase bit, no data moved), and the loopback's own cycles
// are measured apart and subtracted. Then, for scale, IOPS on one core against the
// emulated controller over vfio-user, with the device thread's CPU time beside it.
#include <uvio/cycles.h>
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "emu/nvme/controller.h"
#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "pmd/nvme/spec.h"

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

namespace {

using namespace uvio;
namespace spec = uvio::nvme::spec;

class NullDomain final : public iommu::DmaDomain {
 public:
  std::string_view name() const override { return "loopback"; }
  Status map(uint64_t, void*, uint64_t, int, uint64_t) override { return Status::ok(); }
  Status unmap(uint64_t, uint64_t) override { return Status::ok(); }
  std::vector<iommu::IovaRange> iova_ranges() const override { return {{0, ~0ull}}; }
  uint64_t page_size_mask() const override { return 4096; }
  uint64_t map_calls() const override { return 0; }
  uint64_t unmap_calls() const override { return 0; }
};

// A controller with trapped registers and a doorbell page in plain memory. IOVA = VA
// (the runtime's default IOVA mode), so queue addresses are pointers.
class LoopbackNvme final : public iommu::Device {
 public:
  static constexpr uint32_t kQueues = 4;
  LoopbackNvme() : doorbells_(4096 / 4, 0) { info_.flags = 2 | 1, info_.num_regions = 9, info_.num_irqs = 5; }

  // Consumes every new SQE of every queue; returns commands completed.
  size_t process() {
    size_t done = 0;
    for (uint32_t qid = 0; qid <= kQueues; ++qid) {
      Queue& q = sqs_[qid];
      if (!q.live) continue;
      uint32_t tail = __atomic_load_n(&doorbells_[2 * qid], __ATOMIC_ACQUIRE);
      while (q.head != tail && q.head < q.size) {
        auto* cmd = reinterpret_cast<spec::SubmissionEntry*>(q.base) + q.head;
        q.head = (q.head + 1) % q.size;
        uint32_t dw0 = 0;
        uint16_t status = qid == 0 ? admin(*cmd, &dw0) : 0;
        post(qid == 0 ? 0 : q.cqid, qid, cmd->cid, status, dw0, q.head);
        ++done;
      }
    }
    return done;
  }

  std::string_view backend() const override { return "loopback"; }
  std::string_view backend_reason() const override { return "benchmark"; }
  std::string_view name() const override { return "loopback-nvme"; }
  const iommu::DeviceInfo& info() const override { return info_; }
  iommu::DmaDomain& domain() override { return domain_; }
  Result<iommu::RegionInfo> region_info(uint32_t index) override {
    if (index != iommu::kBar0) return Status::error(EINVAL, "no such region");
    iommu::RegionInfo r;
    r.index = index;
    r.flags = 7;
    r.size = 0x2000;
    r.sparse = {{0x1000, 0x1000}};
    return r;
  }
  Status region_read(uint32_t, uint64_t off, void* buf, size_t len) override {
    uint64_t v = 0;
    switch (off) {
      // CAP: MQES 1023, CQR, TO 1 (500 ms), DSTRD 0, CSS NVM, MPSMIN 0 (§3.1.1).
      case spec::kRegCap: v = 1023 | 1u << 16 | 1u << 24 | 1ull << 37; break;
      case spec::kRegCap + 4: v = (1ull << 37) >> 32; break;
      case spec::kRegVs: v = 0x00010400; break;
      case spec::kRegCc: v = cc_; break;
      case spec::kRegCsts: v = (cc_ & 1) | ((cc_ >> 14) & 3 ? 2u << 2 : 0); break;  // RDY, SHST complete
      default: break;
    }
    std::memcpy(buf, &v, std::min<size_t>(len, 8));
    return Status::ok();
  }
  Status region_write(uint32_t, uint64_t off, const void* buf, size_t len) override {
    uint64_t v = 0;
    std::memcpy(&v, buf, std::min<size_t>(len, 8));
    switch (off) {
      case spec::kRegCc:
        if ((v & 1) && !(cc_ & 1)) enable();
        if (!(v & 1)) for (auto& q : sqs_) q.live = false;
        cc_ = static_cast<uint32_t>(v);
        break;
      case spec::kRegAqa: aqa_ = static_cast<uint32_t>(v); break;
      case spec::kRegAsq: asq_ = (asq_ & ~0xffffffffull) | uint32_t(v); break;
      case spec::kRegAsq + 4: asq_ = (asq_ & 0xffffffffull) | v << 32; break;
      case spec::kRegAcq: acq_ = (acq_ & ~0xffffffffull) | uint32_t(v); break;
      case spec::kRegAcq + 4: acq_ = (acq_ & 0xffffffffull) | v << 32; break;
      default:
        if (off >= 0x1000 && off < 0x2000) __atomic_store_n(&doorbells_[(off - 0x1000) / 4], uint32_t(v), __ATOMIC_RELEASE);
        break;
    }
    return Status::ok();
  }
  Result<void*> region_map(uint32_t, uint64_t offset, uint64_t len) override {
    if (offset != 0x1000 || len > 0x1000) return Status::error(EINVAL, "only the doorbell page maps");
    return static_cast<void*>(doorbells_.data());
  }
  Status reset() override { return region_write(0, spec::kRegCc, &zero_, 4); }
  Result<iommu::IrqInfo> irq_info(uint32_t index) override { return iommu::IrqInfo{index, 1, 0}; }
  Status set_irq_eventfds(uint32_t, uint32_t, std::span<const int>) override { return Status::ok(); }
  Status disable_irqs(uint32_t) override { return Status::ok(); }
  Status feature(uint32_t, uint32_t, std::span<uint8_t>) override { return Status::error(ENOTSUP, "none"); }
  Result<iommu::MigrationCaps> migration_caps() override { return iommu::MigrationCaps{}; }
  Result<iommu::MigState> mig_state() override { return iommu::MigState::Running; }
  Status set_mig_state(iommu::MigState) override { return Status::error(ENOTSUP, "none"); }
  Result<size_t> mig_read(void*, size_t) override { return size_t(0); }
  Status mig_write(const void*, size_t) override { return Status::error(ENOTSUP, "none"); }
  Result<uint64_t> mig_data_size() override { return uint64_t(0); }
  Result<iommu::PrecopyInfo> precopy_info() override { return iommu::PrecopyInfo{}; }
  iommu::DirtyTracker* dma_logging() override { return nullptr; }

 private:
  struct Queue {
    bool live = false;
    std::byte* base = nullptr;
    uint32_t size = 0, head = 0, tail = 0;
    uint16_t cqid = 0;
    bool phase = true;
  };

  void enable() {
    sqs_[0] = {true, reinterpret_cast<std::byte*>(asq_), (aqa_ & 0xfff) + 1, 0, 0, 0, true};
    cqs_[0] = {true, reinterpret_cast<std::byte*>(acq_), ((aqa_ >> 16) & 0xfff) + 1, 0, 0, 0, true};
    std::fill(doorbells_.begin(), doorbells_.end(), 0);
  }

  void post(uint16_t cqid, uint16_t sqid, uint16_t cid, uint16_t status, uint32_t dw0, uint32_t sq_head) {
    Queue& cq = cqs_[cqid];
    spec::CompletionEntry e{dw0, 0, uint16_t(sq_head), sqid, cid, uint16_t(status << 1 | (cq.phase ? 1 : 0))};
    auto* slot = reinterpret_cast<spec::CompletionEntry*>(cq.base) + cq.tail;
    std::memcpy(slot, &e, 12);  // the phase word last, so the driver never sees half an entry
    __atomic_store_n(&slot->cid, e.cid, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->status, e.status, __ATOMIC_RELEASE);
    if (++cq.tail == cq.size) cq.tail = 0, cq.phase = !cq.phase;
  }

  uint16_t admin(const spec::SubmissionEntry& c, uint32_t* dw0) {
    auto* data = reinterpret_cast<std::byte*>(c.prp1);
    switch (c.opcode) {
      case spec::kAdminIdentify:
        std::memset(data, 0, 4096);
        if (c.cdw10 == spec::kCnsController) {
          std::memcpy(data + spec::kIdSerial, "LOOPBACK            ", 20);
          std::memcpy(data + spec::kIdModel, "uvio loopback", 13);
          uint32_t nn = 1;
          std::memcpy(data + spec::kIdNn, &nn, 4);
          data[spec::kIdMdts] = std::byte(5);
        } else if (c.cdw10 == spec::kCnsActiveNamespaces) {
          uint32_t one = 1;
          std::memcpy(data, &one, 4);
        } else if (c.cdw10 == spec::kCnsNamespace) {
          uint64_t blocks = 1 << 21;
          std::memcpy(data + spec::kNsSize, &blocks, 8);
          uint32_t lbaf = 12u << 16;  // 4 KiB blocks
          std::memcpy(data + spec::kNsLbaf0, &lbaf, 4);
        }
        return 0;
      case spec::kAdminSetFeatures:
        *dw0 = (kQueues - 1) | (kQueues - 1) << 16;
        return 0;
      case spec::kAdminCreateCq: {
        uint16_t qid = c.cdw10 & 0xffff;
        if (qid == 0 || qid > kQueues) return 0x101;
        cqs_[qid] = {true, reinterpret_cast<std::byte*>(c.prp1), (c.cdw10 >> 16) + 1, 0, 0, 0, true};
        return 0;
      }
      case spec::kAdminCreateSq: {
        uint16_t qid = c.cdw10 & 0xffff;
        if (qid == 0 || qid > kQueues) return 0x101;
        sqs_[qid] = {true, reinterpret_cast<std::byte*>(c.prp1), (c.cdw10 >> 16) + 1, 0, 0, uint16_t(c.cdw11 >> 16), true};
        return 0;
      }
      case spec::kAdminDeleteSq:
        if ((c.cdw10 & 0xffff) <= kQueues) sqs_[c.cdw10 & 0xffff].live = false;
        return 0;
      case spec::kAdminDeleteCq:
        if ((c.cdw10 & 0xffff) <= kQueues) cqs_[c.cdw10 & 0xffff].live = false;
        return 0;
      default: return 0x1;  // Invalid Command Opcode
    }
  }

  iommu::DeviceInfo info_;
  NullDomain domain_;
  std::vector<uint32_t> doorbells_;
  uint32_t cc_ = 0, aqa_ = 0, zero_ = 0;
  uint64_t asq_ = 0, acq_ = 0;
  Queue sqs_[kQueues + 1], cqs_[kQueues + 1];
};

std::unique_ptr<Memory> bench_memory(size_t bytes) {
  MemConfig cfg;
  cfg.total_bytes = bytes;
  cfg.hugepages = false;
  auto m = Memory::create(cfg);
  return m ? std::move(*m) : nullptr;
}

double thread_cpu_seconds(clockid_t id = CLOCK_THREAD_CPUTIME_ID) {
  timespec ts;
  clock_gettime(id, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

void count(void* ctx, nvme::IoStatus) { ++*static_cast<uint64_t*>(ctx); }

// Submit `batch` 4 KiB reads, ring once, let the loopback complete them, poll them all.
void BM_DriverSubmitComplete(benchmark::State& state) {
  const uint32_t batch = static_cast<uint32_t>(state.range(0));
  auto mem = bench_memory(64u << 20);
  LoopbackNvme dev;
  // Bring-up runs admin commands synchronously: a helper thread plays the device.
  std::atomic<bool> bringing_up{true};
  std::thread helper([&] {
    while (bringing_up.load()) dev.process();
  });
  nvme::ControllerOptions opts;
  opts.health_check_polls = 1u << 30;  // no CSTS read inside the measurement
  auto ctrl = nvme::Controller::open(dev, *mem, opts);
  nvme::QueuePair* q = nullptr;
  if (ctrl) {
    auto r = (*ctrl)->create_queue_pair({.entries = 1024});
    if (r) q = *r;
  }
  bringing_up = false;
  helper.join();
  if (!q) {
    state.SkipWithError(ctrl ? "queue pair" : ctrl.status().message().c_str());
    return;
  }
  auto* buf = static_cast<std::byte*>(mem->alloc(4096 * size_t(batch), 4096));
  uint64_t completed = 0, device_cycles = 0, ios = 0;
  double cpu0 = thread_cpu_seconds();
  uint64_t start = cycles();
  for (auto _ : state) {
    for (uint32_t i = 0; i < batch; ++i) q->submit_read(1, buf + 4096 * size_t(i), i, 1, count, &completed);
    q->flush_submissions();
    uint64_t d0 = cycles();
    dev.process();
    device_cycles += cycles() - d0;
    uint32_t got = 0;
    while (got < batch) got += q->poll();
    ios += batch;
  }
  uint64_t total = cycles() - start;
  double cpu_cycles = (thread_cpu_seconds() - cpu0) * double(cycles_per_second());
  if (completed != ios) state.SkipWithError("lost completions");
  // On a shared machine the TSC also counts time the thread was not running; the
  // thread's CPU time does not. The TSC split between driver and loopback is applied to it.
  double driver_share = total ? double(total - device_cycles) / double(total) : 0;
  state.counters["driver_cycles_per_io"] = cpu_cycles * driver_share / double(ios);
  state.counters["loopback_cycles_per_io"] = cpu_cycles * (1 - driver_share) / double(ios);
  state.counters["driver_tsc_per_io"] = double(total - device_cycles) / double(ios);
  state.SetItemsProcessed(int64_t(ios));
  // Closing deletes the queues with admin commands: the helper plays the device again.
  bringing_up = true;
  std::thread closer([&] {
    while (bringing_up.load()) dev.process();
  });
  ctrl.value().reset();  // closes the controller
  bringing_up = false;
  closer.join();
}
BENCHMARK(BM_DriverSubmitComplete)->Arg(1)->Arg(8)->Arg(32);


struct Inflight {
  nvme::QueuePair* q = nullptr;
  std::byte* buf = nullptr;
  const bool* stopping = nullptr;
  uint64_t done = 0;
  uint64_t lba = 0;
};

void resubmit(void* ctx, nvme::IoStatus) {
  auto* f = static_cast<Inflight*>(ctx);
  ++f->done;
  if (*f->stopping) return;
  f->lba = (f->lba + 7919) % 8192;
  f->q->submit_read(1, f->buf, f->lba, 8, resubmit, f);
}

// One driver core at queue depth 32 against the emulated controller over vfio-user.
// The device thread's CPU time is the process's minus this thread's.
void BM_EmulatedDeviceOneCore(benchmark::State& state) {
  auto mem = bench_memory(64u << 20);
  iommu::DmaSpace space(*mem);
  auto opt = emu::nvme::parse_nvme_options({{"size", "64M"}});
  auto model = emu::nvme::NvmeController::create(*opt);
  auto server = emu::Server::create(std::move(*model));
  auto fd = (*server)->connect();
  auto dev = iommu::open_vfio_user_fd(*fd, "emu-nvme", space, {});
  if (!dev) {
    state.SkipWithError(dev.status().message().c_str());
    return;
  }
  auto ctrl = nvme::Controller::open(**dev, *mem);
  if (!ctrl) {
    state.SkipWithError(ctrl.status().message().c_str());
    return;
  }
  nvme::QueuePair* q = *(*ctrl)->create_queue_pair({.entries = 64});
  std::vector<Inflight> slots(32);
  bool stopping = false;
  for (auto& s : slots) {
    s.q = q;
    s.stopping = &stopping;
    s.buf = static_cast<std::byte*>(mem->alloc(4096, 4096));
  }
  double cpu0 = thread_cpu_seconds(CLOCK_THREAD_CPUTIME_ID), proc0 = thread_cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
  for (auto& s : slots) q->submit_read(1, s.buf, s.lba, 8, resubmit, &s);
  uint64_t polls = 0, empty = 0;
  for (auto _ : state) {
    empty += q->poll() == 0;
    ++polls;
  }
  double cpu = thread_cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  double proc = thread_cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - proc0;
  uint64_t ios = 0;
  for (auto& s : slots) ios += s.done;
  stopping = true;
  while (q->outstanding()) q->poll();
  double hz = double(cycles_per_second());
  state.counters["IOPS"] = benchmark::Counter(double(ios), benchmark::Counter::kIsRate);
  // The polling core's time includes its empty polls while it waits for the device.
  state.counters["poller_cpu_cycles_per_io"] = ios ? cpu * hz / double(ios) : 0;
  state.counters["device_cpu_cycles_per_io"] = ios ? (proc - cpu) * hz / double(ios) : 0;
  state.counters["empty_poll_pct"] = polls ? 100.0 * double(empty) / double(polls) : 0;
}
BENCHMARK(BM_EmulatedDeviceOneCore)->MinTime(2.0)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
