// The control socket: request and reply, bad requests that leave it serving, a path
// another process holds, a stale path, and runtimes that share a --file-prefix.
#include <uvio/control.h>
#include <uvio/eal.h>
#include <uvio/runtime.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace uvio {
namespace {

using nlohmann::json;

std::string temp_path(const char* name) {
  return "/tmp/uvio-control-test-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

json ask(const std::string& path, const std::string& request) {
  auto reply = control_request(path, request, 5000);
  EXPECT_TRUE(reply) << reply.status().describe();
  if (!reply) return json();
  json j = json::parse(reply.value(), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << reply.value();
  return j;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// A raw connection for what control_request does not do: many lines, huge lines.
int raw_connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

std::string read_line(int fd) {
  std::string out;
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
    if (c == '\n') return out;
    out += c;
  }
  return out;
}

TEST(ControlSocket, BuiltinsAnswer) {
  std::string path = temp_path("builtins");
  auto sock = ControlSocket::start(path, "control-test");
  ASSERT_TRUE(sock) << sock.status().describe();
  EXPECT_EQ((*sock)->path(), path);

  json pid = ask(path, R"({"cmd":"pid"})");
  EXPECT_EQ(pid["ok"], true);
  EXPECT_EQ(pid["pid"], ::getpid());
  json app = ask(path, R"({"cmd":"app"})");
  EXPECT_EQ(app["app"], "control-test");
  json version = ask(path, R"({"cmd":"version"})");
  EXPECT_EQ(version["version"], UVIO_VERSION);
  json help = ask(path, R"({"cmd":"help"})");
  ASSERT_TRUE(help["commands"].is_array());
  std::vector<std::string> names;
  for (auto& c : help["commands"]) {
    names.push_back(c["cmd"]);
    EXPECT_FALSE(c["description"].get<std::string>().empty());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"app", "help", "pid", "version"}));
}

TEST(ControlSocket, HandlersGetTheRequestAndShapeTheReply) {
  std::string path = temp_path("handlers");
  auto sock = ControlSocket::start(path, "t");
  ASSERT_TRUE(sock);
  (*sock)->add("echo", "returns its argument", [](std::string_view req) -> Result<std::string> {
    json j = json::parse(req);
    return json{{"said", j.at("text")}}.dump();
  });
  (*sock)->add("fail", "always fails", [](std::string_view) -> Result<std::string> {
    return Status::error(EBUSY, "a migration is running");
  });
  (*sock)->add("throw", "throws", [](std::string_view req) -> Result<std::string> {
    return json::parse(req).at("missing").dump();  // json::out_of_range
  });
  (*sock)->add("notobject", "returns an array", [](std::string_view) -> Result<std::string> {
    return std::string("[1,2]");
  });
  (*sock)->add("liar", "says it is not ok", [](std::string_view) -> Result<std::string> {
    return std::string(R"({"ok":false,"x":1})");
  });

  json echo = ask(path, R"({"cmd":"echo","text":"héllo"})");
  EXPECT_EQ(echo["ok"], true);
  EXPECT_EQ(echo["said"], "héllo");
  json fail = ask(path, R"({"cmd":"fail"})");
  EXPECT_EQ(fail["ok"], false);
  EXPECT_NE(fail["error"].get<std::string>().find("a migration is running"), std::string::npos);
  json thrown = ask(path, R"({"cmd":"throw"})");
  EXPECT_EQ(thrown["ok"], false);
  EXPECT_NE(thrown["error"].get<std::string>().find("throw:"), std::string::npos);
  EXPECT_EQ(ask(path, R"({"cmd":"notobject"})")["ok"], false);
  json liar = ask(path, R"({"cmd":"liar"})");
  EXPECT_EQ(liar["ok"], true);
  EXPECT_EQ(liar["x"], 1);

  (*sock)->remove("echo");
  json gone = ask(path, R"({"cmd":"echo","text":"x"})");
  EXPECT_EQ(gone["ok"], false);
}

TEST(ControlSocket, BadRequestsGetAnErrorAndTheSocketGoesOn) {
  std::string path = temp_path("bad");
  auto sock = ControlSocket::start(path, "t");
  ASSERT_TRUE(sock);
  for (const char* bad : {"{not json", "[1,2,3]", "\"cmd\"", R"({"command":"pid"})", R"({"cmd":7})",
                          R"({"cmd":"no.such"})"}) {
    json r = ask(path, bad);
    EXPECT_EQ(r["ok"], false) << bad;
    EXPECT_TRUE(r["error"].is_string()) << bad;
  }
  EXPECT_NE(ask(path, R"({"cmd":"no.such"})")["error"].get<std::string>().find("no.such"), std::string::npos);
  // Bytes that are not UTF-8 in an unknown command's name still give a JSON reply.
  json binary = ask(path, "{\"cmd\":\"\\u00ff\"}");
  EXPECT_EQ(binary["ok"], false);
  // Deep nesting within the line limit neither overflows the stack nor stops the socket.
  std::string deep = R"({"cmd":"pid","x":)" + std::string(30000, '[') + std::string(30000, ']') + "}";
  EXPECT_EQ(ask(path, deep)["ok"], true);
  std::string unclosed = R"({"cmd":"pid","x":)" + std::string(60000, '[');
  EXPECT_EQ(ask(path, unclosed)["ok"], false);
  EXPECT_EQ(ask(path, R"({"cmd":"pid"})")["ok"], true);
}

TEST(ControlSocket, ManyLinesOnOneConnectionAndClientsOneAfterAnother) {
  std::string path = temp_path("lines");
  auto sock = ControlSocket::start(path, "t");
  ASSERT_TRUE(sock);
  int fd = raw_connect(path);
  std::string two = "{\"cmd\":\"pid\"}\n\n{\"cmd\":\"app\"}\r\n";
  ASSERT_EQ(::send(fd, two.data(), two.size(), MSG_NOSIGNAL), static_cast<ssize_t>(two.size()));
  EXPECT_EQ(json::parse(read_line(fd))["pid"], ::getpid());
  EXPECT_EQ(json::parse(read_line(fd))["app"], "t");
  // A second client is served while the first stays connected.
  EXPECT_EQ(ask(path, R"({"cmd":"app"})")["app"], "t");
  ::close(fd);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ask(path, R"({"cmd":"pid"})")["ok"], true);
}

TEST(ControlSocket, OverlongLineIsRefusedAndTheSocketGoesOn) {
  std::string path = temp_path("long");
  auto sock = ControlSocket::start(path, "t");
  ASSERT_TRUE(sock);
  int fd = raw_connect(path);
  std::string huge = "{\"cmd\":\"" + std::string(70 << 10, 'x');
  std::thread sender([&] { ::send(fd, huge.data(), huge.size(), MSG_NOSIGNAL); });
  json r = json::parse(read_line(fd));
  sender.join();
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("longer than"), std::string::npos);
  ::close(fd);
  EXPECT_EQ(ask(path, R"({"cmd":"pid"})")["ok"], true);
}

TEST(ControlSocket, BusyPathRefusedStalePathReplacedFileRemoved) {
  std::string path = temp_path("busy");
  {
    auto first = ControlSocket::start(path, "first");
    ASSERT_TRUE(first);
    auto second = ControlSocket::start(path, "second");
    ASSERT_FALSE(second);
    EXPECT_EQ(second.status().code(), EADDRINUSE);
    EXPECT_NE(second.status().message().find(std::to_string(::getpid())), std::string::npos)
        << second.status().message();
    EXPECT_EQ(ask(path, R"({"cmd":"app"})")["app"], "first");
  }
  EXPECT_FALSE(exists(path)) << "the socket file goes with the socket";

  // What a killed process leaves: a socket file nobody listens on.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
  EXPECT_EQ(control_request(path, R"({"cmd":"pid"})").status().code(), ECONNREFUSED);
  auto replaced = ControlSocket::start(path, "new");
  ASSERT_TRUE(replaced) << replaced.status().describe();
  EXPECT_EQ(ask(path, R"({"cmd":"app"})")["app"], "new");
  replaced.value().reset();

  std::string plain = temp_path("plainfile");
  FILE* f = std::fopen(plain.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_EQ(ControlSocket::start(plain, "t").status().code(), EEXIST);
  EXPECT_TRUE(exists(plain)) << "a file that is not a socket is never removed";
  ::unlink(plain.c_str());
}

TEST(ControlSocket, ClientErrors) {
  EXPECT_EQ(control_request(temp_path("absent"), R"({"cmd":"pid"})").status().code(), ENOENT);
  EXPECT_EQ(control_request("/tmp/" + std::string(200, 'x'), "{}").status().code(), ENAMETOOLONG);
  std::string path = temp_path("multiline");
  auto sock = ControlSocket::start(path, "t");
  ASSERT_TRUE(sock);
  EXPECT_EQ(control_request(path, "{\"cmd\":\n\"pid\"}").status().code(), EINVAL);
  EXPECT_TRUE(control_request(path, "{\"cmd\":\"pid\"}\n"));
}

TEST(ControlSocket, DefaultPathNamesThePrefix) {
  std::string p = default_control_path("myapp");
  EXPECT_TRUE(p.ends_with("/myapp/control.sock")) << p;
  EXPECT_TRUE(p.starts_with("/run/uvio/") || p.find("/uvio/") != std::string::npos ||
              p.starts_with("/tmp/uvio-")) << p;
}

TEST(ControlSocket, RemoveWaitsForARunningHandler) {
  std::string path = temp_path("remove");
  auto sock = ControlSocket::start(path, "t");
  ASSERT_TRUE(sock);
  std::atomic<bool> entered{false}, release{false};
  auto state = std::make_unique<int>(41);
  int* captured = state.get();
  (*sock)->add("slow", "waits", [&, captured](std::string_view) -> Result<std::string> {
    entered = true;
    while (!release) std::this_thread::yield();
    return json{{"value", *captured + 1}}.dump();
  });
  std::thread client([&] { EXPECT_EQ(ask(path, R"({"cmd":"slow"})")["value"], 42); });
  while (!entered) std::this_thread::yield();
  std::thread remover([&] {
    (*sock)->remove("slow");
    state.reset();  // safe only once the handler has returned
  });
  release = true;
  remover.join();
  client.join();
  EXPECT_EQ(state, nullptr);
}

// Runtimes, as applications start them.
int first_cpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof(set), &set);
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) return c;
  return 0;
}

Result<std::unique_ptr<Runtime>> start_runtime(const std::string& prefix, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"control-test-app", "--no-huge", "-m", "8", "-l", std::to_string(first_cpu()),
                                   "--file-prefix", prefix, "--log-level", "err"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  auto cfg = eal_parse(static_cast<int>(argv.size()), argv.data());
  if (!cfg) return cfg.status();
  EXPECT_EQ(cfg->app_name, "control-test-app");
  return Runtime::start(*cfg);
}

void remove_default_dirs(const std::string& prefix) {
  std::string path = default_control_path(prefix);
  ::rmdir(path.substr(0, path.find_last_of('/')).c_str());
}

TEST(RuntimeControl, RuntimeInfoAndSharedPrefix) {
  std::string prefix = "ctltest" + std::to_string(::getpid());
  auto first = start_runtime(prefix);
  ASSERT_TRUE(first) << first.status().describe();
  ControlSocket* ctl = (*first)->control();
  ASSERT_NE(ctl, nullptr);
  EXPECT_EQ(ctl->path(), default_control_path(prefix));
  struct stat st;
  ASSERT_EQ(::stat(ctl->path().substr(0, ctl->path().find_last_of('/')).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  json info = ask(ctl->path(), R"({"cmd":"runtime.info"})");
  EXPECT_EQ(info["ok"], true);
  EXPECT_EQ(info["app"], "control-test-app");
  EXPECT_EQ(info["pid"], ::getpid());
  EXPECT_EQ(info["lcores"], json::array({first_cpu()}));
  EXPECT_EQ(info["memory"]["total"], (*first)->memory().stats().total);
  EXPECT_GE(info["memory"]["areas"].get<int>(), 1);
  EXPECT_TRUE(info["devices"].is_array());
  EXPECT_TRUE(info["devices"].empty());

  // The same prefix again: it runs, without a socket, and the first keeps its own.
  auto second = start_runtime(prefix);
  ASSERT_TRUE(second) << second.status().describe();
  EXPECT_EQ((*second)->control(), nullptr);
  EXPECT_EQ(ask(default_control_path(prefix), R"({"cmd":"pid"})")["ok"], true);
  second.value().reset();
  EXPECT_TRUE(exists(default_control_path(prefix)));
  first.value().reset();
  EXPECT_FALSE(exists(default_control_path(prefix)));
  remove_default_dirs(prefix);
}

TEST(RuntimeControl, ExplicitPathBusyIsAStartupErrorAndNoneMeansNone) {
  std::string path = temp_path("runtime-explicit");
  std::string prefix = "ctltestx" + std::to_string(::getpid());
  auto first = start_runtime(prefix, {"--control-socket", path});
  ASSERT_TRUE(first) << first.status().describe();
  ASSERT_NE((*first)->control(), nullptr);
  EXPECT_EQ((*first)->control()->path(), path);
  auto second = start_runtime(prefix + "b", {"--control-socket", path});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.status().code(), EADDRINUSE);
  EXPECT_NE(second.status().message().find("--control-socket"), std::string::npos);
  auto none = start_runtime(prefix + "c", {"--control-socket", "none"});
  ASSERT_TRUE(none);
  EXPECT_EQ((*none)->control(), nullptr);
  EXPECT_FALSE(exists(default_control_path(prefix + "c")));
}

}  // namespace
}  // namespace uvio
