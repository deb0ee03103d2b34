// The VFIO user ABI (the kernel's include/uapi/linux/vfio.h), defined here because
// Debian 12's kernel headers (6.1) predate the cdev interface and iommufd binding.
// Layouts and numbers follow the kernel; names are ours so they never collide with the
// kernel's macros. Each line tagged "uapi:" names its kernel counterpart: the cross-check
// test (test/iommu/abi_crosscheck.py) compares every one of them with the real header.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace uvio::iommu::abi {

inline constexpr unsigned kVfioType = ';';
inline constexpr unsigned kVfioBase = 100;
// Every VFIO ioctl is _IO(VFIO_TYPE, VFIO_BASE + n): no size or direction encoded, the
// structure's own argsz says how much the caller passed.
constexpr unsigned long vfio_ioctl(unsigned n) { return _IO(kVfioType, kVfioBase + n); }

inline constexpr int kVfioApiVersion = 0;              // uapi: VFIO_API_VERSION

// IOMMU models for VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION.
inline constexpr unsigned long kVfioType1Iommu = 1;    // uapi: VFIO_TYPE1_IOMMU
inline constexpr unsigned long kVfioType1v2Iommu = 3;  // uapi: VFIO_TYPE1v2_IOMMU
inline constexpr unsigned long kVfioNoIommuIommu = 8;  // uapi: VFIO_NOIOMMU_IOMMU
inline constexpr unsigned long kVfioUnmapAllExt = 9;   // uapi: VFIO_UNMAP_ALL

inline constexpr unsigned long kVfioGetApiVersion = vfio_ioctl(0);     // uapi: VFIO_GET_API_VERSION
inline constexpr unsigned long kVfioCheckExtension = vfio_ioctl(1);    // uapi: VFIO_CHECK_EXTENSION
inline constexpr unsigned long kVfioSetIommu = vfio_ioctl(2);          // uapi: VFIO_SET_IOMMU
inline constexpr unsigned long kVfioGroupGetStatus = vfio_ioctl(3);    // uapi: VFIO_GROUP_GET_STATUS
inline constexpr unsigned long kVfioGroupSetContainer = vfio_ioctl(4);    // uapi: VFIO_GROUP_SET_CONTAINER
inline constexpr unsigned long kVfioGroupUnsetContainer = vfio_ioctl(5);  // uapi: VFIO_GROUP_UNSET_CONTAINER
inline constexpr unsigned long kVfioGroupGetDeviceFd = vfio_ioctl(6);  // uapi: VFIO_GROUP_GET_DEVICE_FD
inline constexpr unsigned long kVfioDeviceGetInfo = vfio_ioctl(7);     // uapi: VFIO_DEVICE_GET_INFO
inline constexpr unsigned long kVfioDeviceGetRegionInfo = vfio_ioctl(8);  // uapi: VFIO_DEVICE_GET_REGION_INFO
inline constexpr unsigned long kVfioDeviceGetIrqInfo = vfio_ioctl(9);  // uapi: VFIO_DEVICE_GET_IRQ_INFO
inline constexpr unsigned long kVfioDeviceSetIrqs = vfio_ioctl(10);    // uapi: VFIO_DEVICE_SET_IRQS
inline constexpr unsigned long kVfioDeviceReset = vfio_ioctl(11);      // uapi: VFIO_DEVICE_RESET
inline constexpr unsigned long kVfioDeviceFeature = vfio_ioctl(17);    // uapi: VFIO_DEVICE_FEATURE
inline constexpr unsigned long kVfioDeviceBindIommufd = vfio_ioctl(18);   // uapi: VFIO_DEVICE_BIND_IOMMUFD
inline constexpr unsigned long kVfioDeviceAttachIommufdPt = vfio_ioctl(19);  // uapi: VFIO_DEVICE_ATTACH_IOMMUFD_PT
inline constexpr unsigned long kVfioDeviceDetachIommufdPt = vfio_ioctl(20);  // uapi: VFIO_DEVICE_DETACH_IOMMUFD_PT
inline constexpr unsigned long kVfioMigGetPrecopyInfo = vfio_ioctl(21);   // uapi: VFIO_MIG_GET_PRECOPY_INFO
// The container ioctls reuse numbers of the device ioctls: they act on another fd.
inline constexpr unsigned long kVfioIommuGetInfo = vfio_ioctl(12);     // uapi: VFIO_IOMMU_GET_INFO
inline constexpr unsigned long kVfioIommuMapDma = vfio_ioctl(13);      // uapi: VFIO_IOMMU_MAP_DMA
inline constexpr unsigned long kVfioIommuUnmapDma = vfio_ioctl(14);    // uapi: VFIO_IOMMU_UNMAP_DMA
inline constexpr unsigned long kVfioIommuDirtyPages = vfio_ioctl(17);  // uapi: VFIO_IOMMU_DIRTY_PAGES

// Every info structure may end in a chain of capabilities; `next` is an offset from
// the start of the enclosing structure, 0 ends the chain.
struct VfioInfoCapHeader {  // uapi: struct vfio_info_cap_header
  uint16_t id;
  uint16_t version;
  uint32_t next;
};
static_assert(sizeof(VfioInfoCapHeader) == 8);
static_assert(offsetof(VfioInfoCapHeader, next) == 4);

struct VfioGroupStatus {  // uapi: struct vfio_group_status
  uint32_t argsz;
  uint32_t flags;
};
static_assert(sizeof(VfioGroupStatus) == 8);
inline constexpr uint32_t kVfioGroupFlagsViable = 1u << 0;        // uapi: VFIO_GROUP_FLAGS_VIABLE
inline constexpr uint32_t kVfioGroupFlagsContainerSet = 1u << 1;  // uapi: VFIO_GROUP_FLAGS_CONTAINER_SET

struct VfioDeviceInfo {  // uapi: struct vfio_device_info
  uint32_t argsz;
  uint32_t flags;
  uint32_t num_regions;
  uint32_t num_irqs;
  uint32_t cap_offset;
  uint32_t pad;
};
static_assert(sizeof(VfioDeviceInfo) == 24);
static_assert(offsetof(VfioDeviceInfo, num_regions) == 8);
static_assert(offsetof(VfioDeviceInfo, cap_offset) == 16);
inline constexpr uint32_t kVfioDeviceFlagsReset = 1u << 0;  // uapi: VFIO_DEVICE_FLAGS_RESET
inline constexpr uint32_t kVfioDeviceFlagsPci = 1u << 1;    // uapi: VFIO_DEVICE_FLAGS_PCI
inline constexpr uint32_t kVfioDeviceFlagsCaps = 1u << 7;   // uapi: VFIO_DEVICE_FLAGS_CAPS

struct VfioRegionInfo {  // uapi: struct vfio_region_info
  uint32_t argsz;
  uint32_t flags;
  uint32_t index;
  uint32_t cap_offset;
  alignas(8) uint64_t size;
  alignas(8) uint64_t offset;
};
static_assert(sizeof(VfioRegionInfo) == 32);
static_assert(offsetof(VfioRegionInfo, cap_offset) == 12);
static_assert(offsetof(VfioRegionInfo, size) == 16);
static_assert(offsetof(VfioRegionInfo, offset) == 24);
inline constexpr uint32_t kVfioRegionInfoFlagRead = 1u << 0;   // uapi: VFIO_REGION_INFO_FLAG_READ
inline constexpr uint32_t kVfioRegionInfoFlagWrite = 1u << 1;  // uapi: VFIO_REGION_INFO_FLAG_WRITE
inline constexpr uint32_t kVfioRegionInfoFlagMmap = 1u << 2;   // uapi: VFIO_REGION_INFO_FLAG_MMAP
inline constexpr uint32_t kVfioRegionInfoFlagCaps = 1u << 3;   // uapi: VFIO_REGION_INFO_FLAG_CAPS

inline constexpr uint16_t kVfioRegionInfoCapSparseMmap = 1;   // uapi: VFIO_REGION_INFO_CAP_SPARSE_MMAP
inline constexpr uint16_t kVfioRegionInfoCapType = 2;         // uapi: VFIO_REGION_INFO_CAP_TYPE
inline constexpr uint16_t kVfioRegionInfoCapMsixMappable = 3;  // uapi: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE

struct VfioRegionSparseMmapArea {  // uapi: struct vfio_region_sparse_mmap_area
  alignas(8) uint64_t offset;
  alignas(8) uint64_t size;
};
static_assert(sizeof(VfioRegionSparseMmapArea) == 16);

// Followed by nr_areas VfioRegionSparseMmapArea.
struct VfioRegionInfoCapSparseMmap {  // uapi: struct vfio_region_info_cap_sparse_mmap
  VfioInfoCapHeader header;
  uint32_t nr_areas;
  uint32_t reserved;
};
static_assert(sizeof(VfioRegionInfoCapSparseMmap) == 16);
static_assert(offsetof(VfioRegionInfoCapSparseMmap, nr_areas) == 8);

struct VfioRegionInfoCapType {  // uapi: struct vfio_region_info_cap_type
  VfioInfoCapHeader header;
  uint32_t type;
  uint32_t subtype;
};
static_assert(sizeof(VfioRegionInfoCapType) == 16);

struct VfioIrqInfo {  // uapi: struct vfio_irq_info
  uint32_t argsz;
  uint32_t flags;
  uint32_t index;
  uint32_t count;
};
static_assert(sizeof(VfioIrqInfo) == 16);
inline constexpr uint32_t kVfioIrqInfoEventfd = 1u << 0;     // uapi: VFIO_IRQ_INFO_EVENTFD
inline constexpr uint32_t kVfioIrqInfoMaskable = 1u << 1;    // uapi: VFIO_IRQ_INFO_MASKABLE
inline constexpr uint32_t kVfioIrqInfoAutomasked = 1u << 2;  // uapi: VFIO_IRQ_INFO_AUTOMASKED
inline constexpr uint32_t kVfioIrqInfoNoresize = 1u << 3;    // uapi: VFIO_IRQ_INFO_NORESIZE

// Followed by `count` elements of the data type named in flags (s32 eventfds for
// DATA_EVENTFD, u8 for DATA_BOOL, nothing for DATA_NONE).
struct VfioIrqSet {  // uapi: struct vfio_irq_set
  uint32_t argsz;
  uint32_t flags;
  uint32_t index;
  uint32_t start;
  uint32_t count;
};
static_assert(sizeof(VfioIrqSet) == 20);
static_assert(offsetof(VfioIrqSet, count) == 16);
inline constexpr uint32_t kVfioIrqSetDataNone = 1u << 0;        // uapi: VFIO_IRQ_SET_DATA_NONE
inline constexpr uint32_t kVfioIrqSetDataBool = 1u << 1;        // uapi: VFIO_IRQ_SET_DATA_BOOL
inline constexpr uint32_t kVfioIrqSetDataEventfd = 1u << 2;     // uapi: VFIO_IRQ_SET_DATA_EVENTFD
inline constexpr uint32_t kVfioIrqSetActionMask = 1u << 3;      // uapi: VFIO_IRQ_SET_ACTION_MASK
inline constexpr uint32_t kVfioIrqSetActionUnmask = 1u << 4;    // uapi: VFIO_IRQ_SET_ACTION_UNMASK
inline constexpr uint32_t kVfioIrqSetActionTrigger = 1u << 5;   // uapi: VFIO_IRQ_SET_ACTION_TRIGGER

// Followed by the feature's payload.
struct VfioDeviceFeature {  // uapi: struct vfio_device_feature
  uint32_t argsz;
  uint32_t flags;
};
static_assert(sizeof(VfioDeviceFeature) == 8);
inline constexpr uint32_t kVfioDeviceFeatureMask = 0xffff;       // uapi: VFIO_DEVICE_FEATURE_MASK
inline constexpr uint32_t kVfioDeviceFeatureGet = 1u << 16;      // uapi: VFIO_DEVICE_FEATURE_GET
inline constexpr uint32_t kVfioDeviceFeatureSet = 1u << 17;      // uapi: VFIO_DEVICE_FEATURE_SET
inline constexpr uint32_t kVfioDeviceFeatureProbe = 1u << 18;    // uapi: VFIO_DEVICE_FEATURE_PROBE

inline constexpr uint32_t kVfioFeaturePciVfToken = 0;          // uapi: VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
inline constexpr uint32_t kVfioFeatureMigration = 1;           // uapi: VFIO_DEVICE_FEATURE_MIGRATION
inline constexpr uint32_t kVfioFeatureMigDeviceState = 2;      // uapi: VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
inline constexpr uint32_t kVfioFeatureLowPowerEntry = 3;       // uapi: VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY
inline constexpr uint32_t kVfioFeatureLowPowerEntryWithWakeup = 4;  // uapi: VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
inline constexpr uint32_t kVfioFeatureLowPowerExit = 5;        // uapi: VFIO_DEVICE_FEATURE_LOW_POWER_EXIT
inline constexpr uint32_t kVfioFeatureDmaLoggingStart = 6;     // uapi: VFIO_DEVICE_FEATURE_DMA_LOGGING_START
inline constexpr uint32_t kVfioFeatureDmaLoggingStop = 7;      // uapi: VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP
inline constexpr uint32_t kVfioFeatureDmaLoggingReport = 8;    // uapi: VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT
inline constexpr uint32_t kVfioFeatureMigDataSize = 9;         // uapi: VFIO_DEVICE_FEATURE_MIG_DATA_SIZE

struct VfioDeviceBindIommufd {  // uapi: struct vfio_device_bind_iommufd
  uint32_t argsz;
  uint32_t flags;
  int32_t iommufd;
  uint32_t out_devid;
  alignas(8) uint64_t token_uuid_ptr;  // newer kernels; older ones stop at out_devid
};
static_assert(sizeof(VfioDeviceBindIommufd) == 24);
static_assert(offsetof(VfioDeviceBindIommufd, out_devid) == 12);
static_assert(offsetof(VfioDeviceBindIommufd, token_uuid_ptr) == 16);
inline constexpr uint32_t kVfioDeviceBindFlagToken = 1u << 0;  // uapi: VFIO_DEVICE_BIND_FLAG_TOKEN

struct VfioDeviceAttachIommufdPt {  // uapi: struct vfio_device_attach_iommufd_pt
  uint32_t argsz;
  uint32_t flags;
  uint32_t pt_id;
  uint32_t pasid;
};
static_assert(sizeof(VfioDeviceAttachIommufdPt) == 16);
static_assert(offsetof(VfioDeviceAttachIommufdPt, pt_id) == 8);

struct VfioDeviceDetachIommufdPt {  // uapi: struct vfio_device_detach_iommufd_pt
  uint32_t argsz;
  uint32_t flags;
  uint32_t pasid;
};
static_assert(sizeof(VfioDeviceDetachIommufdPt) == 12);

struct VfioDeviceFeatureMigration {  // uapi: struct vfio_device_feature_migration
  alignas(8) uint64_t flags;
};
static_assert(sizeof(VfioDeviceFeatureMigration) == 8);
inline constexpr uint64_t kVfioMigrationStopCopy = 1u << 0;  // uapi: VFIO_MIGRATION_STOP_COPY
inline constexpr uint64_t kVfioMigrationP2p = 1u << 1;       // uapi: VFIO_MIGRATION_P2P
inline constexpr uint64_t kVfioMigrationPreCopy = 1u << 2;   // uapi: VFIO_MIGRATION_PRE_COPY

struct VfioDeviceFeatureMigState {  // uapi: struct vfio_device_feature_mig_state
  uint32_t device_state;
  int32_t data_fd;
};
static_assert(sizeof(VfioDeviceFeatureMigState) == 8);
static_assert(offsetof(VfioDeviceFeatureMigState, data_fd) == 4);

struct VfioPrecopyInfo {  // uapi: struct vfio_precopy_info
  uint32_t argsz;
  uint32_t flags;
  alignas(8) uint64_t initial_bytes;
  alignas(8) uint64_t dirty_bytes;
};
static_assert(sizeof(VfioPrecopyInfo) == 24);
static_assert(offsetof(VfioPrecopyInfo, initial_bytes) == 8);
static_assert(offsetof(VfioPrecopyInfo, dirty_bytes) == 16);

struct VfioDeviceFeatureDmaLoggingControl {  // uapi: struct vfio_device_feature_dma_logging_control
  alignas(8) uint64_t page_size;
  uint32_t num_ranges;
  uint32_t reserved;
  alignas(8) uint64_t ranges;  // user pointer to num_ranges VfioDeviceFeatureDmaLoggingRange
};
static_assert(sizeof(VfioDeviceFeatureDmaLoggingControl) == 24);
static_assert(offsetof(VfioDeviceFeatureDmaLoggingControl, num_ranges) == 8);
static_assert(offsetof(VfioDeviceFeatureDmaLoggingControl, ranges) == 16);

struct VfioDeviceFeatureDmaLoggingRange {  // uapi: struct vfio_device_feature_dma_logging_range
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;
};
static_assert(sizeof(VfioDeviceFeatureDmaLoggingRange) == 16);

struct VfioDeviceFeatureDmaLoggingReport {  // uapi: struct vfio_device_feature_dma_logging_report
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;
  alignas(8) uint64_t page_size;
  alignas(8) uint64_t bitmap;  // user pointer
};
static_assert(sizeof(VfioDeviceFeatureDmaLoggingReport) == 32);
static_assert(offsetof(VfioDeviceFeatureDmaLoggingReport, bitmap) == 24);

struct VfioDeviceFeatureMigDataSize {  // uapi: struct vfio_device_feature_mig_data_size
  alignas(8) uint64_t stop_copy_length;
};
static_assert(sizeof(VfioDeviceFeatureMigDataSize) == 8);

// ---- type1 container ----

struct VfioIommuType1Info {  // uapi: struct vfio_iommu_type1_info
  uint32_t argsz;
  uint32_t flags;
  alignas(8) uint64_t iova_pgsizes;
  uint32_t cap_offset;
  uint32_t pad;
};
static_assert(sizeof(VfioIommuType1Info) == 24);
static_assert(offsetof(VfioIommuType1Info, iova_pgsizes) == 8);
static_assert(offsetof(VfioIommuType1Info, cap_offset) == 16);
inline constexpr uint32_t kVfioIommuInfoPgsizes = 1u << 0;  // uapi: VFIO_IOMMU_INFO_PGSIZES
inline constexpr uint32_t kVfioIommuInfoCaps = 1u << 1;     // uapi: VFIO_IOMMU_INFO_CAPS

inline constexpr uint16_t kVfioIommuType1InfoCapIovaRange = 1;  // uapi: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
inline constexpr uint16_t kVfioIommuType1InfoCapMigration = 2;  // uapi: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION
inline constexpr uint16_t kVfioIommuType1InfoDmaAvail = 3;      // uapi: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL

struct VfioIovaRange {  // uapi: struct vfio_iova_range
  uint64_t start;
  uint64_t end;  // inclusive
};
static_assert(sizeof(VfioIovaRange) == 16);

// Followed by nr_iovas VfioIovaRange.
struct VfioIommuType1InfoCapIovaRange {  // uapi: struct vfio_iommu_type1_info_cap_iova_range
  VfioInfoCapHeader header;
  uint32_t nr_iovas;
  uint32_t reserved;
};
static_assert(sizeof(VfioIommuType1InfoCapIovaRange) == 16);

struct VfioIommuType1InfoCapMigration {  // uapi: struct vfio_iommu_type1_info_cap_migration
  VfioInfoCapHeader header;
  uint32_t flags;
  uint64_t pgsize_bitmap;
  uint64_t max_dirty_bitmap_size;  // bytes
};
static_assert(sizeof(VfioIommuType1InfoCapMigration) == 32);
static_assert(offsetof(VfioIommuType1InfoCapMigration, pgsize_bitmap) == 16);
static_assert(offsetof(VfioIommuType1InfoCapMigration, max_dirty_bitmap_size) == 24);

struct VfioIommuType1InfoDmaAvail {  // uapi: struct vfio_iommu_type1_info_dma_avail
  VfioInfoCapHeader header;
  uint32_t avail;
};
static_assert(sizeof(VfioIommuType1InfoDmaAvail) == 12);

struct VfioIommuType1DmaMap {  // uapi: struct vfio_iommu_type1_dma_map
  uint32_t argsz;
  uint32_t flags;
  uint64_t vaddr;
  uint64_t iova;
  uint64_t size;
};
static_assert(sizeof(VfioIommuType1DmaMap) == 32);
static_assert(offsetof(VfioIommuType1DmaMap, vaddr) == 8);
static_assert(offsetof(VfioIommuType1DmaMap, size) == 24);
inline constexpr uint32_t kVfioDmaMapFlagRead = 1u << 0;   // uapi: VFIO_DMA_MAP_FLAG_READ
inline constexpr uint32_t kVfioDmaMapFlagWrite = 1u << 1;  // uapi: VFIO_DMA_MAP_FLAG_WRITE

struct VfioBitmap {  // uapi: struct vfio_bitmap
  uint64_t pgsize;
  uint64_t size;  // bytes
  uint64_t data;  // user pointer (a __u64 * in the kernel's header)
};
static_assert(sizeof(VfioBitmap) == 24);

// Followed by a VfioBitmap when GET_DIRTY_BITMAP is set.
struct VfioIommuType1DmaUnmap {  // uapi: struct vfio_iommu_type1_dma_unmap
  uint32_t argsz;
  uint32_t flags;
  uint64_t iova;
  uint64_t size;
};
static_assert(sizeof(VfioIommuType1DmaUnmap) == 24);
static_assert(offsetof(VfioIommuType1DmaUnmap, iova) == 8);
inline constexpr uint32_t kVfioDmaUnmapFlagGetDirtyBitmap = 1u << 0;  // uapi: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
inline constexpr uint32_t kVfioDmaUnmapFlagAll = 1u << 1;             // uapi: VFIO_DMA_UNMAP_FLAG_ALL

// Followed by a VfioIommuType1DirtyBitmapGet for GET_BITMAP.
struct VfioIommuType1DirtyBitmap {  // uapi: struct vfio_iommu_type1_dirty_bitmap
  uint32_t argsz;
  uint32_t flags;
};
static_assert(sizeof(VfioIommuType1DirtyBitmap) == 8);
inline constexpr uint32_t kVfioIommuDirtyPagesFlagStart = 1u << 0;      // uapi: VFIO_IOMMU_DIRTY_PAGES_FLAG_START
inline constexpr uint32_t kVfioIommuDirtyPagesFlagStop = 1u << 1;       // uapi: VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
inline constexpr uint32_t kVfioIommuDirtyPagesFlagGetBitmap = 1u << 2;  // uapi: VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP

struct VfioIommuType1DirtyBitmapGet {  // uapi: struct vfio_iommu_type1_dirty_bitmap_get
  uint64_t iova;
  uint64_t size;
  VfioBitmap bitmap;
};
static_assert(sizeof(VfioIommuType1DirtyBitmapGet) == 40);
static_assert(offsetof(VfioIommuType1DirtyBitmapGet, bitmap) == 16);

}  // namespace uvio::iommu::abi
