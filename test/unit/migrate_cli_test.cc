// uvio-migrate run as a user runs it, against a control socket in this process whose
// migrate.* handlers step through a migration's phases as the engine reports them.
#include <uvio/control.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

extern char** environ;

namespace uvio {
namespace {

using nlohmann::json;

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::vector<std::string> out_lines() const {
    std::vector<std::string> lines;
    size_t start = 0, nl;
    while ((nl = out.find('\n', start)) != std::string::npos) {
      lines.push_back(out.substr(start, nl - start));
      start = nl + 1;
    }
    return lines;
  }
};

const char* migrate_binary() {
  const char* bin = std::getenv("UVIO_MIGRATE");
  return bin ? bin : "uvio-migrate";
}

// Runs uvio-migrate with `args`; on_line sees each stdout line as it comes, with the pid.
CliRun run_cli(const std::vector<std::string>& args, const std::function<void(const std::string&, pid_t)>& on_line = {}) {
  int out_pipe[2], err_pipe[2];
  EXPECT_EQ(::pipe2(out_pipe, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(err_pipe, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  std::vector<std::string> all = {migrate_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  CliRun r;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  EXPECT_EQ(rc, 0) << "cannot run " << argv[0];
  if (rc != 0) return r;
  bool out_open = true, err_open = true;
  size_t seen = 0;
  while (out_open || err_open) {
    pollfd fds[2] = {{out_open ? out_pipe[0] : -1, POLLIN, 0}, {err_open ? err_pipe[0] : -1, POLLIN, 0}};
    ::poll(fds, 2, -1);
    char buf[4096];
    if (fds[0].revents) {
      ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
      if (n <= 0) out_open = false;
      else r.out.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = r.out.find('\n', seen)) != std::string::npos) {
        if (on_line) on_line(r.out.substr(seen, nl - seen), pid);
        seen = nl + 1;
      }
    }
    if (fds[1].revents) {
      ssize_t n = ::read(err_pipe[0], buf, sizeof(buf));
      if (n <= 0) err_open = false;
      else r.err.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Runs uvio-migrate with its stdout on a pseudo-terminal, as in an interactive shell.
CliRun run_cli_on_terminal(const std::vector<std::string>& args) {
  CliRun r;
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  EXPECT_GE(master, 0);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) return r;
  int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  EXPECT_GE(slave, 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, slave, 1);
  std::vector<std::string> all = {migrate_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(slave);
  EXPECT_EQ(rc, 0);
  if (rc != 0) return r;
  char buf[4096];
  ssize_t n;
  // EIO once the child, the last holder of the terminal, has exited.
  while ((n = ::read(master, buf, sizeof(buf))) > 0) r.out.append(buf, static_cast<size_t>(n));
  ::close(master);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

json status(const char* phase, int pass, double sent_mib, double left_mib) {
  return {{"phase", phase},
          {"pass", pass},
          {"bytes_sent", static_cast<uint64_t>(sent_mib * 1048576)},
          {"bytes_remaining", static_cast<uint64_t>(left_mib * 1048576)},
          {"dirty_rate_bps", 45.2 * 1048576},
          {"bandwidth_bps", 1.9 * 1073741824},
          {"expected_downtime_ms", 6.3},
          {"downtime_ms", 0},
          {"total_ms", 0},
          {"message", ""}};
}

// What the engine's handlers answer, one step of `script` per migrate.status.
class FakeEngine {
 public:
  explicit FakeEngine(std::vector<json> script) : script_(std::move(script)) {
    path_ = "/tmp/uvio-migrate-cli-test-" + std::to_string(::getpid()) + ".sock";
    auto sock = ControlSocket::start(path_, "fake-app");
    EXPECT_TRUE(sock) << sock.status().describe();
    socket_ = std::move(sock.value());
    socket_->add("migrate.send", "fake", [this](std::string_view req) -> Result<std::string> {
      std::lock_guard lock(mu_);
      send_request_ = json::parse(req);
      if (!refuse_.empty()) return Status::error(EBUSY, refuse_);
      return std::string(R"({"started":true})");
    });
    socket_->add("migrate.status", "fake", [this](std::string_view) -> Result<std::string> {
      std::lock_guard lock(mu_);
      if (cancels_ > 0) return status("cancelled", 0, 0, 0).dump();
      json s = script_[std::min(step_, script_.size() - 1)];
      ++step_;
      return s.dump();
    });
    socket_->add("migrate.cancel", "fake", [this](std::string_view) -> Result<std::string> {
      std::lock_guard lock(mu_);
      ++cancels_;
      return std::string("{}");
    });
    socket_->add("runtime.info", "fake", [](std::string_view) -> Result<std::string> {
      return std::string(R"({"app":"fake-app","pid":77,"lcores":[0,1],"memory":{"total":67108864,"areas":1},)"
                         R"("devices":[{"name":"emu_nvme0","vendor_id":6966,"device_id":16,"class_code":67586,)"
                         R"("backend":"vfio-user"}]})");
    });
  }
  const std::string& path() const { return path_; }
  json send_request() {
    std::lock_guard lock(mu_);
    return send_request_;
  }
  int cancels() {
    std::lock_guard lock(mu_);
    return cancels_;
  }
  void refuse(std::string why) {
    std::lock_guard lock(mu_);
    refuse_ = std::move(why);
  }

 private:
  std::string path_;
  std::mutex mu_;
  std::vector<json> script_;
  size_t step_ = 0;
  json send_request_;
  int cancels_ = 0;
  std::string refuse_;
  // Last: destroyed first, so its thread has stopped before what the handlers touch goes.
  std::unique_ptr<ControlSocket> socket_;
};

TEST(MigrateCli, SendPrintsEachPassAndTheResult) {
  json done = status("completed", 2, 812.4, 0);
  done["downtime_ms"] = 7.9;
  done["total_ms"] = 1420;
  FakeEngine engine({status("setup", 0, 0, 0), status("precopy", 1, 512, 300), status("precopy", 1, 700, 100),
                     status("precopy", 2, 800, 12.1), status("stopcopy", 2, 812.4, 12.1), done});
  CliRun r = run_cli({"--socket", engine.path(), "--interval", "5", "send", "--to", "tcp:10.0.0.2:4444",
               "--max-downtime=50", "--max-passes", "7", "--force", "--token", "t0k"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out_lines(), (std::vector<std::string>{
                               "setting up",
                               "pass 1  sent 512.0 MiB  left 300.0 MiB  dirty 45.2 MiB/s  link 1.9 GiB/s  expected downtime 6.3 ms",
                               "pass 2  sent 800.0 MiB  left 12.1 MiB  dirty 45.2 MiB/s  link 1.9 GiB/s  expected downtime 6.3 ms",
                               "stop-copy  sent 812.4 MiB  left 12.1 MiB  dirty 45.2 MiB/s  link 1.9 GiB/s  expected downtime 6.3 ms",
                               "migrated: downtime 7.9 ms, total 1.42 s",
                           }));
  json req = engine.send_request();
  EXPECT_EQ(req["to"], "tcp:10.0.0.2:4444");
  EXPECT_EQ(req["max_downtime_ms"], 50);
  EXPECT_EQ(req["max_passes"], 7);
  EXPECT_EQ(req["force"], true);
  EXPECT_EQ(req["token"], "t0k");
}

TEST(MigrateCli, SendOnATerminalRewritesOneLine) {
  json done = status("completed", 2, 812.4, 0);
  done["downtime_ms"] = 7.9;
  done["total_ms"] = 1420;
  FakeEngine engine({status("precopy", 1, 512, 300), status("precopy", 2, 800, 12.1), done});
  CliRun r = run_cli_on_terminal({"--socket", engine.path(), "--interval", "5", "send", "--to", "tcp:h:1"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const std::string erase = "\r\033[K";
  size_t first = r.out.find(erase + "pass 1  sent 512.0 MiB");
  ASSERT_NE(first, std::string::npos) << r.out;
  // The next progress line overwrites this one: no newline between them.
  size_t second = r.out.find(erase + "pass 2  sent 800.0 MiB", first);
  ASSERT_NE(second, std::string::npos) << r.out;
  EXPECT_EQ(r.out.substr(first, second - first).find('\n'), std::string::npos);
  // The result gets a line of its own (the terminal shows "\n" as "\r\n").
  EXPECT_NE(r.out.find("expected downtime 6.3 ms\r\nmigrated: downtime 7.9 ms, total 1.42 s\r\n", second),
            std::string::npos) << r.out;
}

TEST(MigrateCli, SendDefaultsAndFailureReason) {
  json failed = status("failed", 1, 10, 0);
  failed["message"] = "destination refused: token mismatch";
  FakeEngine engine({status("precopy", 1, 10, 5), failed});
  CliRun r = run_cli({"send", "--socket", engine.path(), "--interval", "5", "--to", "unix:/tmp/dest.sock"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("migration failed: destination refused: token mismatch"), std::string::npos) << r.err;
  json req = engine.send_request();
  EXPECT_EQ(req["max_downtime_ms"], 300);
  EXPECT_EQ(req["max_passes"], 30);
  EXPECT_EQ(req["force"], false);
  EXPECT_EQ(req["token"], "");
}

TEST(MigrateCli, SendRefusedByTheProcess) {
  FakeEngine engine(std::vector<json>{status("idle", 0, 0, 0)});
  engine.refuse("a migration is running");
  CliRun r = run_cli({"--socket", engine.path(), "send", "--to", "tcp:h:1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot start the migration: a migration is running"), std::string::npos) << r.err;
}

TEST(MigrateCli, CtrlCCancelsAndWaitsForTheSource) {
  std::vector<json> script;
  for (int pass = 1; pass <= 100000; pass *= 2) script.push_back(status("precopy", pass, pass, 100));
  script.push_back(status("precopy", 100000, 1, 1));  // stays here until cancelled
  FakeEngine engine(script);
  bool signalled = false;
  CliRun r = run_cli({"--socket", engine.path(), "--interval", "5", "send", "--to", "tcp:h:1"},
              [&](const std::string& line, pid_t pid) {
                if (!signalled && line.starts_with("pass ")) {
                  ::kill(pid, SIGINT);
                  signalled = true;
                }
              });
  EXPECT_TRUE(signalled);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(engine.cancels(), 1);
  EXPECT_NE(r.err.find("cancelling"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("migration cancelled"), std::string::npos) << r.err;
}

TEST(MigrateCli, StatusInfoQueryCancel) {
  FakeEngine engine(std::vector<json>{status("precopy", 3, 812.4, 12.1)});
  CliRun human = run_cli({"--socket", engine.path(), "status"});
  EXPECT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("phase precopy"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("pass 3  sent 812.4 MiB  left 12.1 MiB"), std::string::npos) << human.out;

  CliRun js = run_cli({"--socket", engine.path(), "--json", "status"});
  EXPECT_EQ(js.exit_code, 0);
  json j = json::parse(js.out);
  EXPECT_EQ(j["phase"], "precopy");
  EXPECT_EQ(j["pass"], 3);

  CliRun info = run_cli({"--socket", engine.path(), "info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("app      fake-app"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("64.0 MiB in 1 area(s)"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("emu_nvme0  1b36:0010  class 010802  vfio-user"), std::string::npos) << info.out;
  CliRun info_json = run_cli({"--socket", engine.path(), "info", "--json"});
  EXPECT_EQ(json::parse(info_json.out)["pid"], 77);

  CliRun q = run_cli({"--socket", engine.path(), "query", "app"});
  EXPECT_EQ(q.exit_code, 0);
  EXPECT_EQ(json::parse(q.out)["app"], "fake-app");
  CliRun unknown = run_cli({"--socket", engine.path(), "query", "no.such", R"({"x":1})"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(json::parse(unknown.out)["ok"], false);

  CliRun cancel = run_cli({"--socket", engine.path(), "cancel"});
  EXPECT_EQ(cancel.exit_code, 0);
  EXPECT_EQ(engine.cancels(), 1);
}

TEST(MigrateCli, ProcessWithoutMigrationSaysSo) {
  std::string path = "/tmp/uvio-migrate-cli-test-plain-" + std::to_string(::getpid()) + ".sock";
  auto sock = ControlSocket::start(path, "plain-app");
  ASSERT_TRUE(sock);
  for (const char* cmd : {"status", "cancel"}) {
    CliRun r = run_cli({"--socket", path, cmd});
    EXPECT_EQ(r.exit_code, 1) << cmd;
    EXPECT_NE(r.err.find("cannot migrate"), std::string::npos) << r.err;
  }
  CliRun send = run_cli({"--socket", path, "send", "--to", "tcp:h:1"});
  EXPECT_EQ(send.exit_code, 1);
  EXPECT_NE(send.err.find("cannot migrate"), std::string::npos) << send.err;
}

TEST(MigrateCli, BadUsageIsOneLineAndExitTwo) {
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"launch"},
      {"send"},
      {"send", "--to"},
      {"send", "--to", "tcp:h:1", "--max-passes", "many"},
      {"send", "--to", "tcp:h:1", "--max-passes", "0"},
      {"send", "--to", "tcp:h:1", "--force=yes"},
      {"status", "--to", "tcp:h:1"},
      {"status", "extra"},
      {"query"},
      {"query", "app", "[1]"},
      {"--colour", "status"},
      {"--socket", "/x", "--file-prefix", "p", "status"},
      {"--file-prefix", "a/b", "status"},
  };
  for (const auto& args : bad) {
    CliRun r = run_cli(args);
    std::string shown;
    for (auto& a : args) shown += a + " ";
    EXPECT_EQ(r.exit_code, 2) << shown;
    EXPECT_TRUE(r.out.empty()) << shown;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << shown << ": " << r.err;
  }
}

TEST(MigrateCli, HelpTellsTheCommands) {
  CliRun r = run_cli({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"status", "send --to", "--max-downtime", "--max-passes", "--force", "--token", "cancel",
                           "info", "query", "--file-prefix", "--socket", "Ctrl-C"})
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
}

TEST(MigrateCli, NoProcessSaysWhereItLooked) {
  std::string path = "/tmp/uvio-migrate-cli-test-absent-" + std::to_string(::getpid()) + ".sock";
  CliRun r = run_cli({"--socket", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;

  std::string prefix = "nosuchprefix" + std::to_string(::getpid());
  CliRun by_prefix = run_cli({"--file-prefix", prefix, "send", "--to", "tcp:h:1"});
  EXPECT_EQ(by_prefix.exit_code, 1);
  EXPECT_NE(by_prefix.err.find(default_control_path(prefix)), std::string::npos) << by_prefix.err;
  EXPECT_NE(by_prefix.err.find("--file-prefix"), std::string::npos) << by_prefix.err;
}

}  // namespace
}  // namespace uvio
