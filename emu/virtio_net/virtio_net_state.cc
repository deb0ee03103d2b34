// Migration state of a virtio-net port: what the driver programmed and how far the
// device got in each queue. Frames in flight on the link are not device state: like a
// real wire's, they are lost, and the saved rx_drops counts those waiting for this
// port (and link overflows it had not counted yet), so the destination's statistics
// account for every frame its peer sent.
//
// Layout, host-endian (little-endian hosts only), version 1:
//   u32 magic "VNET", u32 version, u32 payload bytes
//   identity: u16 queue_pairs, u16 queue_size, u16 mtu, u64 offered features
//   registers: u32 device_feature_select, u32 driver_feature_select, u64 driver_features,
//     u8 status, u8 config_generation, u8 isr, u8 rx_mode, u16 msix_config,
//     u16 queue_select, u16 curr_pairs, u8 mac[6], u32 faults_armed, u8 link_up_reported
//   counters: 8 x u64
//   u16 queue count, then per queue: u16 size, u16 msix_vector, u8 enabled, u8 packed,
//     u64 desc, u64 avail, u64 used, u16 last_avail_idx, u16 used_idx, u8 avail_wrap,
//     u8 used_wrap, u16 unsignalled, u8 pending
//   u32 FNV-1a of everything before it
#include "emu/virtio_net/virtio_net_model.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

namespace uvio::emu::virtio_net {
namespace {

constexpr uint32_t kMagic = 0x54454E56;  // "VNET"
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 12;

uint32_t fnv1a(const uint8_t* data, size_t len) {
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < len; i++) hash = (hash ^ data[i]) * 16777619u;
  return hash;
}

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  template <class T>
  void put(T value) {
    auto p = reinterpret_cast<const uint8_t*>(&value);
    out_.insert(out_.end(), p, p + sizeof(value));
  }
  void bytes(const uint8_t* p, size_t n) { out_.insert(out_.end(), p, p + n); }

 private:
  std::vector<uint8_t>& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  template <class T>
  bool get(T* value) {
    if (in_.size() - at_ < sizeof(T)) return false;
    std::memcpy(value, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool bytes(uint8_t* p, size_t n) {
    if (in_.size() - at_ < n) return false;
    std::memcpy(p, in_.data() + at_, n);
    at_ += n;
    return true;
  }
  size_t remaining() const { return in_.size() - at_; }

 private:
  std::span<const uint8_t> in_;
  size_t at_ = 0;
};

Status refuse(std::string why) {
  return Status::error(EINVAL, "virtio-net: migration state refused: " + why);
}

}  // namespace

void VirtioNetModel::save_state(std::vector<uint8_t>& out) const {
  size_t start = out.size();
  Writer w(out);
  w.put(kMagic);
  w.put(kVersion);
  w.put(uint32_t{0});  // payload size, patched below
  w.put(options_.queue_pairs);
  w.put(options_.queue_size);
  w.put(options_.mtu);
  w.put(offered_features_);
  w.put(device_feature_select_);
  w.put(driver_feature_select_);
  w.put(driver_features_);
  w.put(status_);
  w.put(config_generation_);
  w.put(isr_);
  w.put(rx_mode_);
  w.put(msix_config_);
  w.put(queue_select_);
  w.put(curr_pairs_);
  w.bytes(mac_.data(), mac_.size());
  w.put(faults_armed_);
  w.put(uint8_t{link_up_reported_});
  PortCounters c = counters();
  if (link_) {
    for (uint32_t ring = 0; ring < link_->queue_pairs(); ring++) {
      const FrameRing& rx = link_->rx_ring(link_end_, ring);
      c.rx_drops += rx.waiting() + (rx.overflow() - overflow_seen_[ring]);
    }
  }
  for (uint64_t v : {c.tx_packets, c.tx_bytes, c.tx_drops, c.tx_errors, c.rx_packets, c.rx_bytes, c.rx_drops,
                     c.rx_errors})
    w.put(v);
  w.put(num_queues());
  for (size_t i = 0; i < queues_.size(); i++) {
    const Virtqueue& q = queues_[i];
    w.put(q.size);
    w.put(q.msix_vector);
    w.put(uint8_t{q.enabled});
    w.put(uint8_t{q.packed});
    w.put(q.desc_addr);
    w.put(q.avail_addr);
    w.put(q.used_addr);
    w.put(q.last_avail_idx);
    w.put(q.used_idx);
    w.put(uint8_t{q.avail_wrap});
    w.put(uint8_t{q.used_wrap});
    w.put(q.unsignalled);
    w.put(pending_[i]);
  }
  uint32_t payload = static_cast<uint32_t>(out.size() - start - kHeaderBytes);
  std::memcpy(out.data() + start + 8, &payload, sizeof(payload));
  w.put(fnv1a(out.data() + start, out.size() - start));
}

Status VirtioNetModel::load_state(std::span<const uint8_t> in) {
  using namespace spec;
  if (in.size() < kHeaderBytes + 4) return refuse(fmt::format("{} bytes is shorter than any state", in.size()));
  uint32_t stored_sum = 0;
  std::memcpy(&stored_sum, in.data() + in.size() - 4, 4);
  Reader r(in.first(in.size() - 4));
  uint32_t magic = 0, version = 0, payload = 0;
  (void)r.get(&magic);
  (void)r.get(&version);
  (void)r.get(&payload);
  if (magic != kMagic) return refuse("not a virtio-net state (bad magic)");
  if (version != kVersion)
    return refuse(fmt::format("format version {} is not the supported version {}", version, kVersion));
  if (payload != r.remaining())
    return refuse(fmt::format("payload is {} bytes but the header says {}", r.remaining(), payload));
  if (fnv1a(in.data(), in.size() - 4) != stored_sum) return refuse("checksum mismatch: the stream is corrupted");

  // Everything is read into locals and checked before the device changes.
  uint16_t pairs = 0, queue_size = 0, mtu = 0;
  uint64_t offered = 0;
  bool ok = r.get(&pairs) && r.get(&queue_size) && r.get(&mtu) && r.get(&offered);
  if (!ok) return refuse("truncated identity");
  if (pairs != options_.queue_pairs || queue_size != options_.queue_size || mtu != options_.mtu ||
      offered != offered_features_)
    return refuse(fmt::format("saved from a port with queues={} queue_size={} mtu={} features {:#x}; this port has "
                              "queues={} queue_size={} mtu={} features {:#x}",
                              pairs, queue_size, mtu, offered, options_.queue_pairs, options_.queue_size,
                              options_.mtu, offered_features_));

  uint32_t dev_sel = 0, drv_sel = 0, faults = 0;
  uint64_t drv_features = 0;
  uint8_t status = 0, generation = 0, isr = 0, rx_mode = 0, link_reported = 0;
  uint16_t msix_config = 0, queue_select = 0, curr_pairs = 0;
  std::array<uint8_t, 6> mac{};
  ok = r.get(&dev_sel) && r.get(&drv_sel) && r.get(&drv_features) && r.get(&status) && r.get(&generation) &&
       r.get(&isr) && r.get(&rx_mode) && r.get(&msix_config) && r.get(&queue_select) && r.get(&curr_pairs) &&
       r.bytes(mac.data(), mac.size()) && r.get(&faults) && r.get(&link_reported);
  if (!ok) return refuse("truncated registers");
  if (drv_features & ~offered_features_)
    return refuse(fmt::format("driver features {:#x} include some never offered", drv_features));
  if ((status & kStatusDriverOk) && !(status & kStatusFeaturesOk))
    return refuse("status has DRIVER_OK without FEATURES_OK");
  if (msix_config != kNoVector && msix_config >= msix_vectors())
    return refuse(fmt::format("config MSI-X vector {} is beyond the {} vectors", msix_config, msix_vectors()));
  if (curr_pairs < 1 || curr_pairs > options_.queue_pairs)
    return refuse(fmt::format("{} active queue pairs, the port has {}", curr_pairs, options_.queue_pairs));
  if (mac[0] & 1) return refuse("the MAC address is a multicast address");
  if (faults & ~uint32_t{kAllFaults}) return refuse("unknown fault bits");

  std::array<uint64_t, 8> counters{};
  for (auto& v : counters)
    if (!r.get(&v)) return refuse("truncated counters");

  uint16_t count = 0;
  if (!r.get(&count) || count != num_queues())
    return refuse(fmt::format("{} queues saved, the port has {}", count, num_queues()));
  struct SavedQueue {
    uint16_t size, msix_vector, last_avail_idx, used_idx, unsignalled;
    uint8_t enabled, packed, avail_wrap, used_wrap, pending;
    uint64_t desc_addr, avail_addr, used_addr;
  };
  std::vector<SavedQueue> queues(count);
  const bool packed_negotiated = drv_features & bit(kFRingPacked);
  for (uint16_t i = 0; i < count; i++) {
    SavedQueue& q = queues[i];
    ok = r.get(&q.size) && r.get(&q.msix_vector) && r.get(&q.enabled) && r.get(&q.packed) && r.get(&q.desc_addr) &&
         r.get(&q.avail_addr) && r.get(&q.used_addr) && r.get(&q.last_avail_idx) && r.get(&q.used_idx) &&
         r.get(&q.avail_wrap) && r.get(&q.used_wrap) && r.get(&q.unsignalled) && r.get(&q.pending);
    if (!ok) return refuse(fmt::format("queue {} is truncated", i));
    if ((q.enabled | q.packed | q.avail_wrap | q.used_wrap | q.pending) > 1)
      return refuse(fmt::format("queue {} has a flag that is not 0 or 1", i));
    if (q.msix_vector != kNoVector && q.msix_vector >= msix_vectors())
      return refuse(fmt::format("queue {} MSI-X vector {} is beyond the {} vectors", i, q.msix_vector, msix_vectors()));
    if (q.enabled) {
      if (q.packed != packed_negotiated)
        return refuse(fmt::format("queue {} ring format does not match the negotiated features", i));
      Virtqueue check;
      check.size = q.size;
      check.packed = q.packed;
      check.desc_addr = q.desc_addr;
      check.avail_addr = q.avail_addr;
      check.used_addr = q.used_addr;
      if (const char* why = check.validate(options_.queue_size)) return refuse(fmt::format("queue {}: {}", i, why));
      if (q.packed && (q.last_avail_idx >= q.size || q.used_idx >= q.size))
        return refuse(fmt::format("queue {} packed ring position beyond its size", i));
    } else if (q.size > options_.queue_size) {
      return refuse(fmt::format("queue {} size {} exceeds {}", i, q.size, options_.queue_size));
    }
  }
  if (r.remaining() != 0) return refuse(fmt::format("{} bytes left after the last queue", r.remaining()));

  device_feature_select_ = dev_sel;
  driver_feature_select_ = drv_sel;
  driver_features_ = drv_features;
  status_ = status;
  config_generation_ = generation;
  isr_ = isr;
  rx_mode_ = rx_mode;
  msix_config_ = msix_config;
  queue_select_ = queue_select;
  curr_pairs_ = curr_pairs;
  mac_ = mac;
  faults_armed_ = faults;
  link_up_reported_ = link_reported != 0;
  for (uint16_t i = 0; i < count; i++) {
    Virtqueue& q = queues_[i];
    const SavedQueue& s = queues[i];
    q.size = s.size;
    q.msix_vector = s.msix_vector;
    q.enabled = s.enabled;
    q.packed = s.packed;
    q.desc_addr = s.desc_addr;
    q.avail_addr = s.avail_addr;
    q.used_addr = s.used_addr;
    q.last_avail_idx = s.last_avail_idx;
    q.used_idx = s.used_idx;
    q.avail_wrap = s.avail_wrap;
    q.used_wrap = s.used_wrap;
    q.unsignalled = s.unsignalled;
    q.resume();
  }
  // Kicks stored in the source's notify page did not travel; look at every enabled
  // queue once.
  for (uint16_t i = 0; i < count; i++) pending_[i] = queues[i].pending | queues[i].enabled;
  auto set = [](std::atomic<uint64_t>& c, uint64_t v) { c.store(v, std::memory_order_relaxed); };
  set(counters_.tx_packets, counters[0]);
  set(counters_.tx_bytes, counters[1]);
  set(counters_.tx_drops, counters[2]);
  set(counters_.tx_errors, counters[3]);
  set(counters_.rx_packets, counters[4]);
  set(counters_.rx_bytes, counters[5]);
  set(counters_.rx_drops, counters[6]);
  set(counters_.rx_errors, counters[7]);
  if (link_)
    for (uint32_t ring = 0; ring < link_->queue_pairs(); ring++)
      overflow_seen_[ring] = link_->rx_ring(link_end_, ring).overflow();
  return Status::ok();
}

}  // namespace uvio::emu::virtio_net
