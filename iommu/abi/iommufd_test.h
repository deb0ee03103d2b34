// The iommufd selftest interface (the kernel's drivers/iommu/iommufd/iommufd_test.h,
// present when the kernel is built with CONFIG_IOMMUFD_TEST). It creates mock devices
// whose mock IOMMU domain supports dirty tracking, so the HWPT dirty-bitmap path can be
// tested against the real iommufd code in the test guest. Not a stable ABI: it follows
// the kernel the test guest boots.
#pragma once

#include "iommu/abi/iommufd.h"

#include <cstddef>
#include <cstdint>

namespace uvio::iommu::abi {

// IOMMUFD_CMD_BASE + 32.
inline constexpr unsigned long kIommuTestCmd = iommufd_ioctl(0x80 + 32);

enum IommuTestOp : uint32_t {
  kIommuTestOpAddReserved = 1,
  kIommuTestOpMockDomain = 2,       // id: an IOAS or HWPT to attach a new mock device to
  kIommuTestOpMockDomainFlags = 12,
  kIommuTestOpDirty = 13,           // id: a HWPT; marks the pages set in a bitmap dirty
};

// The mock IOMMU only translates IOVAs inside this aperture.
inline constexpr uint64_t kMockApertureStart = 1ull << 24;
inline constexpr uint64_t kMockApertureLast = (1ull << 31) - 1;

struct IommuTestMockDomain {
  uint32_t out_stdev_id;  // the selftest device object, destroy it to detach
  uint32_t out_hwpt_id;   // the HWPT the device was attached to
  uint32_t out_idev_id;   // the device's bind id, usable as HWPT_ALLOC's dev_id
};

struct IommuTestDirty {
  uint32_t flags;
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;
  alignas(8) uint64_t page_size;
  alignas(8) uint64_t uptr;  // bitmap of pages to mark: bit i is iova + i * page_size
  alignas(8) uint64_t out_nr_dirty;
};
static_assert(sizeof(IommuTestDirty) == 48);

// The kernel's union is sized by its largest member (the dirty op, 48 bytes); the
// size field must cover up to and including `last`.
struct IommuTestCmd {
  uint32_t size;
  uint32_t op;
  uint32_t id;
  uint32_t reserved;
  union {
    IommuTestMockDomain mock_domain;
    IommuTestDirty dirty;
    uint8_t raw[48];
  };
  uint32_t last;
};
static_assert(offsetof(IommuTestCmd, mock_domain) == 16);
static_assert(offsetof(IommuTestCmd, last) == 64);
static_assert(sizeof(IommuTestCmd) == 72);

}  // namespace uvio::iommu::abi
