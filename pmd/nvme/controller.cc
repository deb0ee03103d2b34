// Controller bring-up (§7.6.1), the admin queue, identify, queue creation and
// controller reset (§7.3.2). Control path: Status values, a mutex around the admin queue.
#include <uvio/intr.h>
#include <uvio/log.h>

#include "pmd/nvme/driver.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace uvio::nvme {
namespace {

constexpr const char* kLog = "nvme";
// A transfer is described by PRP1 and at most one PRP list page (§4.3), so the driver
// never chains lists: 512 entries after the first page.
constexpr uint32_t kDriverMaxTransfer = spec::kPrpsPerPage * spec::kPageBytes;
// PCI Local Bus 3.0 §6.2.2, the Command register: a function that is not bus master
// issues no DMA. The kernel leaves it off when it hands a device to VFIO (and a
// function-level reset clears it); QEMU's NVMe then drops every queue fetch silently.
constexpr uint32_t kPciCommand = 0x04;
constexpr uint32_t kPciCommandMemory = 1u << 1;
constexpr uint32_t kPciCommandBusMaster = 1u << 2;

std::string ascii_field(const std::byte* p, size_t len) {
  std::string s(reinterpret_cast<const char*>(p), len);
  for (char& c : s)
    if (c < 0x20 || c > 0x7e) c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

int errno_for(IoStatus s) {
  if ((s >> 8 & 7) == 0 && (s & 0xff) == 0x80) return ERANGE;
  if ((s >> 8 & 7) == 0 && ((s & 0xff) == 0x01 || (s & 0xff) == 0x02 || (s & 0xff) == 0x0b)) return EINVAL;
  if (s == kStatusAbortedByHost || s == kStatusAbortRequested) return ECANCELED;
  return EIO;
}

}  // namespace

// ---- BAR0 ----

Status Bar0::open(iommu::Device& device) {
  device_ = &device;
  auto info = device.region_info(iommu::kBar0);
  if (!info) return info.status();
  if (info->size < spec::kRegDoorbells + 8)
    return Status::error(ENODEV, fmt::format("nvme: {}: BAR0 is {} bytes, too small for NVMe registers",
                                             device.name(), info->size));
  size_ = info->size;
  if (info->mappable()) {
    auto m = device.region_map(iommu::kBar0, 0, size_);
    if (m) regs_ = static_cast<volatile uint8_t*>(*m);
  }
  return Status::ok();
}

void Bar0::map_doorbells(uint32_t stride_bytes, uint32_t max_qid) {
  stride_words_ = stride_bytes / 4;
  if (regs_) {
    doorbells_ = const_cast<uint32_t*>(reinterpret_cast<volatile uint32_t*>(regs_ + spec::kRegDoorbells));
    return;
  }
  // The registers are trapped, the doorbells may still be a page the device shares.
  uint64_t need = (uint64_t(2) * (max_qid + 1) * stride_bytes + 4095) & ~uint64_t(4095);
  need = std::min(need, size_ - spec::kRegDoorbells);
  for (uint64_t len : {need, uint64_t(4096)}) {
    auto m = device_->region_map(iommu::kBar0, spec::kRegDoorbells, len);
    if (m) {
      doorbells_ = static_cast<uint32_t*>(*m);
      return;
    }
  }
  UVIO_LOG(Info, kLog, "{}: doorbells cannot be mapped; ringing them through region writes", device_->name());
}

uint32_t Bar0::read32(uint64_t offset) {
  if (regs_) return *reinterpret_cast<volatile uint32_t*>(regs_ + offset);
  uint32_t v = 0;
  if (!device_->region_read(iommu::kBar0, offset, &v, sizeof(v))) return spec::kCstsAllOnes;
  return v;
}

uint64_t Bar0::read64(uint64_t offset) {
  uint64_t lo = read32(offset), hi = read32(offset + 4);
  return hi << 32 | lo;
}

void Bar0::write32(uint64_t offset, uint32_t value) {
  if (regs_) {
    *reinterpret_cast<volatile uint32_t*>(regs_ + offset) = value;
    return;
  }
  Status s = device_->region_write(iommu::kBar0, offset, &value, sizeof(value));
  if (!s) UVIO_LOG(Err, kLog, "{}: BAR0 write at {:#x} failed: {}", device_->name(), offset, s.describe());
}

void Bar0::write64(uint64_t offset, uint64_t value) {
  write32(offset, static_cast<uint32_t>(value));
  write32(offset + 4, static_cast<uint32_t>(value >> 32));
}

// ---- IOVA translation ----

void IovaMap::refresh() {
  areas_.clear();
  for (const MemArea* a : memory_.areas()) areas_.push_back({a->va, a->len, a->iova, a});
  last_ = &empty_;
}

uint64_t IovaMap::slow_translate(const std::byte* b) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (const Area& a : areas_) {
      if (b >= a.va && size_t(b - a.va) < a.len) {
        last_ = &a;
        return a.iova_of(b);
      }
    }
    refresh();  // memory may have grown since the queue was made
  }
  return kBadIova;
}

// ---- Controller ----

Result<std::unique_ptr<Controller>> Controller::open(iommu::Device& device, Memory& memory,
                                                     const ControllerOptions& options) {
  auto ctrl = std::make_unique<ControllerImpl>(device, memory, options);
  UVIO_TRY(ctrl->bring_up());
  return std::unique_ptr<Controller>(std::move(ctrl));
}

ControllerImpl::ControllerImpl(iommu::Device& device, Memory& memory, const ControllerOptions& options)
    : device_(device), memory_(memory), options_(options) {}

ControllerImpl::~ControllerImpl() {
  std::lock_guard lock(admin_mu_);
  if (released_) {
    // Migrated away: the device and the memory belong to the controller that took over.
    for (auto& q : queues_) q->released_ = true;
    queues_.clear();
    return;
  }
  if (!failed_) {
    for (auto& q : queues_) {
      spec::SubmissionEntry del{};
      del.opcode = spec::kAdminDeleteSq;
      del.cdw10 = q->qid_;
      (void)admin(del);
      del.opcode = spec::kAdminDeleteCq;
      (void)admin(del);
    }
  }
  for (auto& q : queues_) {
    if (q->interrupts_) (void)device_.set_irq_eventfds(iommu::kMsixIrq, q->vector_, std::array<int, 1>{-1});
    q->fail_outstanding();  // closing with I/O in flight: it fails, it is not forgotten
  }
  queues_.clear();
  // §7.6.2: a normal shutdown lets the device flush its write cache before it goes off.
  if (asq_ && !failed_) {
    uint32_t cc = bar_.read32(spec::kRegCc);
    if (cc != spec::kCstsAllOnes && (cc & spec::kCcEnable)) {
      bar_.write32(spec::kRegCc, (cc & ~(3u << 14)) | 1u << 14);  // CC.SHN = 01b
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      while (((bar_.read32(spec::kRegCsts) >> 2) & 3) != 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      bar_.write32(spec::kRegCc, 0);
    }
  }
  for (void* p : {static_cast<void*>(asq_), static_cast<void*>(acq_), static_cast<void*>(identify_buf_),
                  static_cast<void*>(shadow_), static_cast<void*>(event_idx_)})
    if (p) memory_.free(p);
}

const NamespaceInfo* ControllerImpl::find_namespace(uint32_t nsid) const { return ns_cache(nsid); }

Status ControllerImpl::wait_ready(bool ready) {
  // CAP.TO (§3.1.1): the worst case for CSTS.RDY to follow CC.EN, in 500 ms units.
  auto limit = std::chrono::milliseconds(500) * std::max<uint32_t>(1, spec::cap_to_500ms(cap_));
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    uint32_t csts = bar_.read32(spec::kRegCsts);
    if (csts == spec::kCstsAllOnes)
      return Status::error(ENODEV, fmt::format("nvme: {}: CSTS reads all ones; the device is gone", device_.name()));
    if (ready && (csts & spec::kCstsFatal))
      return Status::error(EIO, fmt::format("nvme: {}: controller fatal status (CSTS.CFS) while enabling",
                                            device_.name()));
    if (bool(csts & spec::kCstsReady) == ready) return Status::ok();
    if (std::chrono::steady_clock::now() > deadline)
      return Status::error(ETIMEDOUT, fmt::format("nvme: {}: CSTS.RDY did not become {} within CAP.TO ({} ms)",
                                                  device_.name(), ready ? 1 : 0, limit.count()));
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Status ControllerImpl::enable() {
  auto command = device_.config_read(kPciCommand, 2);
  if (!command) return command.status();
  if ((*command & (kPciCommandMemory | kPciCommandBusMaster)) != (kPciCommandMemory | kPciCommandBusMaster))
    UVIO_TRY(device_.config_write(kPciCommand, 2, *command | kPciCommandMemory | kPciCommandBusMaster));
  uint32_t entries = options_.admin_entries;
  std::memset(asq_, 0, size_t(entries) << spec::kSqEntryLog2);
  std::memset(acq_, 0, size_t(entries) << spec::kCqEntryLog2);
  asq_tail_ = acq_head_ = 0;
  admin_phase_ = true;
  bar_.write32(spec::kRegAqa, (entries - 1) | (entries - 1) << 16);  // §3.1.8, 0's based
  bar_.write64(spec::kRegAsq, memory_.iova_of(asq_));
  bar_.write64(spec::kRegAcq, memory_.iova_of(acq_));
  // §7.6.1: CC's fields first, then EN. 4 KiB pages (MPS 0), NVM command set, round robin.
  uint32_t cc = spec::kSqEntryLog2 << spec::kCcIosqesShift | spec::kCqEntryLog2 << spec::kCcIocqesShift;
  bar_.write32(spec::kRegCc, cc);
  bar_.write32(spec::kRegCc, cc | spec::kCcEnable);
  return wait_ready(true);
}

Status ControllerImpl::bring_up() {
  UVIO_TRY(bar_.open(device_));
  cap_ = bar_.read64(spec::kRegCap);
  if (cap_ == ~0ull) return Status::error(ENODEV, fmt::format("nvme: {}: CAP reads all ones", device_.name()));
  if (!spec::cap_css_nvm(cap_))
    return Status::error(ENOTSUP, fmt::format("nvme: {}: CAP.CSS lacks the NVM command set", device_.name()));
  if (spec::cap_mpsmin(cap_) != 0)
    return Status::error(ENOTSUP, fmt::format("nvme: {}: CAP.MPSMIN is {} KiB; the driver uses 4 KiB pages",
                                              device_.name(), 4u << spec::cap_mpsmin(cap_)));
  stride_bytes_ = 4u << spec::cap_dstrd(cap_);
  info_.max_queue_entries = spec::cap_mqes(cap_);
  // §3.1.1: MQES is 0's based with a minimum of 1 (two entries); a queue of one entry
  // can never hold a command, and the clamps below need at least 2.
  if (info_.max_queue_entries < 2)
    return Status::error(ENODEV, fmt::format("nvme: {}: CAP.MQES is 0; a queue needs at least 2 entries",
                                             device_.name()));
  options_.admin_entries = std::clamp<uint32_t>(options_.admin_entries, 2, std::min<uint32_t>(4096, info_.max_queue_entries));

  // §7.6.1 step 1: the controller must be off before the admin queue is set.
  uint32_t cc = bar_.read32(spec::kRegCc);
  if (cc & spec::kCcEnable) bar_.write32(spec::kRegCc, cc & ~spec::kCcEnable);
  UVIO_TRY(wait_ready(false));

  auto alloc_page_aligned = [&](size_t bytes) {
    void* p = memory_.alloc(bytes, spec::kPageBytes);
    if (p) std::memset(p, 0, bytes);
    return static_cast<std::byte*>(p);
  };
  asq_ = reinterpret_cast<spec::SubmissionEntry*>(alloc_page_aligned(size_t(options_.admin_entries) << 6));
  acq_ = reinterpret_cast<spec::CompletionEntry*>(alloc_page_aligned(size_t(options_.admin_entries) << 4));
  identify_buf_ = alloc_page_aligned(spec::kIdentifyBytes);
  shadow_ = reinterpret_cast<uint32_t*>(alloc_page_aligned(spec::kPageBytes));
  event_idx_ = reinterpret_cast<uint32_t*>(alloc_page_aligned(spec::kPageBytes));
  if (!asq_ || !acq_ || !identify_buf_ || !shadow_ || !event_idx_)
    return Status::error(ENOMEM, "nvme: no DMA memory left for the admin queue (raise -m)");

  std::lock_guard lock(admin_mu_);
  UVIO_TRY(enable());
  auto irq = device_.irq_info(iommu::kMsixIrq);
  info_.interrupt_vectors = irq ? irq->count : 0;
  UVIO_TRY(identify());
  UVIO_TRY(setup_queues_features());
  bar_.map_doorbells(stride_bytes_, info_.io_queues);
  qid_used_.assign(info_.io_queues + 1, false);
  UVIO_LOG(Info, kLog, "{}: {} {} fw {}: {} namespace(s), {} I/O queues, shadow doorbells {}", device_.name(),
           info_.model, info_.serial, info_.firmware, namespaces_.size(), info_.io_queues,
           info_.shadow_doorbells ? "on" : "off");
  return Status::ok();
}

// admin_mu_ held. Synchronous: one admin command at a time is all the control path needs.
Result<uint32_t> ControllerImpl::admin(spec::SubmissionEntry cmd) {
  uint32_t entries = options_.admin_entries;
  cmd.cid = admin_cid_++;
  asq_[asq_tail_] = cmd;
  asq_tail_ = (asq_tail_ + 1) % entries;
  bar_.ring(0, asq_tail_);  // a release store (or a message): the entry is visible first
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.admin_timeout_ms);
  for (;;) {
    spec::CompletionEntry* e = &acq_[acq_head_];
    uint16_t raw = __atomic_load_n(&e->status, __ATOMIC_ACQUIRE);  // the phase, then the rest
    if (bool(raw & 1) != admin_phase_) {
      if (std::chrono::steady_clock::now() > deadline)
        return Status::error(ETIMEDOUT, fmt::format("nvme: {}: admin command {:#04x} got no completion in {} ms",
                                                    device_.name(), cmd.opcode, options_.admin_timeout_ms));
      std::this_thread::yield();
      continue;
    }
    uint16_t cid = e->cid;
    uint32_t dw0 = e->dw0;
    if (++acq_head_ == entries) {
      acq_head_ = 0;
      admin_phase_ = !admin_phase_;
    }
    bar_.ring(1, acq_head_);
    if (cid != cmd.cid) {
      UVIO_LOG(Warning, kLog, "{}: admin completion for command id {} that was not outstanding; ignored",
               device_.name(), cid);
      continue;
    }
    IoStatus status = spec::status_field(raw);
    if (!status_ok(status))
      return Status::error(errno_for(status), fmt::format("nvme: {}: admin command {:#04x} failed: {}",
                                                          device_.name(), cmd.opcode, nvme_status_string(status)));
    return dw0;
  }
}

Status ControllerImpl::identify() {
  info_.version = bar_.read32(spec::kRegVs);
  uint64_t buf_iova = memory_.iova_of(identify_buf_);
  spec::SubmissionEntry id{};
  id.opcode = spec::kAdminIdentify;
  id.prp1 = buf_iova;
  id.cdw10 = spec::kCnsController;
  UVIO_TRY(admin(id).status());
  const std::byte* d = identify_buf_;
  info_.serial = ascii_field(d + spec::kIdSerial, 20);
  info_.model = ascii_field(d + spec::kIdModel, 40);
  info_.firmware = ascii_field(d + spec::kIdFirmware, 8);
  uint8_t mdts = load<uint8_t>(d + spec::kIdMdts);
  uint16_t oacs = load<uint16_t>(d + spec::kIdOacs);
  uint16_t oncs = load<uint16_t>(d + spec::kIdOncs);
  uint32_t nn = load<uint32_t>(d + spec::kIdNn);
  info_.volatile_write_cache = load<uint8_t>(d + spec::kIdVwc) & 1;
  info_.write_zeroes = oncs & spec::kOncsWriteZeroes;
  info_.dataset_management = oncs & spec::kOncsDsm;
  info_.shadow_doorbells = options_.shadow_doorbells && (oacs & spec::kOacsDoorbellBuffer);
  uint64_t mdts_bytes = mdts ? (uint64_t(spec::kPageBytes) << std::min<uint8_t>(mdts, 20)) : ~0ull;
  info_.max_transfer_bytes = static_cast<uint32_t>(std::min<uint64_t>(mdts_bytes, kDriverMaxTransfer));

  // Namespaces: the active list (CNS 02h, NVMe 1.1 and later), else 1..NN.
  std::vector<uint32_t> ids;
  if (info_.version >= 0x00010100) {
    id.cdw10 = spec::kCnsActiveNamespaces;
    id.nsid = 0;
    UVIO_TRY(admin(id).status());
    for (uint32_t i = 0; i < spec::kIdentifyBytes / 4; ++i) {
      uint32_t nsid = load<uint32_t>(d + 4 * i);
      if (nsid == 0) break;
      ids.push_back(nsid);
    }
  } else {
    for (uint32_t nsid = 1; nsid <= std::min<uint32_t>(nn, 1024); ++nsid) ids.push_back(nsid);
  }
  for (uint32_t nsid : ids) {
    if (nsid > 1024) {
      UVIO_LOG(Warning, kLog, "{}: namespace {} is beyond the 1024 the driver handles; skipped", device_.name(), nsid);
      continue;
    }
    id.cdw10 = spec::kCnsNamespace;
    id.nsid = nsid;
    UVIO_TRY(admin(id).status());
    uint64_t blocks = load<uint64_t>(d + spec::kNsSize);
    uint8_t format = load<uint8_t>(d + spec::kNsFlbas) & 0xf;
    uint8_t formats = load<uint8_t>(d + spec::kNsNlbaf);
    uint32_t lbaf = load<uint32_t>(d + spec::kNsLbaf0 + 4 * format);
    uint32_t lbads = (lbaf >> 16) & 0xff;
    if (blocks == 0) continue;  // inactive
    if (format > formats || lbads < 9 || lbads > 16) {
      UVIO_LOG(Warning, kLog, "{}: namespace {} reports LBA format {} with 2^{}-byte blocks; skipped",
               device_.name(), nsid, format, lbads);
      continue;
    }
    namespaces_.push_back({nsid, blocks, 1u << lbads});
  }
  uint32_t max_id = 0;
  for (auto& ns : namespaces_) max_id = std::max(max_id, ns.id);
  ns_by_id_.assign(max_id, nullptr);
  for (auto& ns : namespaces_) ns_by_id_[ns.id - 1] = &ns;
  return Status::ok();
}

Status ControllerImpl::setup_queues_features() {
  // §5.21.1.7: asked once after each reset, before any I/O queue is created. 0's based.
  uint32_t wanted = std::clamp<uint32_t>(options_.io_queues_wanted, 1, 0xfffe);
  spec::SubmissionEntry sf{};
  sf.opcode = spec::kAdminSetFeatures;
  sf.cdw10 = spec::kFeatureNumberOfQueues;
  sf.cdw11 = (wanted - 1) | (wanted - 1) << 16;
  auto dw0 = admin(sf);
  if (!dw0) return dw0.status();
  uint32_t granted = std::min({wanted, (*dw0 & 0xffff) + 1, (*dw0 >> 16) + 1});
  if (info_.io_queues == 0) info_.io_queues = granted;
  else if (granted < info_.io_queues)
    return Status::error(EIO, fmt::format("nvme: {}: after reset the controller grants {} I/O queues, not {}",
                                          device_.name(), granted, info_.io_queues));

  if (info_.shadow_doorbells) {
    // §5.8: one page each; queue y's entries sit where its doorbells sit in BAR0.
    uint32_t max_qid = spec::kPageBytes / (2 * stride_bytes_) - 1;
    info_.io_queues = std::min(info_.io_queues, max_qid);
    // Not cleared again on reset: each queue's owner zeroes its own entries when it
    // (re)creates the queue, and may still be touching them until it notices the reset.
    spec::SubmissionEntry db{};
    db.opcode = spec::kAdminDoorbellBufferConfig;
    db.prp1 = memory_.iova_of(shadow_);
    db.prp2 = memory_.iova_of(event_idx_);
    auto r = admin(db);
    if (!r && r.status().code() == ETIMEDOUT) return r.status();
    if (!r) {
      UVIO_LOG(Warning, kLog, "{}: Doorbell Buffer Config failed ({}); ringing MMIO doorbells only",
               device_.name(), r.status().describe());
      info_.shadow_doorbells = false;
    }
  }
  return Status::ok();
}

Result<QueuePair*> ControllerImpl::create_queue_pair(const QueueOptions& options) {
  uint16_t qid = 0;
  {
    std::lock_guard lock(admin_mu_);
    if (failed_) return Status::error(EIO, fmt::format("nvme: {}: the controller has failed", device_.name()));
    for (uint32_t i = 1; i < qid_used_.size(); ++i)
      if (!qid_used_[i]) {
        qid = static_cast<uint16_t>(i);
        break;
      }
    if (!qid)
      return Status::error(EBUSY, fmt::format("nvme: {}: all {} I/O queue pairs are in use", device_.name(),
                                              info_.io_queues));
    if (options.interrupts && qid >= info_.interrupt_vectors)
      return Status::error(ENOTSUP, fmt::format("nvme: {}: queue {} needs MSI-X vector {} but the device has {}",
                                                device_.name(), qid, qid, info_.interrupt_vectors));
    qid_used_[qid] = true;
  }
  uint32_t entries = std::clamp<uint32_t>(options.entries, 2, std::min<uint32_t>(info_.max_queue_entries, 65536));
  auto q = std::make_unique<QueuePairImpl>(*this, qid, entries, options.interrupts);
  Status s = q->allocate();
  if (s && q->interrupts_) {
    q->vector_ = qid;  // vector 0 stays with the admin queue
    s = device_.set_irq_eventfds(iommu::kMsixIrq, q->vector_, std::array<int, 1>{q->event_fd_});
  }
  if (s) s = create_io_queues(*q);
  std::lock_guard lock(admin_mu_);
  if (!s) {
    if (q->interrupts_) (void)device_.set_irq_eventfds(iommu::kMsixIrq, q->vector_, std::array<int, 1>{-1});
    qid_used_[qid] = false;
    return s;
  }
  queues_.push_back(std::move(q));
  return static_cast<QueuePair*>(queues_.back().get());
}

Status ControllerImpl::create_io_queues(QueuePairImpl& q) {
  std::lock_guard lock(admin_mu_);
  // Only now, with any reset finished and the controller off in between, may the ring
  // memory be reused: before CC.EN went to 0 the device could still be writing to it.
  q.reset_rings();
  if (failed_) return Status::error(EIO, fmt::format("nvme: {}: the controller has failed", device_.name()));
  q.generation_ = generation_.load();
  q.set_shadow_pointers(shadow_ && info_.shadow_doorbells);
  // A new queue starts at tail and head 0; stale values would read as a doorbell write.
  if (q.shadow_sq_) *q.shadow_sq_ = *q.shadow_cq_ = *q.event_sq_ = *q.event_cq_ = 0;
  uint32_t size_field = (q.entries_ - 1) << 16;  // QSIZE, 0's based
  spec::SubmissionEntry cq{};
  cq.opcode = spec::kAdminCreateCq;  // §5.3
  cq.prp1 = q.cq_iova_;
  cq.cdw10 = q.qid_ | size_field;
  cq.cdw11 = spec::kQueuePhysicallyContiguous | (q.interrupts_ ? spec::kCqInterruptsEnabled | q.vector_ << 16 : 0);
  UVIO_TRY(admin(cq).status());
  spec::SubmissionEntry sq{};
  sq.opcode = spec::kAdminCreateSq;  // §5.4: CQID 31:16 of CDW11
  sq.prp1 = q.sq_iova_;
  sq.cdw10 = q.qid_ | size_field;
  sq.cdw11 = spec::kQueuePhysicallyContiguous | uint32_t(q.qid_) << 16;
  auto r = admin(sq);
  if (!r) {
    spec::SubmissionEntry del{};
    del.opcode = spec::kAdminDeleteCq;
    del.cdw10 = q.qid_;
    (void)admin(del);
    return r.status();
  }
  return Status::ok();
}

Status ControllerImpl::destroy_queue_pair(QueuePair* queue) {
  std::unique_ptr<QueuePairImpl> owned;
  {
    std::lock_guard lock(admin_mu_);
    auto it = std::find_if(queues_.begin(), queues_.end(), [&](auto& q) { return q.get() == queue; });
    if (it == queues_.end()) return Status::error(EINVAL, "nvme: destroy_queue_pair: not a queue of this controller");
    owned = std::move(*it);
    queues_.erase(it);
    qid_used_[owned->qid_] = false;
    if (!failed_ && owned->generation_ == generation_.load()) {
      spec::SubmissionEntry del{};
      del.opcode = spec::kAdminDeleteSq;  // §5.7: the controller aborts what the SQ still holds
      del.cdw10 = owned->qid_;
      Status s = admin(del).status();
      del.opcode = spec::kAdminDeleteCq;  // §5.6
      if (s) s = admin(del).status();
      if (!s) UVIO_LOG(Warning, kLog, "{}: deleting queue {}: {}", device_.name(), owned->qid_, s.describe());
    }
    if (owned->interrupts_)
      (void)device_.set_irq_eventfds(iommu::kMsixIrq, owned->vector_, std::array<int, 1>{-1});
  }
  // Nothing outstanding may be lost silently.
  owned->fail_outstanding();
  return Status::ok();
}

Status ControllerImpl::abort_command(uint16_t sqid, uint16_t cid, bool* aborted) {
  std::lock_guard lock(admin_mu_);
  spec::SubmissionEntry ab{};
  ab.opcode = spec::kAdminAbort;  // §5.1: SQID 15:0, CID 31:16
  ab.cdw10 = sqid | uint32_t(cid) << 16;
  auto dw0 = admin(ab);
  if (!dw0) return dw0.status();
  *aborted = !(*dw0 & 1);  // DW0 bit 0 cleared: the command was aborted
  return Status::ok();
}

Status ControllerImpl::reset() { return reset_after_fault(generation(), "reset requested"); }

Status ControllerImpl::reset_after_fault(uint64_t seen_generation, const char* why) {
  std::lock_guard lock(admin_mu_);
  if (generation_.load() != seen_generation) return Status::ok();  // another queue already did it
  return do_reset(why);
}

// admin_mu_ held. §7.3.2: CC.EN 1 -> 0 deletes every I/O queue and drops every command;
// the admin queue, features and the doorbell buffer are then set up again.
Status ControllerImpl::do_reset(const char* why) {
  UVIO_LOG(Warning, kLog, "{}: controller reset: {}", device_.name(), why);
  resets_.fetch_add(1);
  // A new generation first: from here submissions get -EAGAIN and doorbells stay quiet
  // until each queue has been re-created by its own poll(), which waits on admin_mu_.
  generation_.fetch_add(1, std::memory_order_release);
  bar_.write32(spec::kRegCc, bar_.read32(spec::kRegCc) & ~spec::kCcEnable);
  Status s = wait_ready(false);
  if (!s) {
    UVIO_LOG(Warning, kLog, "{}: {}; trying a function-level reset", device_.name(), s.describe());
    s = device_.reset();
    if (s) s = wait_ready(false);
  }
  if (s) s = enable();
  if (s) s = setup_queues_features();
  if (!s) {
    UVIO_LOG(Err, kLog, "{}: the controller did not come back after reset: {}", device_.name(), s.describe());
    failed_ = true;
  }
  return s;
}

}  // namespace uvio::nvme
