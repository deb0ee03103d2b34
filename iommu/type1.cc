// The group/container backend: /dev/vfio/vfio holds one type1 (or noiommu) container
// for the whole runtime; each device's IOMMU group joins it, and the device fd comes
// from its group. Every device of a group must be bound to vfio-pci (or to no driver)
// before the group is viable.
#include <uvio/log.h>

#include "iommu/abi/vfio.h"
#include "iommu/kernel_backends.h"
#include "iommu/sys.h"
#include "iommu/vfio_kernel_device.h"

#include <fcntl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

namespace uvio::iommu {
namespace {

using namespace abi;

constexpr const char* kLog = "type1";

Status failed(int rc, std::string what) { return Status::error(-rc, std::move(what)); }

std::string basename_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

class Type1Domain;

// VFIO_IOMMU_DIRTY_PAGES: type1 logs the pages it has pinned (with no hardware tracking
// behind it, every pinned page reads as dirty).
class Type1DirtyTracker final : public DirtyTracker {
 public:
  explicit Type1DirtyTracker(const Type1Domain& d) : d_(d) {}
  std::string_view name() const override { return "type1-dirty-pages"; }
  Status start(std::span<const IovaRange>, uint64_t page_size) override;
  Status read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size, std::span<uint64_t> bitmap) override;
  Status stop() override;

 private:
  Status simple(uint32_t flag, const char* what);
  const Type1Domain& d_;
};

class Type1Domain final : public KernelDomain {
 public:
  Type1Domain(int container, bool noiommu) : fd_(container), noiommu_(noiommu), dirty_(*this) {}
  ~Type1Domain() override {
    for (auto& [id, fd] : groups_) sys().close(fd);
    sys().close(fd_);
  }

  int fd() const { return fd_; }
  bool noiommu() const { return noiommu_; }
  bool iommu_set() const { return iommu_set_; }
  void set_iommu_done() { iommu_set_ = true; }
  int group_fd(int id) const {
    auto it = groups_.find(id);
    return it == groups_.end() ? -1 : it->second;
  }
  void add_group(int id, int fd) { groups_[id] = fd; }
  uint64_t dirty_pgsizes() const { return dirty_pgsizes_; }
  uint64_t max_dirty_bitmap() const { return max_dirty_bitmap_; }

  // VFIO_IOMMU_GET_INFO, asked twice: the first answer sizes the capability chain.
  Status query_info() {
    Sys& s = sys();
    VfioIommuType1Info head{};
    head.argsz = sizeof(head);
    int rc = s.ioctl_ptr(fd_, kVfioIommuGetInfo, &head);
    if (rc < 0) return failed(rc, "VFIO_IOMMU_GET_INFO");
    if (head.flags & kVfioIommuInfoPgsizes) pgsizes_ = head.iova_pgsizes;
    if (!(head.flags & kVfioIommuInfoCaps) || head.argsz <= sizeof(head)) return Status::ok();
    if (head.argsz > 65536) return Status::error(EPROTO, "VFIO_IOMMU_GET_INFO asks for an implausible buffer");
    std::vector<uint64_t> buf((head.argsz + 7) / 8, 0);
    auto* full = reinterpret_cast<VfioIommuType1Info*>(buf.data());
    full->argsz = head.argsz;
    rc = s.ioctl_ptr(fd_, kVfioIommuGetInfo, full);
    if (rc < 0) return failed(rc, "VFIO_IOMMU_GET_INFO with capabilities");
    const auto* bytes = reinterpret_cast<const uint8_t*>(buf.data());
    size_t len = std::min<size_t>(full->argsz, buf.size() * 8);
    Status parse = Status::ok();
    UVIO_TRY(walk_cap_chain(bytes, len, full->cap_offset, [&](uint16_t id, uint16_t, uint32_t off) {
      if (id == kVfioIommuType1InfoCapIovaRange) {
        VfioIommuType1InfoCapIovaRange cap;
        if (len - off < sizeof(cap)) return void(parse = Status::error(EPROTO, "truncated IOVA range capability"));
        std::memcpy(&cap, bytes + off, sizeof(cap));
        if (cap.nr_iovas > (len - off - sizeof(cap)) / sizeof(VfioIovaRange))
          return void(parse = Status::error(EPROTO, "IOVA range capability claims more ranges than the reply holds"));
        ranges_.clear();
        for (uint32_t i = 0; i < cap.nr_iovas; ++i) {
          VfioIovaRange r;
          std::memcpy(&r, bytes + off + sizeof(cap) + i * sizeof(r), sizeof(r));
          ranges_.push_back({r.start, r.end});
        }
      } else if (id == kVfioIommuType1InfoCapMigration) {
        VfioIommuType1InfoCapMigration cap;
        if (len - off < sizeof(cap)) return void(parse = Status::error(EPROTO, "truncated migration capability"));
        std::memcpy(&cap, bytes + off, sizeof(cap));
        dirty_pgsizes_ = cap.pgsize_bitmap;
        max_dirty_bitmap_ = cap.max_dirty_bitmap_size;
      } else if (id == kVfioIommuType1InfoDmaAvail) {
        VfioIommuType1InfoDmaAvail cap;
        if (len - off < sizeof(cap)) return void(parse = Status::error(EPROTO, "truncated DMA_AVAIL capability"));
        std::memcpy(&cap, bytes + off, sizeof(cap));
        dma_avail_ = cap.avail;
      }
    }));
    return parse;
  }

  std::string_view name() const override { return noiommu_ ? "noiommu container" : "type1 container"; }
  bool maps_by_address() const override { return true; }

  Status map(uint64_t iova, void* va, uint64_t len, int, uint64_t) override {
    ++map_calls_;
    // noiommu: no translation, devices use physical addresses; nothing to program.
    if (noiommu_) return Status::ok();
    VfioIommuType1DmaMap m{};
    m.argsz = sizeof(m);
    m.flags = kVfioDmaMapFlagRead | kVfioDmaMapFlagWrite;
    m.vaddr = reinterpret_cast<uintptr_t>(va);
    m.iova = iova;
    m.size = len;
    int rc = sys().ioctl_ptr(fd_, kVfioIommuMapDma, &m);
    if (rc == -ENOSPC)
      return failed(rc, fmt::format("VFIO_IOMMU_MAP_DMA: type1's mapping limit ({} left) is reached; raise "
                                    "vfio_iommu_type1's dma_entry_limit or use larger memory areas", dma_avail_));
    if (rc < 0) return failed(rc, fmt::format("VFIO_IOMMU_MAP_DMA of [{:#x}, +{:#x})", iova, len));
    maps_[iova] = len;
    if (dma_avail_ > 0) --dma_avail_;
    return Status::ok();
  }

  Status unmap(uint64_t iova, uint64_t len) override {
    ++unmap_calls_;
    if (noiommu_) return Status::ok();
    // type1 (v2) unmaps whole mappings only: say which mapping a partial request cuts.
    auto it = maps_.upper_bound(iova);
    if (it != maps_.begin()) {
      auto prev = std::prev(it);
      bool exact = prev->first == iova && prev->second == len;
      if (!exact && iova < prev->first + prev->second)
        return Status::error(EINVAL, fmt::format("type1 cannot unmap [{:#x}, +{:#x}): it cuts the mapping [{:#x}, +{:#x}); "
                                                 "unmap whole mappings", iova, len, prev->first, prev->second));
    }
    VfioIommuType1DmaUnmap u{};
    u.argsz = sizeof(u);
    u.iova = iova;
    u.size = len;
    int rc = sys().ioctl_ptr(fd_, kVfioIommuUnmapDma, &u);
    if (rc < 0) return failed(rc, fmt::format("VFIO_IOMMU_UNMAP_DMA of [{:#x}, +{:#x})", iova, len));
    if (u.size != len)
      return Status::error(EINVAL, fmt::format("VFIO_IOMMU_UNMAP_DMA of [{:#x}, +{:#x}) removed {:#x} bytes: the range "
                                               "does not match the mappings", iova, len, u.size));
    for (auto m = maps_.lower_bound(iova); m != maps_.end() && m->first < iova + len;) {
      m = maps_.erase(m);
      ++dma_avail_;
    }
    return Status::ok();
  }

  std::vector<IovaRange> iova_ranges() const override { return ranges_; }
  uint64_t page_size_mask() const override { return pgsizes_; }
  uint32_t max_mappings() const override {
    return dma_avail_ == 0 && maps_.empty() ? 0 : static_cast<uint32_t>(dma_avail_ + maps_.size());
  }
  DirtyTracker* dirty_tracker() override { return dirty_pgsizes_ ? &dirty_ : nullptr; }
  uint64_t map_calls() const override { return map_calls_; }
  uint64_t unmap_calls() const override { return unmap_calls_; }

  std::vector<std::pair<std::string, std::string>> facts() const override {
    std::vector<std::pair<std::string, std::string>> f;
    if (noiommu_) {
      f.emplace_back("translation", "none: devices DMA to physical addresses (IOVA = PA)");
      return f;
    }
    std::string ranges;
    for (const IovaRange& r : ranges_) ranges += fmt::format("{}[{:#x}, {:#x}]", ranges.empty() ? "" : " ", r.start, r.last);
    f.emplace_back("iova_ranges", ranges);
    f.emplace_back("page_sizes", fmt::format("{:#x}", pgsizes_));
    f.emplace_back("dma_mappings_available", std::to_string(dma_avail_));
    if (dirty_pgsizes_) {
      f.emplace_back("dirty_tracking", "VFIO_IOMMU_DIRTY_PAGES");
      f.emplace_back("dirty_page_sizes", fmt::format("{:#x}", dirty_pgsizes_));
      f.emplace_back("max_dirty_bitmap_bytes", std::to_string(max_dirty_bitmap_));
    } else {
      f.emplace_back("dirty_tracking", "none");
    }
    return f;
  }

 private:
  int fd_;
  bool noiommu_;
  bool iommu_set_ = false;
  Type1DirtyTracker dirty_;
  std::map<int, int> groups_;  // group id -> group fd
  std::map<uint64_t, uint64_t> maps_;  // iova -> length, as mapped
  std::vector<IovaRange> ranges_;
  uint64_t pgsizes_ = 0;
  uint64_t dirty_pgsizes_ = 0;
  uint64_t max_dirty_bitmap_ = 0;
  uint64_t dma_avail_ = 0;
  uint64_t map_calls_ = 0;
  uint64_t unmap_calls_ = 0;
};

Status Type1DirtyTracker::simple(uint32_t flag, const char* what) {
  VfioIommuType1DirtyBitmap db{};
  db.argsz = sizeof(db);
  db.flags = flag;
  int rc = sys().ioctl_ptr(d_.fd(), kVfioIommuDirtyPages, &db);
  if (rc < 0) return failed(rc, fmt::format("VFIO_IOMMU_DIRTY_PAGES {}", what));
  return Status::ok();
}

Status Type1DirtyTracker::start(std::span<const IovaRange>, uint64_t page_size) {
  if (!(d_.dirty_pgsizes() & page_size))
    return Status::error(EINVAL, fmt::format("type1 tracks dirty pages in sizes {:#x}, not {:#x}", d_.dirty_pgsizes(), page_size));
  return simple(kVfioIommuDirtyPagesFlagStart, "start");
}

Status Type1DirtyTracker::stop() { return simple(kVfioIommuDirtyPagesFlagStop, "stop"); }

// type1 reports whole mappings only: [iova, iova + length) must start and end on mapping
// boundaries, as made by the DmaSpace.
Status Type1DirtyTracker::read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size, std::span<uint64_t> bitmap) {
  if (page_size == 0 || !(d_.dirty_pgsizes() & page_size))
    return Status::error(EINVAL, fmt::format("type1 reports dirty pages in sizes {:#x}, not {:#x}", d_.dirty_pgsizes(), page_size));
  uint64_t pages = length / page_size;
  uint64_t bytes = (pages + 63) / 64 * 8;
  if (bytes > bitmap.size() * 8)
    return Status::error(EINVAL, fmt::format("dirty bitmap of {} bits is too small for {} pages", bitmap.size() * 64, pages));
  if (d_.max_dirty_bitmap() && bytes > d_.max_dirty_bitmap())
    return Status::error(E2BIG, fmt::format("type1 returns at most {} bytes of bitmap per call; read smaller ranges",
                                            d_.max_dirty_bitmap()));
  std::fill(bitmap.begin(), bitmap.end(), 0);
  struct {
    VfioIommuType1DirtyBitmap head;
    VfioIommuType1DirtyBitmapGet get;
  } req{};
  static_assert(sizeof(req) == sizeof(VfioIommuType1DirtyBitmap) + sizeof(VfioIommuType1DirtyBitmapGet));
  req.head.argsz = sizeof(req);
  req.head.flags = kVfioIommuDirtyPagesFlagGetBitmap;
  req.get.iova = iova;
  req.get.size = length;
  req.get.bitmap.pgsize = page_size;
  req.get.bitmap.size = bytes;
  req.get.bitmap.data = reinterpret_cast<uintptr_t>(bitmap.data());
  int rc = sys().ioctl_ptr(d_.fd(), kVfioIommuDirtyPages, &req);
  if (rc < 0) return failed(rc, fmt::format("VFIO_IOMMU_DIRTY_PAGES get bitmap of [{:#x}, +{:#x})", iova, length));
  return Status::ok();
}

// Names the devices that keep a group from being viable, so the user knows what to unbind.
std::string group_blockers(int group) {
  std::string dir = fmt::format("/sys/kernel/iommu_groups/{}/devices", group);
  std::vector<std::string> devs;
  if (sys().list_dir(dir, &devs) < 0) return "";
  std::string out;
  for (const std::string& d : devs) {
    std::string driver;
    if (sys().read_link(dir + "/" + d + "/driver", &driver) < 0) continue;  // unbound is fine
    driver = basename_of(driver);
    if (driver == "vfio-pci" || driver == "pci-stub") continue;
    out += fmt::format("{}{} (bound to {})", out.empty() ? "" : ", ", d, driver);
  }
  return out;
}

Result<std::shared_ptr<Type1Domain>> shared_container(DmaSpace& dma, bool noiommu, bool* created) {
  std::string key = noiommu ? "noiommu" : "type1";
  *created = false;
  if (auto existing = std::dynamic_pointer_cast<Type1Domain>(dma.shared_domain(key))) return existing;
  Sys& s = sys();
  int fd = s.open("/dev/vfio/vfio", O_RDWR);
  if (fd < 0) return failed(fd, "cannot open /dev/vfio/vfio: load vfio-pci (modprobe vfio-pci)");
  auto dom = std::make_shared<Type1Domain>(fd, noiommu);  // closes fd on failure below
  int version = s.ioctl(fd, kVfioGetApiVersion, 0);
  if (version != kVfioApiVersion)
    return Status::error(EPROTO, fmt::format("/dev/vfio/vfio speaks VFIO API {}, uvio knows {}", version, kVfioApiVersion));
  unsigned long model = noiommu ? kVfioNoIommuIommu : kVfioType1v2Iommu;
  if (s.ioctl(fd, kVfioCheckExtension, model) <= 0)
    return Status::error(ENOTSUP, noiommu ? "this kernel's VFIO has no noiommu mode: load vfio with "
                                            "enable_unsafe_noiommu_mode=1"
                                          : "this kernel's VFIO has no type1v2 IOMMU: load vfio_iommu_type1");
  *created = true;
  return dom;
}

}  // namespace

Result<std::unique_ptr<Device>> open_group_device(const std::string& bdf, std::string reason, bool noiommu,
                                                  DmaSpace& dma, const OpenOptions& opts) {
  Sys& s = sys();
  if (noiommu && dma.memory().config().iova_mode != IovaMode::Pa)
    return Status::error(EINVAL, "noiommu devices DMA to physical addresses: start the runtime with --iova-mode=pa");
  std::string link;
  int rc = s.read_link(sysfs_pci_device(bdf) + "/iommu_group", &link);
  if (rc < 0)
    return failed(rc, fmt::format("{} has no IOMMU group: is the device present and the IOMMU on (intel_iommu=on)? "
                                  "Without an IOMMU, use --vfio-mode=noiommu", bdf));
  std::string group_name = basename_of(link);
  char* end = nullptr;
  long group = std::strtol(group_name.c_str(), &end, 10);
  if (group_name.empty() || *end != '\0' || group < 0)
    return Status::error(EPROTO, fmt::format("{}: unexpected IOMMU group link '{}'", bdf, link));

  std::array<uint8_t, 16> token_bytes{};
  if (!opts.vf_token.empty() && !parse_uuid(opts.vf_token, &token_bytes))
    return Status::error(EINVAL, fmt::format("--vf-token '{}' is not a UUID", opts.vf_token));

  bool created = false;
  auto container = shared_container(dma, noiommu, &created);
  if (!container) return container.status();
  std::shared_ptr<Type1Domain> dom = *container;

  int gfd = dom->group_fd(static_cast<int>(group));
  if (gfd < 0) {
    std::string path = fmt::format("/dev/vfio/{}{}", noiommu ? "noiommu-" : "", group);
    gfd = s.open(path, O_RDWR);
    if (gfd < 0)
      return failed(gfd, fmt::format("cannot open {} for {}: bind it to vfio-pci{}", path, bdf,
                                     gfd == -EBUSY ? " (the group is open elsewhere, or its device through the cdev)" : ""));
    VfioGroupStatus st{};
    st.argsz = sizeof(st);
    rc = s.ioctl_ptr(gfd, kVfioGroupGetStatus, &st);
    if (rc < 0) {
      s.close(gfd);
      return failed(rc, "VFIO_GROUP_GET_STATUS of " + path);
    }
    if (!(st.flags & kVfioGroupFlagsViable)) {
      s.close(gfd);
      std::string blockers = group_blockers(static_cast<int>(group));
      return Status::error(EPERM, fmt::format("IOMMU group {} of {} is not viable: every device of the group must be "
                                              "bound to vfio-pci or to no driver{}{}", group, bdf,
                                              blockers.empty() ? "" : "; still bound: ", blockers));
    }
    int cfd = dom->fd();
    rc = s.ioctl_ptr(gfd, kVfioGroupSetContainer, &cfd);
    if (rc < 0) {
      s.close(gfd);
      return failed(rc, fmt::format("VFIO_GROUP_SET_CONTAINER for group {}", group));
    }
    dom->add_group(static_cast<int>(group), gfd);
    if (!dom->iommu_set()) {
      // The IOMMU model can only be chosen once a group is in the container.
      rc = s.ioctl(dom->fd(), kVfioSetIommu, noiommu ? kVfioNoIommuIommu : kVfioType1v2Iommu);
      if (rc < 0)
        return failed(rc, rc == -EPERM ? "VFIO_SET_IOMMU: refused (EPERM); type1 needs interrupt remapping "
                                         "(intremap=on on a VT-d, or allow_unsafe_interrupts)"
                                       : "VFIO_SET_IOMMU");
      dom->set_iommu_done();
      if (!noiommu) UVIO_TRY(dom->query_info());
    }
  }

  // The device name the group knows it by, with the VF token appended when given.
  std::string name = bdf;
  if (!opts.vf_token.empty()) name += " vf_token=" + opts.vf_token;
  int dev_fd = s.ioctl_ptr(gfd, kVfioGroupGetDeviceFd, name.data());
  if (dev_fd < 0) return failed(dev_fd, fmt::format("VFIO_GROUP_GET_DEVICE_FD for {}", bdf));

  if (created) {
    Status st = dma.attach(dom);
    if (!st) {
      s.close(dev_fd);
      return st;
    }
    dma.set_shared_domain(noiommu ? "noiommu" : "type1", dom);
    UVIO_LOG(Debug, kLog, "{}: {} mapping(s) in the container", bdf, dma.mappings(dom.get()).size());
  }

  VfioKernelDevice::Params p;
  p.device_fd = dev_fd;
  p.name = bdf;
  p.backend = noiommu ? "noiommu" : "type1";
  p.reason = std::move(reason);
  p.domain = dom;
  auto dev = VfioKernelDevice::create(std::move(p));
  if (!dev) return dev.status();
  return std::unique_ptr<Device>(std::move(dev.value()));
}

}  // namespace uvio::iommu
