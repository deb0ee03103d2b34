// Modern virtio over PCI (virtio 1.2 §4.1): the vendor capabilities in config space
// name where in which BAR the common, notify, ISR and device configuration structures
// live (§4.1.4); each is mapped when the device lets us (sparse mmap) and accessed
// through region reads and writes otherwise.
#include <uvio/intr.h>
#include <uvio/log.h>

#include "iommu/device.h"
#include "lib/state_io.h"
#include "pmd/virtio/transport.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace uvio::virtio {
namespace {

constexpr const char* kLog = "virtio-pci";
constexpr uint64_t kPage = 4096;
// PCI 3.0 §6.2.2/§6.7: status bit 4 says a capability list exists; its head at 0x34.
constexpr uint32_t kPciCommand = 0x04;
constexpr uint32_t kPciStatus = 0x06;
constexpr uint32_t kPciCapPointer = 0x34;
constexpr uint16_t kPciStatusCapList = 1u << 4;
constexpr uint16_t kPciCommandMemory = 1u << 1;
constexpr uint16_t kPciCommandBusMaster = 1u << 2;
// 256 bytes of standard config space hold at most 48 capabilities: a longer walk is a loop.
constexpr int kMaxCapabilities = 48;

// One of the structures a virtio capability points at.
class Window {
 public:
  bool present() const { return present_; }
  uint64_t length() const { return length_; }

  Status init(iommu::Device& dev, uint32_t bar, uint64_t offset, uint64_t length) {
    dev_ = &dev;
    bar_ = bar;
    offset_ = offset;
    length_ = length;
    present_ = true;
    auto info = dev.region_info(bar);
    if (!info) return info.status();
    if (offset > info->size || length > info->size - offset)
      return Status::error(EPROTO, fmt::format("virtio capability points past BAR {} ({:#x}+{:#x} > {:#x})", bar,
                                               offset, length, info->size));
    uint64_t first = offset & ~(kPage - 1);
    uint64_t last = (offset + length + kPage - 1) & ~(kPage - 1);
    if (info->mappable()) {
      auto mapped = dev.region_map(bar, first, last - first);
      if (mapped) mapped_ = static_cast<std::byte*>(*mapped) + (offset - first);
    }
    return Status::ok();
  }

  std::byte* mapped() const { return mapped_; }

  template <class T>
  Result<T> read(uint64_t at) {
    if (at + sizeof(T) > length_) return Status::error(EINVAL, "read beyond a virtio structure");
    T v{};
    if (mapped_) {
      volatile T* p = reinterpret_cast<volatile T*>(mapped_ + at);
      v = *p;
      return v;
    }
    UVIO_TRY(dev_->region_read(bar_, offset_ + at, &v, sizeof(v)));
    return v;
  }
  template <class T>
  Status write(uint64_t at, T v) {
    if (at + sizeof(T) > length_) return Status::error(EINVAL, "write beyond a virtio structure");
    if (mapped_) {
      volatile T* p = reinterpret_cast<volatile T*>(mapped_ + at);
      *p = v;
      return Status::ok();
    }
    return dev_->region_write(bar_, offset_ + at, &v, sizeof(v));
  }
  Status read_bytes(uint64_t at, void* buf, size_t len) {
    if (at > length_ || len > length_ - at) return Status::error(EINVAL, "read beyond a virtio structure");
    if (mapped_) {
      auto* out = static_cast<volatile uint8_t*>(buf);
      for (size_t i = 0; i < len; i++) out[i] = reinterpret_cast<volatile uint8_t*>(mapped_ + at)[i];
      return Status::ok();
    }
    return dev_->region_read(bar_, offset_ + at, buf, len);
  }

 private:
  iommu::Device* dev_ = nullptr;
  uint32_t bar_ = 0;
  uint64_t offset_ = 0;
  uint64_t length_ = 0;
  bool present_ = false;
  std::byte* mapped_ = nullptr;
};

class PciTransport final : public Transport {
 public:
  explicit PciTransport(iommu::Device& dev) : dev_(dev) {}
  ~PciTransport() override {
    if (!irq_fds_.empty()) (void)dev_.disable_irqs(iommu::kMsixIrq);
    for (int fd : irq_fds_) ::close(fd);
  }

  // restoring: a migration's destination, where the device's registers are its state.
  Status init(bool restoring);

  Status save_state(std::vector<uint8_t>& out) const override {
    StateWriter w(out);
    w.put(num_queues_);
    w.put(status_bits_);
    for (uint16_t q = 0; q < num_queues_; q++) {
      w.put(notify_at_[q]);
      w.put(queue_vector_[q]);
    }
    return Status::ok();
  }

  Status load_state(std::span<const uint8_t> in) override {
    StateReader r(in);
    uint16_t queues = 0;
    uint8_t status = 0;
    r.get(&queues);
    r.get(&status);
    if (!r.ok() || queues != num_queues_)
      return Status::error(EINVAL, fmt::format("{}: transport state for {} queues, the device has {}", name(), queues,
                                               num_queues_));
    std::vector<uint64_t> notify(queues);
    std::vector<uint16_t> vectors(queues);
    for (uint16_t q = 0; q < queues; q++) {
      r.get(&notify[q]);
      r.get(&vectors[q]);
      if (!r.ok()) return Status::error(EINVAL, fmt::format("{}: transport state is truncated", name()));
      if (notify[q] + 2 > notify_.length() || notify[q] + 2 < notify[q])
        return Status::error(EINVAL, fmt::format("{}: queue {} notify offset {:#x} lies outside the notify area", name(),
                                                 q, notify[q]));
      if (vectors[q] != pci::kNoVector && vectors[q] >= irq_fds_.size())
        return Status::error(EINVAL, fmt::format("{}: queue {} uses MSI-X vector {} of the {} wired", name(), q,
                                                 vectors[q], irq_fds_.size()));
    }
    if (r.left() != 0) return Status::error(EINVAL, fmt::format("{}: {} bytes after the transport state", name(), r.left()));
    status_bits_ = status;
    notify_at_ = std::move(notify);
    queue_vector_ = std::move(vectors);
    return Status::ok();
  }

  std::string_view name() const override { return dev_.name(); }
  bool behind_iommu() const override { return true; }

  Status reset() override {
    using namespace pci;
    UVIO_TRY(common_.write<uint8_t>(kDeviceStatus, 0));
    // §4.1.4.3.2: after writing 0 the driver waits until device_status reads 0.
    for (int i = 0; i < 10000; i++) {
      auto s = common_.read<uint8_t>(kDeviceStatus);
      if (!s) return s.status();
      if (*s == 0) {
        // A reset also forgot the configuration vector (§4.1.4.3).
        if (!irq_fds_.empty()) UVIO_TRY(common_.write<uint16_t>(kConfigMsixVector, 0));
        std::fill(queue_vector_.begin(), queue_vector_.end(), kNoVector);
        UVIO_TRY(common_.write<uint8_t>(kDeviceStatus, kStatusAcknowledge));
        status_bits_ = kStatusAcknowledge | kStatusDriver;
        return common_.write<uint8_t>(kDeviceStatus, status_bits_);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return Status::error(ETIMEDOUT, fmt::format("{}: device status did not read 0 within 1 s of a reset", name()));
  }

  Result<uint64_t> device_features() override {
    using namespace pci;
    uint64_t features = 0;
    for (uint32_t sel = 0; sel < 2; sel++) {
      UVIO_TRY(common_.write<uint32_t>(kDeviceFeatureSelect, sel));
      auto half = common_.read<uint32_t>(kDeviceFeature);
      if (!half) return half.status();
      features |= uint64_t{*half} << (32 * sel);
    }
    return features;
  }

  Status set_features(uint64_t features) override {
    using namespace pci;
    for (uint32_t sel = 0; sel < 2; sel++) {
      UVIO_TRY(common_.write<uint32_t>(kDriverFeatureSelect, sel));
      UVIO_TRY(common_.write<uint32_t>(kDriverFeature, static_cast<uint32_t>(features >> (32 * sel))));
    }
    status_bits_ = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk;
    UVIO_TRY(common_.write<uint8_t>(kDeviceStatus, status_bits_));
    // §3.1.1 step 6: re-read; a device that cannot take these features clears the bit.
    auto s = common_.read<uint8_t>(kDeviceStatus);
    if (!s) return s.status();
    if (!(*s & kStatusFeaturesOk))
      return Status::error(EPROTO, fmt::format("{}: device refused features {:#x}", name(), features));
    return Status::ok();
  }

  Status driver_ok() override {
    status_bits_ |= kStatusDriverOk;
    UVIO_TRY(common_.write<uint8_t>(pci::kDeviceStatus, status_bits_));
    auto s = common_.read<uint8_t>(pci::kDeviceStatus);
    if (!s) return s.status();
    if (!(*s & kStatusDriverOk) || (*s & kStatusNeedsReset))
      return Status::error(EIO, fmt::format("{}: device did not accept DRIVER_OK (status {:#x})", name(), *s));
    return Status::ok();
  }

  Result<uint8_t> status() override { return common_.read<uint8_t>(pci::kDeviceStatus); }

  uint16_t max_queues() const override { return num_queues_; }

  Result<uint16_t> max_queue_size(uint16_t index) override {
    if (index >= num_queues_) return uint16_t{0};
    UVIO_TRY(common_.write<uint16_t>(pci::kQueueSelect, index));
    return common_.read<uint16_t>(pci::kQueueSize);
  }

  Status setup_queue(const QueueLayout& q, bool interrupt) override {
    using namespace pci;
    if (q.index >= num_queues_)
      return Status::error(EINVAL, fmt::format("{}: queue {} does not exist ({} queues)", name(), q.index, num_queues_));
    UVIO_TRY(common_.write<uint16_t>(kQueueSelect, q.index));
    UVIO_TRY(common_.write<uint16_t>(kQueueSize, q.size));
    uint16_t vector = kNoVector;
    if (interrupt && 1u + q.index < irq_fds_.size()) vector = static_cast<uint16_t>(1 + q.index);
    UVIO_TRY(common_.write<uint16_t>(kQueueMsixVector, vector));
    if (vector != kNoVector) {
      // §4.1.4.3.1: a vector the device could not allocate reads back as NO_VECTOR.
      auto back = common_.read<uint16_t>(kQueueMsixVector);
      if (!back) return back.status();
      if (*back != vector) vector = kNoVector;
    }
    queue_vector_[q.index] = vector;
    // §4.1.3.1: 64-bit fields written as two 32-bit halves work on every device.
    auto write64 = [&](uint32_t at, uint64_t v) -> Status {
      UVIO_TRY(common_.write<uint32_t>(at, static_cast<uint32_t>(v)));
      return common_.write<uint32_t>(at + 4, static_cast<uint32_t>(v >> 32));
    };
    UVIO_TRY(write64(kQueueDesc, q.desc_iova));
    UVIO_TRY(write64(kQueueDriver, q.avail_iova));
    UVIO_TRY(write64(kQueueDevice, q.used_iova));
    auto notify_off = common_.read<uint16_t>(kQueueNotifyOff);
    if (!notify_off) return notify_off.status();
    uint64_t at = uint64_t{*notify_off} * notify_multiplier_;
    if (at + 2 > notify_.length())
      return Status::error(EPROTO, fmt::format("{}: queue {} notify offset {:#x} lies outside the notify area", name(),
                                               q.index, at));
    notify_at_[q.index] = at;
    return common_.write<uint16_t>(kQueueEnable, 1);
  }

  Doorbell doorbell(uint16_t index) override {
    Doorbell d;
    d.value = index;
    d.queue = index;
    if (notify_.mapped() && index < num_queues_)
      d.mmio = reinterpret_cast<uint16_t*>(notify_.mapped() + notify_at_[index]);
    else
      d.slow = this;
    return d;
  }

  void notify(uint16_t index) override {
    if (index >= num_queues_) return;
    if (Status s = notify_.write<uint16_t>(notify_at_[index], index); !s)
      UVIO_LOG(Err, kLog, "{}: notify of queue {} failed: {}", name(), index, s.describe());
  }

  int interrupt_fd(uint16_t index) const override {
    if (index >= num_queues_ || queue_vector_[index] == pci::kNoVector) return -1;
    return irq_fds_[queue_vector_[index]];
  }

  Status read_config(uint32_t offset, void* buf, size_t len) override {
    if (!device_.present()) return Status::error(EOPNOTSUPP, "device has no device-specific configuration");
    // §4.1.4.3.1 / §2.5.1: retry while config_generation moves under the read.
    for (int attempt = 0; attempt < 100; attempt++) {
      auto before = common_.read<uint8_t>(pci::kConfigGeneration);
      if (!before) return before.status();
      UVIO_TRY(device_.read_bytes(offset, buf, len));
      auto after = common_.read<uint8_t>(pci::kConfigGeneration);
      if (!after) return after.status();
      if (*before == *after) return Status::ok();
    }
    return Status::error(EAGAIN, "device configuration kept changing while being read");
  }

 private:
  Status wire_interrupts(bool restoring);

  iommu::Device& dev_;
  Window common_, notify_, isr_, device_;
  uint32_t notify_multiplier_ = 0;
  uint16_t num_queues_ = 0;
  uint8_t status_bits_ = 0;
  std::vector<uint64_t> notify_at_;
  std::vector<uint16_t> queue_vector_;
  std::vector<int> irq_fds_;
};

Status PciTransport::init(bool restoring) {
  auto st = dev_.config_read(kPciStatus, 2);
  if (!st) return st.status();
  if (!(*st & kPciStatusCapList))
    return Status::error(ENODEV, fmt::format("{}: no PCI capability list, not a modern virtio device", name()));
  auto ptr = dev_.config_read(kPciCapPointer, 1);
  if (!ptr) return ptr.status();
  uint32_t at = *ptr & 0xFC;
  for (int n = 0; at != 0; n++) {
    if (n == kMaxCapabilities || at < 0x40 || at > 0xFC)
      return Status::error(EPROTO, fmt::format("{}: PCI capability list is malformed at {:#x}", name(), at));
    auto head = dev_.config_read(at, 2);
    if (!head) return head.status();
    uint8_t id = static_cast<uint8_t>(*head);
    uint32_t next = (*head >> 8) & 0xFC;
    if (id == pci::kCapIdVendor && at + pci::kCapNotifyMultiplier <= 0x100) {
      auto type = dev_.config_read(at + pci::kCapCfgType, 1);
      auto bar = dev_.config_read(at + pci::kCapBar, 1);
      auto offset = dev_.config_read(at + pci::kCapOffset, 4);
      auto length = dev_.config_read(at + pci::kCapLength, 4);
      if (!type || !bar || !offset || !length) return Status::error(EIO, "reading a virtio capability failed");
      // §4.1.4: BAR values above 5 are reserved; ignore such capabilities. The first
      // capability of each type is the one to use.
      Window* w = nullptr;
      switch (*type) {
        case pci::kCommonCfg: w = &common_; break;
        case pci::kNotifyCfg: w = &notify_; break;
        case pci::kIsrCfg: w = &isr_; break;
        case pci::kDeviceCfg: w = &device_; break;
        default: break;
      }
      if (w && !w->present() && *bar <= 5) {
        UVIO_TRY(w->init(dev_, *bar, *offset, *length));
        if (w == &notify_) {
          auto mult = dev_.config_read(at + pci::kCapNotifyMultiplier, 4);
          if (!mult) return mult.status();
          notify_multiplier_ = *mult;
        }
      }
    }
    at = next;
  }
  if (!common_.present() || !notify_.present())
    return Status::error(ENODEV, fmt::format("{}: no virtio common or notify capability: a legacy-only device, "
                                             "which uvio does not drive",
                                             name()));
  if (common_.length() < pci::kCommonCfgMinLength)
    return Status::error(EPROTO, fmt::format("{}: common configuration is {} bytes, virtio 1.2 needs {}", name(),
                                             common_.length(), pci::kCommonCfgMinLength));

  // Memory decoding and bus mastering, so the device can reach our rings.
  auto cmd = dev_.config_read(kPciCommand, 2);
  if (!cmd) return cmd.status();
  UVIO_TRY(dev_.config_write(kPciCommand, 2, *cmd | kPciCommandMemory | kPciCommandBusMaster));

  auto nq = common_.read<uint16_t>(pci::kNumQueues);
  if (!nq) return nq.status();
  num_queues_ = *nq;
  notify_at_.assign(num_queues_, 0);
  queue_vector_.assign(num_queues_, pci::kNoVector);
  return wire_interrupts(restoring);
}

Status PciTransport::wire_interrupts(bool restoring) {
  auto info = dev_.irq_info(iommu::kMsixIrq);
  if (!info || info->count == 0) {
    UVIO_LOG(Info, kLog, "{}: no MSI-X, queues run in polling mode only", name());
    return Status::ok();
  }
  uint32_t vectors = std::min<uint32_t>(info->count, 1u + num_queues_);
  for (uint32_t v = 0; v < vectors; v++) {
    auto fd = make_eventfd();
    if (!fd) return fd.status();
    irq_fds_.push_back(*fd);
  }
  if (Status s = dev_.set_irq_eventfds(iommu::kMsixIrq, 0, irq_fds_); !s) {
    UVIO_LOG(Warning, kLog, "{}: cannot wire MSI-X vectors ({}); polling mode only", name(), s.describe());
    for (int fd : irq_fds_) ::close(fd);
    irq_fds_.clear();
    return Status::ok();
  }
  if (restoring) return Status::ok();  // the configuration vector is part of the device's state
  return common_.write<uint16_t>(pci::kConfigMsixVector, 0);
}

}  // namespace

Result<std::unique_ptr<Transport>> open_pci_transport(iommu::Device& device) {
  auto t = std::make_unique<PciTransport>(device);
  UVIO_TRY(t->init(false));
  return std::unique_ptr<Transport>(std::move(t));
}

Result<std::unique_ptr<Transport>> open_pci_transport_for_restore(iommu::Device& device) {
  auto t = std::make_unique<PciTransport>(device);
  UVIO_TRY(t->init(true));
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace uvio::virtio
