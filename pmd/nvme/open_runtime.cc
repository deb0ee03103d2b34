// Opening a controller on a device the runtime owns (-a or an emulated --vdev).
#include <uvio/nvme.h>
#include <uvio/runtime.h>

#include "iommu/dma_space.h"

#include <fmt/format.h>

namespace uvio::nvme {

Result<std::unique_ptr<Controller>> Controller::open(Runtime& runtime, const RuntimeDevice& device,
                                                     const ControllerOptions& options) {
  if (!device.device) return Status::error(ENODEV, fmt::format("nvme: {} has no open device", device.name));
  if (!device.is_nvme())
    return Status::error(ENODEV, fmt::format("nvme: {} has class code {:06x}, not an NVMe controller (010802)",
                                             device.name, device.class_code));
  return open(*device.device, runtime.memory(), options);
}

}  // namespace uvio::nvme
