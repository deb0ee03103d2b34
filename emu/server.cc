#include "emu/server.h"

#include <uvio/log.h>

#include "emu/dma_map_table.h"
#include "emu/msix.h"
#include "emu/pci_config.h"
#include "emu/state_record.h"
#include "iommu/abi/vfio_user.h"
#include "iommu/mig_fsm.h"
#include "iommu/vfio_user_socket.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

namespace uvio::emu {

namespace vu = iommu::vfio_user;
using iommu::MigState;
using vu::UniqueFd;

namespace {

constexpr const char* kLog = "emu";
constexpr uint32_t kMaxXfer = vu::kDefaultMaxDataXferSize;
constexpr uint64_t kPageSize = 4096;
// Features the server's migration always implements; P2P is opt-in (ServerOptions),
// as the vfio-user specification leaves the P2P states out.
constexpr uint64_t kBaseMigrationFlags = vu::kMigrationStopCopy | vu::kMigrationPreCopy;
// DMA logging ranges one START may carry before it is refused outright (merging
// happens below this; the bound keeps a hostile count from sizing an allocation).
constexpr uint32_t kMaxLoggingRangesAccepted = 65536;
constexpr size_t kMaxVersionJson = 4096;

// A reply under construction: payload bytes and fds lent for the send.
struct Reply {
  std::vector<uint8_t> payload;
  std::vector<int> fds;
  template <class T>
  void append(const T& v) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
    payload.insert(payload.end(), p, p + sizeof(T));
  }
};

// An error reply closes the connection when it is a protocol violation rather than a
// refused request.
struct Outcome {
  Status status;
  bool disconnect = false;
};

Outcome refuse(int err, std::string msg) { return {Status::error(err, std::move(msg)), false}; }
Outcome violate(int err, std::string msg) { return {Status::error(err, std::move(msg)), true}; }
Outcome done() { return {}; }

}  // namespace

struct Server::Impl {
  std::unique_ptr<DeviceModel> model;
  uint64_t migration_flags = kBaseMigrationFlags;
  std::string type_name;
  uint32_t state_version = 0;
  std::vector<BarLayout> bars;
  MsixLayout msix_layout;

  // Everything below the lock is device state.
  mutable std::mutex lock;
  PciConfig config;
  std::unique_ptr<Msix> msix;
  DmaMapTable dma;
  MigState mig = MigState::Running;
  std::vector<uint8_t> mig_out;  // saving: bytes not yet read
  size_t mig_out_pos = 0;
  std::vector<uint8_t> mig_in;   // resuming: bytes written so far

  // Shared BAR pages: one memfd per BAR that has any.
  struct SharedBar {
    UniqueFd fd;
    std::byte* base = nullptr;
    uint64_t size = 0;
  };
  SharedBar shared[6];

  // Threads and connections.
  std::thread socket_thread;
  std::thread device_thread;
  std::atomic<bool> stopping{false};
  UniqueFd wake;  // eventfd: stop, or an in-process connection queued
  std::mutex conn_lock;
  std::deque<UniqueFd> pending;
  UniqueFd listen_fd;
  std::string listen_path;
  int current_conn = -1;  // under conn_lock: shut down on stop
  std::atomic<bool> connected{false};
  std::atomic<uint64_t> served{0};
  std::mutex idle_lock;
  std::condition_variable idle_cv;

  // Per connection.
  bool negotiated = false;

  ~Impl() {
    for (auto& s : shared)
      if (s.base) ::munmap(s.base, s.size);
  }

  const BarLayout* bar(uint32_t index) const {
    for (const auto& b : bars)
      if (b.index == index) return &b;
    return nullptr;
  }
  uint64_t region_size(uint32_t index) const {
    if (index == iommu::kConfigRegion) return PciConfig::kSize;
    const BarLayout* b = index <= 5 ? bar(index) : nullptr;
    return b ? b->size : 0;
  }

  Status validate_and_build();
  void device_loop();
  void socket_loop();
  UniqueFd wait_for_client();
  void serve(int sock);
  void client_gone();
  Outcome handle(vu::Message& m, Reply& r);

  Outcome on_version(const vu::Message& m, Reply& r);
  Outcome on_device_info(const vu::Message& m, Reply& r);
  Outcome on_region_info(const vu::Message& m, Reply& r);
  Outcome on_irq_info(const vu::Message& m, Reply& r);
  Outcome on_set_irqs(vu::Message& m, Reply& r);
  Outcome on_region_access(const vu::Message& m, Reply& r, bool write);
  Outcome on_dma_map(vu::Message& m, Reply& r);
  Outcome on_dma_unmap(const vu::Message& m, Reply& r);
  Outcome on_reset();
  Outcome on_feature(const vu::Message& m, Reply& r);
  Outcome on_mig_read(const vu::Message& m, Reply& r);
  Outcome on_mig_write(const vu::Message& m, Reply& r);

  void bar_access(uint32_t index, uint64_t offset, uint8_t* data, size_t len, bool write);
  void config_write(uint32_t offset, const uint8_t* data, size_t len);
  void device_reset_locked();
  Status set_mig_state_locked(MigState target);
  Status take_arc_locked(MigState next);
  void wake_up() { eventfd_write(wake.get(), 1); }
};

// ---------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------

Status Server::Impl::validate_and_build() {
  type_name = std::string(model->type_name());
  state_version = model->state_version();
  bars = model->bars();
  msix_layout = model->msix();
  if (type_name.empty() || type_name.size() > kMaxTypeName)
    return Status::error(EINVAL, "emu: the model's type name must be 1 to 64 characters");
  bool seen[6] = {};
  for (const auto& b : bars) {
    if (b.index > 5) return Status::error(EINVAL, fmt::format("emu: BAR index {} is not 0-5", b.index));
    if (seen[b.index]) return Status::error(EINVAL, fmt::format("emu: BAR {} is listed twice", b.index));
    seen[b.index] = true;
    if (b.size < kPageSize || !std::has_single_bit(b.size) || b.size > (1ull << 31))
      return Status::error(EINVAL, fmt::format("emu: BAR {} size {:#x} is not a power of two between "
                                               "4 KiB and 2 GiB",
                                               b.index, b.size));
    for (const auto& a : b.shared)
      if (a.size == 0 || a.offset % kPageSize || a.size % kPageSize || a.offset > b.size ||
          a.size > b.size - a.offset)
        return Status::error(EINVAL, fmt::format("emu: BAR {} shared area [{:#x}, +{:#x}) is not whole "
                                                 "pages inside the BAR",
                                                 b.index, a.offset, a.size));
  }
  if (msix_layout.vectors > 2048)  // PCI Local Bus 3.0, 6.8.2.3: an 11-bit table size
    return Status::error(EINVAL, fmt::format("emu: {} MSI-X vectors; at most 2048", msix_layout.vectors));
  if (msix_layout.vectors > 0) {
    const BarLayout* mb = bar(msix_layout.bar);
    uint64_t table_len = uint64_t{msix_layout.vectors} * Msix::kEntryBytes;
    uint64_t pba_len = (msix_layout.vectors + 63) / 64 * 8;
    Msix probe(msix_layout.vectors);
    if (!mb || msix_layout.table_offset > mb->size ||
        probe.table_bytes() > mb->size - msix_layout.table_offset || msix_layout.pba_offset > mb->size ||
        probe.pba_bytes() > mb->size - msix_layout.pba_offset)
      return Status::error(EINVAL, "emu: the MSI-X table or PBA lies outside its BAR");
    if (msix_layout.table_offset < msix_layout.pba_offset + pba_len &&
        msix_layout.pba_offset < msix_layout.table_offset + table_len)
      return Status::error(EINVAL, "emu: the MSI-X table and PBA overlap");
    for (const auto& a : mb->shared) {
      auto overlaps = [&](uint64_t off, uint64_t len) { return off < a.offset + a.size && a.offset < off + len; };
      if (overlaps(msix_layout.table_offset, probe.table_bytes()) ||
          overlaps(msix_layout.pba_offset, probe.pba_bytes()))
        return Status::error(EINVAL, "emu: the MSI-X table or PBA overlaps a shared BAR page");
    }
  }
  auto caps = model->capabilities();
  if (!config.build(model->identity(), bars, msix_layout, caps))
    return Status::error(EINVAL, "emu: the PCI capabilities do not fit in config space, or the BAR "
                                 "or MSI-X layout is invalid");
  msix = std::make_unique<Msix>(msix_layout.vectors);

  std::vector<std::byte*> shared_ptrs;
  for (const auto& b : bars) {
    std::byte* base = nullptr;
    if (!b.shared.empty()) {
      int fd = ::memfd_create(fmt::format("uvio-emu-{}-bar{}", type_name, b.index).c_str(), MFD_CLOEXEC);
      if (fd < 0) return errno_status("emu: memfd_create for shared BAR pages failed");
      SharedBar& s = shared[b.index];
      s.fd.reset(fd);
      if (::ftruncate(fd, static_cast<off_t>(b.size)) != 0)
        return errno_status("emu: sizing the shared BAR memory failed");
      void* p = ::mmap(nullptr, b.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) return errno_status("emu: mapping the shared BAR memory failed");
      s.base = static_cast<std::byte*>(p);
      s.size = b.size;
      base = s.base;
    }
    shared_ptrs.push_back(base);
  }
  model->attach(dma, *msix, shared_ptrs);
  auto e = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e < 0) return errno_status("emu: eventfd failed");
  wake.reset(e);
  return Status::ok();
}

Server::Server() : impl_(std::make_unique<Impl>()) {}

Result<std::unique_ptr<Server>> Server::create(std::unique_ptr<DeviceModel> model,
                                               const ServerOptions& options) {
  if (!model) return Status::error(EINVAL, "emu: no device model");
  std::unique_ptr<Server> s(new Server());
  s->impl_->model = std::move(model);
  if (options.p2p_states) s->impl_->migration_flags |= vu::kMigrationP2p;
  UVIO_TRY(s->impl_->validate_and_build());
  Impl* impl = s->impl_.get();
  s->impl_->socket_thread = std::thread([impl] { impl->socket_loop(); });
  s->impl_->device_thread = std::thread([impl] { impl->device_loop(); });
  return s;
}

Server::~Server() { stop(); }

void Server::stop() {
  Impl& d = *impl_;
  if (d.stopping.exchange(true)) return;
  {
    std::lock_guard g(d.conn_lock);
    if (d.current_conn >= 0) ::shutdown(d.current_conn, SHUT_RDWR);
  }
  d.wake_up();
  d.idle_cv.notify_all();
  if (d.socket_thread.joinable()) d.socket_thread.join();
  if (d.device_thread.joinable()) d.device_thread.join();
  if (!d.listen_path.empty()) ::unlink(d.listen_path.c_str());
}

Result<int> Server::connect() {
  Impl& d = *impl_;
  if (d.stopping) return Status::error(ESHUTDOWN, "emu: the server is stopped");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return errno_status("emu: socketpair failed");
  {
    std::lock_guard g(d.conn_lock);
    d.pending.emplace_back(sv[1]);
  }
  d.wake_up();
  return sv[0];
}

Status Server::listen(const std::string& path) {
  Impl& d = *impl_;
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return Status::error(ENAMETOOLONG, fmt::format("emu: socket path '{}' is empty or longer than {} bytes",
                                                   path, sizeof(addr.sun_path) - 1));
  {
    std::lock_guard g(d.conn_lock);
    if (d.listen_fd.valid()) return Status::error(EBUSY, "emu: the server already listens");
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::error(EEXIST, fmt::format("emu: '{}' exists and is not a socket", path));
    ::unlink(path.c_str());  // a stale socket from an earlier run
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errno_status("emu: socket failed");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return errno_status(fmt::format("emu: cannot bind '{}'", path));
  if (::listen(fd.get(), 4) != 0) return errno_status(fmt::format("emu: cannot listen on '{}'", path));
  {
    std::lock_guard g(d.conn_lock);
    d.listen_fd = std::move(fd);
    d.listen_path = path;
  }
  d.wake_up();
  return Status::ok();
}

MigState Server::mig_state() const {
  std::lock_guard g(impl_->lock);
  return impl_->mig;
}
uint64_t Server::clients_served() const { return impl_->served.load(); }
bool Server::client_connected() const { return impl_->connected.load(); }

void Server::with_model(const std::function<void(DeviceModel&)>& fn) {
  std::lock_guard g(impl_->lock);
  fn(*impl_->model);
}

// ---------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------

void Server::Impl::device_loop() {
  unsigned idle = 0;
  while (!stopping.load(std::memory_order_relaxed)) {
    size_t work = 0;
    bool running = false;
    {
      std::lock_guard g(lock);
      running = connected.load(std::memory_order_relaxed) &&
                (mig == MigState::Running || mig == MigState::PreCopy || mig == MigState::RunningP2P ||
                 mig == MigState::PreCopyP2P);
      if (running) work = model->poll();
    }
    if (work > 0) {
      idle = 0;
      continue;
    }
    // Poll first, sleep when idle: spin briefly, then back off to short sleeps so an
    // idle device does not hold a core.
    ++idle;
    if (idle < 64 && running) {
      std::this_thread::yield();
      continue;
    }
    auto nap = std::chrono::microseconds(running && idle < 4096 ? 100 : 1000);
    std::unique_lock u(idle_lock);
    idle_cv.wait_for(u, nap, [this] { return stopping.load(); });
  }
}

UniqueFd Server::Impl::wait_for_client() {
  while (!stopping) {
    int lfd;
    {
      std::lock_guard g(conn_lock);
      if (!pending.empty()) {
        UniqueFd fd = std::move(pending.front());
        pending.pop_front();
        return fd;
      }
      lfd = listen_fd.get();
    }
    pollfd p[2] = {{wake.get(), POLLIN, 0}, {lfd, POLLIN, 0}};
    int n = ::poll(p, lfd >= 0 ? 2 : 1, -1);
    if (n < 0 && errno != EINTR) return UniqueFd();
    if (p[0].revents & POLLIN) {
      eventfd_t v;
      eventfd_read(wake.get(), &v);
    }
    if (lfd >= 0 && (p[1].revents & POLLIN)) {
      int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) return UniqueFd(c);
    }
  }
  return UniqueFd();
}

void Server::Impl::socket_loop() {
  while (!stopping) {
    UniqueFd conn = wait_for_client();
    if (!conn.valid()) continue;
    {
      std::lock_guard g(conn_lock);
      if (stopping) break;
      current_conn = conn.get();
    }
    connected = true;
    serve(conn.get());
    {
      std::lock_guard g(conn_lock);
      current_conn = -1;
    }
    conn.reset();
    client_gone();
  }
}

// The client is gone: forget its memory and interrupts and reset the device, so the
// next client starts from a known state.
void Server::Impl::client_gone() {
  std::lock_guard g(lock);
  connected = false;
  dma.clear();
  msix->reset();
  device_reset_locked();
  negotiated = false;
  served.fetch_add(1);
}

void Server::Impl::serve(int sock) {
  negotiated = false;
  while (!stopping) {
    pollfd p[2] = {{sock, POLLIN, 0}, {wake.get(), POLLIN, 0}};
    int n = ::poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents & POLLIN) {
      eventfd_t v;
      eventfd_read(wake.get(), &v);
      if (stopping) return;
      // A queued in-process client waits for this one to go; keep serving.
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    auto msg = vu::recv_message(sock);
    if (!msg) {
      if (msg.status().code() != ECONNRESET)
        UVIO_LOG(Warning, kLog, "dropping client: {}", msg.status().describe());
      return;
    }
    vu::Message& m = *msg;
    vu::Header h = m.header;
    Reply r;
    Outcome out;
    if ((h.flags & vu::kFlagTypeMask) != vu::kFlagTypeCommand) {
      out = violate(EINVAL, fmt::format("message id {} is not a command (flags {:#x})", h.msg_id, h.flags));
    } else if (!negotiated && h.command != vu::kVersion) {
      out = violate(EINVAL, fmt::format("{} before VERSION", vu::command_name(h.command)));
    } else {
      out = handle(m, r);
    }
    if (!out.status) {
      UVIO_LOG(Info, kLog, "{} (id {}) refused: {}", vu::command_name(h.command), h.msg_id,
               out.status.describe());
      r = Reply{};
    }
    bool want_reply = !(h.flags & vu::kFlagNoReply) || !out.status;
    if (want_reply) {
      vu::Header rh{};
      rh.msg_id = h.msg_id;
      rh.command = h.command;
      rh.flags = vu::kFlagTypeReply | (out.status ? 0u : vu::kFlagError);
      rh.error = out.status ? 0u : static_cast<uint32_t>(out.status.code());
      Status s = vu::send_message(sock, rh, r.payload, r.fds);
      if (!s) {
        UVIO_LOG(Warning, kLog, "dropping client: {}", s.describe());
        return;
      }
    }
    if (out.disconnect) {
      UVIO_LOG(Warning, kLog, "dropping client after a protocol violation: {}", out.status.describe());
      return;
    }
  }
}

// ---------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------

Outcome Server::Impl::handle(vu::Message& m, Reply& r) {
  // Commands that carry no fds must not bring any: they would leak into nowhere.
  bool takes_fds = m.header.command == vu::kDmaMap || m.header.command == vu::kDeviceSetIrqs;
  if (!takes_fds && !m.fds.empty())
    return violate(EINVAL, fmt::format("{} carried {} unexpected fds", vu::command_name(m.header.command),
                                       m.fds.size()));
  switch (m.header.command) {
    case vu::kVersion: return on_version(m, r);
    case vu::kDeviceGetInfo: return on_device_info(m, r);
    case vu::kDeviceGetRegionInfo: return on_region_info(m, r);
    case vu::kDeviceGetIrqInfo: return on_irq_info(m, r);
    case vu::kDeviceSetIrqs: return on_set_irqs(m, r);
    case vu::kRegionRead: return on_region_access(m, r, false);
    case vu::kRegionWrite: return on_region_access(m, r, true);
    case vu::kDmaMap: return on_dma_map(m, r);
    case vu::kDmaUnmap: return on_dma_unmap(m, r);
    case vu::kDeviceReset: return on_reset();
    case vu::kDeviceFeature: return on_feature(m, r);
    case vu::kMigDataRead: return on_mig_read(m, r);
    case vu::kMigDataWrite: return on_mig_write(m, r);
    default:
      return refuse(ENOSYS, fmt::format("command {} ({}) is not supported", m.header.command,
                                        vu::command_name(m.header.command)));
  }
}

Outcome Server::Impl::on_version(const vu::Message& m, Reply& r) {
  if (negotiated) return violate(EINVAL, "VERSION sent twice");
  vu::Version v{};
  if (!vu::read_struct(m.payload, 0, &v)) return violate(EINVAL, "VERSION payload shorter than 4 bytes");
  if (v.major != vu::kMajor)
    return violate(ENOTSUP, fmt::format("protocol major {} is not supported (this server speaks {})",
                                        v.major, vu::kMajor));
  if (m.payload.size() > sizeof(v)) {
    const char* json = reinterpret_cast<const char*>(m.payload.data() + sizeof(v));
    size_t len = m.payload.size() - sizeof(v);
    // Capabilities are a few dozen bytes; a bound keeps a hostile document small.
    if (len > kMaxVersionJson) return violate(E2BIG, "VERSION capabilities larger than 4 KiB");
    size_t nul = std::string_view(json, len).find('\0');
    if (nul == std::string_view::npos) return violate(EINVAL, "VERSION capabilities are not NUL-terminated");
    auto caps = nlohmann::json::parse(std::string_view(json, nul), nullptr, false);
    if (caps.is_discarded() || !caps.is_object())
      return violate(EINVAL, "VERSION capabilities are not a JSON object");
    // Unknown keys are ignored, as the specification asks; nothing the client offers
    // changes what this server does (it never sends fds or DMA requests to the client).
  }
  vu::Version reply{vu::kMajor, std::min(v.minor, vu::kMinor)};
  nlohmann::json caps = {{"capabilities",
                          {{"max_msg_fds", vu::kMaxMsgFds},
                           {"max_data_xfer_size", kMaxXfer},
                           {"pgsizes", kPageSize},
                           {"max_dma_maps", DmaMapTable::kMaxMappings},
                           {"migration", {{"pgsize", kPageSize}}}}}};
  std::string text = caps.dump();
  r.append(reply);
  r.payload.insert(r.payload.end(), text.begin(), text.end());
  r.payload.push_back(0);
  negotiated = true;
  return done();
}

Outcome Server::Impl::on_device_info(const vu::Message& m, Reply& r) {
  vu::DeviceInfo in{};
  if (!vu::read_struct(m.payload, 0, &in)) return violate(EINVAL, "DEVICE_GET_INFO payload too short");
  if (in.argsz < sizeof(vu::DeviceInfo)) return refuse(EINVAL, "DEVICE_GET_INFO argsz below 16");
  vu::DeviceInfo out{sizeof(vu::DeviceInfo), vu::kDeviceFlagsReset | vu::kDeviceFlagsPci,
                     vu::kPciNumRegions, vu::kPciNumIrqs};
  r.append(out);
  return done();
}

Outcome Server::Impl::on_region_info(const vu::Message& m, Reply& r) {
  vu::RegionInfo in{};
  if (!vu::read_struct(m.payload, 0, &in)) return violate(EINVAL, "DEVICE_GET_REGION_INFO payload too short");
  if (in.argsz < sizeof(vu::RegionInfo)) return refuse(EINVAL, "region info argsz below 32");
  if (in.index >= vu::kPciNumRegions)
    return refuse(EINVAL, fmt::format("region index {} does not exist (the device has {})", in.index,
                                      vu::kPciNumRegions));
  vu::RegionInfo out{};
  out.argsz = sizeof(out);
  out.index = in.index;
  out.size = region_size(in.index);
  if (out.size > 0) out.flags = vu::kRegionFlagRead | vu::kRegionFlagWrite;
  const BarLayout* b = in.index <= 5 ? bar(in.index) : nullptr;
  std::vector<uint8_t> caps;
  if (b && !b->shared.empty()) {
    out.flags |= vu::kRegionFlagMmap | vu::kRegionFlagCaps;
    vu::SparseMmapCap cap{};
    cap.header = {vu::kRegionCapSparseMmap, 1, 0};
    cap.nr_areas = static_cast<uint32_t>(b->shared.size());
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&cap);
    caps.insert(caps.end(), p, p + sizeof(cap));
    for (const auto& a : b->shared) {
      vu::SparseMmapArea area{a.offset, a.size};
      p = reinterpret_cast<const uint8_t*>(&area);
      caps.insert(caps.end(), p, p + sizeof(area));
    }
    out.offset = 0;  // the BAR starts at offset 0 of its memfd
  }
  out.argsz = static_cast<uint32_t>(sizeof(out) + caps.size());
  // The first, base-sized query learns the full size; capabilities and the fd come
  // only with a reply that has room for them.
  if (!caps.empty() && in.argsz >= out.argsz) {
    out.cap_offset = sizeof(out);
    r.append(out);
    r.payload.insert(r.payload.end(), caps.begin(), caps.end());
    r.fds.push_back(shared[in.index].fd.get());
  } else {
    r.append(out);
  }
  return done();
}

Outcome Server::Impl::on_irq_info(const vu::Message& m, Reply& r) {
  vu::IrqInfo in{};
  if (!vu::read_struct(m.payload, 0, &in)) return violate(EINVAL, "DEVICE_GET_IRQ_INFO payload too short");
  if (in.argsz < sizeof(vu::IrqInfo)) return refuse(EINVAL, "IRQ info argsz below 16");
  if (in.index >= vu::kPciNumIrqs)
    return refuse(EINVAL, fmt::format("IRQ index {} does not exist (the device has {})", in.index,
                                      vu::kPciNumIrqs));
  vu::IrqInfo out{sizeof(vu::IrqInfo), 0, in.index, 0};
  if (in.index == iommu::kMsixIrq && msix_layout.vectors > 0) {
    out.flags = vu::kIrqInfoEventfd | vu::kIrqInfoMaskable;
    out.count = msix_layout.vectors;
  }
  r.append(out);
  return done();
}

// The checks of the kernel's vfio_set_irqs_validate_and_prepare, over a message.
Outcome Server::Impl::on_set_irqs(vu::Message& m, Reply&) {
  vu::IrqSet s{};
  if (!vu::read_struct(m.payload, 0, &s)) return violate(EINVAL, "DEVICE_SET_IRQS payload too short");
  if (s.argsz < sizeof(s) || s.argsz > m.payload.size())
    return refuse(EINVAL, fmt::format("SET_IRQS argsz {} does not match the {}-byte payload", s.argsz,
                                      m.payload.size()));
  uint32_t data = s.flags & vu::kIrqSetDataMask;
  uint32_t action = s.flags & vu::kIrqSetActionMaskAll;
  if ((s.flags & ~(vu::kIrqSetDataMask | vu::kIrqSetActionMaskAll)) || !std::has_single_bit(data) ||
      !std::has_single_bit(action))
    return refuse(EINVAL, fmt::format("SET_IRQS flags {:#x} need exactly one DATA and one ACTION flag",
                                      s.flags));
  if (s.index >= vu::kPciNumIrqs) return refuse(EINVAL, fmt::format("IRQ index {} does not exist", s.index));
  if (data != vu::kIrqSetDataEventfd && !m.fds.empty())
    return refuse(EINVAL, "SET_IRQS carried fds without DATA_EVENTFD");
  uint32_t vectors = s.index == iommu::kMsixIrq ? msix_layout.vectors : 0;
  bool disable_all = s.count == 0 && data == vu::kIrqSetDataNone && action == vu::kIrqSetActionTrigger;
  if (disable_all) {
    if (s.start != 0) return refuse(EINVAL, "SET_IRQS: count 0 needs start 0");
    std::lock_guard g(lock);
    if (vectors > 0) {
      msix->disable_all();
      config.set_msix_enable(false);
    }
    return done();
  }
  if (vectors == 0)
    return refuse(EINVAL, fmt::format("IRQ index {} is not supported: the device interrupts with "
                                      "MSI-X only",
                                      s.index));
  if (s.count == 0 || s.start >= vectors || s.count > vectors - s.start)
    return refuse(EINVAL, fmt::format("SET_IRQS vectors [{}, +{}) exceed the device's {}", s.start,
                                      s.count, vectors));
  std::lock_guard g(lock);
  if (data == vu::kIrqSetDataEventfd) {
    if (action != vu::kIrqSetActionTrigger)
      return refuse(EINVAL, "SET_IRQS: only TRIGGER takes eventfds on this device");
    if (!m.fds.empty() && m.fds.size() != s.count)
      return refuse(EINVAL, fmt::format("SET_IRQS: {} fds for {} vectors", m.fds.size(), s.count));
    std::vector<UniqueFd> fds(s.count);
    for (size_t i = 0; i < m.fds.size(); ++i) fds[i] = std::move(m.fds[i]);
    m.fds.clear();
    Status st = msix->set_eventfds(s.start, std::move(fds));
    if (!st) return refuse(st.code(), st.message());
    config.set_msix_enable(msix->enabled());
    return done();
  }
  std::vector<uint8_t> which(s.count, 1);
  if (data == vu::kIrqSetDataBool) {
    if (m.payload.size() - sizeof(s) < s.count)
      return refuse(EINVAL, fmt::format("SET_IRQS: {} bools expected after the header", s.count));
    std::memcpy(which.data(), m.payload.data() + sizeof(s), s.count);
  }
  for (uint32_t i = 0; i < s.count; ++i) {
    if (!which[i]) continue;
    uint32_t v = s.start + i;
    if (action == vu::kIrqSetActionTrigger)
      msix->trigger(v);
    else
      msix->set_vector_masked(v, action == vu::kIrqSetActionMask);
  }
  return done();
}

void Server::Impl::config_write(uint32_t offset, const uint8_t* data, size_t len) {
  config.write(offset, data, len);
  uint32_t cap = config.msix_cap();
  if (cap != 0 && offset < cap + 4 && offset + len > cap + 2) {
    uint16_t ctrl = config.msix_control();
    msix->set_control(ctrl & PciConfig::kMsixCtrlEnable, ctrl & PciConfig::kMsixCtrlFuncMask);
  }
}

// One access inside a BAR, split into naturally aligned pieces of 1, 2, 4 or 8 bytes
// (the widths a model handles), each routed to the MSI-X table, the PBA, a shared
// page, or the model.
void Server::Impl::bar_access(uint32_t index, uint64_t offset, uint8_t* data, size_t len, bool write) {
  const BarLayout* b = bar(index);
  bool msix_bar = msix_layout.vectors > 0 && msix_layout.bar == index;
  uint64_t tbl = msix_layout.table_offset, tbl_len = msix->table_bytes();
  uint64_t pba = msix_layout.pba_offset, pba_len = msix->pba_bytes();
  size_t done_bytes = 0;
  while (done_bytes < len) {
    uint64_t off = offset + done_bytes;
    unsigned width = 8;
    while (width > 1 && ((off % width) != 0 || width > len - done_bytes)) width /= 2;
    uint8_t* p = data + done_bytes;
    if (msix_bar && off >= tbl && off - tbl < tbl_len) {
      if (write)
        msix->table_write(off - tbl, p, width);
      else
        msix->table_read(off - tbl, p, width);
    } else if (msix_bar && off >= pba && off - pba < pba_len) {
      if (!write) msix->pba_read(off - pba, p, width);  // the PBA is read-only (6.8.2.10)
    } else {
      bool in_shared = false;
      for (const auto& a : b->shared)
        in_shared |= off >= a.offset && off - a.offset < a.size;
      if (in_shared) {
        std::byte* s = shared[index].base + off;
        if (write)
          std::memcpy(s, p, width);
        else
          std::memcpy(p, s, width);
      } else if (write) {
        uint64_t v = 0;
        std::memcpy(&v, p, width);
        model->bar_write(index, off, v, width);
      } else {
        uint64_t v = model->bar_read(index, off, width);
        std::memcpy(p, &v, width);
      }
    }
    done_bytes += width;
  }
}

Outcome Server::Impl::on_region_access(const vu::Message& m, Reply& r, bool write) {
  vu::RegionAccess a{};
  if (!vu::read_struct(m.payload, 0, &a)) return violate(EINVAL, "region access payload shorter than 16 bytes");
  if (a.count > kMaxXfer)
    return refuse(EINVAL, fmt::format("region access of {} bytes exceeds max_data_xfer_size {}", a.count,
                                      kMaxXfer));
  if (write && m.payload.size() != sizeof(a) + a.count)
    return violate(EINVAL, fmt::format("REGION_WRITE says {} bytes but carries {}", a.count,
                                       m.payload.size() - sizeof(a)));
  if (!write && m.payload.size() != sizeof(a))
    return violate(EINVAL, "REGION_READ request carries data");
  uint64_t size = a.region < vu::kPciNumRegions ? region_size(a.region) : 0;
  if (a.count == 0 || a.offset > size || a.count > size - a.offset)
    return refuse(EINVAL, fmt::format("access [{:#x}, +{}) is outside region {} ({:#x} bytes)", a.offset,
                                      a.count, a.region, size));
  std::vector<uint8_t> buf(a.count);
  if (write) std::memcpy(buf.data(), m.payload.data() + sizeof(a), a.count);
  {
    std::lock_guard g(lock);
    if (a.region == iommu::kConfigRegion) {
      if (write)
        config_write(static_cast<uint32_t>(a.offset), buf.data(), a.count);
      else
        config.read(static_cast<uint32_t>(a.offset), buf.data(), a.count);
    } else {
      bar_access(a.region, a.offset, buf.data(), a.count, write);
    }
  }
  r.append(a);
  if (!write) r.payload.insert(r.payload.end(), buf.begin(), buf.end());
  return done();
}

Outcome Server::Impl::on_dma_map(vu::Message& m, Reply&) {
  vu::DmaMap d{};
  if (!vu::read_struct(m.payload, 0, &d)) return violate(EINVAL, "DMA_MAP payload shorter than 32 bytes");
  if (d.argsz < sizeof(d)) return refuse(EINVAL, "DMA_MAP argsz below 32");
  if (d.flags & ~(vu::kDmaMapRead | vu::kDmaMapWrite))
    return refuse(EINVAL, fmt::format("DMA_MAP flags {:#x} has unknown bits", d.flags));
  if (m.fds.size() > 1) return refuse(EINVAL, fmt::format("DMA_MAP carried {} fds; at most 1", m.fds.size()));
  if (d.address % kPageSize || d.size % kPageSize || d.size == 0)
    return refuse(EINVAL, fmt::format("DMA_MAP iova {:#x} size {:#x} is not whole 4 KiB pages", d.address,
                                      d.size));
  int fd = m.fds.empty() ? -1 : m.fds[0].release();
  m.fds.clear();
  std::lock_guard g(lock);
  Status s = dma.map(d.address, d.size, fd, d.offset, d.flags & vu::kDmaMapRead, d.flags & vu::kDmaMapWrite);
  if (!s) return refuse(s.code(), s.message());
  return done();
}

Outcome Server::Impl::on_dma_unmap(const vu::Message& m, Reply& r) {
  vu::DmaUnmap d{};
  if (!vu::read_struct(m.payload, 0, &d)) return violate(EINVAL, "DMA_UNMAP payload shorter than 24 bytes");
  if (d.argsz < sizeof(d)) return refuse(EINVAL, "DMA_UNMAP argsz below 24");
  if (d.flags != 0) return refuse(EINVAL, fmt::format("DMA_UNMAP flags {:#x} are not supported", d.flags));
  std::lock_guard g(lock);
  Status s = dma.unmap(d.address, d.size);
  if (!s) return refuse(s.code(), s.message());
  r.append(d);
  return done();
}

void Server::Impl::device_reset_locked() {
  model->reset();
  config.reset();
  dma.dirty_log().stop();
  mig = MigState::Running;
  mig_out.clear();
  mig_out_pos = 0;
  mig_in.clear();
}

Outcome Server::Impl::on_reset() {
  std::lock_guard g(lock);
  device_reset_locked();
  // The interrupt set-up survives, as the kernel's VFIO_DEVICE_RESET saves and restores
  // MSI-X state around the function reset: a driver need not wire its vectors again.
  config.set_msix_enable(msix->enabled());
  return done();
}

Status Server::Impl::take_arc_locked(MigState next) {
  using S = MigState;
  MigState cur = mig;
  std::vector<uint8_t> state;
  // Software devices do no peer-to-peer DMA, so the P2P states behave as their
  // non-P2P twins: RUNNING_P2P runs, PRE_COPY_P2P saves like PRE_COPY.
  if ((cur == S::Stop && next == S::StopCopy) || (cur == S::Running && next == S::PreCopy) ||
      (cur == S::RunningP2P && next == S::PreCopyP2P)) {
    model->save_state(state);
    mig_out.clear();
    mig_out_pos = 0;
    append_state_record(mig_out, type_name, state_version, state);
  } else if ((cur == S::PreCopy || cur == S::PreCopyP2P) && next == S::StopCopy) {
    // The final record follows whatever pre-copy data was not read yet.
    mig_out.erase(mig_out.begin(), mig_out.begin() + static_cast<long>(mig_out_pos));
    mig_out_pos = 0;
    model->save_state(state);
    append_state_record(mig_out, type_name, state_version, state);
  } else if ((cur == S::StopCopy && next == S::Stop) || (cur == S::PreCopy && next == S::Running) ||
             (cur == S::PreCopyP2P && next == S::RunningP2P)) {
    mig_out.clear();
    mig_out_pos = 0;
  } else if (cur == S::Stop && next == S::Resuming) {
    mig_in.clear();
  } else if (cur == S::Resuming && next == S::Stop) {
    auto rec = last_state_record(mig_in, type_name, state_version);
    Status s = rec ? model->load_state(*rec) : rec.status();
    mig_in.clear();
    if (!s) return s;  // the device stays in RESUMING, as it was
  }
  // RUNNING <-> STOP need nothing here: the device thread polls only in RUNNING and
  // PRE_COPY, and it does so under the lock this runs under.
  mig = next;
  return Status::ok();
}

Status Server::Impl::set_mig_state_locked(MigState target) {
  auto features = iommu::MigFeatures::from_flags(migration_flags);
  if (!iommu::mig_state_supported(target, features) || target == MigState::Error)
    return Status::error(EINVAL, fmt::format("migration state {} is not supported by this device",
                                             iommu::mig_state_name(target)));
  while (mig != target) {
    MigState next = iommu::mig_next_state(mig, target, features);
    if (next == MigState::Error)
      return Status::error(EINVAL, fmt::format("no migration path from {} to {}",
                                               iommu::mig_state_name(mig), iommu::mig_state_name(target)));
    UVIO_TRY(take_arc_locked(next));
  }
  return Status::ok();
}

// The checks of the kernel's vfio_check_feature, then the feature itself.
Outcome Server::Impl::on_feature(const vu::Message& m, Reply& r) {
  vu::DeviceFeature f{};
  if (!vu::read_struct(m.payload, 0, &f)) return violate(EINVAL, "DEVICE_FEATURE payload shorter than 8 bytes");
  if (f.argsz < sizeof(f)) return refuse(EINVAL, "DEVICE_FEATURE argsz below 8");
  uint32_t ops = f.flags & (vu::kFeatureGet | vu::kFeatureSet | vu::kFeatureProbe);
  uint32_t id = f.flags & vu::kFeatureIndexMask;
  if (f.flags & ~(vu::kFeatureIndexMask | ops)) return refuse(EINVAL, "DEVICE_FEATURE has unknown flag bits");
  bool get = ops & vu::kFeatureGet, set = ops & vu::kFeatureSet, probe = ops & vu::kFeatureProbe;
  if (!probe && get == set) return refuse(EINVAL, "DEVICE_FEATURE needs exactly one of GET and SET");
  std::span<const uint8_t> data(m.payload.data() + sizeof(f), m.payload.size() - sizeof(f));

  uint32_t allowed = 0;
  switch (id) {
    case vu::kFeatureMigration: allowed = vu::kFeatureGet; break;
    case vu::kFeatureMigDeviceState: allowed = vu::kFeatureGet | vu::kFeatureSet; break;
    case vu::kFeatureDmaLoggingStart:
    case vu::kFeatureDmaLoggingStop: allowed = vu::kFeatureSet; break;
    case vu::kFeatureDmaLoggingReport:
    case vu::kFeatureMigDataSize: allowed = vu::kFeatureGet; break;
    default: return refuse(ENOTTY, fmt::format("device feature {} is not supported", id));
  }
  if ((ops & ~vu::kFeatureProbe) & ~allowed)
    return refuse(EINVAL, fmt::format("device feature {} does not support {}", id, get ? "GET" : "SET"));
  if (probe) {
    r.payload.assign(m.payload.begin(), m.payload.begin() + sizeof(f));
    return done();
  }
  auto reply_with = [&](const void* p, size_t n) -> Outcome {
    if (f.argsz < sizeof(f) + n)
      return refuse(EINVAL, fmt::format("DEVICE_FEATURE argsz {} leaves no room for the {}-byte reply",
                                        f.argsz, n));
    vu::DeviceFeature out{static_cast<uint32_t>(sizeof(f) + n), f.flags};
    r.append(out);
    const uint8_t* b = static_cast<const uint8_t*>(p);
    r.payload.insert(r.payload.end(), b, b + n);
    return done();
  };

  std::lock_guard g(lock);
  switch (id) {
    case vu::kFeatureMigration: {
      vu::FeatureMigration mf{migration_flags};
      return reply_with(&mf, sizeof(mf));
    }
    case vu::kFeatureMigDeviceState: {
      if (set) {
        vu::FeatureMigState want{};
        if (!vu::read_struct(data, 0, &want)) return refuse(EINVAL, "MIG_DEVICE_STATE SET without a state");
        MigState target;
        if (!iommu::mig_state_from_u32(want.device_state, &target))
          return refuse(EINVAL, fmt::format("migration state {} does not exist", want.device_state));
        Status s = set_mig_state_locked(target);
        if (!s) return refuse(s.code(), s.message());
      }
      vu::FeatureMigState now{static_cast<uint32_t>(mig), -1};
      return reply_with(&now, sizeof(now));
    }
    case vu::kFeatureMigDataSize: {
      std::vector<uint8_t> state;
      model->save_state(state);
      vu::FeatureMigDataSize ds{sizeof(StateRecordHeader) + type_name.size() + state.size()};
      return reply_with(&ds, sizeof(ds));
    }
    case vu::kFeatureDmaLoggingStart: {
      vu::DmaLoggingControl c{};
      if (!vu::read_struct(data, 0, &c)) return refuse(EINVAL, "DMA_LOGGING_START without its control block");
      if (c.num_ranges > kMaxLoggingRangesAccepted)
        return refuse(E2BIG, fmt::format("DMA_LOGGING_START with {} ranges; at most {}", c.num_ranges,
                                         kMaxLoggingRangesAccepted));
      if (data.size() - sizeof(c) < uint64_t{c.num_ranges} * sizeof(vu::DmaLoggingRange))
        return refuse(EINVAL, fmt::format("DMA_LOGGING_START says {} ranges but carries fewer", c.num_ranges));
      std::vector<iommu::IovaRange> ranges;
      for (uint32_t i = 0; i < c.num_ranges; ++i) {
        vu::DmaLoggingRange lr{};
        vu::read_struct(data, sizeof(c) + i * sizeof(lr), &lr);
        if (lr.length == 0 || lr.iova + (lr.length - 1) < lr.iova)
          return refuse(EINVAL, fmt::format("DMA logging range {} is empty or wraps", i));
        ranges.push_back({lr.iova, lr.iova + lr.length - 1});
      }
      // No ranges: log every write, i.e. everything the client has mapped.
      if (ranges.empty()) ranges = dma.ranges();
      if (ranges.empty()) return refuse(EINVAL, "DMA_LOGGING_START with no ranges and no DMA mappings");
      Status s = dma.dirty_log().start(std::move(ranges), c.page_size);
      if (!s) return refuse(s.code(), s.message());
      r.payload.assign(m.payload.begin(), m.payload.end());
      return done();
    }
    case vu::kFeatureDmaLoggingStop:
      dma.dirty_log().stop();
      r.payload.assign(m.payload.begin(), m.payload.begin() + sizeof(f));
      return done();
    case vu::kFeatureDmaLoggingReport: {
      vu::DmaLoggingReport rep{};
      if (!vu::read_struct(data, 0, &rep)) return refuse(EINVAL, "DMA_LOGGING_REPORT without its range");
      if (rep.page_size == 0 || !std::has_single_bit(rep.page_size) || rep.length == 0)
        return refuse(EINVAL, "DMA_LOGGING_REPORT needs a power-of-two page size and a length");
      uint64_t words = (rep.length / rep.page_size + (rep.length % rep.page_size != 0) + 63) / 64;
      uint64_t need = sizeof(f) + sizeof(rep) + words * 8;
      if (need > kMaxXfer)
        return refuse(E2BIG, "DMA_LOGGING_REPORT bitmap larger than one message; report a smaller range");
      if (f.argsz < need)
        return refuse(EINVAL, fmt::format("DMA_LOGGING_REPORT argsz {} below the {} bytes the bitmap needs",
                                          f.argsz, need));
      std::vector<uint64_t> bitmap(words);
      Status s = dma.dirty_log().read_and_clear(rep.iova, rep.length, rep.page_size, bitmap);
      if (!s) return refuse(s.code(), s.message());
      vu::DeviceFeature out{static_cast<uint32_t>(need), f.flags};
      r.append(out);
      r.append(rep);
      const uint8_t* b = reinterpret_cast<const uint8_t*>(bitmap.data());
      r.payload.insert(r.payload.end(), b, b + words * 8);
      return done();
    }
  }
  return refuse(ENOTTY, "device feature not supported");
}

Outcome Server::Impl::on_mig_read(const vu::Message& m, Reply& r) {
  vu::MigData in{};
  if (!vu::read_struct(m.payload, 0, &in)) return violate(EINVAL, "MIG_DATA_READ payload shorter than 8 bytes");
  if (in.argsz < sizeof(in)) return refuse(EINVAL, "MIG_DATA_READ argsz below 8");
  std::lock_guard g(lock);
  if (mig != MigState::StopCopy && mig != MigState::PreCopy && mig != MigState::PreCopyP2P)
    return refuse(EINVAL, fmt::format("MIG_DATA_READ in state {}; data is read in PRE_COPY or STOP_COPY",
                                      iommu::mig_state_name(mig)));
  uint64_t room = std::min<uint64_t>({in.size, in.argsz - sizeof(in), kMaxXfer});
  size_t n = static_cast<size_t>(std::min<uint64_t>(room, mig_out.size() - mig_out_pos));
  vu::MigData out{static_cast<uint32_t>(sizeof(out) + n), static_cast<uint32_t>(n)};
  r.append(out);
  r.payload.insert(r.payload.end(), mig_out.begin() + static_cast<long>(mig_out_pos),
                   mig_out.begin() + static_cast<long>(mig_out_pos + n));
  mig_out_pos += n;
  return done();
}

Outcome Server::Impl::on_mig_write(const vu::Message& m, Reply& r) {
  vu::MigData in{};
  if (!vu::read_struct(m.payload, 0, &in)) return violate(EINVAL, "MIG_DATA_WRITE payload shorter than 8 bytes");
  if (in.size != m.payload.size() - sizeof(in))
    return violate(EINVAL, fmt::format("MIG_DATA_WRITE says {} bytes but carries {}", in.size,
                                       m.payload.size() - sizeof(in)));
  std::lock_guard g(lock);
  if (mig != MigState::Resuming)
    return refuse(EINVAL, fmt::format("MIG_DATA_WRITE in state {}; data is written in RESUMING",
                                      iommu::mig_state_name(mig)));
  if (mig_in.size() + in.size > 2 * kMaxStatePayload)
    return refuse(ENOSPC, "MIG_DATA_WRITE: the migration stream is larger than any device state");
  mig_in.insert(mig_in.end(), m.payload.begin() + sizeof(in), m.payload.end());
  vu::MigData out{sizeof(out), in.size};
  r.append(out);
  return done();
}

}  // namespace uvio::emu
