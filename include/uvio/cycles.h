// The cycle counter and timers. rdtsc on x86: a constant-rate TSC on every CPU uvio runs on.
#pragma once

#include <cstdint>
#include <functional>
#include <map>

#include <x86intrin.h>

namespace uvio {

inline uint64_t cycles() { return __rdtsc(); }
// TSC ticks per second, measured once against CLOCK_MONOTONIC (about 10 ms, first call).
uint64_t cycles_per_second();
inline uint64_t cycles_from_us(uint64_t us) { return us * cycles_per_second() / 1000000; }
double cycles_to_seconds(uint64_t c);

// Timers of one lcore, run from its loop by manage(): no thread, no lock.
class TimerList {
 public:
  using Callback = std::function<void()>;
  using Id = uint64_t;
  // Fires once at `deadline` (in cycles()); period > 0 re-arms it every period cycles.
  Id arm(uint64_t deadline, Callback cb, uint64_t period = 0);
  bool cancel(Id id);
  // Runs what is due; returns how many fired.
  int manage(uint64_t now = cycles());
  size_t pending() const { return by_deadline_.size(); }

 private:
  struct Timer {
    Id id;
    uint64_t period;
    Callback cb;
  };
  std::multimap<uint64_t, Timer> by_deadline_;
  Id next_id_ = 1;
};

}  // namespace uvio
