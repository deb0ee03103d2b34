// How the virtio drivers reach a device: feature negotiation, device status, queue
// setup, notifications, device configuration and interrupts. One implementation per
// transport: modern PCI over an iommu::Device (transport_pci.cc, virtio 1.2 §4.1) and
// a vhost-user frontend over a UNIX socket (transport_vhost_user.cc).
#pragma once

#include <uvio/mem.h>
#include <uvio/status.h>

#include "pmd/virtio/virtqueue_split.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace uvio::iommu {
class Device;
}

namespace uvio::virtio {

// The fast-path notification of one queue (§4.1.4.4 for PCI: a 16-bit store of the
// queue index into the notify area; vhost-user: a write to the kick eventfd).
struct Doorbell {
  uint16_t* mmio = nullptr;  // mapped notify address, when the BAR page is mappable
  int eventfd = -1;          // vhost-user kick
  uint16_t value = 0;
  class Transport* slow = nullptr;  // neither: a trapped register write
  uint16_t queue = 0;

  void ring() const;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  // Whether the device sits behind an IOMMU and takes IOVAs (VIRTIO_F_ACCESS_PLATFORM
  // must then be accepted when offered).
  virtual bool behind_iommu() const = 0;

  // §3.1.1 steps 1-6: reset, ACKNOWLEDGE | DRIVER, read the offered features.
  virtual Status reset() = 0;
  virtual Result<uint64_t> device_features() = 0;
  // Writes the driver's features and sets FEATURES_OK; EPROTO when the device refuses.
  virtual Status set_features(uint64_t features) = 0;
  // Step 8: DRIVER_OK.
  virtual Status driver_ok() = 0;
  virtual Result<uint8_t> status() = 0;

  // Queues the device has (for virtio-net, 2 * pairs + control).
  virtual uint16_t max_queues() const = 0;
  // The largest size the device takes for queue `index`; 0 when it does not exist.
  virtual Result<uint16_t> max_queue_size(uint16_t index) = 0;
  // Programs and enables a queue. `interrupt`: whether it gets an interrupt vector
  // (MSI-X) or call eventfd.
  virtual Status setup_queue(const QueueLayout& layout, bool interrupt) = 0;
  virtual Doorbell doorbell(uint16_t index) = 0;
  // The slow notification, when the doorbell cannot be mapped.
  virtual void notify(uint16_t index) = 0;
  // The eventfd signalled for queue `index`'s interrupts; -1 when it has none.
  virtual int interrupt_fd(uint16_t index) const = 0;

  // Device-specific configuration (§4.1.4.6); EOPNOTSUPP when the transport has none.
  virtual Status read_config(uint32_t offset, void* buf, size_t len) = 0;

  // Migration: what the transport knows of a started device that the device does not
  // tell again (its status bits, each queue's notify offset and interrupt vector), and
  // taking it back over a device whose own state arrived through migration v2.
  // ENOTSUP where the transport cannot migrate.
  virtual Status save_state(std::vector<uint8_t>& out) const {
    (void)out;
    return Status::error(ENOTSUP, std::string(name()) + ": this transport cannot migrate");
  }
  virtual Status load_state(std::span<const uint8_t> in) {
    (void)in;
    return Status::error(ENOTSUP, std::string(name()) + ": this transport cannot migrate");
  }
};

inline void Doorbell::ring() const {
  if (mmio) {
    std::atomic_ref<uint16_t>(*mmio).store(value, std::memory_order_release);
  } else if (eventfd >= 0) {
    uint64_t one = 1;
    // A failed kick leaves the buffers in the ring; the next burst kicks again.
    [[maybe_unused]] ssize_t n = ::write(eventfd, &one, sizeof(one));
  } else if (slow) {
    slow->notify(queue);
  }
}

// Modern virtio PCI (§4.1) over an opened device. MSI-X vector 0 is the configuration
// change vector; queue q uses vector 1 + q when the device has that many.
Result<std::unique_ptr<Transport>> open_pci_transport(iommu::Device& device);
// The same on a migration's destination: finds the structures, maps them and wires the
// interrupt eventfds, but writes nothing to the device's virtio registers (they arrived
// with its state); load_state() then supplies what the source's transport knew.
Result<std::unique_ptr<Transport>> open_pci_transport_for_restore(iommu::Device& device);

// A vhost-user frontend: connects to the backend's socket at `path`, hands it the
// runtime's memory areas as fd-backed regions. `queue_pairs` virtio-net pairs; without
// `packed_ring` the backend's VIRTIO_F_RING_PACKED is not offered to the driver.
Result<std::unique_ptr<Transport>> open_vhost_user_transport(Memory& mem, std::string_view path,
                                                             uint16_t queue_pairs, bool packed_ring = true);

}  // namespace uvio::virtio
