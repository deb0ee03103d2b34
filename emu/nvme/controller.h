// The emulated NVMe 1.4 controller behind the vfio-user server: registers trapped in the
// first 4 KiB of BAR0, doorbells in a shared page the device thread polls, admin and NVM
// I/O commands over memory- or file-backed namespaces.
//
// BAR0 (16 KiB):  0x0000 registers (trapped)   0x1000 doorbells, stride 4 (shared)
//                 0x2000 MSI-X table (trapped)  0x3000 MSI-X PBA (trapped)
//
// Every DeviceModel call must come from one thread at a time (the server's device
// thread, or the server serializing its socket thread with it): the model holds no lock.
#pragma once

#include "emu/device_model.h"
#include "emu/nvme/namespace_store.h"
#include "emu/nvme/nvme_spec.h"
#include "emu/nvme/options.h"
#include "emu/nvme/prp.h"

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace uvio::emu::nvme {

inline constexpr uint64_t kBar0Bytes = 16 * 1024;
inline constexpr uint64_t kDoorbellPage = 0x1000;
inline constexpr uint64_t kMsixTableOffset = 0x2000;
inline constexpr uint64_t kMsixPbaOffset = 0x3000;
inline constexpr uint32_t kBurstPerQueue = 32;   // commands taken from one SQ per poll
inline constexpr uint32_t kMaxAsyncEvents = 4;   // AERL + 1
inline constexpr uint32_t kMaxAborts = 4;        // ACL + 1
inline constexpr uint32_t kErrorLogEntries = 4;  // ELPE + 1
inline constexpr uint32_t kMpsMax = 4;           // CAP.MPSMAX: 64 KiB pages

struct SubmissionQueue {
  bool live = false;
  uint64_t base = 0;
  uint32_t size = 0;
  uint32_t head = 0;
  uint32_t tail = 0;
  uint16_t cqid = 0;
  uint8_t priority = 0;
  uint32_t last_doorbell = 0;   // last value seen in the doorbell register
  uint32_t last_shadow = 0;     // last value seen in the shadow doorbell
  uint32_t last_event_idx = ~0u;
};

struct CompletionQueue {
  bool live = false;
  uint64_t base = 0;
  uint32_t size = 0;
  uint32_t head = 0;
  uint32_t tail = 0;
  uint16_t vector = 0;
  bool phase = true;
  bool irq_enabled = false;
  uint16_t sq_refs = 0;
  uint32_t last_doorbell = 0;
  uint32_t last_shadow = 0;
  uint32_t last_event_idx = ~0u;
  bool irq_pending = false;
};

struct Features {
  uint32_t arbitration = 0;
  uint32_t power_management = 0;
  uint16_t temp_over = 0x0157;   // 343 K, the warning temperature
  uint16_t temp_under = 0;
  bool write_cache = true;
  uint16_t sq_allocated = 0;     // 0's based, as Number of Queues reports them
  uint16_t cq_allocated = 0;
  uint32_t interrupt_coalescing = 0;
  uint32_t async_event_config = 0;
};

struct HealthCounters {
  uint64_t blocks_read_512 = 0;     // 512-byte units, reported in thousands (SMART log)
  uint64_t blocks_written_512 = 0;
  uint64_t host_reads = 0;
  uint64_t host_writes = 0;
  uint64_t error_entries = 0;
};

// An Error Information log entry, 64 bytes.
struct ErrorLogEntry {
  uint64_t error_count;
  uint16_t sqid;
  uint16_t cid;
  uint16_t status;  // status field << 1 (phase bit clear)
  uint16_t param_location;
  uint64_t lba;
  uint32_t nsid;
  uint8_t vendor;
  uint8_t transport_type;
  uint8_t reserved0[2];
  uint64_t command_specific;
  uint16_t transport_info;
  uint8_t reserved1[22];
};
static_assert(sizeof(ErrorLogEntry) == 64);

struct PendingAbort {
  uint16_t sqid = 0;
  uint16_t cid = 0;
};

// Everything a controller reset or a migration touches, in one place.
struct ControllerState {
  uint32_t cc = 0;
  uint32_t csts = 0;
  uint32_t aqa = 0;
  uint32_t intms = 0;
  uint64_t asq = 0;
  uint64_t acq = 0;
  std::vector<SubmissionQueue> sqs;  // index = queue id; 0 is the admin queue
  std::vector<CompletionQueue> cqs;
  Features features;
  HealthCounters health;
  uint64_t shadow_doorbells = 0;  // Doorbell Buffer Config PRP1; 0 = not configured
  uint64_t event_indexes = 0;     // PRP2
  std::vector<uint16_t> async_event_cids;  // outstanding Asynchronous Event Requests
  bool error_event_pending = false;        // an error event waits for a request
  uint8_t error_event_info = 0;
  bool error_events_masked = false;        // until the host reads the error log
  std::vector<PendingAbort> aborts;        // fetched later: completed as Abort Requested
  std::array<ErrorLogEntry, kErrorLogEntries> error_log{};  // newest first
  uint64_t commands_fetched = 0;           // counts commands for fault injection
  bool fatal_fault_fired = false;
};

class NvmeController final : public DeviceModel {
 public:
  static Result<std::unique_ptr<NvmeController>> create(const NvmeOptions& options);
  ~NvmeController() override;

  std::string_view type_name() const override { return "nvme"; }
  uint32_t state_version() const override { return 2; }  // 2: CRC-32C at the end
  PciIdentity identity() const override;
  std::vector<BarLayout> bars() const override;
  MsixLayout msix() const override;
  void attach(DmaAccess& dma, IrqSink& irq, std::span<std::byte* const> shared) override;
  uint64_t bar_read(uint32_t bar, uint64_t offset, unsigned width) override;
  void bar_write(uint32_t bar, uint64_t offset, uint64_t value, unsigned width) override;
  size_t poll() override;
  void reset() override;
  void save_state(std::vector<uint8_t>& out) const override;
  Status load_state(std::span<const uint8_t> in) override;

  // Why the last CC.EN 0 -> 1 failed (CSTS.CFS set), empty when it did not.
  const std::string& enable_error() const { return enable_error_; }
  const ControllerState& state() const { return st_; }
  const NvmeOptions& options() const { return opt_; }

 private:
  struct Outcome {
    CompletionStatus status;
    uint32_t dw0 = 0;
    bool deferred = false;  // no completion now (an Asynchronous Event Request)
  };

  explicit NvmeController(NvmeOptions options);

  uint64_t cap() const;
  uint64_t page_size() const { return 4096ull << ((st_.cc >> kCcMpsShift) & 0xf); }
  uint32_t read_register(uint64_t offset) const;
  void write_register(uint64_t offset, uint32_t value);
  void write_cc(uint32_t value);
  void enable();
  void controller_reset();
  void zero_doorbells();

  // Doorbells: the register (shared page) and, once configured, the shadow buffer.
  uint32_t doorbell(uint32_t index) const;
  void set_doorbell(uint32_t index, uint32_t value);
  bool read_new_doorbell(uint32_t index, uint32_t* last_doorbell, uint32_t* last_shadow, uint32_t* out);
  void write_event_index(uint32_t index, uint32_t value, uint32_t* last);
  void refresh_sq_tail(uint16_t qid);
  void refresh_cq_head(uint16_t qid);

  size_t process_sq(uint16_t qid);
  bool post_completion(uint16_t cqid, uint16_t sqid, uint16_t cid, CompletionStatus status, uint32_t dw0,
                       bool stale_phase = false);
  void fatal(const char* why);
  void record_error(uint16_t sqid, const SubmissionEntry& cmd, CompletionStatus status);
  void raise_error_event(uint8_t info);
  void deliver_async_events();

  Outcome execute_admin(const SubmissionEntry& cmd);
  Outcome admin_identify(const SubmissionEntry& cmd);
  Outcome admin_create_cq(const SubmissionEntry& cmd);
  Outcome admin_create_sq(const SubmissionEntry& cmd);
  Outcome admin_delete_cq(const SubmissionEntry& cmd);
  Outcome admin_delete_sq(const SubmissionEntry& cmd);
  Outcome admin_get_log_page(const SubmissionEntry& cmd);
  Outcome admin_features(const SubmissionEntry& cmd, bool set);
  Outcome admin_abort(const SubmissionEntry& cmd);
  Outcome admin_async_event(const SubmissionEntry& cmd);
  Outcome admin_doorbell_buffer(const SubmissionEntry& cmd);
  CompletionStatus copy_to_host(const SubmissionEntry& cmd, const void* data, size_t len);

  Outcome execute_io(const SubmissionEntry& cmd);
  Outcome io_read_write(const SubmissionEntry& cmd, NamespaceStore& ns, bool write);
  Outcome io_write_zeroes(const SubmissionEntry& cmd, NamespaceStore& ns);
  Outcome io_dataset_management(const SubmissionEntry& cmd, NamespaceStore& ns);
  Outcome io_flush(const SubmissionEntry& cmd);

  bool take_pending_abort(uint16_t sqid, uint16_t cid);

  NvmeOptions opt_;
  uint32_t queue_count_;  // io_queues + 1
  std::vector<std::unique_ptr<NamespaceStore>> namespaces_;
  ControllerState st_;
  uint64_t state_loads_ = 0;  // migration loads so far, for the migload@N fault
  bool io_stalled_ = false;   // the stall@N fault fired; a controller reset clears it
  std::string enable_error_;

  DmaAccess* dma_ = nullptr;
  IrqSink* irq_ = nullptr;
  uint32_t* doorbells_ = nullptr;             // the shared page, or own_doorbells_
  std::vector<uint32_t> own_doorbells_;       // when the server shares no page
};

// The registry's factory ("nvme"): parse_nvme_options, then NvmeController::create.
Result<std::unique_ptr<DeviceModel>> make_nvme_model(const std::map<std::string, std::string>& args);

}  // namespace uvio::emu::nvme
