// A test bench for the virtio-net model without the vfio-user server: guest memory in
// a plain buffer, an interrupt sink that records vectors, and a minimal driver that
// programs the registers and rings the way a virtio 1.2 driver does.
#pragma once

#include "emu/virtio_net/virtio_net_model.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

namespace uvio::emu::virtio_net::testing {

// Guest memory: IOVAs [kBase, kBase + size) backed by a buffer.
class TestMemory final : public DmaAccess {
 public:
  static constexpr uint64_t kBase = 0x10000000;
  explicit TestMemory(size_t size = 4 << 20) : bytes_(size) {}

  bool read(uint64_t iova, void* dst, size_t len) override {
    std::byte* p = translate(iova, len);
    if (!p) return false;
    std::memcpy(dst, p, len);
    return true;
  }
  bool write(uint64_t iova, const void* src, size_t len) override {
    std::byte* p = translate(iova, len);
    if (!p) return false;
    std::memcpy(p, src, len);
    return true;
  }
  std::byte* translate(uint64_t iova, size_t len) override {
    if (iova < kBase || iova - kBase > bytes_.size() || len > bytes_.size() - (iova - kBase)) return nullptr;
    return bytes_.data() + (iova - kBase);
  }
  void mark_dirty(uint64_t, size_t) override {}

  uint64_t alloc(size_t len, size_t align = 64) {
    next_ = (next_ + align - 1) / align * align;
    uint64_t iova = kBase + next_;
    next_ += len;
    EXPECT_LE(next_, bytes_.size()) << "test memory exhausted";
    return iova;
  }
  template <class T>
  T get(uint64_t iova) {
    T v{};
    EXPECT_TRUE(read(iova, &v, sizeof(v)));
    return v;
  }
  template <class T>
  void set(uint64_t iova, T v) {
    EXPECT_TRUE(write(iova, &v, sizeof(v)));
  }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
  size_t next_ = 0;
};

class RecordingIrq final : public IrqSink {
 public:
  void trigger(uint32_t vector) override { vectors.push_back(vector); }
  size_t count(uint32_t vector) const {
    size_t n = 0;
    for (uint32_t v : vectors) n += v == vector;
    return n;
  }
  std::vector<uint32_t> vectors;
};

struct Buffer {
  uint64_t iova;
  uint32_t len;
  bool writable;
};

struct UsedElem {
  uint32_t id;
  uint32_t len;
};

// The driver side of one queue, split or packed. For a packed ring, `avail` is the
// driver event suppression area and `used` the device's (§2.8.10).
struct DriverQueue {
  uint16_t index = 0;
  uint16_t size = 0;
  bool packed = false;
  uint64_t desc = 0, avail = 0, used = 0;
  uint16_t avail_idx = 0;
  uint16_t last_used = 0;
  uint16_t next_desc = 0;
  bool avail_wrap = true;  // packed: §2.8.1 wrap counters
  bool used_wrap = true;
  std::map<uint16_t, uint16_t> slots_of_id;  // packed: descriptors each buffer took
};

class TestDriver {
 public:
  using Model = VirtioNetModel;

  TestDriver(Model& model, TestMemory& mem, RecordingIrq& irq) : model_(model), mem_(mem), bar0_(Model::kBarSize) {
    std::byte* shared[] = {bar0_.data(), nullptr};
    model_.attach(mem_, irq, shared);
  }

  // Register access (common config lives at BAR 0 offset 0).
  void w8(uint64_t off, uint8_t v) { model_.bar_write(0, off, v, 1); }
  void w16(uint64_t off, uint16_t v) { model_.bar_write(0, off, v, 2); }
  void w32(uint64_t off, uint32_t v) { model_.bar_write(0, off, v, 4); }
  void w64(uint64_t off, uint64_t v) { model_.bar_write(0, off, v, 8); }
  uint8_t r8(uint64_t off) { return static_cast<uint8_t>(model_.bar_read(0, off, 1)); }
  uint16_t r16(uint64_t off) { return static_cast<uint16_t>(model_.bar_read(0, off, 2)); }
  uint32_t r32(uint64_t off) { return static_cast<uint32_t>(model_.bar_read(0, off, 4)); }

  uint8_t status() { return r8(spec::common::kDeviceStatus); }
  uint64_t device_features() {
    w32(spec::common::kDeviceFeatureSelect, 0);
    uint64_t lo = r32(spec::common::kDeviceFeature);
    w32(spec::common::kDeviceFeatureSelect, 1);
    return lo | uint64_t{r32(spec::common::kDeviceFeature)} << 32;
  }

  // §3.1.1 steps 1-6; returns whether the device kept FEATURES_OK.
  bool negotiate(uint64_t features) {
    w8(spec::common::kDeviceStatus, 0);
    w8(spec::common::kDeviceStatus, spec::kStatusAcknowledge);
    w8(spec::common::kDeviceStatus, spec::kStatusAcknowledge | spec::kStatusDriver);
    w32(spec::common::kDriverFeatureSelect, 0);
    w32(spec::common::kDriverFeature, static_cast<uint32_t>(features));
    w32(spec::common::kDriverFeatureSelect, 1);
    w32(spec::common::kDriverFeature, static_cast<uint32_t>(features >> 32));
    w8(spec::common::kDeviceStatus, spec::kStatusAcknowledge | spec::kStatusDriver | spec::kStatusFeaturesOk);
    return status() & spec::kStatusFeaturesOk;
  }

  DriverQueue setup_queue(uint16_t index, uint16_t size, uint16_t vector, bool packed = false) {
    DriverQueue q;
    q.index = index;
    q.size = size;
    q.packed = packed;
    q.desc = mem_.alloc(16u * size, 16);
    q.avail = packed ? mem_.alloc(4, 4) : mem_.alloc(6u + 2u * size, 2);
    q.used = packed ? mem_.alloc(4, 4) : mem_.alloc(6u + 8u * size, 4);
    w16(spec::common::kQueueSelect, index);
    w16(spec::common::kQueueSize, size);
    w16(spec::common::kQueueMsixVector, vector);
    w64(spec::common::kQueueDesc, q.desc);
    w64(spec::common::kQueueDriver, q.avail);
    w64(spec::common::kQueueDevice, q.used);
    w16(spec::common::kQueueEnable, 1);
    return q;
  }

  void driver_ok() {
    w8(spec::common::kDeviceStatus, spec::kStatusAcknowledge | spec::kStatusDriver | spec::kStatusFeaturesOk |
                                        spec::kStatusDriverOk);
  }

  // Writes a chain into the descriptor table (slots used round-robin) and makes it
  // available; returns the head.
  uint16_t add_chain(DriverQueue& q, const std::vector<Buffer>& bufs, bool publish = true) {
    if (q.packed) return add_packed_chain(q, bufs);
    uint16_t head = q.next_desc;
    for (size_t i = 0; i < bufs.size(); i++) {
      uint16_t slot = static_cast<uint16_t>((head + i) % q.size);
      spec::Desc d{};
      d.addr = bufs[i].iova;
      d.len = bufs[i].len;
      d.flags = static_cast<uint16_t>((bufs[i].writable ? spec::kDescFWrite : 0) |
                                      (i + 1 < bufs.size() ? spec::kDescFNext : 0));
      d.next = static_cast<uint16_t>((slot + 1) % q.size);
      put_desc(q, slot, d);
    }
    q.next_desc = static_cast<uint16_t>((head + bufs.size()) % q.size);
    make_available(q, head, publish);
    return head;
  }

  void put_desc(DriverQueue& q, uint16_t slot, const spec::Desc& d) { mem_.set(q.desc + 16u * slot, d); }

  // §2.8.6: descriptors in ring order, the buffer id (here the head slot) in each, and
  // the head's flags written last so the device sees a whole chain.
  uint16_t add_packed_chain(DriverQueue& q, const std::vector<Buffer>& bufs, uint16_t extra_flags = 0) {
    uint16_t head = q.next_desc;
    uint16_t head_flags = 0;
    for (size_t i = 0; i < bufs.size(); i++) {
      spec::PackedDesc d{};
      d.addr = bufs[i].iova;
      d.len = bufs[i].len;
      d.id = head;
      d.flags = static_cast<uint16_t>((bufs[i].writable ? spec::kDescFWrite : 0) |
                                      (i + 1 < bufs.size() ? spec::kDescFNext : 0) | extra_flags |
                                      (q.avail_wrap ? spec::kPackedDescFAvail : spec::kPackedDescFUsed));
      if (i == 0) {
        head_flags = d.flags;
        d.flags = 0;  // published below
      }
      mem_.set(q.desc + 16u * q.next_desc, d);
      if (++q.next_desc == q.size) {
        q.next_desc = 0;
        q.avail_wrap = !q.avail_wrap;
      }
    }
    mem_.set<uint16_t>(q.desc + 16u * head + spec::kPackedDescFlagsOffset, head_flags);
    q.slots_of_id[head] = static_cast<uint16_t>(bufs.size());
    return head;
  }

  void make_available(DriverQueue& q, uint16_t head, bool publish = true) {
    mem_.set<uint16_t>(q.avail + 4 + 2u * (q.avail_idx % q.size), head);
    q.avail_idx++;
    if (publish) mem_.set<uint16_t>(q.avail + 2, q.avail_idx);
  }

  // §4.1.4.4: a notification is the queue index stored at its notify address.
  void kick(const DriverQueue& q) {
    uint16_t value = q.index;
    std::memcpy(bar0_.data() + Model::kNotifyOffset + Model::kNotifyOffMultiplier * q.index, &value, 2);
  }

  std::optional<UsedElem> next_used(DriverQueue& q) {
    if (q.packed) {
      spec::PackedDesc d = mem_.get<spec::PackedDesc>(q.desc + 16u * q.last_used);
      bool avail = d.flags & spec::kPackedDescFAvail, used = d.flags & spec::kPackedDescFUsed;
      if (avail != q.used_wrap || used != q.used_wrap) return std::nullopt;
      auto it = q.slots_of_id.find(d.id);
      EXPECT_NE(it, q.slots_of_id.end()) << "used buffer id " << d.id << " is not outstanding";
      uint16_t slots = it == q.slots_of_id.end() ? 1 : it->second;
      q.last_used = static_cast<uint16_t>(q.last_used + slots);
      if (q.last_used >= q.size) {
        q.last_used = static_cast<uint16_t>(q.last_used - q.size);
        q.used_wrap = !q.used_wrap;
      }
      return UsedElem{d.id, d.len};
    }
    uint16_t used_idx = mem_.get<uint16_t>(q.used + 2);
    if (used_idx == q.last_used) return std::nullopt;
    UsedElem e = mem_.get<UsedElem>(q.used + 4 + 8u * (q.last_used % q.size));
    q.last_used++;
    return e;
  }

  // Config fields of the device (§5.1.4) at BAR 0 offset 0x2000.
  std::array<uint8_t, 6> config_mac() {
    std::array<uint8_t, 6> mac{};
    for (unsigned i = 0; i < 6; i++) mac[i] = static_cast<uint8_t>(model_.bar_read(0, Model::kDeviceCfgOffset + i, 1));
    return mac;
  }

  std::vector<std::byte>& bar0() { return bar0_; }

 private:
  Model& model_;
  TestMemory& mem_;
  std::vector<std::byte> bar0_;
};

inline constexpr uint64_t kBaseFeatures = spec::bit(spec::kFVersion1) | spec::bit(spec::kFAccessPlatform) |
                                          spec::bit(spec::kFMac) | spec::bit(spec::kFStatus) |
                                          spec::bit(spec::kFMtu);

inline std::unique_ptr<VirtioNetModel> make_port(std::string_view options) {
  auto parsed = parse_options(options);
  EXPECT_TRUE(parsed.is_ok()) << parsed.status().message();
  auto model = VirtioNetModel::create(*parsed);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  return std::move(model.value());
}

// A frame whose bytes depend on its sequence number.
inline std::vector<std::byte> make_frame(uint32_t seq, size_t len) {
  std::vector<std::byte> frame(len);
  for (size_t i = 0; i < len; i++) frame[i] = static_cast<std::byte>((seq * 131 + i * 7) & 0xFF);
  if (len >= 18) std::memcpy(frame.data() + 14, &seq, sizeof(seq));
  return frame;
}

// One port with its memory, interrupts, driver, and queue pair 0 (RX vector 1, TX
// vector 2, config vector 0).
struct TestPort {
  static constexpr uint16_t kConfigVector = 0;
  static constexpr uint16_t kRxVector = 1;
  static constexpr uint16_t kTxVector = 2;

  explicit TestPort(std::string_view options) : model(make_port(options)), driver(*model, mem, irq) {}

  bool bring_up(uint64_t features = kBaseFeatures, uint16_t queue_size = 64) {
    if (!driver.negotiate(features)) return false;
    bool packed = features & spec::bit(spec::kFRingPacked);
    driver.w16(spec::common::kConfigMsixVector, kConfigVector);
    rx = driver.setup_queue(0, queue_size, kRxVector, packed);
    tx = driver.setup_queue(1, queue_size, kTxVector, packed);
    driver.driver_ok();
    return driver.status() & spec::kStatusDriverOk;
  }

  // Queues one packet (zeroed header + frame) in one descriptor and kicks.
  uint16_t send(const std::vector<std::byte>& frame, bool do_kick = true) {
    uint64_t at = mem.alloc(spec::kNetHdrSize + frame.size(), 16);
    std::vector<std::byte> packet(spec::kNetHdrSize);
    packet.insert(packet.end(), frame.begin(), frame.end());
    EXPECT_TRUE(mem.write(at, packet.data(), packet.size()));
    uint16_t head = driver.add_chain(tx, {{at, static_cast<uint32_t>(packet.size()), false}});
    if (do_kick) driver.kick(tx);
    return head;
  }

  void post_rx(size_t count, uint32_t len, bool do_kick = true) {
    for (size_t i = 0; i < count; i++) {
      uint64_t at = mem.alloc(len, 16);
      uint16_t head = driver.add_chain(rx, {{at, len, true}});
      rx_buffers[head] = at;
    }
    if (do_kick) driver.kick(rx);
  }

  // The next received packet: header then frame bytes, as the device wrote them.
  std::optional<std::vector<std::byte>> receive() {
    auto used = driver.next_used(rx);
    if (!used) return std::nullopt;
    auto it = rx_buffers.find(static_cast<uint16_t>(used->id));
    EXPECT_NE(it, rx_buffers.end()) << "used id " << used->id << " was never posted";
    if (it == rx_buffers.end()) return std::nullopt;
    std::vector<std::byte> bytes(used->len);
    EXPECT_TRUE(mem.read(it->second, bytes.data(), bytes.size()));
    return bytes;
  }

  std::unique_ptr<VirtioNetModel> model;
  TestMemory mem;
  RecordingIrq irq;
  TestDriver driver;
  DriverQueue rx, tx;
  std::map<uint16_t, uint64_t> rx_buffers;  // head -> buffer
};

// Header fields of a received packet.
inline uint16_t num_buffers(const std::vector<std::byte>& packet) {
  uint16_t n = 0;
  std::memcpy(&n, packet.data() + spec::kNetHdrNumBuffersOffset, 2);
  return n;
}

}  // namespace uvio::emu::virtio_net::testing
