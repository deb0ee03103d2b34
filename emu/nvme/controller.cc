#include "emu/nvme/controller.h"

#include <uvio/log.h>

#include <algorithm>
#include <cstring>

namespace uvio::emu::nvme {
namespace {

constexpr const char* kLog = "emu.nvme";

// CAP.TO: how long the host waits for CSTS.RDY, in 500 ms units (§3.1.1).
constexpr uint64_t kReadyTimeoutUnits = 20;
constexpr uint64_t kDefaultNamespaceBytes = 64ull << 20;

}  // namespace

Result<std::unique_ptr<NvmeController>> NvmeController::create(const NvmeOptions& options) {
  // The same limits parse_nvme_options enforces, for options built in code.
  if (options.io_queues < 1 || options.io_queues > 255 || options.max_queue_entries < 2 ||
      options.max_queue_entries > 65536 || options.namespaces < 1 ||
      (options.lba_bytes != 512 && options.lba_bytes != 4096) || options.serial.size() > 20)
    return Status::error(EINVAL, fmt::format("nvme: options out of range (queues={} mqes={} ns={} lba={} "
                                             "serial of {} characters)", options.io_queues,
                                             options.max_queue_entries, options.namespaces, options.lba_bytes,
                                             options.serial.size()));
  std::unique_ptr<NvmeController> ctrl(new NvmeController(options));
  for (uint32_t i = 0; i < options.namespaces; ++i) {
    Result<std::unique_ptr<NamespaceStore>> ns =
        (i == 0 && !options.file.empty())
            ? NamespaceStore::open_file(options.file, options.namespace_bytes, options.lba_bytes)
            : NamespaceStore::create_memory(options.namespace_bytes ? options.namespace_bytes : kDefaultNamespaceBytes,
                                            options.lba_bytes);
    if (!ns) return ns.status();
    ctrl->namespaces_.push_back(std::move(*ns));
  }
  return ctrl;
}

NvmeController::NvmeController(NvmeOptions options)
    : opt_(std::move(options)), queue_count_(opt_.io_queues + 1) {
  own_doorbells_.assign(kDoorbellPage / 4, 0);
  doorbells_ = own_doorbells_.data();
  st_.sqs.resize(queue_count_);
  st_.cqs.resize(queue_count_);
  st_.features.sq_allocated = static_cast<uint16_t>(opt_.io_queues - 1);
  st_.features.cq_allocated = static_cast<uint16_t>(opt_.io_queues - 1);
}

NvmeController::~NvmeController() = default;

PciIdentity NvmeController::identity() const {
  PciIdentity id;
  // The ID set aside for emulated devices (Red Hat / QEMU) and QEMU's NVMe device ID:
  // drivers bind NVMe by class code, the ID only selects quirks known for emulation.
  id.vendor_id = 0x1b36;
  id.device_id = 0x0010;
  id.subsystem_vendor_id = 0x1b36;
  id.subsystem_id = 0x0010;
  id.revision = 2;
  id.class_code = 0x010802;  // mass storage, non-volatile memory, NVM Express
  return id;
}

std::vector<BarLayout> NvmeController::bars() const {
  BarLayout bar0;
  bar0.index = 0;
  bar0.size = kBar0Bytes;
  bar0.shared.push_back({kDoorbellPage, kDoorbellPage});
  return {bar0};
}

MsixLayout NvmeController::msix() const {
  MsixLayout m;
  m.vectors = queue_count_;
  m.bar = 0;
  m.table_offset = kMsixTableOffset;
  m.pba_offset = kMsixPbaOffset;
  return m;
}

void NvmeController::attach(DmaAccess& dma, IrqSink& irq, std::span<std::byte* const> shared) {
  dma_ = &dma;
  irq_ = &irq;
  if (!shared.empty() && shared[0]) {
    auto* page = reinterpret_cast<uint32_t*>(shared[0] + kDoorbellPage);
    for (size_t i = 0; i < own_doorbells_.size(); ++i) __atomic_store_n(&page[i], own_doorbells_[i], __ATOMIC_RELAXED);
    doorbells_ = page;
  }
}

// §3.1.1 CAP.
uint64_t NvmeController::cap() const {
  return uint64_t(opt_.max_queue_entries - 1) << kCapMqesShift | 1ull << kCapCqrShift |
         kReadyTimeoutUnits << kCapToShift | 0ull << kCapDstrdShift | 1ull << kCapCssShift |
         0ull << kCapMpsminShift | uint64_t(kMpsMax) << kCapMpsmaxShift;
}

uint32_t NvmeController::read_register(uint64_t offset) const {
  switch (offset) {
    case kRegCap: return static_cast<uint32_t>(cap());
    case kRegCap + 4: return static_cast<uint32_t>(cap() >> 32);
    case kRegVs: return kVersion14;
    case kRegIntms:
    case kRegIntmc: return st_.intms;
    case kRegCc: return st_.cc;
    case kRegCsts: return st_.csts;
    case kRegAqa: return st_.aqa;
    case kRegAsq: return static_cast<uint32_t>(st_.asq);
    case kRegAsq + 4: return static_cast<uint32_t>(st_.asq >> 32);
    case kRegAcq: return static_cast<uint32_t>(st_.acq);
    case kRegAcq + 4: return static_cast<uint32_t>(st_.acq >> 32);
    default: return 0;  // reserved and unsupported optional registers read as zero
  }
}

uint64_t NvmeController::bar_read(uint32_t bar, uint64_t offset, unsigned width) {
  if (bar != 0 || offset >= kDoorbellPage || (width != 1 && width != 2 && width != 4 && width != 8) ||
      offset + width > kDoorbellPage)
    return 0;  // doorbells are write-only; the MSI-X table is the server's
  uint64_t dword = offset & ~3ull;
  uint64_t value = read_register(dword) | uint64_t(read_register(dword + 4)) << 32;
  value >>= (offset - dword) * 8;
  return width == 8 ? value : value & ((1ull << (width * 8)) - 1);
}

void NvmeController::bar_write(uint32_t bar, uint64_t offset, uint64_t value, unsigned width) {
  if (bar != 0 || (width != 1 && width != 2 && width != 4 && width != 8)) return;
  if (offset >= kDoorbellPage && offset + width <= 2 * kDoorbellPage) {
    // A doorbell that reached us as a message (no shared page, or a client that traps).
    if (width == 4 && !(offset & 3)) set_doorbell(static_cast<uint32_t>((offset - kDoorbellPage) / 4),
                                                  static_cast<uint32_t>(value));
    return;
  }
  if (offset + width > kDoorbellPage) return;
  if (width == 8) {
    if (offset & 7) return;
    write_register(offset, static_cast<uint32_t>(value));
    write_register(offset + 4, static_cast<uint32_t>(value >> 32));
    return;
  }
  // Narrow writes merge into their dword.
  uint64_t dword = offset & ~3ull;
  unsigned shift = static_cast<unsigned>(offset - dword) * 8;
  if (shift + width * 8 > 32) return;
  uint32_t mask = width == 4 ? ~0u : ((1u << (width * 8)) - 1) << shift;
  uint32_t current = dword == kRegIntmc ? 0 : read_register(dword);
  write_register(dword, (current & ~mask) | (static_cast<uint32_t>(value << shift) & mask));
}

void NvmeController::write_register(uint64_t offset, uint32_t value) {
  switch (offset) {
    // §3.1.3/§3.1.4: the mask registers only matter for pin-based and MSI interrupts;
    // with MSI-X the host masks vectors in the table. Kept so reads reflect writes.
    case kRegIntms: st_.intms |= value; break;
    case kRegIntmc: st_.intms &= ~value; break;
    case kRegCc: write_cc(value); break;
    // §3.1.8-3.1.10: the admin queue registers only change while the controller is off.
    case kRegAqa: if (!(st_.cc & kCcEn)) st_.aqa = value & (kAqaSizeMask | kAqaSizeMask << 16); break;
    case kRegAsq: if (!(st_.cc & kCcEn)) st_.asq = (st_.asq & ~0xffffffffull) | (value & ~0xfffu); break;
    case kRegAsq + 4: if (!(st_.cc & kCcEn)) st_.asq = (st_.asq & 0xffffffffull) | uint64_t(value) << 32; break;
    case kRegAcq: if (!(st_.cc & kCcEn)) st_.acq = (st_.acq & ~0xffffffffull) | (value & ~0xfffu); break;
    case kRegAcq + 4: if (!(st_.cc & kCcEn)) st_.acq = (st_.acq & 0xffffffffull) | uint64_t(value) << 32; break;
    default: break;  // read-only or reserved
  }
}

// §3.1.5 CC; controller initialization and shutdown processing as the theory of
// operation describes them.
void NvmeController::write_cc(uint32_t value) {
  constexpr uint32_t kCcWritable = 0x00fffff1;
  constexpr uint32_t kShnMask = 3u << kCcShnShift;
  uint32_t old = st_.cc;
  value &= kCcWritable;
  if ((old & kCcEn) && (value & kCcEn)) value = (old & ~kShnMask) | (value & kShnMask);  // the rest is frozen
  st_.cc = value;

  if (!(old & kCcEn) && (value & kCcEn)) {
    enable();
  } else if ((old & kCcEn) && !(value & kCcEn)) {
    controller_reset();
  }

  uint32_t shn = (value & kShnMask) >> kCcShnShift;
  uint32_t old_shn = (old & kShnMask) >> kCcShnShift;
  if (shn && !old_shn) {
    for (auto& ns : namespaces_) {
      if (!ns->flush()) UVIO_LOG(Warning, kLog, "flush on shutdown failed: {}", strerror(errno));
    }
    st_.csts = (st_.csts & ~(3u << kCstsShstShift)) | kShstComplete << kCstsShstShift;
  } else if (!shn) {
    st_.csts &= ~(3u << kCstsShstShift);
  }
}

void NvmeController::enable() {
  enable_error_.clear();
  uint32_t asqs = (st_.aqa & kAqaSizeMask) + 1;
  uint32_t acqs = ((st_.aqa >> 16) & kAqaSizeMask) + 1;
  uint32_t mps = (st_.cc >> kCcMpsShift) & 0xf;
  uint32_t css = (st_.cc >> kCcCssShift) & 7;
  uint32_t ams = (st_.cc >> kCcAmsShift) & 7;
  if (css != 0) enable_error_ = fmt::format("CC.CSS {} is not the NVM command set (0)", css);
  else if (ams != 0) enable_error_ = fmt::format("CC.AMS {} is not round robin (0), the only arbitration supported", ams);
  else if (mps > kMpsMax) enable_error_ = fmt::format("CC.MPS {} is above CAP.MPSMAX {}", mps, kMpsMax);
  else if (asqs < 2 || acqs < 2) enable_error_ = fmt::format("AQA gives admin queues of {} and {} entries; at least 2 are needed", asqs, acqs);
  else if (asqs > opt_.max_queue_entries || acqs > opt_.max_queue_entries)
    enable_error_ = fmt::format("AQA gives admin queues of {} and {} entries, above CAP.MQES ({} entries)",
                                asqs, acqs, opt_.max_queue_entries);
  else if ((st_.asq | st_.acq) & (page_size() - 1))
    enable_error_ = fmt::format("ASQ {:#x} or ACQ {:#x} is not aligned to the {}-byte memory page", st_.asq, st_.acq, page_size());
  if (!enable_error_.empty()) {
    // Like a device that cannot start: the host sees CFS and resets (§3.1.6).
    UVIO_LOG(Err, kLog, "controller enable refused: {}", enable_error_);
    st_.csts |= kCstsCfs;
    return;
  }
  SubmissionQueue& asq = st_.sqs[0];
  asq = SubmissionQueue{};
  asq.live = true;
  asq.base = st_.asq;
  asq.size = asqs;
  CompletionQueue& acq = st_.cqs[0];
  acq = CompletionQueue{};
  acq.live = true;
  acq.base = st_.acq;
  acq.size = acqs;
  acq.irq_enabled = true;  // the admin CQ always interrupts, on vector 0
  acq.sq_refs = 1;
  zero_doorbells();
  st_.csts = (st_.csts & ~kCstsCfs) | kCstsRdy;
}

// Controller Level Reset (CC.EN 1 -> 0): queues, outstanding commands, the shadow doorbell
// buffers and features go; AQA/ASQ/ACQ and the logs stay.
void NvmeController::controller_reset() {
  for (auto& sq : st_.sqs) sq = SubmissionQueue{};
  for (auto& cq : st_.cqs) cq = CompletionQueue{};
  st_.features = Features{};
  st_.features.sq_allocated = static_cast<uint16_t>(opt_.io_queues - 1);
  st_.features.cq_allocated = static_cast<uint16_t>(opt_.io_queues - 1);
  st_.shadow_doorbells = 0;
  st_.event_indexes = 0;
  st_.async_event_cids.clear();
  st_.error_event_pending = false;
  st_.error_events_masked = false;
  st_.aborts.clear();
  io_stalled_ = false;
  st_.csts &= ~(kCstsRdy | kCstsCfs);
  zero_doorbells();
}

void NvmeController::reset() {
  controller_reset();
  st_.cc = 0;
  st_.csts = 0;
  st_.aqa = 0;
  st_.asq = 0;
  st_.acq = 0;
  st_.intms = 0;
  enable_error_.clear();
}

// Real doorbell registers start at zero; ours are memory the host may have written
// for a previous queue, so a new queue must not read a stale tail.
void NvmeController::zero_doorbells() {
  for (uint32_t i = 0; i < 2 * queue_count_; ++i) set_doorbell(i, 0);
}

uint32_t NvmeController::doorbell(uint32_t index) const {
  return __atomic_load_n(&doorbells_[index], __ATOMIC_ACQUIRE);
}

void NvmeController::set_doorbell(uint32_t index, uint32_t value) {
  if (index < kDoorbellPage / 4) __atomic_store_n(&doorbells_[index], value, __ATOMIC_RELEASE);
}

// A doorbell changes when its register or its shadow entry (Doorbell Buffer Config) changes: drivers keep
// the admin queue on the register and move I/O queues to the shadow buffer, and may
// write both. A changed register wins.
bool NvmeController::read_new_doorbell(uint32_t index, uint32_t* last_doorbell, uint32_t* last_shadow,
                                       uint32_t* out) {
  bool changed = false;
  uint32_t reg = doorbell(index);
  if (reg != *last_doorbell) {
    *last_doorbell = reg;
    *out = reg;
    changed = true;
  }
  if (st_.shadow_doorbells) {
    uint32_t shadow = 0;
    // A driver that uses the shadow writes it on every update and the register only
    // sometimes, so a changed shadow is the newest value; a driver that keeps a queue on
    // the register alone (Linux and SPDK do for the admin queue) never changes its shadow.
    if (dma_->load_shared(st_.shadow_doorbells + 4ull * index, &shadow) && shadow != *last_shadow) {
      *last_shadow = shadow;
      *out = shadow;
      changed = true;
    }
  }
  return changed;
}

// Shadow doorbells: the host rings the register only when its new value passes the EventIdx. A
// polling controller never needs that, so it keeps the EventIdx one behind what it has
// consumed, which no update can pass.
void NvmeController::write_event_index(uint32_t index, uint32_t value, uint32_t* last) {
  if (!st_.event_indexes || value == *last) return;
  if (dma_->store_shared(st_.event_indexes + 4ull * index, value)) *last = value;
}

void NvmeController::refresh_sq_tail(uint16_t qid) {
  SubmissionQueue& sq = st_.sqs[qid];
  uint32_t value = 0;
  if (!read_new_doorbell(2u * qid, &sq.last_doorbell, &sq.last_shadow, &value)) return;
  if (value >= sq.size) {
    raise_error_event(kAsyncInfoInvalidDoorbellValue);
    return;
  }
  sq.tail = value;
}

void NvmeController::refresh_cq_head(uint16_t qid) {
  CompletionQueue& cq = st_.cqs[qid];
  uint32_t value = 0;
  if (!read_new_doorbell(2u * qid + 1, &cq.last_doorbell, &cq.last_shadow, &value)) return;
  if (value >= cq.size) {
    raise_error_event(kAsyncInfoInvalidDoorbellValue);
    return;
  }
  cq.head = value;
}

size_t NvmeController::poll() {
  if (!dma_ || !(st_.csts & kCstsRdy) || (st_.csts & kCstsCfs)) return 0;
  size_t work = 0;
  for (uint16_t qid = 0; qid < queue_count_; ++qid) {
    if (st_.sqs[qid].live) work += process_sq(qid);
    if (st_.csts & kCstsCfs) break;
  }
  deliver_async_events();
  for (uint16_t qid = 0; qid < queue_count_; ++qid) {
    CompletionQueue& cq = st_.cqs[qid];
    if (!cq.live) continue;
    refresh_cq_head(qid);
    write_event_index(2u * qid + 1, (cq.head + cq.size - 1) % cq.size, &cq.last_event_idx);
    if (cq.irq_pending) {
      cq.irq_pending = false;
      if (cq.irq_enabled) irq_->trigger(cq.vector);
    }
  }
  return work;
}

size_t NvmeController::process_sq(uint16_t qid) {
  SubmissionQueue& sq = st_.sqs[qid];
  refresh_sq_tail(qid);
  size_t done = 0;
  while (sq.head != sq.tail && done < kBurstPerQueue) {
    if (io_stalled_ && qid != 0) break;
    CompletionQueue& cq = st_.cqs[sq.cqid];
    if ((cq.tail + 1) % cq.size == cq.head) {
      refresh_cq_head(sq.cqid);
      if ((cq.tail + 1) % cq.size == cq.head) break;  // full: the entry waits (§4.1)
    }
    SubmissionEntry cmd;
    if (!dma_->read(sq.base + (uint64_t(sq.head) << kSqEntryShift), &cmd, sizeof(cmd))) {
      fatal("a submission queue entry cannot be read from host memory");
      return done;
    }
    sq.head = (sq.head + 1) % sq.size;
    ++done;
    uint64_t n = ++st_.commands_fetched;

    Outcome out;
    if (take_pending_abort(qid, cmd.cid)) {
      out.status = CompletionStatus::generic(kScAbortRequested, false);
    } else {
      out = qid == 0 ? execute_admin(cmd) : execute_io(cmd);
    }
    if (out.deferred) continue;
    if (!out.status.ok()) record_error(qid, cmd, out.status);

    const FaultPlan& f = opt_.faults;
    if (n == f.drop_completion) {
      UVIO_LOG(Notice, kLog, "fault: dropping the completion of command {} (cid {} on SQ {})", n, cmd.cid, qid);
    } else {
      uint16_t cid = n == f.wrong_cid ? static_cast<uint16_t>(cmd.cid ^ 0x8000) : cmd.cid;
      if (!post_completion(sq.cqid, qid, cid, out.status, out.dw0, n == f.stale_phase)) return done;
    }
    if (n == f.stall_io) {
      UVIO_LOG(Notice, kLog, "fault: I/O submission queues stall after command {}", n);
      io_stalled_ = true;
    }
    if (n == f.fatal_after && !st_.fatal_fault_fired) {
      st_.fatal_fault_fired = true;
      fatal("fault injection (cfs)");
      return done;
    }
  }
  if (sq.live) write_event_index(2u * qid, (sq.tail + sq.size - 1) % sq.size, &sq.last_event_idx);
  return done;
}

// §4.6: the entry's first three dwords land before the dword that carries the phase tag,
// so a host that sees the new phase reads a whole entry.
bool NvmeController::post_completion(uint16_t cqid, uint16_t sqid, uint16_t cid, CompletionStatus status,
                                     uint32_t dw0, bool stale_phase) {
  CompletionQueue& cq = st_.cqs[cqid];
  CompletionEntry e{};
  e.dw0 = dw0;
  e.sq_head = static_cast<uint16_t>(st_.sqs[sqid].head);
  e.sq_id = sqid;
  e.cid = cid;
  bool phase = cq.phase != stale_phase;
  e.status = static_cast<uint16_t>(status.field << 1 | (phase ? 1 : 0));
  uint64_t addr = cq.base + (uint64_t(cq.tail) << kCqEntryShift);
  uint32_t dw3 = 0;
  std::memcpy(&dw3, reinterpret_cast<const uint8_t*>(&e) + 12, sizeof(dw3));
  if (!dma_->write(addr, &e, 12) || !dma_->store_shared(addr + 12, dw3)) {
    fatal("a completion queue entry cannot be written to host memory");
    return false;
  }
  if (stale_phase) UVIO_LOG(Notice, kLog, "fault: completion for cid {} posted with a stale phase tag", cid);
  if (++cq.tail == cq.size) {
    cq.tail = 0;
    cq.phase = !cq.phase;
  }
  cq.irq_pending = true;
  return true;
}

void NvmeController::fatal(const char* why) {
  UVIO_LOG(Err, kLog, "controller fatal status: {}", why);
  st_.csts |= kCstsCfs;
}

bool NvmeController::take_pending_abort(uint16_t sqid, uint16_t cid) {
  for (auto it = st_.aborts.begin(); it != st_.aborts.end(); ++it) {
    if (it->sqid == sqid && it->cid == cid) {
      st_.aborts.erase(it);
      return true;
    }
  }
  return false;
}

void NvmeController::record_error(uint16_t sqid, const SubmissionEntry& cmd, CompletionStatus status) {
  std::copy_backward(st_.error_log.begin(), st_.error_log.end() - 1, st_.error_log.end());
  ErrorLogEntry& e = st_.error_log[0];
  e = ErrorLogEntry{};
  e.error_count = ++st_.health.error_entries;
  e.sqid = sqid;
  e.cid = cmd.cid;
  e.status = static_cast<uint16_t>(status.field << 1);
  e.param_location = 0xffff;  // not reported
  e.nsid = cmd.nsid;
}

// Asynchronous events: an error event goes to an outstanding request, or waits for one; after it is
// reported, error events stay masked until the host reads the error log.
void NvmeController::raise_error_event(uint8_t info) {
  if (st_.error_events_masked || st_.error_event_pending) return;
  UVIO_LOG(Warning, kLog, "invalid doorbell write value; reporting an asynchronous event");
  st_.error_event_pending = true;
  st_.error_event_info = info;
}

void NvmeController::deliver_async_events() {
  if (!st_.error_event_pending || st_.async_event_cids.empty() || !st_.cqs[0].live) return;
  CompletionQueue& acq = st_.cqs[0];
  if ((acq.tail + 1) % acq.size == acq.head) return;
  uint16_t cid = st_.async_event_cids.front();
  st_.async_event_cids.erase(st_.async_event_cids.begin());
  // Asynchronous Event Request completion dword 0: type 2:0, information 15:8, log page 23:16.
  uint32_t dw0 = kAsyncEventError | uint32_t(st_.error_event_info) << 8 | uint32_t(kLogErrorInfo) << 16;
  st_.error_event_pending = false;
  st_.error_events_masked = true;
  post_completion(0, 0, cid, CompletionStatus::success(), dw0);
}

}  // namespace uvio::emu::nvme
