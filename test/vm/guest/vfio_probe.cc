// uvio-vm-vfio-probe: proves, inside the test guest, that the kernel's VFIO really
// works for one device in one mode, independently of libuvio.
//
//   uvio-vm-vfio-probe --bdf 0000:00:04.0 --mode group|iommufd|noiommu [--check-dma-fault]
//
// It opens the device through the type1 container + group or through iommufd + the
// VFIO cdev, checks the config space against sysfs, maps a hugepage buffer for DMA
// and reads BAR0 both through mmap and through the region's file offset. For an NVMe
// controller it brings up the admin queue in the mapped buffer, reads IDENTIFY
// through the IOMMU and requires MSI-X vector 0 to signal its eventfd; with
// --check-dma-fault it then points an IDENTIFY at an IOVA that is not mapped and
// requires the IOMMU's DMAR fault in the kernel log (QEMU's NVMe completes such a
// command with success: only the fault shows the block).
// noiommu runs twice: through the noiommu group + container (no DMA possible there),
// then through the noiommu cdev + iommufd, whose IOMMU_IOAS_NOIOMMU_GET_PA gives the
// physical address the device must DMA to.
// Any failure prints what failed and exits 1. Built -static: the guest has no libc.

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "iommu/abi/iommufd.h"
#include "iommu/abi/vfio.h"

namespace {

namespace abi = uvio::iommu::abi;
namespace fs = std::filesystem;

// vfio-pci's fixed region indexes (uapi: VFIO_PCI_BAR0_REGION_INDEX,
// VFIO_PCI_CONFIG_REGION_INDEX).
constexpr uint32_t kBar0Region = 0;
constexpr uint32_t kConfigRegion = 7;
constexpr uint32_t kMsixIrqIndex = 2;  // uapi: VFIO_PCI_MSIX_IRQ_INDEX

constexpr size_t kHugepage = 2u << 20;
constexpr uint64_t kBufferIova = 0x200000;
// Inside the usable IOVA ranges both kernels report, far from the buffer: never mapped.
constexpr uint64_t kUnmappedIova = 0x40000000;

struct ProbeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& what) { throw ProbeError(what); }
[[noreturn]] void fail_errno(const std::string& what) {
  throw ProbeError(what + ": " + std::strerror(errno));
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Fd open_or_fail(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) fail_errno("open " + path);
  return Fd(fd);
}

std::string read_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) fail("cannot read " + path.string());
  return line;
}

double now_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ------------------------------------------------------------------ device access

// What the probe needs from either backend: a device fd and a way to map DMA.
struct OpenDevice {
  enum class Path { Group, Iommufd, NoiommuGroup, NoiommuCdev };
  Path path = Path::Group;
  Fd device;
  Fd container;  // group paths
  Fd group;      // group paths
  Fd iommufd;    // cdev paths
  uint32_t ioas_id = 0;

  const char* name() const {
    switch (path) {
      case Path::Group: return "group";
      case Path::Iommufd: return "iommufd";
      case Path::NoiommuGroup: return "noiommu group";
      case Path::NoiommuCdev: return "noiommu cdev";
    }
    return "?";
  }
  // A noiommu container has no DMA map at all.
  bool can_dma() const { return path != Path::NoiommuGroup; }
  // Only an IOMMU can block a DMA; without one it would land in physical memory.
  bool has_iommu() const { return path == Path::Group || path == Path::Iommufd; }

  // Maps [va, va + length) at iova; returns the address the device must use.
  uint64_t map(void* va, uint64_t iova, uint64_t length) {
    if (path == Path::Group) {
      abi::VfioIommuType1DmaMap map{};
      map.argsz = sizeof(map);
      map.flags = abi::kVfioDmaMapFlagRead | abi::kVfioDmaMapFlagWrite;
      map.vaddr = reinterpret_cast<uintptr_t>(va);
      map.iova = iova;
      map.size = length;
      if (ioctl(container.get(), abi::kVfioIommuMapDma, &map) != 0)
        fail_errno("VFIO_IOMMU_MAP_DMA");
      return iova;
    }
    abi::IommuIoasMap map{};
    map.size = sizeof(map);
    map.flags = abi::kIommuIoasMapFixedIova | abi::kIommuIoasMapReadable |
                abi::kIommuIoasMapWriteable;
    map.ioas_id = ioas_id;
    map.user_va = reinterpret_cast<uintptr_t>(va);
    map.length = length;
    map.iova = iova;
    if (ioctl(iommufd.get(), abi::kIommuIoasMap, &map) != 0) fail_errno("IOMMU_IOAS_MAP");
    if (path == Path::Iommufd) return iova;

    abi::IommuIoasNoiommuGetPa pa{};
    pa.size = sizeof(pa);
    pa.ioas_id = ioas_id;
    pa.iova = iova;
    pa.length = length;  // in: bytes to look at (non-zero); out: contiguous bytes
    if (ioctl(iommufd.get(), abi::kIommuIoasNoiommuGetPa, &pa) != 0)
      fail_errno("IOMMU_IOAS_NOIOMMU_GET_PA");
    if (pa.length < length)
      fail("only " + std::to_string(pa.length) + " bytes at IOVA are physically contiguous");
    return pa.out_phys;
  }

  void unmap(uint64_t iova, uint64_t length) {
    uint64_t unmapped = 0;
    if (path == Path::Group) {
      abi::VfioIommuType1DmaUnmap unmap{};
      unmap.argsz = sizeof(unmap);
      unmap.iova = iova;
      unmap.size = length;
      if (ioctl(container.get(), abi::kVfioIommuUnmapDma, &unmap) != 0)
        fail_errno("VFIO_IOMMU_UNMAP_DMA");
      unmapped = unmap.size;
    } else {
      abi::IommuIoasUnmap unmap{};
      unmap.size = sizeof(unmap);
      unmap.ioas_id = ioas_id;
      unmap.iova = iova;
      unmap.length = length;
      if (ioctl(iommufd.get(), abi::kIommuIoasUnmap, &unmap) != 0)
        fail_errno("IOMMU_IOAS_UNMAP");
      unmapped = unmap.length;
    }
    if (unmapped != length)
      fail("unmap released " + std::to_string(unmapped) + " bytes, expected " +
           std::to_string(length));
  }
};

OpenDevice open_through_group(const std::string& bdf, bool noiommu) {
  OpenDevice dev;
  dev.path = noiommu ? OpenDevice::Path::NoiommuGroup : OpenDevice::Path::Group;
  fs::path group_link = fs::path("/sys/bus/pci/devices") / bdf / "iommu_group";
  std::error_code ec;
  std::string group = fs::read_symlink(group_link, ec).filename().string();
  if (ec) fail("no IOMMU group for " + bdf + " (" + ec.message() + ")");

  dev.container = open_or_fail("/dev/vfio/vfio");
  int version = ioctl(dev.container.get(), abi::kVfioGetApiVersion);
  if (version != abi::kVfioApiVersion)
    fail("VFIO_GET_API_VERSION is " + std::to_string(version) + ", expected 0");
  unsigned long iommu_type = noiommu ? abi::kVfioNoIommuIommu : abi::kVfioType1v2Iommu;
  if (ioctl(dev.container.get(), abi::kVfioCheckExtension, iommu_type) != 1)
    fail("the container does not offer IOMMU type " + std::to_string(iommu_type));

  dev.group = open_or_fail("/dev/vfio/" + std::string(noiommu ? "noiommu-" : "") + group);
  abi::VfioGroupStatus status{};
  status.argsz = sizeof(status);
  if (ioctl(dev.group.get(), abi::kVfioGroupGetStatus, &status) != 0)
    fail_errno("VFIO_GROUP_GET_STATUS");
  if (!(status.flags & abi::kVfioGroupFlagsViable))
    fail("group " + group + " is not viable: another device in it is not bound to vfio");
  int container_fd = dev.container.get();
  if (ioctl(dev.group.get(), abi::kVfioGroupSetContainer, &container_fd) != 0)
    fail_errno("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(dev.container.get(), abi::kVfioSetIommu, iommu_type) != 0)
    fail_errno("VFIO_SET_IOMMU");

  if (!noiommu) {
    abi::VfioIommuType1Info info{};
    info.argsz = sizeof(info);
    if (ioctl(dev.container.get(), abi::kVfioIommuGetInfo, &info) != 0)
      fail_errno("VFIO_IOMMU_GET_INFO");
    if (!(info.flags & abi::kVfioIommuInfoPgsizes) || !(info.iova_pgsizes & 0x1000))
      fail("type1 does not offer 4 KiB IOMMU pages");
    std::printf("vfio_probe: type1 group %s, IOMMU page sizes 0x%llx\n", group.c_str(),
                static_cast<unsigned long long>(info.iova_pgsizes));
  }

  int fd = ioctl(dev.group.get(), abi::kVfioGroupGetDeviceFd, bdf.c_str());
  if (fd < 0) fail_errno("VFIO_GROUP_GET_DEVICE_FD " + bdf);
  dev.device = Fd(fd);
  return dev;
}

OpenDevice open_through_cdev(const std::string& bdf, bool noiommu) {
  OpenDevice dev;
  dev.path = noiommu ? OpenDevice::Path::NoiommuCdev : OpenDevice::Path::Iommufd;
  fs::path vfio_dev = fs::path("/sys/bus/pci/devices") / bdf / "vfio-dev";
  std::string cdev;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(vfio_dev, ec)) cdev = entry.path().filename();
  if (cdev.empty()) fail("no VFIO cdev under " + vfio_dev.string());
  // A noiommu device's class device is already named "noiommu-vfioN", like its node.

  dev.device = open_or_fail("/dev/vfio/devices/" + cdev);
  dev.iommufd = open_or_fail("/dev/iommu");
  abi::VfioDeviceBindIommufd bind{};
  bind.argsz = sizeof(bind);
  bind.iommufd = dev.iommufd.get();
  if (ioctl(dev.device.get(), abi::kVfioDeviceBindIommufd, &bind) != 0)
    fail_errno("VFIO_DEVICE_BIND_IOMMUFD");

  abi::IommuIoasAlloc alloc{};
  alloc.size = sizeof(alloc);
  if (ioctl(dev.iommufd.get(), abi::kIommuIoasAlloc, &alloc) != 0)
    fail_errno("IOMMU_IOAS_ALLOC");
  dev.ioas_id = alloc.out_ioas_id;

  abi::VfioDeviceAttachIommufdPt attach{};
  attach.argsz = sizeof(attach);
  attach.pt_id = dev.ioas_id;
  if (ioctl(dev.device.get(), abi::kVfioDeviceAttachIommufdPt, &attach) != 0)
    fail_errno("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
  std::printf("vfio_probe: cdev %s bound to iommufd as device %u, IOAS %u, hwpt %u\n",
              cdev.c_str(), bind.out_devid, dev.ioas_id, attach.pt_id);
  return dev;
}

abi::VfioRegionInfo region_info(const OpenDevice& dev, uint32_t index) {
  abi::VfioRegionInfo info{};
  info.argsz = sizeof(info);
  info.index = index;
  if (ioctl(dev.device.get(), abi::kVfioDeviceGetRegionInfo, &info) != 0)
    fail_errno("VFIO_DEVICE_GET_REGION_INFO " + std::to_string(index));
  return info;
}

template <typename T>
T region_read(const OpenDevice& dev, const abi::VfioRegionInfo& region, uint64_t offset) {
  T value{};
  if (pread(dev.device.get(), &value, sizeof(value), static_cast<off_t>(region.offset + offset)) !=
      static_cast<ssize_t>(sizeof(value)))
    fail_errno("read of region " + std::to_string(region.index) + " at " + std::to_string(offset));
  return value;
}

template <typename T>
void region_write(const OpenDevice& dev, const abi::VfioRegionInfo& region, uint64_t offset,
                  T value) {
  if (pwrite(dev.device.get(), &value, sizeof(value), static_cast<off_t>(region.offset + offset)) !=
      static_cast<ssize_t>(sizeof(value)))
    fail_errno("write of region " + std::to_string(region.index) + " at " + std::to_string(offset));
}

// ------------------------------------------------------------------ NVMe admin queue
// Register offsets and fields: NVMe Base Specification 1.4, section 3.1.

constexpr uint64_t kNvmeCap = 0x00;   // 3.1.1 Controller Capabilities
constexpr uint64_t kNvmeVs = 0x08;    // 3.1.2 Version
constexpr uint64_t kNvmeCc = 0x14;    // 3.1.5 Controller Configuration
constexpr uint64_t kNvmeCsts = 0x1c;  // 3.1.6 Controller Status
constexpr uint64_t kNvmeAqa = 0x24;   // 3.1.8 Admin Queue Attributes
constexpr uint64_t kNvmeAsq = 0x28;   // 3.1.9 Admin Submission Queue Base Address
constexpr uint64_t kNvmeAcq = 0x30;   // 3.1.10 Admin Completion Queue Base Address
constexpr uint64_t kNvmeDoorbells = 0x1000;  // SQ0TDBL; CQ0HDBL one stride later

constexpr uint32_t kCcEnable = 1u << 0;
constexpr uint32_t kCcIosqes64 = 6u << 16;  // log2(64-byte SQ entries)
constexpr uint32_t kCcIocqes16 = 4u << 20;  // log2(16-byte CQ entries)
constexpr uint32_t kCstsReady = 1u << 0;
constexpr uint32_t kCstsFatal = 1u << 1;

constexpr uint8_t kAdminIdentify = 0x06;  // 5.15 Identify
constexpr uint32_t kCnsController = 0x01;

constexpr uint32_t kQueueEntries = 16;
// Layout of the mapped hugepage: admin SQ, admin CQ, IDENTIFY data.
constexpr uint64_t kSqOffset = 0x0000;
constexpr uint64_t kCqOffset = 0x1000;
constexpr uint64_t kDataOffset = 0x2000;

struct NvmeCommand {  // 4.2 Submission Queue Entry, 64 bytes
  uint32_t cdw0;      // opcode 7:0, command identifier 31:16
  uint32_t nsid;
  uint64_t reserved;
  uint64_t mptr;
  uint64_t prp1;
  uint64_t prp2;
  uint32_t cdw10_15[6];
};
static_assert(sizeof(NvmeCommand) == 64);

struct NvmeCompletion {  // 4.6 Completion Queue Entry, 16 bytes
  uint32_t dw0;
  uint32_t dw1;
  uint16_t sq_head;
  uint16_t sq_id;
  uint16_t command_id;
  uint16_t status;  // phase tag bit 0, status field 15:1
};
static_assert(sizeof(NvmeCompletion) == 16);

class NvmeAdminQueue {
 public:
  NvmeAdminQueue(volatile uint8_t* bar, uint8_t* buffer, uint64_t buffer_iova)
      : bar_(bar), buffer_(buffer), iova_(buffer_iova) {}

  uint64_t cap() const { return read64(kNvmeCap); }

  void enable() {
    uint64_t cap_value = cap();
    // CAP.TO (31:24) is the worst-case ready time in 500 ms units; TCG adds slack.
    double timeout = 0.5 * static_cast<double>((cap_value >> 24) & 0xff) + 10.0;
    doorbell_stride_ = 4u << ((cap_value >> 32) & 0xf);  // CAP.DSTRD

    write32(kNvmeCc, 0);
    wait_ready(false, timeout);
    write32(kNvmeAqa, (kQueueEntries - 1) << 16 | (kQueueEntries - 1));  // 0-based sizes
    write64(kNvmeAsq, iova_ + kSqOffset);
    write64(kNvmeAcq, iova_ + kCqOffset);
    write32(kNvmeCc, kCcEnable | kCcIosqes64 | kCcIocqes16);  // NVM command set, 4 KiB MPS
    wait_ready(true, timeout);
  }

  void disable() { write32(kNvmeCc, 0); }

  // Submits IDENTIFY CONTROLLER with its data pointer at data_iova; returns the status.
  uint16_t identify(uint64_t data_iova) {
    auto* sq = reinterpret_cast<NvmeCommand*>(buffer_ + kSqOffset);
    auto* cq = reinterpret_cast<volatile NvmeCompletion*>(buffer_ + kCqOffset);
    uint16_t command_id = static_cast<uint16_t>(0x100 + sq_tail_);
    NvmeCommand cmd{};
    cmd.cdw0 = kAdminIdentify | static_cast<uint32_t>(command_id) << 16;
    cmd.prp1 = data_iova;
    cmd.cdw10_15[0] = kCnsController;
    sq[sq_tail_] = cmd;
    sq_tail_ = (sq_tail_ + 1) % kQueueEntries;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // the entry is in memory before the doorbell
    write32(kNvmeDoorbells, sq_tail_);

    double deadline = now_seconds() + 20.0;
    while ((cq[cq_head_].status & 1u) != phase_) {
      if (read32(kNvmeCsts) & kCstsFatal) fail("the controller reported a fatal status");
      if (now_seconds() > deadline) fail("no completion for IDENTIFY within 20 s");
      usleep(1000);
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    NvmeCompletion done;
    std::memcpy(&done, const_cast<const NvmeCompletion*>(&cq[cq_head_]), sizeof(done));
    if (done.command_id != command_id)
      fail("completion for command " + std::to_string(done.command_id) + ", expected " +
           std::to_string(command_id));
    cq_head_ = (cq_head_ + 1) % kQueueEntries;
    if (cq_head_ == 0) phase_ ^= 1u;
    write32(kNvmeDoorbells + doorbell_stride_, cq_head_);
    return static_cast<uint16_t>(done.status >> 1);
  }

 private:
  uint32_t read32(uint64_t off) const {
    return *reinterpret_cast<volatile const uint32_t*>(bar_ + off);
  }
  uint64_t read64(uint64_t off) const {
    return static_cast<uint64_t>(read32(off)) | static_cast<uint64_t>(read32(off + 4)) << 32;
  }
  void write32(uint64_t off, uint32_t v) { *reinterpret_cast<volatile uint32_t*>(bar_ + off) = v; }
  void write64(uint64_t off, uint64_t v) {
    write32(off, static_cast<uint32_t>(v));
    write32(off + 4, static_cast<uint32_t>(v >> 32));
  }
  void wait_ready(bool ready, double timeout) {
    double deadline = now_seconds() + timeout;
    while (((read32(kNvmeCsts) & kCstsReady) != 0) != ready) {
      if (now_seconds() > deadline)
        fail(std::string("CSTS.RDY did not become ") + (ready ? "1" : "0"));
      usleep(1000);
    }
  }

  volatile uint8_t* bar_;
  uint8_t* buffer_;
  uint64_t iova_;
  uint32_t doorbell_stride_ = 4;
  uint32_t sq_tail_ = 0;
  uint32_t cq_head_ = 0;
  uint32_t phase_ = 1;
};

// ------------------------------------------------------------------ kernel log

// Lines of the kernel log where the Intel IOMMU reports a blocked DMA.
std::vector<std::string> dmar_fault_lines() {
  int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, nullptr, 0);
  if (size <= 0) fail_errno("klogctl SIZE_BUFFER");
  std::string log(static_cast<size_t>(size), '\0');
  int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, log.data(), size);
  if (n < 0) fail_errno("klogctl READ_ALL");
  log.resize(static_cast<size_t>(n));
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    std::string_view line(log.data() + start, end - start);
    if (line.find("DMAR") != std::string_view::npos &&
        line.find("fault") != std::string_view::npos)
      lines.emplace_back(line);
    start = end + 1;
  }
  return lines;
}

// ------------------------------------------------------------------ the probe

struct Options {
  std::string bdf;
  std::string mode;
  bool check_dma_fault = false;
};

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// MSI-X vector 0 (the admin completion queue's) signalling an eventfd.
class MsixVector0 {
 public:
  explicit MsixVector0(const OpenDevice& dev) : dev_(dev) {
    abi::VfioIrqInfo info{};
    info.argsz = sizeof(info);
    info.index = kMsixIrqIndex;
    if (ioctl(dev.device.get(), abi::kVfioDeviceGetIrqInfo, &info) != 0)
      fail_errno("VFIO_DEVICE_GET_IRQ_INFO MSI-X");
    if (info.count == 0 || !(info.flags & abi::kVfioIrqInfoEventfd))
      fail("no MSI-X vectors with eventfd signalling (count " + std::to_string(info.count) + ")");
    event_ = Fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (event_.get() < 0) fail_errno("eventfd");
    set(abi::kVfioIrqSetDataEventfd, 1);
    std::printf("vfio_probe: MSI-X: %u vectors, vector 0 on an eventfd\n", info.count);
  }
  ~MsixVector0() {
    try {
      set(abi::kVfioIrqSetDataNone, 0);
    } catch (const ProbeError&) {  // the device fd closes next, which disables it too
    }
  }
  MsixVector0(const MsixVector0&) = delete;
  MsixVector0& operator=(const MsixVector0&) = delete;

  // Waits for the vector to have fired at least once since the last call.
  void expect_fired() {
    pollfd p{event_.get(), POLLIN, 0};
    if (poll(&p, 1, 20000) != 1) fail("MSI-X vector 0 did not signal its eventfd within 20 s");
    uint64_t count = 0;
    if (read(event_.get(), &count, sizeof(count)) != sizeof(count) || count == 0)
      fail_errno("read of the MSI-X eventfd");
  }

 private:
  void set(uint32_t data_flag, uint32_t count) {
    struct {
      abi::VfioIrqSet set;
      int32_t fd;
    } request{};
    request.set.argsz = data_flag == abi::kVfioIrqSetDataEventfd ? sizeof(request) : sizeof(request.set);
    request.set.flags = data_flag | abi::kVfioIrqSetActionTrigger;
    request.set.index = kMsixIrqIndex;
    request.set.count = count;
    request.fd = event_.get();
    if (ioctl(dev_.device.get(), abi::kVfioDeviceSetIrqs, &request) != 0)
      fail_errno("VFIO_DEVICE_SET_IRQS MSI-X");
  }

  const OpenDevice& dev_;
  Fd event_;
};

void check_nvme(OpenDevice& dev, volatile uint8_t* bar, const abi::VfioRegionInfo& bar0,
                uint8_t* buffer, uint64_t buffer_bus, bool check_dma_fault) {
  uint64_t cap_mmap = NvmeAdminQueue(bar, buffer, buffer_bus).cap();
  uint64_t cap_pread = region_read<uint32_t>(dev, bar0, kNvmeCap) |
                       static_cast<uint64_t>(region_read<uint32_t>(dev, bar0, kNvmeCap + 4)) << 32;
  uint32_t vs = region_read<uint32_t>(dev, bar0, kNvmeVs);
  std::printf("vfio_probe: NVMe CAP %s, VS %u.%u.%u\n", hex(cap_mmap).c_str(), vs >> 16,
              (vs >> 8) & 0xff, vs & 0xff);
  if (cap_mmap != cap_pread)
    fail("CAP through mmap " + hex(cap_mmap) + " differs from CAP through read " + hex(cap_pread));
  if ((cap_mmap & 0xffff) == 0 || (cap_mmap & (1ull << 37)) == 0)  // MQES, CSS.NVM
    fail("CAP " + hex(cap_mmap) + " lacks queue entries or the NVM command set");
  if ((vs >> 16) < 1) fail("NVMe version " + hex(vs) + " is below 1.0");
  if (!dev.can_dma()) {
    std::printf("vfio_probe: a noiommu container maps no DMA: admin queue skipped here\n");
    return;
  }

  MsixVector0 interrupt(dev);
  NvmeAdminQueue admin(bar, buffer, buffer_bus);
  admin.enable();
  std::memset(buffer + kDataOffset, 0, 4096);
  uint16_t status = admin.identify(buffer_bus + kDataOffset);
  if (status != 0) fail("IDENTIFY CONTROLLER failed with status " + hex(status));
  uint16_t vid;
  std::memcpy(&vid, buffer + kDataOffset, sizeof(vid));  // 5.15.2.1 bytes 1:0 VID
  std::string model(reinterpret_cast<const char*>(buffer + kDataOffset + 24), 40);  // MN 63:24
  model.erase(model.find_last_not_of(' ') + 1);
  std::printf("vfio_probe: IDENTIFY by DMA to %s: VID %04x, model '%s'\n",
              hex(buffer_bus + kDataOffset).c_str(), vid, model.c_str());
  if (model.empty() || vid == 0) fail("IDENTIFY data did not arrive in the mapped buffer");
  interrupt.expect_fired();
  std::printf("vfio_probe: the completion raised MSI-X vector 0\n");

  if (check_dma_fault && dev.has_iommu()) {
    size_t faults_before = dmar_fault_lines().size();
    uint16_t blocked_status = admin.identify(kUnmappedIova);
    std::printf("vfio_probe: IDENTIFY to unmapped IOVA %s completed with status %s\n",
                hex(kUnmappedIova).c_str(), hex(blocked_status).c_str());
    // The fault is reported from the IOMMU's fault interrupt: allow it to arrive.
    double deadline = now_seconds() + 10.0;
    std::vector<std::string> faults = dmar_fault_lines();
    while (faults.size() <= faults_before && now_seconds() < deadline) {
      usleep(10000);
      faults = dmar_fault_lines();
    }
    if (faults.size() <= faults_before)
      fail("a DMA to unmapped IOVA " + hex(kUnmappedIova) +
           " left no DMAR fault in the kernel log: the IOMMU did not block it");
    std::printf("vfio_probe: blocked as expected: %s\n", faults.back().c_str());
  }
  admin.disable();
}

void probe_device(OpenDevice& dev, const Options& opt) {
  abi::VfioDeviceInfo info{};
  info.argsz = sizeof(info);
  if (ioctl(dev.device.get(), abi::kVfioDeviceGetInfo, &info) != 0)
    fail_errno("VFIO_DEVICE_GET_INFO");
  if (!(info.flags & abi::kVfioDeviceFlagsPci) || info.num_regions <= kConfigRegion)
    fail("the device is not a vfio-pci device (flags " + hex(info.flags) + ", " +
         std::to_string(info.num_regions) + " regions)");

  // Config space through VFIO must be the device sysfs describes.
  abi::VfioRegionInfo config = region_info(dev, kConfigRegion);
  fs::path sysfs = fs::path("/sys/bus/pci/devices") / opt.bdf;
  uint16_t vendor = region_read<uint16_t>(dev, config, 0x00);
  uint16_t device = region_read<uint16_t>(dev, config, 0x02);
  uint32_t class_code = region_read<uint32_t>(dev, config, 0x08) >> 8;
  if (vendor != std::stoul(read_line(sysfs / "vendor"), nullptr, 16) ||
      device != std::stoul(read_line(sysfs / "device"), nullptr, 16))
    fail("config space says " + hex(vendor) + ":" + hex(device) + ", sysfs disagrees");
  std::printf("vfio_probe: %s %04x:%04x class %06x, %u regions, %u irq types, through %s\n",
              opt.bdf.c_str(), vendor, device, class_code, info.num_regions, info.num_irqs,
              dev.name());

  // PCI command register (PCI 3.0 section 6.2.2): memory space (bit 1) and bus master
  // (bit 2), as QEMU drops DMA from a device that is not bus master; INTx disabled
  // (bit 10), as the probe polls and nothing in the guest handles the line.
  uint16_t command = region_read<uint16_t>(dev, config, 0x04);
  region_write<uint16_t>(dev, config, 0x04, command | 0x406);

  void* buffer = MAP_FAILED;
  uint64_t buffer_bus = 0;
  if (dev.can_dma()) {
    buffer = mmap(nullptr, kHugepage, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    if (buffer == MAP_FAILED) fail_errno("mmap of a 2 MiB hugepage (are hugepages reserved?)");
    buffer_bus = dev.map(buffer, kBufferIova, kHugepage);
    std::printf("vfio_probe: mapped a 2 MiB hugepage at IOVA %s, device address %s\n",
                hex(kBufferIova).c_str(), hex(buffer_bus).c_str());
  }

  abi::VfioRegionInfo bar0 = region_info(dev, kBar0Region);
  if (class_code == 0x010802) {  // mass storage, NVM, NVMe
    if (bar0.size < 0x2000 || !(bar0.flags & abi::kVfioRegionInfoFlagMmap))
      fail("NVMe BAR0 is " + hex(bar0.size) + " bytes, flags " + hex(bar0.flags) +
           ": expected an mmap-able register window");
    void* bar = mmap(nullptr, bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev.device.get(),
                     static_cast<off_t>(bar0.offset));
    if (bar == MAP_FAILED) fail_errno("mmap of BAR0");
    check_nvme(dev, static_cast<volatile uint8_t*>(bar), bar0, static_cast<uint8_t*>(buffer),
               buffer_bus, opt.check_dma_fault);
    munmap(bar, bar0.size);
  } else {
    uint64_t bars = 0;
    for (uint32_t i = 0; i <= 5; ++i) bars += region_info(dev, i).size > 0 ? 1 : 0;
    if (bars == 0) fail("no BAR has a size");
    std::printf("vfio_probe: %llu BARs present; DMA checks need NVMe, skipped\n",
                static_cast<unsigned long long>(bars));
  }

  region_write<uint16_t>(dev, config, 0x04, command);
  if (dev.can_dma()) {
    dev.unmap(kBufferIova, kHugepage);
    munmap(buffer, kHugepage);
  }
}

void probe(const Options& opt) {
  if (opt.mode == "group") {
    OpenDevice dev = open_through_group(opt.bdf, false);
    probe_device(dev, opt);
  } else if (opt.mode == "iommufd") {
    OpenDevice dev = open_through_cdev(opt.bdf, false);
    probe_device(dev, opt);
  } else {
    // One after the other: a device is open through its group or its cdev, not both.
    {
      OpenDevice dev = open_through_group(opt.bdf, true);
      probe_device(dev, opt);
    }
    OpenDevice dev = open_through_cdev(opt.bdf, true);
    probe_device(dev, opt);
  }
}

int usage() {
  std::fprintf(stderr,
               "usage: uvio-vm-vfio-probe --bdf DDDD:BB:DD.F --mode group|iommufd|noiommu "
               "[--check-dma-fault]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--bdf" && i + 1 < argc) {
      opt.bdf = argv[++i];
    } else if (arg == "--mode" && i + 1 < argc) {
      opt.mode = argv[++i];
    } else if (arg == "--check-dma-fault") {
      opt.check_dma_fault = true;
    } else {
      return usage();
    }
  }
  if (opt.bdf.empty() || (opt.mode != "group" && opt.mode != "iommufd" && opt.mode != "noiommu"))
    return usage();
  try {
    probe(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vfio_probe: %s %s: FAILED: %s\n", opt.bdf.c_str(), opt.mode.c_str(),
                 e.what());
    return 1;
  }
  std::printf("vfio_probe: %s %s: OK\n", opt.bdf.c_str(), opt.mode.c_str());
  return 0;
}
