#include "pmd/virtio/net.h"

#include <uvio/log.h>

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <thread>
#include <type_traits>

namespace uvio::virtio {
namespace {

constexpr const char* kLog = "virtio-net";
constexpr uint16_t kHdr = sizeof(NetHdr);
// RX descriptors are given back to the device in batches of at least this many, TX
// descriptors reclaimed once fewer than this many are free: one doorbell and one
// mempool call per batch instead of per packet.
constexpr uint16_t kRxRefillBatch = 32;
constexpr uint16_t kTxReclaimThreshold = 32;
constexpr uint16_t kBulk = 64;
// Chains longer than this are refused on TX (the descriptors come from a stack array).
constexpr uint16_t kMaxTxSegments = 16;
constexpr uint16_t kCtrlQueueSize = 64;

}  // namespace

NetPort::NetPort(Memory& mem, std::unique_ptr<Transport> transport, bool use_ctrl_queue)
    : mem_(mem), transport_(std::move(transport)), use_ctrl_queue_(use_ctrl_queue) {}

NetPort::~NetPort() {
  if (released_) {
    for (auto& q : rxq_) {
      if (q->split) q->split->release_memory();
      if (q->packed) q->packed->release_memory();
    }
    for (auto& q : txq_) {
      if (q->split) q->split->release_memory();
      if (q->packed) q->packed->release_memory();
    }
    if (ctrl_split_) ctrl_split_->release_memory();
    if (ctrl_packed_) ctrl_packed_->release_memory();
    return;
  }
  stop();
  if (ctrl_buf_) mem_.free(ctrl_buf_);
}

Result<std::unique_ptr<NetPort>> NetPort::create(Memory& mem, std::unique_ptr<Transport> transport,
                                                 bool use_ctrl_queue, uint16_t fixed_pairs) {
  std::unique_ptr<NetPort> port(new NetPort(mem, std::move(transport), use_ctrl_queue));
  UVIO_TRY(port->negotiate());
  if (fixed_pairs) port->max_pairs_ = fixed_pairs;
  port->ctrl_buf_ = mem.alloc(64, 64);
  if (!port->ctrl_buf_) return Status::error(ENOMEM, "no DMA memory for the control queue buffer: raise -m");
  return port;
}

// §3.1.1 steps 1-6 and §5.1.5: features, then the device configuration.
Status NetPort::negotiate() {
  UVIO_TRY(transport_->reset());
  auto offered = transport_->device_features();
  if (!offered) return offered.status();
  if (!(*offered & feature_bit(kFVersion1)))
    return Status::error(ENOTSUP, fmt::format("{}: device does not offer VIRTIO_F_VERSION_1; legacy virtio "
                                              "devices are not supported",
                                              name()));
  uint64_t wanted = kNetWantedFeatures;
  if (!use_ctrl_queue_) wanted &= ~(feature_bit(kFNetCtrlVq) | feature_bit(kFNetMq));
  // ACCESS_PLATFORM: the device translates our addresses through an IOMMU. Behind
  // VFIO it must be accepted when offered; vhost-user would need IOTLB messages.
  if (!transport_->behind_iommu()) wanted &= ~feature_bit(kFAccessPlatform);
  features_ = *offered & wanted;
  UVIO_TRY(transport_->set_features(features_));
  mergeable_ = features_ & feature_bit(kFNetMrgRxbuf);
  packed_ = features_ & feature_bit(kFRingPacked);
  event_idx_ = features_ & feature_bit(kFEventIdx);

  if (features_ & feature_bit(kFNetMac)) {
    UVIO_TRY(transport_->read_config(netcfg::kMac, mac_.data(), mac_.size()));
  } else {
    // A locally administered unicast address, the same for the life of the port.
    mac_ = {0x02, 0x75, 0x76, 0x69, 0x6f, static_cast<uint8_t>(reinterpret_cast<uintptr_t>(this) >> 6)};
  }
  max_pairs_ = 1;
  if (features_ & feature_bit(kFNetMq)) {
    uint16_t pairs = 0;
    UVIO_TRY(transport_->read_config(netcfg::kMaxVirtqueuePairs, &pairs, sizeof(pairs)));
    // §5.1.4: 1..0x8000; anything else is a broken device.
    if (pairs < 1 || pairs > 0x8000)
      return Status::error(EPROTO, fmt::format("{}: max_virtqueue_pairs {} is outside 1..32768", name(), pairs));
    max_pairs_ = pairs;
  }
  if (features_ & feature_bit(kFNetMtu)) {
    uint16_t mtu = 0;
    UVIO_TRY(transport_->read_config(netcfg::kMtu, &mtu, sizeof(mtu)));
    mtu_ = mtu;
  }
  UVIO_LOG(Info, kLog, "{}: features {:#x} (offered {:#x}), {} queue pairs, mtu {}", name(), features_, *offered,
           max_pairs_, mtu_);
  return Status::ok();
}

Status NetPort::configure(const EthConfig& config) {
  if (started_) return Status::error(EBUSY, fmt::format("{}: stop the port before configuring it", name()));
  if (!config.rx_pool) return Status::error(EINVAL, fmt::format("{}: configure needs an RX mempool", name()));
  if (config.rx_queues == 0 || config.tx_queues == 0)
    return Status::error(EINVAL, fmt::format("{}: at least one RX and one TX queue are needed", name()));
  uint16_t pairs = std::max(config.rx_queues, config.tx_queues);
  if (pairs > max_pairs_)
    return Status::error(EINVAL, fmt::format("{}: {} queues asked, the device has {} queue pairs", name(), pairs,
                                             max_pairs_));
  if (config.ring_size < 2)
    return Status::error(EINVAL, fmt::format("{}: ring size {} is below 2", name(), config.ring_size));
  if (config.rx_pool->object_size() < sizeof(Mbuf) + kMbufHeadroom + 64)
    return Status::error(EINVAL, fmt::format("{}: pool {} does not hold mbufs", name(), config.rx_pool->name()));
  config_ = config;
  configured_ = true;
  return Status::ok();
}

template <class Vq>
Result<std::unique_ptr<Vq>> NetPort::make_queue(uint16_t index, uint16_t wanted) {
  auto max = transport_->max_queue_size(index);
  if (!max) return max.status();
  if (*max == 0) return Status::error(ENODEV, fmt::format("{}: device has no queue {}", name(), index));
  uint16_t size = std::bit_floor(std::min(wanted, *max));
  return Vq::create(mem_, index, size, event_idx_);
}

template <class Vq>
Status NetPort::setup_queues_of() {
  constexpr bool kPacked = std::is_same_v<Vq, PackedVirtqueue>;
  auto slot = [](auto& q) -> std::unique_ptr<Vq>& {
    if constexpr (kPacked) return q.packed;
    else return q.split;
  };
  uint16_t pairs = std::max(config_.rx_queues, config_.tx_queues);
  for (uint16_t i = 0; i < pairs; i++) {
    auto rq = std::make_unique<RxQueue>();
    auto vq = make_queue<Vq>(static_cast<uint16_t>(2 * i), config_.ring_size);
    if (!vq) return vq.status();
    slot(*rq) = std::move(*vq);
    rq->pool = config_.rx_pool;
    UVIO_TRY(transport_->setup_queue(slot(*rq)->layout(), config_.rx_interrupts));
    rq->bell = transport_->doorbell(static_cast<uint16_t>(2 * i));
    rq->irq_fd = config_.rx_interrupts ? transport_->interrupt_fd(static_cast<uint16_t>(2 * i)) : -1;
    rxq_.push_back(std::move(rq));

    auto tq = std::make_unique<TxQueue>();
    vq = make_queue<Vq>(static_cast<uint16_t>(2 * i + 1), config_.ring_size);
    if (!vq) return vq.status();
    slot(*tq) = std::move(*vq);
    tq->hdrs = static_cast<NetHdr*>(mem_.alloc(sizeof(NetHdr), 64));
    if (!tq->hdrs) return Status::error(ENOMEM, "no DMA memory for the TX header: raise -m");
    std::memset(tq->hdrs, 0, sizeof(NetHdr));
    tq->hdrs_iova = mem_.iova_of(tq->hdrs);
    txq_.push_back(std::move(tq));
    UVIO_TRY(transport_->setup_queue(slot(*txq_.back())->layout(), false));
    txq_.back()->bell = transport_->doorbell(static_cast<uint16_t>(2 * i + 1));
  }
  if (features_ & feature_bit(kFNetCtrlVq)) {
    // §5.1.2: the control queue follows all max_virtqueue_pairs pairs with MQ, else pair 0.
    uint16_t index = (features_ & feature_bit(kFNetMq)) ? static_cast<uint16_t>(2 * max_pairs_) : 2;
    auto vq = make_queue<Vq>(index, kCtrlQueueSize);
    if (!vq) return vq.status();
    UVIO_TRY(transport_->setup_queue((*vq)->layout(), false));
    if constexpr (kPacked) ctrl_packed_ = std::move(*vq);
    else ctrl_split_ = std::move(*vq);
  }
  return Status::ok();
}

Status NetPort::setup_queues() {
  return packed_ ? setup_queues_of<PackedVirtqueue>() : setup_queues_of<SplitVirtqueue>();
}

// §5.1.6.5.5: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, the device then steers to `pairs`.
Status NetPort::set_queue_pairs(uint16_t pairs) {
  if (ctrl_packed_) return send_ctrl(*ctrl_packed_, pairs);
  if (ctrl_split_) return send_ctrl(*ctrl_split_, pairs);
  return Status::error(ENOTSUP, fmt::format("{}: no control queue to set queue pairs", name()));
}

template <class Vq>
Status NetPort::send_ctrl(Vq& ctrl, uint16_t pairs) {
  auto* buf = static_cast<uint8_t*>(ctrl_buf_);
  uint64_t iova = mem_.iova_of(buf);
  buf[0] = kCtrlClassMq;
  buf[1] = kCtrlMqVqPairsSet;
  std::memcpy(buf + 2, &pairs, 2);
  buf[16] = 0xFF;
  BufferRef bufs[] = {{iova, 2, false}, {iova + 2, 2, false}, {iova + 16, 1, true}};
  if (!ctrl.add(bufs, 3, buf, 1)) return Status::error(EBUSY, "control queue is full");
  ctrl.publish();
  ctrl.kick_needed();
  transport_->doorbell(ctrl.layout().index).ring();
  for (int i = 0; i < 100000; i++) {
    if (ctrl.used_pending() > 0) {
      void* back = ctrl.take_used();
      uint8_t ack = std::atomic_ref<uint8_t>(buf[16]).load(std::memory_order_acquire);
      if (back != buf) return Status::error(EPROTO, fmt::format("{}: control queue returned a bad id", name()));
      if (ack != kCtrlOk)
        return Status::error(EIO, fmt::format("{}: device refused {} queue pairs (ack {})", name(), pairs, ack));
      return Status::ok();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(10));
  }
  return Status::error(ETIMEDOUT, fmt::format("{}: control command got no answer within 1 s", name()));
}

Status NetPort::start() {
  if (!configured_) return Status::error(EINVAL, fmt::format("{}: configure the port before starting it", name()));
  if (started_) return Status::ok();
  if (needs_renegotiation_) UVIO_TRY(negotiate());
  needs_renegotiation_ = true;
  Status s = setup_queues();
  if (s) s = transport_->driver_ok();
  uint16_t pairs = std::max(config_.rx_queues, config_.tx_queues);
  if (s && (features_ & feature_bit(kFNetMq)) && pairs != 1) s = set_queue_pairs(pairs);
  if (s) {
    for (auto& q : rxq_) {
      uint16_t posted;
      if (q->packed) {
        refill(*q->packed, *q);
        posted = q->packed->in_flight();
      } else {
        refill(*q->split, *q);
        posted = q->split->in_flight();
      }
      if (posted == 0) {
        s = Status::error(ENOMEM, fmt::format("{}: pool {} has no mbufs left to fill the RX rings", name(),
                                              q->pool->name()));
        break;
      }
    }
  }
  if (!s) {
    (void)transport_->reset();
    release_queues();
    return s;
  }
  started_ = true;
  return Status::ok();
}

void NetPort::release_queues() {
  auto give_back = [](void* c) { mbuf_free(static_cast<Mbuf*>(c)); };
  for (auto& q : rxq_) {
    if (q->split) q->split->drain(give_back);
    if (q->packed) q->packed->drain(give_back);
  }
  for (auto& q : txq_) {
    if (q->split) q->split->drain(give_back);
    if (q->packed) q->packed->drain(give_back);
    if (q->hdrs) mem_.free(q->hdrs);
  }
  rxq_.clear();
  txq_.clear();
  ctrl_split_.reset();
  ctrl_packed_.reset();
}

void NetPort::stop() {
  if (!started_) return;
  // After the reset the device touches none of the buffers (§2.1), so they can go back.
  if (Status s = transport_->reset(); !s) UVIO_LOG(Err, kLog, "{}: reset on stop failed: {}", name(), s.describe());
  release_queues();
  started_ = false;
}

template <class Vq>
void NetPort::refill(Vq& vq, RxQueue& q) {
  uint16_t free = vq.free_descriptors();
  // Small rings refill at half empty rather than waiting for a full batch.
  if (free < std::min<uint16_t>(kRxRefillBatch, vq.size() / 2) && vq.in_flight() != 0) return;
  Mbuf* bufs[kBulk];
  uint16_t added = 0;
  while (free > 0) {
    uint16_t n = std::min(free, kBulk);
    if (!mbuf_alloc_bulk(*q.pool, bufs, n)) {
      q.nombuf.add(n);
      break;
    }
    for (uint16_t i = 0; i < n; i++) {
      Mbuf* m = bufs[i];
      // The device writes the virtio_net_hdr into the headroom, the frame at data_off.
      uint32_t len = static_cast<uint32_t>(m->buf_len - m->data_off) + kHdr;
      BufferRef b{m->data_iova() - kHdr, len, true};
      vq.add(&b, 1, m, len);
    }
    free = static_cast<uint16_t>(free - n);
    added = static_cast<uint16_t>(added + n);
  }
  if (added == 0) return;
  vq.publish();
  if (vq.kick_needed()) q.bell.ring();
}

uint16_t NetPort::rx_burst(uint16_t queue, Mbuf** pkts, uint16_t n) {
  if (queue >= rxq_.size()) return 0;
  RxQueue& q = *rxq_[queue];
  return q.packed ? rx_burst_on(*q.packed, q, pkts, n) : rx_burst_on(*q.split, q, pkts, n);
}

template <class Vq>
uint16_t NetPort::rx_burst_on(Vq& vq, RxQueue& q, Mbuf** pkts, uint16_t n) {
  uint16_t pending = vq.used_pending();
  uint16_t got = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  Mbuf* bad[kBulk];
  uint16_t nbad = 0;
  auto discard = [&](Mbuf* m) {
    errors++;
    if (nbad == kBulk) {
      mbuf_free_bulk(bad, nbad);
      nbad = 0;
    }
    bad[nbad++] = m;
  };

  while (got < n && pending > 0) {
    VirtqUsedElem e = vq.peek_used(0);
    auto* m = static_cast<Mbuf*>(vq.cookie_of(e.id));
    if (!m) {  // out of range, or not in flight (repeated or invented)
      vq.skip_used();
      pending--;
      errors++;
      continue;
    }
    if (e.len < kHdr || e.len > vq.writable_len_of(e.id)) {
      vq.skip_used();
      vq.release(static_cast<uint16_t>(e.id));
      pending--;
      discard(m);
      continue;
    }
    uint16_t nbufs = 1;
    if (mergeable_) {
      // §5.1.6.4: num_buffers counts the buffers this packet spans.
      nbufs = reinterpret_cast<const NetHdr*>(m->data() - kHdr)->num_buffers;
      if (nbufs == 0 || nbufs > vq.size()) {
        vq.skip_used();
        vq.release(static_cast<uint16_t>(e.id));
        pending--;
        discard(m);
        continue;
      }
      if (nbufs > pending) break;  // the rest of the packet is not back yet
    }
    vq.skip_used();
    vq.release(static_cast<uint16_t>(e.id));
    pending--;
    m->data_len = static_cast<uint16_t>(e.len - kHdr);
    m->pkt_len = m->data_len;
    m->port = config_.port_id;
    Mbuf* last = m;
    bool ok = true;
    for (uint16_t k = 1; k < nbufs; k++) {
      VirtqUsedElem s = vq.peek_used(0);
      auto* seg = static_cast<Mbuf*>(vq.cookie_of(s.id));
      vq.skip_used();
      pending--;
      if (!seg) {
        ok = false;
        continue;
      }
      vq.release(static_cast<uint16_t>(s.id));
      // Later buffers carry frame bytes from their first byte, where we put the header.
      seg->data_off = static_cast<uint16_t>(seg->data_off - kHdr);
      if (s.len > vq.writable_len_of(s.id) || s.len > uint32_t{seg->buf_len} - seg->data_off) {
        mbuf_free(seg);
        ok = false;
        continue;
      }
      seg->data_len = static_cast<uint16_t>(s.len);
      last->next = seg;
      last = seg;
      m->nb_segs++;
      m->pkt_len += s.len;
    }
    if (!ok) {
      discard(m);
      continue;
    }
    bytes += m->pkt_len;
    pkts[got++] = m;
  }
  if (nbad) mbuf_free_bulk(bad, nbad);
  if (vq.errors() != q.vq_errors_seen) {
    errors += vq.errors() - q.vq_errors_seen;
    q.vq_errors_seen = vq.errors();
  }
  if (errors) q.errors.add(errors);
  if (got) {
    q.packets.add(got);
    q.bytes.add(bytes);
  }
  refill(vq, q);
  return got;
}

template <class Vq>
void NetPort::reclaim(Vq& vq, TxQueue& q) {
  uint16_t pending = vq.used_pending();
  Mbuf* done[kBulk];
  uint16_t k = 0;
  while (pending--) {
    void* c = vq.take_used();
    if (!c) continue;  // counted by the virtqueue
    done[k++] = static_cast<Mbuf*>(c);
    if (k == kBulk) {
      mbuf_free_bulk(done, k);
      k = 0;
    }
  }
  if (k) mbuf_free_bulk(done, k);
  if (vq.errors() != q.vq_errors_seen) {
    q.errors.add(vq.errors() - q.vq_errors_seen);
    q.vq_errors_seen = vq.errors();
  }
}

uint16_t NetPort::tx_burst(uint16_t queue, Mbuf** pkts, uint16_t n) {
  if (queue >= txq_.size()) return 0;
  TxQueue& q = *txq_[queue];
  return q.packed ? tx_burst_on(*q.packed, q, pkts, n) : tx_burst_on(*q.split, q, pkts, n);
}

template <class Vq>
uint16_t NetPort::tx_burst_on(Vq& vq, TxQueue& q, Mbuf** pkts, uint16_t n) {
  if (vq.free_descriptors() < std::max(n, kTxReclaimThreshold)) reclaim(vq, q);
  uint16_t sent = 0;
  uint64_t bytes = 0;
  uint64_t refused = 0;
  BufferRef bufs[kMaxTxSegments + 1];
  for (; sent < n; sent++) {
    Mbuf* m = pkts[sent];
    uint16_t count;
    if (m->nb_segs == 1 && m->data_off >= kHdr && m->refcnt == 1) {
      // §5.1.6.2: header and frame in one descriptor; no offloads, so the header is 0.
      std::memset(m->data() - kHdr, 0, kHdr);
      bufs[0] = {m->data_iova() - kHdr, uint32_t{m->data_len} + kHdr, false};
      count = 1;
    } else {
      if (m->nb_segs > kMaxTxSegments) {
        // Never sendable: count it and let it go rather than block the queue.
        refused++;
        mbuf_free(m);
        continue;
      }
      bufs[0] = {q.hdrs_iova, kHdr, false};
      count = 1;
      for (Mbuf* s = m; s && count <= kMaxTxSegments; s = s->next) bufs[count++] = {s->data_iova(), s->data_len, false};
    }
    if (!vq.add(bufs, count, m, 0)) break;
    bytes += m->pkt_len;
  }
  if (sent) {
    vq.publish();
    if (vq.kick_needed()) q.bell.ring();
    q.packets.add(sent - refused);
    q.bytes.add(bytes);
  }
  if (refused) q.errors.add(refused);
  if (sent < n) q.ring_full.add(n - sent);
  return sent;
}

EthStats NetPort::stats() const {
  EthStats s;
  for (const auto& q : rxq_) {
    s.rx_packets += q->packets.get();
    s.rx_bytes += q->bytes.get();
    s.rx_errors += q->errors.get();
    s.rx_nombuf += q->nombuf.get();
  }
  for (const auto& q : txq_) {
    s.tx_packets += q->packets.get();
    s.tx_bytes += q->bytes.get();
    s.tx_errors += q->errors.get();
    s.tx_ring_full += q->ring_full.get();
  }
  return s;
}

void NetPort::reset_stats() {
  for (auto& q : rxq_) {
    for (Counter* c : {&q->packets, &q->bytes, &q->errors, &q->nombuf}) c->v.store(0, std::memory_order_relaxed);
  }
  for (auto& q : txq_) {
    for (Counter* c : {&q->packets, &q->bytes, &q->errors, &q->ring_full}) c->v.store(0, std::memory_order_relaxed);
  }
}

EthLink NetPort::link() {
  EthLink l;
  l.mtu = mtu_;
  l.up = true;
  if (features_ & feature_bit(kFNetStatus)) {
    uint16_t status = 0;
    if (!transport_->read_config(netcfg::kStatus, &status, sizeof(status))) return EthLink{false, mtu_};
    l.up = status & kNetSLinkUp;
  }
  if (auto device_status = transport_->status(); device_status && (*device_status & kStatusNeedsReset)) {
    l.needs_reset = true;
    l.up = false;
  }
  return l;
}

int NetPort::rx_interrupt_fd(uint16_t queue) const { return queue < rxq_.size() ? rxq_[queue]->irq_fd : -1; }

bool NetPort::rx_interrupt_arm(uint16_t queue) {
  if (queue >= rxq_.size()) return false;
  RxQueue& q = *rxq_[queue];
  return q.packed ? q.packed->arm_interrupt() : q.split->arm_interrupt();
}

void NetPort::rx_interrupt_disarm(uint16_t queue) {
  if (queue >= rxq_.size()) return;
  RxQueue& q = *rxq_[queue];
  if (q.packed) q.packed->disarm_interrupt();
  else q.split->disarm_interrupt();
}

}  // namespace uvio::virtio
