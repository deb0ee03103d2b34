// The NVMe driver's private state: BAR0 access, the IOVA translation the fast path
// uses, the controller (admin queue, bring-up, reset) and the I/O queue pair.
#pragma once

#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "iommu/device.h"
#include "pmd/nvme/spec.h"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

namespace uvio::nvme {

// BAR0: registers and doorbells, through an mmap when the device allows one, else
// through region reads and writes (a vfio-user server that traps its registers).
class Bar0 {
 public:
  Status open(iommu::Device& device);
  // Maps the doorbells of queues 0..max_qid once DSTRD is known.
  void map_doorbells(uint32_t stride_bytes, uint32_t max_qid);

  uint32_t read32(uint64_t offset);  // all ones when the read fails, like a gone device
  uint64_t read64(uint64_t offset);
  void write32(uint64_t offset, uint32_t value);
  void write64(uint64_t offset, uint64_t value);  // low dword first (§3.1: 64-bit registers)
  // index 2y: SQ y tail, 2y + 1: CQ y head (§3.1.24, §3.1.25).
  void ring(uint32_t index, uint32_t value) {
    if (doorbells_) {
      __atomic_store_n(&doorbells_[index * stride_words_], value, __ATOMIC_RELEASE);
    } else {
      write32(spec::kRegDoorbells + uint64_t(index) * stride_words_ * 4, value);
    }
  }
  bool doorbells_mapped() const { return doorbells_ != nullptr; }
  bool registers_mapped() const { return regs_ != nullptr; }

 private:
  iommu::Device* device_ = nullptr;
  uint64_t size_ = 0;
  volatile uint8_t* regs_ = nullptr;  // the whole BAR, when mappable
  uint32_t* doorbells_ = nullptr;
  uint32_t stride_words_ = 1;
};

// Virtual to IO virtual addresses without the Memory lock: a copy of the runtime's areas,
// refreshed (taking the lock) only when an address falls outside all of them. One per
// queue pair, used by its thread only.
class IovaMap {
 public:
  explicit IovaMap(Memory& memory) : memory_(memory) { refresh(); }
  uint64_t translate(const void* p) {
    auto* b = static_cast<const std::byte*>(p);
    // One unsigned compare covers both ends of the area.
    if (reinterpret_cast<uintptr_t>(b) - reinterpret_cast<uintptr_t>(last_->va) < last_->len)
      return last_->iova_of(b);
    return slow_translate(b);
  }

 private:
  struct Area {
    const std::byte* va = nullptr;
    size_t len = 0;
    uint64_t iova = kBadIova;
    const MemArea* area = nullptr;  // PA mode: per-page IOVAs
    uint64_t iova_of(const std::byte* b) const {
      size_t off = size_t(b - va);
      if (!area || area->page_iova.empty()) return iova + off;
      return area->page_iova[off / area->page_size] + off % area->page_size;
    }
  };
  uint64_t slow_translate(const std::byte* b);
  void refresh();
  Memory& memory_;
  std::vector<Area> areas_;
  Area empty_;
  const Area* last_ = &empty_;
};

// §5.8 (the EventIdx rule): with shadow doorbells, the MMIO doorbell is still needed when
// the new value has moved past the controller's EventIdx since the last value written.
// Queue indexes wrap at the queue size, so distances are taken modulo it.
inline bool doorbell_needed(uint32_t event_idx, uint32_t new_value, uint32_t old_value, uint32_t entries) {
  uint32_t event = event_idx % entries;
  return (new_value + entries - event - 1) % entries < (new_value + entries - old_value) % entries;
}

class ControllerImpl;

class QueuePairImpl final : public QueuePair {
 public:
  struct Tracker {
    IoCallback cb = nullptr;
    void* ctx = nullptr;
    uint64_t deadline = 0;   // cycles(); past it the command has timed out
    uint64_t* prp_list = nullptr;  // one page per tracker, also holds DSM ranges
    uint64_t prp_list_iova = 0;
    uint16_t cid = 0;
    uint16_t next_free = 0;
    bool outstanding = false;
    bool abort_sent = false;
  };

  QueuePairImpl(ControllerImpl& ctrl, uint16_t qid, uint32_t entries, bool interrupts);
  ~QueuePairImpl();
  Status allocate();                     // queue memory, PRP pages, eventfd
  // Migration's destination: takes queues and PRP pages the source allocated (their
  // bytes and the device's view of them moved), with every tracker free; no ring reset.
  Status adopt(spec::SubmissionEntry* sq, spec::CompletionEntry* cq, std::byte* prp_pages);
  void set_shadow_pointers(bool enabled);  // §5.8 entries of this queue, not cleared
  void reset_rings();                    // empty queues, phase 1, every tracker free

  int submit_rw(uint8_t opcode, uint32_t nsid, const void* buf, uint64_t lba, uint32_t blocks,
                IoCallback cb, void* ctx);
  int submit_command(spec::SubmissionEntry& cmd, Tracker& t, IoCallback cb, void* ctx);
  Tracker* acquire();
  void ring_sq();
  uint32_t poll(uint32_t max);
  void complete(uint16_t cid, IoStatus status);
  void check_health();
  void check_timeouts(uint64_t now);
  void recover();
  void fail_outstanding();  // completes every outstanding command with kStatusAbortedByHost
  int build_prps(Tracker& t, const void* buf, uint32_t bytes, spec::SubmissionEntry& cmd);

  ControllerImpl& ctrl_;
  Bar0& bar_;
  IovaMap iova_;  // per queue: it caches the last area hit, so it cannot be shared
  const uint16_t qid_;
  const uint32_t entries_;
  const bool interrupts_;
  uint32_t vector_ = 0;
  int event_fd_ = -1;

  spec::SubmissionEntry* sq_ = nullptr;
  spec::CompletionEntry* cq_ = nullptr;  // the phase word is read with an acquire load
  uint64_t sq_iova_ = 0, cq_iova_ = 0;
  std::byte* prp_pages_ = nullptr;
  uint32_t sq_tail_ = 0;
  uint32_t sq_tail_rung_ = 0;   // last tail the controller was told
  uint32_t sq_head_ = 0;        // from SQHD of the newest completion
  uint32_t cq_head_ = 0;
  bool phase_ = true;
  // §5.8 shadow doorbells and event indexes of this queue, or nullptr.
  uint32_t* shadow_sq_ = nullptr;
  uint32_t* shadow_cq_ = nullptr;
  uint32_t* event_sq_ = nullptr;
  uint32_t* event_cq_ = nullptr;

  std::vector<Tracker> trackers_;   // index = command id
  uint16_t free_head_ = 0;
  static constexpr uint16_t kNoTracker = 0xffff;
  uint32_t outstanding_ = 0;
  uint32_t polls_ = 0;
  uint32_t health_interval_ = 4096;
  uint64_t health_period_cycles_ = 0;
  uint64_t next_health_check_ = 0;  // cycles()
  uint64_t timeout_cycles_ = 0;
  uint64_t generation_ = 0;     // the controller generation these queues were created in
  bool dead_ = false;           // the controller failed: every submission gets -EIO
  bool released_ = false;       // migrated away: the memory is not ours to free
  struct Failed {
    IoCallback cb;
    void* ctx;
  };
  std::vector<Failed> failed_;  // pre-sized: recovery allocates nothing
  QueueStats stats_;
};

class ControllerImpl final : public Controller {
 public:
  ControllerImpl(iommu::Device& device, Memory& memory, const ControllerOptions& options);
  ~ControllerImpl() override;
  Status bring_up();

  const ControllerInfo& info() const override { return info_; }
  const std::vector<NamespaceInfo>& namespaces() const override { return namespaces_; }
  const NamespaceInfo* find_namespace(uint32_t nsid) const override;
  Result<QueuePair*> create_queue_pair(const QueueOptions& options) override;
  Status destroy_queue_pair(QueuePair* queue) override;
  Status reset() override;
  uint64_t resets() const override { return resets_.load(); }
  bool failed() const override { return failed_.load(); }
  std::vector<QueuePair*> queue_pairs() const override;
  Status quiesce(uint32_t timeout_ms) override;
  void resume() override;
  Status save_state(std::vector<uint8_t>& out) override;
  void release_after_migration() override;
  // Migration's destination: everything of the saved state, checked, then adopted.
  Status restore_from(std::span<const uint8_t> in);
  bool quiesced() const { return quiesced_.load(std::memory_order_relaxed); }

  // For the queue pairs.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Resets the controller unless another queue already did since `seen_generation`.
  Status reset_after_fault(uint64_t seen_generation, const char* why);
  Status create_io_queues(QueuePairImpl& q);  // Create I/O CQ then SQ (§5.3, §5.4)
  Status abort_command(uint16_t sqid, uint16_t cid, bool* aborted);
  Bar0& bar() { return bar_; }
  Memory& memory() { return memory_; }
  iommu::Device& device() { return device_; }
  const ControllerOptions& options() const { return options_; }
  const NamespaceInfo* ns_cache(uint32_t nsid) const {
    return nsid - 1 < ns_by_id_.size() ? ns_by_id_[nsid - 1] : nullptr;
  }
  uint32_t doorbell_stride() const { return stride_bytes_; }
  uint32_t* shadow_doorbells() const { return shadow_; }
  uint32_t* event_indexes() const { return event_idx_; }

 private:
  Status wait_ready(bool ready);
  Status enable();
  Status setup_queues_features();  // Number of Queues and the doorbell buffer
  Status identify();
  Result<uint32_t> admin(spec::SubmissionEntry cmd);  // dw0, or the command's status
  Status do_reset(const char* why);

  iommu::Device& device_;
  Memory& memory_;
  ControllerOptions options_;
  Bar0 bar_;
  ControllerInfo info_;
  std::vector<NamespaceInfo> namespaces_;
  std::vector<const NamespaceInfo*> ns_by_id_;
  uint64_t cap_ = 0;
  uint32_t stride_bytes_ = 4;

  mutable std::mutex admin_mu_;  // the admin queue and every control-path change below
  spec::SubmissionEntry* asq_ = nullptr;
  spec::CompletionEntry* acq_ = nullptr;
  uint32_t asq_tail_ = 0, acq_head_ = 0;
  bool admin_phase_ = true;
  uint16_t admin_cid_ = 0;
  std::byte* identify_buf_ = nullptr;
  uint32_t* shadow_ = nullptr;     // §5.8 shadow doorbell buffer, one page
  uint32_t* event_idx_ = nullptr;  // §5.8 EventIdx buffer, one page
  std::vector<std::unique_ptr<QueuePairImpl>> queues_;
  std::vector<bool> qid_used_;
  std::atomic<uint64_t> generation_{1};
  std::atomic<uint64_t> resets_{0};
  std::atomic<bool> failed_{false};
  std::atomic<bool> quiesced_{false};  // migration: submissions wait (-EAGAIN)
  bool released_ = false;              // migrated away: leave the device and memory alone
};

}  // namespace uvio::nvme
