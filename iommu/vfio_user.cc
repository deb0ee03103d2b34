// The vfio-user client backend: iommu::Device over a UNIX socket. Every reply is checked
// against what was asked before a byte of it is used; a reply that is malformed,
// truncated, oversized or out of order closes the connection, after which every call
// fails with the reason.
#include "iommu/vfio_user_client.h"

#include <uvio/log.h>

#include "iommu/abi/vfio_user.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_socket.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <map>
#include <mutex>

namespace uvio::iommu {

namespace vu = vfio_user;
using vu::UniqueFd;

namespace {

constexpr const char* kLog = "vfio-user";
constexpr uint32_t kOurMaxXfer = vu::kDefaultMaxDataXferSize;
// Region info with capabilities larger than this is not a real device's.
constexpr uint32_t kMaxRegionInfo = 64 * 1024;
constexpr int kMaxCaps = 32;

template <class T>
std::span<const uint8_t> bytes_of(const T& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}

// The socket, shared by the device, its DMA domain and its dirty tracker.
class Connection {
 public:
  Connection(UniqueFd sock, std::string name) : sock_(std::move(sock)), name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  uint32_t max_xfer() const { return max_xfer_; }
  uint32_t max_fds() const { return max_fds_; }
  uint32_t max_dma_maps() const { return max_dma_maps_; }
  uint64_t pgsizes() const { return pgsizes_; }

  Status handshake();

  // Sends a command and returns its reply. A refused command (error bit) returns the
  // server's errno and leaves the connection up; anything malformed closes it.
  Result<vu::Message> request(uint16_t command, std::span<const std::span<const uint8_t>> parts,
                              std::span<const int> fds = {});
  Result<vu::Message> request(uint16_t command, std::span<const uint8_t> payload,
                              std::span<const int> fds = {}) {
    std::span<const uint8_t> parts[1] = {payload};
    return request(command, std::span<const std::span<const uint8_t>>(parts, 1), fds);
  }
  // Closes the connection for a reply that broke the protocol; returns the reason.
  Status fail(Status why);

  // Memory the server may reach with DMA_READ/DMA_WRITE: what the client mapped.
  void add_map(uint64_t iova, void* va, uint64_t len) {
    std::lock_guard g(maps_lock_);
    maps_[iova] = {static_cast<std::byte*>(va), len};
  }
  void remove_map(uint64_t iova) {
    std::lock_guard g(maps_lock_);
    maps_.erase(iova);
  }

 private:
  Status fail_locked(Status why);
  Status serve_dma(const vu::Message& m);
  std::byte* dma_target(uint64_t iova, uint64_t len);

  std::mutex lock_;  // one request in flight: replies arrive in order
  UniqueFd sock_;
  std::string name_;
  uint16_t next_id_ = 1;
  Status broken_;
  uint32_t max_xfer_ = vu::kDefaultMaxDataXferSize;
  uint32_t max_fds_ = vu::kDefaultMaxMsgFds;
  uint32_t max_dma_maps_ = vu::kDefaultMaxDmaMaps;
  uint64_t pgsizes_ = vu::kDefaultPgsizes;

  struct Map {
    std::byte* va;
    uint64_t len;
  };
  std::mutex maps_lock_;
  std::map<uint64_t, Map> maps_;
};

Status Connection::fail_locked(Status why) {
  if (broken_.is_ok()) {
    broken_ = Status::error(why.code(), fmt::format("{}: {}; the connection is closed", name_, why.message()));
    UVIO_LOG(Err, kLog, "{}", broken_.message());
    if (sock_.valid()) ::shutdown(sock_.get(), SHUT_RDWR);
  }
  return broken_;
}

Status Connection::fail(Status why) {
  std::lock_guard g(lock_);
  return fail_locked(std::move(why));
}

std::byte* Connection::dma_target(uint64_t iova, uint64_t len) {
  std::lock_guard g(maps_lock_);
  auto it = maps_.upper_bound(iova);
  if (it == maps_.begin()) return nullptr;
  --it;
  uint64_t off = iova - it->first;
  if (off >= it->second.len || len > it->second.len - off) return nullptr;
  return it->second.va + off;
}

// A DMA_READ/DMA_WRITE from the server, answered only inside memory this client mapped.
Status Connection::serve_dma(const vu::Message& m) {
  vu::Header rh{m.header.msg_id, m.header.command, 0, vu::kFlagTypeReply, 0};
  vu::DmaAccess a{};
  if (!vu::read_struct(m.payload, 0, &a) || !m.fds.empty())
    return Status::error(EPROTO, fmt::format("malformed {} request from the server",
                                             vu::command_name(m.header.command)));
  bool write = m.header.command == vu::kDmaWrite;
  std::byte* p = nullptr;
  int err = 0;
  if (a.count > kOurMaxXfer) {
    err = EINVAL;
  } else if (write && m.payload.size() - sizeof(a) != a.count) {
    return Status::error(EPROTO, "DMA_WRITE from the server says one size and carries another");
  } else if ((p = dma_target(a.address, a.count)) == nullptr) {
    err = EFAULT;  // outside registered memory
  }
  if (err != 0) {
    rh.flags |= vu::kFlagError;
    rh.error = static_cast<uint32_t>(err);
    return vu::send_message(sock_.get(), rh, std::span<const uint8_t>());
  }
  if (write) {
    std::memcpy(p, m.payload.data() + sizeof(a), a.count);
    return vu::send_message(sock_.get(), rh, bytes_of(a));
  }
  std::span<const uint8_t> parts[2] = {bytes_of(a), {reinterpret_cast<const uint8_t*>(p), a.count}};
  return vu::send_message(sock_.get(), rh, std::span<const std::span<const uint8_t>>(parts, 2));
}

Result<vu::Message> Connection::request(uint16_t command, std::span<const std::span<const uint8_t>> parts,
                                        std::span<const int> fds) {
  std::lock_guard g(lock_);
  if (!broken_) return broken_;
  uint16_t id = next_id_++;
  vu::Header h{id, command, 0, vu::kFlagTypeCommand, 0};
  Status s = vu::send_message(sock_.get(), h, parts, fds);
  if (!s) return fail_locked(s);
  for (;;) {
    // Replies are bounded by what we announced (max_data_xfer_size) plus headers.
    auto got = vu::recv_message(sock_.get(), vu::kMaxPayload, vu::kMaxMsgFds);
    if (!got) return fail_locked(got.status());
    vu::Message& m = *got;
    uint32_t type = m.header.flags & vu::kFlagTypeMask;
    if (type == vu::kFlagTypeCommand &&
        (m.header.command == vu::kDmaRead || m.header.command == vu::kDmaWrite)) {
      // Without a twin socket the server's DMA requests share this channel.
      Status ds = serve_dma(m);
      if (!ds) return fail_locked(ds);
      continue;
    }
    if (type != vu::kFlagTypeReply)
      return fail_locked(Status::error(EPROTO, fmt::format("unexpected message type {} (command {}) "
                                                           "while waiting for a {} reply",
                                                           type, m.header.command,
                                                           vu::command_name(command))));
    if (m.header.msg_id != id || m.header.command != command)
      return fail_locked(Status::error(EPROTO, fmt::format("reply id {} command {} does not answer "
                                                           "request id {} ({})",
                                                           m.header.msg_id, m.header.command, id,
                                                           vu::command_name(command))));
    if (m.header.flags & vu::kFlagError) {
      // An error reply may carry a payload; it is ignored.
      int err = m.header.error != 0 && m.header.error < 4096 ? static_cast<int>(m.header.error) : EIO;
      return Status::error(err, fmt::format("{}: the server refused {}", name_, vu::command_name(command)));
    }
    return std::move(m);
  }
}

Status Connection::handshake() {
  nlohmann::json caps = {{"capabilities",
                          {{"max_msg_fds", vu::kMaxMsgFds},
                           {"max_data_xfer_size", kOurMaxXfer},
                           {"pgsizes", vu::kDefaultPgsizes}}}};
  std::string text = caps.dump();
  vu::Version v{vu::kMajor, vu::kMinor};
  std::span<const uint8_t> parts[2] = {bytes_of(v),
                                       {reinterpret_cast<const uint8_t*>(text.c_str()), text.size() + 1}};
  auto reply = request(vu::kVersion, std::span<const std::span<const uint8_t>>(parts, 2));
  if (!reply) return reply.status();
  const auto& p = reply->payload;
  vu::Version rv{};
  if (!vu::read_struct(p, 0, &rv)) return fail(Status::error(EPROTO, "VERSION reply shorter than 4 bytes"));
  if (rv.major != vu::kMajor || rv.minor > vu::kMinor)
    return fail(Status::error(EPROTO, fmt::format("server answered protocol {}.{} to our {}.{}", rv.major,
                                                  rv.minor, vu::kMajor, vu::kMinor)));
  if (p.size() > sizeof(rv)) {
    std::string_view json(reinterpret_cast<const char*>(p.data() + sizeof(rv)), p.size() - sizeof(rv));
    // Capabilities are a few dozen bytes; a bound keeps a hostile document small.
    if (json.size() > 4096) return fail(Status::error(E2BIG, "VERSION reply capabilities larger than 4 KiB"));
    size_t nul = json.find('\0');
    if (nul == std::string_view::npos)
      return fail(Status::error(EPROTO, "VERSION reply capabilities are not NUL-terminated"));
    auto j = nlohmann::json::parse(json.substr(0, nul), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return fail(Status::error(EPROTO, "VERSION reply capabilities are not a JSON object"));
    // Unknown keys are ignored; known ones are used only when they are sane numbers.
    auto c = j.find("capabilities");
    if (c != j.end() && c->is_object()) {
      auto num = [&](const char* key, uint64_t lo, uint64_t hi, uint64_t* out) {
        auto it = c->find(key);
        if (it != c->end() && it->is_number_unsigned()) {
          uint64_t n = it->get<uint64_t>();
          if (n >= lo && n <= hi) *out = n;
        }
      };
      uint64_t v64 = max_xfer_;
      num("max_data_xfer_size", 512, kOurMaxXfer, &v64);
      max_xfer_ = static_cast<uint32_t>(v64);
      v64 = max_fds_;
      num("max_msg_fds", 1, vu::kMaxMsgFds, &v64);
      max_fds_ = static_cast<uint32_t>(v64);
      v64 = max_dma_maps_;
      num("max_dma_maps", 1, UINT32_MAX, &v64);
      max_dma_maps_ = static_cast<uint32_t>(v64);
      num("pgsizes", 4096, UINT64_MAX, &pgsizes_);
    }
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------

class VfioUserDirtyTracker final : public DirtyTracker {
 public:
  explicit VfioUserDirtyTracker(std::shared_ptr<Connection> c) : conn_(std::move(c)) {}
  std::string_view name() const override { return "vfio-user DMA logging"; }
  Status start(std::span<const IovaRange> ranges, uint64_t page_size) override;
  Status read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size,
                        std::span<uint64_t> bitmap) override;
  Status stop() override;

 private:
  std::shared_ptr<Connection> conn_;
};

Status VfioUserDirtyTracker::start(std::span<const IovaRange> ranges, uint64_t page_size) {
  std::vector<uint8_t> payload;
  auto put = [&](const auto& v) {
    auto b = bytes_of(v);
    payload.insert(payload.end(), b.begin(), b.end());
  };
  size_t need = sizeof(vu::DeviceFeature) + sizeof(vu::DmaLoggingControl) +
                ranges.size() * sizeof(vu::DmaLoggingRange);
  if (need > conn_->max_xfer())
    return Status::error(E2BIG, "DMA logging: too many ranges for one message; merge them first");
  put(vu::DeviceFeature{static_cast<uint32_t>(need), vu::kFeatureSet | vu::kFeatureDmaLoggingStart});
  put(vu::DmaLoggingControl{page_size, static_cast<uint32_t>(ranges.size()), 0});
  for (const auto& r : ranges) put(vu::DmaLoggingRange{r.start, r.length()});
  auto reply = conn_->request(vu::kDeviceFeature, payload);
  return reply.status();
}

Status VfioUserDirtyTracker::stop() {
  vu::DeviceFeature f{sizeof(f), vu::kFeatureSet | vu::kFeatureDmaLoggingStop};
  return conn_->request(vu::kDeviceFeature, bytes_of(f)).status();
}

Status VfioUserDirtyTracker::read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size,
                                            std::span<uint64_t> bitmap) {
  if (page_size == 0 || !std::has_single_bit(page_size) || length == 0)
    return Status::error(EINVAL, "DMA logging report: page size must be a power of two, length non-zero");
  uint64_t pages = length / page_size + (length % page_size != 0);
  if (bitmap.size() < (pages + 63) / 64)
    return Status::error(EINVAL, "DMA logging report: bitmap too small for the range");
  // One message carries at most max_xfer bytes of bitmap: report in chunks of whole
  // words so each chunk's bits land on a word boundary of the caller's bitmap.
  uint64_t fixed = sizeof(vu::DeviceFeature) + sizeof(vu::DmaLoggingReport);
  uint64_t words_per_msg = (conn_->max_xfer() - fixed) / 8;
  uint64_t pages_per_msg = words_per_msg * 64;
  for (uint64_t first = 0; first < pages; first += pages_per_msg) {
    uint64_t n = std::min(pages_per_msg, pages - first);
    uint64_t chunk_iova = iova + first * page_size;
    uint64_t chunk_len = std::min(n * page_size, length - first * page_size);
    uint64_t words = (n + 63) / 64;
    uint32_t argsz = static_cast<uint32_t>(fixed + words * 8);
    vu::DeviceFeature f{argsz, vu::kFeatureGet | vu::kFeatureDmaLoggingReport};
    vu::DmaLoggingReport rep{chunk_iova, chunk_len, page_size};
    std::span<const uint8_t> parts[2] = {bytes_of(f), bytes_of(rep)};
    auto reply = conn_->request(vu::kDeviceFeature, std::span<const std::span<const uint8_t>>(parts, 2));
    if (!reply) return reply.status();
    const auto& p = reply->payload;
    vu::DmaLoggingReport echo{};
    if (p.size() != fixed + words * 8 || !vu::read_struct(p, sizeof(vu::DeviceFeature), &echo) ||
        echo.iova != chunk_iova || echo.length != chunk_len || echo.page_size != page_size)
      return conn_->fail(Status::error(EPROTO, fmt::format("DMA logging report reply of {} bytes does not "
                                                           "match the {}-byte bitmap asked for",
                                                           p.size(), fixed + words * 8)));
    std::memcpy(bitmap.data() + first / 64, p.data() + fixed, words * 8);
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------

class VfioUserDomain final : public DmaDomain {
 public:
  VfioUserDomain(std::shared_ptr<Connection> c, DirtyTracker* tracker)
      : conn_(std::move(c)), tracker_(tracker) {}
  std::string_view name() const override { return conn_->name(); }
  Status map(uint64_t iova, void* va, uint64_t len, int fd, uint64_t fd_offset) override;
  Status unmap(uint64_t iova, uint64_t len) override;
  std::vector<IovaRange> iova_ranges() const override { return {{0, UINT64_MAX}}; }
  uint64_t page_size_mask() const override { return conn_->pgsizes(); }
  uint32_t max_mappings() const override { return conn_->max_dma_maps(); }
  DirtyTracker* dirty_tracker() override { return tracker_; }
  uint64_t map_calls() const override { return map_calls_; }
  uint64_t unmap_calls() const override { return unmap_calls_; }

 private:
  std::shared_ptr<Connection> conn_;
  DirtyTracker* tracker_;
  std::atomic<uint64_t> map_calls_{0};
  std::atomic<uint64_t> unmap_calls_{0};
};

Status VfioUserDomain::map(uint64_t iova, void* va, uint64_t len, int fd, uint64_t fd_offset) {
  vu::DmaMap m{sizeof(vu::DmaMap), vu::kDmaMapRead | vu::kDmaMapWrite, fd >= 0 ? fd_offset : 0, iova, len};
  ++map_calls_;
  int fds[1] = {fd};
  auto reply = conn_->request(vu::kDmaMap, bytes_of(m), fd >= 0 ? std::span<const int>(fds, 1) : std::span<const int>());
  if (!reply)
    return Status::error(reply.status().code(), fmt::format("{} (DMA map of iova {:#x} size {:#x})",
                                                            reply.status().message(), iova, len));
  conn_->add_map(iova, va, len);
  return Status::ok();
}

Status VfioUserDomain::unmap(uint64_t iova, uint64_t len) {
  vu::DmaUnmap u{sizeof(vu::DmaUnmap), 0, iova, len};
  ++unmap_calls_;
  // The server may touch the memory until it replies; stop serving its DMA first.
  conn_->remove_map(iova);
  auto reply = conn_->request(vu::kDmaUnmap, bytes_of(u));
  if (!reply)
    return Status::error(reply.status().code(), fmt::format("{} (DMA unmap of iova {:#x} size {:#x})",
                                                            reply.status().message(), iova, len));
  return Status::ok();
}

// ---------------------------------------------------------------------------------

class VfioUserDevice final : public Device {
 public:
  VfioUserDevice(std::shared_ptr<Connection> c, std::string name)
      : conn_(std::move(c)), name_(std::move(name)), tracker_(conn_) {
    domain_ = std::make_shared<VfioUserDomain>(conn_, &tracker_);
  }
  ~VfioUserDevice() override;

  Status init();
  Status attach(DmaSpace& space) {
    UVIO_TRY(space.attach(domain_));
    space_ = &space;
    return Status::ok();
  }

  std::string_view backend() const override { return "vfio-user"; }
  std::string_view backend_reason() const override { return "the device is a vfio-user socket"; }
  std::string_view name() const override { return name_; }
  const DeviceInfo& info() const override { return info_; }
  DmaDomain& domain() override { return *domain_; }

  Result<RegionInfo> region_info(uint32_t index) override;
  Status region_read(uint32_t index, uint64_t offset, void* buf, size_t len) override;
  Status region_write(uint32_t index, uint64_t offset, const void* buf, size_t len) override;
  Result<void*> region_map(uint32_t index, uint64_t offset, uint64_t len) override;
  Status reset() override;
  Result<IrqInfo> irq_info(uint32_t index) override;
  Status set_irq_eventfds(uint32_t index, uint32_t start, std::span<const int> fds) override;
  Status disable_irqs(uint32_t index) override;
  Status feature(uint32_t flags, uint32_t feature_id, std::span<uint8_t> data) override;
  Result<MigrationCaps> migration_caps() override;
  Result<MigState> mig_state() override;
  Status set_mig_state(MigState next) override;
  Result<size_t> mig_read(void* buf, size_t len) override;
  Status mig_write(const void* buf, size_t len) override;
  Result<uint64_t> mig_data_size() override;
  Result<PrecopyInfo> precopy_info() override;
  DirtyTracker* dma_logging() override { return &tracker_; }

 private:
  struct Region {
    bool known = false;
    RegionInfo info;
    uint64_t mmap_offset = 0;
    UniqueFd fd;
  };
  Result<Region*> region(uint32_t index);
  Status region_access(uint32_t index, uint64_t offset, uint8_t* buf, size_t len, bool write);
  Status irq_set(uint32_t index, uint32_t flags, uint32_t start, uint32_t count, std::span<const int> fds);
  Result<vu::Message> feature_request(uint32_t flags, std::span<const uint8_t> data, uint32_t reply_data);

  std::shared_ptr<Connection> conn_;
  std::string name_;
  VfioUserDirtyTracker tracker_;
  std::shared_ptr<VfioUserDomain> domain_;
  DmaSpace* space_ = nullptr;
  DeviceInfo info_;
  std::mutex regions_lock_;
  std::map<uint32_t, Region> regions_;
  std::vector<std::pair<void*, size_t>> mappings_;
};

VfioUserDevice::~VfioUserDevice() {
  if (space_) {
    Status s = space_->detach(domain_.get());
    if (!s) UVIO_LOG(Debug, kLog, "{}: detaching DMA on close: {}", name_, s.describe());
  }
  for (auto [p, len] : mappings_) ::munmap(p, len);
}

Status VfioUserDevice::init() {
  UVIO_TRY(conn_->handshake());
  vu::DeviceInfo in{sizeof(vu::DeviceInfo), 0, 0, 0};
  auto reply = conn_->request(vu::kDeviceGetInfo, bytes_of(in));
  if (!reply) return reply.status();
  vu::DeviceInfo out{};
  if (!vu::read_struct(reply->payload, 0, &out) || out.argsz < sizeof(out))
    return conn_->fail(Status::error(EPROTO, "DEVICE_GET_INFO reply shorter than 16 bytes"));
  if (out.num_regions > 64 || out.num_irqs > 64)
    return conn_->fail(Status::error(EPROTO, fmt::format("server claims {} regions and {} IRQ types",
                                                         out.num_regions, out.num_irqs)));
  info_.flags = out.flags;
  info_.num_regions = out.num_regions;
  info_.num_irqs = out.num_irqs;
  return Status::ok();
}

// Region info, asked twice when the server has capabilities: first with the base size
// (the reply says the size it needs), then with that size to get the capability chain
// and the fd that backs the mappable parts.
Result<VfioUserDevice::Region*> VfioUserDevice::region(uint32_t index) {
  if (index >= info_.num_regions)
    return Status::error(EINVAL, fmt::format("{}: region {} does not exist (the device has {})", name_,
                                             index, info_.num_regions));
  std::lock_guard g(regions_lock_);
  Region& reg = regions_[index];
  if (reg.known) return &reg;
  uint32_t argsz = sizeof(vu::RegionInfo);
  vu::Message m{};
  vu::RegionInfo ri{};
  for (int attempt = 0; attempt < 2; ++attempt) {
    vu::RegionInfo q{argsz, 0, index, 0, 0, 0};
    auto reply = conn_->request(vu::kDeviceGetRegionInfo, bytes_of(q));
    if (!reply) return reply.status();
    m = std::move(*reply);
    if (!vu::read_struct(m.payload, 0, &ri) || ri.index != index || ri.argsz < sizeof(ri))
      return conn_->fail(Status::error(EPROTO, fmt::format("region {} info reply is malformed", index)));
    if (ri.argsz <= argsz || attempt == 1) break;
    if (ri.argsz > kMaxRegionInfo)
      return conn_->fail(Status::error(EPROTO, fmt::format("region {} info claims {} bytes", index, ri.argsz)));
    argsz = ri.argsz;
  }
  if (m.payload.size() > argsz)
    return conn_->fail(Status::error(EPROTO, fmt::format("region {} info reply is larger than asked", index)));
  RegionInfo info;
  info.index = index;
  info.flags = ri.flags;
  info.size = ri.size;
  info.offset = ri.offset;
  if ((ri.flags & vu::kRegionFlagCaps) && ri.cap_offset != 0) {
    uint32_t at = ri.cap_offset;
    for (int n = 0; at != 0; ++n) {
      vu::CapHeader ch{};
      if (n >= kMaxCaps || at < sizeof(ri) || !vu::read_struct(m.payload, at, &ch))
        return conn_->fail(Status::error(EPROTO, fmt::format("region {} capability chain is broken at "
                                                             "offset {}",
                                                             index, at)));
      info.cap_ids.push_back(ch.id);
      if (ch.id == vu::kRegionCapSparseMmap) {
        vu::SparseMmapCap sc{};
        if (!vu::read_struct(m.payload, at, &sc) ||
            (m.payload.size() - at - sizeof(sc)) / sizeof(vu::SparseMmapArea) < sc.nr_areas)
          return conn_->fail(Status::error(EPROTO, fmt::format("region {} sparse mmap capability is "
                                                               "truncated",
                                                               index)));
        for (uint32_t i = 0; i < sc.nr_areas; ++i) {
          vu::SparseMmapArea a{};
          vu::read_struct(m.payload, at + sizeof(sc) + i * sizeof(a), &a);
          if (a.offset > ri.size || a.size > ri.size - a.offset)
            return conn_->fail(Status::error(EPROTO, fmt::format("region {} sparse area [{:#x}, +{:#x}) "
                                                                 "lies outside the region",
                                                                 index, a.offset, a.size)));
          info.sparse.push_back({a.offset, a.size});
        }
      } else if (ch.id == vu::kRegionCapMsixMappable) {
        info.msix_mappable = true;
      }
      // The next capability must lie further on, so a chain cannot loop.
      if (ch.next != 0 && ch.next <= at)
        return conn_->fail(Status::error(EPROTO, fmt::format("region {} capability chain loops", index)));
      at = ch.next;
    }
  }
  reg.info = std::move(info);
  reg.mmap_offset = ri.offset;
  if ((ri.flags & vu::kRegionFlagMmap) && !m.fds.empty()) reg.fd = std::move(m.fds[0]);
  reg.known = true;
  return &reg;
}

Result<RegionInfo> VfioUserDevice::region_info(uint32_t index) {
  auto r = region(index);
  if (!r) return r.status();
  return (*r)->info;
}

Status VfioUserDevice::region_access(uint32_t index, uint64_t offset, uint8_t* buf, size_t len, bool write) {
  auto reg = region(index);
  if (!reg) return reg.status();
  uint64_t size = (*reg)->info.size;
  if (offset > size || len > size - offset)
    return Status::error(EINVAL, fmt::format("{}: access [{:#x}, +{}) is outside region {} ({:#x} bytes)",
                                             name_, offset, len, index, size));
  size_t done = 0;
  while (done < len) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(len - done, conn_->max_xfer()));
    vu::RegionAccess a{offset + done, index, n};
    std::span<const uint8_t> parts[2] = {bytes_of(a), {buf + done, write ? n : 0u}};
    auto reply = conn_->request(write ? vu::kRegionWrite : vu::kRegionRead,
                                std::span<const std::span<const uint8_t>>(parts, 2));
    if (!reply) return reply.status();
    vu::RegionAccess echo{};
    size_t want = sizeof(echo) + (write ? 0 : n);
    if (!vu::read_struct(reply->payload, 0, &echo) || reply->payload.size() != want ||
        echo.offset != a.offset || echo.region != index || echo.count != n)
      return conn_->fail(Status::error(EPROTO, fmt::format("{} reply of {} bytes does not answer a "
                                                           "{}-byte access",
                                                           write ? "REGION_WRITE" : "REGION_READ",
                                                           reply->payload.size(), n)));
    if (!write) std::memcpy(buf + done, reply->payload.data() + sizeof(echo), n);
    done += n;
  }
  return Status::ok();
}

Status VfioUserDevice::region_read(uint32_t index, uint64_t offset, void* buf, size_t len) {
  return region_access(index, offset, static_cast<uint8_t*>(buf), len, false);
}

Status VfioUserDevice::region_write(uint32_t index, uint64_t offset, const void* buf, size_t len) {
  return region_access(index, offset, static_cast<uint8_t*>(const_cast<void*>(buf)), len, true);
}

Result<void*> VfioUserDevice::region_map(uint32_t index, uint64_t offset, uint64_t len) {
  auto reg = region(index);
  if (!reg) return reg.status();
  Region& r = **reg;
  if (!r.info.mappable() || !r.fd.valid())
    return Status::error(ENOTSUP, fmt::format("{}: region {} cannot be mmapped", name_, index));
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (len == 0 || offset % page || offset > r.info.size || len > r.info.size - offset)
    return Status::error(EINVAL, fmt::format("{}: [{:#x}, +{:#x}) of region {} is not page-aligned inside it",
                                             name_, offset, len, index));
  bool inside = r.info.sparse.empty();
  for (const auto& a : r.info.sparse) inside |= offset >= a.offset && offset - a.offset + len <= a.size;
  if (!inside)
    return Status::error(EINVAL, fmt::format("{}: [{:#x}, +{:#x}) of region {} is not inside one mappable "
                                             "area",
                                             name_, offset, len, index));
  int prot = (r.info.readable() ? PROT_READ : 0) | (r.info.writable() ? PROT_WRITE : 0);
  void* p = ::mmap(nullptr, len, prot, MAP_SHARED, r.fd.get(), static_cast<off_t>(r.mmap_offset + offset));
  if (p == MAP_FAILED) return errno_status(fmt::format("{}: mmap of region {} failed", name_, index));
  std::lock_guard g(regions_lock_);
  mappings_.emplace_back(p, len);
  return p;
}

Status VfioUserDevice::reset() { return conn_->request(vu::kDeviceReset, std::span<const uint8_t>()).status(); }

Result<IrqInfo> VfioUserDevice::irq_info(uint32_t index) {
  if (index >= info_.num_irqs)
    return Status::error(EINVAL, fmt::format("{}: IRQ index {} does not exist", name_, index));
  vu::IrqInfo q{sizeof(vu::IrqInfo), 0, index, 0};
  auto reply = conn_->request(vu::kDeviceGetIrqInfo, bytes_of(q));
  if (!reply) return reply.status();
  vu::IrqInfo out{};
  if (!vu::read_struct(reply->payload, 0, &out) || out.index != index)
    return conn_->fail(Status::error(EPROTO, "DEVICE_GET_IRQ_INFO reply is malformed"));
  if (out.count > 2048)
    return conn_->fail(Status::error(EPROTO, fmt::format("IRQ index {} claims {} vectors", index, out.count)));
  return IrqInfo{index, out.flags, out.count};
}

Status VfioUserDevice::irq_set(uint32_t index, uint32_t flags, uint32_t start, uint32_t count,
                               std::span<const int> fds) {
  vu::IrqSet s{sizeof(vu::IrqSet), flags, index, start, count};
  return conn_->request(vu::kDeviceSetIrqs, bytes_of(s), fds).status();
}

// fds of -1 cannot travel as SCM_RIGHTS: runs of them become DATA_EVENTFD messages with
// no fds, which de-assign those vectors; runs of real fds go max_msg_fds at a time.
Status VfioUserDevice::set_irq_eventfds(uint32_t index, uint32_t start, std::span<const int> fds) {
  constexpr uint32_t kFlags = vu::kIrqSetDataEventfd | vu::kIrqSetActionTrigger;
  size_t i = 0;
  while (i < fds.size()) {
    bool wire = fds[i] >= 0;
    size_t j = i;
    while (j < fds.size() && (fds[j] >= 0) == wire && (!wire || j - i < conn_->max_fds())) ++j;
    uint32_t first = start + static_cast<uint32_t>(i), n = static_cast<uint32_t>(j - i);
    UVIO_TRY(irq_set(index, kFlags, first, n, wire ? fds.subspan(i, j - i) : std::span<const int>()));
    i = j;
  }
  return Status::ok();
}

Status VfioUserDevice::disable_irqs(uint32_t index) {
  return irq_set(index, vu::kIrqSetDataNone | vu::kIrqSetActionTrigger, 0, 0, {});
}

Result<vu::Message> VfioUserDevice::feature_request(uint32_t flags, std::span<const uint8_t> data,
                                                    uint32_t reply_data) {
  uint64_t argsz = sizeof(vu::DeviceFeature) + std::max<uint64_t>(data.size(), reply_data);
  if (argsz > conn_->max_xfer()) return Status::error(E2BIG, "device feature payload too large");
  vu::DeviceFeature f{static_cast<uint32_t>(argsz), flags};
  std::span<const uint8_t> parts[2] = {bytes_of(f), data};
  auto reply = conn_->request(vu::kDeviceFeature, std::span<const std::span<const uint8_t>>(parts, 2));
  if (!reply) return reply.status();
  if (reply->payload.size() < sizeof(vu::DeviceFeature) + reply_data)
    return conn_->fail(Status::error(EPROTO, fmt::format("DEVICE_FEATURE {} reply has {} bytes; {} expected",
                                                         flags & vu::kFeatureIndexMask, reply->payload.size(),
                                                         sizeof(vu::DeviceFeature) + reply_data)));
  return reply;
}

Status VfioUserDevice::feature(uint32_t flags, uint32_t feature_id, std::span<uint8_t> data) {
  bool get = flags & vu::kFeatureGet, probe = flags & vu::kFeatureProbe;
  auto reply = feature_request((flags & ~vu::kFeatureIndexMask) | (feature_id & vu::kFeatureIndexMask),
                               probe || get ? std::span<const uint8_t>() : data,
                               get && !probe ? static_cast<uint32_t>(data.size()) : 0);
  if (!reply) return reply.status();
  if (get && !probe) std::memcpy(data.data(), reply->payload.data() + sizeof(vu::DeviceFeature), data.size());
  return Status::ok();
}

Result<MigrationCaps> VfioUserDevice::migration_caps() {
  auto reply = feature_request(vu::kFeatureGet | vu::kFeatureMigration, {}, sizeof(vu::FeatureMigration));
  if (!reply) {
    if (reply.status().code() == ENOTTY || reply.status().code() == ENOSYS) return MigrationCaps{};
    return reply.status();
  }
  vu::FeatureMigration mf{};
  vu::read_struct(reply->payload, sizeof(vu::DeviceFeature), &mf);
  return MigrationCaps{true, mf.flags};
}

Result<MigState> VfioUserDevice::mig_state() {
  auto reply = feature_request(vu::kFeatureGet | vu::kFeatureMigDeviceState, {}, sizeof(vu::FeatureMigState));
  if (!reply) return reply.status();
  vu::FeatureMigState st{};
  vu::read_struct(reply->payload, sizeof(vu::DeviceFeature), &st);
  if (st.device_state > static_cast<uint32_t>(MigState::PreCopyP2P))
    return conn_->fail(Status::error(EPROTO, fmt::format("server reports migration state {}", st.device_state)));
  return static_cast<MigState>(st.device_state);
}

Status VfioUserDevice::set_mig_state(MigState next) {
  vu::FeatureMigState want{static_cast<uint32_t>(next), -1};
  auto reply = feature_request(vu::kFeatureSet | vu::kFeatureMigDeviceState, bytes_of(want), sizeof(want));
  if (!reply) return reply.status();
  vu::FeatureMigState now{};
  vu::read_struct(reply->payload, sizeof(vu::DeviceFeature), &now);
  if (now.device_state != want.device_state)
    return Status::error(EIO, fmt::format("{}: asked for migration state {}, the device is in {}", name_,
                                          want.device_state, now.device_state));
  return Status::ok();
}

// Fills buf until the server has no more data now. A reply may be padded beyond its
// `size`, and a short reply is not the end in PRE_COPY: only a 0-byte reply is.
Result<size_t> VfioUserDevice::mig_read(void* buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(len - done, conn_->max_xfer() - sizeof(vu::MigData)));
    vu::MigData q{static_cast<uint32_t>(sizeof(vu::MigData) + n), n};
    auto reply = conn_->request(vu::kMigDataRead, bytes_of(q));
    if (!reply) return reply.status();
    vu::MigData out{};
    if (!vu::read_struct(reply->payload, 0, &out) || out.size > n ||
        out.size > reply->payload.size() - sizeof(out))
      return conn_->fail(Status::error(EPROTO, fmt::format("MIG_DATA_READ reply of {} bytes claims {} bytes "
                                                           "of data for {} asked",
                                                           reply->payload.size(), out.size, n)));
    if (out.size == 0) break;
    std::memcpy(static_cast<uint8_t*>(buf) + done, reply->payload.data() + sizeof(out), out.size);
    done += out.size;
  }
  return done;
}

Status VfioUserDevice::mig_write(const void* buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(len - done, conn_->max_xfer() - sizeof(vu::MigData)));
    vu::MigData q{static_cast<uint32_t>(sizeof(vu::MigData)), n};
    std::span<const uint8_t> parts[2] = {bytes_of(q), {static_cast<const uint8_t*>(buf) + done, n}};
    auto reply = conn_->request(vu::kMigDataWrite, std::span<const std::span<const uint8_t>>(parts, 2));
    if (!reply) return reply.status();
    vu::MigData out{};
    if (!vu::read_struct(reply->payload, 0, &out) || out.size != n)
      return conn_->fail(Status::error(EPROTO, "MIG_DATA_WRITE reply does not acknowledge the data sent"));
    done += n;
  }
  return Status::ok();
}

Result<uint64_t> VfioUserDevice::mig_data_size() {
  auto reply = feature_request(vu::kFeatureGet | vu::kFeatureMigDataSize, {}, sizeof(vu::FeatureMigDataSize));
  if (!reply) return reply.status();
  vu::FeatureMigDataSize ds{};
  vu::read_struct(reply->payload, sizeof(vu::DeviceFeature), &ds);
  return ds.stop_copy_length;
}

Result<PrecopyInfo> VfioUserDevice::precopy_info() {
  return Status::error(ENOTSUP, fmt::format("{}: vfio-user has no pre-copy size query; read until a "
                                            "0-byte reply instead",
                                            name_));
}

Result<std::unique_ptr<VfioUserDevice>> open_connected(UniqueFd fd, std::string name) {
  auto conn = std::make_shared<Connection>(std::move(fd), name);
  auto dev = std::make_unique<VfioUserDevice>(conn, std::move(name));
  UVIO_TRY(dev->init());
  return dev;
}

}  // namespace

Result<std::unique_ptr<Device>> open_vfio_user_fd(int fd, std::string_view name, DmaSpace& dma,
                                                  const OpenOptions& opts) {
  (void)opts;  // interrupt mode and VF tokens do not apply to a socket
  UniqueFd owned(fd);
  if (!owned.valid()) return Status::error(EBADF, "vfio-user: no socket");
  auto dev = open_connected(std::move(owned), std::string(name));
  if (!dev) return dev.status();
  UVIO_TRY((*dev)->attach(dma));
  return std::unique_ptr<Device>(std::move(*dev));
}

Result<std::unique_ptr<Device>> open_vfio_user(std::string_view socket_path, DmaSpace& dma,
                                               const OpenOptions& opts) {
  sockaddr_un addr{};
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path))
    return Status::error(ENAMETOOLONG, fmt::format("vfio-user: socket path '{}' is empty or longer than {} "
                                                   "bytes",
                                                   socket_path, sizeof(addr.sun_path) - 1));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_status("vfio-user: socket failed");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return errno_status(fmt::format("vfio-user: cannot connect to '{}'; is the server running?", socket_path));
  return open_vfio_user_fd(fd.release(), socket_path, dma, opts);
}

}  // namespace uvio::iommu
