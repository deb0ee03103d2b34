// Registers and admin commands of the emulated NVMe controller.
#include "test/emu/nvme/nvme_test_host.h"

namespace uvio::emu::nvme::test {
namespace {

constexpr uint16_t kInvalidField = kScInvalidField;
constexpr uint16_t kInvalidQid = 0x100 | kScInvalidQueueId;
constexpr uint16_t kInvalidQsize = 0x100 | kScInvalidQueueSize;
constexpr uint16_t kCqInvalid = 0x100 | kScCompletionQueueInvalid;

TEST(NvmeRegisters, CapabilitiesAndVersionDescribeTheController) {
  NvmeHost host({{"mqes", "256"}});
  uint64_t cap = host.reg64(kRegCap);
  EXPECT_EQ(cap & 0xffff, 255u);             // MQES, 0's based
  EXPECT_TRUE(cap >> kCapCqrShift & 1);      // contiguous queues required
  EXPECT_EQ(cap >> kCapDstrdShift & 0xf, 0u);
  EXPECT_TRUE(cap >> kCapCssShift & 1);      // NVM command set
  EXPECT_EQ(cap >> kCapMpsminShift & 0xf, 0u);
  EXPECT_EQ(host.reg32(kRegCap + 4), static_cast<uint32_t>(cap >> 32));
  EXPECT_EQ(host.reg32(kRegVs), 0x00010400u);
  EXPECT_EQ(host.reg32(kRegCsts), 0u);
  auto bars = host.ctrl->bars();
  ASSERT_EQ(bars.size(), 1u);
  EXPECT_EQ(bars[0].size, kBar0Bytes);
  ASSERT_EQ(bars[0].shared.size(), 1u);
  EXPECT_EQ(bars[0].shared[0].offset, kDoorbellPage);
  EXPECT_EQ(host.ctrl->msix().vectors, 17u);
  EXPECT_EQ(host.ctrl->identity().class_code, 0x010802u);
}

TEST(NvmeRegisters, EnableSetsReadyAndDisableResetsQueues) {
  NvmeHost host;
  host.enable();
  EXPECT_EQ(host.reg32(kRegCsts) & (kCstsRdy | kCstsCfs), kCstsRdy);
  host.create_io_queue(1, 16);
  EXPECT_TRUE(host.ctrl->state().sqs[1].live);
  host.set32(kRegCc, 0);
  EXPECT_EQ(host.reg32(kRegCsts) & kCstsRdy, 0u);
  EXPECT_FALSE(host.ctrl->state().sqs[1].live);
  EXPECT_FALSE(host.ctrl->state().cqs[1].live);
  // The admin queue registers survive a controller reset.
  EXPECT_EQ(host.reg64(kRegAsq), host.admin.sq);
  EXPECT_EQ(host.ctrl->poll(), 0u);
}

TEST(NvmeRegisters, AdminQueueRegistersAreFrozenWhileEnabled) {
  NvmeHost host;
  host.enable();
  host.set32(kRegAqa, 0x00030003);
  host.ctrl->bar_write(0, kRegAsq, 0x5000, 8);
  EXPECT_EQ(host.reg32(kRegAqa), 31u | 31u << 16);
  EXPECT_EQ(host.reg64(kRegAsq), host.admin.sq);
}

TEST(NvmeRegisters, EnableWithBadAdminQueuesSetsFatalStatus) {
  NvmeHost host;
  host.set32(kRegAqa, 0);  // one-entry queues
  host.ctrl->bar_write(0, kRegAsq, kHostIova, 8);
  host.ctrl->bar_write(0, kRegAcq, kHostIova + 0x1000, 8);
  host.set32(kRegCc, NvmeHost::kCcEnable);
  EXPECT_EQ(host.reg32(kRegCsts) & (kCstsRdy | kCstsCfs), kCstsCfs);
  EXPECT_NE(host.ctrl->enable_error().find("AQA"), std::string::npos) << host.ctrl->enable_error();

  host.set32(kRegCc, 0);
  EXPECT_EQ(host.reg32(kRegCsts) & kCstsCfs, 0u);
  host.set32(kRegAqa, 0x00070007);
  host.ctrl->bar_write(0, kRegAcq, kHostIova + 0x1000, 8);
  host.set32(kRegCc, NvmeHost::kCcEnable | 1u << kCcCssShift);  // a command set we lack
  EXPECT_TRUE(host.reg32(kRegCsts) & kCstsCfs);
  EXPECT_NE(host.ctrl->enable_error().find("CSS"), std::string::npos);
}

TEST(NvmeRegisters, ShutdownNotificationCompletes) {
  NvmeHost host;
  host.enable();
  host.set32(kRegCc, NvmeHost::kCcEnable | 1u << kCcShnShift);
  EXPECT_EQ(host.reg32(kRegCsts) >> kCstsShstShift & 3, kShstComplete);
  EXPECT_TRUE(host.reg32(kRegCsts) & kCstsRdy);
  host.set32(kRegCc, 0);
  EXPECT_EQ(host.reg32(kRegCsts), 0u);
}

TEST(NvmeRegisters, InterruptMaskSetAndClear) {
  NvmeHost host;
  host.set32(kRegIntms, 0x5);
  host.set32(kRegIntms, 0x2);
  EXPECT_EQ(host.reg32(kRegIntms), 0x7u);
  host.set32(kRegIntmc, 0x1);
  EXPECT_EQ(host.reg32(kRegIntmc), 0x6u);
}

TEST(NvmeAdmin, IdentifyControllerReportsCapabilities) {
  NvmeHost host({{"ns", "3"}, {"serial", "SN42"}});
  host.enable();
  uint64_t buf = host.alloc(4096);
  SubmissionEntry c{};
  c.opcode = kAdminIdentify;
  c.cdw10 = kCnsController;
  c.prp1 = buf;
  auto e = host.admin_cmd(c);
  ASSERT_EQ(NvmeHost::sc(e), 0);
  const auto* id = reinterpret_cast<const uint8_t*>(host.dma.at(buf));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(id + 4), 20), "SN42                ");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(id + 24), 18), "uvio emulated NVMe");
  EXPECT_EQ(id[77], kMdts);
  EXPECT_EQ(id[512], 0x66);
  EXPECT_EQ(id[513], 0x44);
  uint32_t nn;
  std::memcpy(&nn, id + 516, 4);
  EXPECT_EQ(nn, 3u);
  uint16_t oncs, oacs;
  std::memcpy(&oncs, id + 520, 2);
  std::memcpy(&oacs, id + 256, 2);
  EXPECT_EQ(oncs & 0xc, 0xc);        // DSM and Write Zeroes
  EXPECT_TRUE(oacs & (1u << 8));     // Doorbell Buffer Config
  EXPECT_TRUE(id[525] & 1);          // volatile write cache
  EXPECT_EQ(host.irq.vectors, std::vector<uint32_t>{0});  // admin CQ on vector 0
}

TEST(NvmeAdmin, IdentifyNamespaceAndActiveList) {
  NvmeHost host({{"ns", "3"}, {"size", "1M"}, {"lba", "4096"}});
  host.enable();
  uint64_t buf = host.alloc(8192);
  SubmissionEntry c{};
  c.opcode = kAdminIdentify;
  c.cdw10 = kCnsNamespace;
  c.nsid = 2;
  c.prp1 = buf + 512;  // an offset into the page: the rest lands in PRP2
  c.prp2 = buf + 4096;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  const auto* ns = reinterpret_cast<const uint8_t*>(host.dma.at(buf + 512));
  uint64_t nsze;
  std::memcpy(&nsze, ns, 8);
  EXPECT_EQ(nsze, 256u);
  EXPECT_EQ(ns[128 + 2], 12);  // LBADS of format 0

  c.nsid = 4;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kScInvalidNamespace);

  c.cdw10 = kCnsActiveNamespaces;
  c.nsid = 1;
  c.prp1 = buf;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  uint32_t list[3];
  std::memcpy(list, host.dma.at(buf), sizeof(list));
  EXPECT_EQ(list[0], 2u);
  EXPECT_EQ(list[1], 3u);
  EXPECT_EQ(list[2], 0u);

  c.cdw10 = 0x55;  // unknown CNS
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kInvalidField);
}

TEST(NvmeAdmin, UnknownOpcodeAndSglAreRefused) {
  NvmeHost host;
  host.enable();
  SubmissionEntry c{};
  c.opcode = 0x7f;
  auto e = host.admin_cmd(c);
  EXPECT_EQ(NvmeHost::sc(e), kScInvalidOpcode);
  EXPECT_TRUE(NvmeHost::status_of(e) & (1u << 14));  // do not retry
  c.opcode = kAdminIdentify;
  c.cdw10 = kCnsController;
  c.flags = 1u << 6;  // PSDT: SGL
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kInvalidField);
}

TEST(NvmeAdmin, CreateQueueChecks) {
  NvmeHost host({{"queues", "4"}, {"mqes", "64"}});
  host.enable();
  uint64_t mem = host.alloc(64 * 64);
  auto create_cq = [&](uint32_t qid, uint32_t entries, uint32_t cdw11, uint64_t prp1) {
    SubmissionEntry c{};
    c.opcode = kAdminCreateCq;
    c.prp1 = prp1;
    c.cdw10 = qid | (entries - 1) << 16;
    c.cdw11 = cdw11;
    return NvmeHost::sc(host.admin_cmd(c));
  };
  auto create_sq = [&](uint32_t qid, uint32_t entries, uint32_t cqid, uint32_t pc = 1) {
    SubmissionEntry c{};
    c.opcode = kAdminCreateSq;
    c.prp1 = mem;
    c.cdw10 = qid | (entries - 1) << 16;
    c.cdw11 = pc | cqid << 16;
    return NvmeHost::sc(host.admin_cmd(c));
  };
  EXPECT_EQ(create_cq(0, 16, 3, mem), kInvalidQid);
  EXPECT_EQ(create_cq(5, 16, 3, mem), kInvalidQid);
  EXPECT_EQ(create_cq(1, 1, 3, mem), kInvalidQsize);
  EXPECT_EQ(create_cq(1, 65, 3, mem), kInvalidQsize);
  EXPECT_EQ(create_cq(1, 16, 2, mem), kInvalidField);  // not physically contiguous
  EXPECT_EQ(create_cq(1, 16, 3, mem + 8), kScPrpOffsetInvalid);
  EXPECT_EQ(create_cq(1, 16, 3 | 9u << 16, mem), 0x100 | kScInvalidInterruptVector);
  EXPECT_EQ(create_cq(1, 16, 3 | 4u << 16, mem), 0);
  EXPECT_EQ(create_cq(1, 16, 3, mem), kInvalidQid);  // exists

  EXPECT_EQ(create_sq(1, 16, 2), kCqInvalid);
  EXPECT_EQ(create_sq(1, 16, 0), kCqInvalid);
  EXPECT_EQ(create_sq(1, 1, 1), kInvalidQsize);
  EXPECT_EQ(create_sq(1, 16, 1, 0), kInvalidField);
  EXPECT_EQ(create_sq(0, 16, 1), kInvalidQid);
  EXPECT_EQ(create_sq(1, 16, 1), 0);
  EXPECT_EQ(create_sq(1, 16, 1), kInvalidQid);

  SubmissionEntry del{};
  del.opcode = kAdminDeleteCq;
  del.cdw10 = 1;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(del)), 0x100 | kScInvalidQueueDeletion);  // still used
  del.opcode = kAdminDeleteSq;
  del.cdw10 = 2;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(del)), kInvalidQid);
  del.cdw10 = 1;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(del)), 0);
  del.opcode = kAdminDeleteCq;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(del)), 0);
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(del)), kInvalidQid);
}

TEST(NvmeAdmin, NumberOfQueuesLimitsQueueIdsAndIsSetOnce) {
  NvmeHost host({{"queues", "8"}});
  host.enable();
  SubmissionEntry c{};
  c.opcode = kAdminSetFeatures;
  c.cdw10 = kFeatNumberOfQueues;
  c.cdw11 = 1 | 1u << 16;  // two of each
  auto e = host.admin_cmd(c);
  ASSERT_EQ(NvmeHost::sc(e), 0);
  EXPECT_EQ(e.dw0, 1u | 1u << 16);
  c.cdw11 = 100 | 100u << 16;
  e = host.admin_cmd(c);
  EXPECT_EQ(e.dw0, 7u | 7u << 16);  // capped at what exists
  c.cdw11 = 1 | 1u << 16;
  host.admin_cmd(c);

  SubmissionEntry cq{};
  cq.opcode = kAdminCreateCq;
  cq.prp1 = host.alloc(4096);
  cq.cdw10 = 3 | 15u << 16;
  cq.cdw11 = 1;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(cq)), kInvalidQid);  // beyond the two allocated
  host.create_io_queue(2, 16);
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kScCommandSequenceError);

  SubmissionEntry get{};
  get.opcode = kAdminGetFeatures;
  get.cdw10 = kFeatNumberOfQueues;
  EXPECT_EQ(host.admin_cmd(get).dw0, 1u | 1u << 16);
  get.cdw10 = kFeatNumberOfQueues | 1u << 8;  // default
  EXPECT_EQ(host.admin_cmd(get).dw0, 7u | 7u << 16);
}

TEST(NvmeAdmin, FeaturesAreStoredAndChecked) {
  NvmeHost host;
  host.enable();
  auto set = [&](uint32_t cdw10, uint32_t cdw11) {
    SubmissionEntry c{};
    c.opcode = kAdminSetFeatures;
    c.cdw10 = cdw10;
    c.cdw11 = cdw11;
    return host.admin_cmd(c);
  };
  auto get = [&](uint32_t cdw10, uint32_t cdw11 = 0) {
    SubmissionEntry c{};
    c.opcode = kAdminGetFeatures;
    c.cdw10 = cdw10;
    c.cdw11 = cdw11;
    return host.admin_cmd(c);
  };
  EXPECT_EQ(NvmeHost::sc(set(kFeatVolatileWriteCache, 0)), 0);
  EXPECT_EQ(get(kFeatVolatileWriteCache).dw0, 0u);
  EXPECT_EQ(NvmeHost::sc(set(kFeatInterruptCoalescing, 0x0a04)), 0);
  EXPECT_EQ(get(kFeatInterruptCoalescing).dw0, 0x0a04u);
  EXPECT_EQ(NvmeHost::sc(set(kFeatArbitration, 0x03)), 0);
  EXPECT_EQ(get(kFeatArbitration).dw0, 0x03u);
  EXPECT_EQ(NvmeHost::sc(set(kFeatPowerManagement, 1)), kInvalidField);  // only power state 0
  EXPECT_EQ(NvmeHost::sc(set(kFeatPowerManagement, 0)), 0);
  EXPECT_EQ(NvmeHost::sc(set(kFeatTemperatureThreshold, 0x0160)), 0);
  EXPECT_EQ(get(kFeatTemperatureThreshold).dw0, 0x0160u);
  EXPECT_EQ(NvmeHost::sc(set(kFeatArbitration | 1u << 31, 0)), 0x100 | kScFeatureNotSaveable);
  EXPECT_EQ(NvmeHost::sc(set(0x7e, 0)), kInvalidField);
  EXPECT_EQ(get(kFeatVolatileWriteCache | 3u << 8).dw0, 1u << 2);  // capabilities: changeable
  EXPECT_EQ(NvmeHost::sc(get(kFeatVolatileWriteCache | 4u << 8)), kInvalidField);
}

TEST(NvmeAdmin, LogPagesAndLengths) {
  NvmeHost host;
  host.enable();
  uint64_t buf = host.alloc(4096);
  SubmissionEntry c{};
  c.opcode = kAdminGetLogPage;
  c.prp1 = buf;
  c.cdw10 = kLogFirmwareSlot | (512 / 4 - 1) << 16;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  EXPECT_EQ(uint8_t(*host.dma.at(buf)), 1);
  c.cdw10 = 0x42 | 3u << 16;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0x100 | kScInvalidLogPage);
  c.cdw10 = kLogSmartHealth | 3u << 16;
  c.cdw12 = 2;  // not dword aligned
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kInvalidField);
  c.cdw12 = 512;  // past the end
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(c)), kInvalidField);
}

TEST(NvmeAdmin, ErrorLogRecordsFailedCommands) {
  NvmeHost host;
  host.enable();
  SubmissionEntry bad{};
  bad.opcode = 0x7f;
  auto failed = host.admin_cmd(bad);
  uint64_t buf = host.alloc(4096);
  SubmissionEntry c{};
  c.opcode = kAdminGetLogPage;
  c.prp1 = buf;
  c.cdw10 = kLogErrorInfo | (64 / 4 - 1) << 16;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  ErrorLogEntry entry;
  std::memcpy(&entry, host.dma.at(buf), sizeof(entry));
  EXPECT_EQ(entry.error_count, 1u);
  EXPECT_EQ(entry.cid, failed.cid);
  EXPECT_EQ(entry.sqid, 0);
  EXPECT_EQ(entry.status >> 1 & 0xff, kScInvalidOpcode);
}

TEST(NvmeAdmin, AsyncEventReportsInvalidDoorbellValue) {
  NvmeHost host;
  host.enable();
  HostQueue q = host.create_io_queue(1, 16);
  SubmissionEntry aer{};
  aer.opcode = kAdminAsyncEvent;
  aer.cid = 0x40;
  host.submit(host.admin, aer);
  host.ctrl->poll();
  EXPECT_FALSE(host.reap(host.admin).has_value());  // kept outstanding

  SubmissionEntry clash{};
  clash.opcode = kAdminGetFeatures;
  clash.cdw10 = kFeatArbitration;
  clash.cid = 0x40;
  host.submit(host.admin, clash);
  host.ctrl->poll();
  auto e = host.reap(host.admin);
  ASSERT_TRUE(e);
  EXPECT_EQ(NvmeHost::sc(*e), kScCommandIdConflict);

  host.doorbell_page()[2 * q.qid] = 99;  // beyond a 16-entry queue
  host.ctrl->poll();
  e = host.reap(host.admin);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->cid, 0x40);
  EXPECT_EQ(NvmeHost::sc(*e), 0);
  EXPECT_EQ(e->dw0, uint32_t(kAsyncInfoInvalidDoorbellValue) << 8 | uint32_t(kLogErrorInfo) << 16);
  EXPECT_EQ(host.ctrl->state().sqs[1].tail, 0u);  // the bad value was ignored
}

TEST(NvmeAdmin, AsyncEventLimitAndAbort) {
  NvmeHost host;
  host.enable();
  for (uint16_t i = 0; i < kMaxAsyncEvents; ++i) {
    SubmissionEntry aer{};
    aer.opcode = kAdminAsyncEvent;
    aer.cid = 0x100 + i;
    host.submit(host.admin, aer);
  }
  host.ctrl->poll();
  EXPECT_FALSE(host.reap(host.admin));
  SubmissionEntry aer{};
  aer.opcode = kAdminAsyncEvent;
  EXPECT_EQ(NvmeHost::sc(host.admin_cmd(aer)), 0x100 | kScAsyncEventLimitExceeded);

  SubmissionEntry abort{};
  abort.opcode = kAdminAbort;
  abort.cdw10 = 0 | 0x101u << 16;
  abort.cid = 0x77;
  host.submit(host.admin, abort);
  host.ctrl->poll();
  auto first = host.reap(host.admin);
  auto second = host.reap(host.admin);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->cid, 0x101);
  EXPECT_EQ(NvmeHost::sc(*first), kScAbortRequested);
  EXPECT_EQ(second->cid, 0x77);
  EXPECT_EQ(second->dw0 & 1, 0u);  // aborted
  EXPECT_EQ(host.ctrl->state().async_event_cids.size(), 3u);

  abort.cdw10 = 0 | 0x999u << 16;  // nothing with that id
  EXPECT_EQ(host.admin_cmd(abort).dw0 & 1, 1u);
}

TEST(NvmeAdmin, AbortOfAQueuedIoCommand) {
  NvmeHost host;
  host.enable();
  HostQueue q = host.create_io_queue(1, 16);
  uint64_t buf = host.alloc(4096);
  SubmissionEntry rd = NvmeHost::rw(kIoRead, 1, 0, 1, buf);
  rd.cid = 9;
  host.submit(q, rd);  // queued, not yet fetched
  SubmissionEntry abort{};
  abort.opcode = kAdminAbort;
  abort.cdw10 = 1 | 9u << 16;
  auto e = host.admin_cmd(abort);  // the same poll then reaches SQ 1
  EXPECT_EQ(e.dw0 & 1, 0u);
  auto io = host.reap(q);
  ASSERT_TRUE(io);
  EXPECT_EQ(io->cid, 9);
  EXPECT_EQ(NvmeHost::sc(*io), kScAbortRequested);
}

}  // namespace
}  // namespace uvio::emu::nvme::test

namespace uvio::emu::nvme::test {
namespace {

TEST(NvmeAdmin, ErrorEventsStayMaskedUntilTheLogIsRead) {
  NvmeHost host;
  host.enable();
  host.create_io_queue(1, 16);
  for (uint16_t cid : {0x40, 0x41}) {
    SubmissionEntry aer{};
    aer.opcode = kAdminAsyncEvent;
    aer.cid = cid;
    host.submit(host.admin, aer);
  }
  host.ctrl->poll();
  host.doorbell_page()[2] = 50;
  host.ctrl->poll();
  ASSERT_TRUE(host.reap(host.admin));
  host.doorbell_page()[2] = 51;  // masked: no second event yet
  host.ctrl->poll();
  EXPECT_FALSE(host.reap(host.admin));

  uint64_t buf = host.alloc(4096);
  SubmissionEntry log{};
  log.opcode = kAdminGetLogPage;
  log.prp1 = buf;
  log.cdw10 = kLogErrorInfo | 1u << 15 | 15u << 16;  // RAE: keeps the mask
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(log)), 0);
  host.doorbell_page()[2] = 52;
  host.ctrl->poll();
  EXPECT_FALSE(host.reap(host.admin));
  log.cdw10 = kLogErrorInfo | 15u << 16;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(log)), 0);
  host.doorbell_page()[2] = 53;
  host.ctrl->poll();
  auto e = host.reap(host.admin);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->cid, 0x41);
}

TEST(NvmeAdmin, UnreadableSubmissionQueueIsFatal) {
  NvmeHost host;
  host.enable();
  SubmissionEntry c{};
  c.opcode = kAdminCreateCq;
  c.prp1 = host.alloc(4096);
  c.cdw10 = 1 | 7u << 16;
  c.cdw11 = 1;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  c.opcode = kAdminCreateSq;
  c.prp1 = kUnmappedIova;
  c.cdw11 = 1 | 1u << 16;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  host.doorbell_page()[2] = 1;
  EXPECT_EQ(host.ctrl->poll(), 0u);
  EXPECT_TRUE(host.reg32(kRegCsts) & kCstsCfs);
}

TEST(NvmeAdmin, UnwritableCompletionQueueIsFatal) {
  NvmeHost host;
  host.enable();
  SubmissionEntry c{};
  c.opcode = kAdminCreateCq;
  c.prp1 = kUnmappedIova;
  c.cdw10 = 1 | 7u << 16;
  c.cdw11 = 1;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  c.opcode = kAdminCreateSq;
  c.prp1 = host.alloc(4096);
  c.cdw11 = 1 | 1u << 16;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  SubmissionEntry flush{};
  flush.opcode = kIoFlush;
  flush.nsid = 1;
  std::memcpy(host.dma.at(c.prp1), &flush, sizeof(flush));
  host.doorbell_page()[2] = 1;
  host.ctrl->poll();
  EXPECT_TRUE(host.reg32(kRegCsts) & kCstsCfs);
}

// A server that shares no page forwards doorbell writes as BAR writes.
TEST(NvmeRegisters, DoorbellsByMessageWhenNoPageIsShared) {
  auto opt = parse_nvme_options({});
  ASSERT_TRUE(opt);
  auto ctrl = NvmeController::create(*opt);
  ASSERT_TRUE(ctrl);
  TestDma dma(1 << 20);
  TestIrq irq;
  (*ctrl)->attach(dma, irq, {});
  uint64_t asq = kHostIova, acq = kHostIova + 4096, buf = kHostIova + 8192;
  (*ctrl)->bar_write(0, kRegAqa, 3 | 3u << 16, 4);
  (*ctrl)->bar_write(0, kRegAsq, asq, 8);
  (*ctrl)->bar_write(0, kRegAcq, acq, 8);
  (*ctrl)->bar_write(0, kRegCc, NvmeHost::kCcEnable, 4);
  SubmissionEntry c{};
  c.opcode = kAdminIdentify;
  c.cdw10 = kCnsController;
  c.cid = 5;
  c.prp1 = buf;
  std::memcpy(dma.at(asq), &c, sizeof(c));
  EXPECT_EQ((*ctrl)->poll(), 0u);
  (*ctrl)->bar_write(0, kDoorbellPage, 1, 4);
  EXPECT_EQ((*ctrl)->bar_read(0, kDoorbellPage, 4), 0u);  // doorbells read as zero
  EXPECT_EQ((*ctrl)->poll(), 1u);
  CompletionEntry e;
  std::memcpy(&e, dma.at(acq), sizeof(e));
  EXPECT_EQ(e.cid, 5);
  EXPECT_EQ(e.status, 1);  // success, phase 1
  EXPECT_EQ(irq.vectors, std::vector<uint32_t>{0});
}

TEST(NvmeRegisters, NarrowAndWideAccesses) {
  NvmeHost host;
  host.ctrl->bar_write(0, kRegAqa, 0x07, 1);
  host.ctrl->bar_write(0, kRegAqa + 2, 0x09, 2);
  EXPECT_EQ(host.reg32(kRegAqa), 0x00090007u);
  EXPECT_EQ(host.ctrl->bar_read(0, kRegAqa + 2, 2), 0x9u);
  host.ctrl->bar_write(0, kRegAcq, 0x1234567000ull, 8);
  EXPECT_EQ(host.reg64(kRegAcq), 0x1234567000ull);
  EXPECT_EQ(host.reg32(kRegAcq + 4), 0x12u);
  EXPECT_EQ(host.ctrl->bar_read(0, kRegVs, 8) & 0xffffffff, 0x00010400u);
  host.ctrl->bar_write(0, kRegAqa + 1, 0xff, 4);  // a dword across two registers: ignored
  EXPECT_EQ(host.reg32(kRegAqa), 0x00090007u);
  EXPECT_EQ(host.ctrl->bar_read(1, 0, 4), 0u);
}

}  // namespace
}  // namespace uvio::emu::nvme::test
