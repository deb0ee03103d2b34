#include <uvio/intr.h>

#include <fmt/format.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <vector>

namespace uvio {

Result<int> make_eventfd() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return errno_status("eventfd");
  return fd;
}

void signal_eventfd(int fd) {
  uint64_t one = 1;
  ssize_t rc = ::write(fd, &one, sizeof(one));
  (void)rc;  // EAGAIN only when the counter would overflow: the wake-up is pending anyway
}

uint64_t drain_eventfd(int fd) {
  uint64_t v = 0;
  if (::read(fd, &v, sizeof(v)) != sizeof(v)) return 0;
  return v;
}

bool wait_eventfd(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc <= 0) return false;
  drain_eventfd(fd);
  return true;
}

Result<std::unique_ptr<InterruptLoop>> InterruptLoop::create() {
  std::unique_ptr<InterruptLoop> loop(new InterruptLoop());
  loop->epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (loop->epfd_ < 0) return errno_status("interrupt loop: epoll_create1");
  auto wfd = make_eventfd();
  if (!wfd) return wfd.status();
  loop->wake_fd_ = wfd.value();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = loop->wake_fd_;
  if (epoll_ctl(loop->epfd_, EPOLL_CTL_ADD, loop->wake_fd_, &ev) != 0) return errno_status("interrupt loop: add wake fd");
  return loop;
}

InterruptLoop::~InterruptLoop() {
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epfd_ >= 0) close(epfd_);
}

Status InterruptLoop::add(int fd, Handler handler) {
  std::lock_guard lock(mu_);
  if (handlers_.count(fd)) return Status::error(EEXIST, fmt::format("interrupt loop: fd {} is registered already", fd));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return errno_status(fmt::format("interrupt loop: cannot watch fd {}", fd));
  handlers_[fd] = std::move(handler);
  return Status::ok();
}

Status InterruptLoop::remove(int fd) {
  std::lock_guard lock(mu_);
  if (!handlers_.erase(fd)) return Status::error(ENOENT, fmt::format("interrupt loop: fd {} is not registered", fd));
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  return Status::ok();
}

Result<int> InterruptLoop::run_once(int timeout_ms) {
  epoll_event evs[32];
  int n = epoll_wait(epfd_, evs, 32, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return 0;
    return errno_status("interrupt loop: epoll_wait");
  }
  int fired = 0;
  for (int i = 0; i < n; i++) {
    int fd = evs[i].data.fd;
    if (fd == wake_fd_) {
      drain_eventfd(fd);
      continue;
    }
    uint64_t count = drain_eventfd(fd);
    Handler h;
    {
      std::lock_guard lock(mu_);
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;  // removed while we waited
      h = it->second;
    }
    h(fd, count);
    fired++;
  }
  return fired;
}

void InterruptLoop::wake() { signal_eventfd(wake_fd_); }

}  // namespace uvio
