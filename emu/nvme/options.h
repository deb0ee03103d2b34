// Arguments of the emulated NVMe controller ("nvme" in the model registry), parsed from
// key=value pairs. See emu/nvme/README.md for the list.
#pragma once

#include <uvio/status.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace uvio::emu::nvme {

// Faults for the driver's hardening tests. Each names the Nth command fetched from any
// submission queue since the controller was created (1-based); 0 leaves it off. Each
// fires once.
struct FaultPlan {
  uint64_t fatal_after = 0;       // cfs@N: CSTS.CFS set once command N has completed
  uint64_t drop_completion = 0;   // timeout@N: command N runs, its completion is never posted
  uint64_t wrong_cid = 0;         // badcid@N: command N completes with bit 15 of its CID inverted
  uint64_t stale_phase = 0;       // phase@N: command N's entry carries the previous lap's phase
  // stall@N: once command N has completed, no I/O submission queue is fetched again (its
  // head never moves) until a controller reset; the admin queue still works.
  uint64_t stall_io = 0;
  // migload@N: the Nth migration state load (RESUMING -> STOP) is refused, as a device
  // that cannot take another's state; N counts loads, not commands.
  uint64_t refuse_state_load = 0;
  bool any() const {
    return fatal_after || drop_completion || wrong_cid || stale_phase || stall_io || refuse_state_load;
  }
};

struct NvmeOptions {
  uint32_t namespaces = 1;                  // ns=
  uint64_t namespace_bytes = 0;             // size=: 0 = 64 MiB, or the file's own size
  uint32_t lba_bytes = 512;                 // lba=512|4096
  std::string file;                         // file=: backs namespace 1
  uint32_t io_queues = 16;                  // queues=: I/O queue pairs, 1..255
  uint32_t max_queue_entries = 1024;        // mqes=: largest queue, 2..65536
  std::string serial = "UVIO0001";          // serial=: up to 20 ASCII characters
  FaultPlan faults;                         // faults=
};

// "cfs@100+timeout@50": '+'-separated name@N items (no commas, so the whole plan fits in
// one key=value argument).
Result<FaultPlan> parse_fault_plan(std::string_view text);

// Unknown keys and malformed values are errors that name the key.
Result<NvmeOptions> parse_nvme_options(const std::map<std::string, std::string>& args);

}  // namespace uvio::emu::nvme
