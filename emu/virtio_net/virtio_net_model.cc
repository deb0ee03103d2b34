#include "emu/virtio_net/virtio_net_model.h"

#include <uvio/log.h>

#include <algorithm>
#include <cstring>

namespace uvio::emu::virtio_net {
namespace {

constexpr const char* kLog = "virtio-net";
// Chains handled per queue per poll, so one busy queue cannot starve the others.
constexpr uint16_t kBudget = 256;

template <class T>
void put(std::byte* at, T value) {
  std::memcpy(at, &value, sizeof(value));
}

}  // namespace

VirtioNetModel::VirtioNetModel(const Options& options) : options_(options) {
  using namespace spec;
  offered_features_ = bit(kFVersion1) | bit(kFAccessPlatform) | bit(kFMac) | bit(kFStatus) | bit(kFMtu) |
                      bit(kFMrgRxbuf) | bit(kFCtrlVq) | bit(kFCtrlRx) | bit(kFCtrlMacAddr) | bit(kFMq);
  if (options.event_idx) offered_features_ |= bit(kFEventIdx);
  if (options.indirect) offered_features_ |= bit(kFIndirectDesc);
  if (options.packed) offered_features_ |= bit(kFRingPacked);
  max_frame_ = uint32_t{options.mtu} + kEthHeader + kVlanTag;

  // §5.1.2: receiveq/transmitq pairs, then the control queue.
  queues_.resize(2u * options.queue_pairs + 1);
  pending_.assign(queues_.size(), 0);
  chain_.segments.reserve(options.queue_size + kMaxIndirectDescs);
  rx_first_.segments.reserve(options.queue_size + kMaxIndirectDescs);
  rx_used_.reserve(options.queue_size);
  reset();
}

Result<std::unique_ptr<VirtioNetModel>> VirtioNetModel::create(const Options& options) {
  if (options.queue_pairs == 0 || options.queue_pairs > kMaxQueuePairs)
    return Status::error(EINVAL, "virtio-net: queues must be from 1 to 32");
  std::unique_ptr<VirtioNetModel> model(new VirtioNetModel(options));
  if (options.loopback) {
    model->use_link(Link::loopback(options.queue_pairs, model->max_frame_), 0);
  } else if (!options.peer.empty()) {
    auto joined = Link::join(options.peer, options.queue_pairs, model->max_frame_);
    if (!joined) return joined.status();
    model->use_link(joined->first, joined->second);
  }
  return model;
}

void VirtioNetModel::connect(VirtioNetModel& a, VirtioNetModel& b) {
  auto link = Link::back_to_back(std::max(a.options_.queue_pairs, b.options_.queue_pairs),
                                 std::max(a.max_frame_, b.max_frame_));
  a.use_link(link, 0);
  b.use_link(link, 1);
}

void VirtioNetModel::use_link(std::shared_ptr<Link> link, int end) {
  if (link_) link_->leave(link_end_);
  link_ = std::move(link);
  link_end_ = end;
  overflow_seen_.assign(link_->queue_pairs(), 0);
  for (uint32_t r = 0; r < link_->queue_pairs(); r++) {
    link_->rx_ring(link_end_, r).clear();  // frames left by a previous port on this end
    overflow_seen_[r] = link_->rx_ring(link_end_, r).overflow();
  }
}

VirtioNetModel::~VirtioNetModel() {
  if (link_) link_->leave(link_end_);
}

PciIdentity VirtioNetModel::identity() const {
  PciIdentity id;
  id.vendor_id = spec::kVendorId;
  id.device_id = spec::kDeviceId;
  id.subsystem_vendor_id = spec::kVendorId;
  id.subsystem_id = spec::kSubsystemId;
  id.revision = spec::kRevision;
  id.class_code = spec::kClassEthernet;
  return id;
}

std::vector<BarLayout> VirtioNetModel::bars() const {
  BarLayout regs;
  regs.index = kBar;
  regs.size = kBarSize;
  regs.shared.push_back(iommu::SparseArea{kNotifyOffset, kNotifySize});
  BarLayout msix_bar;
  msix_bar.index = kMsixBar;
  msix_bar.size = kMsixBarSize;
  return {regs, msix_bar};
}

MsixLayout VirtioNetModel::msix() const {
  MsixLayout layout;
  layout.vectors = msix_vectors();
  layout.bar = kMsixBar;
  layout.table_offset = kMsixTableOffset;
  layout.pba_offset = kMsixPbaOffset;
  return layout;
}

std::vector<PciCapability> VirtioNetModel::capabilities() const {
  // §4.1.4: struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar, id,
  // padding[2], le32 offset, le32 length; the notify capability appends le32
  // notify_off_multiplier (§4.1.4.4).
  auto cap = [](uint8_t cfg_type, uint64_t offset, uint32_t length, bool notify) {
    PciCapability c;
    c.id = spec::kPciCapVendor;
    uint8_t cap_len = notify ? 20 : 16;
    c.body.assign(cap_len - 2, 0);
    c.body[0] = cap_len;
    c.body[1] = cfg_type;
    c.body[2] = static_cast<uint8_t>(kBar);
    auto put32 = [&](size_t at, uint32_t v) {
      for (int i = 0; i < 4; i++) c.body[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put32(6, static_cast<uint32_t>(offset));
    put32(10, length);
    if (notify) put32(14, kNotifyOffMultiplier);
    return c;
  };
  return {
      cap(spec::kCapCommonCfg, kCommonOffset, spec::common::kSize, false),
      cap(spec::kCapNotifyCfg, kNotifyOffset, kNotifyOffMultiplier * num_queues(), true),
      cap(spec::kCapIsrCfg, kIsrOffset, 1, false),
      cap(spec::kCapDeviceCfg, kDeviceCfgOffset, spec::netcfg::kSize, false),
  };
}

void VirtioNetModel::attach(DmaAccess& dma, IrqSink& irq, std::span<std::byte* const> shared) {
  dma_ = &dma;
  irq_ = &irq;
  notify_ = (!shared.empty() && shared[0] != nullptr) ? shared[0] + kNotifyOffset : nullptr;
  if (notify_) {
    for (uint16_t q = 0; q < num_queues(); q++)
      std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(notify_ + q * kNotifyOffMultiplier))
          .store(kNotifyIdle, std::memory_order_relaxed);
  }
}

void VirtioNetModel::reset() {
  device_feature_select_ = driver_feature_select_ = 0;
  driver_features_ = 0;
  status_ = 0;
  isr_ = 0;
  rx_mode_ = 0;
  msix_config_ = spec::kNoVector;
  queue_select_ = 0;
  curr_pairs_ = 1;
  mac_ = options_.mac;
  faults_armed_ = 0;
  link_up_reported_ = link_up();
  for (auto& q : queues_) q.reset(options_.queue_size);
  std::fill(pending_.begin(), pending_.end(), 0);
  // Frames that arrived for the previous driver are not the new one's.
  if (link_) {
    for (uint32_t r = 0; r < link_->queue_pairs(); r++) {
      link_->rx_ring(link_end_, r).clear();
      overflow_seen_[r] = link_->rx_ring(link_end_, r).overflow();
    }
  }
  if (notify_) {
    for (uint16_t q = 0; q < num_queues(); q++)
      std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(notify_ + q * kNotifyOffMultiplier))
          .store(kNotifyIdle, std::memory_order_relaxed);
  }
}

bool VirtioNetModel::link_up() const { return link_ && link_->peer_present(link_end_); }

bool VirtioNetModel::running() const {
  return dma_ != nullptr && (status_ & spec::kStatusDriverOk) && !(status_ & spec::kStatusNeedsReset);
}

uint16_t VirtioNetModel::ctrl_queue_index() const {
  // §5.1.2: the control queue follows the N pairs, N = 1 unless MQ was negotiated.
  return has(spec::kFMq) ? static_cast<uint16_t>(2 * options_.queue_pairs) : 2;
}

PortCounters VirtioNetModel::counters() const {
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  PortCounters out;
  out.tx_packets = get(counters_.tx_packets);
  out.tx_bytes = get(counters_.tx_bytes);
  out.tx_drops = get(counters_.tx_drops);
  out.tx_errors = get(counters_.tx_errors);
  out.rx_packets = get(counters_.rx_packets);
  out.rx_bytes = get(counters_.rx_bytes);
  out.rx_drops = get(counters_.rx_drops);
  out.rx_errors = get(counters_.rx_errors);
  return out;
}

// ---- registers -------------------------------------------------------------------------

void VirtioNetModel::read_common(std::byte* out) const {
  using namespace spec::common;
  put<uint32_t>(out + kDeviceFeatureSelect, device_feature_select_);
  uint32_t dev = device_feature_select_ == 0 ? static_cast<uint32_t>(offered_features_)
               : device_feature_select_ == 1 ? static_cast<uint32_t>(offered_features_ >> 32)
                                             : 0;
  put<uint32_t>(out + kDeviceFeature, dev);
  put<uint32_t>(out + kDriverFeatureSelect, driver_feature_select_);
  uint32_t drv = driver_feature_select_ == 0 ? static_cast<uint32_t>(driver_features_)
               : driver_feature_select_ == 1 ? static_cast<uint32_t>(driver_features_ >> 32)
                                             : 0;
  put<uint32_t>(out + kDriverFeature, drv);
  put<uint16_t>(out + kConfigMsixVector, msix_config_);
  put<uint16_t>(out + kNumQueues, num_queues());
  put<uint8_t>(out + kDeviceStatus, status_);
  put<uint8_t>(out + kConfigGeneration, config_generation_);
  put<uint16_t>(out + kQueueSelect, queue_select_);
  if (queue_select_ < num_queues()) {
    const Virtqueue& q = queues_[queue_select_];
    put<uint16_t>(out + kQueueSize, q.size);
    put<uint16_t>(out + kQueueMsixVector, q.msix_vector);
    put<uint16_t>(out + kQueueEnable, q.enabled ? 1 : 0);
    put<uint16_t>(out + kQueueNotifyOff, queue_select_);
    put<uint64_t>(out + kQueueDesc, q.desc_addr);
    put<uint64_t>(out + kQueueDriver, q.avail_addr);
    put<uint64_t>(out + kQueueDevice, q.used_addr);
  }
  // §4.1.4.3.1: an unavailable queue reads queue_size 0 (left zero above).
}

uint64_t VirtioNetModel::bar_read(uint32_t bar, uint64_t offset, unsigned width) {
  if (bar != kBar || width == 0 || width > 8 || offset + width > kBarSize) return 0;
  std::byte window[64] = {};
  uint64_t base = 0;
  if (offset + width <= kCommonOffset + spec::common::kSize) {
    read_common(window);
    base = kCommonOffset;
  } else if (offset == kIsrOffset) {
    // §4.1.4.5.1: reading ISR status clears it.
    uint8_t isr = isr_;
    isr_ = 0;
    return isr;
  } else if (offset >= kDeviceCfgOffset && offset + width <= kDeviceCfgOffset + spec::netcfg::kSize) {
    read_device_config(window);
    base = kDeviceCfgOffset;
  } else {
    return 0;  // unused space, and the write-only notify area
  }
  uint64_t value = 0;
  std::memcpy(&value, window + (offset - base), width);
  return value;
}

void VirtioNetModel::read_device_config(std::byte* out) {
  using namespace spec::netcfg;
  if ((faults_armed_ & kFaultConfigChange) && running()) {
    // Fault: the configuration moves while the driver reads it (§2.5.1 says it must
    // then see config_generation change and read again).
    faults_armed_ &= ~kFaultConfigChange;
    config_changed();
  }
  std::memcpy(out + kMac, mac_.data(), mac_.size());
  put<uint16_t>(out + kStatus, link_up() ? spec::kNetSLinkUp : 0);
  put<uint16_t>(out + kMaxVirtqueuePairs, options_.queue_pairs);
  put<uint16_t>(out + kMtu, options_.mtu);
}

void VirtioNetModel::bar_write(uint32_t bar, uint64_t offset, uint64_t value, unsigned width) {
  if (bar != kBar || width == 0 || width > 8 || offset + width > kBarSize) return;
  if (offset < kCommonOffset + spec::common::kSize) {
    write_common(offset - kCommonOffset, value, width);
  } else if (offset >= kNotifyOffset && offset < kNotifyOffset + kNotifySize) {
    // A client that did not map the notify page kicks through messages instead.
    uint64_t queue = (offset - kNotifyOffset) / kNotifyOffMultiplier;
    if (queue < num_queues()) pending_[queue] = 1;
  }
  // The device configuration is read-only for a VERSION_1 driver (§5.1.4); ISR too.
}

void VirtioNetModel::write_common(uint64_t offset, uint64_t value, unsigned width) {
  using namespace spec::common;
  auto field = [&](uint64_t at, unsigned size) { return offset == at && width == size; };
  // §4.1.3.1: 64-bit fields may be written as two 32-bit halves.
  auto set64 = [&](uint64_t at, uint64_t& reg) {
    if (offset == at && width == 8) reg = value;
    else if (offset == at && width == 4) reg = (reg & ~uint64_t{0xFFFFFFFF}) | (value & 0xFFFFFFFF);
    else if (offset == at + 4 && width == 4) reg = (reg & 0xFFFFFFFF) | (value << 32);
    else return false;
    return true;
  };

  if (field(kDeviceFeatureSelect, 4)) {
    device_feature_select_ = static_cast<uint32_t>(value);
  } else if (field(kDriverFeatureSelect, 4)) {
    driver_feature_select_ = static_cast<uint32_t>(value);
  } else if (field(kDriverFeature, 4)) {
    // Features are fixed once FEATURES_OK was accepted (§3.1.1).
    if (status_ & spec::kStatusFeaturesOk) return;
    if (driver_feature_select_ == 0)
      driver_features_ = (driver_features_ & ~uint64_t{0xFFFFFFFF}) | (value & 0xFFFFFFFF);
    else if (driver_feature_select_ == 1)
      driver_features_ = (driver_features_ & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32);
  } else if (field(kConfigMsixVector, 2)) {
    // §4.1.4.3.2: a vector the device cannot use reads back as NO_VECTOR.
    msix_config_ = value < msix_vectors() ? static_cast<uint16_t>(value) : spec::kNoVector;
  } else if (field(kDeviceStatus, 1)) {
    write_status(static_cast<uint8_t>(value));
  } else if (field(kQueueSelect, 2)) {
    queue_select_ = static_cast<uint16_t>(value);
  } else if (queue_select_ < num_queues()) {
    Virtqueue& q = queues_[queue_select_];
    if (field(kQueueEnable, 2)) {
      if (value != 1 || q.enabled) return;  // writing 0 is not allowed without RING_RESET
      q.start(has(spec::kFRingPacked));
      if (const char* why = q.validate(options_.queue_size)) {
        UVIO_LOG(Err, kLog, "queue {} enabled with a bad layout: {}", queue_select_, why);
        device_error(why, false);
        return;
      }
      q.enabled = true;
      return;
    }
    if (field(kQueueMsixVector, 2)) {
      q.msix_vector = value < msix_vectors() ? static_cast<uint16_t>(value) : spec::kNoVector;
      return;
    }
    // §4.1.4.3.2: the layout must not change once the queue is enabled.
    if (q.enabled) return;
    if (field(kQueueSize, 2)) q.size = static_cast<uint16_t>(value);
    else if (!set64(kQueueDesc, q.desc_addr) && !set64(kQueueDriver, q.avail_addr))
      set64(kQueueDevice, q.used_addr);
  }
}

bool VirtioNetModel::features_acceptable() const {
  using namespace spec;
  if (driver_features_ & ~offered_features_) return false;
  if (!(driver_features_ & bit(kFVersion1))) return false;  // a modern-only device
  // §5.1.3.1: the control-queue features depend on CTRL_VQ.
  uint64_t needs_ctrl = bit(kFMq) | bit(kFCtrlRx) | bit(kFCtrlMacAddr);
  if ((driver_features_ & needs_ctrl) && !(driver_features_ & bit(kFCtrlVq))) return false;
  return true;
}

void VirtioNetModel::write_status(uint8_t value) {
  using namespace spec;
  if (value == 0) {
    reset();  // §4.1.4.3.1: writing 0 resets the device
    return;
  }
  // The driver only sets bits (§3.1.1); DEVICE_NEEDS_RESET is the device's to set.
  uint8_t next = static_cast<uint8_t>((value & ~kStatusNeedsReset) | (status_ & kStatusNeedsReset));
  if ((status_ & ~kStatusNeedsReset) & ~next) {
    UVIO_LOG(Warning, kLog, "driver tried to clear status bits ({:#x} -> {:#x}); ignored", status_, value);
    return;
  }
  if ((next & kStatusFeaturesOk) && !(status_ & kStatusFeaturesOk) && !features_acceptable()) {
    // §3.1.1: the device refuses by leaving FEATURES_OK clear; the driver reads it back.
    UVIO_LOG(Notice, kLog, "features {:#x} refused (offered {:#x})", driver_features_, offered_features_);
    next &= static_cast<uint8_t>(~kStatusFeaturesOk);
  }
  if ((next & kStatusDriverOk) && !(next & kStatusFeaturesOk)) next &= static_cast<uint8_t>(~kStatusDriverOk);
  if ((next & kStatusDriverOk) && !(status_ & kStatusDriverOk)) {
    faults_armed_ = options_.faults;
    link_up_reported_ = link_up();
  }
  status_ = next;
}

// ---- events ----------------------------------------------------------------------------

void VirtioNetModel::device_error(const char* why, bool rx_side) {
  add(rx_side ? counters_.rx_errors : counters_.tx_errors, 1);
  if (status_ & spec::kStatusNeedsReset) return;
  UVIO_LOG(Err, kLog, "device error, needs reset: {}", why);
  status_ |= spec::kStatusNeedsReset;
  // §2.1.2: tell a running driver through a configuration change notification.
  if (status_ & spec::kStatusDriverOk) config_changed();
}

void VirtioNetModel::config_changed() {
  config_generation_++;
  isr_ |= spec::kIsrConfig;
  if (irq_ && msix_config_ != spec::kNoVector) irq_->trigger(msix_config_);
}

void VirtioNetModel::signal(Virtqueue& q) {
  isr_ |= spec::kIsrQueue;
  if (q.msix_vector != spec::kNoVector) irq_->trigger(q.msix_vector);
}

bool VirtioNetModel::take_kick(uint16_t queue) {
  bool kicked = pending_[queue];
  pending_[queue] = 0;
  if (notify_) {
    auto slot = std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(notify_ + queue * kNotifyOffMultiplier));
    if (slot.load(std::memory_order_relaxed) != kNotifyIdle) {
      slot.exchange(kNotifyIdle, std::memory_order_acquire);
      kicked = true;
    }
  }
  return kicked;
}

bool VirtioNetModel::complete(Virtqueue& q, uint16_t chain_id, uint16_t ring_slots, uint32_t len,
                              uint64_t buffer_len) {
  uint32_t id = chain_id;
  bool repeat = false;
  if (faults_armed_ & (kFaultUsedIdRange | kFaultUsedIdRepeat | kFaultUsedLen)) {
    if (faults_armed_ & kFaultUsedIdRange) {
      id = q.size;
      faults_armed_ &= ~kFaultUsedIdRange;
    } else if (faults_armed_ & kFaultUsedLen) {
      len = static_cast<uint32_t>(buffer_len + 1);
      faults_armed_ &= ~kFaultUsedLen;
    } else {
      repeat = true;
      faults_armed_ &= ~kFaultUsedIdRepeat;
    }
  }
  if ((faults_armed_ & kFaultUsedWrap) && q.packed) {
    q.stale_wrap_once = true;
    faults_armed_ &= ~kFaultUsedWrap;
  }
  if (!q.push_used(*dma_, id, len, ring_slots)) return false;
  return !repeat || q.push_used(*dma_, id, len, ring_slots);
}

void VirtioNetModel::finish_batch(Virtqueue& q) {
  if (!q.publish_used(*dma_)) return;
  if (q.should_interrupt(*dma_, has(spec::kFEventIdx))) signal(q);
}

// ---- data path -------------------------------------------------------------------------

bool VirtioNetModel::gather(const Chain& chain, uint64_t offset, std::byte* dst, uint32_t len) {
  for (size_t i = 0; i < chain.readable_count && len > 0; i++) {
    const Segment& s = chain.segments[i];
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(s.len - offset, len));
    if (!dma_->read(s.addr + offset, dst, take)) return false;
    dst += take;
    len -= take;
    offset = 0;
  }
  return len == 0;
}

bool VirtioNetModel::scatter(const Chain& chain, uint64_t offset, const void* src, uint32_t len) {
  auto from = static_cast<const std::byte*>(src);
  for (size_t i = chain.readable_count; i < chain.segments.size() && len > 0; i++) {
    const Segment& s = chain.segments[i];
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(s.len - offset, len));
    if (!dma_->write(s.addr + offset, from, take)) return false;
    from += take;
    len -= take;
    offset = 0;
  }
  return len == 0;
}

size_t VirtioNetModel::service_tx(uint16_t pair) {
  uint16_t index = static_cast<uint16_t>(2 * pair + 1);
  Virtqueue& q = queues_[index];
  if (!q.enabled) return 0;
  bool connected = link_ && link_->peer_present(link_end_);
  FrameRing* ring = link_ ? &link_->tx_ring(link_end_, pair) : nullptr;
  const char* why = nullptr;
  size_t done = 0;
  bool more = false;
  for (;;) {
    if (done == kBudget) {
      more = true;
      break;
    }
    Pop got = q.pop(*dma_, has(spec::kFIndirectDesc), chain_, &why);
    if (got == Pop::kEmpty) break;
    if (got == Pop::kError || (faults_armed_ & kFaultDeviceError)) {
      faults_armed_ &= ~kFaultDeviceError;
      device_error(got == Pop::kError ? why : "injected fault: device-error", false);
      return done;
    }
    done++;
    // §5.1.6.2: a packet is the 12-byte header followed by the frame.
    uint64_t frame_len = chain_.readable_len >= spec::kNetHdrSize ? chain_.readable_len - spec::kNetHdrSize : 0;
    if (chain_.readable_len < spec::kNetHdrSize || frame_len < spec::kEthHeader || frame_len > max_frame_) {
      add(counters_.tx_errors, 1);
    } else if (!connected) {
      add(counters_.tx_drops, 1);
    } else if (std::byte* slot = ring->reserve()) {
      if (!gather(chain_, spec::kNetHdrSize, slot, static_cast<uint32_t>(frame_len))) {
        device_error("transmit buffer is outside the driver's DMA mappings", false);
        return done;
      }
      ring->commit(static_cast<uint32_t>(frame_len));
      add(counters_.tx_packets, 1);
      add(counters_.tx_bytes, frame_len);
    } else {
      // The wire is full: the receiver is not polling. It counts the drop.
      ring->count_overflow();
      add(counters_.tx_packets, 1);
      add(counters_.tx_bytes, frame_len);
    }
    if (!complete(q, chain_.id, chain_.ring_slots, 0, chain_.writable_len)) {
      device_error("used ring is outside the driver's DMA mappings", false);
      return done;
    }
  }
  finish_batch(q);
  pending_[index] = more || q.arm_notification(*dma_, has(spec::kFEventIdx));
  return done;
}

bool VirtioNetModel::deliver(Virtqueue& q, const std::byte* frame, uint32_t len) {
  const char* why = nullptr;
  const bool mergeable = has(spec::kFMrgRxbuf);
  const uint64_t need = uint64_t{spec::kNetHdrSize} + len;
  const Virtqueue::Position start = q.position();
  rx_used_.clear();
  uint64_t placed = 0;  // bytes of header + frame written so far
  while (placed < need) {
    Chain& chain = rx_used_.empty() ? rx_first_ : chain_;
    Pop got = rx_used_.size() == rx_used_.capacity() ? Pop::kEmpty
                                                     : q.pop(*dma_, has(spec::kFIndirectDesc), chain, &why);
    if (got == Pop::kError) {
      device_error(why, true);
      return false;
    }
    if (got == Pop::kEmpty) {
      // No room for the whole packet: give the buffers back untouched (as far as the
      // driver can tell: nothing was marked used) and drop the frame.
      q.rewind(start);
      add(counters_.rx_drops, 1);
      return true;
    }
    // Without MRG_RXBUF one buffer takes the whole packet (§5.1.6.3.1); with it each
    // buffer holds at least the header.
    uint64_t minimum = mergeable ? spec::kNetHdrSize : need;
    if (chain.writable_len < minimum) {
      q.rewind(start);
      add(counters_.rx_errors, 1);
      return true;
    }
    uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(chain.writable_len, need - placed));
    bool ok = rx_used_.empty()
                  ? scatter(chain, spec::kNetHdrSize, frame, take - spec::kNetHdrSize)
                  : scatter(chain, 0, frame + (placed - spec::kNetHdrSize), take);
    if (!ok) {
      device_error("receive buffer is outside the driver's DMA mappings", true);
      return false;
    }
    rx_used_.push_back(RxUsed{chain.id, chain.ring_slots, take});
    placed += take;
  }
  // §5.1.6.4: no offloads were negotiated, so flags and gso_type are 0; num_buffers
  // counts the buffers this packet used.
  std::byte header[spec::kNetHdrSize] = {};
  put<uint16_t>(header + spec::kNetHdrNumBuffersOffset, static_cast<uint16_t>(rx_used_.size()));
  if (!scatter(rx_first_, 0, header, sizeof(header))) {
    device_error("receive buffer is outside the driver's DMA mappings", true);
    return false;
  }
  for (size_t i = 0; i < rx_used_.size(); i++) {
    const RxUsed& u = rx_used_[i];
    if (!complete(q, u.id, u.ring_slots, u.len, i == 0 ? rx_first_.writable_len : u.len)) {
      device_error("used ring is outside the driver's DMA mappings", true);
      return false;
    }
  }
  add(counters_.rx_packets, 1);
  add(counters_.rx_bytes, len);
  return true;
}

size_t VirtioNetModel::service_rx() {
  if (!link_) return 0;
  size_t done = 0;
  for (uint32_t r = 0; r < link_->queue_pairs(); r++) {
    FrameRing& ring = link_->rx_ring(link_end_, r);
    uint64_t overflow = ring.overflow();
    if (overflow != overflow_seen_[r]) {
      add(counters_.rx_drops, overflow - overflow_seen_[r]);
      overflow_seen_[r] = overflow;
    }
    Virtqueue& q = queues_[2 * (r % curr_pairs_)];
    uint32_t len = 0;
    for (uint16_t n = 0; n < kBudget; n++) {
      const std::byte* frame = ring.peek(&len);
      if (!frame) break;
      bool ok = true;
      if (q.enabled) ok = deliver(q, frame, len);
      else add(counters_.rx_drops, 1);
      ring.release();
      done++;
      if (!ok) return done;
    }
    if (q.unsignalled != 0) finish_batch(q);
  }
  return done;
}

uint8_t VirtioNetModel::handle_ctrl(uint8_t cls, uint8_t cmd, const uint8_t* data, size_t len) {
  using namespace spec;
  switch (cls) {
    case kCtrlClassRx:
      // §5.1.6.5.1: promiscuous/multicast modes, each a u8 on/off. Acked; every frame
      // is delivered regardless (the link carries no foreign traffic).
      if (!has(kFCtrlRx) || cmd > kCtrlRxNoBcast || len != 1) return kCtrlErr;
      rx_mode_ = static_cast<uint8_t>((rx_mode_ & ~(1u << cmd)) | ((data[0] ? 1u : 0u) << cmd));
      return kCtrlOk;
    case kCtrlClassMac:
      if (cmd == kCtrlMacAddrSet) {
        // §5.1.6.5.2: the new default address shows in config space.
        if (!has(kFCtrlMacAddr) || len != 6) return kCtrlErr;
        std::memcpy(mac_.data(), data, 6);
        config_changed();
        return kCtrlOk;
      }
      if (cmd == kCtrlMacTableSet) return has(kFCtrlRx) ? kCtrlOk : kCtrlErr;
      return kCtrlErr;
    case kCtrlClassMq: {
      // §5.1.6.5.5: le16 virtqueue_pairs, 1..max_virtqueue_pairs.
      if (cmd != kCtrlMqVqPairsSet || !has(kFMq) || len != 2) return kCtrlErr;
      uint16_t pairs = static_cast<uint16_t>(data[0] | (data[1] << 8));
      if (pairs < kCtrlMqPairsMin || pairs > options_.queue_pairs) return kCtrlErr;
      curr_pairs_ = pairs;
      return kCtrlOk;
    }
    default:
      return kCtrlErr;
  }
}

size_t VirtioNetModel::service_ctrl() {
  Virtqueue& q = queues_[ctrl_queue_index()];
  if (!q.enabled) return 0;
  const char* why = nullptr;
  size_t done = 0;
  for (;;) {
    Pop got = q.pop(*dma_, has(spec::kFIndirectDesc), chain_, &why);
    if (got == Pop::kEmpty) break;
    if (got == Pop::kError) {
      device_error(why, false);
      return done;
    }
    done++;
    // §5.1.6.5: u8 class, u8 command, data, then one device-writable ack byte. The
    // commands whose data is used carry a few bytes; longer data (a MAC table) is
    // acknowledged without being read.
    uint8_t command[2 + 64] = {};
    if (chain_.readable_len < 2 || chain_.writable_len < 1) {
      device_error("control command is malformed (no class and command, or no ack byte)", false);
      return done;
    }
    uint32_t copy = static_cast<uint32_t>(std::min<uint64_t>(chain_.readable_len, sizeof(command)));
    if (!gather(chain_, 0, reinterpret_cast<std::byte*>(command), copy)) {
      device_error("control command is outside the driver's DMA mappings", false);
      return done;
    }
    uint8_t ack = handle_ctrl(command[0], command[1], command + 2, chain_.readable_len - 2);
    if (!scatter(chain_, chain_.writable_len - 1, &ack, 1) ||
        !complete(q, chain_.id, chain_.ring_slots, 1, chain_.writable_len)) {
      device_error("control queue buffers are outside the driver's DMA mappings", false);
      return done;
    }
  }
  finish_batch(q);
  return done;
}

size_t VirtioNetModel::poll() {
  if (!running()) return 0;
  bool up = link_up();
  if (up != link_up_reported_) {
    link_up_reported_ = up;
    config_changed();  // §5.1.4: link status is in config space
  }
  // faults=stall: a device that stopped consuming. Its data queues are left alone until
  // the driver resets it; the control queue still answers, so the port can start.
  const bool stalled = faults_armed_ & kFaultStall;
  size_t work = 0;
  for (uint16_t pair = 0; pair < curr_pairs_ && running() && !stalled; pair++) {
    take_kick(static_cast<uint16_t>(2 * pair));  // RX buffers are looked at when frames arrive
    if (take_kick(static_cast<uint16_t>(2 * pair + 1))) work += service_tx(pair);
  }
  if (running() && !stalled) work += service_rx();
  if (running() && take_kick(ctrl_queue_index())) work += service_ctrl();
  return work;
}

}  // namespace uvio::emu::virtio_net
