// The vfio-user client backend: a Device over a UNIX socket (QEMU's
// docs/interop/vfio-user.rst), the server being an emu/ device model or any other.
#pragma once

#include "iommu/device.h"

#include <memory>
#include <string_view>

namespace uvio::iommu {

// Connects to the server at `socket_path` ...
Result<std::unique_ptr<Device>> open_vfio_user(std::string_view socket_path, DmaSpace& dma,
                                               const OpenOptions& opts);
// ... or over an already connected socket (in-process devices use a socketpair).
// Takes ownership of `fd`.
Result<std::unique_ptr<Device>> open_vfio_user_fd(int fd, std::string_view name, DmaSpace& dma,
                                                  const OpenOptions& opts);

}  // namespace uvio::iommu
