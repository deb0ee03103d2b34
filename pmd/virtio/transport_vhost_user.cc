// A vhost-user frontend (QEMU docs/interop/vhost-user.rst): the virtio device is a
// backend process reached over a UNIX socket; we hand it our memory as fd-backed
// regions, describe each ring by its address in our address space, and exchange
// kick and call eventfds. The backend reads descriptors holding IOVAs, which it
// translates through the regions' guest addresses (= our IOVAs).
#include <uvio/intr.h>
#include <uvio/log.h>

#include "pmd/virtio/transport.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace uvio::virtio {
namespace {

// Message header: u32 request, u32 flags, u32 payload size.
enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kSetMemTable = 5,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kSetVringEnable = 18,
};
constexpr uint32_t kFlagVersion = 0x1;
constexpr uint32_t kFlagReply = 0x4;
constexpr unsigned kFProtocolFeatures = 30;  // VHOST_USER_F_PROTOCOL_FEATURES
constexpr uint64_t kProtocolMq = 1u << 0;
constexpr uint32_t kMaxRegions = 8;  // the protocol's limit for SET_MEM_TABLE
constexpr uint16_t kMaxQueueSize = 1024;

struct Header {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
};
struct VringState {
  uint32_t index;
  uint32_t num;
};
struct VringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
struct MemRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};
struct MemTable {
  uint32_t nregions;
  uint32_t padding;
  MemRegion regions[kMaxRegions];
};

// What the backend cannot give us without the configuration-space protocol
// extensions, or what needs a control queue the backend does not serve.
constexpr uint64_t kUnsupported = feature_bit(kFNetMac) | feature_bit(kFNetStatus) | feature_bit(kFNetMtu) |
                                  feature_bit(kFNetCtrlVq) | feature_bit(kFNetMq) | feature_bit(kFAccessPlatform) |
                                  feature_bit(kFProtocolFeatures);

class VhostUserTransport final : public Transport {
 public:
  VhostUserTransport(Memory& mem, std::string path, uint16_t pairs, bool packed_ring)
      : mem_(mem), path_(std::move(path)), queues_(static_cast<uint16_t>(2 * pairs)),
        refused_(kUnsupported | (packed_ring ? 0 : feature_bit(kFRingPacked))) {}
  ~VhostUserTransport() override {
    if (sock_ >= 0) ::close(sock_);
    for (int fd : kick_) if (fd >= 0) ::close(fd);
    for (int fd : call_) if (fd >= 0) ::close(fd);
  }

  Status init() {
    sock_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock_ < 0) return errno_status("socket(AF_UNIX)");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof(addr.sun_path))
      return Status::error(ENAMETOOLONG, fmt::format("vhost-user socket path {} is too long", path_));
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    if (::connect(sock_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0)
      return errno_status(fmt::format("connect to vhost-user backend at {} (is the backend running?)", path_));
    for (uint16_t q = 0; q < queues_; q++) {
      auto k = make_eventfd();
      if (!k) return k.status();
      kick_.push_back(*k);
      auto c = make_eventfd();
      if (!c) return c.status();
      call_.push_back(*c);
    }
    started_.assign(queues_, false);
    UVIO_TRY(send(kSetOwner, nullptr, 0));
    auto features = get_u64(kGetFeatures);
    if (!features) return features.status();
    backend_features_ = *features;
    if (backend_features_ & feature_bit(kFProtocolFeatures)) {
      auto proto = get_u64(kGetProtocolFeatures);
      if (!proto) return proto.status();
      uint64_t ours = *proto & kProtocolMq;
      UVIO_TRY(send(kSetProtocolFeatures, &ours, sizeof(ours)));
    }
    return Status::ok();
  }

  std::string_view name() const override { return path_; }
  bool behind_iommu() const override { return false; }

  Status reset() override {
    // GET_VRING_BASE stops a ring in the backend; afterwards it touches none of its buffers.
    for (uint16_t q = 0; q < queues_; q++) {
      if (!started_[q]) continue;
      VringState s{q, 0};
      UVIO_TRY(send(kGetVringBase, &s, sizeof(s)));
      auto reply = receive(kGetVringBase, &s, sizeof(s));
      if (!reply) return reply;
      started_[q] = false;
    }
    status_ = kStatusAcknowledge | kStatusDriver;
    return Status::ok();
  }

  Result<uint64_t> device_features() override { return backend_features_ & ~refused_; }

  Status set_features(uint64_t features) override {
    if (features & ~device_features().value())
      return Status::error(EINVAL, fmt::format("features {:#x} were not offered by the vhost-user backend", features));
    uint64_t wire = features | (backend_features_ & feature_bit(kFProtocolFeatures));
    UVIO_TRY(send(kSetFeatures, &wire, sizeof(wire)));
    packed_ = features & feature_bit(kFRingPacked);
    UVIO_TRY(send_mem_table());
    status_ |= kStatusFeaturesOk;
    return Status::ok();
  }

  Status driver_ok() override {
    if (backend_features_ & feature_bit(kFProtocolFeatures)) {
      // With protocol features rings start disabled.
      for (uint16_t q = 0; q < queues_; q++) {
        if (!started_[q]) continue;
        VringState s{q, 1};
        UVIO_TRY(send(kSetVringEnable, &s, sizeof(s)));
      }
    }
    status_ |= kStatusDriverOk;
    return Status::ok();
  }

  Result<uint8_t> status() override { return status_; }
  uint16_t max_queues() const override { return queues_; }
  Result<uint16_t> max_queue_size(uint16_t index) override { return index < queues_ ? kMaxQueueSize : uint16_t{0}; }

  Status setup_queue(const QueueLayout& q, bool) override {
    if (q.index >= queues_)
      return Status::error(EINVAL, fmt::format("{}: queue {} does not exist ({} queues)", path_, q.index, queues_));
    drain_eventfd(call_[q.index]);
    UVIO_TRY(send_fd(kSetVringCall, q.index, call_[q.index]));
    VringState num{q.index, q.size};
    UVIO_TRY(send(kSetVringNum, &num, sizeof(num)));
    // The ring's starting position; for a packed ring bit 15 carries the driver's
    // wrap counter, which starts at 1 (§2.8.1).
    VringState base{q.index, packed_ ? 0x8000u : 0u};
    UVIO_TRY(send(kSetVringBase, &base, sizeof(base)));
    VringAddr addr{q.index, 0, reinterpret_cast<uint64_t>(q.desc_va), reinterpret_cast<uint64_t>(q.used_va),
                   reinterpret_cast<uint64_t>(q.avail_va), 0};
    UVIO_TRY(send(kSetVringAddr, &addr, sizeof(addr)));
    UVIO_TRY(send_fd(kSetVringKick, q.index, kick_[q.index]));
    started_[q.index] = true;
    return Status::ok();
  }

  Doorbell doorbell(uint16_t index) override {
    Doorbell d;
    d.queue = index;
    if (index < queues_) d.eventfd = kick_[index];
    return d;
  }
  void notify(uint16_t index) override {
    if (index < queues_) signal_eventfd(kick_[index]);
  }
  int interrupt_fd(uint16_t index) const override { return index < queues_ ? call_[index] : -1; }
  Status read_config(uint32_t, void*, size_t) override {
    return Status::error(EOPNOTSUPP, "vhost-user backends have no device configuration for uvio");
  }

 private:
  Status send_mem_table() {
    auto areas = mem_.areas();
    if (areas.size() > kMaxRegions)
      return Status::error(E2BIG, fmt::format("the runtime has {} memory areas, vhost-user takes at most {}: "
                                              "use fewer, larger areas",
                                              areas.size(), kMaxRegions));
    MemTable table{};
    std::vector<int> fds;
    for (const MemArea* a : areas) {
      if (a->fd < 0) return Status::error(EINVAL, "a memory area has no fd to share with the vhost-user backend");
      if (a->iova == kBadIova)
        return Status::error(EINVAL, "vhost-user needs IOVA-as-VA (or contiguous IOVA) memory areas");
      MemRegion& r = table.regions[table.nregions++];
      r.guest_phys_addr = a->iova;
      r.memory_size = a->len;
      r.userspace_addr = reinterpret_cast<uint64_t>(a->va);
      r.mmap_offset = a->fd_offset;
      fds.push_back(a->fd);
    }
    size_t len = offsetof(MemTable, regions) + sizeof(MemRegion) * table.nregions;
    // Backends read the full eight-region table size in older versions; send it whole.
    len = sizeof(table);
    return send(kSetMemTable, &table, len, fds.data(), fds.size());
  }

  Status send_fd(Request req, uint16_t index, int fd) {
    uint64_t v = index;
    return send(req, &v, sizeof(v), &fd, 1);
  }

  Status send(uint32_t request, const void* payload, size_t len, const int* fds = nullptr, size_t nfds = 0) {
    Header h{request, kFlagVersion, static_cast<uint32_t>(len)};
    std::vector<uint8_t> buf(sizeof(h) + len);
    std::memcpy(buf.data(), &h, sizeof(h));
    if (len) std::memcpy(buf.data() + sizeof(h), payload, len);
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<uint8_t> control(CMSG_SPACE(sizeof(int) * kMaxRegions));
    if (nfds) {
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do n = ::sendmsg(sock_, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno_status(fmt::format("vhost-user request {} to {}", request, path_));
    if (static_cast<size_t>(n) != buf.size())
      return Status::error(EIO, fmt::format("vhost-user request {} to {} was cut short", request, path_));
    return Status::ok();
  }

  Status read_exact(void* buf, size_t len) {
    auto* p = static_cast<uint8_t*>(buf);
    while (len) {
      ssize_t n = ::recv(sock_, p, len, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::error(n == 0 ? ECONNRESET : errno, fmt::format("vhost-user backend {} closed the connection", path_));
      p += n;
      len -= static_cast<size_t>(n);
    }
    return Status::ok();
  }

  // A reply must echo the request and carry exactly the payload size we expect.
  Status receive(uint32_t request, void* payload, size_t len) {
    Header h{};
    UVIO_TRY(read_exact(&h, sizeof(h)));
    if (h.request != request || !(h.flags & kFlagReply) || h.size != len)
      return Status::error(EPROTO, fmt::format("vhost-user backend {} answered request {} with request {}, flags "
                                               "{:#x}, {} bytes",
                                               path_, request, h.request, h.flags, h.size));
    return read_exact(payload, len);
  }

  Result<uint64_t> get_u64(uint32_t request) {
    UVIO_TRY(send(request, nullptr, 0));
    uint64_t v = 0;
    UVIO_TRY(receive(request, &v, sizeof(v)));
    return v;
  }

  Memory& mem_;
  std::string path_;
  uint16_t queues_;
  uint64_t refused_;  // features never offered to the driver
  int sock_ = -1;
  uint64_t backend_features_ = 0;
  uint8_t status_ = 0;
  bool packed_ = false;
  std::vector<int> kick_, call_;
  std::vector<bool> started_;
};

}  // namespace

Result<std::unique_ptr<Transport>> open_vhost_user_transport(Memory& mem, std::string_view path,
                                                             uint16_t queue_pairs, bool packed_ring) {
  if (queue_pairs == 0 || queue_pairs > 128)
    return Status::error(EINVAL, fmt::format("vhost-user queues={} must be from 1 to 128", queue_pairs));
  auto t = std::make_unique<VhostUserTransport>(mem, std::string(path), queue_pairs, packed_ring);
  UVIO_TRY(t->init());
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace uvio::virtio
