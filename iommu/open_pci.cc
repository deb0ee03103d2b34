// A PCI address goes to the kernel backend --vfio-mode asks for; auto means iommufd +
// cdev when the kernel offers both nodes, else the group/container path.
#include <uvio/log.h>

#include "iommu/kernel_backends.h"
#include "iommu/sys.h"

namespace uvio::iommu {
namespace {

constexpr const char* kLog = "vfio";

}  // namespace

Result<std::unique_ptr<Device>> open_pci_device(std::string_view spec, DmaSpace& dma, const OpenOptions& opts) {
  std::string bdf;
  if (!parse_pci_address(spec, &bdf))
    return Status::error(EINVAL, fmt::format("'{}' is neither a PCI address (0000:03:00.0) nor vfio-user:/path", spec));
  if (!sys().exists(sysfs_pci_device(bdf)))
    return Status::error(ENODEV, fmt::format("no PCI device {} ({} does not exist)", bdf, sysfs_pci_device(bdf)));

  std::string reason;
  switch (opts.mode) {
    case VfioMode::Iommufd:
      reason = "--vfio-mode=iommufd";
      UVIO_LOG(Notice, kLog, "{}: backend iommufd+cdev ({})", bdf, reason);
      return open_iommufd_device(bdf, reason, false, dma, opts);
    case VfioMode::Group:
      reason = "--vfio-mode=group";
      UVIO_LOG(Notice, kLog, "{}: backend type1 group/container ({})", bdf, reason);
      return open_group_device(bdf, reason, false, dma, opts);
    case VfioMode::NoIommu: {
      // The noiommu cdev (vfio.enable_unsafe_noiommu_mode=1 with iommufd) when it is
      // there, else the noiommu group.
      std::vector<std::string> names;
      bool cdev = sys().list_dir(sysfs_pci_device(bdf) + "/vfio-dev", &names) == 0 && !names.empty() &&
                  sys().exists("/dev/iommu");
      reason = cdev ? "--vfio-mode=noiommu, and a noiommu cdev and /dev/iommu exist"
                    : "--vfio-mode=noiommu, no noiommu cdev: using the noiommu group";
      UVIO_LOG(Notice, kLog, "{}: backend noiommu via {} ({})", bdf, cdev ? "iommufd cdev" : "group", reason);
      return cdev ? open_iommufd_device(bdf, reason, true, dma, opts) : open_group_device(bdf, reason, true, dma, opts);
    }
    case VfioMode::Auto:
      break;
  }
  bool have_iommufd = sys().exists("/dev/iommu");
  bool have_cdevs = sys().exists("/dev/vfio/devices");
  if (have_iommufd && have_cdevs) {
    reason = "auto: /dev/iommu and /dev/vfio/devices exist";
    UVIO_LOG(Notice, kLog, "{}: backend iommufd+cdev ({})", bdf, reason);
    return open_iommufd_device(bdf, reason, false, dma, opts);
  }
  reason = fmt::format("auto: {} is missing", have_iommufd ? "/dev/vfio/devices" : "/dev/iommu");
  UVIO_LOG(Notice, kLog, "{}: backend type1 group/container ({})", bdf, reason);
  return open_group_device(bdf, reason, false, dma, opts);
}

}  // namespace uvio::iommu
