#include <uvio/lcore.h>
#include <uvio/log.h>
#include <uvio/topology.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace uvio {

namespace lcore_detail {
thread_local constinit unsigned current_lcore = kNoLcore;
}

void set_lcore_id(unsigned lcore) { lcore_detail::current_lcore = lcore; }

// A worker thread waits on its condition variable for work: launching is control path.
struct LcoreSet::Worker {
  LcoreSpec spec;
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::function<int()> work;
  bool busy = false;
  bool quit = false;
  int result = 0;

  void run() {
    set_lcore_id(spec.lcore);
    if (spec.cpu >= 0 && !topology::pin_current_thread(spec.cpu))
      UVIO_LOG(Warning, "lcore", "lcore {}: cannot pin to CPU {}", spec.lcore, spec.cpu);
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return quit || (busy && work); });
      if (quit && !(busy && work)) return;
      auto fn = std::move(work);
      work = nullptr;
      lock.unlock();
      int rc = fn();
      lock.lock();
      result = rc;
      busy = false;
      cv.notify_all();
    }
  }
};

Result<std::unique_ptr<LcoreSet>> LcoreSet::start(const std::vector<LcoreSpec>& lcores, unsigned main_lcore) {
  std::unique_ptr<LcoreSet> set(new LcoreSet());
  set->specs_ = lcores;
  set->main_ = main_lcore;
  bool main_found = false;
  for (const LcoreSpec& s : lcores) {
    if (s.lcore >= kMaxLcores) return Status::error(EINVAL, fmt::format("lcore {} is beyond the maximum {}", s.lcore, kMaxLcores - 1));
    if (s.lcore == main_lcore) {
      main_found = true;
      continue;
    }
    auto w = std::make_unique<Worker>();
    w->spec = s;
    Worker* raw = w.get();
    w->thread = std::thread([raw] { raw->run(); });
    set->workers_.push_back(std::move(w));
  }
  if (!main_found) return Status::error(EINVAL, fmt::format("main lcore {} is not among the lcores", main_lcore));
  set_lcore_id(main_lcore);
  for (const LcoreSpec& s : lcores) {
    if (s.lcore == main_lcore && s.cpu >= 0 && !topology::pin_current_thread(s.cpu))
      UVIO_LOG(Warning, "lcore", "main lcore {}: cannot pin to CPU {}", s.lcore, s.cpu);
  }
  return set;
}

LcoreSet::~LcoreSet() {
  for (auto& w : workers_) {
    {
      std::unique_lock lock(w->mu);
      w->cv.wait(lock, [&] { return !w->busy; });
      w->quit = true;
    }
    w->cv.notify_all();
    w->thread.join();
  }
}

std::vector<unsigned> LcoreSet::worker_lcores() const {
  std::vector<unsigned> out;
  for (auto& w : workers_) out.push_back(w->spec.lcore);
  return out;
}

int LcoreSet::cpu_of(unsigned lcore) const {
  for (const LcoreSpec& s : specs_)
    if (s.lcore == lcore) return s.cpu;
  return -1;
}

LcoreSet::Worker* LcoreSet::worker(unsigned lcore) const {
  for (auto& w : workers_)
    if (w->spec.lcore == lcore) return w.get();
  return nullptr;
}

Status LcoreSet::remote_launch(unsigned lcore, std::function<int()> fn) {
  Worker* w = worker(lcore);
  if (!w) return Status::error(EINVAL, fmt::format("lcore {} is not a worker lcore", lcore));
  {
    std::lock_guard lock(w->mu);
    if (w->busy) return Status::error(EBUSY, fmt::format("lcore {} is still running", lcore));
    w->busy = true;
    w->work = std::move(fn);
  }
  w->cv.notify_all();
  return Status::ok();
}

int LcoreSet::wait(unsigned lcore) {
  Worker* w = worker(lcore);
  if (!w) return 0;
  std::unique_lock lock(w->mu);
  w->cv.wait(lock, [&] { return !w->busy; });
  return w->result;
}

void LcoreSet::wait_all() {
  for (auto& w : workers_) wait(w->spec.lcore);
}

// --- services ---

namespace {
// The control-path calls of a ServiceRunner (add, start, pause, resume, stop) come from
// different threads — main, and a migration's own thread reached through the control
// socket — and must see each other's changes to the per-lcore table. Those calls are
// rare; one lock for all runners keeps the header free of it. The lcore loops never take
// it.
std::mutex service_control_mu;
}  // namespace

ServiceRunner::~ServiceRunner() { stop(); }

void ServiceRunner::add(unsigned lcore, std::string name, Step step) {
  std::lock_guard lock(service_control_mu);
  for (auto& p : per_lcore_) {
    if (p->lcore == lcore) {
      p->services.push_back({std::move(name), std::move(step)});
      return;
    }
  }
  auto p = std::make_unique<PerLcore>();
  p->lcore = lcore;
  p->services.push_back({std::move(name), std::move(step)});
  per_lcore_.push_back(std::move(p));
}

Status ServiceRunner::start(LcoreSet& lcores) {
  std::lock_guard lock(service_control_mu);
  lcores_ = &lcores;
  stop_requested_.store(false);
  for (auto& p : per_lcore_) {
    PerLcore* raw = p.get();
    UVIO_TRY(lcores.remote_launch(p->lcore, [this, raw] { return loop(*raw); }));
  }
  return Status::ok();
}

int ServiceRunner::loop(PerLcore& me) {
  while (!stop_requested_.load(std::memory_order_relaxed)) {
    if (pause_requested_.load(std::memory_order_acquire)) {
      // The quiescent point: between two steps.
      uint64_t gen = resume_generation_.load(std::memory_order_acquire);
      me.parked.store(true, std::memory_order_release);
      while (pause_requested_.load(std::memory_order_acquire) && resume_generation_.load(std::memory_order_acquire) == gen &&
             !stop_requested_.load(std::memory_order_relaxed))
        std::this_thread::yield();
      me.parked.store(false, std::memory_order_release);
      continue;
    }
    for (Entry& e : me.services) e.step();
    me.iterations.fetch_add(1, std::memory_order_relaxed);
  }
  return 0;
}

void ServiceRunner::pause() {
  std::lock_guard lock(service_control_mu);
  pause_requested_.store(true, std::memory_order_release);
  if (!lcores_) return;  // no loop runs: nothing to wait for (they park as they start)
  for (auto& p : per_lcore_)
    while (!p->parked.load(std::memory_order_acquire)) std::this_thread::yield();
}

void ServiceRunner::resume() {
  std::lock_guard lock(service_control_mu);
  pause_requested_.store(false, std::memory_order_release);
  resume_generation_.fetch_add(1, std::memory_order_acq_rel);
  if (!lcores_) return;
  for (auto& p : per_lcore_)
    while (p->parked.load(std::memory_order_acquire)) std::this_thread::yield();
}

void ServiceRunner::stop() {
  std::lock_guard lock(service_control_mu);
  if (!lcores_) return;
  stop_requested_.store(true, std::memory_order_release);
  for (auto& p : per_lcore_) lcores_->wait(p->lcore);
  lcores_ = nullptr;
}

// Without the lock: a service step may call it, and pause() holds the lock while it
// waits for the steps to finish.
uint64_t ServiceRunner::iterations(unsigned lcore) const {
  for (auto& p : per_lcore_)
    if (p->lcore == lcore) return p->iterations.load(std::memory_order_relaxed);
  return 0;
}

}  // namespace uvio
