#include <uvio/runtime.h>

#include "iommu/device.h"
#include "iommu/dma_space.h"

#include <cstdio>
#include <cstdlib>

namespace uvio {

struct Runtime::Emulated {};

Runtime::Runtime(const EalConfig& cfg) : cfg_(cfg) {}

Runtime::~Runtime() {
  services_.stop();
  lcores_.reset();  // joins lcore threads before the memory they use goes away
}

Result<std::unique_ptr<Runtime>> Runtime::start(const EalConfig& cfg) {
  log::set_global_level(cfg.log_level);
  for (auto& [comp, level] : cfg.component_log_levels) log::set_component_level(comp, level);
  std::unique_ptr<Runtime> rt(new Runtime(cfg));
  auto mem = Memory::create(cfg.mem);
  if (!mem) return mem.status();
  rt->memory_ = std::move(mem.value());
  auto intr = InterruptLoop::create();
  if (!intr) return intr.status();
  rt->interrupts_ = std::move(intr.value());
  auto lc = LcoreSet::start(cfg.lcores, cfg.main_lcore);
  if (!lc) return lc.status();
  rt->lcores_ = std::move(lc.value());
  return rt;
}

EalApp eal_init_or_exit(int argc, char** argv, std::string_view app_usage, const std::function<void(EalConfig&)>& adjust) {
  const char* prog = argc > 0 ? argv[0] : "uvio";
  auto cfg = eal_parse(argc, argv);
  if (!cfg) {
    std::fprintf(stderr, "%s: %s\n", prog, cfg.status().message().c_str());
    std::exit(2);
  }
  if (cfg->help) {
    std::printf("Usage: %s [EAL options] -- [application options]\n\n%s\n%.*s", prog, eal_usage().c_str(),
                static_cast<int>(app_usage.size()), app_usage.data());
    std::exit(0);
  }
  if (cfg->version) {
    std::printf("uvio %s\n", UVIO_VERSION);
    std::exit(0);
  }
  if (adjust) adjust(cfg.value());
  auto rt = Runtime::start(cfg.value());
  if (!rt) {
    std::fprintf(stderr, "%s: cannot start: %s\n", prog, rt.status().message().c_str());
    std::exit(1);
  }
  EalApp app;
  app.runtime = std::move(rt.value());
  // The application sees argv[0] followed by what came after "--".
  int first = cfg->app_args_index;
  if (first > 1 && first <= argc) argv[first - 1] = argv[0];
  app.argv = argv + (first - 1);
  app.argc = argc - (first - 1);
  return app;
}

}  // namespace uvio
