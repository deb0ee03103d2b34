#include "test/iommu/fake_kernel.h"

#include "iommu/abi/iommufd.h"
#include "iommu/abi/vfio.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace uvio::iommu::testing {
namespace {

using namespace abi;

constexpr uint64_t kRegionShift = 40;  // vfio-pci places region i at offset i << 40
constexpr uint64_t kPage = 4096;

template <class T>
T* as(uintptr_t arg) {
  return reinterpret_cast<T*>(arg);
}

bool aligned(uint64_t v) { return v % kPage == 0; }

void put_cap_header(uint8_t* at, uint16_t id, uint16_t version, uint32_t next) {
  VfioInfoCapHeader h{id, version, next};
  std::memcpy(at, &h, sizeof(h));
}

}  // namespace

FakeKernel::FakeKernel() {
  regions.resize(9);
  // BAR0: 16 KiB, mmappable except the MSI-X table page, as vfio-pci reports it.
  Region& bar0 = regions[0];
  bar0.flags = kVfioRegionInfoFlagRead | kVfioRegionInfoFlagWrite | kVfioRegionInfoFlagMmap;
  bar0.bytes.resize(16384);
  for (size_t i = 0; i < bar0.bytes.size(); ++i) bar0.bytes[i] = static_cast<uint8_t>(i * 7);
  bar0.sparse = {{0, 8192}, {12288, 4096}};
  bar0.msix_mappable = true;
  // Config space: vendor 0x1b36, device 0x0010.
  Region& cfg = regions[7];
  cfg.flags = kVfioRegionInfoFlagRead | kVfioRegionInfoFlagWrite;
  cfg.bytes.resize(256);
  cfg.bytes[0] = 0x36;
  cfg.bytes[1] = 0x1b;
  cfg.bytes[2] = 0x10;
  cfg.bytes[3] = 0x00;
}

FakeKernel::~FakeKernel() {
  for (auto& [addr, len] : mmaps_) ::munmap(addr, len);
}

size_t FakeKernel::count(unsigned long request) const {
  return static_cast<size_t>(std::count_if(calls.begin(), calls.end(), [&](const Call& c) { return c.request == request; }));
}

int FakeKernel::new_fd(Kind kind) {
  int fd = next_fd_++;
  fds_[fd] = FdState{kind};
  return fd;
}

const FakeKernel::FdState* FakeKernel::fd_state(int fd) const {
  auto it = fds_.find(fd);
  return it == fds_.end() ? nullptr : &it->second;
}

bool FakeKernel::inside_ranges(uint64_t iova, uint64_t len) const {
  uint64_t last = iova + len - 1;
  if (last < iova) return false;
  return std::any_of(ranges.begin(), ranges.end(), [&](const IovaRange& r) { return iova >= r.start && last <= r.last; });
}

// ---- files ----

int FakeKernel::open(const std::string& path, int) {
  if (path == "/dev/vfio/vfio") return new_fd(Kind::Container);
  if (path == "/dev/vfio/" + std::to_string(kFakeGroup)) return new_fd(Kind::Group);
  if (path == "/dev/iommu") return have_iommufd ? new_fd(Kind::Iommufd) : -ENOENT;
  if (path == "/dev/vfio/devices/vfio3") return have_cdev ? new_fd(Kind::CdevDevice) : -ENOENT;
  return -ENOENT;
}

int FakeKernel::close(int fd) {
  calls.push_back({fd, 0});
  return fds_.erase(fd) ? 0 : -EBADF;
}

bool FakeKernel::exists(const std::string& path) {
  if (path == std::string("/sys/bus/pci/devices/") + kFakeBdf) return true;
  if (path == "/dev/iommu") return have_iommufd;
  if (path == "/dev/vfio/devices") return have_cdev;
  return false;
}

int FakeKernel::read_link(const std::string& path, std::string* target) {
  std::string dev = std::string("/sys/bus/pci/devices/") + kFakeBdf;
  if (path == dev + "/iommu_group") {
    *target = "../../../kernel/iommu_groups/" + std::to_string(kFakeGroup);
    return 0;
  }
  std::string group_devs = "/sys/kernel/iommu_groups/" + std::to_string(kFakeGroup) + "/devices/";
  if (path == group_devs + kFakeBdf + "/driver") {
    *target = "../../../bus/pci/drivers/vfio-pci";
    return 0;
  }
  if (path == group_devs + "0000:01:00.1/driver") {
    *target = "../../../bus/pci/drivers/e1000e";
    return 0;
  }
  return -ENOENT;
}

int FakeKernel::list_dir(const std::string& path, std::vector<std::string>* names) {
  if (path == std::string("/sys/bus/pci/devices/") + kFakeBdf + "/vfio-dev") {
    if (!have_cdev) return -ENOENT;
    *names = {"vfio3"};
    return 0;
  }
  if (path == "/sys/kernel/iommu_groups/" + std::to_string(kFakeGroup) + "/devices") {
    *names = {kFakeBdf, "0000:01:00.1"};
    return 0;
  }
  return -ENOENT;
}

int FakeKernel::eventfd(unsigned, int) { return new_fd(Kind::Eventfd); }

// ---- ioctl dispatch ----

int FakeKernel::ioctl(int fd, unsigned long request, uintptr_t arg) {
  calls.push_back({fd, request});
  auto it = fds_.find(fd);
  if (it == fds_.end()) return -EBADF;
  switch (it->second.kind) {
    case Kind::Container: return container_ioctl(request, arg);
    case Kind::Group: return group_ioctl(request, arg);
    case Kind::GroupDevice:
    case Kind::CdevDevice: return device_ioctl(it->second, request, arg);
    case Kind::Iommufd: return iommufd_ioctl(request, arg);
    case Kind::MigData:
      if (request == kVfioMigGetPrecopyInfo) {
        auto* info = as<VfioPrecopyInfo>(arg);
        if (info->argsz < sizeof(*info)) return -EINVAL;
        info->initial_bytes = mig_blob.size() - std::min(mig_blob.size(), it->second.read_pos);
        info->dirty_bytes = 0;
        return 0;
      }
      return -ENOTTY;
    case Kind::Eventfd: return -ENOTTY;
  }
  return -ENOTTY;
}

int FakeKernel::container_ioctl(unsigned long request, uintptr_t arg) {
  if (request == kVfioGetApiVersion) return kVfioApiVersion;
  if (request == kVfioCheckExtension) return arg == kVfioType1v2Iommu || arg == kVfioType1Iommu ? 1 : 0;
  if (request == kVfioSetIommu) {
    if (!group_has_container_) return -EINVAL;  // no group in the container yet
    if (arg != kVfioType1v2Iommu) return -EINVAL;
    if (container_iommu_set_) return -EBUSY;
    container_iommu_set_ = true;
    return 0;
  }
  if (!container_iommu_set_) return -EINVAL;
  if (request == kVfioIommuGetInfo) {
    auto* info = as<VfioIommuType1Info>(arg);
    if (info->argsz < offsetof(VfioIommuType1Info, cap_offset)) return -EINVAL;
    size_t range_cap = sizeof(VfioIommuType1InfoCapIovaRange) + ranges.size() * sizeof(VfioIovaRange);
    size_t needed = sizeof(VfioIommuType1Info) + range_cap + sizeof(VfioIommuType1InfoCapMigration) +
                    sizeof(VfioIommuType1InfoDmaAvail);
    info->flags = kVfioIommuInfoPgsizes | kVfioIommuInfoCaps;
    info->iova_pgsizes = 0x40201000;
    if (info->argsz < needed) {
      info->argsz = static_cast<uint32_t>(needed);
      info->cap_offset = 0;
      return 0;
    }
    auto* base = reinterpret_cast<uint8_t*>(info);
    uint32_t off = sizeof(VfioIommuType1Info);
    info->cap_offset = off;
    VfioIommuType1InfoCapIovaRange rc{};
    rc.nr_iovas = static_cast<uint32_t>(ranges.size());
    std::memcpy(base + off, &rc, sizeof(rc));
    for (size_t i = 0; i < ranges.size(); ++i) {
      VfioIovaRange r{ranges[i].start, ranges[i].last};
      std::memcpy(base + off + sizeof(rc) + i * sizeof(r), &r, sizeof(r));
    }
    uint32_t mig_off = static_cast<uint32_t>(off + range_cap);
    put_cap_header(base + off, kVfioIommuType1InfoCapIovaRange, 1, mig_off);
    VfioIommuType1InfoCapMigration mig{};
    mig.pgsize_bitmap = kPage;
    mig.max_dirty_bitmap_size = 256ull << 20;
    std::memcpy(base + mig_off, &mig, sizeof(mig));
    uint32_t avail_off = mig_off + sizeof(mig);
    put_cap_header(base + mig_off, kVfioIommuType1InfoCapMigration, 1, avail_off);
    VfioIommuType1InfoDmaAvail avail{};
    avail.avail = dma_limit - static_cast<uint32_t>(type1_maps.size());
    std::memcpy(base + avail_off, &avail, sizeof(avail));
    put_cap_header(base + avail_off, kVfioIommuType1InfoDmaAvail, 1, 0);
    return 0;
  }
  if (request == kVfioIommuMapDma) {
    auto* m = as<VfioIommuType1DmaMap>(arg);
    if (m->argsz < sizeof(*m)) return -EINVAL;
    if (m->flags & ~(kVfioDmaMapFlagRead | kVfioDmaMapFlagWrite)) return -EINVAL;
    if (m->size == 0 || !aligned(m->size) || !aligned(m->iova) || !aligned(m->vaddr)) return -EINVAL;
    if (map_errno) return -map_errno;
    if (!inside_ranges(m->iova, m->size)) return -EINVAL;
    for (auto& [iova, len] : type1_maps)
      if (m->iova < iova + len && iova < m->iova + m->size) return -EEXIST;
    if (type1_maps.size() >= dma_limit) return -ENOSPC;
    type1_maps[m->iova] = m->size;
    return 0;
  }
  if (request == kVfioIommuUnmapDma) {
    auto* u = as<VfioIommuType1DmaUnmap>(arg);
    if (u->argsz < sizeof(*u) || u->flags != 0) return -EINVAL;
    if (!aligned(u->iova) || !aligned(u->size)) return -EINVAL;
    uint64_t end = u->iova + u->size;
    // type1v2 refuses to split a mapping at either end of the range.
    for (auto& [iova, len] : type1_maps) {
      bool overlaps = iova < end && u->iova < iova + len;
      if (overlaps && (iova < u->iova || iova + len > end)) return -EINVAL;
    }
    uint64_t removed = 0;
    for (auto it = type1_maps.lower_bound(u->iova); it != type1_maps.end() && it->first < end;) {
      removed += it->second;
      it = type1_maps.erase(it);
    }
    u->size = removed;
    return 0;
  }
  if (request == kVfioIommuDirtyPages) {
    auto* db = as<VfioIommuType1DirtyBitmap>(arg);
    if (db->argsz < sizeof(*db)) return -EINVAL;
    uint32_t f = db->flags;
    if (f == kVfioIommuDirtyPagesFlagStart) return type1_dirty_started = true, 0;
    if (f == kVfioIommuDirtyPagesFlagStop) return type1_dirty_started = false, 0;
    if (f != kVfioIommuDirtyPagesFlagGetBitmap) return -EINVAL;
    if (db->argsz < sizeof(*db) + sizeof(VfioIommuType1DirtyBitmapGet) || !type1_dirty_started) return -EINVAL;
    VfioIommuType1DirtyBitmapGet get;
    std::memcpy(&get, reinterpret_cast<uint8_t*>(db) + sizeof(*db), sizeof(get));
    if (get.bitmap.pgsize != kPage || !aligned(get.iova) || !aligned(get.size)) return -EINVAL;
    uint64_t pages = get.size / kPage;
    if (get.bitmap.size < (pages + 63) / 64 * 8) return -EINVAL;
    // The range must start and end on mapping boundaries.
    auto first = type1_maps.find(get.iova);
    if (first == type1_maps.end()) return -EINVAL;
    auto* bits = reinterpret_cast<uint64_t*>(get.bitmap.data);
    for (uint64_t iova : dirty_iovas)
      if (iova >= get.iova && iova < get.iova + get.size) {
        uint64_t bit = (iova - get.iova) / kPage;
        bits[bit / 64] |= 1ull << (bit % 64);
      }
    return 0;
  }
  return -ENOTTY;
}

int FakeKernel::group_ioctl(unsigned long request, uintptr_t arg) {
  if (request == kVfioGroupGetStatus) {
    auto* st = as<VfioGroupStatus>(arg);
    if (st->argsz < sizeof(*st)) return -EINVAL;
    st->flags = (group_viable ? kVfioGroupFlagsViable : 0) | (group_has_container_ ? kVfioGroupFlagsContainerSet : 0);
    return 0;
  }
  if (request == kVfioGroupSetContainer) {
    int cfd = *as<int>(arg);
    const FdState* c = fd_state(cfd);
    if (!c || c->kind != Kind::Container) return -EBADF;
    if (!group_viable) return -EPERM;
    if (group_has_container_) return -EBUSY;
    group_has_container_ = true;
    return 0;
  }
  if (request == kVfioGroupGetDeviceFd) {
    if (!group_has_container_ || !container_iommu_set_) return -EINVAL;
    std::string name(as<const char>(arg));
    if (name.rfind(kFakeBdf, 0) != 0) return -ENODEV;
    return new_fd(Kind::GroupDevice);
  }
  return -ENOTTY;
}

int FakeKernel::device_ioctl(FdState& st, unsigned long request, uintptr_t arg) {
  if (st.kind == Kind::CdevDevice) {
    if (request == kVfioDeviceBindIommufd) {
      auto* b = as<VfioDeviceBindIommufd>(arg);
      if (b->argsz < offsetof(VfioDeviceBindIommufd, token_uuid_ptr)) return -EINVAL;
      if (b->flags & ~kVfioDeviceBindFlagToken) return -EINVAL;
      const FdState* ifd = fd_state(b->iommufd);
      if (!ifd || ifd->kind != Kind::Iommufd) return -EBADF;
      if (bound_) return -EBUSY;
      if (b->flags & kVfioDeviceBindFlagToken) {
        if (b->argsz < sizeof(*b) || b->token_uuid_ptr == 0) return -EINVAL;
        auto* t = reinterpret_cast<const uint8_t*>(b->token_uuid_ptr);
        bind_token.assign(t, t + 16);
      }
      bound_ = true;
      b->out_devid = kFakeDevId;
      return 0;
    }
    if (!bound_) return -EINVAL;  // every other ioctl of a cdev needs a bound device
    if (request == kVfioDeviceAttachIommufdPt) {
      auto* a = as<VfioDeviceAttachIommufdPt>(arg);
      if (a->argsz < offsetof(VfioDeviceAttachIommufdPt, pasid) || a->flags != 0) return -EINVAL;
      if (a->pt_id != kFakeIoasId && !(hwpt_allocated_ && a->pt_id == kFakeHwptId)) return -ENOENT;
      attached_pt = a->pt_id;
      return 0;
    }
    if (attached_pt == 0 && request != kVfioDeviceGetInfo) return -EINVAL;
  }
  switch (request) {
    case kVfioDeviceGetInfo: {
      auto* info = as<VfioDeviceInfo>(arg);
      if (info->argsz < offsetof(VfioDeviceInfo, cap_offset)) return -EINVAL;
      info->flags = kVfioDeviceFlagsPci | kVfioDeviceFlagsReset;
      info->num_regions = static_cast<uint32_t>(regions.size());
      info->num_irqs = static_cast<uint32_t>(irq_counts.size());
      return 0;
    }
    case kVfioDeviceGetRegionInfo: return region_info(arg);
    case kVfioDeviceGetIrqInfo: {
      auto* info = as<VfioIrqInfo>(arg);
      if (info->argsz < sizeof(*info)) return -EINVAL;
      if (info->index >= irq_counts.size()) return -EINVAL;
      info->flags = kVfioIrqInfoEventfd | (info->index == 0 ? kVfioIrqInfoMaskable | kVfioIrqInfoAutomasked : kVfioIrqInfoNoresize);
      info->count = irq_counts[info->index];
      return 0;
    }
    case kVfioDeviceSetIrqs: return set_irqs(arg);
    case kVfioDeviceReset: return 0;
    case kVfioDeviceFeature: return feature(arg);
  }
  return -ENOTTY;
}

int FakeKernel::region_info(uintptr_t arg) {
  auto* info = as<VfioRegionInfo>(arg);
  if (info->argsz < sizeof(*info)) return -EINVAL;
  if (info->index >= regions.size()) return -EINVAL;
  region_info_calls[info->index]++;
  if (info->index == 8 && regions[8].bytes.empty()) return -EINVAL;  // vfio-pci: no VGA
  const Region& r = regions[info->index];
  info->flags = r.flags;
  info->size = r.bytes.size();
  info->offset = uint64_t{info->index} << kRegionShift;
  size_t caps = 0;
  if (!r.sparse.empty()) caps += sizeof(VfioRegionInfoCapSparseMmap) + r.sparse.size() * sizeof(VfioRegionSparseMmapArea);
  if (r.msix_mappable) caps += sizeof(VfioInfoCapHeader);
  if (caps == 0) return 0;
  info->flags |= kVfioRegionInfoFlagCaps;
  size_t needed = sizeof(*info) + caps;
  // Too small for the chain: say how much is needed and deliver no capabilities.
  if (info->argsz < needed) {
    info->argsz = static_cast<uint32_t>(needed);
    info->cap_offset = 0;
    return 0;
  }
  auto* base = reinterpret_cast<uint8_t*>(info);
  uint32_t off = sizeof(*info);
  info->cap_offset = off;
  uint32_t next = off;
  if (!r.sparse.empty()) {
    VfioRegionInfoCapSparseMmap cap{};
    cap.nr_areas = static_cast<uint32_t>(r.sparse.size());
    std::memcpy(base + off, &cap, sizeof(cap));
    for (size_t i = 0; i < r.sparse.size(); ++i) {
      VfioRegionSparseMmapArea a{r.sparse[i].offset, r.sparse[i].size};
      std::memcpy(base + off + sizeof(cap) + i * sizeof(a), &a, sizeof(a));
    }
    next = static_cast<uint32_t>(off + sizeof(cap) + r.sparse.size() * sizeof(VfioRegionSparseMmapArea));
    put_cap_header(base + off, kVfioRegionInfoCapSparseMmap, 1, r.msix_mappable ? next : 0);
    off = next;
  }
  if (r.msix_mappable) put_cap_header(base + off, kVfioRegionInfoCapMsixMappable, 1, 0);
  if (corrupt_region_caps && off != info->cap_offset) {
    // The last capability points back at the first: a loop.
    put_cap_header(base + off, kVfioRegionInfoCapMsixMappable, 1, info->cap_offset);
  }
  return 0;
}

int FakeKernel::set_irqs(uintptr_t arg) {
  auto* set = as<VfioIrqSet>(arg);
  if (set->argsz < sizeof(*set)) return -EINVAL;
  uint32_t data = set->flags & (kVfioIrqSetDataNone | kVfioIrqSetDataBool | kVfioIrqSetDataEventfd);
  uint32_t action = set->flags & (kVfioIrqSetActionMask | kVfioIrqSetActionUnmask | kVfioIrqSetActionTrigger);
  // Exactly one data type and one action, nothing else (vfio_set_irqs_validate_and_prepare).
  if (__builtin_popcount(data) != 1 || __builtin_popcount(action) != 1 || (set->flags & ~(data | action))) return -EINVAL;
  if (set->index >= irq_counts.size()) return -EINVAL;
  uint32_t max = irq_counts[set->index];
  if (set->count != 0 && (set->start >= max || set->count > max - set->start)) return -EINVAL;
  IrqSetRecord rec{set->argsz, set->flags, set->index, set->start, set->count, {}};
  if (data == kVfioIrqSetDataEventfd) {
    if (set->argsz < sizeof(*set) + size_t{set->count} * sizeof(int32_t)) return -EINVAL;
    auto* p = reinterpret_cast<const uint8_t*>(set) + sizeof(*set);
    for (uint32_t i = 0; i < set->count; ++i) {
      int32_t fd;
      std::memcpy(&fd, p + i * sizeof(fd), sizeof(fd));
      const FdState* st = fd_state(fd);
      if (fd != -1 && (!st || st->kind != Kind::Eventfd)) return -EBADF;
      rec.fds.push_back(fd);
    }
  } else if (data == kVfioIrqSetDataNone && set->count != 0 && action == kVfioIrqSetActionTrigger) {
    // DATA_NONE + TRIGGER with a count fires the vectors: fine, nothing to record.
  }
  irq_sets.push_back(std::move(rec));
  return 0;
}

int FakeKernel::feature(uintptr_t arg) {
  auto* f = as<VfioDeviceFeature>(arg);
  if (f->argsz < sizeof(*f)) return -EINVAL;
  uint32_t id = f->flags & kVfioDeviceFeatureMask;
  uint32_t ops = f->flags & ~kVfioDeviceFeatureMask;
  if (ops & ~(kVfioDeviceFeatureGet | kVfioDeviceFeatureSet | kVfioDeviceFeatureProbe)) return -EINVAL;
  uint8_t* payload = reinterpret_cast<uint8_t*>(f) + sizeof(*f);
  size_t payload_len = f->argsz - sizeof(*f);
  if (id == kVfioFeatureDmaLoggingStart || id == kVfioFeatureDmaLoggingStop || id == kVfioFeatureDmaLoggingReport) {
    if (!dma_logging) return -ENOTTY;
    if (ops & kVfioDeviceFeatureProbe) return 0;
    if (id == kVfioFeatureDmaLoggingStart) {
      if (ops != kVfioDeviceFeatureSet || payload_len < sizeof(VfioDeviceFeatureDmaLoggingControl)) return -EINVAL;
      VfioDeviceFeatureDmaLoggingControl c;
      std::memcpy(&c, payload, sizeof(c));
      if (c.num_ranges == 0 || c.ranges == 0 || c.page_size == 0) return -EINVAL;
      if (logging_started) return -EBUSY;
      logging_ranges.clear();
      auto* r = reinterpret_cast<const VfioDeviceFeatureDmaLoggingRange*>(c.ranges);
      for (uint32_t i = 0; i < c.num_ranges; ++i) logging_ranges.push_back({r[i].iova, r[i].iova + r[i].length - 1});
      logging_page_size = c.page_size;
      logging_started = true;
      return 0;
    }
    if (id == kVfioFeatureDmaLoggingStop) {
      if (ops != kVfioDeviceFeatureSet || !logging_started) return -EINVAL;
      logging_started = false;
      return 0;
    }
    if (ops != kVfioDeviceFeatureGet || payload_len < sizeof(VfioDeviceFeatureDmaLoggingReport) || !logging_started)
      return -EINVAL;
    VfioDeviceFeatureDmaLoggingReport rep;
    std::memcpy(&rep, payload, sizeof(rep));
    if (rep.page_size != logging_page_size || rep.iova % rep.page_size || rep.length % rep.page_size) return -EINVAL;
    auto* bits = reinterpret_cast<uint64_t*>(rep.bitmap);
    for (auto it = dirty_iovas.begin(); it != dirty_iovas.end();) {  // set bits only, and clear the log
      if (*it >= rep.iova && *it < rep.iova + rep.length) {
        uint64_t bit = (*it - rep.iova) / rep.page_size;
        bits[bit / 64] |= 1ull << (bit % 64);
        it = dirty_iovas.erase(it);
      } else {
        ++it;
      }
    }
    return 0;
  }
  if (!migration) return -ENOTTY;
  if (ops & kVfioDeviceFeatureProbe) return id <= kVfioFeatureMigDeviceState || id == kVfioFeatureMigDataSize ? 0 : -ENOTTY;
  switch (id) {
    case kVfioFeatureMigration: {
      if (!(ops & kVfioDeviceFeatureGet) || payload_len < sizeof(VfioDeviceFeatureMigration)) return -EINVAL;
      VfioDeviceFeatureMigration m{kVfioMigrationStopCopy | kVfioMigrationPreCopy};
      std::memcpy(payload, &m, sizeof(m));
      return 0;
    }
    case kVfioFeatureMigDeviceState: {
      if (payload_len < sizeof(VfioDeviceFeatureMigState)) return -EINVAL;
      VfioDeviceFeatureMigState s;
      std::memcpy(&s, payload, sizeof(s));
      if (ops & kVfioDeviceFeatureGet) {
        s.device_state = mig_state;
        s.data_fd = -1;
      } else {
        if (s.device_state > 7) return -EINVAL;
        mig_state = s.device_state;
        bool data = s.device_state == 3 || s.device_state == 4 || s.device_state == 6;
        s.data_fd = data ? new_fd(Kind::MigData) : -1;
      }
      std::memcpy(payload, &s, sizeof(s));
      return 0;
    }
    case kVfioFeatureMigDataSize: {
      if (payload_len < sizeof(VfioDeviceFeatureMigDataSize)) return -EINVAL;
      VfioDeviceFeatureMigDataSize d{mig_blob.size()};
      std::memcpy(payload, &d, sizeof(d));
      return 0;
    }
  }
  return -ENOTTY;
}

int FakeKernel::iommufd_ioctl(unsigned long request, uintptr_t arg) {
  switch (request) {
    case kIommuIoasAlloc: {
      auto* a = as<IommuIoasAlloc>(arg);
      if (a->size < sizeof(*a) || a->flags) return -EINVAL;
      a->out_ioas_id = kFakeIoasId;
      return 0;
    }
    case kIommuIoasIovaRanges: {
      auto* q = as<IommuIoasIovaRanges>(arg);
      if (q->size < sizeof(*q) || q->ioas_id != kFakeIoasId) return -EINVAL;
      uint32_t room = q->num_iovas;
      q->num_iovas = static_cast<uint32_t>(ranges.size());
      q->out_iova_alignment = kPage;
      if (room < ranges.size()) return -EMSGSIZE;
      auto* out = reinterpret_cast<IommuIovaRange*>(q->allowed_iovas);
      for (size_t i = 0; i < ranges.size(); ++i) out[i] = {ranges[i].start, ranges[i].last};
      return 0;
    }
    case kIommuIoasMapFile:
    case kIommuIoasMap: {
      bool by_file = request == kIommuIoasMapFile;
      if (by_file && !map_file_supported) return -ENOTTY;
      uint32_t size, flags, ioas;
      uint64_t length, iova, addr_or_start;
      if (by_file) {
        auto* m = as<IommuIoasMapFile>(arg);
        if (m->size < sizeof(*m)) return -EINVAL;
        size = m->size, flags = m->flags, ioas = m->ioas_id, length = m->length, iova = m->iova, addr_or_start = m->start;
        struct stat st;
        if (m->fd < 0 || fstat(m->fd, &st) != 0) return -EBADF;
        if (m->start + m->length > static_cast<uint64_t>(st.st_size)) return -EINVAL;
      } else {
        auto* m = as<IommuIoasMap>(arg);
        if (m->size < sizeof(*m)) return -EINVAL;
        size = m->size, flags = m->flags, ioas = m->ioas_id, length = m->length, iova = m->iova, addr_or_start = m->user_va;
      }
      (void)size;
      if (flags & ~(kIommuIoasMapFixedIova | kIommuIoasMapReadable | kIommuIoasMapWriteable)) return -EOPNOTSUPP;
      if (ioas != kFakeIoasId) return -ENOENT;
      if (length == 0 || !aligned(iova) || !aligned(addr_or_start) || !aligned(length)) return -EINVAL;
      if (map_errno) return -map_errno;
      if (!inside_ranges(iova, length)) return -EADDRINUSE;
      for (auto& [at, m] : ioas_maps)
        if (iova < at + m.len && at < iova + length) return -EEXIST;
      ioas_maps[iova] = {length, by_file};
      return 0;
    }
    case kIommuIoasUnmap: {
      auto* u = as<IommuIoasUnmap>(arg);
      if (u->size < sizeof(*u) || u->ioas_id != kFakeIoasId) return -EINVAL;
      uint64_t end = u->iova + u->length, removed = 0;
      for (auto& [at, m] : ioas_maps)
        if (at < end && u->iova < at + m.len && (at < u->iova || at + m.len > end)) return -ENOENT;
      for (auto it = ioas_maps.lower_bound(u->iova); it != ioas_maps.end() && it->first < end;) {
        removed += it->second.len;
        it = ioas_maps.erase(it);
      }
      if (removed == 0) return -ENOENT;
      u->length = removed;
      return 0;
    }
    case kIommuGetHwInfo: {
      auto* h = as<IommuHwInfo>(arg);
      if (h->size < offsetof(IommuHwInfo, out_capabilities) || h->flags) return -EINVAL;
      if (!bound_ || h->dev_id != kFakeDevId) return -ENOENT;
      IommuHwInfoVtd vtd{};
      vtd.cap_reg = 0x00d2008c22260206ull;
      size_t n = std::min<size_t>(h->data_len, sizeof(vtd));
      if (n) std::memcpy(reinterpret_cast<void*>(h->data_uptr), &vtd, n);
      h->data_len = static_cast<uint32_t>(n);
      h->out_data_type = kIommuHwInfoTypeIntelVtd;
      h->out_capabilities = hw_caps;
      return 0;
    }
    case kIommuHwptAlloc: {
      auto* a = as<IommuHwptAlloc>(arg);
      if (a->size < offsetof(IommuHwptAlloc, data_type)) return -EINVAL;
      if (a->flags & ~(kIommuHwptAllocNestParent | kIommuHwptAllocDirtyTracking)) return -EOPNOTSUPP;
      if (!bound_ || a->dev_id != kFakeDevId || a->pt_id != kFakeIoasId) return -ENOENT;
      if (a->data_type != kIommuHwptDataNone) return -EINVAL;
      if ((a->flags & kIommuHwptAllocDirtyTracking) && !(hw_caps & kIommuHwCapDirtyTracking)) return -EOPNOTSUPP;
      hwpt_allocated_ = true;
      hwpt_alloc_flags = a->flags;
      a->out_hwpt_id = kFakeHwptId;
      return 0;
    }
    case kIommuHwptSetDirtyTracking: {
      auto* s = as<IommuHwptSetDirtyTracking>(arg);
      if (s->size < sizeof(*s) || (s->flags & ~kIommuHwptDirtyTrackingEnable)) return -EINVAL;
      if (!hwpt_allocated_ || s->hwpt_id != kFakeHwptId) return -ENOENT;
      if (!(hwpt_alloc_flags & kIommuHwptAllocDirtyTracking)) return -EOPNOTSUPP;
      hwpt_dirty_enabled = s->flags & kIommuHwptDirtyTrackingEnable;
      return 0;
    }
    case kIommuHwptGetDirtyBitmap: {
      auto* g = as<IommuHwptGetDirtyBitmap>(arg);
      if (g->size < sizeof(*g) || (g->flags & ~kIommuHwptGetDirtyBitmapNoClear)) return -EINVAL;
      if (!hwpt_allocated_ || g->hwpt_id != kFakeHwptId) return -ENOENT;
      if (!hwpt_dirty_enabled) return -EINVAL;
      if (g->page_size == 0 || (g->page_size & (g->page_size - 1)) || g->iova % g->page_size || g->length % g->page_size)
        return -EINVAL;
      auto* bits = reinterpret_cast<uint64_t*>(g->data);
      // Like the kernel: set bits for dirty pages, never clear the others.
      for (auto it = dirty_iovas.begin(); it != dirty_iovas.end();) {
        if (*it >= g->iova && *it < g->iova + g->length) {
          uint64_t bit = (*it - g->iova) / g->page_size;
          bits[bit / 64] |= 1ull << (bit % 64);
          if (!(g->flags & kIommuHwptGetDirtyBitmapNoClear)) {
            it = dirty_iovas.erase(it);
            continue;
          }
        }
        ++it;
      }
      return 0;
    }
  }
  return -ENOTTY;
}

// ---- data ----

ssize_t FakeKernel::pread(int fd, void* buf, size_t len, uint64_t offset) {
  const FdState* st = fd_state(fd);
  if (!st || (st->kind != Kind::GroupDevice && st->kind != Kind::CdevDevice)) return -EBADF;
  uint64_t index = offset >> kRegionShift, off = offset & ((1ull << kRegionShift) - 1);
  if (index >= regions.size()) return -EINVAL;
  const Region& r = regions[index];
  if (off >= r.bytes.size()) return 0;
  size_t n = std::min<size_t>(len, r.bytes.size() - off);
  std::memcpy(buf, r.bytes.data() + off, n);
  return static_cast<ssize_t>(n);
}

ssize_t FakeKernel::pwrite(int fd, const void* buf, size_t len, uint64_t offset) {
  const FdState* st = fd_state(fd);
  if (!st || (st->kind != Kind::GroupDevice && st->kind != Kind::CdevDevice)) return -EBADF;
  uint64_t index = offset >> kRegionShift, off = offset & ((1ull << kRegionShift) - 1);
  if (index >= regions.size()) return -EINVAL;
  Region& r = regions[index];
  if (off >= r.bytes.size()) return -EINVAL;
  size_t n = std::min<size_t>(len, r.bytes.size() - off);
  std::memcpy(r.bytes.data() + off, buf, n);
  return static_cast<ssize_t>(n);
}

ssize_t FakeKernel::read(int fd, void* buf, size_t len) {
  auto it = fds_.find(fd);
  if (it == fds_.end() || it->second.kind != Kind::MigData) return -EBADF;
  size_t& pos = it->second.read_pos;
  size_t n = std::min(len, mig_blob.size() - std::min(mig_blob.size(), pos));
  std::memcpy(buf, mig_blob.data() + pos, n);
  pos += n;
  return static_cast<ssize_t>(n);
}

ssize_t FakeKernel::write(int fd, const void* buf, size_t len) {
  const FdState* st = fd_state(fd);
  if (!st || st->kind != Kind::MigData) return -EBADF;
  auto* p = static_cast<const uint8_t*>(buf);
  // Take at most 100 bytes per call so callers must loop, as with a pipe.
  size_t n = std::min<size_t>(len, 100);
  mig_received.insert(mig_received.end(), p, p + n);
  return static_cast<ssize_t>(n);
}

void* FakeKernel::mmap(size_t len, int prot, int flags, int fd, uint64_t offset, int* err) {
  const FdState* st = fd_state(fd);
  if (!st || (st->kind != Kind::GroupDevice && st->kind != Kind::CdevDevice) || !(flags & MAP_SHARED)) {
    *err = EINVAL;
    return nullptr;
  }
  uint64_t index = offset >> kRegionShift, off = offset & ((1ull << kRegionShift) - 1);
  if (index >= regions.size() || !(regions[index].flags & kVfioRegionInfoFlagMmap) ||
      off + len > regions[index].bytes.size()) {
    *err = EINVAL;
    return nullptr;
  }
  // A private copy of the region's bytes stands in for the BAR.
  void* p = ::mmap(nullptr, len, prot | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    *err = errno;
    return nullptr;
  }
  std::memcpy(p, regions[index].bytes.data() + off, len);
  mmaps_[p] = len;
  return p;
}

int FakeKernel::munmap(void* addr, size_t len) {
  auto it = mmaps_.find(addr);
  if (it == mmaps_.end() || it->second != len) return -EINVAL;
  ::munmap(addr, len);
  mmaps_.erase(it);
  return 0;
}

}  // namespace uvio::iommu::testing
