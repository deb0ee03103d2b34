// A minimal NVMe host for driving the emulated controller directly through the
// DeviceModel interface: host memory is a plain buffer behind a bounds-checked
// DmaAccess, interrupts are recorded, doorbells are written into the shared BAR page.
#pragma once

#include "emu/nvme/controller.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <optional>
#include <vector>

namespace uvio::emu::nvme::test {

inline constexpr uint64_t kHostIova = 0x10000000;
inline constexpr uint64_t kUnmappedIova = 0x900000000;

class TestDma final : public DmaAccess {
 public:
  explicit TestDma(size_t bytes) : mem_(bytes) {}
  bool read(uint64_t iova, void* dst, size_t len) override {
    std::byte* p = translate(iova, len);
    if (!p) return ++failures, false;
    std::memcpy(dst, p, len);
    return true;
  }
  bool write(uint64_t iova, const void* src, size_t len) override {
    std::byte* p = translate(iova, len);
    if (!p) return ++failures, false;
    std::memcpy(p, src, len);
    mark_dirty(iova, len);
    return true;
  }
  std::byte* translate(uint64_t iova, size_t len) override {
    if (iova < kHostIova || len > mem_.size() || iova - kHostIova > mem_.size() - len) return nullptr;
    return mem_.data() + (iova - kHostIova);
  }
  void mark_dirty(uint64_t, size_t len) override { dirty_bytes += len; }

  std::vector<std::byte>& memory() { return mem_; }
  std::byte* at(uint64_t iova) { return mem_.data() + (iova - kHostIova); }
  uint64_t failures = 0;
  uint64_t dirty_bytes = 0;

 private:
  std::vector<std::byte> mem_;
};

class TestIrq final : public IrqSink {
 public:
  void trigger(uint32_t vector) override { vectors.push_back(vector); }
  std::vector<uint32_t> vectors;
};

struct HostQueue {
  uint16_t qid = 0;
  uint32_t size = 0;
  uint64_t sq = 0;
  uint64_t cq = 0;
  uint32_t sq_tail = 0;
  uint32_t cq_head = 0;
  bool phase = true;
};

class NvmeHost {
 public:
  NvmeHost(const NvmeHost&) = delete;
  NvmeHost& operator=(const NvmeHost&) = delete;
  using Args = std::map<std::string, std::string>;
  NvmeHost(std::initializer_list<Args::value_type> args) : NvmeHost(Args(args)) {}
  explicit NvmeHost(const Args& args = {}, size_t host_bytes = 8 << 20) : dma(host_bytes), bar(kBar0Bytes) {
    auto opt = parse_nvme_options(args);
    EXPECT_TRUE(opt.is_ok()) << opt.status().message();
    auto ctrl_or = NvmeController::create(*opt);
    EXPECT_TRUE(ctrl_or.is_ok()) << ctrl_or.status().message();
    ctrl = std::move(*ctrl_or);
    std::byte* shared[] = {bar.data()};
    ctrl->attach(dma, irq, shared);
  }

  uint64_t alloc(uint64_t bytes, uint64_t align = 4096) {
    next_ = (next_ + align - 1) & ~(align - 1);
    uint64_t iova = kHostIova + next_;
    next_ += bytes;
    EXPECT_LE(next_, dma.memory().size());
    return iova;
  }

  uint32_t reg32(uint64_t off) { return static_cast<uint32_t>(ctrl->bar_read(0, off, 4)); }
  uint64_t reg64(uint64_t off) { return ctrl->bar_read(0, off, 8); }
  void set32(uint64_t off, uint32_t v) { ctrl->bar_write(0, off, v, 4); }

  // CC with 4 KiB pages, 64-byte SQ and 16-byte CQ entries.
  static constexpr uint32_t kCcEnable = kCcEn | 6u << kCcIosqesShift | 4u << kCcIocqesShift;

  void enable(uint32_t admin_entries = 32) {
    admin.qid = 0;
    admin.size = admin_entries;
    admin.sq = alloc(admin_entries * 64);
    admin.cq = alloc(admin_entries * 16);
    set32(kRegAqa, (admin_entries - 1) | (admin_entries - 1) << 16);
    ctrl->bar_write(0, kRegAsq, admin.sq, 8);
    ctrl->bar_write(0, kRegAcq, admin.cq, 8);
    set32(kRegCc, kCcEnable);
    ASSERT_TRUE(reg32(kRegCsts) & kCstsRdy) << ctrl->enable_error();
  }

  uint32_t* doorbell_page() { return reinterpret_cast<uint32_t*>(bar.data() + kDoorbellPage); }

  void ring_sq(HostQueue& q) {
    if (shadow && q.qid != 0) {
      std::memcpy(dma.at(shadow + 8ull * q.qid), &q.sq_tail, 4);
    } else {
      doorbell_page()[2 * q.qid] = q.sq_tail;
    }
  }
  void ring_cq(HostQueue& q) {
    if (shadow && q.qid != 0) {
      std::memcpy(dma.at(shadow + 8ull * q.qid + 4), &q.cq_head, 4);
    } else {
      doorbell_page()[2 * q.qid + 1] = q.cq_head;
    }
  }

  // Places the entry without ringing the doorbell.
  void place(HostQueue& q, SubmissionEntry cmd) {
    std::memcpy(dma.at(q.sq + 64ull * q.sq_tail), &cmd, sizeof(cmd));
    q.sq_tail = (q.sq_tail + 1) % q.size;
  }
  void submit(HostQueue& q, const SubmissionEntry& cmd) {
    place(q, cmd);
    ring_sq(q);
  }

  CompletionEntry peek(const HostQueue& q, uint32_t slot) {
    CompletionEntry e;
    std::memcpy(&e, dma.at(q.cq + 16ull * slot), sizeof(e));
    return e;
  }

  std::optional<CompletionEntry> reap(HostQueue& q) {
    CompletionEntry e = peek(q, q.cq_head);
    if (bool(e.status & 1) != q.phase) return std::nullopt;
    if (++q.cq_head == q.size) {
      q.cq_head = 0;
      q.phase = !q.phase;
    }
    ring_cq(q);
    return e;
  }

  // Submits one command, polls once, and returns its completion (or a status of 0xffff
  // with a test failure when none came).
  CompletionEntry run(HostQueue& q, SubmissionEntry cmd) {
    cmd.cid = next_cid_++;
    submit(q, cmd);
    ctrl->poll();
    auto e = reap(q);
    EXPECT_TRUE(e.has_value()) << "no completion for opcode " << int(cmd.opcode);
    if (!e) return CompletionEntry{0, 0, 0, 0, 0, 0xffff};
    EXPECT_EQ(e->cid, cmd.cid);
    return *e;
  }
  CompletionEntry admin_cmd(SubmissionEntry cmd) { return run(admin, cmd); }

  static uint16_t status_of(const CompletionEntry& e) { return static_cast<uint16_t>(e.status >> 1); }
  static uint16_t sc(const CompletionEntry& e) { return status_of(e) & 0x7ff; }  // SCT << 8 | SC

  HostQueue create_io_queue(uint16_t qid, uint32_t entries, uint16_t vector = 1, bool irq = true) {
    HostQueue q;
    q.qid = qid;
    q.size = entries;
    q.cq = alloc(entries * 16);
    q.sq = alloc(entries * 64);
    SubmissionEntry c{};
    c.opcode = kAdminCreateCq;
    c.prp1 = q.cq;
    c.cdw10 = qid | (entries - 1) << 16;
    c.cdw11 = 1 | (irq ? 2u : 0u) | uint32_t(vector) << 16;
    EXPECT_EQ(sc(admin_cmd(c)), 0);
    c = {};
    c.opcode = kAdminCreateSq;
    c.prp1 = q.sq;
    c.cdw10 = qid | (entries - 1) << 16;
    c.cdw11 = 1 | uint32_t(qid) << 16;
    EXPECT_EQ(sc(admin_cmd(c)), 0);
    return q;
  }

  static SubmissionEntry rw(uint8_t opcode, uint32_t nsid, uint64_t slba, uint32_t blocks, uint64_t prp1,
                            uint64_t prp2 = 0) {
    SubmissionEntry c{};
    c.opcode = opcode;
    c.nsid = nsid;
    c.prp1 = prp1;
    c.prp2 = prp2;
    c.cdw10 = static_cast<uint32_t>(slba);
    c.cdw11 = static_cast<uint32_t>(slba >> 32);
    c.cdw12 = blocks - 1;
    return c;
  }

  void fill(uint64_t iova, size_t len, uint8_t seed) {
    for (size_t i = 0; i < len; ++i) dma.at(iova)[i] = std::byte(uint8_t(seed + i * 7 + i / 251));
  }

  // The host side of a migration: memory, queue pointers, allocator.
  void copy_host_from(const NvmeHost& other) {
    dma.memory() = const_cast<NvmeHost&>(other).dma.memory();
    admin = other.admin;
    shadow = other.shadow;
    next_cid_ = other.next_cid_;
    next_ = other.next_;
  }

  TestDma dma;
  TestIrq irq;
  std::vector<std::byte> bar;
  std::unique_ptr<NvmeController> ctrl;
  HostQueue admin;
  uint64_t shadow = 0;  // shadow doorbell buffer once configured
  uint16_t next_cid_ = 1;

 private:
  uint64_t next_ = 0;
};

}  // namespace uvio::emu::nvme::test
