// The "device" side of the vfio-user client fuzz target: a thread that reads each
// message the client sends and answers it with the next record of the fuzz input.
//
// A record:  u8 control, u8 errno, u16 payload length, [u16 msg_id, u16 command], payload
//   control bits 0-4: how many fds ride with the message (the client accepts 16)
//           bit 5:    an error reply, carrying `errno`
//           bit 6:    msg_id and command are given (else the request's are echoed)
//           bit 7:    a command from the server (DMA_READ / DMA_WRITE) sent before the
//                     answer, rather than the answer itself; its address (the payload's
//                     first 8 bytes) counts from the start of the client's DMA memory
// Shared by the fuzz target and the seed recorder, so seeds are in the target's format.
#pragma once

#include "iommu/abi/vfio_user.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace uvio::fuzz {

inline constexpr uint8_t kRecFdMask = 0x1f;
inline constexpr uint8_t kRecError = 1u << 5;
inline constexpr uint8_t kRecRawHeader = 1u << 6;
inline constexpr uint8_t kRecServerCommand = 1u << 7;

// Appends one record that answers a request with `payload` and `fds` fds.
inline void append_reply_record(std::vector<uint8_t>& out, const std::vector<uint8_t>& payload, unsigned fds,
                                uint32_t error = 0) {
  uint8_t control = static_cast<uint8_t>((fds & kRecFdMask) | (error ? kRecError : 0));
  uint16_t len = static_cast<uint16_t>(payload.size());
  out.push_back(control);
  out.push_back(static_cast<uint8_t>(error));
  out.push_back(static_cast<uint8_t>(len & 0xff));
  out.push_back(static_cast<uint8_t>(len >> 8));
  out.insert(out.end(), payload.begin(), payload.begin() + len);
}

// Appends a DMA_READ or DMA_WRITE from the server, `address` counted from the start of
// the client's DMA memory; a DMA_WRITE carries `data`.
inline void append_server_dma_record(std::vector<uint8_t>& out, bool write, uint64_t address,
                                     const std::vector<uint8_t>& data, uint64_t count) {
  std::vector<uint8_t> payload(16);
  std::memcpy(payload.data(), &address, 8);
  std::memcpy(payload.data() + 8, &count, 8);
  if (write) payload.insert(payload.end(), data.begin(), data.end());
  uint16_t len = static_cast<uint16_t>(payload.size());
  uint16_t id = 0xfff0, command = write ? iommu::vfio_user::kDmaWrite : iommu::vfio_user::kDmaRead;
  out.push_back(kRecServerCommand | kRecRawHeader);
  out.push_back(0);
  out.push_back(static_cast<uint8_t>(len & 0xff));
  out.push_back(static_cast<uint8_t>(len >> 8));
  for (uint16_t v : {id, command}) {
    out.push_back(static_cast<uint8_t>(v & 0xff));
    out.push_back(static_cast<uint8_t>(v >> 8));
  }
  out.insert(out.end(), payload.begin(), payload.end());
}

}  // namespace uvio::fuzz
