// uvio-migrate: starts, watches and cancels the live migration of a running uvio
// process, through that process's control socket.
#include <uvio/control.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using nlohmann::json;

constexpr const char* kUsage = R"(Usage: uvio-migrate [options] COMMAND [ARGS]

Talks to a running uvio process through its control socket.

Commands:
  status                 the process's migration: phase, pass, bytes sent and left
  send --to ADDR         live-migrate the process to a destination started with
                         --migrate-listen=ADDR; ADDR is tcp:HOST:PORT, tcp:[V6]:PORT
                         or unix:PATH. Prints progress until the end; Ctrl-C cancels
                         the migration and waits until the source has resumed.
       --max-downtime MS the pause the last copy must fit (default 300)
       --max-passes N    pre-copy passes before giving up on convergence (default 30)
       --force           stop and copy after --max-passes even if it does not fit
       --token TEXT      the destination's --migrate-token
  cancel                 cancel the running migration; the source goes on
  info                   the application, its lcores, memory and devices
  query CMD [JSON]       send {"cmd":CMD, ...JSON} and print the raw reply

Options:
  --file-prefix NAME     the process started with --file-prefix NAME (default uvio);
                         its socket is )";
constexpr const char* kUsageTail = R"(
                         (under $XDG_RUNTIME_DIR/uvio or /tmp/uvio-UID when /run/uvio
                         is not writable, as the process itself chose)
  --socket PATH          the process started with --control-socket PATH
  --json                 print replies as JSON (status, info)
  --interval MS          how often send reads progress (default 200)
  -h, --help             this text

Exit status: 0 done, 1 failed (no process, refused, migration failed or cancelled),
2 bad usage.
)";

struct Options {
  std::string file_prefix = "uvio";
  bool file_prefix_given = false;
  std::string socket;
  bool json_output = false;
  int interval_ms = 200;
  std::string command;
  std::vector<std::string> args;  // positional arguments after the command
  // send
  std::string to;
  uint32_t max_downtime_ms = 300;
  uint32_t max_passes = 30;
  bool force = false;
  std::string token;
  bool send_options_given = false;
};

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "uvio-migrate: %s (see uvio-migrate --help)\n", why.c_str());
  std::exit(2);
}

bool parse_u32(std::string_view text, uint32_t* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::printf("%s%s%s", kUsage, uvio::default_control_path("NAME").c_str(), kUsageTail);
      std::exit(0);
    }
    if (!arg.starts_with("--") || arg == "--") {
      if (o.command.empty()) o.command = std::string(arg);
      else o.args.emplace_back(arg);
      continue;
    }
    std::string_view name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto flag = [&] {
      if (has_value) usage_error(fmt::format("--{} takes no value", name));
    };
    auto take = [&]() -> std::string_view {
      if (!has_value) {
        if (i + 1 >= argc) usage_error(fmt::format("--{} needs a value", name));
        value = argv[++i];
      }
      return value;
    };
    auto number = [&](uint32_t* out) {
      std::string_view v = take();
      if (!parse_u32(v, out)) usage_error(fmt::format("--{} '{}' is not a number", name, v));
    };
    if (name == "file-prefix") {
      o.file_prefix = std::string(take());
      o.file_prefix_given = true;
      if (o.file_prefix.empty() || o.file_prefix.find('/') != std::string::npos)
        usage_error("--file-prefix must be a non-empty name without '/'");
    } else if (name == "socket") {
      o.socket = std::string(take());
      if (o.socket.empty()) usage_error("--socket needs a path");
    } else if (name == "json") {
      flag();
      o.json_output = true;
    } else if (name == "interval") {
      uint32_t ms;
      number(&ms);
      if (ms == 0 || ms > 60000) usage_error("--interval must be 1..60000 ms");
      o.interval_ms = static_cast<int>(ms);
    } else if (name == "to") {
      o.to = std::string(take());
      o.send_options_given = true;
    } else if (name == "max-downtime") {
      number(&o.max_downtime_ms);
      o.send_options_given = true;
    } else if (name == "max-passes") {
      number(&o.max_passes);
      if (o.max_passes == 0) usage_error("--max-passes must be at least 1");
      o.send_options_given = true;
    } else if (name == "force") {
      flag();
      o.force = true;
      o.send_options_given = true;
    } else if (name == "token") {
      o.token = std::string(take());
      o.send_options_given = true;
    } else {
      usage_error(fmt::format("unknown option --{}", name));
    }
  }
  if (o.command.empty()) usage_error("no command given (status, send, cancel, info or query)");
  const std::string& c = o.command;
  if (c != "status" && c != "send" && c != "cancel" && c != "info" && c != "query")
    usage_error(fmt::format("unknown command '{}' (status, send, cancel, info or query)", c));
  if (c != "send" && o.send_options_given) usage_error(fmt::format("--to, --max-downtime, --max-passes, --force "
                                                                   "and --token go with send, not {}", c));
  if (c == "send" && o.to.empty()) usage_error("send needs --to tcp:HOST:PORT or --to unix:PATH");
  if (c == "query") {
    if (o.args.empty() || o.args.size() > 2) usage_error("query takes CMD and optionally one JSON object");
  } else if (!o.args.empty()) {
    usage_error(fmt::format("unexpected argument '{}'", o.args[0]));
  }
  if (!o.socket.empty() && o.file_prefix_given) usage_error("--socket and --file-prefix exclude each other");
  return o;
}

std::string socket_path(const Options& o) {
  return o.socket.empty() ? uvio::default_control_path(o.file_prefix) : o.socket;
}

// One request; on a failure to reach the process, a line saying where it looked.
std::optional<json> request(const Options& o, const json& req, bool quiet_if_gone = false) {
  std::string path = socket_path(o);
  auto reply = uvio::control_request(path, req.dump());
  if (!reply) {
    int err = reply.status().code();
    if (quiet_if_gone && (err == ECONNREFUSED || err == ENOENT)) return std::nullopt;
    if (err == ECONNREFUSED || err == ENOENT) {
      std::fprintf(stderr, "uvio-migrate: no uvio process answers on %s (%s); %s\n", path.c_str(), std::strerror(err),
                   o.socket.empty() ? "--file-prefix NAME picks the process started with that prefix, --socket PATH "
                                      "one started with --control-socket PATH"
                                    : "is the process running, with --control-socket at this path?");
    } else {
      std::fprintf(stderr, "uvio-migrate: %s: %s\n", path.c_str(), reply.status().describe().c_str());
    }
    return std::nullopt;
  }
  json j = json::parse(reply.value(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    std::fprintf(stderr, "uvio-migrate: %s replied with something that is not a JSON object\n", path.c_str());
    return std::nullopt;
  }
  return j;
}

bool reply_ok(const json& j) { return j.value("ok", false); }

std::string reply_error(const json& j) {
  auto it = j.find("error");
  std::string why = it != j.end() && it->is_string() ? it->get<std::string>() : std::string("no reason given");
  // An application that never created a mig::Migration answers no migrate.* command.
  if (why.starts_with("unknown command 'migrate."))
    return "this application cannot migrate: it runs no migration engine (no migrate.* commands)";
  return why;
}

// The reply to `req` when the process answered and accepted it; otherwise says why on
// stderr (after `failing`, when given) and returns nothing.
std::optional<json> accepted(const Options& o, const json& req, const char* failing = nullptr) {
  auto r = request(o, req);
  if (!r) return std::nullopt;
  if (!reply_ok(*r)) {
    std::fprintf(stderr, "uvio-migrate: %s%s\n", failing ? failing : "", reply_error(*r).c_str());
    return std::nullopt;
  }
  return r;
}

std::string bytes_text(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

double num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string phase_of(const json& j) {
  auto it = j.find("phase");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string("unknown");
}

std::string progress_line(const json& s) {
  std::string phase = phase_of(s);
  std::string figures = fmt::format("sent {}  left {}  dirty {}/s  link {}/s  expected downtime {:.1f} ms",
                                    bytes_text(num(s, "bytes_sent")), bytes_text(num(s, "bytes_remaining")),
                                    bytes_text(num(s, "dirty_rate_bps")), bytes_text(num(s, "bandwidth_bps")),
                                    num(s, "expected_downtime_ms"));
  if (phase == "precopy") return fmt::format("pass {}  {}", static_cast<uint64_t>(num(s, "pass")), figures);
  if (phase == "stopcopy") return fmt::format("stop-copy  {}", figures);
  if (phase == "setup") return "setting up";
  return phase;
}

bool terminal_phase(const std::string& p) { return p == "completed" || p == "failed" || p == "cancelled"; }

int cmd_status(const Options& o) {
  auto r = accepted(o, {{"cmd", "migrate.status"}});
  if (!r) return 1;
  if (o.json_output) {
    std::printf("%s\n", r->dump().c_str());
    return 0;
  }
  std::string phase = phase_of(*r);
  std::printf("phase %s\n", phase.c_str());
  if (phase == "precopy" || phase == "stopcopy") std::printf("%s\n", progress_line(*r).c_str());
  if (phase == "completed")
    std::printf("migrated: downtime %.1f ms, total %.2f s\n", num(*r, "downtime_ms"), num(*r, "total_ms") / 1000);
  std::string message = r->value("message", "");
  if (!message.empty()) std::printf("%s\n", message.c_str());
  return 0;
}

volatile sig_atomic_t interrupted = 0;
void on_sigint(int) { interrupted = 1; }

void sleep_ms(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  ::nanosleep(&ts, nullptr);  // a signal ends it early, which is what Ctrl-C wants
}

int cmd_send(const Options& o) {
  json req = {{"cmd", "migrate.send"},       {"to", o.to},         {"max_downtime_ms", o.max_downtime_ms},
              {"max_passes", o.max_passes}, {"force", o.force},   {"token", o.token}};
  // Ctrl-C from here on cancels the migration instead of leaving it running unwatched.
  struct sigaction sa{};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);

  auto r = accepted(o, req, "cannot start the migration: ");
  if (!r) return 1;
  const bool tty = ::isatty(STDOUT_FILENO);
  bool cancel_sent = false;
  std::string last_phase;
  int64_t last_pass = -1;
  bool line_open = false;  // a terminal line waiting to be overwritten
  auto end_line = [&] {
    if (line_open) std::printf("\n");
    line_open = false;
  };
  for (;;) {
    if (interrupted && !cancel_sent) {
      end_line();
      std::fprintf(stderr, "uvio-migrate: cancelling; waiting for the source to resume\n");
      auto c = request(o, {{"cmd", "migrate.cancel"}});
      if (c && !reply_ok(*c))
        std::fprintf(stderr, "uvio-migrate: cancel refused: %s\n", reply_error(*c).c_str());
      cancel_sent = true;
      // A second Ctrl-C leaves at once.
      signal(SIGINT, SIG_DFL);
    }
    auto s = request(o, {{"cmd", "migrate.status"}}, /*quiet_if_gone=*/true);
    if (!s) {
      end_line();
      std::string path = socket_path(o);
      if (last_phase == "stopcopy")
        std::fprintf(stderr, "uvio-migrate: the source stopped answering on %s during stop-copy before its final "
                             "status was read; a source exits once the destination has taken over: check the "
                             "destination\n", path.c_str());
      else
        std::fprintf(stderr, "uvio-migrate: the source stopped answering on %s during %s\n", path.c_str(),
                     last_phase.empty() ? "the migration" : last_phase.c_str());
      return 1;
    }
    if (!reply_ok(*s)) {
      end_line();
      std::fprintf(stderr, "uvio-migrate: migrate.status: %s\n", reply_error(*s).c_str());
      return 1;
    }
    std::string phase = phase_of(*s);
    if (terminal_phase(phase)) {
      end_line();
      std::string message = s->value("message", "");
      if (phase == "completed") {
        std::printf("migrated: downtime %.1f ms, total %.2f s\n", num(*s, "downtime_ms"), num(*s, "total_ms") / 1000);
        return 0;
      }
      std::fprintf(stderr, "migration %s%s%s\n", phase.c_str(), message.empty() ? "" : ": ", message.c_str());
      return 1;
    }
    if (cancel_sent) {
      // Waiting for the source to report it went back to running.
    } else if (tty) {
      std::printf("\r\033[K%s", progress_line(*s).c_str());
      line_open = true;
    } else {
      int64_t pass = static_cast<int64_t>(num(*s, "pass"));
      bool new_step = phase != last_phase || (phase == "precopy" && pass != last_pass);
      if (new_step && phase != "idle") std::printf("%s\n", progress_line(*s).c_str());
      last_pass = pass;
    }
    last_phase = phase;
    std::fflush(stdout);
    // Stop-copy is short and the source exits after it: look more often.
    sleep_ms(phase == "stopcopy" ? std::min(o.interval_ms, 20) : o.interval_ms);
  }
}

int cmd_cancel(const Options& o) {
  auto r = accepted(o, {{"cmd", "migrate.cancel"}});
  if (!r) return 1;
  std::printf("cancel requested\n");
  return 0;
}

int cmd_info(const Options& o) {
  auto r = accepted(o, {{"cmd", "runtime.info"}});
  if (!r) return 1;
  if (o.json_output) {
    std::printf("%s\n", r->dump().c_str());
    return 0;
  }
  std::printf("app      %s\n", r->value("app", "").c_str());
  std::printf("pid      %s\n", (*r)["pid"].dump().c_str());
  std::printf("lcores   %s\n", (*r)["lcores"].dump().c_str());
  const json& mem = (*r)["memory"];
  std::printf("memory   %s in %s area(s)\n", bytes_text(num(mem, "total")).c_str(), mem.value("areas", json(0)).dump().c_str());
  const json& devs = (*r)["devices"];
  if (!devs.is_array() || devs.empty()) std::printf("devices  none\n");
  else
    for (const json& d : devs)
      std::printf("device   %s  %04x:%04x  class %06x  %s\n", d.value("name", "").c_str(),
                  d.value("vendor_id", 0u), d.value("device_id", 0u), d.value("class_code", 0u),
                  d.value("backend", "").c_str());
  return 0;
}

int cmd_query(const Options& o) {
  json req = json::object();
  if (o.args.size() == 2) {
    req = json::parse(o.args[1], nullptr, false);
    if (req.is_discarded() || !req.is_object()) usage_error("query's JSON argument must be one JSON object");
  }
  req["cmd"] = o.args[0];
  auto r = request(o, req);
  if (!r) return 1;
  std::printf("%s\n", r->dump().c_str());
  return reply_ok(*r) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  if (o.command == "status") return cmd_status(o);
  if (o.command == "send") return cmd_send(o);
  if (o.command == "cancel") return cmd_cancel(o);
  if (o.command == "info") return cmd_info(o);
  return cmd_query(o);
}
