// The iommufd backend: one IOAS in /dev/iommu shared by every device of the runtime,
// devices opened through their VFIO cdev (/dev/vfio/devices/vfioN), bound to iommufd and
// attached to the IOAS — or to a HWPT allocated with dirty tracking when the IOMMU
// offers it, which then serves as the domain's DirtyTracker.
#include <uvio/log.h>

#include "iommu/abi/iommufd.h"
#include "iommu/abi/vfio.h"
#include "iommu/kernel_backends.h"
#include "iommu/sys.h"
#include "iommu/vfio_kernel_device.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

namespace uvio::iommu {
namespace {

using namespace abi;

constexpr const char* kLog = "iommufd";

Status failed(int rc, std::string what) { return Status::error(-rc, std::move(what)); }

class HwptDirtyTracker final : public DirtyTracker {
 public:
  explicit HwptDirtyTracker(int iommufd) : fd_(iommufd) {}
  std::string_view name() const override { return "iommufd-hwpt"; }
  void add(uint32_t hwpt) { hwpts_.push_back(hwpt); }

  // A HWPT tracks its whole address space: the ranges only matter to device logging.
  Status start(std::span<const IovaRange>, uint64_t) override { return set_tracking(true); }
  Status stop() override { return set_tracking(false); }

  Status read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size, std::span<uint64_t> bitmap) override {
    if (page_size == 0 || (page_size & (page_size - 1)) || iova % page_size || length % page_size)
      return Status::error(EINVAL, fmt::format("dirty bitmap read of [{:#x}, +{:#x}) is not aligned to the page size {:#x}",
                                               iova, length, page_size));
    if ((length / page_size + 63) / 64 > bitmap.size())
      return Status::error(EINVAL, fmt::format("dirty bitmap of {} bits is too small for {} pages", bitmap.size() * 64,
                                               length / page_size));
    // GET_DIRTY_BITMAP only sets bits; whatever the buffer held before would read as dirty.
    std::fill(bitmap.begin(), bitmap.end(), 0);
    for (uint32_t hwpt : hwpts_) {
      IommuHwptGetDirtyBitmap get{};
      get.size = sizeof(get);
      get.hwpt_id = hwpt;
      get.iova = iova;
      get.length = length;
      get.page_size = page_size;
      get.data = reinterpret_cast<uintptr_t>(bitmap.data());
      int rc = sys().ioctl_ptr(fd_, kIommuHwptGetDirtyBitmap, &get);
      if (rc < 0) return failed(rc, fmt::format("IOMMU_HWPT_GET_DIRTY_BITMAP of HWPT {}", hwpt));
    }
    return Status::ok();
  }

 private:
  Status set_tracking(bool on) {
    for (uint32_t hwpt : hwpts_) {
      IommuHwptSetDirtyTracking set{};
      set.size = sizeof(set);
      set.flags = on ? kIommuHwptDirtyTrackingEnable : 0;
      set.hwpt_id = hwpt;
      int rc = sys().ioctl_ptr(fd_, kIommuHwptSetDirtyTracking, &set);
      if (rc < 0) return failed(rc, fmt::format("IOMMU_HWPT_SET_DIRTY_TRACKING {} on HWPT {}", on ? "on" : "off", hwpt));
    }
    return Status::ok();
  }
  int fd_;
  std::vector<uint32_t> hwpts_;
};

class IoasDomain final : public KernelDomain {
 public:
  IoasDomain(int iommufd, uint32_t ioas, bool noiommu)
      : fd_(iommufd), ioas_(ioas), noiommu_(noiommu), dirty_(iommufd),
        name_(fmt::format("{} IOAS {}", noiommu ? "noiommu iommufd" : "iommufd", ioas)) {}
  ~IoasDomain() override { sys().close(fd_); }

  int fd() const { return fd_; }
  uint32_t ioas() const { return ioas_; }
  void add_dirty_hwpt(uint32_t hwpt) {
    dirty_.add(hwpt);
    has_dirty_ = true;
  }
  void note_hw_info(uint32_t type, uint64_t caps) {
    hw_type_ = type;
    hw_caps_ = caps;
  }

  std::string_view name() const override { return name_; }
  bool maps_by_address() const override { return !map_file_; }

  Status map(uint64_t iova, void* va, uint64_t len, int fd, uint64_t fd_offset) override {
    ++map_calls_;
    if (fd >= 0 && map_file_) {
      IommuIoasMapFile m{};
      m.size = sizeof(m);
      m.flags = kIommuIoasMapFixedIova | kIommuIoasMapReadable | kIommuIoasMapWriteable;
      m.ioas_id = ioas_;
      m.fd = fd;
      m.start = fd_offset;
      m.length = len;
      m.iova = iova;
      int rc = sys().ioctl_ptr(fd_, kIommuIoasMapFile, &m);
      if (rc == 0) return Status::ok();
      if (rc != -ENOTTY && rc != -EOPNOTSUPP)
        return failed(rc, fmt::format("IOMMU_IOAS_MAP_FILE of fd {} at IOVA {:#x}", fd, iova));
      // Kernels before 6.13 lack MAP_FILE: pin by address instead, from now on.
      UVIO_LOG(Notice, kLog, "IOMMU_IOAS_MAP_FILE is not supported by this kernel ({}); mapping by address with IOMMU_IOAS_MAP",
               rc == -ENOTTY ? "ENOTTY" : "EOPNOTSUPP");
      map_file_ = false;
    }
    IommuIoasMap m{};
    m.size = sizeof(m);
    m.flags = kIommuIoasMapFixedIova | kIommuIoasMapReadable | kIommuIoasMapWriteable;
    m.ioas_id = ioas_;
    m.user_va = reinterpret_cast<uintptr_t>(va);
    m.length = len;
    m.iova = iova;
    int rc = sys().ioctl_ptr(fd_, kIommuIoasMap, &m);
    if (rc < 0) return failed(rc, fmt::format("IOMMU_IOAS_MAP at IOVA {:#x}", iova));
    return Status::ok();
  }

  Status unmap(uint64_t iova, uint64_t len) override {
    ++unmap_calls_;
    IommuIoasUnmap u{};
    u.size = sizeof(u);
    u.ioas_id = ioas_;
    u.iova = iova;
    u.length = len;
    int rc = sys().ioctl_ptr(fd_, kIommuIoasUnmap, &u);
    if (rc < 0) return failed(rc, fmt::format("IOMMU_IOAS_UNMAP of [{:#x}, +{:#x})", iova, len));
    if (u.length != len)
      return Status::error(EIO, fmt::format("IOMMU_IOAS_UNMAP of [{:#x}, +{:#x}) removed {:#x} bytes", iova, len, u.length));
    return Status::ok();
  }

  std::vector<IovaRange> iova_ranges() const override {
    auto r = query_ranges();
    if (!r) {
      UVIO_LOG(Warning, kLog, "{}: {}", name_, r.status().describe());
      return {};
    }
    return r->first;
  }

  uint64_t page_size_mask() const override {
    auto r = query_ranges();
    uint64_t align = r && r->second ? r->second : 4096;
    return ~(align - 1);
  }

  DirtyTracker* dirty_tracker() override { return has_dirty_ ? &dirty_ : nullptr; }
  uint64_t map_calls() const override { return map_calls_; }
  uint64_t unmap_calls() const override { return unmap_calls_; }

  std::vector<std::pair<std::string, std::string>> facts() const override {
    std::vector<std::pair<std::string, std::string>> f;
    std::string ranges;
    for (const IovaRange& r : iova_ranges()) ranges += fmt::format("{}[{:#x}, {:#x}]", ranges.empty() ? "" : " ", r.start, r.last);
    f.emplace_back("iova_ranges", ranges);
    f.emplace_back("iova_alignment", fmt::format("{:#x}", ~page_size_mask() + 1));
    f.emplace_back("map_method", map_file_ ? "IOMMU_IOAS_MAP_FILE (fd-backed)" : "IOMMU_IOAS_MAP (by address)");
    if (!noiommu_) {
      static constexpr const char* kTypes[] = {"none", "intel-vtd", "arm-smmuv3", "tegra241-cmdqv", "amd"};
      f.emplace_back("hw_info_type", hw_type_ < 5 ? kTypes[hw_type_] : fmt::format("{:#x}", hw_type_));
      f.emplace_back("hw_capabilities", fmt::format("{:#x}", hw_caps_));
      f.emplace_back("dirty_tracking", has_dirty_ ? "HWPT with IOMMU_HWPT_ALLOC_DIRTY_TRACKING"
                                                  : "not offered by the IOMMU");
    }
    return f;
  }

 private:
  Result<std::pair<std::vector<IovaRange>, uint64_t>> query_ranges() const {
    std::vector<IommuIovaRange> buf(4);
    for (int attempt = 0; attempt < 4; ++attempt) {
      IommuIoasIovaRanges q{};
      q.size = sizeof(q);
      q.ioas_id = ioas_;
      q.num_iovas = static_cast<uint32_t>(buf.size());
      q.allowed_iovas = reinterpret_cast<uintptr_t>(buf.data());
      int rc = sys().ioctl_ptr(fd_, kIommuIoasIovaRanges, &q);
      if (rc == -EMSGSIZE && q.num_iovas > buf.size() && q.num_iovas < 4096) {
        buf.resize(q.num_iovas);
        continue;
      }
      if (rc < 0) return failed(rc, "IOMMU_IOAS_IOVA_RANGES");
      if (q.num_iovas > buf.size()) return Status::error(EPROTO, "IOMMU_IOAS_IOVA_RANGES returned more ranges than room");
      std::vector<IovaRange> out;
      for (uint32_t i = 0; i < q.num_iovas; ++i) out.push_back({buf[i].start, buf[i].last});
      return std::make_pair(out, q.out_iova_alignment);
    }
    return Status::error(EPROTO, "IOMMU_IOAS_IOVA_RANGES kept changing its range count");
  }

  int fd_;
  uint32_t ioas_;
  bool noiommu_;
  HwptDirtyTracker dirty_;
  std::string name_;
  bool has_dirty_ = false;
  bool map_file_ = true;
  uint32_t hw_type_ = 0;
  uint64_t hw_caps_ = 0;
  uint64_t map_calls_ = 0;
  uint64_t unmap_calls_ = 0;
};

Result<std::string> find_cdev(const std::string& bdf) {
  std::string dir = sysfs_pci_device(bdf) + "/vfio-dev";
  std::vector<std::string> names;
  int rc = sys().list_dir(dir, &names);
  if (rc < 0)
    return failed(rc, fmt::format("{} has no VFIO cdev ({} is missing): bind it to vfio-pci and use a kernel with "
                                  "CONFIG_VFIO_DEVICE_CDEV, or use --vfio-mode=group", bdf, dir));
  for (const std::string& n : names)
    if (n.rfind("vfio", 0) == 0 || n.rfind("noiommu-vfio", 0) == 0) return "/dev/vfio/devices/" + n;
  return Status::error(ENOENT, fmt::format("{} lists no vfioN device", dir));
}

Result<std::shared_ptr<IoasDomain>> shared_ioas(DmaSpace& dma, bool noiommu, bool* created) {
  std::string key = noiommu ? "noiommu-iommufd" : "iommufd";
  *created = false;
  if (auto existing = std::dynamic_pointer_cast<IoasDomain>(dma.shared_domain(key))) return existing;
  int fd = sys().open("/dev/iommu", O_RDWR);
  if (fd < 0) return failed(fd, "cannot open /dev/iommu: load iommufd (CONFIG_IOMMUFD) or use --vfio-mode=group");
  IommuIoasAlloc alloc{};
  alloc.size = sizeof(alloc);
  int rc = sys().ioctl_ptr(fd, kIommuIoasAlloc, &alloc);
  if (rc < 0) {
    sys().close(fd);
    return failed(rc, "IOMMU_IOAS_ALLOC");
  }
  *created = true;
  return std::make_shared<IoasDomain>(fd, alloc.out_ioas_id, noiommu);
}

}  // namespace

std::unique_ptr<DirtyTracker> make_hwpt_dirty_tracker(int iommufd, std::vector<uint32_t> hwpt_ids) {
  auto t = std::make_unique<HwptDirtyTracker>(iommufd);
  for (uint32_t id : hwpt_ids) t->add(id);
  return t;
}

Result<std::unique_ptr<Device>> open_iommufd_device(const std::string& bdf, std::string reason, bool noiommu,
                                                    DmaSpace& dma, const OpenOptions& opts) {
  Sys& s = sys();
  auto path = find_cdev(bdf);
  if (!path) return path.status();
  std::array<uint8_t, 16> token{};
  if (!opts.vf_token.empty() && !parse_uuid(opts.vf_token, &token))
    return Status::error(EINVAL, fmt::format("--vf-token '{}' is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", opts.vf_token));

  bool created = false;
  auto ioas = shared_ioas(dma, noiommu, &created);
  if (!ioas) return ioas.status();
  std::shared_ptr<IoasDomain> dom = *ioas;

  int dev_fd = s.open(*path, O_RDWR);
  if (dev_fd < 0)
    return failed(dev_fd, fmt::format("cannot open {} for {}{}", *path, bdf,
                                      dev_fd == -EBUSY ? " (already open, through its group or by another process)" : ""));
  auto close_dev = [&](Status st) {
    s.close(dev_fd);
    return st;
  };

  VfioDeviceBindIommufd bind{};
  bind.argsz = sizeof(bind);
  bind.iommufd = dom->fd();
  if (!opts.vf_token.empty()) {
    bind.flags = kVfioDeviceBindFlagToken;
    bind.token_uuid_ptr = reinterpret_cast<uintptr_t>(token.data());
  }
  int rc = s.ioctl_ptr(dev_fd, kVfioDeviceBindIommufd, &bind);
  if (rc < 0) return close_dev(failed(rc, fmt::format("VFIO_DEVICE_BIND_IOMMUFD of {}", bdf)));

  uint32_t pt_id = dom->ioas();
  if (!noiommu) {
    IommuHwInfoVtd vtd{};
    IommuHwInfo hw{};
    hw.size = sizeof(hw);
    hw.dev_id = bind.out_devid;
    hw.data_len = sizeof(vtd);
    hw.data_uptr = reinterpret_cast<uintptr_t>(&vtd);
    rc = s.ioctl_ptr(dom->fd(), kIommuGetHwInfo, &hw);
    if (rc < 0) {
      UVIO_LOG(Info, kLog, "{}: IOMMU_GET_HW_INFO failed ({}); no dirty tracking", bdf, strerror(-rc));
    } else {
      dom->note_hw_info(hw.out_data_type, hw.out_capabilities);
      if (hw.out_capabilities & kIommuHwCapDirtyTracking) {
        IommuHwptAlloc alloc{};
        alloc.size = sizeof(alloc);
        alloc.flags = kIommuHwptAllocDirtyTracking;
        alloc.dev_id = bind.out_devid;
        alloc.pt_id = dom->ioas();
        rc = s.ioctl_ptr(dom->fd(), kIommuHwptAlloc, &alloc);
        if (rc < 0) {
          UVIO_LOG(Warning, kLog, "{}: the IOMMU reports dirty tracking but HWPT_ALLOC with it failed ({}); attaching "
                   "to the IOAS without dirty tracking", bdf, strerror(-rc));
        } else {
          pt_id = alloc.out_hwpt_id;
          dom->add_dirty_hwpt(pt_id);
        }
      }
    }
  }

  VfioDeviceAttachIommufdPt attach{};
  attach.argsz = sizeof(attach);
  attach.pt_id = pt_id;
  rc = s.ioctl_ptr(dev_fd, kVfioDeviceAttachIommufdPt, &attach);
  if (rc < 0) return close_dev(failed(rc, fmt::format("VFIO_DEVICE_ATTACH_IOMMUFD_PT of {} to object {}", bdf, pt_id)));

  if (created) {
    // The first device brings the IOAS to life; memory is mapped once, for all devices.
    Status st = dma.attach(dom);
    if (!st) return close_dev(st);
    dma.set_shared_domain(noiommu ? "noiommu-iommufd" : "iommufd", dom);
  }

  VfioKernelDevice::Params p;
  p.device_fd = dev_fd;
  p.name = bdf;
  p.backend = noiommu ? "noiommu" : "iommufd";
  p.reason = std::move(reason);
  p.domain = dom;
  auto dev = VfioKernelDevice::create(std::move(p));
  if (!dev) return dev.status();
  return std::unique_ptr<Device>(std::move(dev.value()));
}

}  // namespace uvio::iommu
