// Migration of a started virtio-net port: the driver's side of every queue, the
// negotiated features and the counters. Rings, mbufs and headers are runtime memory and
// move with it; the device's side (status, features, queue addresses, indexes, wrap
// counters) moves as its v2 state.
#include <uvio/log.h>

#include "lib/state_io.h"
#include "pmd/virtio/net.h"

#include <fmt/format.h>

namespace uvio::virtio {
namespace {

constexpr const char* kLog = "virtio-net";
constexpr uint32_t kStateMagic = 0x504e5655;  // "UVNP"
constexpr uint32_t kStateVersion = 1;
constexpr uint32_t kMaxPoolName = 256;
constexpr uint32_t kMaxTransportState = 1u << 20;

Status refuse(const std::string& why) { return Status::error(EINVAL, "virtio-net: port state refused: " + why); }

}  // namespace

void NetPort::release_after_migration() { released_ = true; }

Status NetPort::save_state(std::vector<uint8_t>& out) {
  if (!started_) return Status::error(EINVAL, fmt::format("{}: only a started port migrates", name()));
  std::vector<uint8_t> transport;
  UVIO_TRY(transport_->save_state(transport));
  StateWriter w(out);
  w.put(kStateMagic);
  w.put(kStateVersion);
  w.put<uint32_t>(static_cast<uint32_t>(transport.size()));
  for (uint8_t b : transport) w.put(b);
  w.put(features_);
  w.put(max_pairs_);
  w.put(mtu_);
  for (uint8_t b : mac_) w.put(b);
  w.put(config_.rx_queues);
  w.put(config_.tx_queues);
  w.put(config_.ring_size);
  w.put(config_.port_id);
  w.put_bool(config_.rx_interrupts);
  // The pool is found again by name and place: the destination restores it first.
  w.put_string(config_.rx_pool->name());
  w.put_address(config_.rx_pool->object(0));
  w.put_address(ctrl_buf_);
  w.put<uint32_t>(static_cast<uint32_t>(rxq_.size()));
  for (const auto& q : rxq_) {
    if (q->packed) q->packed->save_state(w);
    else q->split->save_state(w);
    for (const Counter* c : {&q->packets, &q->bytes, &q->errors, &q->nombuf}) w.put(c->get());
    w.put(q->vq_errors_seen);
  }
  w.put<uint32_t>(static_cast<uint32_t>(txq_.size()));
  for (const auto& q : txq_) {
    if (q->packed) q->packed->save_state(w);
    else q->split->save_state(w);
    w.put_address(q->hdrs);
    for (const Counter* c : {&q->packets, &q->bytes, &q->errors}) w.put(c->get());
    w.put(q->vq_errors_seen);
  }
  w.put_bool(ctrl_split_ || ctrl_packed_);
  if (ctrl_packed_) ctrl_packed_->save_state(w);
  else if (ctrl_split_) ctrl_split_->save_state(w);
  return Status::ok();
}

Result<std::unique_ptr<NetPort>> NetPort::restore(Memory& mem, std::unique_ptr<Transport> transport,
                                                  std::span<const uint8_t> state) {
  StateReader r(state);
  uint32_t magic = 0, version = 0, transport_bytes = 0;
  if (!r.get(&magic) || magic != kStateMagic) return refuse("not a virtio-net port state (bad magic)");
  if (!r.get(&version) || version != kStateVersion)
    return refuse(fmt::format("format version {} is not the supported version {}", version, kStateVersion));
  r.get(&transport_bytes);
  if (!r.ok() || transport_bytes > kMaxTransportState || !r.has_room(transport_bytes, 1))
    return refuse("truncated transport state");
  std::vector<uint8_t> transport_state(transport_bytes);
  for (uint8_t& b : transport_state) r.get(&b);

  std::unique_ptr<NetPort> port(new NetPort(mem, std::move(transport), true));
  // Until every queue is adopted, the rings and mbufs are not this object's to free.
  port->released_ = true;
  NetPort& p = *port;
  r.get(&p.features_);
  r.get(&p.max_pairs_);
  r.get(&p.mtu_);
  for (uint8_t& b : p.mac_) r.get(&b);
  EthConfig& c = p.config_;
  r.get(&c.rx_queues);
  r.get(&c.tx_queues);
  r.get(&c.ring_size);
  r.get(&c.port_id);
  r.get_bool(&c.rx_interrupts);
  std::string pool_name;
  void* pool_base = nullptr;
  r.get_string(&pool_name, kMaxPoolName);
  r.get_address(&pool_base);
  r.get_address(&p.ctrl_buf_);
  if (!r.ok()) return refuse("truncated port header");
  if (p.features_ & ~kNetWantedFeatures)
    return refuse(fmt::format("features {:#x} include some this driver never accepts", p.features_));
  if (!(p.features_ & feature_bit(kFVersion1))) return refuse("VIRTIO_F_VERSION_1 was not negotiated");
  p.mergeable_ = p.features_ & feature_bit(kFNetMrgRxbuf);
  p.packed_ = p.features_ & feature_bit(kFRingPacked);
  p.event_idx_ = p.features_ & feature_bit(kFEventIdx);
  uint16_t pairs = std::max(c.rx_queues, c.tx_queues);
  if (c.rx_queues == 0 || c.tx_queues == 0 || pairs > p.max_pairs_ || p.max_pairs_ == 0 || p.max_pairs_ > 0x8000)
    return refuse(fmt::format("{} RX and {} TX queues of {} pairs", c.rx_queues, c.tx_queues, p.max_pairs_));
  Mempool* pool = Mempool::owner_of(pool_base);
  if (!pool || pool->object(0) != pool_base || pool->name() != pool_name)
    return Status::error(ENOENT, fmt::format("virtio-net: the RX pool '{}' at {} has not been restored; restore the "
                                             "mbuf pools before the ports",
                                             pool_name, pool_base));
  if (pool->object_size() < sizeof(Mbuf) + kMbufHeadroom + 64)
    return refuse(fmt::format("pool {} does not hold mbufs", pool_name));
  c.rx_pool = pool;
  if (!mem.contains(p.ctrl_buf_) || !mem.contains(static_cast<std::byte*>(p.ctrl_buf_) + 63))
    return refuse("the control buffer is not in runtime memory");

  // What a queue may hold in flight: RX, mbufs of the RX pool; TX, the head mbuf of a
  // packet from any restored pool; the control queue, its own buffer.
  auto rx_cookie = [pool](void* cookie) { return Mempool::owner_of(cookie) == pool; };
  auto tx_cookie = [](void* cookie) { return Mempool::owner_of(cookie) != nullptr; };
  void* ctrl_buf = p.ctrl_buf_;
  auto ctrl_cookie = [ctrl_buf](void* cookie) { return cookie == ctrl_buf; };
  auto read_queue = [&](RxQueue* rq, TxQueue* tq, uint16_t expected_index,
                        const std::function<bool(void*)>& ok) -> Status {
    auto set = [&](auto&& vq) -> Status {
      if (!vq) return vq.status();
      if ((*vq)->layout().index != expected_index)
        return refuse(fmt::format("queue {} found where queue {} belongs", (*vq)->layout().index, expected_index));
      if (rq) {
        if constexpr (std::is_same_v<std::decay_t<decltype(**vq)>, PackedVirtqueue>) rq->packed = std::move(*vq);
        else rq->split = std::move(*vq);
      } else if constexpr (std::is_same_v<std::decay_t<decltype(**vq)>, PackedVirtqueue>) {
        tq->packed = std::move(*vq);
      } else {
        tq->split = std::move(*vq);
      }
      return Status::ok();
    };
    if (p.packed_) return set(PackedVirtqueue::restore(mem, r, ok));
    return set(SplitVirtqueue::restore(mem, r, ok));
  };

  uint32_t rx_count = 0;
  r.get(&rx_count);
  if (!r.ok() || rx_count != pairs) return refuse(fmt::format("{} RX queues saved for {} pairs", rx_count, pairs));
  for (uint32_t i = 0; i < rx_count; i++) {
    auto q = std::make_unique<RxQueue>();
    UVIO_TRY(read_queue(q.get(), nullptr, static_cast<uint16_t>(2 * i), rx_cookie));
    q->pool = pool;
    uint64_t v[4] = {};
    for (uint64_t& x : v) r.get(&x);
    r.get(&q->vq_errors_seen);
    if (!r.ok()) return refuse("truncated RX counters");
    q->packets.v = v[0];
    q->bytes.v = v[1];
    q->errors.v = v[2];
    q->nombuf.v = v[3];
    p.rxq_.push_back(std::move(q));
  }
  uint32_t tx_count = 0;
  r.get(&tx_count);
  if (!r.ok() || tx_count != pairs) return refuse(fmt::format("{} TX queues saved for {} pairs", tx_count, pairs));
  for (uint32_t i = 0; i < tx_count; i++) {
    auto q = std::make_unique<TxQueue>();
    UVIO_TRY(read_queue(nullptr, q.get(), static_cast<uint16_t>(2 * i + 1), tx_cookie));
    r.get_address(&q->hdrs);
    uint64_t v[3] = {};
    for (uint64_t& x : v) r.get(&x);
    r.get(&q->vq_errors_seen);
    if (!r.ok()) return refuse("truncated TX counters");
    if (!mem.contains(q->hdrs) || !mem.contains(reinterpret_cast<std::byte*>(q->hdrs + 1) - 1))
      return refuse("a TX header is not in runtime memory");
    q->hdrs_iova = mem.iova_of(q->hdrs);
    q->packets.v = v[0];
    q->bytes.v = v[1];
    q->errors.v = v[2];
    p.txq_.push_back(std::move(q));
  }
  bool has_ctrl = false;
  r.get_bool(&has_ctrl);
  if (!r.ok()) return refuse("truncated control queue");
  if (has_ctrl != bool(p.features_ & feature_bit(kFNetCtrlVq)))
    return refuse("a control queue saved without VIRTIO_NET_F_CTRL_VQ, or missing with it");
  if (has_ctrl) {
    uint16_t index = (p.features_ & feature_bit(kFNetMq)) ? static_cast<uint16_t>(2 * p.max_pairs_) : 2;
    if (p.packed_) {
      auto vq = PackedVirtqueue::restore(mem, r, ctrl_cookie);
      if (!vq) return vq.status();
      if ((*vq)->layout().index != index || (*vq)->in_flight()) return refuse("the control queue is not idle");
      p.ctrl_packed_ = std::move(*vq);
    } else {
      auto vq = SplitVirtqueue::restore(mem, r, ctrl_cookie);
      if (!vq) return vq.status();
      if ((*vq)->layout().index != index || (*vq)->in_flight()) return refuse("the control queue is not idle");
      p.ctrl_split_ = std::move(*vq);
    }
  }
  if (r.left() != 0) return refuse(fmt::format("{} bytes after the control queue", r.left()));

  // The state is whole; the transport takes its part, then the doorbells and interrupt
  // eventfds (this process's) are found again.
  UVIO_TRY(p.transport_->load_state(transport_state));
  for (uint32_t i = 0; i < rx_count; i++) {
    RxQueue& q = *p.rxq_[i];
    q.bell = p.transport_->doorbell(static_cast<uint16_t>(2 * i));
    q.irq_fd = c.rx_interrupts ? p.transport_->interrupt_fd(static_cast<uint16_t>(2 * i)) : -1;
  }
  for (uint32_t i = 0; i < tx_count; i++) p.txq_[i]->bell = p.transport_->doorbell(static_cast<uint16_t>(2 * i + 1));
  p.configured_ = true;
  p.started_ = true;
  p.needs_renegotiation_ = true;
  p.released_ = false;
  UVIO_LOG(Info, kLog, "{}: restored: features {:#x}, {} queue pair(s), {} ring", p.name(), p.features_, pairs,
           p.packed_ ? "packed" : "split");
  return port;
}

}  // namespace uvio::virtio
