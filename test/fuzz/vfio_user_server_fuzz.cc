// libFuzzer target: vfio-user messages as the SERVER receives them. A real emu::Server
// with a real device model (NVMe or virtio-net) serves one connection per input over a
// socketpair; the input is the client's side of the stream (server_records.h): every
// command, with fds attached (counted, up to 31, of either kind), DMA_MAP/UNMAP,
// region access, SET_IRQS, device features, migration data, and VERSION's JSON.
// Replies are read and dropped; the connection closes when the input ends.
#include <uvio/log.h>

#include "emu/registry.h"
#include "emu/server.h"
#include "test/fuzz/fuzz_input.h"
#include "test/fuzz/server_records.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <vector>

namespace vu = uvio::iommu::vfio_user;
using uvio::fuzz::Input;

namespace {

struct Fixture {
  std::unique_ptr<uvio::emu::Server> servers[2];
  int memfd = -1;    // memory a DMA_MAP hands over (8 MiB, more than the seeds map)
  int eventfd = -1;  // an interrupt SET_IRQS hands over
  Fixture() {
    // Quiet: a fuzzer logs every refusal otherwise. UVIO_FUZZ_LOG=1 shows them.
    uvio::log::set_global_level(std::getenv("UVIO_FUZZ_LOG") ? uvio::log::Level::Debug : uvio::log::Level::Emerg);
    const char* types[2] = {"nvme", "virtio-net"};
    uvio::emu::ModelArgs args[2] = {{{"size", "1M"}}, {}};
    for (int i = 0; i < 2; ++i) {
      const auto* type = uvio::emu::ModelRegistry::global().find(types[i]);
      if (!type) abort();
      auto model = type->create(args[i]);
      if (!model) abort();
      auto s = uvio::emu::Server::create(std::move(*model));
      if (!s) abort();
      servers[i] = std::move(*s);
    }
    memfd = ::memfd_create("uvio-fuzz-dma", MFD_CLOEXEC);
    if (memfd < 0 || ::ftruncate(memfd, 8 << 20) != 0) abort();  // sparse: costs nothing
    eventfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (eventfd < 0) abort();
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

struct Chunk {
  std::vector<uint8_t> bytes;
  unsigned fds = 0;
  bool eventfds = false;
};

// Reads and drops whatever the server sent; closes fds it passed (shared BAR pages).
// False at end of stream or on error.
bool drain(int sock) {
  uint8_t buf[65536];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 32)];
  iovec iov{buf, sizeof(buf)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n > 0 && c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      ::close(fd);
    }
  }
  if (n > 0) return true;
  return n < 0 && (errno == EAGAIN || errno == EINTR);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  Input in(data, size);
  uvio::emu::Server& server = *f.servers[in.get<uint8_t>() & 1];

  std::vector<Chunk> chunks;
  while (!in.empty()) {
    uint8_t control = in.get<uint8_t>();
    vu::Header h = in.get<vu::Header>();
    uint16_t len = in.get<uint16_t>();
    auto payload = in.bytes(len);
    if (!(control & uvio::fuzz::kSrvRawSize)) h.msg_size = static_cast<uint32_t>(sizeof(h) + payload.size());
    Chunk c;
    c.fds = control & uvio::fuzz::kSrvFdMask;
    c.eventfds = control & uvio::fuzz::kSrvEventfds;
    const auto* hb = reinterpret_cast<const uint8_t*>(&h);
    c.bytes.assign(hb, hb + sizeof(h));
    c.bytes.insert(c.bytes.end(), payload.begin(), payload.end());
    chunks.push_back(std::move(c));
  }

  auto conn = server.connect();
  if (!conn) abort();
  int sock = *conn;
  size_t chunk = 0, sent = 0;
  bool writing = true;
  for (;;) {
    pollfd p{sock, static_cast<short>(POLLIN | (writing ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, -1) < 0) continue;
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && !drain(sock)) break;
    if (writing && (p.revents & POLLOUT)) {
      if (chunk == chunks.size()) {
        ::shutdown(sock, SHUT_WR);  // the client is done: the server sees the end
        writing = false;
        continue;
      }
      Chunk& c = chunks[chunk];
      iovec iov{c.bytes.data() + sent, c.bytes.size() - sent};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * uvio::fuzz::kSrvFdMask)] = {};
      if (sent == 0 && c.fds > 0) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * c.fds);
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * c.fds);
        for (unsigned i = 0; i < c.fds; ++i) {
          int fd = c.eventfds ? f.eventfd : f.memfd;
          std::memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof(int));
        }
      }
      ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        writing = false;  // the server hung up: read what it said until the end
        continue;
      }
      sent += static_cast<size_t>(n);
      if (sent == c.bytes.size()) {
        ++chunk;
        sent = 0;
      }
    }
  }
  ::close(sock);
  return 0;
}
