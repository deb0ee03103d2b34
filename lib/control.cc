// The per-process control socket: one JSON request line in, one JSON reply line out.
#include <uvio/control.h>
#include <uvio/log.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace uvio {
namespace {

constexpr const char* kLog = "control";
constexpr size_t kMaxRequestBytes = 64 << 10;
constexpr size_t kMaxReplyBytes = 16 << 20;
// Clients served at once; more wait in the listen backlog.
constexpr size_t kMaxClients = 16;
// A client that stops reading its reply is dropped after this, not waited for.
constexpr int kReplyTimeoutMs = 2000;

using nlohmann::json;

std::string dump(const json& j) {
  // Replace, not throw, on bytes that are not UTF-8: a handler's message may carry them.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_reply(std::string_view why) { return dump(json{{"ok", false}, {"error", why}}); }

Status fill_addr(const std::string& path, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  if (path.empty()) return Status::error(EINVAL, "empty control socket path");
  if (path.size() >= sizeof(addr->sun_path))
    return Status::error(ENAMETOOLONG, fmt::format("control socket path '{}' is longer than {} bytes", path,
                                                   sizeof(addr->sun_path) - 1));
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return Status::ok();
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// Writes all of `data` to a non-blocking socket, waiting at most timeout_ms in total.
Status send_all(int fd, std::string_view data, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return errno_status("sending on the control socket");
    int64_t left = deadline - now_ms();
    if (left <= 0) return Status::error(ETIMEDOUT, "control socket peer does not read");
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
  return Status::ok();
}

}  // namespace

struct ControlSocket::Impl {
  std::string path;
  std::string app;
  int listen_fd = -1;
  int stop_fd = -1;
  ino_t inode = 0;
  std::thread thread;

  struct Command {
    std::string description;
    Handler handler;
  };
  std::mutex mutex;  // commands may be added while the thread serves
  std::map<std::string, Command> commands;
  // Held while a handler runs, so that remove() can wait for it to return.
  std::mutex running;

  struct Client {
    int fd = -1;
    std::string buffer;
  };
  std::vector<Client> clients;

  ~Impl() {
    if (thread.joinable()) {
      uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(stop_fd, &one, sizeof(one));
      thread.join();
    }
    for (Client& c : clients) ::close(c.fd);
    if (listen_fd >= 0) {
      ::close(listen_fd);
      // Only our own socket file: another process may have replaced it since.
      struct stat st{};
      if (::lstat(path.c_str(), &st) == 0 && st.st_ino == inode) ::unlink(path.c_str());
    }
    if (stop_fd >= 0) ::close(stop_fd);
  }

  void add(std::string cmd, std::string description, Handler handler) {
    std::lock_guard lock(mutex);
    commands[std::move(cmd)] = Command{std::move(description), std::move(handler)};
  }

  void add_builtins() {
    add("help", "the commands this process answers, with what each does", [this](std::string_view) {
      json list = json::array();
      std::lock_guard lock(mutex);
      for (const auto& [name, c] : commands) list.push_back({{"cmd", name}, {"description", c.description}});
      return Result<std::string>(dump(json{{"commands", list}}));
    });
    add("version", "the uvio version", [](std::string_view) {
      return Result<std::string>(dump(json{{"version", UVIO_VERSION}}));
    });
    add("pid", "the process id", [](std::string_view) {
      return Result<std::string>(dump(json{{"pid", ::getpid()}}));
    });
    add("app", "the application's name", [this](std::string_view) {
      return Result<std::string>(dump(json{{"app", app}}));
    });
  }

  // One request line to one reply line; never throws.
  std::string answer(std::string_view line) {
    json request = json::parse(line, nullptr, false);
    if (request.is_discarded()) return error_reply("the request is not valid JSON");
    if (!request.is_object()) return error_reply("the request must be a JSON object");
    auto cmd_it = request.find("cmd");
    if (cmd_it == request.end() || !cmd_it->is_string())
      return error_reply("the request has no \"cmd\" string; try {\"cmd\":\"help\"}");
    std::string cmd = cmd_it->get<std::string>();
    Handler handler;
    {
      std::lock_guard lock(mutex);
      auto it = commands.find(cmd);
      if (it == commands.end())
        return error_reply(fmt::format("unknown command '{}'; {{\"cmd\":\"help\"}} lists them", cmd));
      handler = it->second.handler;
    }
    Result<std::string> reply = Status::error(EIO, "no reply");
    {
      std::lock_guard lock(running);
      // Removed between the lookup and here: its owner may be gone.
      {
        std::lock_guard commands_lock(mutex);
        if (commands.find(cmd) == commands.end()) return error_reply(fmt::format("command '{}' was removed", cmd));
      }
      try {
        reply = handler(line);
      } catch (const std::exception& e) {
        return error_reply(fmt::format("{}: {}", cmd, e.what()));
      }
    }
    if (!reply) return error_reply(reply.status().describe());
    json body = json::parse(reply.value(), nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      UVIO_LOG(Err, kLog, "the handler of '{}' returned something that is not a JSON object", cmd);
      return error_reply(fmt::format("{}: the handler's reply is not a JSON object", cmd));
    }
    json out = json{{"ok", true}};
    out.update(body);
    out["ok"] = true;
    return dump(out);
  }

  // Reads what the client sent and answers every complete line; false to drop it.
  bool serve(Client& c) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0) return false;
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return false;
      }
      c.buffer.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = c.buffer.find('\n')) != std::string::npos) {
        std::string line = c.buffer.substr(0, nl);
        c.buffer.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        std::string reply = answer(line) + "\n";
        if (!send_all(c.fd, reply, kReplyTimeoutMs)) return false;
      }
      if (c.buffer.size() > kMaxRequestBytes) {
        (void)send_all(c.fd, error_reply(fmt::format("request line longer than {} bytes", kMaxRequestBytes)) + "\n",
                       kReplyTimeoutMs);
        return false;
      }
    }
    return true;
  }

  void run() {
    for (;;) {
      std::vector<pollfd> fds;
      fds.push_back({stop_fd, POLLIN, 0});
      fds.push_back({listen_fd, static_cast<short>(clients.size() < kMaxClients ? POLLIN : 0), 0});
      for (const Client& c : clients) fds.push_back({c.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        UVIO_LOG(Err, kLog, "poll on {} failed: {}", path, std::strerror(errno));
        return;
      }
      if (fds[0].revents) return;
      // Clients first, by index from the back, so erasing keeps the pollfd match.
      for (size_t i = clients.size(); i-- > 0;) {
        if (fds[2 + i].revents == 0) continue;
        if (!serve(clients[i])) {
          ::close(clients[i].fd);
          clients.erase(clients.begin() + static_cast<ptrdiff_t>(i));
        }
      }
      if (fds[1].revents & POLLIN) {
        int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) clients.push_back(Client{fd, {}});
      }
    }
  }
};

Result<std::unique_ptr<ControlSocket>> ControlSocket::start(std::string path, std::string app_name) {
  sockaddr_un addr;
  UVIO_TRY(fill_addr(path, &addr));
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->app = std::move(app_name);

  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::error(EEXIST, fmt::format("'{}' exists and is not a socket; remove it or choose another "
                                               "--control-socket", path));
    // A live process answers; a socket file left by a process that died refuses.
    auto probe = control_request(path, R"({"cmd":"pid"})", 1000);
    if (probe) {
      std::string who = probe.value();
      json j = json::parse(who, nullptr, false);
      if (!j.is_discarded() && j.contains("pid")) who = fmt::format("process {}", dump(j["pid"]));
      return Status::error(EADDRINUSE, fmt::format("{} already answers on {}", who, path));
    }
    if (probe.status().code() != ECONNREFUSED)
      return Status::error(EADDRINUSE, fmt::format("something listens on {} but does not answer: {}", path,
                                                   probe.status().describe()));
    UVIO_LOG(Info, kLog, "replacing stale control socket {}", path);
    ::unlink(path.c_str());
  }

  impl->listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (impl->listen_fd < 0) return errno_status("socket(AF_UNIX)");
  if (::bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(impl->listen_fd);
    impl->listen_fd = -1;
    return Status::error(err, fmt::format("cannot bind the control socket {}", path));
  }
  if (::lstat(path.c_str(), &st) == 0) impl->inode = st.st_ino;
  // Owner only: the socket can stop and migrate the process.
  ::chmod(path.c_str(), 0600);
  if (::listen(impl->listen_fd, 16) != 0) return errno_status(fmt::format("listen on {}", path));
  impl->stop_fd = ::eventfd(0, EFD_CLOEXEC);
  if (impl->stop_fd < 0) return errno_status("eventfd");
  impl->add_builtins();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  UVIO_LOG(Info, kLog, "control socket at {}", path);
  return std::unique_ptr<ControlSocket>(new ControlSocket(std::move(impl)));
}

ControlSocket::ControlSocket(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlSocket::~ControlSocket() = default;

void ControlSocket::add(std::string cmd, std::string description, Handler handler) {
  impl_->add(std::move(cmd), std::move(description), std::move(handler));
}

void ControlSocket::remove(const std::string& cmd) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->commands.erase(cmd);
  }
  if (std::this_thread::get_id() != impl_->thread.get_id()) std::lock_guard wait(impl_->running);
}

const std::string& ControlSocket::path() const { return impl_->path; }

namespace {

// Whether a process of this user may create `dir` (or use it, when it exists).
bool usable_dir(const std::string& dir) {
  struct stat st{};
  if (::stat(dir.c_str(), &st) == 0) return S_ISDIR(st.st_mode) && ::access(dir.c_str(), W_OK | X_OK) == 0;
  size_t slash = dir.find_last_of('/');
  std::string parent = slash == 0 || slash == std::string::npos ? std::string("/") : dir.substr(0, slash);
  return ::access(parent.c_str(), W_OK | X_OK) == 0;
}

}  // namespace

std::string default_control_path(std::string_view file_prefix) {
  std::string leaf = fmt::format("/{}/control.sock", file_prefix);
  if (usable_dir("/run/uvio")) return "/run/uvio" + leaf;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] == '/') {
    std::string dir = std::string(xdg) + "/uvio";
    if (usable_dir(dir)) return dir + leaf;
  }
  return fmt::format("/tmp/uvio-{}{}", ::getuid(), leaf);
}

Result<std::string> control_request(const std::string& path, std::string_view request_json, int timeout_ms) {
  sockaddr_un addr;
  UVIO_TRY(fill_addr(path, &addr));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno_status("socket(AF_UNIX)");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  // A UNIX connect completes or fails at once; EAGAIN means the backlog is full.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return errno_status(fmt::format("no process answers on {}", path));
  std::string line(request_json);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.find('\n') != std::string::npos) return Status::error(EINVAL, "a request must be one line");
  line += '\n';
  int64_t deadline = now_ms() + timeout_ms;
  UVIO_TRY(send_all(fd, line, timeout_ms));
  std::string reply;
  char buf[4096];
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return Status::error(ETIMEDOUT, fmt::format("no reply on {} within {} ms", path, timeout_ms));
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno != EINTR) return errno_status("poll");
    if (rc <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno_status(fmt::format("reading the reply on {}", path));
    }
    if (n == 0) return Status::error(ECONNRESET, fmt::format("{} closed the connection without a reply", path));
    reply.append(buf, static_cast<size_t>(n));
    size_t nl = reply.find('\n');
    if (nl != std::string::npos) {
      reply.resize(nl);
      return reply;
    }
    if (reply.size() > kMaxReplyBytes)
      return Status::error(EMSGSIZE, fmt::format("reply on {} longer than {} bytes", path, kMaxReplyBytes));
  }
}

}  // namespace uvio
