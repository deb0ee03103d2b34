// Ethernet ports: open one on a device the runtime found (a virtio-net PCI function,
// kernel VFIO or vfio-user) or on a vhost-user socket, configure its queues with a
// mempool, start it, and move packets with rx_burst / tx_burst.
//
// Threads: the control calls (configure, start, stop, link, stats) from one thread;
// each queue's rx_burst / tx_burst from one lcore at a time. stats() may run while
// the queues do.
#pragma once

#include <uvio/mbuf.h>
#include <uvio/status.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace uvio {

class Memory;
namespace iommu {
class Device;
}

struct EthConfig {
  uint16_t rx_queues = 1;
  uint16_t tx_queues = 1;
  uint16_t ring_size = 256;      // descriptors per queue; capped at what the device takes
  Mempool* rx_pool = nullptr;    // receive buffers (required)
  uint16_t port_id = 0;          // written into every received mbuf
  bool rx_interrupts = false;    // give each RX queue an eventfd (rx_interrupt_fd)
};

struct EthStats {
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t rx_errors = 0;   // device returned malformed completions (counted, skipped)
  uint64_t rx_nombuf = 0;   // receive buffers the pool could not supply
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t tx_errors = 0;   // malformed completions, or packets the driver cannot send
  // Packets a tx_burst left with the caller because the ring was full even after
  // reclaiming: back-pressure, or a device that stopped consuming.
  uint64_t tx_ring_full = 0;
};

struct EthLink {
  bool up = false;
  uint16_t mtu = 0;
  // The device reported an internal error and stopped processing its queues (virtio
  // DEVICE_NEEDS_RESET): only stopping and starting the port brings it back.
  bool needs_reset = false;
};

class EthPort {
 public:
  // A virtio-net PCI function (modern, virtio 1.x): RuntimeDevice::device of a device
  // whose is_virtio_net() holds.
  static Result<std::unique_ptr<EthPort>> open(Memory& mem, iommu::Device& device);
  // A vhost-user backend listening at `socket_path` (virtio-user), `queue_pairs` pairs.
  // packed_ring false refuses VIRTIO_F_RING_PACKED, so split rings are used even when the
  // backend offers packed ones (DPDK's virtio_user packed_vq=0).
  static Result<std::unique_ptr<EthPort>> open_vhost_user(Memory& mem, std::string_view socket_path,
                                                          uint16_t queue_pairs, bool packed_ring = true);

  virtual ~EthPort() = default;
  virtual std::string_view name() const = 0;
  virtual uint16_t max_queue_pairs() const = 0;
  virtual std::array<uint8_t, 6> mac() const = 0;

  virtual Status configure(const EthConfig& config) = 0;
  // Brings the device up with the configured queues and fills the RX rings.
  virtual Status start() = 0;
  // Resets the device and returns every buffer it held to its pool.
  virtual void stop() = 0;

  // Fast path: counts, no syscalls (but a vhost-user kick), locks or allocation.
  virtual uint16_t rx_burst(uint16_t queue, Mbuf** pkts, uint16_t n) = 0;
  // Takes ownership of the packets it returns as sent; the rest stay the caller's.
  virtual uint16_t tx_burst(uint16_t queue, Mbuf** pkts, uint16_t n) = 0;

  virtual EthStats stats() const = 0;
  virtual void reset_stats() = 0;
  virtual EthLink link() = 0;

  // Interrupt mode (EthConfig::rx_interrupts): the eventfd that fires when RX queue
  // `queue` gets packets, -1 when there is none.
  virtual int rx_interrupt_fd(uint16_t queue) const = 0;
  // Arms the queue's interrupt before sleeping on its fd. Returns false when packets
  // are already waiting: do not sleep then.
  virtual bool rx_interrupt_arm(uint16_t queue) = 0;
  virtual void rx_interrupt_disarm(uint16_t queue) = 0;

  // Migration (include/uvio/migrate.h moves runtime memory and the device's own state).
  // Source, with no lcore inside a burst and the device stopped: what the port keeps
  // outside runtime memory (features, queue sizes and addresses, indexes and wrap
  // counters, free descriptors, the mbufs in flight, the RX pool, counters). A started
  // port only; ENOTSUP for ports that cannot migrate (vhost-user).
  virtual Status save_state(std::vector<uint8_t>& out);
  // The state moved to another port object: the destructor neither resets the device
  // nor frees the rings or the mbufs in them.
  virtual void release_after_migration() {}
  // Destination: a started port rebuilt on `device` (a virtio-net PCI function whose
  // state arrived through migration v2) over memory holding the source's bytes, without
  // resetting or configuring the device. The RX pool and every pool whose mbufs are in
  // flight must have been restored first (mbuf_pool_restore). `state` is checked.
  static Result<std::unique_ptr<EthPort>> restore(Memory& mem, iommu::Device& device,
                                                  std::span<const uint8_t> state);
};

}  // namespace uvio
