// Migration of the NVMe driver: drain the queues on the source, save what lives outside
// runtime memory, and rebuild the controller on the destination without touching the
// device, whose registers, queues and doorbells arrived through migration v2.
#include <uvio/log.h>

#include "lib/state_io.h"
#include "pmd/nvme/driver.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>

namespace uvio::nvme {
namespace {

constexpr const char* kLog = "nvme";
constexpr uint32_t kStateMagic = 0x44564e55;  // "UNVD"
constexpr uint32_t kStateVersion = 1;
constexpr uint32_t kMaxNamespaces = 1024;
constexpr uint32_t kMaxText = 64;

Status refuse(const std::string& why) { return Status::error(EINVAL, "nvme: driver state refused: " + why); }

}  // namespace

std::vector<QueuePair*> ControllerImpl::queue_pairs() const {
  std::lock_guard lock(admin_mu_);
  std::vector<QueuePair*> out;
  for (const auto& q : queues_) out.push_back(q.get());
  return out;
}

Status ControllerImpl::quiesce(uint32_t timeout_ms) {
  quiesced_.store(true, std::memory_order_relaxed);
  std::vector<QueuePair*> queues = queue_pairs();
  // Like a block layer draining before a VM stops: what was submitted completes, so
  // the device holds no command and the application has every result.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (QueuePair* q : queues) {
    while (q->outstanding() > 0) {
      if (q->poll() == 0) {
        if (std::chrono::steady_clock::now() > deadline)
          return Status::error(ETIMEDOUT, fmt::format("nvme: {}: queue {} still has {} commands after {} ms",
                                                      device_.name(), q->id(), q->outstanding(), timeout_ms));
        std::this_thread::yield();
      }
    }
  }
  return Status::ok();
}

void ControllerImpl::resume() { quiesced_.store(false, std::memory_order_relaxed); }

void ControllerImpl::release_after_migration() {
  std::lock_guard lock(admin_mu_);
  released_ = true;
}

Status ControllerImpl::save_state(std::vector<uint8_t>& out) {
  std::lock_guard lock(admin_mu_);
  for (const auto& q : queues_) {
    if (q->outstanding_ != 0)
      return Status::error(EBUSY, fmt::format("nvme: {}: queue {} has {} commands outstanding; quiesce first",
                                              device_.name(), q->qid_, q->outstanding_));
    if (q->generation_ != generation_.load())
      return Status::error(EBUSY, fmt::format("nvme: {}: queue {} has not recovered from a reset yet; poll it first",
                                              device_.name(), q->qid_));
  }
  StateWriter w(out);
  w.put(kStateMagic);
  w.put(kStateVersion);
  w.put(options_.admin_entries);
  w.put(options_.io_queues_wanted);
  w.put_bool(options_.shadow_doorbells);
  w.put(options_.io_timeout_us);
  w.put(options_.admin_timeout_ms);
  w.put(options_.health_check_polls);
  w.put(options_.health_check_period_us);
  w.put_string(info_.serial);
  w.put_string(info_.model);
  w.put_string(info_.firmware);
  w.put(info_.version);
  w.put(info_.max_queue_entries);
  w.put(info_.max_transfer_bytes);
  w.put(info_.io_queues);
  w.put(info_.interrupt_vectors);
  w.put_bool(info_.volatile_write_cache);
  w.put_bool(info_.write_zeroes);
  w.put_bool(info_.dataset_management);
  w.put_bool(info_.shadow_doorbells);
  w.put(cap_);
  w.put(stride_bytes_);
  w.put<uint32_t>(static_cast<uint32_t>(namespaces_.size()));
  for (const NamespaceInfo& ns : namespaces_) {
    w.put(ns.id);
    w.put(ns.blocks);
    w.put(ns.block_bytes);
  }
  w.put_address(asq_);
  w.put_address(acq_);
  w.put_address(identify_buf_);
  w.put_address(shadow_);
  w.put_address(event_idx_);
  w.put(asq_tail_);
  w.put(acq_head_);
  w.put_bool(admin_phase_);
  w.put(admin_cid_);
  w.put(generation_.load());
  w.put(resets_.load());
  w.put_bool(failed_.load());
  w.put<uint32_t>(static_cast<uint32_t>(queues_.size()));
  for (const auto& q : queues_) {
    w.put(q->qid_);
    w.put(q->entries_);
    w.put_bool(q->interrupts_);
    w.put(q->vector_);
    w.put_address(q->sq_);
    w.put_address(q->cq_);
    w.put_address(q->prp_pages_);
    w.put(q->sq_tail_);
    w.put(q->sq_tail_rung_);
    w.put(q->sq_head_);
    w.put(q->cq_head_);
    w.put_bool(q->phase_);
    w.put_bool(q->shadow_sq_ != nullptr);
    w.put_bool(q->dead_);
    const QueueStats& st = q->stats_;
    for (uint64_t v : {st.submitted, st.completed, st.errors, st.unknown_completions, st.timeouts, st.aborts_sent,
                       st.recoveries, st.sq_doorbell_writes, st.cq_doorbell_writes})
      w.put(v);
  }
  return Status::ok();
}

Result<std::unique_ptr<Controller>> Controller::restore(iommu::Device& device, Memory& memory,
                                                        std::span<const uint8_t> state) {
  auto ctrl = std::make_unique<ControllerImpl>(device, memory, ControllerOptions{});
  Status s = ctrl->restore_from(state);
  if (!s) {
    // Nothing of the source's memory is ours to free when the state was refused.
    ctrl->release_after_migration();
    return s;
  }
  return std::unique_ptr<Controller>(std::move(ctrl));
}

Status ControllerImpl::restore_from(std::span<const uint8_t> in) {
  StateReader r(in);
  uint32_t magic = 0, version = 0;
  if (!r.get(&magic) || magic != kStateMagic) return refuse("not an NVMe driver state (bad magic)");
  if (!r.get(&version) || version != kStateVersion)
    return refuse(fmt::format("format version {} is not the supported version {}", version, kStateVersion));
  ControllerOptions o;
  r.get(&o.admin_entries);
  r.get(&o.io_queues_wanted);
  r.get_bool(&o.shadow_doorbells);
  r.get(&o.io_timeout_us);
  r.get(&o.admin_timeout_ms);
  r.get(&o.health_check_polls);
  r.get(&o.health_check_period_us);
  ControllerInfo info;
  r.get_string(&info.serial, kMaxText);
  r.get_string(&info.model, kMaxText);
  r.get_string(&info.firmware, kMaxText);
  r.get(&info.version);
  r.get(&info.max_queue_entries);
  r.get(&info.max_transfer_bytes);
  r.get(&info.io_queues);
  r.get(&info.interrupt_vectors);
  r.get_bool(&info.volatile_write_cache);
  r.get_bool(&info.write_zeroes);
  r.get_bool(&info.dataset_management);
  r.get_bool(&info.shadow_doorbells);
  uint64_t cap = 0;
  uint32_t stride = 0, ns_count = 0;
  r.get(&cap);
  r.get(&stride);
  r.get(&ns_count);
  if (!r.ok()) return refuse("truncated controller header");
  if (o.admin_entries < 2 || o.admin_entries > 4096) return refuse(fmt::format("{} admin entries", o.admin_entries));
  if (stride != 4u << spec::cap_dstrd(cap)) return refuse(fmt::format("doorbell stride {} does not match CAP", stride));
  if (info.max_queue_entries < 2 || info.max_queue_entries > 65536 || info.io_queues < 1 || info.io_queues > 0xfffe)
    return refuse(fmt::format("{} entries per queue, {} I/O queues", info.max_queue_entries, info.io_queues));
  if (info.max_transfer_bytes < spec::kPageBytes || info.max_transfer_bytes > spec::kPrpsPerPage * spec::kPageBytes)
    return refuse(fmt::format("maximum transfer of {} bytes", info.max_transfer_bytes));
  if (ns_count > kMaxNamespaces || !r.has_room(ns_count, 16)) return refuse(fmt::format("{} namespaces", ns_count));
  std::vector<NamespaceInfo> namespaces(ns_count);
  std::set<uint32_t> ns_ids;
  for (NamespaceInfo& ns : namespaces) {
    r.get(&ns.id);
    r.get(&ns.blocks);
    r.get(&ns.block_bytes);
    if (!r.ok()) return refuse("truncated namespace list");
    if (ns.id == 0 || ns.id > kMaxNamespaces || !ns_ids.insert(ns.id).second || ns.blocks == 0 ||
        ns.block_bytes < 512 || ns.block_bytes > 65536 || (ns.block_bytes & (ns.block_bytes - 1)))
      return refuse(fmt::format("namespace {} with {} blocks of {} bytes", ns.id, ns.blocks, ns.block_bytes));
  }

  // Every address must name runtime memory, whole: the queues are the source's and are
  // already where they were.
  auto inside = [&](const void* p, size_t bytes) {
    const MemArea* a = memory_.area_of(p);
    auto start = reinterpret_cast<uintptr_t>(p), area_start = reinterpret_cast<uintptr_t>(a ? a->va : nullptr);
    return a && start % spec::kPageBytes == 0 && bytes <= a->len - (start - area_start);
  };
  spec::SubmissionEntry* asq = nullptr;
  spec::CompletionEntry* acq = nullptr;
  std::byte* identify_buf = nullptr;
  uint32_t* shadow = nullptr;
  uint32_t* event_idx = nullptr;
  uint32_t asq_tail = 0, acq_head = 0;
  bool admin_phase = true, failed = false;
  uint16_t admin_cid = 0;
  uint64_t generation = 0, resets = 0;
  r.get_address(&asq);
  r.get_address(&acq);
  r.get_address(&identify_buf);
  r.get_address(&shadow);
  r.get_address(&event_idx);
  r.get(&asq_tail);
  r.get(&acq_head);
  r.get_bool(&admin_phase);
  r.get(&admin_cid);
  r.get(&generation);
  r.get(&resets);
  r.get_bool(&failed);
  if (!r.ok()) return refuse("truncated admin queue state");
  if (!inside(asq, size_t(o.admin_entries) << spec::kSqEntryLog2) ||
      !inside(acq, size_t(o.admin_entries) << spec::kCqEntryLog2) || !inside(identify_buf, spec::kIdentifyBytes) ||
      !inside(shadow, spec::kPageBytes) || !inside(event_idx, spec::kPageBytes))
    return refuse("the admin queue or its buffers are not in runtime memory");
  if (asq_tail >= o.admin_entries || acq_head >= o.admin_entries)
    return refuse(fmt::format("admin tail {} / head {} beyond {} entries", asq_tail, acq_head, o.admin_entries));
  if (info.shadow_doorbells && info.io_queues > spec::kPageBytes / (2 * stride) - 1)
    return refuse("more I/O queues than the shadow doorbell page holds");

  uint32_t queue_count = 0;
  r.get(&queue_count);
  if (!r.ok() || queue_count > info.io_queues || !r.has_room(queue_count, 40))
    return refuse(fmt::format("{} queue pairs of {} I/O queues", queue_count, info.io_queues));
  struct SavedQueue {
    uint16_t qid = 0;
    uint32_t entries = 0, vector = 0, sq_tail = 0, sq_tail_rung = 0, sq_head = 0, cq_head = 0;
    bool interrupts = false, phase = true, shadow = false, dead = false;
    spec::SubmissionEntry* sq = nullptr;
    spec::CompletionEntry* cq = nullptr;
    std::byte* prp = nullptr;
    QueueStats stats;
  };
  std::vector<SavedQueue> saved(queue_count);
  std::set<uint16_t> qids;
  for (SavedQueue& q : saved) {
    r.get(&q.qid);
    r.get(&q.entries);
    r.get_bool(&q.interrupts);
    r.get(&q.vector);
    r.get_address(&q.sq);
    r.get_address(&q.cq);
    r.get_address(&q.prp);
    r.get(&q.sq_tail);
    r.get(&q.sq_tail_rung);
    r.get(&q.sq_head);
    r.get(&q.cq_head);
    r.get_bool(&q.phase);
    r.get_bool(&q.shadow);
    r.get_bool(&q.dead);
    for (uint64_t* v : {&q.stats.submitted, &q.stats.completed, &q.stats.errors, &q.stats.unknown_completions,
                        &q.stats.timeouts, &q.stats.aborts_sent, &q.stats.recoveries, &q.stats.sq_doorbell_writes,
                        &q.stats.cq_doorbell_writes})
      r.get(v);
    if (!r.ok()) return refuse("truncated queue pair");
    if (q.qid == 0 || q.qid > info.io_queues || !qids.insert(q.qid).second)
      return refuse(fmt::format("queue id {} is out of range or repeated", q.qid));
    if (q.entries < 2 || q.entries > std::min<uint32_t>(info.max_queue_entries, 65536))
      return refuse(fmt::format("queue {} has {} entries", q.qid, q.entries));
    if (q.sq_tail >= q.entries || q.sq_tail_rung >= q.entries || q.sq_head >= q.entries || q.cq_head >= q.entries)
      return refuse(fmt::format("queue {} index beyond its {} entries", q.qid, q.entries));
    // Nothing was outstanding at save: the controller has consumed every submission.
    if (q.sq_tail != q.sq_tail_rung) return refuse(fmt::format("queue {} has submissions the device never saw", q.qid));
    if (q.interrupts && (q.vector != q.qid || q.vector >= info.interrupt_vectors))
      return refuse(fmt::format("queue {} uses MSI-X vector {} of {}", q.qid, q.vector, info.interrupt_vectors));
    if (q.shadow && !info.shadow_doorbells) return refuse(fmt::format("queue {} uses shadow doorbells the controller does not", q.qid));
    if (!inside(q.sq, size_t(q.entries) << spec::kSqEntryLog2) || !inside(q.cq, size_t(q.entries) << spec::kCqEntryLog2) ||
        !inside(q.prp, size_t(q.entries - 1) * spec::kPageBytes))
      return refuse(fmt::format("queue {} memory is not in runtime memory", q.qid));
  }
  if (r.left() != 0) return refuse(fmt::format("{} bytes after the last queue pair", r.left()));

  // Adopt. From here only the device's own mappings and interrupt wiring can fail.
  options_ = o;
  info_ = std::move(info);
  namespaces_ = std::move(namespaces);
  uint32_t max_id = 0;
  for (auto& ns : namespaces_) max_id = std::max(max_id, ns.id);
  ns_by_id_.assign(max_id, nullptr);
  for (auto& ns : namespaces_) ns_by_id_[ns.id - 1] = &ns;
  cap_ = cap;
  stride_bytes_ = stride;
  asq_ = asq;
  acq_ = acq;
  identify_buf_ = identify_buf;
  shadow_ = shadow;
  event_idx_ = event_idx;
  asq_tail_ = asq_tail;
  acq_head_ = acq_head;
  admin_phase_ = admin_phase;
  admin_cid_ = admin_cid;
  generation_.store(generation);
  resets_.store(resets);
  failed_.store(failed);
  UVIO_TRY(bar_.open(device_));
  bar_.map_doorbells(stride_bytes_, info_.io_queues);
  qid_used_.assign(info_.io_queues + 1, false);
  for (const SavedQueue& sq : saved) {
    auto q = std::make_unique<QueuePairImpl>(*this, sq.qid, sq.entries, sq.interrupts);
    UVIO_TRY(q->adopt(sq.sq, sq.cq, sq.prp));
    q->sq_tail_ = sq.sq_tail;
    q->sq_tail_rung_ = sq.sq_tail_rung;
    q->sq_head_ = sq.sq_head;
    q->cq_head_ = sq.cq_head;
    q->phase_ = sq.phase;
    q->dead_ = sq.dead;
    q->stats_ = sq.stats;
    q->generation_ = generation;
    q->set_shadow_pointers(sq.shadow);
    if (q->interrupts_) {
      // The eventfds are this process's: the device learns them again (MSI-X stays as
      // the source configured it, through the device's state).
      q->vector_ = sq.vector;
      UVIO_TRY(device_.set_irq_eventfds(iommu::kMsixIrq, q->vector_, std::array<int, 1>{q->event_fd_}));
    }
    qid_used_[sq.qid] = true;
    queues_.push_back(std::move(q));
  }
  UVIO_LOG(Info, kLog, "{}: restored {} {}: {} namespace(s), {} queue pair(s)", device_.name(), info_.model,
           info_.serial, namespaces_.size(), queues_.size());
  return Status::ok();
}

}  // namespace uvio::nvme
