#include "iommu/vfio_kernel_device.h"

#include <uvio/log.h>

#include "iommu/abi/vfio.h"
#include "iommu/sys.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

namespace uvio::iommu {
namespace {

using namespace abi;

Status failed(int rc, const std::string& what) { return Status::error(-rc, what); }

// Fixed-size request structures and their variable tails travel in one u64-aligned
// buffer, as the kernel reads them.
std::vector<uint64_t> aligned_buffer(size_t bytes) { return std::vector<uint64_t>((bytes + 7) / 8, 0); }

constexpr const char* kDeviceLog = "vfio";

}  // namespace

// VFIO_DEVICE_FEATURE_DMA_LOGGING_*: the device tracks the pages it writes itself.
class VfioKernelDevice::DmaLogging final : public DirtyTracker {
 public:
  explicit DmaLogging(VfioKernelDevice& dev) : dev_(dev) {}
  std::string_view name() const override { return "vfio-dma-logging"; }

  Status start(std::span<const IovaRange> ranges, uint64_t page_size) override {
    if (ranges.empty()) return Status::error(EINVAL, "DMA logging needs at least one IOVA range");
    std::vector<VfioDeviceFeatureDmaLoggingRange> kranges;
    for (const IovaRange& r : ranges) kranges.push_back({r.start, r.length()});
    VfioDeviceFeatureDmaLoggingControl control{};
    control.page_size = page_size;
    control.num_ranges = static_cast<uint32_t>(kranges.size());
    control.ranges = reinterpret_cast<uintptr_t>(kranges.data());
    Status st = dev_.feature(kVfioDeviceFeatureSet, kVfioFeatureDmaLoggingStart,
                             {reinterpret_cast<uint8_t*>(&control), sizeof(control)});
    if (!st) return Status::error(st.code(), "device " + dev_.p_.name + ": starting DMA logging over " +
                                                 std::to_string(ranges.size()) + " range(s) failed");
    return Status::ok();
  }

  Status read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size,
                        std::span<uint64_t> bitmap) override {
    if (page_size == 0 || length / page_size > bitmap.size() * 64)
      return Status::error(EINVAL, "dirty bitmap of " + std::to_string(bitmap.size() * 64) +
                                       " bits is too small for the range");
    // The kernel ORs bits in; a stale bit would read as a dirty page.
    std::fill(bitmap.begin(), bitmap.end(), 0);
    VfioDeviceFeatureDmaLoggingReport report{};
    report.iova = iova;
    report.length = length;
    report.page_size = page_size;
    report.bitmap = reinterpret_cast<uintptr_t>(bitmap.data());
    return dev_.feature(kVfioDeviceFeatureGet, kVfioFeatureDmaLoggingReport,
                        {reinterpret_cast<uint8_t*>(&report), sizeof(report)});
  }

  Status stop() override {
    return dev_.feature(kVfioDeviceFeatureSet, kVfioFeatureDmaLoggingStop, {});
  }

 private:
  VfioKernelDevice& dev_;
};

Result<std::unique_ptr<VfioKernelDevice>> VfioKernelDevice::create(Params params) {
  std::unique_ptr<VfioKernelDevice> dev(new VfioKernelDevice(std::move(params)));
  Sys& s = sys();
  VfioDeviceInfo info{};
  info.argsz = sizeof(info);
  int rc = s.ioctl_ptr(dev->p_.device_fd, kVfioDeviceGetInfo, &info);
  if (rc < 0) return failed(rc, "VFIO_DEVICE_GET_INFO on " + dev->p_.name + " failed: not a VFIO device fd?");
  if (info.num_regions > 64 || info.num_irqs > 64)
    return Status::error(EPROTO, "VFIO_DEVICE_GET_INFO on " + dev->p_.name + " reports " +
                                     std::to_string(info.num_regions) + " regions and " +
                                     std::to_string(info.num_irqs) + " IRQ indexes; refusing an implausible reply");
  dev->info_.flags = info.flags;
  dev->info_.num_regions = info.num_regions;
  dev->info_.num_irqs = info.num_irqs;
  // Capabilities are delivered only when argsz covers them: ask again with the size the
  // kernel asked for.
  if ((info.flags & kVfioDeviceFlagsCaps) && info.argsz > sizeof(info) && info.argsz <= 65536) {
    auto buf = aligned_buffer(info.argsz);
    auto* full = reinterpret_cast<VfioDeviceInfo*>(buf.data());
    full->argsz = info.argsz;
    rc = s.ioctl_ptr(dev->p_.device_fd, kVfioDeviceGetInfo, full);
    if (rc < 0) return failed(rc, "VFIO_DEVICE_GET_INFO with capabilities on " + dev->p_.name + " failed");
    size_t len = std::min<size_t>(full->argsz, buf.size() * 8);
    UVIO_TRY(walk_cap_chain(reinterpret_cast<const uint8_t*>(buf.data()), len, full->cap_offset,
                            [&](uint16_t id, uint16_t, uint32_t) { dev->info_.cap_ids.push_back(id); }));
  }
  dev->regions_.resize(info.num_regions);
  return dev;
}

VfioKernelDevice::VfioKernelDevice(Params params) : p_(std::move(params)) {}

VfioKernelDevice::~VfioKernelDevice() {
  Sys& s = sys();
  for (const Mapping& m : mappings_) s.munmap(m.addr, m.len);
  if (data_fd_ >= 0) s.close(data_fd_);
  if (p_.device_fd >= 0) s.close(p_.device_fd);
}

Result<RegionInfo> VfioKernelDevice::region_info(uint32_t index) {
  auto r = cached_region(index);
  if (!r) return r.status();
  return **r;
}

Result<const RegionInfo*> VfioKernelDevice::cached_region(uint32_t index) {
  if (index >= regions_.size())
    return Status::error(EINVAL, "region " + std::to_string(index) + " does not exist on " + p_.name +
                                     " (it has " + std::to_string(regions_.size()) + ")");
  if (regions_[index]) return regions_[index].get();
  Sys& s = sys();
  VfioRegionInfo head{};
  head.argsz = sizeof(head);
  head.index = index;
  int rc = s.ioctl_ptr(p_.device_fd, kVfioDeviceGetRegionInfo, &head);
  if (rc < 0) return failed(rc, "VFIO_DEVICE_GET_REGION_INFO for region " + std::to_string(index) + " of " + p_.name);
  auto out = std::make_unique<RegionInfo>();
  out->index = index;
  out->flags = head.flags;
  out->size = head.size;
  out->offset = head.offset;
  // The first answer only says how large the capability chain is; the kernel fills it
  // in on the second call, with argsz large enough.
  if ((head.flags & kVfioRegionInfoFlagCaps) && head.argsz > sizeof(head)) {
    if (head.argsz > 65536)
      return Status::error(EPROTO, "region " + std::to_string(index) + " of " + p_.name + " asks for a " +
                                       std::to_string(head.argsz) + "-byte info buffer; refusing");
    auto buf = aligned_buffer(head.argsz);
    auto* full = reinterpret_cast<VfioRegionInfo*>(buf.data());
    full->argsz = head.argsz;
    full->index = index;
    rc = s.ioctl_ptr(p_.device_fd, kVfioDeviceGetRegionInfo, full);
    if (rc < 0) return failed(rc, "VFIO_DEVICE_GET_REGION_INFO with capabilities, region " + std::to_string(index));
    const auto* bytes = reinterpret_cast<const uint8_t*>(buf.data());
    size_t len = std::min<size_t>(full->argsz, buf.size() * 8);
    Status parse = Status::ok();
    Status walk = walk_cap_chain(bytes, len, full->cap_offset, [&](uint16_t id, uint16_t, uint32_t off) {
      out->cap_ids.push_back(id);
      if (id == kVfioRegionInfoCapMsixMappable) out->msix_mappable = true;
      if (id != kVfioRegionInfoCapSparseMmap) return;
      VfioRegionInfoCapSparseMmap cap;
      if (len - off < sizeof(cap)) {
        parse = Status::error(EPROTO, "truncated sparse-mmap capability");
        return;
      }
      std::memcpy(&cap, bytes + off, sizeof(cap));
      size_t room = (len - off - sizeof(cap)) / sizeof(VfioRegionSparseMmapArea);
      if (cap.nr_areas > room) {
        parse = Status::error(EPROTO, "sparse-mmap capability claims " + std::to_string(cap.nr_areas) +
                                          " areas but the reply holds " + std::to_string(room));
        return;
      }
      for (uint32_t i = 0; i < cap.nr_areas; ++i) {
        VfioRegionSparseMmapArea a;
        std::memcpy(&a, bytes + off + sizeof(cap) + i * sizeof(a), sizeof(a));
        if (a.size == 0) continue;  // the kernel may list empty areas
        if (a.offset > out->size || a.size > out->size - a.offset) {
          parse = Status::error(EPROTO, "sparse-mmap area beyond the end of region " + std::to_string(index));
          return;
        }
        out->sparse.push_back({a.offset, a.size});
      }
    });
    UVIO_TRY(walk);
    UVIO_TRY(parse);
  }
  regions_[index] = std::move(out);
  return regions_[index].get();
}

Status VfioKernelDevice::check_region_access(const RegionInfo& r, uint64_t offset, size_t len, bool write) {
  if (!(write ? r.writable() : r.readable()))
    return Status::error(EACCES, "region " + std::to_string(r.index) + " of " + p_.name + " is not " +
                                     (write ? "writable" : "readable"));
  if (offset > r.size || len > r.size - offset)
    return Status::error(EINVAL, "access [" + std::to_string(offset) + ", +" + std::to_string(len) +
                                     ") is outside region " + std::to_string(r.index) + " (" +
                                     std::to_string(r.size) + " bytes)");
  return Status::ok();
}

Status VfioKernelDevice::region_read(uint32_t index, uint64_t offset, void* buf, size_t len) {
  auto r = cached_region(index);
  if (!r) return r.status();
  UVIO_TRY(check_region_access(**r, offset, len, false));
  ssize_t n = sys().pread(p_.device_fd, buf, len, (*r)->offset + offset);
  if (n < 0) return failed(static_cast<int>(n), "reading region " + std::to_string(index) + " of " + p_.name);
  if (static_cast<size_t>(n) != len) return Status::error(EIO, "short read from region " + std::to_string(index));
  return Status::ok();
}

Status VfioKernelDevice::region_write(uint32_t index, uint64_t offset, const void* buf, size_t len) {
  auto r = cached_region(index);
  if (!r) return r.status();
  UVIO_TRY(check_region_access(**r, offset, len, true));
  ssize_t n = sys().pwrite(p_.device_fd, buf, len, (*r)->offset + offset);
  if (n < 0) return failed(static_cast<int>(n), "writing region " + std::to_string(index) + " of " + p_.name);
  if (static_cast<size_t>(n) != len) return Status::error(EIO, "short write to region " + std::to_string(index));
  return Status::ok();
}

Result<void*> VfioKernelDevice::region_map(uint32_t index, uint64_t offset, uint64_t len) {
  auto rr = cached_region(index);
  if (!rr) return rr.status();
  const RegionInfo& r = **rr;
  std::string what = "region " + std::to_string(index) + " of " + p_.name;
  if (!r.mappable()) return Status::error(ENOTSUP, what + " cannot be mmapped (no MMAP flag)");
  if (len == 0 || offset > r.size || len > r.size - offset)
    return Status::error(EINVAL, "mmap range outside " + what);
  if (offset % 4096 != 0) return Status::error(EINVAL, "mmap offset in " + what + " must be page aligned");
  // With a sparse-mmap capability only the listed areas may be mapped (the rest, such as
  // an MSI-X table, is trapped by the kernel).
  if (!r.sparse.empty()) {
    bool inside = std::any_of(r.sparse.begin(), r.sparse.end(), [&](const SparseArea& a) {
      return offset >= a.offset && offset + len <= a.offset + a.size;
    });
    if (!inside) return Status::error(EINVAL, "[" + std::to_string(offset) + ", +" + std::to_string(len) +
                                                  ") of " + what + " is not inside one mmappable sparse area");
  }
  int prot = (r.readable() ? PROT_READ : 0) | (r.writable() ? PROT_WRITE : 0);
  int err = 0;
  void* addr = sys().mmap(len, prot, MAP_SHARED, p_.device_fd, r.offset + offset, &err);
  if (!addr) return Status::error(err, "mmap of " + what + " failed");
  mappings_.push_back({addr, len});
  return addr;
}

Status VfioKernelDevice::reset() {
  if (!info_.can_reset()) return Status::error(ENOTSUP, p_.name + " offers no reset (no VFIO_DEVICE_FLAGS_RESET)");
  int rc = sys().ioctl(p_.device_fd, kVfioDeviceReset, 0);
  if (rc < 0) return failed(rc, "VFIO_DEVICE_RESET of " + p_.name);
  return Status::ok();
}

Result<IrqInfo> VfioKernelDevice::irq_info(uint32_t index) {
  if (index >= info_.num_irqs)
    return Status::error(EINVAL, "IRQ index " + std::to_string(index) + " does not exist on " + p_.name);
  VfioIrqInfo k{};
  k.argsz = sizeof(k);
  k.index = index;
  int rc = sys().ioctl_ptr(p_.device_fd, kVfioDeviceGetIrqInfo, &k);
  if (rc < 0) return failed(rc, "VFIO_DEVICE_GET_IRQ_INFO for index " + std::to_string(index) + " of " + p_.name);
  return IrqInfo{index, k.flags, k.count};
}

Status VfioKernelDevice::set_irq_eventfds(uint32_t index, uint32_t start, std::span<const int> fds) {
  if (fds.empty()) return Status::error(EINVAL, "no eventfds given for IRQ index " + std::to_string(index));
  size_t bytes = sizeof(VfioIrqSet) + fds.size() * sizeof(int32_t);
  auto buf = aligned_buffer(bytes);
  auto* set = reinterpret_cast<VfioIrqSet*>(buf.data());
  set->argsz = static_cast<uint32_t>(bytes);
  set->flags = kVfioIrqSetDataEventfd | kVfioIrqSetActionTrigger;
  set->index = index;
  set->start = start;
  set->count = static_cast<uint32_t>(fds.size());
  auto* tail = reinterpret_cast<uint8_t*>(buf.data()) + sizeof(VfioIrqSet);
  for (size_t i = 0; i < fds.size(); ++i) {
    int32_t fd = fds[i];
    std::memcpy(tail + i * sizeof(fd), &fd, sizeof(fd));
  }
  int rc = sys().ioctl_ptr(p_.device_fd, kVfioDeviceSetIrqs, set);
  if (rc < 0)
    return failed(rc, "VFIO_DEVICE_SET_IRQS wiring " + std::to_string(fds.size()) + " eventfd(s) to vectors " +
                          std::to_string(start) + ".. of IRQ index " + std::to_string(index) + " of " + p_.name);
  return Status::ok();
}

Status VfioKernelDevice::disable_irqs(uint32_t index) {
  VfioIrqSet set{};
  set.argsz = sizeof(set);
  set.flags = kVfioIrqSetDataNone | kVfioIrqSetActionTrigger;  // count 0: tear the index down
  set.index = index;
  int rc = sys().ioctl_ptr(p_.device_fd, kVfioDeviceSetIrqs, &set);
  if (rc < 0) return failed(rc, "disabling IRQ index " + std::to_string(index) + " of " + p_.name);
  return Status::ok();
}

Status VfioKernelDevice::feature(uint32_t flags, uint32_t feature_id, std::span<uint8_t> data) {
  size_t bytes = sizeof(VfioDeviceFeature) + data.size();
  auto buf = aligned_buffer(bytes);
  auto* f = reinterpret_cast<VfioDeviceFeature*>(buf.data());
  f->argsz = static_cast<uint32_t>(bytes);
  f->flags = (flags & ~kVfioDeviceFeatureMask) | (feature_id & kVfioDeviceFeatureMask);
  auto* payload = reinterpret_cast<uint8_t*>(buf.data()) + sizeof(VfioDeviceFeature);
  if (!data.empty()) std::memcpy(payload, data.data(), data.size());
  int rc = sys().ioctl_ptr(p_.device_fd, kVfioDeviceFeature, f);
  if (rc < 0) return failed(rc, "VFIO_DEVICE_FEATURE " + std::to_string(feature_id) + " on " + p_.name);
  if ((flags & kVfioDeviceFeatureGet) && !data.empty()) std::memcpy(data.data(), payload, data.size());
  return Status::ok();
}

Result<MigrationCaps> VfioKernelDevice::migration_caps() {
  VfioDeviceFeatureMigration mig{};
  Status st = feature(kVfioDeviceFeatureGet, kVfioFeatureMigration, {reinterpret_cast<uint8_t*>(&mig), sizeof(mig)});
  // ENOTTY is how vfio-pci without a migration driver answers.
  if (!st && (st.code() == ENOTTY || st.code() == EOPNOTSUPP)) return MigrationCaps{};
  if (!st) return st;
  return MigrationCaps{true, mig.flags};
}

Result<MigState> VfioKernelDevice::mig_state() {
  VfioDeviceFeatureMigState s{};
  UVIO_TRY(feature(kVfioDeviceFeatureGet, kVfioFeatureMigDeviceState, {reinterpret_cast<uint8_t*>(&s), sizeof(s)}));
  if (s.device_state > static_cast<uint32_t>(MigState::PreCopyP2P))
    return Status::error(EPROTO, p_.name + " reports unknown migration state " + std::to_string(s.device_state));
  return static_cast<MigState>(s.device_state);
}

Status VfioKernelDevice::set_mig_state(MigState next) {
  VfioDeviceFeatureMigState s{};
  s.device_state = static_cast<uint32_t>(next);
  s.data_fd = -1;
  // SET writes the new data fd back into the payload, so the buffer is read after the call.
  size_t bytes = sizeof(VfioDeviceFeature) + sizeof(s);
  auto buf = aligned_buffer(bytes);
  auto* f = reinterpret_cast<VfioDeviceFeature*>(buf.data());
  f->argsz = static_cast<uint32_t>(bytes);
  f->flags = kVfioDeviceFeatureSet | kVfioFeatureMigDeviceState;
  auto* payload = reinterpret_cast<uint8_t*>(buf.data()) + sizeof(VfioDeviceFeature);
  std::memcpy(payload, &s, sizeof(s));
  Sys& sy = sys();
  int rc = sy.ioctl_ptr(p_.device_fd, kVfioDeviceFeature, f);
  if (rc < 0)
    return failed(rc, "moving " + p_.name + " to migration state " + std::to_string(s.device_state));
  std::memcpy(&s, payload, sizeof(s));
  bool carries_data = next == MigState::StopCopy || next == MigState::Resuming || next == MigState::PreCopy ||
                      next == MigState::PreCopyP2P;
  if (s.data_fd >= 0 && s.data_fd != data_fd_) {
    if (data_fd_ >= 0) sy.close(data_fd_);
    data_fd_ = s.data_fd;
  } else if (!carries_data && data_fd_ >= 0) {
    sy.close(data_fd_);
    data_fd_ = -1;
  }
  return Status::ok();
}

Result<size_t> VfioKernelDevice::mig_read(void* buf, size_t len) {
  if (data_fd_ < 0) return Status::error(EBADF, p_.name + " has no migration data fd: not in STOP_COPY or PRE_COPY");
  ssize_t n = sys().read(data_fd_, buf, len);
  // In PRE_COPY the kernel answers ENOMSG when the initial data is drained and nothing
  // new is dirty yet: for the caller that is the end of the current data.
  if (n == -ENOMSG) return size_t{0};
  if (n < 0) return failed(static_cast<int>(n), "reading migration data of " + p_.name);
  return static_cast<size_t>(n);
}

Status VfioKernelDevice::mig_write(const void* buf, size_t len) {
  if (data_fd_ < 0) return Status::error(EBADF, p_.name + " has no migration data fd: not in RESUMING");
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = sys().write(data_fd_, p, len);
    if (n == -EINTR) continue;
    if (n < 0) return failed(static_cast<int>(n), "writing migration data to " + p_.name);
    if (n == 0) return Status::error(EIO, p_.name + " accepted no migration data");
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::ok();
}

Result<uint64_t> VfioKernelDevice::mig_data_size() {
  VfioDeviceFeatureMigDataSize size{};
  UVIO_TRY(feature(kVfioDeviceFeatureGet, kVfioFeatureMigDataSize, {reinterpret_cast<uint8_t*>(&size), sizeof(size)}));
  return size.stop_copy_length;
}

Result<PrecopyInfo> VfioKernelDevice::precopy_info() {
  if (data_fd_ < 0) return Status::error(EBADF, p_.name + " is not in PRE_COPY (no migration data fd)");
  VfioPrecopyInfo info{};
  info.argsz = sizeof(info);
  int rc = sys().ioctl_ptr(data_fd_, kVfioMigGetPrecopyInfo, &info);
  if (rc < 0) return failed(rc, "VFIO_MIG_GET_PRECOPY_INFO on " + p_.name);
  return PrecopyInfo{info.initial_bytes, info.dirty_bytes};
}

DirtyTracker* VfioKernelDevice::dma_logging() {
  if (!dma_logging_probed_) {
    dma_logging_probed_ = true;
    Status st = feature(kVfioDeviceFeatureProbe | kVfioDeviceFeatureSet, kVfioFeatureDmaLoggingStart, {});
    if (st) dma_logging_ = std::make_unique<DmaLogging>(*this);
    else UVIO_LOG(Debug, kDeviceLog, "{}: no device DMA logging ({})", p_.name, st.describe());
  }
  return dma_logging_.get();
}

}  // namespace uvio::iommu
