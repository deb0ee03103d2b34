#include "iommu/device.h"

#include <cstring>
#include <string>

namespace uvio::iommu {
namespace {

// PCI config space is little-endian (PCI Local Bus spec 6.1); accesses are naturally
// aligned so that they never straddle a register.
Status check_config_access(uint32_t offset, unsigned width) {
  if (width != 1 && width != 2 && width != 4)
    return Status::error(EINVAL, "config space access width must be 1, 2 or 4 bytes, not " + std::to_string(width));
  if (offset % width != 0)
    return Status::error(EINVAL, "config space offset " + std::to_string(offset) + " is not aligned to its width " +
                                     std::to_string(width));
  return Status::ok();
}

}  // namespace

Result<uint32_t> Device::config_read(uint32_t offset, unsigned width) {
  UVIO_TRY(check_config_access(offset, width));
  uint8_t bytes[4] = {};
  UVIO_TRY(region_read(kConfigRegion, offset, bytes, width));
  uint32_t value = 0;
  for (unsigned i = 0; i < width; ++i) value |= uint32_t{bytes[i]} << (8 * i);
  return value;
}

Status Device::config_write(uint32_t offset, unsigned width, uint32_t value) {
  UVIO_TRY(check_config_access(offset, width));
  if (width < 4 && (value >> (8 * width)) != 0)
    return Status::error(EINVAL, "value " + std::to_string(value) + " does not fit a " + std::to_string(width) +
                                     "-byte config register");
  uint8_t bytes[4];
  for (unsigned i = 0; i < width; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
  return region_write(kConfigRegion, offset, bytes, width);
}

}  // namespace uvio::iommu
