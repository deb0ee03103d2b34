// The input of the vfio-user server fuzz target: the messages a client sends.
//
// First byte: bit 0 picks the device model behind the server (NVMe or virtio-net).
// Then records:  u8 control, the 16-byte vfio-user header, u16 payload length, payload
//   control bits 0-4: how many fds ride with the message (the server accepts 16)
//           bit 5:    the fds are eventfds (interrupts) rather than a memory file (DMA)
//           bit 6:    send the header's msg_size as written (else the true size), so
//                     the framing itself is fuzzed
// Shared by the fuzz target and the seed recorder.
#pragma once

#include "iommu/abi/vfio_user.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace uvio::fuzz {

inline constexpr uint8_t kSrvFdMask = 0x1f;
inline constexpr uint8_t kSrvEventfds = 1u << 5;
inline constexpr uint8_t kSrvRawSize = 1u << 6;

inline void append_request_record(std::vector<uint8_t>& out, const iommu::vfio_user::Header& h,
                                  const std::vector<uint8_t>& payload, unsigned fds, bool eventfds) {
  out.push_back(static_cast<uint8_t>((fds & kSrvFdMask) | (eventfds ? kSrvEventfds : 0)));
  const auto* hb = reinterpret_cast<const uint8_t*>(&h);
  out.insert(out.end(), hb, hb + sizeof(h));
  uint16_t len = static_cast<uint16_t>(payload.size());
  out.push_back(static_cast<uint8_t>(len & 0xff));
  out.push_back(static_cast<uint8_t>(len >> 8));
  out.insert(out.end(), payload.begin(), payload.begin() + len);
}

}  // namespace uvio::fuzz
