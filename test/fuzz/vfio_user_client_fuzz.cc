// libFuzzer target: vfio-user messages as the CLIENT receives them. The real client
// (iommu/vfio_user.cc over iommu/vfio_user_socket.cc) talks over a socketpair to a
// scripted peer that answers each request with the next record of the input
// (scripted_peer.h): VERSION and its JSON capabilities, DEVICE_GET_INFO, region info
// with capability chains and sparse areas, IRQ info, REGION_READ, the migration
// features and MIG_DATA_READ, DMA logging reports, DMA_READ/DMA_WRITE from the server,
// each with a chosen number of fds.
#include <uvio/log.h>
#include <uvio/mem.h>

#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "iommu/vfio_user_socket.h"
#include "test/fuzz/client_script.h"
#include "test/fuzz/fuzz_input.h"
#include "test/fuzz/scripted_peer.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

namespace vu = uvio::iommu::vfio_user;
using uvio::fuzz::Input;

namespace {

struct Fixture {
  std::unique_ptr<uvio::Memory> mem;
  int memfd = -1;  // what the peer's fds are: a small file a region could map
  void* dirty_buf = nullptr;
  uint64_t dma_base = 0;  // IOVA of the client's memory: server DMA addresses count from it
  Fixture() {
    // Quiet: a fuzzer logs every refusal otherwise. UVIO_FUZZ_LOG=1 shows them.
    uvio::log::set_global_level(std::getenv("UVIO_FUZZ_LOG") ? uvio::log::Level::Debug : uvio::log::Level::Emerg);
    uvio::MemConfig cfg;
    cfg.total_bytes = 2u << 20;
    cfg.hugepages = false;
    auto m = uvio::Memory::create(cfg);
    if (!m) abort();
    mem = std::move(*m);
    dirty_buf = mem->alloc(64 * 4096, 4096);
    dma_base = mem->areas().front()->iova;
    memfd = ::memfd_create("uvio-fuzz-region", MFD_CLOEXEC);
    if (memfd < 0 || ::ftruncate(memfd, 64 * 1024) != 0) abort();
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// Answers requests from the records until they run out, then hangs up.
void scripted_peer(int sock, Input in) {
  for (;;) {
    auto req = vu::recv_message(sock);
    if (!req) break;
    if ((req->header.flags & vu::kFlagTypeMask) != vu::kFlagTypeCommand) continue;  // its answer to our DMA
    bool answered = false;
    while (!answered) {
      if (in.empty()) goto hang_up;
      uint8_t control = in.get<uint8_t>();
      uint8_t err = in.get<uint8_t>();
      uint16_t len = in.get<uint16_t>();
      vu::Header h{req->header.msg_id, req->header.command, 0, vu::kFlagTypeReply, 0};
      if (control & uvio::fuzz::kRecRawHeader) {
        h.msg_id = in.get<uint16_t>();
        h.command = in.get<uint16_t>();
      }
      if (control & uvio::fuzz::kRecServerCommand) {
        h.flags = vu::kFlagTypeCommand;
        if (!(control & uvio::fuzz::kRecRawHeader)) h.command = (len & 1) ? vu::kDmaWrite : vu::kDmaRead;
      } else {
        answered = true;
      }
      if (control & uvio::fuzz::kRecError) {
        h.flags |= vu::kFlagError;
        h.error = err;
      }
      auto bytes = in.bytes(len);
      std::vector<uint8_t> payload(bytes.begin(), bytes.end());
      if ((control & uvio::fuzz::kRecServerCommand) && payload.size() >= sizeof(uint64_t)) {
        // A DMA address counts from the client's memory, which lies somewhere new in
        // every process: the fuzzer then reaches inside and around it without guessing.
        uint64_t address;
        std::memcpy(&address, payload.data(), sizeof(address));
        address += fixture().dma_base;
        std::memcpy(payload.data(), &address, sizeof(address));
      }
      int fds[uvio::fuzz::kRecFdMask];
      unsigned nfds = control & uvio::fuzz::kRecFdMask;
      for (unsigned i = 0; i < nfds; ++i) fds[i] = fixture().memfd;
      // send_message refuses more than 16 fds; more go raw so the client sees them.
      if (nfds > vu::kMaxMsgFds) {
        h.msg_size = static_cast<uint32_t>(sizeof(h) + payload.size());
        iovec iov[2] = {{&h, sizeof(h)}, {payload.data(), payload.size()}};
        alignas(cmsghdr) char control_buf[CMSG_SPACE(sizeof(int) * uvio::fuzz::kRecFdMask)] = {};
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = payload.empty() ? 1 : 2;
        msg.msg_control = control_buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        if (::sendmsg(sock, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(h) + payload.size())) goto hang_up;
      } else if (!vu::send_message(sock, h, payload, std::span<const int>(fds, nfds))) {
        goto hang_up;
      }
    }
  }
hang_up:
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  std::thread peer(scripted_peer, sv[1], Input(data, size));
  {
    uvio::iommu::DmaSpace space(*f.mem);
    auto dev = uvio::iommu::open_vfio_user_fd(sv[0], "fuzz", space, {});
    if (dev) uvio::fuzz::exercise_vfio_user_client(**dev, f.mem->iova_of(f.dirty_buf));
    // The device goes first (its destructor unmaps from `space` and closes the socket).
  }
  peer.join();
  return 0;
}
