// The I/O queue pair: submission, completion, PRPs, doorbells, and the slow checks poll()
// makes every so often (controller fatal status, command timeouts, recovery).
#include <uvio/cycles.h>
#include <uvio/intr.h>
#include <uvio/log.h>

#include "pmd/nvme/driver.h"

#include <unistd.h>

#include <cstring>

namespace uvio::nvme {
namespace {

constexpr const char* kLog = "nvme";

QueuePairImpl& impl(QueuePair* q) { return *static_cast<QueuePairImpl*>(q); }
const QueuePairImpl& impl(const QueuePair* q) { return *static_cast<const QueuePairImpl*>(q); }

}  // namespace

QueuePairImpl::QueuePairImpl(ControllerImpl& ctrl, uint16_t qid, uint32_t entries, bool interrupts)
    : ctrl_(ctrl), bar_(ctrl.bar()), iova_(ctrl.memory()), qid_(qid), entries_(entries), interrupts_(interrupts) {
  health_interval_ = std::max<uint32_t>(1, ctrl.options().health_check_polls);
  timeout_cycles_ = cycles_from_us(ctrl.options().io_timeout_us);
  health_period_cycles_ = cycles_from_us(ctrl.options().health_check_period_us);
}

QueuePairImpl::~QueuePairImpl() {
  Memory& mem = ctrl_.memory();
  if (!released_) {
    if (sq_) mem.free(sq_);
    if (cq_) mem.free(cq_);
    if (prp_pages_) mem.free(prp_pages_);
  }
  if (event_fd_ >= 0) ::close(event_fd_);
}

Status QueuePairImpl::allocate() {
  Memory& mem = ctrl_.memory();
  size_t sq_bytes = size_t(entries_) << spec::kSqEntryLog2;
  size_t cq_bytes = size_t(entries_) << spec::kCqEntryLog2;
  size_t prp_bytes = size_t(entries_ - 1) * spec::kPageBytes;
  sq_ = static_cast<spec::SubmissionEntry*>(mem.alloc(sq_bytes, spec::kPageBytes));
  cq_ = static_cast<spec::CompletionEntry*>(mem.alloc(cq_bytes, spec::kPageBytes));
  prp_pages_ = static_cast<std::byte*>(mem.alloc(prp_bytes, spec::kPageBytes));
  if (!sq_ || !cq_ || !prp_pages_)
    return Status::error(ENOMEM, fmt::format("nvme: queue {} needs {} KiB of DMA memory that is not free (raise -m)",
                                             qid_, (sq_bytes + cq_bytes + prp_bytes) >> 10));
  UVIO_TRY(adopt(sq_, cq_, prp_pages_));
  reset_rings();
  return Status::ok();
}

Status QueuePairImpl::adopt(spec::SubmissionEntry* sq, spec::CompletionEntry* cq, std::byte* prp_pages) {
  Memory& mem = ctrl_.memory();
  sq_ = sq;
  cq_ = cq;
  prp_pages_ = prp_pages;
  size_t sq_bytes = size_t(entries_) << spec::kSqEntryLog2;
  size_t cq_bytes = size_t(entries_) << spec::kCqEntryLog2;
  sq_iova_ = mem.iova_of(sq_);
  cq_iova_ = mem.iova_of(cq_);
  // Queues are created physically contiguous (CDW11.PC): check the IOVA says so.
  if (sq_iova_ == kBadIova || cq_iova_ == kBadIova ||
      mem.iova_of(reinterpret_cast<std::byte*>(sq_) + sq_bytes - 1) != sq_iova_ + sq_bytes - 1 ||
      mem.iova_of(reinterpret_cast<std::byte*>(cq_) + cq_bytes - 1) != cq_iova_ + cq_bytes - 1)
    return Status::error(ENOMEM, fmt::format("nvme: queue {} memory is not IOVA-contiguous; use larger pages", qid_));
  trackers_.assign(entries_ - 1, Tracker{});
  for (uint32_t i = 0; i < trackers_.size(); ++i) {
    Tracker& t = trackers_[i];
    t.cid = static_cast<uint16_t>(i);
    t.prp_list = reinterpret_cast<uint64_t*>(prp_pages_ + size_t(i) * spec::kPageBytes);
    t.prp_list_iova = mem.iova_of(t.prp_list);
    t.next_free = i + 1 < trackers_.size() ? static_cast<uint16_t>(i + 1) : kNoTracker;
  }
  free_head_ = trackers_.empty() ? kNoTracker : 0;
  outstanding_ = 0;
  failed_.reserve(trackers_.size());
  if (interrupts_ && event_fd_ < 0) {
    auto fd = make_eventfd();
    if (!fd) return fd.status();
    event_fd_ = *fd;
  }
  return Status::ok();
}

void QueuePairImpl::set_shadow_pointers(bool enabled) {
  uint32_t* shadow = ctrl_.shadow_doorbells();
  uint32_t* events = ctrl_.event_indexes();
  if (!enabled || !shadow || !events) {
    shadow_sq_ = shadow_cq_ = event_sq_ = event_cq_ = nullptr;
    return;
  }
  // §5.8: queue y's entries sit where its doorbells sit in BAR0.
  uint32_t words = ctrl_.doorbell_stride() / 4;
  shadow_sq_ = shadow + 2 * qid_ * words;
  shadow_cq_ = shadow + (2 * qid_ + 1) * words;
  event_sq_ = events + 2 * qid_ * words;
  event_cq_ = events + (2 * qid_ + 1) * words;
}

void QueuePairImpl::reset_rings() {
  std::memset(sq_, 0, size_t(entries_) << spec::kSqEntryLog2);
  std::memset(cq_, 0, size_t(entries_) << spec::kCqEntryLog2);
  sq_tail_ = sq_tail_rung_ = sq_head_ = cq_head_ = 0;
  phase_ = true;  // §4.6: the first lap's entries carry phase 1
  for (uint32_t i = 0; i < trackers_.size(); ++i) {
    trackers_[i].outstanding = false;
    trackers_[i].next_free = i + 1 < trackers_.size() ? static_cast<uint16_t>(i + 1) : kNoTracker;
  }
  free_head_ = trackers_.empty() ? kNoTracker : 0;
  outstanding_ = 0;
}

// ---- fast path ----

// Full, or stale after a controller reset until poll() re-creates the queue: -EAGAIN.
QueuePairImpl::Tracker* QueuePairImpl::acquire() {
  if (free_head_ == kNoTracker || (sq_tail_ + 1) % entries_ == sq_head_) return nullptr;
  if (ctrl_.generation() != generation_) return nullptr;
  if (ctrl_.quiesced()) return nullptr;  // a migration is draining the queue
  Tracker* t = &trackers_[free_head_];
  free_head_ = t->next_free;
  return t;
}

int QueuePairImpl::submit_command(spec::SubmissionEntry& cmd, Tracker& t, IoCallback cb, void* ctx) {
  cmd.cid = t.cid;
  t.cb = cb;
  t.ctx = ctx;
  t.deadline = cycles() + timeout_cycles_;
  t.outstanding = true;
  t.abort_sent = false;
  std::memcpy(&sq_[sq_tail_], &cmd, sizeof(cmd));
  sq_tail_ = sq_tail_ + 1 == entries_ ? 0 : sq_tail_ + 1;
  ++outstanding_;
  ++stats_.submitted;
  return 0;
}

// §4.3: PRP1 holds the first page (any dword-aligned offset), PRP2 the second page or,
// beyond two pages, a list of page addresses in the tracker's own list page.
int QueuePairImpl::build_prps(Tracker& t, const void* buf, uint32_t bytes, spec::SubmissionEntry& cmd) {
  IovaMap& map = iova_;
  auto* p = static_cast<const std::byte*>(buf);
  uint64_t iova = map.translate(p);
  if (iova == kBadIova) return -EFAULT;
  if (iova & 3) return -EINVAL;
  cmd.prp1 = iova;
  uint32_t first = spec::kPageBytes - static_cast<uint32_t>(iova & (spec::kPageBytes - 1));
  if (bytes <= first) return 0;
  uint32_t rest = bytes - first;
  p += first;
  if (rest <= spec::kPageBytes) {
    cmd.prp2 = map.translate(p);
    return cmd.prp2 == kBadIova ? -EFAULT : 0;
  }
  for (uint32_t n = 0; rest; ++n) {
    uint64_t page = map.translate(p);
    if (page == kBadIova) return -EFAULT;
    t.prp_list[n] = page;
    uint32_t step = std::min(rest, spec::kPageBytes);
    rest -= step;
    p += step;
  }
  cmd.prp2 = t.prp_list_iova;
  return 0;
}

int QueuePairImpl::submit_rw(uint8_t opcode, uint32_t nsid, const void* buf, uint64_t lba, uint32_t blocks,
                             IoCallback cb, void* ctx) {
  const NamespaceInfo* ns = ctrl_.ns_cache(nsid);
  if (!ns || blocks == 0 || blocks > 0x10000) return -EINVAL;
  uint64_t bytes = uint64_t(blocks) * ns->block_bytes;
  if (bytes > ctrl_.info().max_transfer_bytes) return -EINVAL;
  if (dead_) return -EIO;
  Tracker* t = acquire();
  if (!t) return -EAGAIN;
  spec::SubmissionEntry cmd{};
  cmd.opcode = opcode;
  cmd.nsid = nsid;
  cmd.cdw10 = static_cast<uint32_t>(lba);        // SLBA 31:0
  cmd.cdw11 = static_cast<uint32_t>(lba >> 32);  // SLBA 63:32
  cmd.cdw12 = blocks - 1;                        // NLB, 0's based
  if (int rc = build_prps(*t, buf, static_cast<uint32_t>(bytes), cmd)) {
    t->next_free = free_head_;
    free_head_ = t->cid;
    return rc;
  }
  return submit_command(cmd, *t, cb, ctx);
}

void QueuePairImpl::ring_sq() {
  uint32_t old = sq_tail_rung_, now = sq_tail_;
  sq_tail_rung_ = now;
  if (shadow_sq_) {
    // Sequentially consistent: the shadow store is visible before EventIdx is read, or
    // the controller and the driver could each think the other will act.
    __atomic_store_n(shadow_sq_, now, __ATOMIC_SEQ_CST);
    if (!doorbell_needed(__atomic_load_n(event_sq_, __ATOMIC_SEQ_CST), now, old, entries_)) return;
  }
  bar_.ring(2u * qid_, now);
  ++stats_.sq_doorbell_writes;
}

uint32_t QueuePairImpl::poll(uint32_t max) {
  if (ctrl_.generation() != generation_ && !dead_) recover();  // the controller was reset
  if (sq_tail_ != sq_tail_rung_) ring_sq();
  // At most a lap less one: the controller cannot post more before it hears the head.
  if (max == 0 || max >= entries_) max = entries_ - 1;
  uint32_t reaped = 0;
  while (reaped < max) {
    spec::CompletionEntry& e = cq_[cq_head_];
    uint16_t raw = __atomic_load_n(&e.status, __ATOMIC_ACQUIRE);
    if (bool(raw & 1) != phase_) break;  // §4.6: an entry is new when its phase tag matches
    uint16_t cid = e.cid;
    uint16_t sq_head = e.sq_head;
    if (++cq_head_ == entries_) {
      cq_head_ = 0;
      phase_ = !phase_;
    }
    if (sq_head < entries_) sq_head_ = sq_head;  // SQHD frees SQ slots
    ++reaped;
    complete(cid, spec::status_field(raw));
  }
  if (reaped) {
    uint32_t old = (cq_head_ + entries_ - reaped % entries_) % entries_;
    bool mmio = true;
    if (shadow_cq_) {
      __atomic_store_n(shadow_cq_, cq_head_, __ATOMIC_SEQ_CST);
      mmio = doorbell_needed(__atomic_load_n(event_cq_, __ATOMIC_SEQ_CST), cq_head_, old, entries_);
    }
    if (mmio) {
      bar_.ring(2u * qid_ + 1, cq_head_);
      ++stats_.cq_doorbell_writes;
    }
  }
  if (++polls_ >= health_interval_) {
    polls_ = 0;
    uint64_t now = cycles();
    if (now >= next_health_check_) {
      next_health_check_ = now + health_period_cycles_;
      check_health();
    }
  }
  return reaped;
}

void QueuePairImpl::complete(uint16_t cid, IoStatus status) {
  if (cid >= trackers_.size() || !trackers_[cid].outstanding) {
    ++stats_.unknown_completions;  // a device bug or a stale entry: never complete twice
    return;
  }
  Tracker& t = trackers_[cid];
  t.outstanding = false;
  t.next_free = free_head_;
  free_head_ = cid;
  --outstanding_;
  ++stats_.completed;
  if (!status_ok(status)) ++stats_.errors;
  t.cb(t.ctx, status);  // last: the callback may submit again
}

// ---- slow checks, every health_interval_ polls ----

void QueuePairImpl::check_health() {
  if (dead_) return;
  uint32_t csts = bar_.read32(spec::kRegCsts);
  if (csts == spec::kCstsAllOnes || (csts & spec::kCstsFatal)) {  // §3.1.6 CFS
    (void)ctrl_.reset_after_fault(generation_, csts == spec::kCstsAllOnes ? "CSTS reads all ones"
                                                                           : "controller fatal status (CSTS.CFS)");
    recover();
    return;
  }
  if (!outstanding_) return;
  if (shadow_sq_) {
    // Commands are waiting: repeat the current tail and head on the MMIO doorbells. The
    // same value again is harmless, and a controller that read a stale register after a
    // newer shadow value (and so believes the queue stalled) sees the latest one.
    bar_.ring(2u * qid_, sq_tail_rung_);
    bar_.ring(2u * qid_ + 1, cq_head_);
  }
  check_timeouts(cycles());
}

void QueuePairImpl::check_timeouts(uint64_t now) {
  for (Tracker& t : trackers_) {
    if (!t.outstanding || now < t.deadline) continue;
    if (!t.abort_sent) {
      // First expiry: ask the controller to abort (§5.1). An aborted command completes
      // through the CQ with Command Abort Requested.
      ++stats_.timeouts;
      ++stats_.aborts_sent;
      t.abort_sent = true;
      t.deadline = now + timeout_cycles_;
      bool aborted = false;
      Status s = ctrl_.abort_command(qid_, t.cid, &aborted);
      UVIO_LOG(Warning, kLog, "queue {}: command {} timed out; abort {}", qid_, t.cid,
               s ? (aborted ? "accepted" : "found nothing to abort") : s.describe());
      if (s) continue;
    }
    // The abort did not bring it back either: only a controller reset ends the command.
    (void)ctrl_.reset_after_fault(generation_, "a command timed out and the abort did not complete it");
    recover();
    return;
  }
}

void QueuePairImpl::fail_outstanding() {
  failed_.clear();
  for (Tracker& t : trackers_)
    if (t.outstanding) failed_.push_back({t.cb, t.ctx});
  reset_rings();
  for (const Failed& f : failed_) {
    ++stats_.completed;
    ++stats_.errors;
    f.cb(f.ctx, kStatusAbortedByHost);
  }
  failed_.clear();
}

// The controller is being reset: its queues go and what was outstanding will never
// complete. The queue is made again with the same id, then the old commands fail.
void QueuePairImpl::recover() {
  ++stats_.recoveries;
  generation_ = ctrl_.generation();
  failed_.clear();
  for (Tracker& t : trackers_)
    if (t.outstanding) failed_.push_back({t.cb, t.ctx});
  // Waits for the reset to finish; the callbacks below run only once the device can no
  // longer touch the commands' buffers.
  Status s = ctrl_.create_io_queues(*this);
  if (!s) {
    dead_ = true;
    UVIO_LOG(Err, kLog, "queue {}: cannot be re-created after reset: {}", qid_, s.describe());
  }
  for (const Failed& f : failed_) {
    ++stats_.completed;
    ++stats_.errors;
    f.cb(f.ctx, kStatusAbortedByHost);
  }
  failed_.clear();
}

// ---- the public face ----

int QueuePair::submit_read(uint32_t nsid, void* buf, uint64_t lba, uint32_t blocks, IoCallback cb, void* ctx) {
  return impl(this).submit_rw(spec::kIoRead, nsid, buf, lba, blocks, cb, ctx);
}

int QueuePair::submit_write(uint32_t nsid, const void* buf, uint64_t lba, uint32_t blocks, IoCallback cb,
                            void* ctx) {
  return impl(this).submit_rw(spec::kIoWrite, nsid, buf, lba, blocks, cb, ctx);
}

int QueuePair::submit_flush(uint32_t nsid, IoCallback cb, void* ctx) {
  QueuePairImpl& q = impl(this);
  if (q.dead_) return -EIO;
  auto* t = q.acquire();
  if (!t) return -EAGAIN;
  spec::SubmissionEntry cmd{};
  cmd.opcode = spec::kIoFlush;  // §6.8
  cmd.nsid = nsid;
  return q.submit_command(cmd, *t, cb, ctx);
}

int QueuePair::submit_write_zeroes(uint32_t nsid, uint64_t lba, uint32_t blocks, IoCallback cb, void* ctx) {
  QueuePairImpl& q = impl(this);
  if (!q.ctrl_.ns_cache(nsid) || blocks == 0 || blocks > 0x10000) return -EINVAL;
  if (q.dead_) return -EIO;
  auto* t = q.acquire();
  if (!t) return -EAGAIN;
  spec::SubmissionEntry cmd{};
  cmd.opcode = spec::kIoWriteZeroes;  // §6.16: SLBA and NLB as Write, no data
  cmd.nsid = nsid;
  cmd.cdw10 = static_cast<uint32_t>(lba);
  cmd.cdw11 = static_cast<uint32_t>(lba >> 32);
  cmd.cdw12 = blocks - 1;
  return q.submit_command(cmd, *t, cb, ctx);
}

int QueuePair::submit_dsm(uint32_t nsid, std::span<const DsmRange> ranges, uint32_t attributes, IoCallback cb,
                          void* ctx) {
  QueuePairImpl& q = impl(this);
  if (!q.ctrl_.ns_cache(nsid) || ranges.empty() || ranges.size() > spec::kDsmMaxRanges) return -EINVAL;
  if (q.dead_) return -EIO;
  auto* t = q.acquire();
  if (!t) return -EAGAIN;
  // §6.7: the range list is the command's data; the tracker's list page holds it.
  auto* out = reinterpret_cast<spec::DsmRangeEntry*>(t->prp_list);
  for (size_t i = 0; i < ranges.size(); ++i) out[i] = {ranges[i].context_attributes, ranges[i].blocks, ranges[i].lba};
  spec::SubmissionEntry cmd{};
  cmd.opcode = spec::kIoDatasetManagement;
  cmd.nsid = nsid;
  cmd.prp1 = t->prp_list_iova;
  cmd.cdw10 = static_cast<uint32_t>(ranges.size() - 1);  // NR, 0's based
  cmd.cdw11 = attributes;
  return q.submit_command(cmd, *t, cb, ctx);
}

void QueuePair::flush_submissions() {
  QueuePairImpl& q = impl(this);
  // After a controller reset this queue no longer exists on the device: poll() first.
  if (q.sq_tail_ != q.sq_tail_rung_ && q.ctrl_.generation() == q.generation_) q.ring_sq();
}

uint32_t QueuePair::poll(uint32_t max) { return impl(this).poll(max); }

bool QueuePair::wait(int timeout_ms) {
  int fd = impl(this).event_fd_;
  return fd >= 0 && wait_eventfd(fd, timeout_ms);
}

int QueuePair::event_fd() const { return impl(this).event_fd_; }
uint16_t QueuePair::id() const { return impl(this).qid_; }
uint32_t QueuePair::outstanding() const { return impl(this).outstanding_; }
uint32_t QueuePair::capacity() const { return static_cast<uint32_t>(impl(this).trackers_.size()); }
const QueueStats& QueuePair::stats() const { return impl(this).stats_; }

}  // namespace uvio::nvme
