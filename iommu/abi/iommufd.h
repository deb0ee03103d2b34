// The iommufd user ABI (the kernel's include/uapi/linux/iommufd.h), defined here because
// Debian 12's kernel headers (6.1) predate it. Every command structure starts
// with its own size, which the kernel uses to accept older and newer callers; trailing
// fields a kernel does not know must be zero. Lines tagged "uapi:" are compared with the
// real header by test/iommu/abi_crosscheck.py.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace uvio::iommu::abi {

inline constexpr unsigned kIommufdType = ';';
constexpr unsigned long iommufd_ioctl(unsigned cmd) { return _IO(kIommufdType, cmd); }

inline constexpr unsigned long kIommuDestroy = iommufd_ioctl(0x80);          // uapi: IOMMU_DESTROY
inline constexpr unsigned long kIommuIoasAlloc = iommufd_ioctl(0x81);        // uapi: IOMMU_IOAS_ALLOC
inline constexpr unsigned long kIommuIoasIovaRanges = iommufd_ioctl(0x84);   // uapi: IOMMU_IOAS_IOVA_RANGES
inline constexpr unsigned long kIommuIoasMap = iommufd_ioctl(0x85);          // uapi: IOMMU_IOAS_MAP
inline constexpr unsigned long kIommuIoasUnmap = iommufd_ioctl(0x86);        // uapi: IOMMU_IOAS_UNMAP
inline constexpr unsigned long kIommuOption = iommufd_ioctl(0x87);           // uapi: IOMMU_OPTION
inline constexpr unsigned long kIommuHwptAlloc = iommufd_ioctl(0x89);        // uapi: IOMMU_HWPT_ALLOC
inline constexpr unsigned long kIommuGetHwInfo = iommufd_ioctl(0x8a);        // uapi: IOMMU_GET_HW_INFO
inline constexpr unsigned long kIommuHwptSetDirtyTracking = iommufd_ioctl(0x8b);  // uapi: IOMMU_HWPT_SET_DIRTY_TRACKING
inline constexpr unsigned long kIommuHwptGetDirtyBitmap = iommufd_ioctl(0x8c);    // uapi: IOMMU_HWPT_GET_DIRTY_BITMAP
inline constexpr unsigned long kIommuIoasMapFile = iommufd_ioctl(0x8f);      // uapi: IOMMU_IOAS_MAP_FILE
inline constexpr unsigned long kIommuIoasNoiommuGetPa = iommufd_ioctl(0x95);  // uapi: IOMMU_IOAS_NOIOMMU_GET_PA

struct IommuDestroy {  // uapi: struct iommu_destroy
  uint32_t size;
  uint32_t id;
};
static_assert(sizeof(IommuDestroy) == 8);

struct IommuIoasAlloc {  // uapi: struct iommu_ioas_alloc
  uint32_t size;
  uint32_t flags;
  uint32_t out_ioas_id;
};
static_assert(sizeof(IommuIoasAlloc) == 12);
static_assert(offsetof(IommuIoasAlloc, out_ioas_id) == 8);

struct IommuIovaRange {  // uapi: struct iommu_iova_range
  alignas(8) uint64_t start;
  alignas(8) uint64_t last;  // inclusive
};
static_assert(sizeof(IommuIovaRange) == 16);

// num_iovas in: room in allowed_iovas; out: how many ranges exist. EMSGSIZE when the
// room was too small (the count is still written back).
struct IommuIoasIovaRanges {  // uapi: struct iommu_ioas_iova_ranges
  uint32_t size;
  uint32_t ioas_id;
  uint32_t num_iovas;
  uint32_t reserved;
  alignas(8) uint64_t allowed_iovas;  // user pointer to IommuIovaRange[num_iovas]
  alignas(8) uint64_t out_iova_alignment;
};
static_assert(sizeof(IommuIoasIovaRanges) == 32);
static_assert(offsetof(IommuIoasIovaRanges, num_iovas) == 8);
static_assert(offsetof(IommuIoasIovaRanges, allowed_iovas) == 16);
static_assert(offsetof(IommuIoasIovaRanges, out_iova_alignment) == 24);

inline constexpr uint32_t kIommuIoasMapFixedIova = 1u << 0;  // uapi: IOMMU_IOAS_MAP_FIXED_IOVA
inline constexpr uint32_t kIommuIoasMapWriteable = 1u << 1;  // uapi: IOMMU_IOAS_MAP_WRITEABLE
inline constexpr uint32_t kIommuIoasMapReadable = 1u << 2;   // uapi: IOMMU_IOAS_MAP_READABLE

struct IommuIoasMap {  // uapi: struct iommu_ioas_map
  uint32_t size;
  uint32_t flags;
  uint32_t ioas_id;
  uint32_t reserved;
  alignas(8) uint64_t user_va;
  alignas(8) uint64_t length;
  alignas(8) uint64_t iova;  // in with FIXED_IOVA, else out
};
static_assert(sizeof(IommuIoasMap) == 40);
static_assert(offsetof(IommuIoasMap, user_va) == 16);
static_assert(offsetof(IommuIoasMap, length) == 24);
static_assert(offsetof(IommuIoasMap, iova) == 32);

// Maps pages of a file (memfd, hugetlbfs) rather than of an address: the pin is on the
// file, so the memory need not stay mapped in this process.
struct IommuIoasMapFile {  // uapi: struct iommu_ioas_map_file
  uint32_t size;
  uint32_t flags;
  uint32_t ioas_id;
  int32_t fd;
  alignas(8) uint64_t start;  // offset in the file
  alignas(8) uint64_t length;
  alignas(8) uint64_t iova;
};
static_assert(sizeof(IommuIoasMapFile) == 40);
static_assert(offsetof(IommuIoasMapFile, fd) == 12);
static_assert(offsetof(IommuIoasMapFile, start) == 16);
static_assert(offsetof(IommuIoasMapFile, iova) == 32);

struct IommuIoasUnmap {  // uapi: struct iommu_ioas_unmap
  uint32_t size;
  uint32_t ioas_id;
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;  // in: bytes to unmap; out: bytes unmapped
};
static_assert(sizeof(IommuIoasUnmap) == 24);
static_assert(offsetof(IommuIoasUnmap, iova) == 8);

inline constexpr uint32_t kIommuOptionRlimitMode = 0;  // uapi: IOMMU_OPTION_RLIMIT_MODE
// Per IOAS: 0 maps everything with PAGE_SIZE IOPTEs instead of combining contiguous
// pages, which also makes dirty tracking report at PAGE_SIZE granularity.
inline constexpr uint32_t kIommuOptionHugePages = 1;   // uapi: IOMMU_OPTION_HUGE_PAGES
inline constexpr uint16_t kIommuOptionOpSet = 0;       // uapi: IOMMU_OPTION_OP_SET
inline constexpr uint16_t kIommuOptionOpGet = 1;       // uapi: IOMMU_OPTION_OP_GET

struct IommuOption {  // uapi: struct iommu_option
  uint32_t size;
  uint32_t option_id;
  uint16_t op;
  uint16_t reserved;
  uint32_t object_id;
  alignas(8) uint64_t val64;
};
static_assert(sizeof(IommuOption) == 24);
static_assert(offsetof(IommuOption, object_id) == 12);
static_assert(offsetof(IommuOption, val64) == 16);

inline constexpr uint32_t kIommuHwptAllocNestParent = 1u << 0;     // uapi: IOMMU_HWPT_ALLOC_NEST_PARENT
inline constexpr uint32_t kIommuHwptAllocDirtyTracking = 1u << 1;  // uapi: IOMMU_HWPT_ALLOC_DIRTY_TRACKING
inline constexpr uint32_t kIommuHwptDataNone = 0;                  // uapi: IOMMU_HWPT_DATA_NONE

struct IommuHwptAlloc {  // uapi: struct iommu_hwpt_alloc
  uint32_t size;
  uint32_t flags;
  uint32_t dev_id;
  uint32_t pt_id;
  uint32_t out_hwpt_id;
  uint32_t reserved;
  uint32_t data_type;
  uint32_t data_len;
  alignas(8) uint64_t data_uptr;
  uint32_t fault_id;
  uint32_t reserved2;
};
static_assert(sizeof(IommuHwptAlloc) == 48);
static_assert(offsetof(IommuHwptAlloc, out_hwpt_id) == 16);
static_assert(offsetof(IommuHwptAlloc, data_type) == 24);
static_assert(offsetof(IommuHwptAlloc, data_uptr) == 32);
static_assert(offsetof(IommuHwptAlloc, fault_id) == 40);

inline constexpr uint32_t kIommuHwInfoTypeNone = 0;        // uapi: IOMMU_HW_INFO_TYPE_NONE
inline constexpr uint32_t kIommuHwInfoTypeIntelVtd = 1;    // uapi: IOMMU_HW_INFO_TYPE_INTEL_VTD
inline constexpr uint32_t kIommuHwInfoTypeArmSmmuv3 = 2;   // uapi: IOMMU_HW_INFO_TYPE_ARM_SMMUV3
inline constexpr uint32_t kIommuHwInfoTypeAmd = 4;         // uapi: IOMMU_HW_INFO_TYPE_AMD
inline constexpr uint64_t kIommuHwCapDirtyTracking = 1u << 0;  // uapi: IOMMU_HW_CAP_DIRTY_TRACKING

struct IommuHwInfoVtd {  // uapi: struct iommu_hw_info_vtd
  uint32_t flags;
  uint32_t reserved;
  alignas(8) uint64_t cap_reg;   // VT-d spec 11.4.2, Capability Register
  alignas(8) uint64_t ecap_reg;  // VT-d spec 11.4.3, Extended Capability Register
};
static_assert(sizeof(IommuHwInfoVtd) == 24);

struct IommuHwInfo {  // uapi: struct iommu_hw_info
  uint32_t size;
  uint32_t flags;
  uint32_t dev_id;
  uint32_t data_len;  // in: room at data_uptr; out: bytes the driver filled
  alignas(8) uint64_t data_uptr;
  uint32_t out_data_type;
  uint8_t out_max_pasid_log2;
  uint8_t reserved[3];
  alignas(8) uint64_t out_capabilities;
};
static_assert(sizeof(IommuHwInfo) == 40);
static_assert(offsetof(IommuHwInfo, data_uptr) == 16);
static_assert(offsetof(IommuHwInfo, out_data_type) == 24);
static_assert(offsetof(IommuHwInfo, out_max_pasid_log2) == 28);
static_assert(offsetof(IommuHwInfo, out_capabilities) == 32);

inline constexpr uint32_t kIommuHwptDirtyTrackingEnable = 1;  // uapi: IOMMU_HWPT_DIRTY_TRACKING_ENABLE

struct IommuHwptSetDirtyTracking {  // uapi: struct iommu_hwpt_set_dirty_tracking
  uint32_t size;
  uint32_t flags;
  uint32_t hwpt_id;
  uint32_t reserved;
};
static_assert(sizeof(IommuHwptSetDirtyTracking) == 16);

inline constexpr uint32_t kIommuHwptGetDirtyBitmapNoClear = 1;  // uapi: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR

// The kernel only sets bits in `data`: the caller zeroes the bitmap before each read.
struct IommuHwptGetDirtyBitmap {  // uapi: struct iommu_hwpt_get_dirty_bitmap
  uint32_t size;
  uint32_t hwpt_id;
  uint32_t flags;
  uint32_t reserved;
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;
  alignas(8) uint64_t page_size;
  alignas(8) uint64_t data;  // user pointer to the bitmap
};
static_assert(sizeof(IommuHwptGetDirtyBitmap) == 48);
static_assert(offsetof(IommuHwptGetDirtyBitmap, iova) == 16);
static_assert(offsetof(IommuHwptGetDirtyBitmap, data) == 40);

// noiommu IOAS: the physical address behind an IOVA, for devices DMAing without an IOMMU.
struct IommuIoasNoiommuGetPa {  // uapi: struct iommu_ioas_noiommu_get_pa
  uint32_t size;
  uint32_t flags;
  uint32_t ioas_id;
  uint32_t reserved;
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;  // out: bytes physically contiguous from iova
  alignas(8) uint64_t out_phys;
};
static_assert(sizeof(IommuIoasNoiommuGetPa) == 40);
static_assert(offsetof(IommuIoasNoiommuGetPa, out_phys) == 32);

}  // namespace uvio::iommu::abi
