// Framed vfio-user messages over a stream UNIX socket, with file descriptors passed as
// SCM_RIGHTS. Shared by the client backend (iommu/vfio_user.cc) and the server (emu/).
#pragma once

#include <uvio/status.h>

#include "iommu/abi/vfio_user.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace uvio::iommu::vfio_user {

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

struct Message {
  Header header{};
  std::vector<uint8_t> payload;  // header.msg_size - sizeof(Header) bytes
  std::vector<UniqueFd> fds;
};

// Largest message either side accepts: a data transfer of max_data_xfer_size plus the
// biggest fixed part (16 bytes) and slack for region info capability chains.
inline constexpr size_t kMaxPayload = kDefaultMaxDataXferSize + 4096;
// File descriptors accepted with one message (max_msg_fds we announce).
inline constexpr uint32_t kMaxMsgFds = 16;

// Sends header + payload parts as one message; fds ride with its first byte.
// header.msg_size is filled in. EPIPE/ECONNRESET when the peer is gone.
Status send_message(int sock, Header header, std::span<const std::span<const uint8_t>> parts,
                    std::span<const int> fds = {});
inline Status send_message(int sock, Header header, std::span<const uint8_t> payload,
                           std::span<const int> fds = {}) {
  std::span<const uint8_t> parts[1] = {payload};
  return send_message(sock, header, std::span<const std::span<const uint8_t>>(parts, 1), fds);
}

// Receives one whole message. Refuses (and closes any fds received) a message whose
// size is smaller than its header or larger than max_payload, a message carrying more
// than max_fds fds or fds that were cut off, and a connection closed mid-message.
// ECONNRESET with "closed" in the message when the peer closed between messages.
Result<Message> recv_message(int sock, size_t max_payload = kMaxPayload,
                             uint32_t max_fds = kMaxMsgFds);

// Copies a trivially-copyable struct out of a payload; false when it is too short.
template <class T>
bool read_struct(std::span<const uint8_t> bytes, size_t offset, T* out);

const char* command_name(uint16_t command);

}  // namespace uvio::iommu::vfio_user

#include <cstring>
#include <type_traits>

template <class T>
bool uvio::iommu::vfio_user::read_struct(std::span<const uint8_t> bytes, size_t offset, T* out) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) return false;
  std::memcpy(out, bytes.data() + offset, sizeof(T));
  return true;
}
