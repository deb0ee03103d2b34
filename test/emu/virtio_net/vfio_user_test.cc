// The virtio-net model served by the vfio-user server and reached through the
// vfio-user client, with no driver library in between: capabilities in config space,
// registers by message, kicks through the mmapped notify page, frames through
// DMA_MAPped runtime memory, interrupts on MSI-X eventfds.
#include <uvio/mem.h>

#include "emu/server.h"
#include "emu/virtio_net/virtio_net_model.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

namespace uvio::emu::virtio_net {
namespace {

using Model = VirtioNetModel;

bool wait_eventfd(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return false;  // a bound far above any real delay
  eventfd_t v;
  return eventfd_read(fd, &v) == 0 && v > 0;
}

class ServedPort {
 public:
  ServedPort() {
    MemConfig cfg;
    cfg.total_bytes = 4u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    EXPECT_TRUE(m) << m.status().describe();
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    Options options;
    options.loopback = true;
    auto model = Model::create(options);
    EXPECT_TRUE(model);
    auto s = Server::create(std::move(*model));
    EXPECT_TRUE(s) << s.status().describe();
    server = std::move(*s);
    auto fd = server->connect();
    EXPECT_TRUE(fd) << fd.status().describe();
    auto d = iommu::open_vfio_user_fd(*fd, "emu-virtio-net", *space, {});
    EXPECT_TRUE(d) << d.status().describe();
    dev = std::move(*d);
    for (int& f : irq) f = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    EXPECT_TRUE(dev->set_irq_eventfds(iommu::kMsixIrq, 0, irq));
    auto page = dev->region_map(iommu::kBar0, Model::kNotifyOffset, Model::kNotifySize);
    EXPECT_TRUE(page) << page.status().describe();
    notify = static_cast<std::byte*>(*page);
  }
  ~ServedPort() {
    dev.reset();
    server.reset();
    for (int f : irq) ::close(f);
  }

  template <class T>
  void write(uint64_t offset, T value) {
    ASSERT_TRUE(dev->region_write(iommu::kBar0, offset, &value, sizeof(value)));
  }
  template <class T>
  T read(uint64_t offset) {
    T value{};
    EXPECT_TRUE(dev->region_read(iommu::kBar0, offset, &value, sizeof(value)));
    return value;
  }
  uint64_t iova(const void* p) { return mem->iova_of(p); }

  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  std::unique_ptr<Server> server;
  std::unique_ptr<iommu::Device> dev;
  std::byte* notify = nullptr;
  int irq[4] = {-1, -1, -1, -1};  // config, RX, TX, control
};

struct SplitRing {
  spec::Desc* desc;
  uint16_t* avail;  // flags, idx, ring[]
  uint16_t* used;   // flags, idx, then {u32 id, u32 len} elements
};

SplitRing make_ring(ServedPort& p, uint16_t queue, uint16_t size, uint16_t vector) {
  SplitRing r;
  r.desc = static_cast<spec::Desc*>(p.mem->alloc(16u * size, 4096));
  r.avail = static_cast<uint16_t*>(p.mem->alloc(6u + 2u * size, 64));
  r.used = static_cast<uint16_t*>(p.mem->alloc(6u + 8u * size, 64));
  std::memset(r.desc, 0, 16u * size);
  std::memset(r.avail, 0, 6u + 2u * size);
  std::memset(r.used, 0, 6u + 8u * size);
  p.write<uint16_t>(spec::common::kQueueSelect, queue);
  p.write<uint16_t>(spec::common::kQueueSize, size);
  p.write<uint16_t>(spec::common::kQueueMsixVector, vector);
  p.write<uint64_t>(spec::common::kQueueDesc, p.iova(r.desc));
  p.write<uint64_t>(spec::common::kQueueDriver, p.iova(r.avail));
  p.write<uint64_t>(spec::common::kQueueDevice, p.iova(r.used));
  p.write<uint16_t>(spec::common::kQueueEnable, 1);
  return r;
}

void offer(SplitRing& r, uint16_t slot, const void* buf, ServedPort& p, uint32_t len, bool writable) {
  r.desc[slot] = spec::Desc{p.iova(buf), len, static_cast<uint16_t>(writable ? spec::kDescFWrite : 0), 0};
  r.avail[2 + slot] = slot;
  __atomic_store_n(&r.avail[1], static_cast<uint16_t>(slot + 1), __ATOMIC_RELEASE);
}

TEST(VirtioNetVfioUser, CapabilitiesAreLinkedInConfigSpace) {
  ServedPort p;
  uint16_t ids[2] = {};
  ASSERT_TRUE(p.dev->region_read(iommu::kConfigRegion, 0, ids, sizeof(ids)));
  EXPECT_EQ(ids[0], spec::kVendorId);
  EXPECT_EQ(ids[1], spec::kDeviceId);
  // Walk the list (PCI 3.0 §6.7) and collect the virtio cfg_types.
  uint8_t at = 0;
  ASSERT_TRUE(p.dev->region_read(iommu::kConfigRegion, 0x34, &at, 1));
  std::vector<uint8_t> types;
  for (int guard = 0; at != 0 && guard < 48; guard++) {
    uint8_t cap[20] = {};
    ASSERT_TRUE(p.dev->region_read(iommu::kConfigRegion, at, cap, 4));
    if (cap[0] == spec::kPciCapVendor) {
      ASSERT_TRUE(p.dev->region_read(iommu::kConfigRegion, at, cap, cap[2]));
      types.push_back(cap[3]);
      if (cap[3] == spec::kCapNotifyCfg) {
        uint32_t offset = 0, multiplier = 0;
        std::memcpy(&offset, cap + 8, 4);
        std::memcpy(&multiplier, cap + 16, 4);
        EXPECT_EQ(offset, Model::kNotifyOffset);
        EXPECT_EQ(multiplier, Model::kNotifyOffMultiplier);
      }
    }
    at = cap[1];
  }
  EXPECT_EQ(types, (std::vector<uint8_t>{spec::kCapCommonCfg, spec::kCapNotifyCfg, spec::kCapIsrCfg,
                                         spec::kCapDeviceCfg}));
}

TEST(VirtioNetVfioUser, LoopbackFrameThroughTheServer) {
  ServedPort p;
  using namespace spec::common;
  p.write<uint8_t>(kDeviceStatus, 0);
  p.write<uint8_t>(kDeviceStatus, spec::kStatusAcknowledge | spec::kStatusDriver);
  uint64_t features = spec::bit(spec::kFVersion1) | spec::bit(spec::kFAccessPlatform);
  p.write<uint32_t>(kDriverFeatureSelect, 0);
  p.write<uint32_t>(kDriverFeature, static_cast<uint32_t>(features));
  p.write<uint32_t>(kDriverFeatureSelect, 1);
  p.write<uint32_t>(kDriverFeature, static_cast<uint32_t>(features >> 32));
  uint8_t ready = spec::kStatusAcknowledge | spec::kStatusDriver | spec::kStatusFeaturesOk;
  p.write<uint8_t>(kDeviceStatus, ready);
  ASSERT_EQ(p.read<uint8_t>(kDeviceStatus), ready);
  p.write<uint16_t>(kConfigMsixVector, 0);
  SplitRing rx = make_ring(p, 0, 16, 1);
  SplitRing tx = make_ring(p, 1, 16, 2);
  p.write<uint8_t>(kDeviceStatus, ready | spec::kStatusDriverOk);

  auto* rx_buf = static_cast<uint8_t*>(p.mem->alloc(2048));
  auto* packet = static_cast<uint8_t*>(p.mem->alloc(spec::kNetHdrSize + 100));
  std::memset(packet, 0, spec::kNetHdrSize);
  for (int i = 0; i < 100; i++) packet[spec::kNetHdrSize + i] = static_cast<uint8_t>(i * 3 + 1);
  offer(rx, 0, rx_buf, p, 2048, true);
  offer(tx, 0, packet, p, spec::kNetHdrSize + 100, false);
  // §4.1.4.4: the kick is the queue index stored at its notify address, no message.
  __atomic_store_n(reinterpret_cast<uint16_t*>(p.notify + 1 * Model::kNotifyOffMultiplier), uint16_t{1},
                   __ATOMIC_RELEASE);

  ASSERT_TRUE(wait_eventfd(p.irq[1])) << "no RX interrupt";
  ASSERT_EQ(__atomic_load_n(&rx.used[1], __ATOMIC_ACQUIRE), 1);
  uint32_t elem[2];
  std::memcpy(elem, rx.used + 2, sizeof(elem));
  EXPECT_EQ(elem[0], 0u);
  EXPECT_EQ(elem[1], spec::kNetHdrSize + 100);
  EXPECT_EQ(std::memcmp(rx_buf + spec::kNetHdrSize, packet + spec::kNetHdrSize, 100), 0);
  uint16_t num_buffers = 0;
  std::memcpy(&num_buffers, rx_buf + spec::kNetHdrNumBuffersOffset, 2);
  EXPECT_EQ(num_buffers, 1);
  EXPECT_TRUE(wait_eventfd(p.irq[2])) << "no TX interrupt";
  EXPECT_EQ(__atomic_load_n(&tx.used[1], __ATOMIC_ACQUIRE), 1);
}

}  // namespace
}  // namespace uvio::emu::virtio_net
