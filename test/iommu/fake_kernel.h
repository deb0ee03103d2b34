// A fake kernel behind iommu::Sys: one PCI device (0000:01:00.0, IOMMU group 7, cdev
// vfio3) served by VFIO's container/group/device ioctls and by iommufd. It checks
// arguments the way the kernel does (argsz and size minimums, unknown flags, alignment,
// overlap -> EEXIST, partial type1 unmap -> EINVAL, unknown ioctl -> ENOTTY) and records
// every call, so tests can count them.
#pragma once

#include "iommu/device.h"
#include "iommu/sys.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace uvio::iommu::testing {

inline constexpr const char* kFakeBdf = "0000:01:00.0";
inline constexpr int kFakeGroup = 7;
inline constexpr uint32_t kFakeIoasId = 1;
inline constexpr uint32_t kFakeHwptId = 2;
inline constexpr uint32_t kFakeDevId = 5;

class FakeKernel final : public Sys {
 public:
  FakeKernel();
  ~FakeKernel() override;

  // ---- what the fake offers (set before opening) ----
  bool have_iommufd = true;      // /dev/iommu
  bool have_cdev = true;         // /dev/vfio/devices and vfio-dev in sysfs
  bool group_viable = true;
  bool map_file_supported = true;  // IOMMU_IOAS_MAP_FILE, else ENOTTY
  uint64_t hw_caps = 0;            // IOMMU_GET_HW_INFO out_capabilities
  std::vector<IovaRange> ranges{{0, (1ull << 48) - 1}};
  uint32_t dma_limit = 65535;      // type1 DMA_AVAIL
  int map_errno = 0;               // when set, every map fails with it
  bool corrupt_region_caps = false;  // region 0's capability chain points backwards
  bool migration = false;          // VFIO_DEVICE_FEATURE_MIGRATION supported
  bool dma_logging = false;        // VFIO_DEVICE_FEATURE_DMA_LOGGING_* supported
  std::vector<uint8_t> mig_blob;   // what the migration data fd yields
  std::set<uint64_t> dirty_iovas;  // 4 KiB pages the "hardware" saw written

  struct Region {
    uint32_t flags = 0;
    std::vector<uint8_t> bytes;
    std::vector<SparseArea> sparse;
    bool msix_mappable = false;
  };
  std::vector<Region> regions;     // index = VFIO region index
  std::vector<uint32_t> irq_counts{1, 1, 16, 1, 1};

  // ---- what was done ----
  struct Call {
    int fd;
    unsigned long request;
  };
  std::vector<Call> calls;
  size_t count(unsigned long request) const;
  std::map<uint32_t, int> region_info_calls;  // by index
  struct IrqSetRecord {
    uint32_t argsz, flags, index, start, count;
    std::vector<int32_t> fds;
  };
  std::vector<IrqSetRecord> irq_sets;
  struct Mapping {
    uint64_t len;
    bool by_file;
  };
  std::map<uint64_t, Mapping> ioas_maps;    // IOVA -> mapping
  std::map<uint64_t, uint64_t> type1_maps;  // IOVA -> length
  uint32_t attached_pt = 0;
  uint32_t hwpt_alloc_flags = 0;
  bool hwpt_dirty_enabled = false;
  bool type1_dirty_started = false;
  std::vector<uint8_t> bind_token;  // the UUID bytes passed at bind, if any
  uint32_t mig_state = 2;           // RUNNING
  std::vector<uint8_t> mig_received;
  bool logging_started = false;
  uint64_t logging_page_size = 0;
  std::vector<IovaRange> logging_ranges;
  int open_fds() const { return static_cast<int>(fds_.size()); }

  // ---- Sys ----
  int open(const std::string& path, int flags) override;
  int close(int fd) override;
  int ioctl(int fd, unsigned long request, uintptr_t arg) override;
  ssize_t pread(int fd, void* buf, size_t len, uint64_t offset) override;
  ssize_t pwrite(int fd, const void* buf, size_t len, uint64_t offset) override;
  ssize_t read(int fd, void* buf, size_t len) override;
  ssize_t write(int fd, const void* buf, size_t len) override;
  void* mmap(size_t len, int prot, int flags, int fd, uint64_t offset, int* err) override;
  int munmap(void* addr, size_t len) override;
  int eventfd(unsigned initval, int flags) override;
  bool exists(const std::string& path) override;
  int read_link(const std::string& path, std::string* target) override;
  int list_dir(const std::string& path, std::vector<std::string>* names) override;

 private:
  enum class Kind { Container, Group, GroupDevice, CdevDevice, Iommufd, Eventfd, MigData };
  struct FdState {
    Kind kind;
    size_t read_pos = 0;
  };
  int new_fd(Kind kind);
  const FdState* fd_state(int fd) const;
  int container_ioctl(unsigned long request, uintptr_t arg);
  int group_ioctl(unsigned long request, uintptr_t arg);
  int device_ioctl(FdState& st, unsigned long request, uintptr_t arg);
  int iommufd_ioctl(unsigned long request, uintptr_t arg);
  int region_info(uintptr_t arg);
  int set_irqs(uintptr_t arg);
  int feature(uintptr_t arg);
  bool inside_ranges(uint64_t iova, uint64_t len) const;

  std::map<int, FdState> fds_;
  int next_fd_ = 1000;
  bool group_has_container_ = false;
  bool container_iommu_set_ = false;
  bool bound_ = false;
  bool hwpt_allocated_ = false;
  std::map<void*, size_t> mmaps_;
};

}  // namespace uvio::iommu::testing
