// NVM command set I/O commands (NVMe 1.4).
#include "emu/nvme/controller.h"

#include <algorithm>

namespace uvio::emu::nvme {
namespace {

constexpr uint32_t kNsidBroadcast = 0xffffffff;

// [slba, slba + nlb) inside the namespace, without overflow.
bool lba_range_ok(const NamespaceStore& ns, uint64_t slba, uint64_t nlb) {
  return slba < ns.lba_count() && nlb <= ns.lba_count() - slba;
}

CompletionStatus copy_status(NamespaceStore::Copy c) {
  switch (c) {
    case NamespaceStore::Copy::Ok: return CompletionStatus::success();
    case NamespaceStore::Copy::DmaFailed: return CompletionStatus::generic(kScDataTransferError);
    case NamespaceStore::Copy::MediaFailed: break;
  }
  return CompletionStatus::generic(kScInternalError);
}

}  // namespace

NvmeController::Outcome NvmeController::execute_io(const SubmissionEntry& cmd) {
  if (cmd.flags != 0) return {CompletionStatus::generic(kScInvalidField)};  // no fused ops, no SGLs
  if (cmd.opcode == kIoFlush) return io_flush(cmd);
  if (cmd.opcode != kIoRead && cmd.opcode != kIoWrite && cmd.opcode != kIoWriteZeroes &&
      cmd.opcode != kIoDatasetManagement)
    return {CompletionStatus::generic(kScInvalidOpcode)};
  if (cmd.nsid == 0 || cmd.nsid > namespaces_.size()) return {CompletionStatus::generic(kScInvalidNamespace)};
  NamespaceStore& ns = *namespaces_[cmd.nsid - 1];
  switch (cmd.opcode) {
    case kIoRead: return io_read_write(cmd, ns, false);
    case kIoWrite: return io_read_write(cmd, ns, true);
    case kIoWriteZeroes: return io_write_zeroes(cmd, ns);
    default: return io_dataset_management(cmd, ns);
  }
}

// Read and Write: SLBA in CDW10-11, NLB (0's based) in CDW12 15:0.
NvmeController::Outcome NvmeController::io_read_write(const SubmissionEntry& cmd, NamespaceStore& ns, bool write) {
  uint64_t slba = cmd.cdw10 | uint64_t(cmd.cdw11) << 32;
  uint64_t nlb = (cmd.cdw12 & 0xffff) + 1;
  if (!lba_range_ok(ns, slba, nlb)) return {CompletionStatus::generic(kScLbaOutOfRange)};
  uint64_t len = nlb * ns.lba_bytes();
  if (len > kMaxTransferBytes) return {CompletionStatus::generic(kScInvalidField)};  // above MDTS
  PrpSegments segs;
  CompletionStatus st = walk_prps(*dma_, cmd.prp1, cmd.prp2, len, page_size(), &segs);
  if (!st.ok()) return {st};
  uint64_t offset = slba * ns.lba_bytes();
  for (size_t i = 0; i < segs.count; ++i) {
    const DmaSegment& s = segs.seg[i];
    NamespaceStore::Copy c = write ? ns.from_host(*dma_, s.iova, offset, s.len) : ns.to_host(*dma_, s.iova, offset, s.len);
    if (c != NamespaceStore::Copy::Ok) return {copy_status(c)};
    offset += s.len;
  }
  // SMART counts data in 512-byte units whatever the block size (SMART log).
  if (write) {
    st_.health.host_writes++;
    st_.health.blocks_written_512 += len / 512;
  } else {
    st_.health.host_reads++;
    st_.health.blocks_read_512 += len / 512;
  }
  return {};
}

// Write Zeroes: not bounded by MDTS, no data transfer.
NvmeController::Outcome NvmeController::io_write_zeroes(const SubmissionEntry& cmd, NamespaceStore& ns) {
  uint64_t slba = cmd.cdw10 | uint64_t(cmd.cdw11) << 32;
  uint64_t nlb = (cmd.cdw12 & 0xffff) + 1;
  if (!lba_range_ok(ns, slba, nlb)) return {CompletionStatus::generic(kScLbaOutOfRange)};
  if (!ns.zero(slba * ns.lba_bytes(), nlb * ns.lba_bytes())) return {CompletionStatus::generic(kScInternalError)};
  return {};
}

// Dataset Management: NR (0's based) in CDW10 7:0, Deallocate in CDW11 bit 2. A
// deallocated block reads as zeroes (DLFEAT); the other attributes are hints.
NvmeController::Outcome NvmeController::io_dataset_management(const SubmissionEntry& cmd, NamespaceStore& ns) {
  struct Range {
    uint32_t attributes;
    uint32_t blocks;
    uint64_t slba;
  };
  static_assert(sizeof(Range) == 16);
  uint32_t count = (cmd.cdw10 & 0xff) + 1;
  Range ranges[256];
  PrpSegments segs;
  CompletionStatus st = walk_prps(*dma_, cmd.prp1, cmd.prp2, count * sizeof(Range), page_size(), &segs);
  if (!st.ok()) return {st};
  auto* dst = reinterpret_cast<uint8_t*>(ranges);
  for (size_t i = 0; i < segs.count; ++i) {
    if (!dma_->read(segs.seg[i].iova, dst, segs.seg[i].len)) return {CompletionStatus::generic(kScDataTransferError)};
    dst += segs.seg[i].len;
  }
  if (!(cmd.cdw11 & (1u << 2))) return {};
  // Every range is checked before any is deallocated: a bad one changes nothing.
  for (uint32_t i = 0; i < count; ++i)
    if (!lba_range_ok(ns, ranges[i].slba, ranges[i].blocks)) return {CompletionStatus::generic(kScLbaOutOfRange)};
  for (uint32_t i = 0; i < count; ++i) {
    if (ranges[i].blocks == 0) continue;
    if (!ns.zero(ranges[i].slba * ns.lba_bytes(), uint64_t(ranges[i].blocks) * ns.lba_bytes()))
      return {CompletionStatus::generic(kScInternalError)};
  }
  return {};
}

// Flush; NSID FFFFFFFFh flushes every namespace (Identify VWC bits 2:1 = 11b).
NvmeController::Outcome NvmeController::io_flush(const SubmissionEntry& cmd) {
  if (cmd.nsid == kNsidBroadcast) {
    for (auto& ns : namespaces_)
      if (!ns->flush()) return {CompletionStatus::generic(kScInternalError)};
    return {};
  }
  if (cmd.nsid == 0 || cmd.nsid > namespaces_.size()) return {CompletionStatus::generic(kScInvalidNamespace)};
  if (!namespaces_[cmd.nsid - 1]->flush()) return {CompletionStatus::generic(kScInternalError)};
  return {};
}

}  // namespace uvio::emu::nvme
