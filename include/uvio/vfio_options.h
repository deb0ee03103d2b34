// How the runtime owns kernel devices: --vfio-mode and --vfio-intr.
#pragma once

namespace uvio {

enum class VfioMode { Auto, Iommufd, Group, NoIommu };
enum class IntrMode { Msix, Msi, Legacy };

}  // namespace uvio
