// The NVMe poll-mode driver: open a controller on a device the runtime owns, read its
// namespaces, create one QueuePair per lcore and submit I/O with a callback; poll()
// completes it. Submission and completion take no lock, make no syscall and allocate
// nothing: each QueuePair belongs to one lcore.
#pragma once

#include <uvio/status.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace uvio {
class Memory;
class Runtime;
struct RuntimeDevice;
namespace iommu {
class Device;
}
}  // namespace uvio

namespace uvio::nvme {

// The Status Field of a completion (NVMe 1.4 §4.6.1): SC 7:0, SCT 10:8, M 13, DNR 14.
// 0 is success.
using IoStatus = uint16_t;
inline constexpr IoStatus kStatusSuccess = 0;
inline constexpr IoStatus kStatusAbortRequested = 0x0007;  // generic: the command was aborted
// Path related (SCT 3) "Command Aborted By Host": the driver completed the command
// itself because the controller was reset or failed; the device never finished it.
inline constexpr IoStatus kStatusAbortedByHost = 0x0371;
inline bool status_ok(IoStatus s) { return (s & 0x7ff) == 0; }
// "LBA Out of Range (generic, sc 0x80, dnr)": what the status means, for error lines.
std::string nvme_status_string(IoStatus status);

using IoCallback = void (*)(void* ctx, IoStatus status);

struct NamespaceInfo {
  uint32_t id = 0;
  uint64_t blocks = 0;
  uint32_t block_bytes = 0;
  uint64_t bytes() const { return blocks * block_bytes; }
};

struct ControllerInfo {
  std::string serial, model, firmware;
  uint32_t version = 0;             // VS: major << 16 | minor << 8 | tertiary
  uint32_t max_queue_entries = 0;   // CAP.MQES + 1
  uint32_t max_transfer_bytes = 0;  // one I/O, from MDTS and the driver's PRP list page
  uint32_t io_queues = 0;           // granted by Set Features Number of Queues
  uint32_t interrupt_vectors = 0;   // MSI-X vectors the device offers
  bool volatile_write_cache = false;
  bool write_zeroes = false;        // ONCS
  bool dataset_management = false;
  bool shadow_doorbells = false;    // Doorbell Buffer Config in use
};

struct DsmRange {
  uint64_t lba = 0;
  uint32_t blocks = 0;
  uint32_t context_attributes = 0;
};
inline constexpr uint32_t kDsmDeallocate = 1u << 2;  // §6.7 CDW11 AD

struct QueueStats {
  uint64_t submitted = 0;
  uint64_t completed = 0;         // callbacks run, errors included
  uint64_t errors = 0;            // callbacks run with a non-zero status
  uint64_t unknown_completions = 0;  // completions whose command id was not outstanding
  uint64_t timeouts = 0;
  uint64_t aborts_sent = 0;
  uint64_t recoveries = 0;        // times the queue was re-created after a controller reset
  uint64_t sq_doorbell_writes = 0;   // MMIO writes; shadow-only updates not counted
  uint64_t cq_doorbell_writes = 0;
};

struct QueueOptions {
  uint32_t entries = 256;   // capped at CAP.MQES + 1; entries - 1 may be outstanding
  bool interrupts = false;  // an MSI-X vector wired to event_fd()
};

// One I/O submission/completion queue pair, used by one thread. Submissions return 0,
// -EAGAIN when the queue is full (poll, then retry), -EINVAL for a bad argument, -EFAULT
// for a buffer outside runtime memory, -EIO when the controller has failed.
class QueuePair {
 public:
  QueuePair(const QueuePair&) = delete;
  QueuePair& operator=(const QueuePair&) = delete;

  // buf: runtime memory, 4-byte aligned, blocks * block size bytes.
  int submit_read(uint32_t nsid, void* buf, uint64_t lba, uint32_t blocks, IoCallback cb, void* ctx);
  int submit_write(uint32_t nsid, const void* buf, uint64_t lba, uint32_t blocks, IoCallback cb, void* ctx);
  int submit_flush(uint32_t nsid, IoCallback cb, void* ctx);
  int submit_write_zeroes(uint32_t nsid, uint64_t lba, uint32_t blocks, IoCallback cb, void* ctx);
  // Up to 256 ranges, copied: they need not live in runtime memory.
  int submit_dsm(uint32_t nsid, std::span<const DsmRange> ranges, uint32_t attributes, IoCallback cb, void* ctx);

  // Submissions are queued; the SQ doorbell rings once for the batch here or in poll().
  void flush_submissions();
  // Rings pending submissions, reaps up to max completions (0: all there are) running
  // their callbacks, rings the CQ head doorbell once. Every so many calls it also checks
  // the controller's health and command timeouts. Returns the completions reaped.
  uint32_t poll(uint32_t max = 0);

  // Interrupt mode: sleeps until the queue's vector fires or timeout_ms passes; true
  // when it fired. Poll afterwards. False at once without interrupts.
  bool wait(int timeout_ms);
  int event_fd() const;

  uint16_t id() const;
  uint32_t outstanding() const;
  uint32_t capacity() const;  // commands that may be outstanding at once
  const QueueStats& stats() const;

 protected:
  QueuePair() = default;
  ~QueuePair() = default;
};

struct ControllerOptions {
  uint32_t admin_entries = 32;
  uint32_t io_queues_wanted = 64;       // asked with Set Features Number of Queues
  bool shadow_doorbells = true;         // use Doorbell Buffer Config when OACS offers it
  uint64_t io_timeout_us = 5'000'000;   // a command older than this is aborted
  uint64_t admin_timeout_ms = 5'000;
  // CSTS and command timeouts are checked every N polls, and at most once per period:
  // reading CSTS may cost a message to the device (vfio-user) rather than a load.
  uint32_t health_check_polls = 4096;
  uint64_t health_check_period_us = 1000;
};

class Controller {
 public:
  // Brings the controller up on `device` (§7.6.1), with queues in `memory`'s DMA heap.
  static Result<std::unique_ptr<Controller>> open(iommu::Device& device, Memory& memory,
                                                  const ControllerOptions& options = {});
  static Result<std::unique_ptr<Controller>> open(Runtime& runtime, const RuntimeDevice& device,
                                                  const ControllerOptions& options = {});
  virtual ~Controller() = default;

  virtual const ControllerInfo& info() const = 0;
  virtual const std::vector<NamespaceInfo>& namespaces() const = 0;
  virtual const NamespaceInfo* find_namespace(uint32_t nsid) const = 0;

  // Creates an I/O queue pair (control path; any thread). It lives until destroyed or
  // the controller closes.
  virtual Result<QueuePair*> create_queue_pair(const QueueOptions& options = {}) = 0;
  virtual Status destroy_queue_pair(QueuePair* queue) = 0;

  // Controller reset (§7.3.2); each queue pair notices on its next health check, fails
  // what it had outstanding with kStatusAbortedByHost and re-creates itself.
  virtual Status reset() = 0;
  virtual uint64_t resets() const = 0;
  virtual bool failed() const = 0;  // the controller could not be brought back

  // The queue pairs that exist, in creation order (a restored controller: the source's
  // order), so an application finds its queues again after a migration.
  virtual std::vector<QueuePair*> queue_pairs() const = 0;

  // Migration (include/uvio/migrate.h moves runtime memory and the device's own state).
  // Source, with the threads that own the queue pairs paused: submissions now return
  // -EAGAIN, and every queue pair is polled on the calling thread (its callbacks run
  // there) until nothing is outstanding. ETIMEDOUT when commands remain after
  // timeout_ms. Until resume() the controller accepts no new I/O.
  virtual Status quiesce(uint32_t timeout_ms) = 0;
  virtual void resume() = 0;
  // After quiesce: what the driver keeps outside runtime memory (queue ids, sizes,
  // indexes and phases, where its queues and PRP pages are, namespaces, interrupt
  // mode, counters). EBUSY while a command is outstanding.
  virtual Status save_state(std::vector<uint8_t>& out) = 0;
  // The state moved to another controller object (in this process or another): the
  // destructor neither talks to the device nor frees the queues' memory.
  virtual void release_after_migration() = 0;
  // Destination: rebuilds a saved controller and its queue pairs on `device`, whose own
  // state arrived through migration v2, over memory that holds the source's bytes. The
  // device is neither reset nor configured: BAR0 is mapped again and the queues'
  // interrupt eventfds wired, nothing else. `state` comes from outside and is checked.
  static Result<std::unique_ptr<Controller>> restore(iommu::Device& device, Memory& memory,
                                                     std::span<const uint8_t> state);

 protected:
  Controller() = default;
};

// Synchronous helpers for tools and tests: submit, then poll (or sleep on the vector)
// until the command completes. A failed command gives a Status naming the NVMe status.
Status sync_read(QueuePair& q, uint32_t nsid, void* buf, uint64_t lba, uint32_t blocks);
Status sync_write(QueuePair& q, uint32_t nsid, const void* buf, uint64_t lba, uint32_t blocks);
Status sync_flush(QueuePair& q, uint32_t nsid);
Status sync_write_zeroes(QueuePair& q, uint32_t nsid, uint64_t lba, uint32_t blocks);
Status sync_dsm(QueuePair& q, uint32_t nsid, std::span<const DsmRange> ranges, uint32_t attributes);

}  // namespace uvio::nvme
