// A virtio 1.2 network device (§5.1) over the modern PCI transport (§4.1), as a
// vfio-user device model. One instance is one port; ports exchange frames over a Link
// (emu/virtio_net/link.h): back to back (`peer=`), to themselves (`loopback=1`), or not
// at all (link down).
//
// BAR 0 (16 KiB, memory):
//   0x0000  common configuration (§4.1.4.3)        trapped
//   0x1000  ISR status (§4.1.4.5)                  trapped
//   0x2000  device configuration (§5.1.4)          trapped
//   0x3000  notifications (§4.1.4.4), queue q at 0x3000 + 4 * q; a shared page the
//           device thread polls, so a kick is a plain 16-bit store of the queue index
// BAR 1 (4 KiB, memory): MSI-X table at 0x000 and PBA at 0x800, emulated by the server.
//
// Threads: the caller serializes bar_read, bar_write, poll, reset and migration of one
// port (the server does it under its device lock). The two ports of a link may be
// polled from different threads; they meet only in the link's SPSC rings, and the
// client's kicks arrive as atomic loads from the shared page. counters() may be read
// from any thread.
#pragma once

#include "emu/device_model.h"
#include "emu/virtio_net/link.h"
#include "emu/virtio_net/options.h"
#include "emu/virtio_net/virtqueue.h"

#include <array>
#include <atomic>
#include <memory>

namespace uvio::emu::virtio_net {

struct PortCounters {
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t tx_drops = 0;   // no link, or the peer is gone
  uint64_t tx_errors = 0;  // malformed frames and chains on TX and control queues
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t rx_drops = 0;   // no receive buffer (or the link ring overflowed)
  uint64_t rx_errors = 0;  // malformed chains, buffers too small for a frame
};

class VirtioNetModel final : public DeviceModel {
 public:
  static constexpr uint32_t kBar = 0;
  static constexpr uint64_t kBarSize = 0x4000;
  static constexpr uint64_t kCommonOffset = 0x0000;
  static constexpr uint64_t kIsrOffset = 0x1000;
  static constexpr uint64_t kDeviceCfgOffset = 0x2000;
  static constexpr uint64_t kNotifyOffset = 0x3000;
  static constexpr uint64_t kNotifySize = 0x1000;
  static constexpr uint32_t kNotifyOffMultiplier = 4;
  static constexpr uint32_t kMsixBar = 1;
  static constexpr uint64_t kMsixBarSize = 0x1000;
  static constexpr uint64_t kMsixTableOffset = 0x000;
  static constexpr uint64_t kMsixPbaOffset = 0x800;
  // Written to a notify slot by the device once it has seen a kick.
  static constexpr uint16_t kNotifyIdle = 0xFFFF;

  // Joins the link the options name (peer= or loopback=1).
  static Result<std::unique_ptr<VirtioNetModel>> create(const Options& options);
  // Connects two ports without a link name, replacing their links; only while neither
  // is polled.
  static void connect(VirtioNetModel& a, VirtioNetModel& b);

  ~VirtioNetModel() override;

  std::string_view type_name() const override { return "virtio-net"; }
  uint32_t state_version() const override { return 1; }
  PciIdentity identity() const override;
  std::vector<BarLayout> bars() const override;
  MsixLayout msix() const override;
  std::vector<PciCapability> capabilities() const override;
  void attach(DmaAccess& dma, IrqSink& irq, std::span<std::byte* const> shared) override;
  uint64_t bar_read(uint32_t bar, uint64_t offset, unsigned width) override;
  void bar_write(uint32_t bar, uint64_t offset, uint64_t value, unsigned width) override;
  size_t poll() override;
  void reset() override;
  void save_state(std::vector<uint8_t>& out) const override;
  Status load_state(std::span<const uint8_t> in) override;

  PortCounters counters() const;
  uint64_t offered_features() const { return offered_features_; }
  uint64_t driver_features() const { return driver_features_; }
  uint8_t device_status() const { return status_; }
  uint16_t active_queue_pairs() const { return curr_pairs_; }
  uint16_t num_queues() const { return static_cast<uint16_t>(queues_.size()); }
  std::array<uint8_t, 6> mac() const { return mac_; }
  bool link_up() const;

 private:
  explicit VirtioNetModel(const Options& options);

  struct Counters {
    std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, tx_drops{0}, tx_errors{0};
    std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, rx_drops{0}, rx_errors{0};
  };
  // Single writer (the device thread): a relaxed load and store, no locked RMW.
  static void add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  void use_link(std::shared_ptr<Link> link, int end);
  bool has(unsigned feature) const { return driver_features_ & spec::bit(feature); }
  bool running() const;
  uint16_t ctrl_queue_index() const;
  uint32_t msix_vectors() const { return static_cast<uint32_t>(queues_.size()) + 1; }

  void read_common(std::byte* out) const;
  void write_common(uint64_t offset, uint64_t value, unsigned width);
  void write_status(uint8_t value);
  bool features_acceptable() const;
  void read_device_config(std::byte* out);

  // A driver error the device cannot continue past (§2.1.2): DEVICE_NEEDS_RESET and a
  // configuration interrupt.
  void device_error(const char* why, bool rx_side);
  void config_changed();
  void signal(Virtqueue& q);
  bool take_kick(uint16_t queue);
  bool complete(Virtqueue& q, uint16_t id, uint16_t ring_slots, uint32_t len, uint64_t buffer_len);
  void finish_batch(Virtqueue& q);

  size_t service_tx(uint16_t pair);
  size_t service_rx();
  bool deliver(Virtqueue& q, const std::byte* frame, uint32_t len);
  size_t service_ctrl();
  uint8_t handle_ctrl(uint8_t cls, uint8_t cmd, const uint8_t* data, size_t len);

  bool gather(const Chain& chain, uint64_t offset, std::byte* dst, uint32_t len);
  bool scatter(const Chain& chain, uint64_t offset, const void* src, uint32_t len);

  Options options_;
  uint64_t offered_features_ = 0;
  uint32_t max_frame_ = 0;

  DmaAccess* dma_ = nullptr;
  IrqSink* irq_ = nullptr;
  std::byte* notify_ = nullptr;  // BAR 0 offset kNotifyOffset in the shared page

  std::shared_ptr<Link> link_;
  int link_end_ = 0;
  std::vector<uint64_t> overflow_seen_;  // per link ring, for rx_drops

  // Driver-visible state (§4.1.4.3, §5.1.4).
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint8_t status_ = 0;
  uint8_t config_generation_ = 0;
  uint8_t isr_ = 0;
  uint8_t rx_mode_ = 0;  // CTRL_RX bits the driver set; acked, not enforced
  uint16_t msix_config_ = spec::kNoVector;
  uint16_t queue_select_ = 0;
  uint16_t curr_pairs_ = 1;
  std::array<uint8_t, 6> mac_{};
  uint32_t faults_armed_ = 0;
  bool link_up_reported_ = false;
  std::vector<Virtqueue> queues_;
  std::vector<uint8_t> pending_;  // queue had work left, or a trapped kick arrived

  Counters counters_;

  // Scratch, sized once.
  Chain chain_;
  Chain rx_first_;
  struct RxUsed {
    uint16_t id;
    uint16_t ring_slots;
    uint32_t len;
  };
  std::vector<RxUsed> rx_used_;
};

}  // namespace uvio::emu::virtio_net
