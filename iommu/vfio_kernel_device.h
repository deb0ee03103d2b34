// A device fd from kernel VFIO — the same calls whether it came from a cdev bound to
// iommufd or from a group in a type1 container: device and region info with their
// capability chains, region access by pread/pwrite and mmap, interrupts wired to
// eventfds, device features, migration v2 and the device's own DMA logging.
#pragma once

#include "iommu/device.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace uvio::iommu {

// Walks a VFIO capability chain inside `buf` starting at `first` (0: no chain). Calls
// fn(id, version, offset) for each capability whose header lies inside the buffer.
// A chain that points outside the buffer, backwards or loops is an EPROTO error.
template <class Fn>
Status walk_cap_chain(const uint8_t* buf, size_t len, uint32_t first, Fn&& fn);

class VfioKernelDevice final : public Device {
 public:
  struct Params {
    int device_fd = -1;  // owned from here on
    std::string name;
    std::string backend;  // "iommufd", "type1", "noiommu"
    std::string reason;
    std::shared_ptr<DmaDomain> domain;
    // Objects that must outlive the device fd (the group, the bound iommufd context).
    std::vector<std::shared_ptr<void>> keep_alive;
  };
  // Reads DEVICE_GET_INFO; fails with a clear Status when the fd is not a VFIO device.
  static Result<std::unique_ptr<VfioKernelDevice>> create(Params params);
  ~VfioKernelDevice() override;

  std::string_view backend() const override { return p_.backend; }
  std::string_view backend_reason() const override { return p_.reason; }
  std::string_view name() const override { return p_.name; }
  const DeviceInfo& info() const override { return info_; }
  DmaDomain& domain() override { return *p_.domain; }

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

  DirtyTracker* dma_logging() override;

  int device_fd() const { return p_.device_fd; }

 private:
  explicit VfioKernelDevice(Params params);
  Result<const RegionInfo*> cached_region(uint32_t index);
  Status check_region_access(const RegionInfo& r, uint64_t offset, size_t len, bool write);

  class DmaLogging;
  struct Mapping {
    void* addr;
    size_t len;
  };

  Params p_;
  DeviceInfo info_;
  std::vector<std::unique_ptr<RegionInfo>> regions_;  // by index, filled on first use
  std::vector<Mapping> mappings_;
  int data_fd_ = -1;
  bool dma_logging_probed_ = false;
  std::unique_ptr<DmaLogging> dma_logging_;
};

// ---- implementation of the template ----

template <class Fn>
Status walk_cap_chain(const uint8_t* buf, size_t len, uint32_t first, Fn&& fn) {
  constexpr size_t kHeader = 8;  // struct vfio_info_cap_header
  uint32_t offset = first;
  uint32_t previous = 0;
  for (unsigned hops = 0; offset != 0; ++hops) {
    // Capabilities follow the fixed structure and each other: a chain that goes back
    // or leaves the buffer is a broken reply, never something to follow.
    if (offset <= previous || offset > len || len - offset < kHeader || hops > 256)
      return Status::error(EPROTO, "malformed VFIO capability chain: offset " + std::to_string(offset) +
                                       " in a " + std::to_string(len) + "-byte reply");
    uint16_t id, version;
    uint32_t next;
    std::memcpy(&id, buf + offset, 2);
    std::memcpy(&version, buf + offset + 2, 2);
    std::memcpy(&next, buf + offset + 4, 4);
    fn(id, version, offset);
    previous = offset;
    offset = next;
  }
  return Status::ok();
}

}  // namespace uvio::iommu
