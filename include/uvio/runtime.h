// The runtime a uvio application starts from its EAL options: memory, lcores, the
// interrupt loop, services, and the devices named with -a and --vdev.
#pragma once

#include <uvio/eal.h>
#include <uvio/intr.h>
#include <uvio/lcore.h>
#include <uvio/mem.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace uvio {

class ControlSocket;

namespace iommu {
class Device;
class DmaSpace;
}  // namespace iommu

// A device the runtime opened: from -a (kernel VFIO or vfio-user:/path) or an emulated
// --vdev (emu_nvme*, emu_net*: a software device on its own thread, reached through the
// vfio-user protocol over a socketpair, exactly as a device in another process).
struct RuntimeDevice {
  std::string name;          // the -a argument or the vdev name
  uint16_t vendor_id = 0;    // from PCI config space
  uint16_t device_id = 0;
  uint32_t class_code = 0;   // base << 16 | sub << 8 | prog-if
  iommu::Device* device = nullptr;
  bool is_nvme() const { return class_code == 0x010802; }
  bool is_virtio_net() const { return vendor_id == 0x1af4 && (device_id == 0x1041 || device_id == 0x1000); }
};

class Runtime {
 public:
  static Result<std::unique_ptr<Runtime>> start(const EalConfig& cfg);
  ~Runtime();

  const EalConfig& config() const { return cfg_; }
  Memory& memory() { return *memory_; }
  LcoreSet& lcores() { return *lcores_; }
  InterruptLoop& interrupts() { return *interrupts_; }
  ServiceRunner& services() { return services_; }
  iommu::DmaSpace& dma() { return *dma_; }
  // Every device, in the order given (-a first, then --vdev).
  const std::vector<RuntimeDevice>& devices() const { return devices_; }
  // Where tools reach this process (see control.h); nullptr with --control-socket=none,
  // or when the default path was taken by another live process.
  ControlSocket* control() { return control_.get(); }

 private:
  struct Emulated;  // in-process device servers (emu/), stopped before the devices close
  explicit Runtime(const EalConfig& cfg);
  Status open_devices();
  Status start_control();
  EalConfig cfg_;
  std::unique_ptr<Memory> memory_;
  std::unique_ptr<LcoreSet> lcores_;
  std::unique_ptr<InterruptLoop> interrupts_;
  ServiceRunner services_;
  std::unique_ptr<iommu::DmaSpace> dma_;
  std::vector<std::unique_ptr<iommu::Device>> owned_devices_;
  std::vector<RuntimeDevice> devices_;
  std::unique_ptr<Emulated> emulated_;
  std::unique_ptr<ControlSocket> control_;  // its handlers use the rest: stopped first
};

// What an application's main() calls first. Bad options: one line on stderr naming the
// option and the reason, exit status 2. --help: the EAL options and `app_usage`, exit 0.
// Startup failures (memory, devices): the reason, exit status 1.
struct EalApp {
  std::unique_ptr<Runtime> runtime;
  int argc = 0;       // the application's own arguments, argv[0] first
  char** argv = nullptr;
};
// `adjust` may change the parsed options before the runtime starts: an application that
// runs on a built-in emulated device when none is given adds its --vdev here.
EalApp eal_init_or_exit(int argc, char** argv, std::string_view app_usage,
                        const std::function<void(EalConfig&)>& adjust = nullptr);

}  // namespace uvio
