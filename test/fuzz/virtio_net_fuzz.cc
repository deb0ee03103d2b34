// libFuzzer target: what the virtio-net driver (pmd/virtio/net.cc over the split and
// packed rings) reads from its device. The device is a Transport whose answers come
// from the input: offered features, the virtio-net configuration space (MAC, status,
// max_virtqueue_pairs, MTU), queue sizes; then, step by step, used-ring entries (id,
// length, for packed rings the flags; for split rings the used index itself) and the
// virtio_net_hdr (num_buffers) the device writes into each receive buffer, between RX
// and TX bursts.
//
// Input: u64 features, 12 bytes of config space, u16 max queue size, u16 ring size,
// u8 options, then steps: u8 op, u8 count, count x {u32 id, u32 len, u16 num_buffers,
// u16 flags}, and for a split ring with op bit 2 a u16 used index.
#include <uvio/log.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>
#include <uvio/mempool.h>

#include "pmd/virtio/net.h"
#include "pmd/virtio/transport.h"
#include "pmd/virtio/virtqueue_packed.h"
#include "test/fuzz/fuzz_input.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

using uvio::fuzz::Input;
namespace virtio = uvio::virtio;

namespace {

struct Fixture {
  std::unique_ptr<uvio::Memory> mem;
  std::unique_ptr<uvio::Mempool> rx_pool, tx_pool;
  Fixture() {
    // Quiet: a fuzzer logs every refusal otherwise. UVIO_FUZZ_LOG=1 shows them.
    uvio::log::set_global_level(std::getenv("UVIO_FUZZ_LOG") ? uvio::log::Level::Debug : uvio::log::Level::Emerg);
    uvio::MemConfig cfg;
    cfg.total_bytes = 16u << 20;
    cfg.hugepages = false;
    auto m = uvio::Memory::create(cfg);
    if (!m) abort();
    mem = std::move(*m);
    auto rx = uvio::mbuf_pool_create(*mem, "fuzz-rx", 1023, 0);
    auto tx = uvio::mbuf_pool_create(*mem, "fuzz-tx", 255, 0);
    if (!rx || !tx) abort();
    rx_pool = std::move(*rx);
    tx_pool = std::move(*tx);
  }
  // The device's view of an IOVA: the buffer, when `len` bytes there are runtime memory.
  std::byte* device_va(uint64_t iova, size_t len) const {
    for (const uvio::MemArea* a : mem->areas())
      if (iova >= a->iova && iova - a->iova < a->len && len <= a->len - (iova - a->iova))
        return a->va + (iova - a->iova);
    return nullptr;
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// The device: answers the driver from the input and writes the rings when told to.
class FuzzDevice final : public virtio::Transport {
 public:
  explicit FuzzDevice(Input& in) : in_(in) {
    offered_ = in.get<uint64_t>();
    auto cfg = in.bytes(config_.size());
    std::memcpy(config_.data(), cfg.data(), cfg.size());
    max_size_ = in.get<uint16_t>();
  }
  std::string_view name() const override { return "fuzz-virtio"; }
  bool behind_iommu() const override { return true; }
  uvio::Status reset() override {
    queues_.clear();
    return uvio::Status::ok();
  }
  uvio::Result<uint64_t> device_features() override { return offered_; }
  uvio::Status set_features(uint64_t features) override {
    packed_ = features & virtio::feature_bit(virtio::kFRingPacked);
    return uvio::Status::ok();
  }
  uvio::Status driver_ok() override { return uvio::Status::ok(); }
  uvio::Result<uint8_t> status() override { return uint8_t{virtio::kStatusDriverOk}; }
  uint16_t max_queues() const override { return 3; }
  uvio::Result<uint16_t> max_queue_size(uint16_t) override { return max_size_; }
  uvio::Status setup_queue(const virtio::QueueLayout& layout, bool) override {
    queues_[layout.index] = Queue{layout};
    return uvio::Status::ok();
  }
  virtio::Doorbell doorbell(uint16_t index) override {
    virtio::Doorbell d;
    d.slow = this;
    d.queue = index;
    return d;
  }
  void notify(uint16_t) override {}
  int interrupt_fd(uint16_t) const override { return -1; }
  uvio::Status read_config(uint32_t offset, void* buf, size_t len) override {
    if (offset > config_.size() || len > config_.size() - offset)
      return uvio::Status::error(EINVAL, "outside the configuration space");
    std::memcpy(buf, config_.data() + offset, len);
    return uvio::Status::ok();
  }

  // One step of the device from the input: returns used entries on one queue.
  void step() {
    uint8_t op = in_.get<uint8_t>();
    uint8_t count = in_.get<uint8_t>() % 64;
    auto it = queues_.find(op & 1);
    Queue* q = it == queues_.end() ? nullptr : &it->second;
    for (uint8_t i = 0; i < count; ++i) {
      uint32_t id = in_.get<uint32_t>();
      uint32_t len = in_.get<uint32_t>();
      uint16_t num_buffers = in_.get<uint16_t>();
      uint16_t flags = in_.get<uint16_t>();
      if (q) packed_ ? put_packed(*q, id, len, num_buffers, flags, op & 4) : put_split(*q, id, len, num_buffers);
    }
    if (q && !packed_) {
      uint16_t idx = (op & 4) ? in_.get<uint16_t>() : q->used_idx;
      std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(static_cast<std::byte*>(q->layout.used_va) + 2))
          .store(idx, std::memory_order_release);
    }
  }

 private:
  struct Queue {
    virtio::QueueLayout layout;
    uint16_t used_idx = 0;  // split: the next used index
    uint16_t pos = 0;       // packed: the next descriptor the device writes
    bool wrap = true;
  };

  // What a device writes into a receive buffer first: the virtio_net_hdr (§5.1.6).
  void write_header(uint64_t addr, uint32_t buf_len, uint16_t num_buffers) {
    if (buf_len < sizeof(virtio::NetHdr)) return;
    std::byte* p = fixture().device_va(addr, sizeof(virtio::NetHdr));
    if (!p) return;
    virtio::NetHdr h{};
    h.num_buffers = num_buffers;
    std::memcpy(p, &h, sizeof(h));
  }

  void put_split(Queue& q, uint32_t id, uint32_t len, uint16_t num_buffers) {
    auto* desc = static_cast<virtio::VirtqDesc*>(q.layout.desc_va);
    if (id < q.layout.size && (q.layout.index & 1) == 0) write_header(desc[id].addr, desc[id].len, num_buffers);
    auto* ring = reinterpret_cast<virtio::VirtqUsedElem*>(static_cast<std::byte*>(q.layout.used_va) + 4);
    ring[q.used_idx & (q.layout.size - 1)] = virtio::VirtqUsedElem{id, len};
    q.used_idx++;
  }

  void put_packed(Queue& q, uint32_t id, uint32_t len, uint16_t num_buffers, uint16_t flags, bool raw_flags) {
    auto* ring = static_cast<virtio::PackedDesc*>(q.layout.desc_va);
    virtio::PackedDesc& d = ring[q.pos];
    if ((q.layout.index & 1) == 0) write_header(d.addr, d.len, num_buffers);
    d.len = len;
    d.id = static_cast<uint16_t>(id);
    uint16_t used = q.wrap ? (virtio::kPackedDescFAvail | virtio::kPackedDescFUsed) : 0;
    std::atomic_ref<uint16_t>(d.flags).store(raw_flags ? flags : used, std::memory_order_release);
    if (++q.pos == q.layout.size) {
      q.pos = 0;
      q.wrap = !q.wrap;
    }
  }

  Input& in_;
  uint64_t offered_ = 0;
  std::array<uint8_t, 12> config_{};
  uint16_t max_size_ = 0;
  bool packed_ = false;
  std::map<uint16_t, Queue> queues_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  Input in(data, size);
  auto device = std::make_unique<FuzzDevice>(in);
  FuzzDevice* dev = device.get();
  uint16_t ring_size = in.get<uint16_t>() % 512;
  uint8_t options = in.get<uint8_t>();
  auto port = virtio::NetPort::create(*f.mem, std::move(device), options & 1);
  if (!port) return 0;
  uvio::EthConfig cfg;
  cfg.ring_size = ring_size;
  cfg.rx_pool = f.rx_pool.get();
  if (!(*port)->configure(cfg) || !(*port)->start()) return 0;
  for (int steps = 0; steps < 256 && !in.empty(); ++steps) {
    dev->step();
    uvio::Mbuf* pkts[32];
    uint16_t got = (*port)->rx_burst(0, pkts, 32);
    for (uint16_t i = 0; i < got; ++i) {
      // What an application does with a packet: read every byte of every segment.
      volatile uint8_t sink = 0;
      for (uvio::Mbuf* s = pkts[i]; s; s = s->next)
        for (uint16_t b = 0; b < s->data_len; ++b) sink = sink + static_cast<uint8_t>(s->data()[b]);
      uvio::mbuf_free(pkts[i]);
    }
    uint16_t want = in.get<uint8_t>() % 8;
    uvio::Mbuf* tx[8];
    uint16_t n = 0;
    for (; n < want; ++n) {
      tx[n] = uvio::mbuf_alloc(*f.tx_pool);
      if (!tx[n]) break;
      uvio::mbuf_append(tx[n], 60);
    }
    uint16_t sent = (*port)->tx_burst(0, tx, n);
    for (uint16_t i = sent; i < n; ++i) uvio::mbuf_free(tx[i]);
    (void)(*port)->link();
  }
  (*port)->stop();
  port->reset();
  // Whatever the device did, every mbuf is back in its pool exactly once: fewer is a
  // leak, more a double free that would hand one buffer to two owners.
  if (f.rx_pool->available() != f.rx_pool->count() || f.tx_pool->available() != f.tx_pool->count()) {
    std::fprintf(stderr, "virtio_net_fuzz: pools hold %u/%u and %u/%u mbufs after the port closed\n",
                 f.rx_pool->available(), f.rx_pool->count(), f.tx_pool->available(), f.tx_pool->count());
    __builtin_trap();
  }
  return 0;
}
