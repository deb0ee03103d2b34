// The interrupt loop: eventfds (a device's MSI-X vector, a vhost-user call fd, a
// wake-up from another thread) watched with epoll. An idle lcore sleeps here and wakes
// on its queue's interrupt, the way the kernel's virqfd turns an eventfd into work.
#pragma once

#include <uvio/status.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace uvio {

class InterruptLoop {
 public:
  // Called with the fd that fired and the count read from it (eventfds are drained).
  using Handler = std::function<void(int fd, uint64_t count)>;

  static Result<std::unique_ptr<InterruptLoop>> create();
  ~InterruptLoop();

  Status add(int fd, Handler handler);
  Status remove(int fd);
  // Waits up to timeout_ms (-1: forever) and runs the handlers of the fds that fired.
  // Returns how many fired; 0 on timeout or when woken by wake().
  Result<int> run_once(int timeout_ms);
  // Makes a concurrent or the next run_once return; safe from any thread.
  void wake();

 private:
  InterruptLoop() = default;
  int epfd_ = -1;
  int wake_fd_ = -1;
  std::mutex mu_;
  std::map<int, Handler> handlers_;
};

// An eventfd a device or another thread signals (EFD_NONBLOCK, close-on-exec).
Result<int> make_eventfd();
// Signals an eventfd (adds 1).
void signal_eventfd(int fd);
// Reads and clears an eventfd's count; 0 when nothing was pending.
uint64_t drain_eventfd(int fd);
// Sleeps until `fd` is readable or timeout_ms passes: how a queue waits for its vector.
// Returns true when the fd fired (and drains it).
bool wait_eventfd(int fd, int timeout_ms);

}  // namespace uvio
