// NVM I/O commands, PRPs, doorbells and interrupts of the emulated NVMe controller.
#include "test/emu/nvme/nvme_test_host.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

namespace uvio::emu::nvme::test {
namespace {

bool same_bytes(NvmeHost& host, uint64_t a, uint64_t b, size_t len) {
  return std::memcmp(host.dma.at(a), host.dma.at(b), len) == 0;
}

struct IoFixture : ::testing::Test {
  void SetUp() override {
    host.enable();
    q = host.create_io_queue(1, 64, 3);
  }
  uint16_t io(SubmissionEntry c) { return NvmeHost::sc(host.run(q, c)); }
  NvmeHost host{{"size", "4M"}};
  HostQueue q;
};

TEST_F(IoFixture, WriteThenReadWithPrp1Only) {
  uint64_t src = host.alloc(4096), dst = host.alloc(4096);
  host.fill(src + 512, 1024, 1);
  ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 10, 2, src + 512)), 0);
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 10, 2, dst + 1024)), 0);
  EXPECT_TRUE(same_bytes(host, src + 512, dst + 1024, 1024));
  // Block 11 alone is the second half.
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 11, 1, dst)), 0);
  EXPECT_TRUE(same_bytes(host, src + 1024, dst, 512));
}

TEST_F(IoFixture, WriteThenReadWithPrp1AndPrp2) {
  uint64_t src = host.alloc(3 * 4096), dst = host.alloc(3 * 4096);
  // 6 KiB starting 2 KiB into a page: 2 KiB in PRP1's page, 4 KiB in PRP2's.
  uint64_t src_second = src + 2 * 4096;  // not adjacent to the first page
  host.fill(src + 2048, 2048, 7);
  host.fill(src_second, 4096, 9);
  ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 100, 12, src + 2048, src_second)), 0);
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 100, 4, dst)), 0);
  EXPECT_TRUE(same_bytes(host, src + 2048, dst, 2048));
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 104, 8, dst + 4096)), 0);
  EXPECT_TRUE(same_bytes(host, src_second, dst + 4096, 4096));
}

// Pages of the buffer scattered in reverse order, described by a PRP list.
TEST_F(IoFixture, WriteThenReadWithPrpListAcrossManyPages) {
  constexpr int kPages = 16;
  uint64_t pages[kPages];
  uint64_t area = host.alloc(2 * kPages * 4096);
  for (int i = 0; i < kPages; ++i) pages[i] = area + uint64_t(2 * (kPages - 1 - i)) * 4096;
  for (int i = 0; i < kPages; ++i) host.fill(pages[i], 4096, uint8_t(i * 13));
  uint64_t list = host.alloc(4096);
  std::memcpy(host.dma.at(list), &pages[1], 8 * (kPages - 1));
  ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 2048, kPages * 8, pages[0], list)), 0);

  uint64_t dst = host.alloc(kPages * 4096);
  uint64_t dst_list = host.alloc(4096);
  for (int i = 1; i < kPages; ++i) {
    uint64_t p = dst + uint64_t(i) * 4096;
    std::memcpy(host.dma.at(dst_list + 8 * (i - 1)), &p, 8);
  }
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 2048, kPages * 8, dst, dst_list)), 0);
  for (int i = 0; i < kPages; ++i) EXPECT_TRUE(same_bytes(host, pages[i], dst + uint64_t(i) * 4096, 4096)) << i;
}

// A list that starts 16 bytes before the end of its page: one entry, then a pointer to
// the next list page (§4.3).
TEST_F(IoFixture, ChainedPrpListPages) {
  uint64_t data = host.alloc(5 * 4096);
  host.fill(data, 5 * 4096, 3);
  uint64_t list_a = host.alloc(4096), list_b = host.alloc(4096);
  uint64_t list_start = list_a + 4096 - 16;
  uint64_t e[2] = {data + 4096, list_b};
  std::memcpy(host.dma.at(list_start), e, 16);
  uint64_t rest[3] = {data + 2 * 4096, data + 3 * 4096, data + 4 * 4096};
  std::memcpy(host.dma.at(list_b), rest, sizeof(rest));
  ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 0, 40, data, list_start)), 0);
  uint64_t dst = host.alloc(5 * 4096);
  uint64_t dst_list = host.alloc(4096);
  for (int i = 1; i < 5; ++i) {
    uint64_t p = dst + uint64_t(i) * 4096;
    std::memcpy(host.dma.at(dst_list + 8 * (i - 1)), &p, 8);
  }
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 40, dst, dst_list)), 0);
  EXPECT_TRUE(same_bytes(host, data, dst, 5 * 4096));
}

TEST_F(IoFixture, CommandErrors) {
  uint64_t buf = host.alloc(2 * 4096);
  uint64_t blocks = (4u << 20) / 512;
  SubmissionEntry c = NvmeHost::rw(kIoRead, 1, 0, 1, buf);
  c.opcode = 0x05;  // Compare: not supported
  EXPECT_EQ(io(c), kScInvalidOpcode);
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 2, 0, 1, buf)), kScInvalidNamespace);
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 0, 0, 1, buf)), kScInvalidNamespace);
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 1, blocks - 1, 2, buf, buf + 4096)), kScLbaOutOfRange);
  EXPECT_EQ(io(NvmeHost::rw(kIoWrite, 1, ~0ull - 1, 4, buf)), kScLbaOutOfRange);
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 1, buf + 2)), kScPrpOffsetInvalid);
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 8, buf + 2048, buf + 4096 + 8)), kScPrpOffsetInvalid);
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 1, kUnmappedIova)), kScDataTransferError);
  EXPECT_EQ(io(NvmeHost::rw(kIoWrite, 1, 0, 24, buf, kUnmappedIova)), kScDataTransferError);  // list unreadable
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 257, buf, buf + 4096)), kScInvalidField);  // above MDTS
  c = NvmeHost::rw(kIoRead, 1, 0, 1, buf);
  c.flags = 1;  // fused
  EXPECT_EQ(io(c), kScInvalidField);
  // Nothing above touched memory outside the host buffer.
  EXPECT_GT(host.dma.failures, 0u);
}

TEST_F(IoFixture, PrpListEntryWithOffsetIsRefused) {
  uint64_t data = host.alloc(3 * 4096), list = host.alloc(4096);
  uint64_t e[2] = {data + 4096, data + 2 * 4096 + 64};
  std::memcpy(host.dma.at(list), e, sizeof(e));
  EXPECT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 24, data, list)), kScPrpOffsetInvalid);
}

TEST_F(IoFixture, FlushWriteZeroesAndDeallocate) {
  uint64_t buf = host.alloc(8 * 4096), rd = host.alloc(8 * 4096);
  host.fill(buf, 8 * 4096, 5);
  uint64_t list = host.alloc(4096);
  for (int i = 1; i < 8; ++i) {
    uint64_t p = buf + uint64_t(i) * 4096;
    std::memcpy(host.dma.at(list + 8 * (i - 1)), &p, 8);
  }
  ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 0, 64, buf, list)), 0);

  SubmissionEntry flush{};
  flush.opcode = kIoFlush;
  flush.nsid = 1;
  EXPECT_EQ(io(flush), 0);
  flush.nsid = 0xffffffff;
  EXPECT_EQ(io(flush), 0);
  flush.nsid = 7;
  EXPECT_EQ(io(flush), kScInvalidNamespace);

  // Write Zeroes over blocks 4..11 (crosses a 4 KiB boundary, partial pages).
  SubmissionEntry wz = NvmeHost::rw(kIoWriteZeroes, 1, 4, 8, 0);
  EXPECT_EQ(io(wz), 0);
  EXPECT_EQ(io(NvmeHost::rw(kIoWriteZeroes, 1, (4u << 20) / 512 - 1, 2, 0)), kScLbaOutOfRange);

  // Deallocate blocks 20..39 and 50..51.
  uint64_t ranges = host.alloc(4096);
  struct { uint32_t attr, blocks; uint64_t slba; } r[2] = {{0, 20, 20}, {0, 2, 50}};
  std::memcpy(host.dma.at(ranges), r, sizeof(r));
  SubmissionEntry dsm{};
  dsm.opcode = kIoDatasetManagement;
  dsm.nsid = 1;
  dsm.prp1 = ranges;
  dsm.cdw10 = 1;       // two ranges
  dsm.cdw11 = 1u << 2;  // deallocate
  EXPECT_EQ(io(dsm), 0);

  uint64_t rd_list = host.alloc(4096);
  for (int i = 1; i < 8; ++i) {
    uint64_t p = rd + uint64_t(i) * 4096;
    std::memcpy(host.dma.at(rd_list + 8 * (i - 1)), &p, 8);
  }
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 64, rd, rd_list)), 0);
  auto zero = [&](uint64_t first, uint64_t count) {
    for (uint64_t i = first * 512; i < (first + count) * 512; ++i)
      if (host.dma.at(rd)[i] != std::byte{0}) return false;
    return true;
  };
  EXPECT_TRUE(same_bytes(host, buf, rd, 4 * 512));
  EXPECT_TRUE(zero(4, 8));
  EXPECT_TRUE(same_bytes(host, buf + 12 * 512, rd + 12 * 512, 8 * 512));
  EXPECT_TRUE(zero(20, 20));
  EXPECT_TRUE(same_bytes(host, buf + 40 * 512, rd + 40 * 512, 10 * 512));
  EXPECT_TRUE(zero(50, 2));
  EXPECT_TRUE(same_bytes(host, buf + 52 * 512, rd + 52 * 512, 12 * 512));

  // A range out of bounds refuses the whole command and deallocates nothing.
  r[0] = {0, 4, 0};
  r[1] = {0, 4, (4u << 20) / 512};
  std::memcpy(host.dma.at(ranges), r, sizeof(r));
  EXPECT_EQ(io(dsm), kScLbaOutOfRange);
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 4, rd)), 0);
  EXPECT_TRUE(same_bytes(host, buf, rd, 4 * 512));
}

TEST_F(IoFixture, SmartLogCountsHostCommandsAndDataUnits) {
  uint64_t buf = host.alloc(4096);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 0, 8, buf)), 0);
  ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, 0, 1, buf)), 0);
  uint64_t log = host.alloc(4096);
  SubmissionEntry c{};
  c.opcode = kAdminGetLogPage;
  c.nsid = 0xffffffff;
  c.prp1 = log;
  c.cdw10 = kLogSmartHealth | (512 / 4 - 1) << 16;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  uint64_t v[4];
  std::memcpy(v, host.dma.at(log + 32), 8);
  std::memcpy(v + 1, host.dma.at(log + 48), 8);
  std::memcpy(v + 2, host.dma.at(log + 64), 8);
  std::memcpy(v + 3, host.dma.at(log + 80), 8);
  EXPECT_EQ(v[0], 1u);  // 1 unit of 512 bytes, rounded up to one thousand
  EXPECT_EQ(v[1], 1u);  // 24 units
  EXPECT_EQ(v[2], 1u);
  EXPECT_EQ(v[3], 3u);
}

TEST_F(IoFixture, InterruptsGoToEachQueuesVector) {
  uint64_t buf = host.alloc(4096);
  host.irq.vectors.clear();
  ASSERT_EQ(io(NvmeHost::rw(kIoWrite, 1, 0, 1, buf)), 0);
  EXPECT_EQ(host.irq.vectors, std::vector<uint32_t>{3});
  HostQueue quiet = host.create_io_queue(2, 8, 5, /*irq=*/false);
  host.irq.vectors.clear();
  ASSERT_EQ(NvmeHost::sc(host.run(quiet, NvmeHost::rw(kIoRead, 1, 0, 1, buf))), 0);
  EXPECT_TRUE(host.irq.vectors.empty());
}

TEST_F(IoFixture, PhaseTagFlipsWhenTheQueueWraps) {
  uint64_t buf = host.alloc(4096);
  for (int i = 0; i < 150; ++i) ASSERT_EQ(io(NvmeHost::rw(kIoRead, 1, i, 1, buf)), 0) << i;
  EXPECT_EQ(q.cq_head, 150u % 64);
  EXPECT_TRUE(q.phase);  // 150 = 2 * 64 + 22: two wraps, two flips
  EXPECT_TRUE(host.ctrl->state().cqs[1].phase);
  EXPECT_EQ(host.ctrl->state().cqs[1].tail, 150u % 64);
}

TEST_F(IoFixture, FullCompletionQueueHoldsSubmissions) {
  uint64_t buf = host.alloc(4096);
  HostQueue small = host.create_io_queue(2, 4, 1);
  SubmissionEntry c = NvmeHost::rw(kIoRead, 1, 0, 1, buf);
  for (uint16_t i = 0; i < 3; ++i) {
    c.cid = 500 + i;
    host.submit(small, c);
  }
  EXPECT_EQ(host.ctrl->poll(), 3u);  // a 4-entry CQ holds 3
  c.cid = 503;
  host.place(small, c);
  // Reap one entry without telling the device, then the device must still wait.
  host.ring_sq(small);
  EXPECT_EQ(host.ctrl->poll(), 0u);
  ASSERT_TRUE(host.reap(small));  // rings the CQ head doorbell
  EXPECT_EQ(host.ctrl->poll(), 1u);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(host.reap(small));
  EXPECT_FALSE(host.reap(small));
}

TEST_F(IoFixture, PollIsBoundedPerQueue) {
  uint64_t buf = host.alloc(4096);
  HostQueue other = host.create_io_queue(2, 64, 2);
  for (int i = 0; i < 50; ++i) {
    host.place(q, NvmeHost::rw(kIoRead, 1, 0, 1, buf));
    host.place(other, NvmeHost::rw(kIoRead, 1, 0, 1, buf));
  }
  host.ring_sq(q);
  host.ring_sq(other);
  EXPECT_EQ(host.ctrl->poll(), 2 * kBurstPerQueue);
  EXPECT_EQ(host.ctrl->state().sqs[1].head, kBurstPerQueue);
  EXPECT_EQ(host.ctrl->state().sqs[2].head, kBurstPerQueue);
  EXPECT_EQ(host.ctrl->poll(), 2 * (50 - kBurstPerQueue));
  EXPECT_EQ(host.ctrl->poll(), 0u);
}

TEST_F(IoFixture, ShadowDoorbellsReplaceRegisterWrites) {
  uint64_t shadow = host.alloc(4096), event_idx = host.alloc(4096);
  SubmissionEntry c{};
  c.opcode = kAdminDoorbellBufferConfig;
  c.prp1 = shadow + 8;  // not page aligned
  c.prp2 = event_idx;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kScInvalidField);
  c.prp1 = shadow;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  host.shadow = shadow;

  uint32_t* regs = host.doorbell_page();
  uint32_t sq_reg_before = regs[2];
  uint64_t src = host.alloc(4096), dst = host.alloc(4096);
  host.fill(src, 4096, 77);
  for (int i = 0; i < 100; ++i) {  // wraps the 64-entry queue
    ASSERT_EQ(io(NvmeHost::rw(i % 2 ? kIoRead : kIoWrite, 1, 8, 8, i % 2 ? dst : src)), 0) << i;
  }
  EXPECT_TRUE(same_bytes(host, src, dst, 4096));
  EXPECT_EQ(regs[2], sq_reg_before);  // no register write was needed
  // EventIdx stays one behind what the controller consumed, so the host's
  // need-event test (new - idx - 1 < new - old) never asks for a register write.
  EXPECT_EQ(host.ctrl->poll(), 0u);  // sees the last CQ head the host published
  uint32_t sq_idx, cq_idx;
  std::memcpy(&sq_idx, host.dma.at(event_idx + 8), 4);
  std::memcpy(&cq_idx, host.dma.at(event_idx + 12), 4);
  EXPECT_EQ(sq_idx, (q.sq_tail + 63) % 64);
  EXPECT_EQ(cq_idx, (q.cq_head + 63) % 64);
  uint16_t next = static_cast<uint16_t>(q.sq_tail + 1), old = static_cast<uint16_t>(q.sq_tail);
  EXPECT_FALSE(static_cast<uint16_t>(next - sq_idx - 1) < static_cast<uint16_t>(next - old));

  // The register still works beside the shadow, as drivers use it for the admin queue.
  regs[2] = q.sq_tail;  // unchanged value: no work
  EXPECT_EQ(host.ctrl->poll(), 0u);
  // A controller reset forgets the buffers.
  host.set32(kRegCc, 0);
  EXPECT_EQ(host.ctrl->state().shadow_doorbells, 0u);
}

TEST(NvmeIo, FourKibBlocks) {
  NvmeHost host({{"lba", "4096"}, {"size", "1M"}});
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);
  uint64_t src = host.alloc(8192), dst = host.alloc(8192);
  host.fill(src, 8192, 21);
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoWrite, 1, 255, 1, src))), 0);
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoWrite, 1, 255, 2, src, src + 4096))), kScLbaOutOfRange);
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 255, 1, dst))), 0);
  EXPECT_TRUE(same_bytes(host, src, dst, 4096));
}

TEST(NvmeIo, SeveralNamespacesAreIndependent) {
  NvmeHost host({{"ns", "2"}, {"size", "64K"}});
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);
  uint64_t a = host.alloc(4096), b = host.alloc(4096), rd = host.alloc(4096);
  host.fill(a, 512, 1);
  host.fill(b, 512, 2);
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoWrite, 1, 3, 1, a))), 0);
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoWrite, 2, 3, 1, b))), 0);
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 3, 1, rd))), 0);
  EXPECT_TRUE(same_bytes(host, a, rd, 512));
  ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 2, 3, 1, rd))), 0);
  EXPECT_TRUE(same_bytes(host, b, rd, 512));
}

TEST(NvmeIo, FileBackedNamespace) {
  char path[] = "/tmp/uvio-nvme-ns-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  {
    NvmeHost host({{"file", path}, {"size", "256K"}});
    host.enable();
    HostQueue q = host.create_io_queue(1, 8);
    uint64_t src = host.alloc(3 * 4096), dst = host.alloc(3 * 4096);
    host.fill(src, 3 * 4096, 11);
    uint64_t list = host.alloc(4096);
    uint64_t e[2] = {src + 4096, src + 2 * 4096};
    std::memcpy(host.dma.at(list), e, sizeof(e));
    ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoWrite, 1, 8, 24, src, list))), 0);
    SubmissionEntry flush{};
    flush.opcode = kIoFlush;
    flush.nsid = 1;
    ASSERT_EQ(NvmeHost::sc(host.run(q, flush)), 0);
    std::vector<std::byte> file(3 * 4096);
    ASSERT_EQ(pread(fd, file.data(), file.size(), 8 * 512), ssize_t(file.size()));
    EXPECT_EQ(std::memcmp(file.data(), host.dma.at(src), file.size()), 0);
    ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoWriteZeroes, 1, 9, 2, 0))), 0);
    ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 8, 8, dst))), 0);
    EXPECT_TRUE(same_bytes(host, src, dst, 512));
    for (int i = 512; i < 1536; ++i) ASSERT_EQ(host.dma.at(dst)[i], std::byte{0});
    EXPECT_TRUE(same_bytes(host, src + 1536, dst + 1536, 4096 - 1536));
  }
  close(fd);
  unlink(path);
}

TEST(NvmeOptions, ArgumentsAndFaultPlanAreChecked) {
  EXPECT_FALSE(parse_nvme_options({{"bogus", "1"}}).is_ok());
  EXPECT_FALSE(parse_nvme_options({{"lba", "1024"}}).is_ok());
  EXPECT_FALSE(parse_nvme_options({{"queues", "0"}}).is_ok());
  EXPECT_FALSE(parse_nvme_options({{"size", "12Q"}}).is_ok());
  EXPECT_FALSE(parse_nvme_options({{"serial", std::string(21, 'x')}}).is_ok());
  auto opt = parse_nvme_options({{"size", "2M"}, {"ns", "3"}, {"faults", "cfs@100+timeout@50+badcid@7+phase@9"}});
  ASSERT_TRUE(opt.is_ok()) << opt.status().message();
  EXPECT_EQ(opt->namespace_bytes, 2u << 20);
  EXPECT_EQ(opt->namespaces, 3u);
  EXPECT_EQ(opt->faults.fatal_after, 100u);
  EXPECT_EQ(opt->faults.drop_completion, 50u);
  EXPECT_EQ(opt->faults.wrong_cid, 7u);
  EXPECT_EQ(opt->faults.stale_phase, 9u);
  EXPECT_FALSE(parse_fault_plan("cfs@0").is_ok());
  EXPECT_FALSE(parse_fault_plan("melt@3").is_ok());
  EXPECT_FALSE(parse_fault_plan("cfs").is_ok());
  EXPECT_FALSE(parse_nvme_options({}).value().faults.any());
  NvmeOptions zero_queues;
  zero_queues.io_queues = 0;
  EXPECT_EQ(NvmeController::create(zero_queues).status().code(), EINVAL);
  auto missing = NvmeController::create(parse_nvme_options({{"file", "/nonexistent/uvio-ns"}}).value());
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ENOENT);
}

}  // namespace
}  // namespace uvio::emu::nvme::test

#include "emu/registry.h"

namespace uvio::emu::nvme::test {
namespace {

TEST(NvmeRegistry, CreatesTheModelByName) {
  // Calling the factory directly also links the object that registers it.
  auto direct = make_nvme_model({{"ns", "2"}});
  ASSERT_TRUE(direct.is_ok()) << direct.status().message();
  EXPECT_EQ((*direct)->type_name(), "nvme");
  const ModelType* type = ModelRegistry::global().find("nvme");
  ASSERT_NE(type, nullptr);
  auto model = type->create({{"size", "1M"}, {"queues", "2"}});
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ((*model)->type_name(), "nvme");
  EXPECT_EQ((*model)->msix().vectors, 3u);
  auto bad = type->create({{"lba", "7"}});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("lba"), std::string::npos);
}

}  // namespace
}  // namespace uvio::emu::nvme::test
