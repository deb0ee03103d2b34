// The runtime a uvio application starts from its EAL options: memory, lcores, the
// interrupt loop, services, and the devices named with -a and --vdev.
#pragma once

#include <uvio/eal.h>
#include <uvio/intr.h>
#include <uvio/lcore.h>
#include <uvio/mem.h>

#include <memory>
#include <string_view>

namespace uvio {

class Runtime {
 public:
  static Result<std::unique_ptr<Runtime>> start(const EalConfig& cfg);
  ~Runtime();

  const EalConfig& config() const { return cfg_; }
  Memory& memory() { return *memory_; }
  LcoreSet& lcores() { return *lcores_; }
  InterruptLoop& interrupts() { return *interrupts_; }
  ServiceRunner& services() { return services_; }

 private:
  explicit Runtime(const EalConfig& cfg) : cfg_(cfg) {}
  EalConfig cfg_;
  std::unique_ptr<Memory> memory_;
  std::unique_ptr<LcoreSet> lcores_;
  std::unique_ptr<InterruptLoop> interrupts_;
  ServiceRunner services_;
};

// What an application's main() calls first. Bad options: one line on stderr naming the
// option and the reason, exit status 2. --help: the EAL options and `app_usage`, exit 0.
// Startup failures (memory, devices): the reason, exit status 1.
struct EalApp {
  std::unique_ptr<Runtime> runtime;
  int argc = 0;       // the application's own arguments, argv[0] first
  char** argv = nullptr;
};
EalApp eal_init_or_exit(int argc, char** argv, std::string_view app_usage);

}  // namespace uvio
