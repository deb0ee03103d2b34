// Virtio 1.2 constants the virtio-net device model needs: the modern PCI transport
// (§4.1), split virtqueues (§2.7) and the network device (§5.1). All fields are
// little-endian on the wire; this code targets little-endian hosts only.
#pragma once

#include <cstdint>

namespace uvio::emu::virtio_net::spec {

// §4.1.2: non-transitional network device.
inline constexpr uint16_t kVendorId = 0x1AF4;
inline constexpr uint16_t kDeviceId = 0x1041;  // 0x1040 + device type 1
inline constexpr uint16_t kSubsystemId = 0x0040;  // §4.1.2.1: 0x40 or higher
inline constexpr uint8_t kRevision = 1;
inline constexpr uint32_t kClassEthernet = 0x020000;

// §4.1.4: vendor-specific capability cfg_type values.
inline constexpr uint8_t kPciCapVendor = 0x09;
inline constexpr uint8_t kCapCommonCfg = 1;
inline constexpr uint8_t kCapNotifyCfg = 2;
inline constexpr uint8_t kCapIsrCfg = 3;
inline constexpr uint8_t kCapDeviceCfg = 4;

// §4.1.4.3: struct virtio_pci_common_cfg.
namespace common {
inline constexpr uint32_t kDeviceFeatureSelect = 0x00;  // le32
inline constexpr uint32_t kDeviceFeature = 0x04;        // le32, RO
inline constexpr uint32_t kDriverFeatureSelect = 0x08;  // le32
inline constexpr uint32_t kDriverFeature = 0x0C;        // le32
inline constexpr uint32_t kConfigMsixVector = 0x10;     // le16
inline constexpr uint32_t kNumQueues = 0x12;            // le16, RO
inline constexpr uint32_t kDeviceStatus = 0x14;         // u8
inline constexpr uint32_t kConfigGeneration = 0x15;     // u8, RO
inline constexpr uint32_t kQueueSelect = 0x16;          // le16
inline constexpr uint32_t kQueueSize = 0x18;            // le16
inline constexpr uint32_t kQueueMsixVector = 0x1A;      // le16
inline constexpr uint32_t kQueueEnable = 0x1C;          // le16
inline constexpr uint32_t kQueueNotifyOff = 0x1E;       // le16, RO
inline constexpr uint32_t kQueueDesc = 0x20;            // le64
inline constexpr uint32_t kQueueDriver = 0x28;          // le64
inline constexpr uint32_t kQueueDevice = 0x30;          // le64
inline constexpr uint32_t kSize = 0x38;                 // no NOTIF_CONFIG_DATA / RING_RESET
}  // namespace common

// §4.1.4.3.1: MSI-X vector meaning "no vector".
inline constexpr uint16_t kNoVector = 0xFFFF;

// §2.1: device status bits.
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// §4.1.4.5: ISR status bits.
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;

// Feature bits: §5.1.3 (net), §6 (reserved, transport-independent).
inline constexpr unsigned kFMtu = 3;
inline constexpr unsigned kFMac = 5;
inline constexpr unsigned kFMrgRxbuf = 15;
inline constexpr unsigned kFStatus = 16;
inline constexpr unsigned kFCtrlVq = 17;
inline constexpr unsigned kFCtrlRx = 18;
inline constexpr unsigned kFMq = 22;
inline constexpr unsigned kFCtrlMacAddr = 23;
inline constexpr unsigned kFIndirectDesc = 28;
inline constexpr unsigned kFEventIdx = 29;
inline constexpr unsigned kFVersion1 = 32;
inline constexpr unsigned kFAccessPlatform = 33;
inline constexpr unsigned kFRingPacked = 34;

constexpr uint64_t bit(unsigned feature) { return uint64_t{1} << feature; }

// §2.7.5: struct virtq_desc, 16 bytes.
struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == 16);
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;

// §2.8.13: struct pvirtq_desc, 16 bytes; AVAIL and USED flag the ring slot's owner
// against the wrap counters (§2.8.1).
struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);
inline constexpr uint16_t kPackedDescFAvail = 1u << 7;
inline constexpr uint16_t kPackedDescFUsed = 1u << 15;
inline constexpr uint64_t kPackedDescIdOffset = 12;
inline constexpr uint64_t kPackedDescFlagsOffset = 14;

// §2.8.10: struct pvirtq_event_suppress { le16 desc (offset | wrap << 15); le16 flags; }.
inline constexpr uint64_t kEventSuppressFlagsOffset = 2;
inline constexpr uint16_t kEventFlagEnable = 0;
inline constexpr uint16_t kEventFlagDisable = 1;
inline constexpr uint16_t kEventFlagDesc = 2;

// §2.7.6: struct virtq_avail { flags; idx; ring[size]; used_event; }.
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint64_t kAvailIdxOffset = 2;
inline constexpr uint64_t kAvailRingOffset = 4;

// §2.7.8: struct virtq_used { flags; idx; ring[size] of {le32 id; le32 len}; avail_event; }.
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint64_t kUsedIdxOffset = 2;
inline constexpr uint64_t kUsedRingOffset = 4;
inline constexpr uint64_t kUsedElemSize = 8;

// §2.7.7.2 / §2.7.10: the interrupt / notification threshold test with event index.
constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// §5.1.4: struct virtio_net_config.
namespace netcfg {
inline constexpr uint32_t kMac = 0;                 // u8[6]
inline constexpr uint32_t kStatus = 6;              // le16
inline constexpr uint32_t kMaxVirtqueuePairs = 8;   // le16
inline constexpr uint32_t kMtu = 10;                // le16
inline constexpr uint32_t kSize = 12;
}  // namespace netcfg
inline constexpr uint16_t kNetSLinkUp = 1;

// §5.1.6: struct virtio_net_hdr; num_buffers is always present with VERSION_1.
inline constexpr uint32_t kNetHdrSize = 12;
inline constexpr uint32_t kNetHdrNumBuffersOffset = 10;

// §5.1.6.5: control virtqueue classes, commands and acks.
inline constexpr uint8_t kCtrlOk = 0;
inline constexpr uint8_t kCtrlErr = 1;
inline constexpr uint8_t kCtrlClassRx = 0;
inline constexpr uint8_t kCtrlRxPromisc = 0;
inline constexpr uint8_t kCtrlRxNoBcast = 5;
inline constexpr uint8_t kCtrlClassMac = 1;
inline constexpr uint8_t kCtrlMacTableSet = 0;
inline constexpr uint8_t kCtrlMacAddrSet = 1;
inline constexpr uint8_t kCtrlClassMq = 4;
inline constexpr uint8_t kCtrlMqVqPairsSet = 0;
inline constexpr uint16_t kCtrlMqPairsMin = 1;
inline constexpr uint16_t kCtrlMqPairsMax = 0x8000;

// Ethernet: a header of 14 bytes plus one VLAN tag around the MTU's payload.
inline constexpr uint32_t kEthHeader = 14;
inline constexpr uint32_t kVlanTag = 4;

}  // namespace uvio::emu::virtio_net::spec
