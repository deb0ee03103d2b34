// Live migration of a running uvio application with its devices. The application names
// what it keeps outside runtime memory (participants); the runtime moves the rest: every
// byte of runtime memory at the same addresses and IOVAs, found dirty by the devices'
// own tracking and by write-protect tracking of the lcores' stores, and every device's
// state through the VFIO migration v2 state machine.
//
// Source: the control socket's "migrate.send" (uvio-migrate send --to ADDR) runs a
// migration on a thread of its own while the lcores keep working; once the remainder
// fits the downtime budget the services pause at their quiescent points, the devices
// stop, the rest is sent, and on the destination's acknowledgement migrated() turns true
// and the application exits. On any failure or cancel the devices return to RUNNING, the
// services resume, and the source goes on as if nothing had happened.
//
// Destination: started with the same options plus --migrate-listen=ADDR (and a different
// --file-prefix when on the same machine); it registers the same participants and calls
// receive() before it creates anything in runtime memory.
#pragma once

#include <uvio/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace uvio {

class Runtime;

namespace mig {

struct Participant {
  std::string name;  // matched by name on the destination; unique
  // Source, with the services paused and before the devices stop: finish what is in
  // flight so that the device holds nothing half-done (an NVMe driver drains its queues).
  // May be empty.
  std::function<Status()> quiesce;
  // Source, services paused and devices stopped: everything of this participant that
  // does not live in runtime memory.
  std::function<Status(std::vector<uint8_t>& out)> save;
  // Destination, after memory and device states are in, devices stopped: rebuild from
  // `in` (objects in runtime memory are already there, at the same addresses).
  std::function<Status(std::span<const uint8_t> in)> load;
  // Source, when the migration failed or was cancelled after quiesce: go on.
  std::function<void()> resume;
};

struct SendOptions {
  std::string to;                  // "tcp:HOST:PORT" or "unix:PATH"
  uint32_t max_downtime_ms = 300;  // the budget the remainder must fit before stop-copy
  uint32_t max_passes = 30;        // pre-copy passes before giving up on convergence
  bool force = false;              // stop-copy after max_passes even if it does not fit
  std::string token;               // must equal the destination's --migrate-token
};

enum class Phase { Idle, Setup, PreCopy, StopCopy, Completed, Failed, Cancelled };
std::string_view phase_name(Phase p);

struct Progress {
  Phase phase = Phase::Idle;
  uint32_t pass = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_remaining = 0;      // dirty bytes known at the last pass
  double dirty_rate_bps = 0;         // bytes dirtied per second, last pass
  double bandwidth_bps = 0;          // bytes sent per second, last pass
  double expected_downtime_ms = 0;   // bytes_remaining / bandwidth + device state
  double downtime_ms = 0;            // measured, once Completed: pause to destination ack
  double total_ms = 0;
  std::string message;               // why Failed, or what is happening
};

class Migration {
 public:
  // Registers "migrate.status", "migrate.send" and "migrate.cancel" on the runtime's
  // control socket, and the runtime's own participant (the DMA heap and memzones).
  explicit Migration(Runtime& runtime);
  ~Migration();
  Migration(const Migration&) = delete;
  Migration& operator=(const Migration&) = delete;

  void add_participant(Participant p);

  // Names the first device that cannot migrate (no v2 migration, or no dirty tracking
  // for its DMA); ok when all can.
  Status check_migratable() const;

  // Source. start_send returns at once (EBUSY when one is running, or the reason
  // check_migratable gives); send() waits for the end.
  Status start_send(const SendOptions& options);
  Status send(const SendOptions& options);
  void cancel();
  Progress progress() const;
  // True once the destination has taken over: the application should stop and exit.
  bool migrated() const;

  // Destination: true when the runtime was started with --migrate-listen.
  bool incoming() const;
  // Listens, receives and applies a whole migration, runs the participants' loads, sets
  // the devices RUNNING and acknowledges. On failure nothing runs: the status says why.
  Status receive();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mig
}  // namespace uvio
