// iommu::Device: a device owned through VFIO. Drivers see regions, interrupts, features,
// migration and DMA logging; they never learn which backend is underneath
// (iommufd + cdev, type1 group/container, noiommu, or a vfio-user socket).
#pragma once

#include <uvio/status.h>
#include <uvio/vfio_options.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace uvio {
class Memory;
}

namespace uvio::iommu {

class DmaSpace;

struct IovaRange {
  uint64_t start = 0;
  uint64_t last = 0;  // inclusive, as the kernel reports ranges
  uint64_t length() const { return last - start + 1; }
};

// VFIO's fixed PCI region and IRQ indexes (vfio.h).
enum PciRegion : uint32_t { kBar0 = 0, kBar5 = 5, kRomRegion = 6, kConfigRegion = 7, kVgaRegion = 8 };
enum PciIrq : uint32_t { kIntxIrq = 0, kMsiIrq = 1, kMsixIrq = 2, kErrIrq = 3, kReqIrq = 4 };

struct SparseArea {
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct RegionInfo {
  uint32_t index = 0;
  uint32_t flags = 0;        // VFIO_REGION_INFO_FLAG_{READ,WRITE,MMAP,CAPS}
  uint64_t size = 0;
  uint64_t offset = 0;       // the region's offset in the device fd (kernel backends)
  std::vector<SparseArea> sparse;  // areas that may be mmapped when not the whole region
  bool msix_mappable = false;      // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE
  std::vector<uint16_t> cap_ids;   // every capability id seen in the chain
  bool readable() const { return flags & 1u; }
  bool writable() const { return flags & 2u; }
  bool mappable() const { return flags & 4u; }
};

struct IrqInfo {
  uint32_t index = 0;
  uint32_t flags = 0;  // VFIO_IRQ_INFO_{EVENTFD,MASKABLE,AUTOMASKED,NORESIZE}
  uint32_t count = 0;
};

struct DeviceInfo {
  uint32_t flags = 0;  // VFIO_DEVICE_FLAGS_*
  uint32_t num_regions = 0;
  uint32_t num_irqs = 0;
  std::vector<uint16_t> cap_ids;
  bool is_pci() const { return flags & 2u; }
  bool can_reset() const { return flags & 1u; }
};

// The VFIO migration v2 states (vfio.h, enum vfio_device_mig_state).
enum class MigState : uint32_t {
  Error = 0, Stop = 1, Running = 2, StopCopy = 3, Resuming = 4,
  RunningP2P = 5, PreCopy = 6, PreCopyP2P = 7,
};

struct MigrationCaps {
  bool supported = false;
  uint64_t flags = 0;  // VFIO_MIGRATION_{STOP_COPY,P2P,PRE_COPY}
};

struct PrecopyInfo {
  uint64_t initial_bytes = 0;
  uint64_t dirty_bytes = 0;
};

// Read-and-clear dirty page tracking, whatever keeps the log: an iommufd HWPT, type1,
// a device's own DMA logging, or a vfio-user server.
class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;
  virtual std::string_view name() const = 0;
  // How many ranges the tracker accepts at once (0 = no limit); callers merge beyond it.
  virtual uint32_t max_ranges() const { return 0; }
  virtual Status start(std::span<const IovaRange> ranges, uint64_t page_size) = 0;
  // Bit i of `bitmap` (little-endian u64 words) covers iova + i * page_size. Bits for
  // dirty pages are set, and the log for [iova, iova + length) is cleared.
  virtual Status read_and_clear(uint64_t iova, uint64_t length, uint64_t page_size,
                                std::span<uint64_t> bitmap) = 0;
  virtual Status stop() = 0;
};

// One IOMMU address space: an iommufd IOAS, a type1 container, a vfio-user connection.
class DmaDomain {
 public:
  virtual ~DmaDomain() = default;
  virtual std::string_view name() const = 0;
  // va/len lie inside one runtime memory area; fd/fd_offset back them (fd may be -1
  // when the backend maps by address alone).
  virtual Status map(uint64_t iova, void* va, uint64_t len, int fd, uint64_t fd_offset) = 0;
  // Must match a previous map exactly (type1 and vfio-user refuse partial unmaps).
  virtual Status unmap(uint64_t iova, uint64_t len) = 0;
  virtual std::vector<IovaRange> iova_ranges() const = 0;
  virtual uint64_t page_size_mask() const = 0;
  virtual uint32_t max_mappings() const { return 0; }  // 0 = no limit known
  // True when the domain maps by virtual address alone (type1, iommufd's IOAS_MAP): the
  // DmaSpace may then cover areas contiguous in VA and IOVA with one call. False when
  // each map needs the area's own fd (IOAS_MAP_FILE, vfio-user direct access).
  virtual bool maps_by_address() const { return false; }
  // Dirty tracking over the whole domain; nullptr when the domain has none.
  virtual DirtyTracker* dirty_tracker() { return nullptr; }
  virtual uint64_t map_calls() const = 0;
  virtual uint64_t unmap_calls() const = 0;
};

// --vfio-mode and --vfio-intr, spelled once for the EAL options and the backends.
using VfioMode = uvio::VfioMode;
using IntrMode = uvio::IntrMode;

struct OpenOptions {
  VfioMode mode = VfioMode::Auto;
  IntrMode intr = IntrMode::Msix;
  std::string vf_token;  // UUID text, empty when none
};

class Device {
 public:
  virtual ~Device() = default;

  // "iommufd", "type1", "noiommu", "vfio-user"; and why it was chosen.
  virtual std::string_view backend() const = 0;
  virtual std::string_view backend_reason() const = 0;
  virtual std::string_view name() const = 0;  // the -a argument
  virtual const DeviceInfo& info() const = 0;
  virtual DmaDomain& domain() = 0;

  virtual Result<RegionInfo> region_info(uint32_t index) = 0;
  virtual Status region_read(uint32_t index, uint64_t offset, void* buf, size_t len) = 0;
  virtual Status region_write(uint32_t index, uint64_t offset, const void* buf, size_t len) = 0;
  // mmaps [offset, offset + len) of a region; EINVAL/ENOTSUP when that part is not
  // mappable. The mapping lives until the device is closed.
  virtual Result<void*> region_map(uint32_t index, uint64_t offset, uint64_t len) = 0;

  virtual Status reset() = 0;

  virtual Result<IrqInfo> irq_info(uint32_t index) = 0;
  // Wires eventfds to vectors [start, start + fds.size()); an fd of -1 unwires one.
  virtual Status set_irq_eventfds(uint32_t index, uint32_t start, std::span<const int> fds) = 0;
  virtual Status disable_irqs(uint32_t index) = 0;

  // VFIO_DEVICE_FEATURE: flags carry GET/SET/PROBE; data is the feature's payload.
  virtual Status feature(uint32_t flags, uint32_t feature_id, std::span<uint8_t> data) = 0;

  // Migration v2. set_mig_state takes one arc (mig/ walks the path with the shared
  // stepping function). Data moves through mig_read/mig_write in STOP_COPY, PRE_COPY
  // and RESUMING; mig_read returns 0 at the end of the current data.
  virtual Result<MigrationCaps> migration_caps() = 0;
  virtual Result<MigState> mig_state() = 0;
  virtual Status set_mig_state(MigState next) = 0;
  virtual Result<size_t> mig_read(void* buf, size_t len) = 0;
  virtual Status mig_write(const void* buf, size_t len) = 0;
  virtual Result<uint64_t> mig_data_size() = 0;
  virtual Result<PrecopyInfo> precopy_info() = 0;

  // The device's own DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*); nullptr if none.
  virtual DirtyTracker* dma_logging() = 0;

  // Config space helpers over region kConfigRegion.
  Result<uint32_t> config_read(uint32_t offset, unsigned width);
  Status config_write(uint32_t offset, unsigned width, uint32_t value);
};

// Opens `spec` — a PCI address ("0000:03:00.0") or "vfio-user:/path/to.sock" — and
// attaches it to `dma`, which maps all runtime memory into the device's domain.
Result<std::unique_ptr<Device>> open_device(std::string_view spec, DmaSpace& dma,
                                            const OpenOptions& opts);

}  // namespace uvio::iommu
