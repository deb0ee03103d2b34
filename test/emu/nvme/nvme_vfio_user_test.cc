// The NVMe model served by the vfio-user server, driven through the vfio-user client:
// registers by message, doorbells through the mmapped page, data through DMA_MAPped
// runtime memory, completions signalled on MSI-X eventfds.
#include <uvio/mem.h>

#include "emu/nvme/controller.h"
#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

namespace uvio::emu::nvme {
namespace {

// Waits (with a bound far above any real delay) for the vector's eventfd.
bool wait_eventfd(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return false;
  eventfd_t v;
  return eventfd_read(fd, &v) == 0 && v > 0;
}

struct Queue {
  SubmissionEntry* sq = nullptr;
  CompletionEntry* cq = nullptr;
  uint32_t size = 0;
  uint32_t tail = 0;
  uint32_t head = 0;
  bool phase = true;
};

struct EmulatedNvme {
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  std::unique_ptr<Server> server;
  std::unique_ptr<iommu::Device> dev;
  volatile uint32_t* doorbells = nullptr;
  int irq[2] = {-1, -1};
  uint16_t cid = 1;

  EmulatedNvme() {
    MemConfig cfg;
    cfg.total_bytes = 4u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    EXPECT_TRUE(m) << m.status().describe();
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
    auto opt = parse_nvme_options({{"size", "1M"}, {"queues", "1"}});
    EXPECT_TRUE(opt);
    auto model = NvmeController::create(*opt);
    EXPECT_TRUE(model);
    auto s = Server::create(std::move(*model));
    EXPECT_TRUE(s) << s.status().describe();
    server = std::move(*s);
    auto fd = server->connect();
    EXPECT_TRUE(fd) << fd.status().describe();
    auto d = iommu::open_vfio_user_fd(*fd, "emu-nvme", *space, {});
    EXPECT_TRUE(d) << d.status().describe();
    dev = std::move(*d);
    for (int& f : irq) f = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    EXPECT_TRUE(dev->set_irq_eventfds(iommu::kMsixIrq, 0, irq));
    auto page = dev->region_map(iommu::kBar0, kDoorbellPage, kDoorbellPage);
    EXPECT_TRUE(page) << page.status().describe();
    doorbells = static_cast<volatile uint32_t*>(*page);
  }
  ~EmulatedNvme() {
    dev.reset();
    server.reset();
    for (int f : irq) ::close(f);
  }

  void write_reg(uint64_t offset, const void* value, size_t len) {
    ASSERT_TRUE(dev->region_write(iommu::kBar0, offset, value, len));
  }
  uint32_t read_reg32(uint64_t offset) {
    uint32_t v = 0;
    EXPECT_TRUE(dev->region_read(iommu::kBar0, offset, &v, 4));
    return v;
  }
  uint64_t iova(const void* p) { return mem->iova_of(p); }

  Queue make_queue(uint32_t entries) {
    Queue q;
    q.size = entries;
    q.sq = static_cast<SubmissionEntry*>(mem->alloc(entries * 64, 4096));
    q.cq = static_cast<CompletionEntry*>(mem->alloc(4096, 4096));
    std::memset(q.cq, 0, 4096);
    return q;
  }

  // Submits, rings the SQ doorbell in the mapped page, waits for the vector, reaps.
  CompletionEntry run(Queue& q, uint16_t qid, SubmissionEntry cmd, int vector) {
    cmd.cid = cid++;
    q.sq[q.tail] = cmd;
    q.tail = (q.tail + 1) % q.size;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    doorbells[2 * qid] = q.tail;
    CompletionEntry e{};
    for (int tries = 0; tries < 3; ++tries) {
      uint16_t status = __atomic_load_n(&q.cq[q.head].status, __ATOMIC_ACQUIRE);
      if (bool(status & 1) == q.phase) break;
      EXPECT_TRUE(wait_eventfd(irq[vector]));
    }
    std::memcpy(&e, &q.cq[q.head], sizeof(e));
    EXPECT_EQ(bool(e.status & 1), q.phase) << "no completion";
    EXPECT_EQ(e.cid, cmd.cid);
    if (++q.head == q.size) q.head = 0, q.phase = !q.phase;
    doorbells[2 * qid + 1] = q.head;
    return e;
  }
};

TEST(NvmeVfioUser, EnableIdentifyWriteAndReadThroughTheServer) {
  EmulatedNvme n;
  uint64_t cap = 0;
  ASSERT_TRUE(n.dev->region_read(iommu::kBar0, kRegCap, &cap, 8));
  EXPECT_EQ(cap & 0xffff, 1023u);

  Queue admin = n.make_queue(16);
  uint32_t aqa = 15 | 15u << 16;
  uint64_t asq = n.iova(admin.sq), acq = n.iova(admin.cq);
  n.write_reg(kRegAqa, &aqa, 4);
  n.write_reg(kRegAsq, &asq, 8);
  n.write_reg(kRegAcq, &acq, 8);
  uint32_t cc = kCcEn | 6u << kCcIosqesShift | 4u << kCcIocqesShift;
  n.write_reg(kRegCc, &cc, 4);
  ASSERT_EQ(n.read_reg32(kRegCsts) & (kCstsRdy | kCstsCfs), kCstsRdy);

  auto* id = static_cast<uint8_t*>(n.mem->alloc(4096, 4096));
  SubmissionEntry c{};
  c.opcode = kAdminIdentify;
  c.cdw10 = kCnsController;
  c.prp1 = n.iova(id);
  ASSERT_EQ(n.run(admin, 0, c, 0).status >> 1, 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(id + 24), 18), "uvio emulated NVMe");

  Queue io = n.make_queue(8);
  c = {};
  c.opcode = kAdminCreateCq;
  c.prp1 = n.iova(io.cq);
  c.cdw10 = 1 | 7u << 16;
  c.cdw11 = 1 | 2 | 1u << 16;  // contiguous, interrupts on vector 1
  ASSERT_EQ(n.run(admin, 0, c, 0).status >> 1, 0);
  c = {};
  c.opcode = kAdminCreateSq;
  c.prp1 = n.iova(io.sq);
  c.cdw10 = 1 | 7u << 16;
  c.cdw11 = 1 | 1u << 16;
  ASSERT_EQ(n.run(admin, 0, c, 0).status >> 1, 0);

  auto* src = static_cast<uint8_t*>(n.mem->alloc(8192, 4096));
  auto* dst = static_cast<uint8_t*>(n.mem->alloc(8192, 4096));
  for (int i = 0; i < 8192; ++i) src[i] = uint8_t(i * 31 + 7);
  std::memset(dst, 0, 8192);
  c = {};
  c.opcode = kIoWrite;
  c.nsid = 1;
  c.prp1 = n.iova(src);
  c.prp2 = n.iova(src + 4096);
  c.cdw10 = 64;
  c.cdw12 = 15;  // 16 blocks
  ASSERT_EQ(n.run(io, 1, c, 1).status >> 1, 0);
  c.opcode = kIoRead;
  c.prp1 = n.iova(dst);
  c.prp2 = n.iova(dst + 4096);
  ASSERT_EQ(n.run(io, 1, c, 1).status >> 1, 0);
  EXPECT_EQ(std::memcmp(src, dst, 8192), 0);

  c.nsid = 2;
  EXPECT_EQ((n.run(io, 1, c, 1).status >> 1) & 0xff, kScInvalidNamespace);
}

}  // namespace
}  // namespace uvio::emu::nvme
