#include "iommu/vfio_user_socket.h"

#include <fmt/format.h>

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace uvio::iommu::vfio_user {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

const char* command_name(uint16_t command) {
  switch (command) {
    case kVersion: return "VERSION";
    case kDmaMap: return "DMA_MAP";
    case kDmaUnmap: return "DMA_UNMAP";
    case kDeviceGetInfo: return "DEVICE_GET_INFO";
    case kDeviceGetRegionInfo: return "DEVICE_GET_REGION_INFO";
    case kDeviceGetRegionIoFds: return "DEVICE_GET_REGION_IO_FDS";
    case kDeviceGetIrqInfo: return "DEVICE_GET_IRQ_INFO";
    case kDeviceSetIrqs: return "DEVICE_SET_IRQS";
    case kRegionRead: return "REGION_READ";
    case kRegionWrite: return "REGION_WRITE";
    case kDmaRead: return "DMA_READ";
    case kDmaWrite: return "DMA_WRITE";
    case kDeviceReset: return "DEVICE_RESET";
    case kRegionWriteMulti: return "REGION_WRITE_MULTI";
    case kDeviceFeature: return "DEVICE_FEATURE";
    case kMigDataRead: return "MIG_DATA_READ";
    case kMigDataWrite: return "MIG_DATA_WRITE";
    default: return "unknown command";
  }
}

Status send_message(int sock, Header header, std::span<const std::span<const uint8_t>> parts,
                    std::span<const int> fds) {
  if (fds.size() > kMaxMsgFds) return Status::error(EINVAL, "vfio-user: too many fds for one message");
  size_t total = sizeof(Header);
  for (auto p : parts) total += p.size();
  if (total > UINT32_MAX) return Status::error(EMSGSIZE, "vfio-user: message too large");
  header.msg_size = static_cast<uint32_t>(total);

  iovec iov[8];
  if (parts.size() + 1 > std::size(iov)) return Status::error(EINVAL, "vfio-user: too many message parts");
  size_t niov = 0;
  iov[niov++] = {&header, sizeof(header)};
  for (auto p : parts)
    if (!p.empty()) iov[niov++] = {const_cast<uint8_t*>(p.data()), p.size()};

  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMsgFds)];
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = niov;
  if (!fds.empty()) {
    std::memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }

  size_t sent = 0;
  while (sent < total) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status(fmt::format("vfio-user: sending {} failed", command_name(header.command)));
    }
    sent += static_cast<size_t>(n);
    // The fds went with the first bytes; advance the iovecs past what was sent.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    size_t skip = static_cast<size_t>(n);
    while (msg.msg_iovlen > 0 && skip >= msg.msg_iov[0].iov_len) {
      skip -= msg.msg_iov[0].iov_len;
      msg.msg_iov++;
      msg.msg_iovlen--;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov[0].iov_base = static_cast<char*>(msg.msg_iov[0].iov_base) + skip;
      msg.msg_iov[0].iov_len -= skip;
    }
  }
  return Status::ok();
}

namespace {

// Reads exactly len bytes, collecting any fds that arrive. Returns the bytes read
// (less than len only at end of stream).
Result<size_t> read_full(int sock, void* buf, size_t len, std::vector<UniqueFd>& fds,
                         uint32_t max_fds, bool* truncated_fds) {
  size_t got = 0;
  while (got < len) {
    iovec iov{static_cast<char*>(buf) + got, len - got};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMsgFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("vfio-user: receiving a message failed");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) *truncated_fds = true;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (fds.size() > max_fds) *truncated_fds = true;
  return got;
}

}  // namespace

Result<Message> recv_message(int sock, size_t max_payload, uint32_t max_fds) {
  Message m;
  bool truncated_fds = false;
  auto got = read_full(sock, &m.header, sizeof(Header), m.fds, max_fds, &truncated_fds);
  if (!got) return got.status();
  if (*got == 0) return Status::error(ECONNRESET, "vfio-user: peer closed the connection");
  if (*got < sizeof(Header))
    return Status::error(EPROTO, fmt::format("vfio-user: connection closed after {} bytes of a "
                                             "16-byte header",
                                             *got));
  const Header& h = m.header;
  if (h.msg_size < sizeof(Header))
    return Status::error(EPROTO, fmt::format("vfio-user: message size {} is smaller than the header",
                                             h.msg_size));
  size_t payload = h.msg_size - sizeof(Header);
  if (payload > max_payload)
    return Status::error(EMSGSIZE, fmt::format("vfio-user: {} message of {} bytes exceeds the "
                                               "{}-byte limit",
                                               command_name(h.command), h.msg_size, max_payload));
  m.payload.resize(payload);
  if (payload > 0) {
    got = read_full(sock, m.payload.data(), payload, m.fds, max_fds, &truncated_fds);
    if (!got) return got.status();
    if (*got < payload)
      return Status::error(EPROTO, fmt::format("vfio-user: connection closed inside a {} message "
                                               "({} of {} payload bytes)",
                                               command_name(h.command), *got, payload));
  }
  if (truncated_fds)
    return Status::error(EPROTO, fmt::format("vfio-user: {} message carried more than {} fds",
                                             command_name(h.command), max_fds));
  return m;
}

}  // namespace uvio::iommu::vfio_user
