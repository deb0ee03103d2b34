// The virtio-net poll-mode driver (virtio 1.2 §5.1) over any Transport: feature
// negotiation, queue pairs and the control queue, and the rx/tx bursts.
#pragma once

#include <uvio/ethdev.h>

#include "pmd/virtio/transport.h"
#include "pmd/virtio/virtqueue_packed.h"
#include "pmd/virtio/virtqueue_split.h"

#include <atomic>
#include <memory>
#include <vector>

namespace uvio::virtio {

// What the driver accepts when the device offers it.
inline constexpr uint64_t kNetWantedFeatures =
    feature_bit(kFVersion1) | feature_bit(kFAccessPlatform) | feature_bit(kFNetMac) | feature_bit(kFNetStatus) |
    feature_bit(kFNetMtu) | feature_bit(kFNetMrgRxbuf) | feature_bit(kFNetCtrlVq) | feature_bit(kFNetMq) |
    feature_bit(kFEventIdx) | feature_bit(kFRingPacked);

class NetPort final : public EthPort {
 public:
  // `can_ctrl_queue`: the transport has a control queue the device serves (PCI);
  // vhost-user frontends enable pairs through the rings themselves.
  static Result<std::unique_ptr<NetPort>> create(Memory& mem, std::unique_ptr<Transport> transport,
                                                 bool use_ctrl_queue, uint16_t fixed_pairs = 0);
  ~NetPort() override;

  std::string_view name() const override { return transport_->name(); }
  uint16_t max_queue_pairs() const override { return max_pairs_; }
  std::array<uint8_t, 6> mac() const override { return mac_; }
  Status configure(const EthConfig& config) override;
  Status start() override;
  void stop() override;
  uint16_t rx_burst(uint16_t queue, Mbuf** pkts, uint16_t n) override;
  uint16_t tx_burst(uint16_t queue, Mbuf** pkts, uint16_t n) override;
  EthStats stats() const override;
  void reset_stats() override;
  EthLink link() override;
  int rx_interrupt_fd(uint16_t queue) const override;
  bool rx_interrupt_arm(uint16_t queue) override;
  void rx_interrupt_disarm(uint16_t queue) override;

  uint64_t negotiated_features() const { return features_; }

  Status save_state(std::vector<uint8_t>& out) override;
  void release_after_migration() override;
  // Migration's destination (EthPort::restore): `transport` opened for restore.
  static Result<std::unique_ptr<NetPort>> restore(Memory& mem, std::unique_ptr<Transport> transport,
                                                  std::span<const uint8_t> state);

 private:
  // Counters with one writer (the queue's lcore): a relaxed load and store, read anywhere.
  struct Counter {
    std::atomic<uint64_t> v{0};
    void add(uint64_t n) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    uint64_t get() const { return v.load(std::memory_order_relaxed); }
  };
  // Exactly one of split / packed is set, as VIRTIO_F_RING_PACKED was negotiated.
  struct alignas(64) RxQueue {
    std::unique_ptr<SplitVirtqueue> split;
    std::unique_ptr<PackedVirtqueue> packed;
    Doorbell bell;
    Mempool* pool = nullptr;
    int irq_fd = -1;
    Counter packets, bytes, errors, nombuf;
    uint64_t vq_errors_seen = 0;
  };
  struct alignas(64) TxQueue {
    std::unique_ptr<SplitVirtqueue> split;
    std::unique_ptr<PackedVirtqueue> packed;
    Doorbell bell;
    // Zeroed virtio_net_hdr per descriptor, for packets whose headroom we cannot use.
    NetHdr* hdrs = nullptr;
    uint64_t hdrs_iova = 0;
    Counter packets, bytes, errors, ring_full;
    uint64_t vq_errors_seen = 0;
  };

  NetPort(Memory& mem, std::unique_ptr<Transport> transport, bool use_ctrl_queue);
  Status negotiate();
  Status setup_queues();
  Status set_queue_pairs(uint16_t pairs);
  template <class Vq>
  Result<std::unique_ptr<Vq>> make_queue(uint16_t index, uint16_t wanted);
  template <class Vq>
  Status setup_queues_of();
  template <class Vq>
  Status send_ctrl(Vq& ctrl, uint16_t pairs);
  template <class Vq>
  void refill(Vq& vq, RxQueue& q);
  template <class Vq>
  void reclaim(Vq& vq, TxQueue& q);
  template <class Vq>
  uint16_t rx_burst_on(Vq& vq, RxQueue& q, Mbuf** pkts, uint16_t n);
  template <class Vq>
  uint16_t tx_burst_on(Vq& vq, TxQueue& q, Mbuf** pkts, uint16_t n);
  void release_queues();

  Memory& mem_;
  std::unique_ptr<Transport> transport_;
  bool use_ctrl_queue_;
  uint64_t features_ = 0;
  bool mergeable_ = false;
  bool event_idx_ = false;
  bool packed_ = false;
  uint16_t max_pairs_ = 1;
  uint16_t mtu_ = 1500;
  std::array<uint8_t, 6> mac_{};
  EthConfig config_;
  bool configured_ = false;
  bool started_ = false;
  bool needs_renegotiation_ = false;
  std::vector<std::unique_ptr<RxQueue>> rxq_;
  std::vector<std::unique_ptr<TxQueue>> txq_;
  std::unique_ptr<SplitVirtqueue> ctrl_split_;
  std::unique_ptr<PackedVirtqueue> ctrl_packed_;
  void* ctrl_buf_ = nullptr;
  bool released_ = false;  // migrated away: the device, rings and mbufs are another port's
};

}  // namespace uvio::virtio
