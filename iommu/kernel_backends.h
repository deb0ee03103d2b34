// Private to iommu/: the two kernel ways of owning a PCI device (iommufd + cdev, and
// the group/container path with type1 or noiommu), and what their domains can tell.
#pragma once

#include "iommu/device.h"
#include "iommu/dma_space.h"
#include "iommu/pci_address.h"

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace uvio::iommu {

// A DmaDomain of a kernel backend, with its facts for uvio-devinfo.
class KernelDomain : public DmaDomain {
 public:
  // Ordered (name, value) pairs: IOVA ranges, page sizes, limits, dirty tracking.
  virtual std::vector<std::pair<std::string, std::string>> facts() const = 0;
};

inline std::string sysfs_pci_device(const std::string& bdf) { return "/sys/bus/pci/devices/" + bdf; }

// A PCI address ("0000:03:00.0", domain optional) through the backend opts.mode picks;
// logs which backend was chosen and why.
Result<std::unique_ptr<Device>> open_pci_device(std::string_view spec, DmaSpace& dma, const OpenOptions& opts);

// `bdf` is canonical ("0000:03:00.0"); `reason` says why this backend was chosen.
Result<std::unique_ptr<Device>> open_iommufd_device(const std::string& bdf, std::string reason, bool noiommu,
                                                    DmaSpace& dma, const OpenOptions& opts);
Result<std::unique_ptr<Device>> open_group_device(const std::string& bdf, std::string reason, bool noiommu,
                                                  DmaSpace& dma, const OpenOptions& opts);

// The DirtyTracker of iommufd HWPTs allocated with dirty tracking: one read covers every
// HWPT given. Exposed for tests against the iommufd selftest's mock domain.
std::unique_ptr<DirtyTracker> make_hwpt_dirty_tracker(int iommufd, std::vector<uint32_t> hwpt_ids);

}  // namespace uvio::iommu
