// TCP and UNIX stream channels for the migration stream.
#include "mig/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>

namespace uvio::mig {
namespace {

// Large buffers let a pass stream at link speed with few wakeups. The kernel clamps
// SO_SNDBUF/SO_RCVBUF to net.core.{w,r}mem_max, and setting them on TCP turns off its
// autotuning (which may grow past that cap, up to tcp_rmem/tcp_wmem's maximum), so a TCP
// socket only gets an explicit size when the cap allows the whole of it.
constexpr int kSocketBufferBytes = 4 << 20;

int sysctl_int(const char* path) {
  std::ifstream in(path);
  long v = 0;
  if (!(in >> v)) return 0;
  return v > INT32_MAX ? INT32_MAX : static_cast<int>(v);
}

void tune_socket(int fd, bool tcp) {
  if (tcp) {
    int one = 1;
    // Section headers are small and must not wait for Nagle behind a page run.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (sysctl_int("/proc/sys/net/core/wmem_max") >= kSocketBufferBytes)
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBufferBytes, sizeof(kSocketBufferBytes));
    if (sysctl_int("/proc/sys/net/core/rmem_max") >= kSocketBufferBytes)
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSocketBufferBytes, sizeof(kSocketBufferBytes));
  } else {
    // UNIX sockets have no autotuning: ask for the size, the kernel clamps it.
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBufferBytes, sizeof(kSocketBufferBytes));
  }
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// Waits for `events` on fd; 0 when ready, ETIMEDOUT, or another errno.
int wait_fd(int fd, short events, int timeout_ms) {
  int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
  for (;;) {
    int left = -1;
    if (timeout_ms > 0) {
      int64_t rem = deadline - now_ms();
      if (rem <= 0) return ETIMEDOUT;
      left = static_cast<int>(rem);
    }
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, left);
    if (rc > 0) return 0;
    if (rc == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

std::string sockaddr_text(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return fmt::format("tcp:{}:{}", host, ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return fmt::format("tcp:[{}]:{}", host, ntohs(in6->sin6_port));
  }
  return "unknown";
}

class SocketChannel final : public Channel {
 public:
  SocketChannel(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  ~SocketChannel() override { ::close(fd_); }

  Status write_all(const void* buf, size_t len) override {
    auto* p = static_cast<const uint8_t*>(buf);
    while (len > 0) {
      if (cancelled_.load(std::memory_order_acquire)) return cancelled();
      // MSG_NOSIGNAL: a peer that went away is an EPIPE here, never a SIGPIPE that
      // would kill the application in the middle of a migration.
      ssize_t n = ::send(fd_, p, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (cancelled_.load(std::memory_order_acquire)) return cancelled();
        return errno_status(fmt::format("sending to {}", peer_));
      }
      p += n;
      len -= static_cast<size_t>(n);
    }
    return Status::ok();
  }

  Status read_exact(void* buf, size_t len, int timeout_ms) override {
    auto* p = static_cast<uint8_t*>(buf);
    size_t total = len;
    while (len > 0) {
      if (cancelled_.load(std::memory_order_acquire)) return cancelled();
      // The timeout counts from the last progress: a slow but moving peer is fine.
      int err = wait_fd(fd_, POLLIN, timeout_ms);
      if (err == ETIMEDOUT)
        return Status::error(ETIMEDOUT, fmt::format("{} sent nothing for {} ms ({} of {} bytes read)",
                                                    peer_, timeout_ms, total - len, total));
      if (err != 0) return Status::error(err, fmt::format("waiting for {}", peer_));
      ssize_t n = ::recv(fd_, p, len, 0);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        if (cancelled_.load(std::memory_order_acquire)) return cancelled();
        return errno_status(fmt::format("receiving from {}", peer_));
      }
      if (n == 0) {
        if (cancelled_.load(std::memory_order_acquire)) return cancelled();
        return Status::error(ECONNRESET, fmt::format("{} closed the connection ({} of {} bytes read)",
                                                     peer_, total - len, total));
      }
      p += n;
      len -= static_cast<size_t>(n);
    }
    return Status::ok();
  }

  // shutdown(2) wakes a poll or send blocked on another thread without closing the fd
  // under it (closing would let the number be reused while that thread still holds it).
  void shutdown() override {
    cancelled_.store(true, std::memory_order_release);
    ::shutdown(fd_, SHUT_RDWR);
  }

  std::string peer() const override { return peer_; }

 private:
  Status cancelled() const { return Status::error(ECANCELED, fmt::format("connection to {} was shut down", peer_)); }
  const int fd_;
  const std::string peer_;
  std::atomic<bool> cancelled_{false};
};

Status fill_unix_addr(const std::string& path, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr->sun_path))
    return Status::error(ENAMETOOLONG, fmt::format("UNIX socket path '{}' is longer than {} bytes", path,
                                                   sizeof(addr->sun_path) - 1));
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return Status::ok();
}

Result<std::unique_ptr<Channel>> connect_unix(const std::string& path) {
  sockaddr_un addr;
  UVIO_TRY(fill_unix_addr(path, &addr));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_status("socket(AF_UNIX)");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Status s = errno_status(fmt::format("connecting to unix:{}", path));
    ::close(fd);
    return s;
  }
  tune_socket(fd, false);
  return std::unique_ptr<Channel>(std::make_unique<SocketChannel>(fd, "unix:" + path));
}

// A non-blocking connect bounded by the timeout, then back to blocking for the stream.
int connect_one(const addrinfo* ai, int timeout_ms, int* out_fd) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  if (fd < 0) return errno;
  int err = 0;
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      err = wait_fd(fd, POLLOUT, timeout_ms);
      if (err == 0) {
        socklen_t len = sizeof(err);
        if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
    }
  }
  if (err == 0) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) err = errno;
  }
  if (err != 0) {
    ::close(fd);
    return err;
  }
  *out_fd = fd;
  return 0;
}

Result<std::unique_ptr<Channel>> connect_tcp(const Address& a, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(a.port);
  int gai = ::getaddrinfo(a.host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0)
    return Status::error(EHOSTUNREACH, fmt::format("cannot resolve '{}': {}", a.host, ::gai_strerror(gai)));
  int last_err = EHOSTUNREACH;
  std::string tried;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = -1;
    last_err = connect_one(ai, timeout_ms, &fd);
    if (last_err == 0) {
      std::string peer = sockaddr_text(ai->ai_addr);
      ::freeaddrinfo(res);
      tune_socket(fd, true);
      return std::unique_ptr<Channel>(std::make_unique<SocketChannel>(fd, std::move(peer)));
    }
    tried += (tried.empty() ? "" : ", ") + sockaddr_text(ai->ai_addr);
  }
  ::freeaddrinfo(res);
  return Status::error(last_err, fmt::format("connecting to tcp:{}:{} (tried {})", a.host, a.port, tried));
}

class SocketListener final : public Listener {
 public:
  SocketListener(int fd, bool tcp, std::string address, std::string unlink_path)
      : fd_(fd), tcp_(tcp), address_(std::move(address)), unlink_path_(std::move(unlink_path)) {}
  ~SocketListener() override {
    ::close(fd_);
    if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
  }

  Result<std::unique_ptr<Channel>> accept(int timeout_ms) override {
    for (;;) {
      int err = wait_fd(fd_, POLLIN, timeout_ms);
      if (err == ETIMEDOUT)
        return Status::error(ETIMEDOUT, fmt::format("no connection on {} within {} ms", address_, timeout_ms));
      if (err != 0) return Status::error(err, fmt::format("waiting for a connection on {}", address_));
      sockaddr_storage peer{};
      socklen_t len = sizeof(peer);
      int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
      if (fd < 0) {
        // The connection may have gone between poll and accept; wait for the next.
        if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
        return errno_status(fmt::format("accepting on {}", address_));
      }
      tune_socket(fd, tcp_);
      std::string name = tcp_ ? sockaddr_text(reinterpret_cast<sockaddr*>(&peer)) : "peer of " + address_;
      return std::unique_ptr<Channel>(std::make_unique<SocketChannel>(fd, std::move(name)));
    }
  }

  std::string address() const override { return address_; }

 private:
  const int fd_;
  const bool tcp_;
  const std::string address_;
  const std::string unlink_path_;
};

Result<std::unique_ptr<Listener>> listen_tcp(const Address& a) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string port = std::to_string(a.port);
  int gai = ::getaddrinfo(a.host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0)
    return Status::error(EADDRNOTAVAIL, fmt::format("cannot resolve '{}': {}", a.host, ::gai_strerror(gai)));
  Status last = Status::error(EADDRNOTAVAIL, fmt::format("no address for '{}'", a.host));
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = errno_status("socket");
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // Accepted sockets inherit the receive buffer size; set it before listen().
    tune_socket(fd, true);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 4) != 0) {
      last = errno_status(fmt::format("listening on {}", sockaddr_text(ai->ai_addr)));
      ::close(fd);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    ::freeaddrinfo(res);
    return std::unique_ptr<Listener>(
        std::make_unique<SocketListener>(fd, true, sockaddr_text(reinterpret_cast<sockaddr*>(&bound)), ""));
  }
  ::freeaddrinfo(res);
  return last;
}

Result<std::unique_ptr<Listener>> listen_unix(const std::string& path) {
  sockaddr_un addr;
  UVIO_TRY(fill_unix_addr(path, &addr));
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::error(EEXIST, fmt::format("'{}' exists and is not a socket", path));
    // A socket file nobody answers on is left over from a process that died: replace it.
    auto live = connect_unix(path);
    if (live) return Status::error(EADDRINUSE, fmt::format("a process already listens on unix:{}", path));
    ::unlink(path.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_status("socket(AF_UNIX)");
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 4) != 0) {
    Status s = errno_status(fmt::format("listening on unix:{}", path));
    ::close(fd);
    return s;
  }
  return std::unique_ptr<Listener>(std::make_unique<SocketListener>(fd, false, "unix:" + path, path));
}

}  // namespace

Result<Address> parse_address(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Status::error(EINVAL, fmt::format("bad migration address '{}': {} (expected tcp:HOST:PORT, "
                                             "tcp:[IPV6]:PORT or unix:PATH)", text, why));
  };
  Address a;
  if (text.starts_with("unix:")) {
    a.kind = Address::Kind::Unix;
    a.path = std::string(text.substr(5));
    if (a.path.empty()) return bad("empty path");
    if (a.path.size() >= sizeof(sockaddr_un::sun_path)) return bad("path too long for a UNIX socket");
    if (a.path.find('\0') != std::string::npos) return bad("NUL in path");
    return a;
  }
  if (!text.starts_with("tcp:")) return bad("unknown transport");
  std::string_view rest = text.substr(4);
  std::string_view host, port;
  if (rest.starts_with("[")) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    host = rest.substr(1, close - 1);
    if (rest.substr(close + 1).size() < 1 || rest[close + 1] != ':') return bad("missing ':PORT'");
    port = rest.substr(close + 2);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("missing ':PORT'");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("an IPv6 address needs brackets");
  }
  if (host.empty()) return bad("empty host");
  if (host.find('\0') != std::string_view::npos) return bad("NUL in host");
  if (port.empty()) return bad("empty port");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) return bad("port is not 0..65535");
  a.kind = Address::Kind::Tcp;
  a.host = std::string(host);
  a.port = static_cast<uint16_t>(value);
  return a;
}

Result<std::unique_ptr<Channel>> connect(std::string_view address, int timeout_ms) {
  auto a = parse_address(address);
  if (!a) return a.status();
  if (a->kind == Address::Kind::Unix) return connect_unix(a->path);
  if (a->port == 0) return Status::error(EINVAL, fmt::format("cannot connect to port 0 ('{}')", address));
  return connect_tcp(*a, timeout_ms);
}

Result<std::unique_ptr<Listener>> Listener::listen(std::string_view address) {
  auto a = parse_address(address);
  if (!a) return a.status();
  if (a->kind == Address::Kind::Unix) return listen_unix(a->path);
  return listen_tcp(*a);
}

std::unique_ptr<Channel> channel_from_fd(int fd, std::string peer) {
  return std::make_unique<SocketChannel>(fd, std::move(peer));
}

}  // namespace uvio::mig
