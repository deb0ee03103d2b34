// Logical cores: one thread per lcore, pinned to its CPU; work launched remotely; and
// services, the loops that run on lcores and can be paused at a known quiescent point
// (migration, reconfiguration and shutdown depend on it).
#pragma once

#include <uvio/status.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace uvio {

inline constexpr unsigned kMaxLcores = 128;
inline constexpr unsigned kNoLcore = ~0u;

namespace lcore_detail {
// constinit: no dynamic initialisation, so each access is a plain TLS load, not a call.
extern thread_local constinit unsigned current_lcore;
}

// The calling thread's lcore id, kNoLcore on a thread the runtime did not start.
inline unsigned lcore_id() { return lcore_detail::current_lcore; }

struct LcoreSpec {
  unsigned lcore = 0;
  int cpu = -1;  // -1: not pinned
};

class LcoreSet {
 public:
  // Starts a thread for each lcore but `main_lcore`, which is the calling thread.
  static Result<std::unique_ptr<LcoreSet>> start(const std::vector<LcoreSpec>& lcores, unsigned main_lcore);
  ~LcoreSet();  // waits for launched work and joins the threads

  unsigned main_lcore() const { return main_; }
  const std::vector<LcoreSpec>& lcores() const { return specs_; }
  std::vector<unsigned> worker_lcores() const;  // all but main
  int cpu_of(unsigned lcore) const;

  // Runs fn on `lcore` (not main). EBUSY when that lcore is still running something.
  Status remote_launch(unsigned lcore, std::function<int()> fn);
  // Waits for the lcore's work and returns its value (0 when idle).
  int wait(unsigned lcore);
  void wait_all();

 private:
  struct Worker;
  LcoreSet() = default;
  std::vector<LcoreSpec> specs_;
  unsigned main_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  Worker* worker(unsigned lcore) const;
};

// Sets the calling thread's lcore id (tests, and threads an application starts itself).
void set_lcore_id(unsigned lcore);

// Services: each is a step function the runtime calls in a loop on an lcore. Between
// two steps an lcore is quiescent: it holds no packet, no queue slot, no lock.
class ServiceRunner {
 public:
  using Step = std::function<void()>;
  ServiceRunner() = default;
  ~ServiceRunner();

  // Adds a service to run on `lcore`. Only before start().
  void add(unsigned lcore, std::string name, Step step);
  // Launches one loop per lcore that has services.
  Status start(LcoreSet& lcores);
  // Every service lcore finishes its current step and parks; returns once all have.
  void pause();
  void resume();
  // Ends the loops (after the current step) and waits for them.
  void stop();
  bool paused() const { return pause_requested_.load(std::memory_order_acquire); }
  uint64_t iterations(unsigned lcore) const;

 private:
  struct Entry {
    std::string name;
    Step step;
  };
  struct PerLcore {
    unsigned lcore = 0;
    std::vector<Entry> services;
    std::atomic<uint64_t> iterations{0};
    std::atomic<bool> parked{false};
  };
  int loop(PerLcore& me);
  std::vector<std::unique_ptr<PerLcore>> per_lcore_;
  std::atomic<bool> pause_requested_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> resume_generation_{0};
  LcoreSet* lcores_ = nullptr;
};

}  // namespace uvio
