// Virtio 1.2 constants the driver side needs: device status (§2.1), feature bits
// (§5.1.3, §6), split virtqueues (§2.7), the modern PCI transport (§4.1) and the
// network device (§5.1). Fields are little-endian; uvio targets little-endian hosts.
#pragma once

#include <cstdint>

namespace uvio::virtio {

// §2.1: device status bits.
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// §5.1.3 (network device) and §6 (reserved, transport-level) feature bits.
inline constexpr unsigned kFNetMtu = 3;
inline constexpr unsigned kFNetMac = 5;
inline constexpr unsigned kFNetMrgRxbuf = 15;
inline constexpr unsigned kFNetStatus = 16;
inline constexpr unsigned kFNetCtrlVq = 17;
inline constexpr unsigned kFNetMq = 22;
inline constexpr unsigned kFIndirectDesc = 28;
inline constexpr unsigned kFEventIdx = 29;
inline constexpr unsigned kFVersion1 = 32;
inline constexpr unsigned kFAccessPlatform = 33;
inline constexpr unsigned kFRingPacked = 34;
constexpr uint64_t feature_bit(unsigned feature) { return uint64_t{1} << feature; }

// §2.7.5: struct virtq_desc.
struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;

// §2.7.6: struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }.
inline constexpr uint16_t kAvailFNoInterrupt = 1;
// §2.7.8: struct virtq_used { le16 flags; le16 idx; virtq_used_elem ring[size]; le16 avail_event; }.
inline constexpr uint16_t kUsedFNoNotify = 1;
struct VirtqUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(VirtqUsedElem) == 8);

// §2.7.10: split queue sizes are powers of two up to 32768.
inline constexpr uint32_t kMaxSplitQueueSize = 32768;

// §2.7.7.2 / §2.7.10: whether moving an index from old_idx to new_idx crosses event_idx.
constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// §4.1.4: vendor-specific PCI capability (cap_vndr 0x09) cfg_type values and layout.
namespace pci {
inline constexpr uint8_t kCapIdVendor = 0x09;
inline constexpr uint8_t kCapIdMsix = 0x11;
inline constexpr uint8_t kCommonCfg = 1;
inline constexpr uint8_t kNotifyCfg = 2;
inline constexpr uint8_t kIsrCfg = 3;
inline constexpr uint8_t kDeviceCfg = 4;
// struct virtio_pci_cap: cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2],
// le32 offset, le32 length; virtio_pci_notify_cap adds le32 notify_off_multiplier.
inline constexpr uint32_t kCapCfgType = 3;
inline constexpr uint32_t kCapBar = 4;
inline constexpr uint32_t kCapOffset = 8;
inline constexpr uint32_t kCapLength = 12;
inline constexpr uint32_t kCapNotifyMultiplier = 16;

// §4.1.4.3: struct virtio_pci_common_cfg.
inline constexpr uint32_t kDeviceFeatureSelect = 0x00;
inline constexpr uint32_t kDeviceFeature = 0x04;
inline constexpr uint32_t kDriverFeatureSelect = 0x08;
inline constexpr uint32_t kDriverFeature = 0x0C;
inline constexpr uint32_t kConfigMsixVector = 0x10;
inline constexpr uint32_t kNumQueues = 0x12;
inline constexpr uint32_t kDeviceStatus = 0x14;
inline constexpr uint32_t kConfigGeneration = 0x15;
inline constexpr uint32_t kQueueSelect = 0x16;
inline constexpr uint32_t kQueueSize = 0x18;
inline constexpr uint32_t kQueueMsixVector = 0x1A;
inline constexpr uint32_t kQueueEnable = 0x1C;
inline constexpr uint32_t kQueueNotifyOff = 0x1E;
inline constexpr uint32_t kQueueDesc = 0x20;
inline constexpr uint32_t kQueueDriver = 0x28;
inline constexpr uint32_t kQueueDevice = 0x30;
inline constexpr uint32_t kCommonCfgMinLength = 0x38;
// §4.1.4.3.1: "no vector".
inline constexpr uint16_t kNoVector = 0xFFFF;
}  // namespace pci

// §5.1.4: struct virtio_net_config.
namespace netcfg {
inline constexpr uint32_t kMac = 0;
inline constexpr uint32_t kStatus = 6;
inline constexpr uint32_t kMaxVirtqueuePairs = 8;
inline constexpr uint32_t kMtu = 10;
}  // namespace netcfg
inline constexpr uint16_t kNetSLinkUp = 1;

// §5.1.6: struct virtio_net_hdr with VERSION_1 (num_buffers always present): 12 bytes.
struct NetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(NetHdr) == 12);

// §5.1.6.5: control virtqueue.
inline constexpr uint8_t kCtrlOk = 0;
inline constexpr uint8_t kCtrlClassMq = 4;
inline constexpr uint8_t kCtrlMqVqPairsSet = 0;

}  // namespace uvio::virtio
