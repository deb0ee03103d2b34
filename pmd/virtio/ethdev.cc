// EthPort::open: picks the driver for a device. Only virtio-net exists so far.
#include <uvio/ethdev.h>

#include "iommu/device.h"
#include "pmd/virtio/net.h"

#include <fmt/format.h>

namespace uvio {

namespace {

Status check_virtio_net(iommu::Device& device) {
  // virtio 1.2 §4.1.2: vendor 0x1AF4, device 0x1041 (modern) or 0x1000 (transitional).
  auto ids = device.config_read(0, 4);
  if (!ids) return ids.status();
  uint16_t vendor = static_cast<uint16_t>(*ids), dev_id = static_cast<uint16_t>(*ids >> 16);
  if (vendor != 0x1AF4 || (dev_id != 0x1041 && dev_id != 0x1000))
    return Status::error(ENODEV, fmt::format("{}: {:04x}:{:04x} is not a virtio-net device, the only Ethernet "
                                             "driver uvio has",
                                             device.name(), vendor, dev_id));
  return Status::ok();
}

}  // namespace

Status EthPort::save_state(std::vector<uint8_t>&) {
  return Status::error(ENOTSUP, fmt::format("{}: this port cannot migrate", name()));
}

Result<std::unique_ptr<EthPort>> EthPort::restore(Memory& mem, iommu::Device& device, std::span<const uint8_t> state) {
  UVIO_TRY(check_virtio_net(device));
  auto transport = virtio::open_pci_transport_for_restore(device);
  if (!transport) return transport.status();
  auto port = virtio::NetPort::restore(mem, std::move(*transport), state);
  if (!port) return port.status();
  return std::unique_ptr<EthPort>(std::move(*port));
}

Result<std::unique_ptr<EthPort>> EthPort::open(Memory& mem, iommu::Device& device) {
  UVIO_TRY(check_virtio_net(device));
  auto transport = virtio::open_pci_transport(device);
  if (!transport) return transport.status();
  auto port = virtio::NetPort::create(mem, std::move(*transport), true);
  if (!port) return port.status();
  return std::unique_ptr<EthPort>(std::move(*port));
}

Result<std::unique_ptr<EthPort>> EthPort::open_vhost_user(Memory& mem, std::string_view socket_path,
                                                          uint16_t queue_pairs, bool packed_ring) {
  auto transport = virtio::open_vhost_user_transport(mem, socket_path, queue_pairs, packed_ring);
  if (!transport) return transport.status();
  auto port = virtio::NetPort::create(mem, std::move(*transport), false, queue_pairs);
  if (!port) return port.status();
  return std::unique_ptr<EthPort>(std::move(*port));
}

}  // namespace uvio
