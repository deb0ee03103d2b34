// libFuzzer target: what the NVMe driver (pmd/nvme) reads from its controller. The
// controller is an iommu::Device whose BAR0 and queues are played from the input:
// CAP, VS and CSTS; Identify Controller, Active Namespace List and Identify Namespace
// pages written where the driver asked; every admin and I/O completion entry (command
// id, status, phase tag, SQ head, dw0) posted where the driver's CQ expects it, or not.
//
// Input: u64 CAP, u32 VS, u16 queue entries, then, consumed as the driver submits:
// per command a completion record {u8 mode, u16 cid, u16 status, u16 sq_head,
// u32 dw0} (mode bit 0: cid as given, else echoed; bit 1: status as given, else
// success; bit 2: the wrong phase; bit 3: sq_head as given; bit 4: CSTS.CFS from now
// on), and for Identify 4096 bytes of page first.
#include <uvio/log.h>
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "iommu/device.h"
#include "pmd/nvme/spec.h"
#include "test/fuzz/fuzz_input.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

using uvio::fuzz::Input;
namespace iommu = uvio::iommu;
namespace spec = uvio::nvme::spec;
using uvio::Result;
using uvio::Status;

namespace {

struct Fixture {
  std::unique_ptr<uvio::Memory> mem;
  Fixture() {
    // Quiet: a fuzzer logs every refusal otherwise. UVIO_FUZZ_LOG=1 shows them.
    uvio::log::set_global_level(std::getenv("UVIO_FUZZ_LOG") ? uvio::log::Level::Debug : uvio::log::Level::Emerg);
    uvio::MemConfig cfg;
    cfg.total_bytes = 16u << 20;
    cfg.hugepages = false;
    auto m = uvio::Memory::create(cfg);
    if (!m) abort();
    mem = std::move(*m);
  }
  std::byte* device_va(uint64_t iova, size_t len) const {
    for (const uvio::MemArea* a : mem->areas())
      if (iova >= a->iova && iova - a->iova < a->len && len <= a->len - (iova - a->iova))
        return a->va + (iova - a->iova);
    return nullptr;
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

class NoDomain final : public iommu::DmaDomain {
 public:
  std::string_view name() const override { return "fuzz"; }
  Status map(uint64_t, void*, uint64_t, int, uint64_t) override { return Status::ok(); }
  Status unmap(uint64_t, uint64_t) override { return Status::ok(); }
  std::vector<iommu::IovaRange> iova_ranges() const override { return {{0, UINT64_MAX}}; }
  uint64_t page_size_mask() const override { return 4096; }
  uint64_t map_calls() const override { return 0; }
  uint64_t unmap_calls() const override { return 0; }
};

Status unsupported() { return Status::error(ENOTSUP, "not on this device"); }

// The driver broke a rule of the specification that a controller relies on: a finding.
[[noreturn]] void driver_broke(const char* rule) {
  std::fprintf(stderr, "nvme_fuzz: the driver broke a rule: %s\n", rule);
  __builtin_trap();
}

// The controller: registers in memory, queues in the driver's DMA memory.
class FuzzNvme final : public iommu::Device {
 public:
  explicit FuzzNvme(Input& in) : in_(in) {
    cap_ = in.get<uint64_t>();
    vs_ = in.get<uint32_t>();
    info_.flags = 3;
    info_.num_regions = 9;
    info_.num_irqs = 5;
  }
  std::string_view backend() const override { return "fuzz"; }
  std::string_view backend_reason() const override { return "fuzz"; }
  std::string_view name() const override { return "fuzz-nvme"; }
  const iommu::DeviceInfo& info() const override { return info_; }
  iommu::DmaDomain& domain() override { return domain_; }
  Result<iommu::RegionInfo> region_info(uint32_t index) override {
    iommu::RegionInfo r;
    r.index = index;
    r.flags = 3;
    r.size = index == iommu::kBar0 ? 0x4000 : index == iommu::kConfigRegion ? 256 : 0;
    return r;
  }
  Status region_read(uint32_t index, uint64_t offset, void* buf, size_t len) override {
    uint64_t v = 0;
    if (index == iommu::kBar0) {
      if (offset == spec::kRegCap) v = cap_;
      else if (offset == spec::kRegCap + 4) v = cap_ >> 32;
      else if (offset == spec::kRegVs) v = vs_;
      else if (offset == spec::kRegCc) v = cc_;
      else if (offset == spec::kRegCsts)
        v = (cc_ & spec::kCcEnable ? spec::kCstsReady : 0) | (fatal_ ? spec::kCstsFatal : 0) |
            ((cc_ >> 14 & 3) ? 2u << 2 : 0);  // §3.1.6: SHST 10b, shutdown done at once
    }
    std::memcpy(buf, &v, std::min(len, sizeof(v)));
    return Status::ok();
  }
  Status region_write(uint32_t index, uint64_t offset, const void* buf, size_t len) override {
    if (index != iommu::kBar0 || len != 4) return Status::ok();
    uint32_t v;
    std::memcpy(&v, buf, 4);
    if (offset == spec::kRegCc) {
      if ((cc_ & spec::kCcEnable) && !(v & spec::kCcEnable)) {  // §7.3.2: a reset deletes the queues
        queues_.clear();
        fatal_ = false;
      }
      if (!(cc_ & spec::kCcEnable) && (v & spec::kCcEnable)) {
        // §3.1.8: ASQS and ACQS are 0's based with a minimum of 2 entries.
        if ((aqa_ & 0xfff) == 0 || (aqa_ >> 16 & 0xfff) == 0) driver_broke("an admin queue of 1 entry (AQA)");
        uint32_t entries = (aqa_ & 0xfff) + 1;
        queues_[0] = {asq_, entries, 0, 0, acq_, (aqa_ >> 16 & 0xfff) + 1, 0, true};
      }
      cc_ = v;
    } else if (offset == spec::kRegAqa) {
      aqa_ = v;
    } else if (offset == spec::kRegAsq || offset == spec::kRegAsq + 4) {
      set_half(asq_, offset - spec::kRegAsq, v);
    } else if (offset == spec::kRegAcq || offset == spec::kRegAcq + 4) {
      set_half(acq_, offset - spec::kRegAcq, v);
    } else if (offset >= spec::kRegDoorbells) {
      uint32_t stride = 4u << spec::cap_dstrd(cap_);
      uint64_t index_db = (offset - spec::kRegDoorbells) / stride;
      auto q = queues_.find(static_cast<uint16_t>(index_db / 2));
      // §3.1.24/§3.1.25: a doorbell value at or beyond the queue size is an invalid write.
      if (q != queues_.end() && v >= (index_db % 2 == 0 ? q->second.sq_entries : q->second.cq_entries))
        driver_broke("a doorbell value beyond its queue");
      if (index_db % 2 == 0) submit(static_cast<uint16_t>(index_db / 2), v);
    }
    return Status::ok();
  }
  Result<void*> region_map(uint32_t, uint64_t, uint64_t) override { return unsupported(); }
  Status reset() override { return Status::ok(); }
  Result<iommu::IrqInfo> irq_info(uint32_t index) override { return iommu::IrqInfo{index, 1, 4}; }
  Status set_irq_eventfds(uint32_t, uint32_t, std::span<const int>) override { return Status::ok(); }
  Status disable_irqs(uint32_t) override { return Status::ok(); }
  Status feature(uint32_t, uint32_t, std::span<uint8_t>) override { return unsupported(); }
  Result<iommu::MigrationCaps> migration_caps() override { return iommu::MigrationCaps{}; }
  Result<iommu::MigState> mig_state() override { return unsupported(); }
  Status set_mig_state(iommu::MigState) override { return unsupported(); }
  Result<size_t> mig_read(void*, size_t) override { return unsupported(); }
  Status mig_write(const void*, size_t) override { return unsupported(); }
  Result<uint64_t> mig_data_size() override { return unsupported(); }
  Result<iommu::PrecopyInfo> precopy_info() override { return unsupported(); }
  iommu::DirtyTracker* dma_logging() override { return nullptr; }

 private:
  struct Queue {
    uint64_t sq_iova;
    uint32_t sq_entries;
    uint32_t sq_head;
    uint16_t cqid;
    uint64_t cq_iova;
    uint32_t cq_entries;
    uint32_t cq_tail;
    bool phase;
  };
  static void set_half(uint64_t& reg, uint64_t which, uint32_t v) {
    reg = which == 0 ? (reg & ~0xffffffffull) | v : (reg & 0xffffffffull) | uint64_t{v} << 32;
  }

  // The SQ tail moved: run each new command and post its completion.
  void submit(uint16_t qid, uint32_t tail) {
    auto it = queues_.find(qid);
    if (it == queues_.end() || !(cc_ & spec::kCcEnable)) return;
    Queue& q = it->second;
    for (int guard = 0; q.sq_head != tail % q.sq_entries && guard < 4096; ++guard) {
      auto* e = reinterpret_cast<spec::SubmissionEntry*>(
          fixture().device_va(q.sq_iova + uint64_t{q.sq_head} * sizeof(spec::SubmissionEntry), sizeof(spec::SubmissionEntry)));
      if (!e) return;
      spec::SubmissionEntry cmd = *e;
      q.sq_head = (q.sq_head + 1) % q.sq_entries;
      if (qid == 0) run_admin(cmd);
      auto cq = queues_.find(qid == 0 ? 0 : q.cqid);
      if (cq == queues_.end()) continue;
      complete(cq->second, cmd.cid, static_cast<uint16_t>(q.sq_head));
    }
  }

  void run_admin(const spec::SubmissionEntry& cmd) {
    switch (cmd.opcode) {
      case spec::kAdminIdentify: {
        auto page = in_.bytes(spec::kIdentifyBytes);
        if (std::byte* p = fixture().device_va(cmd.prp1, spec::kIdentifyBytes)) {
          std::memset(p, 0, spec::kIdentifyBytes);
          std::memcpy(p, page.data(), page.size());
        }
        break;
      }
      case spec::kAdminCreateCq: {
        check_queue_size(cmd);
        Queue& q = queues_[cmd.cdw10 & 0xffff];
        q.cq_iova = cmd.prp1;
        q.cq_entries = (cmd.cdw10 >> 16) + 1;
        q.cq_tail = 0;
        q.phase = true;
        break;
      }
      case spec::kAdminCreateSq: {
        check_queue_size(cmd);
        Queue& q = queues_[cmd.cdw10 & 0xffff];
        q.sq_iova = cmd.prp1;
        q.sq_entries = (cmd.cdw10 >> 16) + 1;
        q.sq_head = 0;
        q.cqid = static_cast<uint16_t>(cmd.cdw11 >> 16);
        break;
      }
      default: break;
    }
  }

  // §5.3, §5.4: QSIZE is 0's based, at least 1 and at most CAP.MQES.
  void check_queue_size(const spec::SubmissionEntry& cmd) const {
    uint32_t qsize = cmd.cdw10 >> 16;
    if (qsize == 0 || qsize > (cap_ & 0xffff)) driver_broke("an I/O queue size outside 2..CAP.MQES + 1");
  }

  void complete(Queue& cq, uint16_t cid, uint16_t sq_head) {
    uint8_t mode = in_.get<uint8_t>();
    uint16_t raw_cid = in_.get<uint16_t>(), status = in_.get<uint16_t>(), raw_head = in_.get<uint16_t>();
    uint32_t dw0 = in_.get<uint32_t>();
    if (mode & 16) fatal_ = true;
    if (cq.cq_entries == 0) return;
    auto* e = reinterpret_cast<spec::CompletionEntry*>(fixture().device_va(
        cq.cq_iova + uint64_t{cq.cq_tail} * sizeof(spec::CompletionEntry), sizeof(spec::CompletionEntry)));
    if (!e) return;
    spec::CompletionEntry c{};
    c.dw0 = dw0;
    c.sq_head = (mode & 8) ? raw_head : sq_head;
    c.cid = (mode & 1) ? raw_cid : cid;
    bool phase = (mode & 4) ? !cq.phase : cq.phase;
    c.status = static_cast<uint16_t>(((mode & 2) ? status << 1 : 0) | (phase ? 1 : 0));
    std::memcpy(e, &c, offsetof(spec::CompletionEntry, status));  // the phase tag last
    __atomic_store_n(&e->status, c.status, __ATOMIC_RELEASE);
    if (++cq.cq_tail == cq.cq_entries) {
      cq.cq_tail = 0;
      cq.phase = !cq.phase;
    }
  }

  Input& in_;
  iommu::DeviceInfo info_;
  NoDomain domain_;
  uint64_t cap_ = 0, asq_ = 0, acq_ = 0;
  uint32_t vs_ = 0, cc_ = 0, aqa_ = 0;
  bool fatal_ = false;
  std::map<uint16_t, Queue> queues_;
};

void done(void* ctx, uvio::nvme::IoStatus) { ++*static_cast<int*>(ctx); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  Input in(data, size);
  FuzzNvme dev(in);
  uint16_t entries = in.get<uint16_t>();
  uvio::nvme::ControllerOptions opts;
  opts.admin_timeout_ms = 0;  // completions are posted before the doorbell write returns
  opts.shadow_doorbells = false;
  opts.health_check_polls = 1;
  opts.health_check_period_us = 0;
  opts.io_queues_wanted = 2;
  auto ctrl = uvio::nvme::Controller::open(dev, *f.mem, opts);
  if (!ctrl) return 0;
  auto qp = (*ctrl)->create_queue_pair({entries, false});
  if (qp) {
    void* buf = f.mem->alloc(64 * 1024, 4096);
    int completed = 0;
    for (int round = 0; round < 16 && !in.empty(); ++round) {
      for (const auto& ns : (*ctrl)->namespaces()) (void)(*qp)->submit_read(ns.id, buf, 0, 1, done, &completed);
      (void)(*qp)->submit_flush(1, done, &completed);
      (*qp)->flush_submissions();
      (*qp)->poll(0);
    }
    (void)(*ctrl)->destroy_queue_pair(*qp);
    f.mem->free(buf);
  }
  return 0;
}
