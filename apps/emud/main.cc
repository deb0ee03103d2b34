// uvio-emud: serves emulated PCI devices to vfio-user clients, one socket per device.
#include <uvio/log.h>

#include "emu/registry.h"
#include "emu/server.h"

#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using uvio::emu::ModelRegistry;

constexpr int kExitBadOptions = 2;

void usage(std::FILE* out) {
  fmt::print(out,
             "Usage: uvio-emud [--<device> SOCKET[,key=value...]]...\n"
             "Serves each device to one vfio-user client at a time on a UNIX socket.\n\n"
             "Devices:\n");
  auto types = ModelRegistry::global().list();
  if (types.empty()) fmt::print(out, "  (none are built into this binary)\n");
  for (const auto* t : types) fmt::print(out, "  --{:<10} {}\n", t->option, t->summary);
  fmt::print(out,
             "\nOther options:\n"
             "  --log-level LEVEL  emerg..debug or 1..8\n"
             "  --help             this text\n\n"
             "Example: uvio-emud --nvme /tmp/nvme0.sock,size=64M\n"
             "Stop with SIGINT or SIGTERM.\n");
}

int bad_option(const std::string& why) {
  fmt::print(stderr, "uvio-emud: {}\nTry 'uvio-emud --help'.\n", why);
  return kExitBadOptions;
}

struct Wanted {
  const uvio::emu::ModelType* type;
  uvio::emu::DeviceSpec spec;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<Wanted> wanted;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    if (arg.rfind("--", 0) != 0) return bad_option(fmt::format("unexpected argument '{}'", arg));
    std::string name = arg.substr(2), value;
    size_t eq = name.find('=');
    bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[i + 1];
    } else {
      return bad_option(fmt::format("--{} needs a value", name));
    }
    if (!inline_value) ++i;
    if (name == "log-level") {
      uvio::log::Level level;
      if (!uvio::log::parse_level(value, &level)) return bad_option(fmt::format("unknown log level '{}'", value));
      uvio::log::set_global_level(level);
      continue;
    }
    const auto* type = ModelRegistry::global().find(name);
    if (!type) return bad_option(fmt::format("unknown option --{}", name));
    auto spec = uvio::emu::parse_device_spec(value);
    if (!spec) return bad_option(fmt::format("--{}: {}", name, spec.status().message()));
    for (const auto& w : wanted)
      if (w.spec.socket_path == spec->socket_path)
        return bad_option(fmt::format("socket '{}' is given to two devices", spec->socket_path));
    wanted.push_back({type, std::move(*spec)});
  }
  if (wanted.empty()) return bad_option("no device to serve");

  // Created threads inherit this mask, so only sigwait below sees the signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<std::unique_ptr<uvio::emu::Server>> servers;
  for (auto& w : wanted) {
    auto model = w.type->create(w.spec.args);
    if (!model) return bad_option(fmt::format("--{} {}: {}", w.type->option, w.spec.socket_path,
                                              model.status().message()));
    auto server = uvio::emu::Server::create(std::move(*model));
    if (!server) {
      fmt::print(stderr, "uvio-emud: {}: {}\n", w.spec.socket_path, server.status().describe());
      return 1;
    }
    uvio::Status st = (*server)->listen(w.spec.socket_path);
    if (!st) {
      fmt::print(stderr, "uvio-emud: {}\n", st.describe());
      return 1;
    }
    fmt::print("uvio-emud: serving {} on {}\n", w.type->name, w.spec.socket_path);
    servers.push_back(std::move(*server));
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  fmt::print("uvio-emud: {} received, stopping\n", strsignal(sig));
  for (auto& s : servers) s->stop();
  return 0;
}
