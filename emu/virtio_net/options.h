// Options of a virtio-net port, as given on the command line of the device server
// (`virtio-net:queues=2,mac=52:54:00:00:00:01,peer=wire0`).
//
//   queues=N        queue pairs offered (max_virtqueue_pairs, VIRTIO_NET_F_MQ), 1..32; 1
//   mac=MAC         station address in config space (VIRTIO_NET_F_MAC); 52:54:00:12:34:56
//   mtu=N           MTU in config space (VIRTIO_NET_F_MTU), 68..9000; 1500
//   queue_size=N    largest queue the device accepts, a power of two 2..1024; 256
//   loopback=1      the port receives what it sends
//   peer=NAME       connect back to back with the other port given the same NAME
//   event_idx=0     do not offer VIRTIO_F_RING_EVENT_IDX (offered by default)
//   indirect=0      do not offer VIRTIO_F_INDIRECT_DESC (offered by default)
//   packed=1        also offer VIRTIO_F_RING_PACKED (off by default)
//   faults=LIST     fault injection for driver hardening tests, off by default; LIST is
//                   names joined by '+', each fault fires once after DRIVER_OK:
//                     used-id-range   the next used element names id = queue size
//                     used-id-repeat  the next used element is written twice
//                     used-len        the next used element's len exceeds its buffer
//                     config-change   the next device config read sees
//                                     config_generation move (and a config interrupt)
//                     used-wrap       packed rings: the next used descriptor carries
//                                     the previous lap's wrap counter (a phase that
//                                     flipped twice); split rings ignore it
//                     device-error    the next transmit request fails the device as
//                                     an internal error would: DEVICE_NEEDS_RESET, and
//                                     no queue is served until the driver resets it
//                     stall           from then on the data queues are not served
//                                     (until the next reset): notifications go
//                                     unanswered and no used element comes back
//
// Without loopback or peer the port has no link: status reads link down and every
// frame sent is dropped (tx_drops).
#pragma once

#include <uvio/status.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace uvio::emu::virtio_net {

enum Fault : uint32_t {
  kFaultUsedIdRange = 1u << 0,
  kFaultUsedIdRepeat = 1u << 1,
  kFaultUsedLen = 1u << 2,
  kFaultConfigChange = 1u << 3,
  kFaultStall = 1u << 4,
  kFaultUsedWrap = 1u << 5,
  kFaultDeviceError = 1u << 6,
  kAllFaults = (1u << 7) - 1,
};

struct Options {
  uint16_t queue_pairs = 1;
  std::array<uint8_t, 6> mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  uint16_t mtu = 1500;
  uint16_t queue_size = 256;
  bool loopback = false;
  std::string peer;
  bool event_idx = true;
  bool indirect = true;
  bool packed = false;
  uint32_t faults = 0;
};

inline constexpr uint16_t kMaxQueuePairs = 32;

// Applies one key=value; an unknown key or a bad value is EINVAL naming both.
Status apply_option(Options& options, std::string_view key, std::string_view value);
// "key=value,key=value" (empty: the defaults).
Result<Options> parse_options(std::string_view text);

}  // namespace uvio::emu::virtio_net
