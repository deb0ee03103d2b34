// The vfio-user wire format (QEMU docs/interop/vfio-user.rst, protocol 0.1), written
// from the specification. All fields are host-endian. Section names of the
// specification are given beside each structure.
#pragma once

#include "iommu/abi/vfio.h"

#include <cstddef>
#include <cstdint>

namespace uvio::iommu::vfio_user {

inline constexpr uint16_t kMajor = 0;
inline constexpr uint16_t kMinor = 1;

// "Commands": the command numbers. 14 (dirty pages) was removed from the protocol.
enum Command : uint16_t {
  kVersion = 1,
  kDmaMap = 2,
  kDmaUnmap = 3,
  kDeviceGetInfo = 4,
  kDeviceGetRegionInfo = 5,
  kDeviceGetRegionIoFds = 6,
  kDeviceGetIrqInfo = 7,
  kDeviceSetIrqs = 8,
  kRegionRead = 9,
  kRegionWrite = 10,
  kDmaRead = 11,
  kDmaWrite = 12,
  kDeviceReset = 13,
  kRegionWriteMulti = 15,
  kDeviceFeature = 16,
  kMigDataRead = 17,
  kMigDataWrite = 18,
  kCommandMax = 19,
};

// "Header": 16 bytes before every message.
struct Header {
  uint16_t msg_id;
  uint16_t command;
  uint32_t msg_size;  // header included
  uint32_t flags;
  uint32_t error;     // an errno, valid in replies with kFlagError
};
static_assert(sizeof(Header) == 16);
static_assert(offsetof(Header, msg_size) == 4 && offsetof(Header, flags) == 8 &&
              offsetof(Header, error) == 12);

inline constexpr uint32_t kFlagTypeMask = 0xf;   // bits 0-3
inline constexpr uint32_t kFlagTypeCommand = 0x0;
inline constexpr uint32_t kFlagTypeReply = 0x1;
inline constexpr uint32_t kFlagNoReply = 1u << 4;
inline constexpr uint32_t kFlagError = 1u << 5;

// Defaults from "Version" when a peer leaves a capability out.
inline constexpr uint32_t kDefaultMaxMsgFds = 1;
inline constexpr uint32_t kDefaultMaxDataXferSize = 1u << 20;
inline constexpr uint32_t kDefaultMaxDmaMaps = 65535;
inline constexpr uint64_t kDefaultPgsizes = 4096;

// "VFIO_USER_VERSION": followed by an optional NUL-terminated JSON object.
struct Version {
  uint16_t major;
  uint16_t minor;
};
static_assert(sizeof(Version) == 4);

// "VFIO_USER_DMA_MAP"
struct DmaMap {
  uint32_t argsz;
  uint32_t flags;
  uint64_t offset;   // in the fd sent with the message
  uint64_t address;  // IOVA
  uint64_t size;
};
static_assert(sizeof(DmaMap) == 32);
static_assert(offsetof(DmaMap, offset) == 8 && offsetof(DmaMap, address) == 16 &&
              offsetof(DmaMap, size) == 24);
inline constexpr uint32_t kDmaMapRead = 1u << 0;
inline constexpr uint32_t kDmaMapWrite = 1u << 1;

// "VFIO_USER_DMA_UNMAP": the reply echoes the request.
struct DmaUnmap {
  uint32_t argsz;
  uint32_t flags;
  uint64_t address;
  uint64_t size;
};
static_assert(sizeof(DmaUnmap) == 24);
static_assert(offsetof(DmaUnmap, address) == 8 && offsetof(DmaUnmap, size) == 16);

// "VFIO_USER_DEVICE_GET_INFO" (vfio-user's device info has no capability offset).
struct DeviceInfo {
  uint32_t argsz;
  uint32_t flags;
  uint32_t num_regions;
  uint32_t num_irqs;
};
static_assert(sizeof(DeviceInfo) == 16);

// "VFIO_USER_DEVICE_GET_REGION_INFO": the kernel's vfio_region_info, then its
// capability chain ("VFIO cap header format", "VFIO region info cap sparse mmap").
using RegionInfo = abi::VfioRegionInfo;
using CapHeader = abi::VfioInfoCapHeader;
using SparseMmapCap = abi::VfioRegionInfoCapSparseMmap;
using SparseMmapArea = abi::VfioRegionSparseMmapArea;

// "VFIO_USER_DEVICE_GET_IRQ_INFO": the kernel's vfio_irq_info.
using IrqInfo = abi::VfioIrqInfo;

// "VFIO_USER_DEVICE_SET_IRQS": the kernel's vfio_irq_set; eventfds travel as SCM_RIGHTS,
// bools follow inline.
using IrqSet = abi::VfioIrqSet;

// "VFIO_USER_REGION_READ" / "VFIO_USER_REGION_WRITE": data follows.
struct RegionAccess {
  uint64_t offset;
  uint32_t region;
  uint32_t count;
};
static_assert(sizeof(RegionAccess) == 16);

// "VFIO_USER_DMA_READ" / "VFIO_USER_DMA_WRITE": data follows. The specification's
// DMA_WRITE reply table shows a 4-byte count; real peers echo the 16-byte request,
// so a reply of at least 12 bytes is accepted.
struct DmaAccess {
  uint64_t address;
  uint64_t count;
};
static_assert(sizeof(DmaAccess) == 16);

// "VFIO_USER_DEVICE_FEATURE": the kernel's vfio_device_feature; data follows.
using DeviceFeature = abi::VfioDeviceFeature;

// "VFIO_USER_MIG_DATA_READ" / "VFIO_USER_MIG_DATA_WRITE": data follows.
struct MigData {
  uint32_t argsz;
  uint32_t size;
};
static_assert(sizeof(MigData) == 8);

// ---------------------------------------------------------------------------------
// VFIO definitions the protocol reuses (linux/vfio.h, spelled in iommu/abi/vfio.h),
// under the short names the vfio-user code uses.
// ---------------------------------------------------------------------------------

inline constexpr uint32_t kDeviceFlagsReset = abi::kVfioDeviceFlagsReset;
inline constexpr uint32_t kDeviceFlagsPci = abi::kVfioDeviceFlagsPci;

inline constexpr uint32_t kPciNumRegions = 9;  // VFIO_PCI_NUM_REGIONS: BAR0-5, ROM, CONFIG, VGA
inline constexpr uint32_t kPciNumIrqs = 5;     // VFIO_PCI_NUM_IRQS: INTX, MSI, MSIX, ERR, REQ

inline constexpr uint32_t kRegionFlagRead = abi::kVfioRegionInfoFlagRead;
inline constexpr uint32_t kRegionFlagWrite = abi::kVfioRegionInfoFlagWrite;
inline constexpr uint32_t kRegionFlagMmap = abi::kVfioRegionInfoFlagMmap;
inline constexpr uint32_t kRegionFlagCaps = abi::kVfioRegionInfoFlagCaps;
inline constexpr uint16_t kRegionCapSparseMmap = abi::kVfioRegionInfoCapSparseMmap;
inline constexpr uint16_t kRegionCapMsixMappable = abi::kVfioRegionInfoCapMsixMappable;

inline constexpr uint32_t kIrqInfoEventfd = abi::kVfioIrqInfoEventfd;
inline constexpr uint32_t kIrqInfoMaskable = abi::kVfioIrqInfoMaskable;

inline constexpr uint32_t kIrqSetDataNone = abi::kVfioIrqSetDataNone;
inline constexpr uint32_t kIrqSetDataBool = abi::kVfioIrqSetDataBool;
inline constexpr uint32_t kIrqSetDataEventfd = abi::kVfioIrqSetDataEventfd;
inline constexpr uint32_t kIrqSetActionMask = abi::kVfioIrqSetActionMask;
inline constexpr uint32_t kIrqSetActionUnmask = abi::kVfioIrqSetActionUnmask;
inline constexpr uint32_t kIrqSetActionTrigger = abi::kVfioIrqSetActionTrigger;
inline constexpr uint32_t kIrqSetDataMask = kIrqSetDataNone | kIrqSetDataBool | kIrqSetDataEventfd;
inline constexpr uint32_t kIrqSetActionMaskAll =
    kIrqSetActionMask | kIrqSetActionUnmask | kIrqSetActionTrigger;

inline constexpr uint32_t kFeatureIndexMask = abi::kVfioDeviceFeatureMask;
inline constexpr uint32_t kFeatureGet = abi::kVfioDeviceFeatureGet;
inline constexpr uint32_t kFeatureSet = abi::kVfioDeviceFeatureSet;
inline constexpr uint32_t kFeatureProbe = abi::kVfioDeviceFeatureProbe;
inline constexpr uint32_t kFeatureMigration = abi::kVfioFeatureMigration;
inline constexpr uint32_t kFeatureMigDeviceState = abi::kVfioFeatureMigDeviceState;
inline constexpr uint32_t kFeatureDmaLoggingStart = abi::kVfioFeatureDmaLoggingStart;
inline constexpr uint32_t kFeatureDmaLoggingStop = abi::kVfioFeatureDmaLoggingStop;
inline constexpr uint32_t kFeatureDmaLoggingReport = abi::kVfioFeatureDmaLoggingReport;
inline constexpr uint32_t kFeatureMigDataSize = abi::kVfioFeatureMigDataSize;

inline constexpr uint64_t kMigrationStopCopy = abi::kVfioMigrationStopCopy;
inline constexpr uint64_t kMigrationP2p = abi::kVfioMigrationP2p;
inline constexpr uint64_t kMigrationPreCopy = abi::kVfioMigrationPreCopy;

using FeatureMigration = abi::VfioDeviceFeatureMigration;
using FeatureMigState = abi::VfioDeviceFeatureMigState;  // data_fd is unused by vfio-user
using FeatureMigDataSize = abi::VfioDeviceFeatureMigDataSize;
using DmaLoggingRange = abi::VfioDeviceFeatureDmaLoggingRange;

// "VFIO_DEVICE_FEATURE_DMA_LOGGING_START": the kernel passes a pointer to the ranges;
// vfio-user carries them inline after this header, so the structure differs.
struct DmaLoggingControl {
  uint64_t page_size;
  uint32_t num_ranges;
  uint32_t reserved;
};
static_assert(sizeof(DmaLoggingControl) == 16);

// "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT": the reply appends the bitmap (u64 words)
// where the kernel's structure has a pointer to it.
struct DmaLoggingReport {
  uint64_t iova;
  uint64_t length;
  uint64_t page_size;
};
static_assert(sizeof(DmaLoggingReport) == 24);

}  // namespace uvio::iommu::vfio_user
