// open_device: where a device spec goes. A PCI address goes to a kernel backend chosen
// by --vfio-mode; "vfio-user:/path" goes to the vfio-user client.
#include <uvio/log.h>

#include "iommu/kernel_backends.h"
#include "iommu/vfio_user_client.h"

namespace uvio::iommu {
namespace {

constexpr const char* kLog = "vfio";
constexpr std::string_view kVfioUserPrefix = "vfio-user:";

}  // namespace

Result<std::unique_ptr<Device>> open_device(std::string_view spec, DmaSpace& dma, const OpenOptions& opts) {
  if (spec.substr(0, kVfioUserPrefix.size()) == kVfioUserPrefix) {
    std::string_view path = spec.substr(kVfioUserPrefix.size());
    if (path.empty()) return Status::error(EINVAL, "'vfio-user:' needs a socket path, e.g. vfio-user:/run/nvme0.sock");
    UVIO_LOG(Notice, kLog, "{}: backend vfio-user (the spec names a vfio-user socket)", spec);
    return open_vfio_user(path, dma, opts);
  }
  return open_pci_device(spec, dma, opts);
}

}  // namespace uvio::iommu
