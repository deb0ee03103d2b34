#include <uvio/cycles.h>

#include <time.h>

#include <atomic>
#include <vector>

namespace uvio {
namespace {

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

uint64_t measure_hz() {
  uint64_t t0 = monotonic_ns(), c0 = cycles();
  timespec ten_ms{0, 10 * 1000 * 1000};
  nanosleep(&ten_ms, nullptr);
  uint64_t t1 = monotonic_ns(), c1 = cycles();
  return (c1 - c0) * 1000000000ull / (t1 - t0 ? t1 - t0 : 1);
}

}  // namespace

uint64_t cycles_per_second() {
  static const uint64_t hz = measure_hz();
  return hz;
}

double cycles_to_seconds(uint64_t c) { return double(c) / double(cycles_per_second()); }

TimerList::Id TimerList::arm(uint64_t deadline, Callback cb, uint64_t period) {
  Id id = next_id_++;
  by_deadline_.emplace(deadline, Timer{id, period, std::move(cb)});
  return id;
}

bool TimerList::cancel(Id id) {
  for (auto it = by_deadline_.begin(); it != by_deadline_.end(); ++it) {
    if (it->second.id == id) {
      by_deadline_.erase(it);
      return true;
    }
  }
  return false;
}

int TimerList::manage(uint64_t now) {
  int fired = 0;
  std::vector<std::pair<uint64_t, Timer>> due;
  while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
    due.emplace_back(by_deadline_.begin()->first, std::move(by_deadline_.begin()->second));
    by_deadline_.erase(by_deadline_.begin());
  }
  for (auto& [deadline, t] : due) {
    t.cb();
    fired++;
    if (t.period) by_deadline_.emplace(deadline + t.period, std::move(t));
  }
  return fired;
}

}  // namespace uvio
