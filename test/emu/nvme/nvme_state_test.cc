// Migration state and fault injection of the emulated NVMe controller.
#include "test/emu/nvme/nvme_test_host.h"

namespace uvio::emu::nvme::test {
namespace {

const NvmeHost::Args kArgs = {{"size", "1M"}, {"ns", "2"}, {"queues", "4"}};

// A host with queues, data, shadow doorbells, an outstanding event request and two
// commands submitted that the controller has not fetched yet.
void prepare(NvmeHost& host, HostQueue* q) {
  host.enable();
  *q = host.create_io_queue(1, 16, 2);
  uint64_t shadow = host.alloc(4096), event_idx = host.alloc(4096);
  SubmissionEntry c{};
  c.opcode = kAdminDoorbellBufferConfig;
  c.prp1 = shadow;
  c.prp2 = event_idx;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  host.shadow = shadow;
  c = {};
  c.opcode = kAdminSetFeatures;
  c.cdw10 = kFeatInterruptCoalescing;
  c.cdw11 = 0x0102;
  ASSERT_EQ(NvmeHost::sc(host.admin_cmd(c)), 0);
  SubmissionEntry aer{};
  aer.opcode = kAdminAsyncEvent;
  aer.cid = 0x300;
  host.submit(host.admin, aer);
  uint64_t buf = host.alloc(8192);
  host.fill(buf, 8192, 42);
  for (int i = 0; i < 20; ++i)  // wraps the 16-entry queues
    ASSERT_EQ(NvmeHost::sc(host.run(*q, NvmeHost::rw(kIoWrite, 1 + i % 2, i * 16, 16, buf, buf + 4096))), 0);
  SubmissionEntry rd = NvmeHost::rw(kIoRead, 1, 16, 8, buf);
  rd.cid = 0x500;
  host.submit(*q, rd);
  rd.cid = 0x501;
  rd.nsid = 9;
  host.submit(*q, rd);
}

TEST(NvmeState, SaveLoadContinuesIdentically) {
  NvmeHost a(kArgs);
  HostQueue qa;
  prepare(a, &qa);
  std::vector<uint8_t> saved;
  a.ctrl->save_state(saved);

  NvmeHost b(kArgs);
  b.copy_host_from(a);  // guest memory and the driver's queues migrate on their own
  ASSERT_TRUE(b.ctrl->load_state(saved).is_ok());
  std::vector<uint8_t> again;
  b.ctrl->save_state(again);
  EXPECT_EQ(again, saved);
  EXPECT_EQ(b.ctrl->bar_read(0, kRegCsts, 4), a.ctrl->bar_read(0, kRegCsts, 4));
  EXPECT_EQ(b.ctrl->bar_read(0, kRegAsq, 8), a.ctrl->bar_read(0, kRegAsq, 8));
  EXPECT_EQ(std::memcmp(b.doorbell_page(), a.doorbell_page(), 64), 0);

  // Both now run the same work: the two queued commands, then more I/O and an event.
  HostQueue qb = qa;
  b.copy_host_from(a);
  for (NvmeHost* h : {&a, &b}) {
    HostQueue& q = h == &a ? qa : qb;
    h->irq.vectors.clear();
    EXPECT_EQ(h->ctrl->poll(), 2u);
    auto first = h->reap(q), second = h->reap(q);
    ASSERT_TRUE(first && second);
    EXPECT_EQ(NvmeHost::sc(*first), 0);
    EXPECT_EQ(NvmeHost::sc(*second), kScInvalidNamespace);
    uint64_t buf = h->alloc(4096);
    h->fill(buf, 4096, 99);
    ASSERT_EQ(NvmeHost::sc(h->run(q, NvmeHost::rw(kIoWrite, 2, 7, 8, buf))), 0);
    ASSERT_EQ(NvmeHost::sc(h->run(q, NvmeHost::rw(kIoRead, 1, 0, 8, buf))), 0);
    h->doorbell_page()[2] = 40;  // an invalid value fires the outstanding event request
    h->ctrl->poll();
    auto event = h->reap(h->admin);
    ASSERT_TRUE(event);
    EXPECT_EQ(event->cid, 0x300);
  }
  EXPECT_EQ(a.irq.vectors, b.irq.vectors);
  EXPECT_TRUE(a.dma.memory() == b.dma.memory());
  std::vector<uint8_t> end_a, end_b;
  a.ctrl->save_state(end_a);
  b.ctrl->save_state(end_b);
  EXPECT_EQ(end_a, end_b);
}

TEST(NvmeState, BadStreamsAreRefusedAndChangeNothing) {
  NvmeHost a(kArgs);
  HostQueue qa;
  prepare(a, &qa);
  std::vector<uint8_t> good;
  a.ctrl->save_state(good);

  NvmeHost b(kArgs);
  b.enable();
  HostQueue qb = b.create_io_queue(1, 8, 1);
  std::vector<uint8_t> before;
  b.ctrl->save_state(before);
  auto unchanged = [&] {
    std::vector<uint8_t> now;
    b.ctrl->save_state(now);
    return now == before;
  };

  for (size_t len = 0; len < good.size(); len += 1 + len / 3) {
    Status s = b.ctrl->load_state(std::span(good).first(len));
    EXPECT_FALSE(s.is_ok()) << len;
    EXPECT_EQ(s.code(), EINVAL);
  }
  EXPECT_FALSE(b.ctrl->load_state(std::span(good).first(good.size() - 1)).is_ok());
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_NE(b.ctrl->load_state(longer).message().find("unexpected bytes"), std::string::npos);

  auto tampered = [&](size_t offset, uint8_t value) {
    std::vector<uint8_t> t = good;
    t[offset] = value;
    return b.ctrl->load_state(t);
  };
  EXPECT_NE(tampered(0, 0).message().find("magic"), std::string::npos);
  EXPECT_NE(tampered(4, 9).message().find("version"), std::string::npos);
  EXPECT_NE(tampered(8, 9).message().find("queues="), std::string::npos);
  // Layout (state.cc): 24-byte header, 9 bytes per namespace, 32 bytes of registers,
  // then per queue id a 36-byte SQ and a 40-byte CQ record. SQ 1's head sits 13 bytes in.
  size_t sq1 = 24 + 2 * 9 + 32 + 76;
  EXPECT_NE(tampered(sq1 + 13, 200).message().find("submission queue 1"), std::string::npos);
  EXPECT_NE(tampered(sq1 + 21, 3).message().find("completion queue"), std::string::npos);  // cqid 3: not live
  EXPECT_NE(tampered(sq1, 7).message().find("truncated"), std::string::npos);  // a bool that is not 0/1
  EXPECT_TRUE(unchanged());

  // A controller with other queue counts or sizes refuses the stream.
  NvmeHost other({{"size", "2M"}, {"ns", "2"}, {"queues", "4"}});
  EXPECT_FALSE(other.ctrl->load_state(good).is_ok());

  // And b still works as before.
  uint64_t buf = b.alloc(4096);
  EXPECT_EQ(NvmeHost::sc(b.run(qb, NvmeHost::rw(kIoRead, 1, 0, 1, buf))), 0);
}

TEST(NvmeFaults, FatalStatusAfterNCommands) {
  NvmeHost host({{"faults", "cfs@4"}});
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);  // commands 1 and 2
  uint64_t buf = host.alloc(4096);
  EXPECT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 0, 1, buf))), 0);
  EXPECT_EQ(host.reg32(kRegCsts) & kCstsCfs, 0u);
  EXPECT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 0, 1, buf))), 0);  // the 4th completes
  EXPECT_TRUE(host.reg32(kRegCsts) & kCstsCfs);
  host.submit(q, NvmeHost::rw(kIoRead, 1, 0, 1, buf));
  EXPECT_EQ(host.ctrl->poll(), 0u);
  EXPECT_FALSE(host.reap(q));
  // A reset clears it, and the fault does not fire again.
  host.set32(kRegCc, 0);
  host.admin.sq_tail = host.admin.cq_head = 0;
  host.admin.phase = true;
  std::memset(host.dma.at(host.admin.cq), 0, 32 * 16);
  host.set32(kRegCc, NvmeHost::kCcEnable);
  EXPECT_EQ(host.reg32(kRegCsts) & (kCstsCfs | kCstsRdy), kCstsRdy);
  q = host.create_io_queue(1, 8);
  EXPECT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 0, 1, buf))), 0);
  EXPECT_EQ(host.reg32(kRegCsts) & kCstsCfs, 0u);
}

TEST(NvmeFaults, DroppedCompletion) {
  NvmeHost host({{"faults", "timeout@3"}});
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);
  uint64_t src = host.alloc(4096), dst = host.alloc(4096);
  host.fill(src, 512, 8);
  SubmissionEntry w = NvmeHost::rw(kIoWrite, 1, 5, 1, src);
  w.cid = 10;
  host.submit(q, w);
  EXPECT_EQ(host.ctrl->poll(), 1u);
  EXPECT_FALSE(host.reap(q));  // no completion: the driver's timeout
  // The command itself ran, and the queue goes on.
  EXPECT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 5, 1, dst))), 0);
  EXPECT_EQ(std::memcmp(host.dma.at(src), host.dma.at(dst), 512), 0);
}

TEST(NvmeFaults, WrongCommandId) {
  NvmeHost host({{"faults", "badcid@3"}});
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);
  uint64_t buf = host.alloc(4096);
  SubmissionEntry r = NvmeHost::rw(kIoRead, 1, 0, 1, buf);
  r.cid = 0x21;
  host.submit(q, r);
  host.ctrl->poll();
  auto e = host.reap(q);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->cid, 0x8021);
  EXPECT_EQ(NvmeHost::sc(host.run(q, r)), 0);  // only once
}

TEST(NvmeFaults, StalePhaseHidesTheEntryAndEverythingBehindIt) {
  NvmeHost host({{"faults", "phase@3"}});
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);
  uint64_t buf = host.alloc(4096);
  SubmissionEntry r = NvmeHost::rw(kIoRead, 1, 0, 1, buf);
  r.cid = 1;
  host.submit(q, r);
  r.cid = 2;
  host.submit(q, r);
  EXPECT_EQ(host.ctrl->poll(), 2u);
  CompletionEntry slot0 = host.peek(q, 0), slot1 = host.peek(q, 1);
  EXPECT_EQ(slot0.cid, 1);
  EXPECT_EQ(slot0.status & 1, 0);  // the previous lap's phase
  EXPECT_EQ(slot1.cid, 2);
  EXPECT_EQ(slot1.status & 1, 1);
  EXPECT_FALSE(host.reap(q));      // a driver walking in order sees nothing
}

TEST(NvmeFaults, OffByDefault) {
  NvmeHost host;
  host.enable();
  HostQueue q = host.create_io_queue(1, 8);
  uint64_t buf = host.alloc(4096);
  for (int i = 0; i < 40; ++i) ASSERT_EQ(NvmeHost::sc(host.run(q, NvmeHost::rw(kIoRead, 1, 0, 1, buf))), 0);
  EXPECT_EQ(host.reg32(kRegCsts) & kCstsCfs, 0u);
}

}  // namespace
}  // namespace uvio::emu::nvme::test

namespace uvio::emu::nvme::test {
namespace {

// A flipped bit in namespace data passes every structural check; the checksum finds
// it, and the device keeps its own data rather than serving the damaged copy.
TEST(NvmeState, DamagedNamespaceDataIsRefusedByTheChecksum) {
  NvmeHost a(kArgs);
  HostQueue qa;
  prepare(a, &qa);
  std::vector<uint8_t> good;
  a.ctrl->save_state(good);
  NvmeHost b(kArgs);
  std::vector<uint8_t> before;
  b.ctrl->save_state(before);
  std::vector<uint8_t> bad = good;
  bad[bad.size() - 9] ^= 0x10;  // the last byte of namespace data, before the end marker
  Status s = b.ctrl->load_state(bad);
  EXPECT_EQ(s.code(), EINVAL);
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.describe();
  std::vector<uint8_t> after;
  b.ctrl->save_state(after);
  EXPECT_EQ(before, after);
  EXPECT_TRUE(b.ctrl->load_state(good).is_ok());
}

}  // namespace
}  // namespace uvio::emu::nvme::test
