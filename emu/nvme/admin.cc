// Admin commands (NVMe 1.4, Admin Command Set).
#include "emu/nvme/controller.h"

#include <uvio/log.h>

#include <algorithm>
#include <cstring>

namespace uvio::emu::nvme {
namespace {

constexpr const char* kLog = "emu.nvme";

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// Identify strings are ASCII, space padded, not terminated (Identify Controller SN, MN, FR).
void put_ascii(uint8_t* p, size_t width, std::string_view text) {
  std::memset(p, ' ', width);
  std::memcpy(p, text.data(), std::min(width, text.size()));
}

// A 128-bit little-endian counter of the SMART / Health Information log; the high half stays 0.
void put_counter(uint8_t* p, uint64_t v) { put64(p, v); }

}  // namespace

CompletionStatus NvmeController::copy_to_host(const SubmissionEntry& cmd, const void* data, size_t len) {
  PrpSegments segs;
  CompletionStatus st = walk_prps(*dma_, cmd.prp1, cmd.prp2, len, page_size(), &segs);
  if (!st.ok()) return st;
  const auto* src = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < segs.count; ++i) {
    if (!dma_->write(segs.seg[i].iova, src, segs.seg[i].len)) return CompletionStatus::generic(kScDataTransferError);
    src += segs.seg[i].len;
  }
  return CompletionStatus::success();
}

NvmeController::Outcome NvmeController::execute_admin(const SubmissionEntry& cmd) {
  // Fused operations and SGLs are not supported (Identify FUSES = 0, SGLS = 0).
  if (cmd.flags != 0) return {CompletionStatus::generic(kScInvalidField)};
  if (std::find(st_.async_event_cids.begin(), st_.async_event_cids.end(), cmd.cid) != st_.async_event_cids.end())
    return {CompletionStatus::generic(kScCommandIdConflict)};
  switch (cmd.opcode) {
    case kAdminDeleteSq: return admin_delete_sq(cmd);
    case kAdminCreateSq: return admin_create_sq(cmd);
    case kAdminGetLogPage: return admin_get_log_page(cmd);
    case kAdminDeleteCq: return admin_delete_cq(cmd);
    case kAdminCreateCq: return admin_create_cq(cmd);
    case kAdminIdentify: return admin_identify(cmd);
    case kAdminAbort: return admin_abort(cmd);
    case kAdminSetFeatures: return admin_features(cmd, true);
    case kAdminGetFeatures: return admin_features(cmd, false);
    case kAdminAsyncEvent: return admin_async_event(cmd);
    case kAdminDoorbellBufferConfig: return admin_doorbell_buffer(cmd);
    default: return {CompletionStatus::generic(kScInvalidOpcode)};
  }
}

// Identify.
NvmeController::Outcome NvmeController::admin_identify(const SubmissionEntry& cmd) {
  uint8_t data[kIdentifySize] = {};
  uint8_t cns = cmd.cdw10 & 0xff;
  switch (cns) {
    case kCnsController: {
      // The Identify Controller data structure.
      PciIdentity id = identity();
      put16(data + 0, id.vendor_id);
      put16(data + 2, id.subsystem_vendor_id);
      put_ascii(data + 4, 20, opt_.serial);
      put_ascii(data + 24, 40, "uvio emulated NVMe");
      put_ascii(data + 64, 8, "1.0");
      data[77] = kMdts;
      put16(data + 78, 1);              // CNTLID
      put32(data + 80, kVersion14);     // VER
      data[111] = 1;                    // CNTRLTYPE: I/O controller
      put16(data + 256, 1u << 8);       // OACS: Doorbell Buffer Config
      data[258] = kMaxAborts - 1;       // ACL, 0's based
      data[259] = kMaxAsyncEvents - 1;  // AERL, 0's based
      data[260] = 1u << 1 | 1u << 0;    // FRMW: one slot, slot 1 read-only
      data[262] = kErrorLogEntries - 1; // ELPE, 0's based
      data[263] = 0;                    // NPSS: one power state
      put16(data + 266, 0x0157);        // WCTEMP 343 K
      put16(data + 268, 0x0175);        // CCTEMP 373 K
      data[512] = kSqEntryShift << 4 | kSqEntryShift;  // SQES: 64-byte entries
      data[513] = kCqEntryShift << 4 | kCqEntryShift;  // CQES: 16-byte entries
      put32(data + 516, static_cast<uint32_t>(namespaces_.size()));  // NN
      put16(data + 520, 1u << 2 | 1u << 3);  // ONCS: Dataset Management, Write Zeroes
      data[525] = 0x7;                  // VWC: present, Flush with NSID FFFFFFFFh supported
      put16(data + 2048, 100);          // PSD0 MP: 1 W, in centiwatts
      break;
    }
    case kCnsNamespace: {
      if (cmd.nsid == 0 || cmd.nsid > namespaces_.size()) return {CompletionStatus::generic(kScInvalidNamespace)};
      // The Identify Namespace data structure (NVM command set).
      const NamespaceStore& ns = *namespaces_[cmd.nsid - 1];
      put64(data + 0, ns.lba_count());   // NSZE
      put64(data + 8, ns.lba_count());   // NCAP
      put64(data + 16, ns.lba_count());  // NUSE
      data[25] = 0;                      // NLBAF: one format
      data[26] = 0;                      // FLBAS: format 0
      data[33] = 1u << 3 | 1u;           // DLFEAT: deallocated blocks read 0; Write Zeroes may deallocate
      unsigned lbads = ns.lba_bytes() == 4096 ? 12 : 9;
      put32(data + 128, lbads << 16);    // LBAF0: LBADS, no metadata, best performance
      break;
    }
    case kCnsActiveNamespaces: {
      if (cmd.nsid >= 0xfffffffe) return {CompletionStatus::generic(kScInvalidNamespace)};
      uint32_t n = 0;
      for (uint32_t nsid = cmd.nsid + 1; nsid <= namespaces_.size() && n < kIdentifySize / 4; ++nsid)
        put32(data + 4 * n++, nsid);
      break;
    }
    case kCnsNamespaceDescriptors:
      // No EUI-64, NGUID or UUID is assigned: the list is empty.
      if (cmd.nsid == 0 || cmd.nsid > namespaces_.size()) return {CompletionStatus::generic(kScInvalidNamespace)};
      break;
    default:
      return {CompletionStatus::generic(kScInvalidField)};
  }
  return {copy_to_host(cmd, data, sizeof(data))};
}

// Create I/O Completion Queue.
NvmeController::Outcome NvmeController::admin_create_cq(const SubmissionEntry& cmd) {
  uint32_t qid = cmd.cdw10 & 0xffff;
  uint32_t entries = (cmd.cdw10 >> 16) + 1;
  bool contiguous = cmd.cdw11 & 1;
  bool irq_enabled = cmd.cdw11 & 2;
  uint32_t vector = cmd.cdw11 >> 16;
  if (qid == 0 || qid >= queue_count_ || qid > st_.features.cq_allocated + 1u || st_.cqs[qid].live)
    return {CompletionStatus::specific(kScInvalidQueueId)};
  if (entries < 2 || entries > opt_.max_queue_entries) return {CompletionStatus::specific(kScInvalidQueueSize)};
  if (!contiguous) return {CompletionStatus::generic(kScInvalidField)};  // CAP.CQR = 1
  if (cmd.prp1 & (page_size() - 1)) return {CompletionStatus::generic(kScPrpOffsetInvalid)};
  if (vector >= queue_count_) return {CompletionStatus::specific(kScInvalidInterruptVector)};
  if (((st_.cc >> kCcIocqesShift) & 0xf) != kCqEntryShift) return {CompletionStatus::generic(kScInvalidField)};
  CompletionQueue& cq = st_.cqs[qid];
  cq = CompletionQueue{};
  cq.live = true;
  cq.base = cmd.prp1;
  cq.size = entries;
  cq.irq_enabled = irq_enabled;
  cq.vector = static_cast<uint16_t>(vector);
  set_doorbell(2 * qid + 1, 0);
  if (st_.shadow_doorbells) dma_->read(st_.shadow_doorbells + 4ull * (2 * qid + 1), &cq.last_shadow, 4);
  return {};
}

// Create I/O Submission Queue.
NvmeController::Outcome NvmeController::admin_create_sq(const SubmissionEntry& cmd) {
  uint32_t qid = cmd.cdw10 & 0xffff;
  uint32_t entries = (cmd.cdw10 >> 16) + 1;
  bool contiguous = cmd.cdw11 & 1;
  uint32_t cqid = cmd.cdw11 >> 16;
  if (qid == 0 || qid >= queue_count_ || qid > st_.features.sq_allocated + 1u || st_.sqs[qid].live)
    return {CompletionStatus::specific(kScInvalidQueueId)};
  if (cqid == 0 || cqid >= queue_count_ || !st_.cqs[cqid].live)
    return {CompletionStatus::specific(kScCompletionQueueInvalid)};
  if (entries < 2 || entries > opt_.max_queue_entries) return {CompletionStatus::specific(kScInvalidQueueSize)};
  if (!contiguous) return {CompletionStatus::generic(kScInvalidField)};
  if (cmd.prp1 & (page_size() - 1)) return {CompletionStatus::generic(kScPrpOffsetInvalid)};
  if (((st_.cc >> kCcIosqesShift) & 0xf) != kSqEntryShift) return {CompletionStatus::generic(kScInvalidField)};
  SubmissionQueue& sq = st_.sqs[qid];
  sq = SubmissionQueue{};
  sq.live = true;
  sq.base = cmd.prp1;
  sq.size = entries;
  sq.cqid = static_cast<uint16_t>(cqid);
  sq.priority = (cmd.cdw11 >> 1) & 3;
  st_.cqs[cqid].sq_refs++;
  set_doorbell(2 * qid, 0);
  if (st_.shadow_doorbells) dma_->read(st_.shadow_doorbells + 4ull * (2 * qid), &sq.last_shadow, 4);
  return {};
}

// Delete I/O Submission Queue: commands not yet fetched from the queue are dropped with it.
NvmeController::Outcome NvmeController::admin_delete_sq(const SubmissionEntry& cmd) {
  uint32_t qid = cmd.cdw10 & 0xffff;
  if (qid == 0 || qid >= queue_count_ || !st_.sqs[qid].live) return {CompletionStatus::specific(kScInvalidQueueId)};
  st_.cqs[st_.sqs[qid].cqid].sq_refs--;
  st_.sqs[qid] = SubmissionQueue{};
  std::erase_if(st_.aborts, [qid](const PendingAbort& a) { return a.sqid == qid; });
  set_doorbell(2 * qid, 0);
  return {};
}

// Delete I/O Completion Queue: a queue still used by a submission queue stays.
NvmeController::Outcome NvmeController::admin_delete_cq(const SubmissionEntry& cmd) {
  uint32_t qid = cmd.cdw10 & 0xffff;
  if (qid == 0 || qid >= queue_count_ || !st_.cqs[qid].live) return {CompletionStatus::specific(kScInvalidQueueId)};
  if (st_.cqs[qid].sq_refs) return {CompletionStatus::specific(kScInvalidQueueDeletion)};
  st_.cqs[qid] = CompletionQueue{};
  set_doorbell(2 * qid + 1, 0);
  return {};
}

// Get Log Page.
NvmeController::Outcome NvmeController::admin_get_log_page(const SubmissionEntry& cmd) {
  uint8_t lid = cmd.cdw10 & 0xff;
  bool retain_event = cmd.cdw10 & (1u << 15);
  uint64_t dwords = (uint64_t(cmd.cdw11 & 0xffff) << 16 | cmd.cdw10 >> 16) + 1;
  uint64_t offset = cmd.cdw12 | uint64_t(cmd.cdw13) << 32;
  uint64_t len = dwords * 4;
  if ((offset & 3) || len > kMaxTransferBytes) return {CompletionStatus::generic(kScInvalidField)};

  std::vector<uint8_t> log;
  switch (lid) {
    case kLogErrorInfo:
      log.resize(sizeof(ErrorLogEntry) * kErrorLogEntries);
      std::memcpy(log.data(), st_.error_log.data(), log.size());
      break;
    case kLogSmartHealth: {
      // SMART / Health Information; the counters are controller-wide (NSID FFFFFFFFh or 0 alike).
      log.resize(512);
      const HealthCounters& h = st_.health;
      put16(&log[1], 0x0125);  // composite temperature 293 K
      log[3] = 100;            // available spare %
      log[4] = 10;             // spare threshold %
      put_counter(&log[32], (h.blocks_read_512 + 999) / 1000);
      put_counter(&log[48], (h.blocks_written_512 + 999) / 1000);
      put_counter(&log[64], h.host_reads);
      put_counter(&log[80], h.host_writes);
      put_counter(&log[176], h.error_entries);
      break;
    }
    case kLogFirmwareSlot:
      log.resize(512);
      log[0] = 1;  // AFI: slot 1 active
      put_ascii(&log[8], 8, "1.0");
      break;
    default:
      return {CompletionStatus::specific(kScInvalidLogPage)};
  }
  if (offset >= log.size()) return {CompletionStatus::generic(kScInvalidField)};
  std::vector<uint8_t> out(len, 0);
  std::memcpy(out.data(), log.data() + offset, std::min<uint64_t>(len, log.size() - offset));
  CompletionStatus st = copy_to_host(cmd, out.data(), out.size());
  // Reading the log without Retain Asynchronous Event re-arms its events.
  if (st.ok() && lid == kLogErrorInfo && !retain_event) st_.error_events_masked = false;
  return {st};
}

// Set Features and Get Features.
NvmeController::Outcome NvmeController::admin_features(const SubmissionEntry& cmd, bool set) {
  uint8_t fid = cmd.cdw10 & 0xff;
  uint32_t select = (cmd.cdw10 >> 8) & 7;
  Features defaults;
  defaults.sq_allocated = defaults.cq_allocated = static_cast<uint16_t>(opt_.io_queues - 1);
  Features& f = st_.features;
  const Features& view = (!set && (select == 1 || select == 2)) ? defaults : f;  // no saved values: saved = default
  if (set && (cmd.cdw10 >> 31)) return {CompletionStatus::specific(kScFeatureNotSaveable)};
  if (!set && select > 3) return {CompletionStatus::generic(kScInvalidField)};

  Outcome out;
  switch (fid) {
    case kFeatArbitration:
      if (set) f.arbitration = cmd.cdw11 & 0xffffff07;
      out.dw0 = view.arbitration;
      break;
    case kFeatPowerManagement:
      if (set) {
        if ((cmd.cdw11 & 0x1f) != 0) return {CompletionStatus::generic(kScInvalidField)};  // NPSS = 0
        f.power_management = cmd.cdw11 & 0xff;
      }
      out.dw0 = view.power_management;
      break;
    case kFeatTemperatureThreshold: {
      uint32_t sensor = (cmd.cdw11 >> 16) & 0xf;
      uint32_t kind = (cmd.cdw11 >> 20) & 3;
      if (sensor != 0 || kind > 1) return {CompletionStatus::generic(kScInvalidField)};  // composite only
      uint16_t& slot = kind == 0 ? f.temp_over : f.temp_under;
      if (set) slot = cmd.cdw11 & 0xffff;
      out.dw0 = kind == 0 ? view.temp_over : view.temp_under;
      break;
    }
    case kFeatVolatileWriteCache:
      if (set) f.write_cache = cmd.cdw11 & 1;
      out.dw0 = view.write_cache ? 1 : 0;
      break;
    case kFeatNumberOfQueues:
      if (set) {
        uint32_t nsqr = cmd.cdw11 & 0xffff, ncqr = cmd.cdw11 >> 16;
        if (nsqr == 0xffff || ncqr == 0xffff) return {CompletionStatus::generic(kScInvalidField)};
        // Number of Queues may only be set before any I/O queue exists.
        for (uint32_t q = 1; q < queue_count_; ++q)
          if (st_.sqs[q].live || st_.cqs[q].live) return {CompletionStatus::generic(kScCommandSequenceError)};
        f.sq_allocated = static_cast<uint16_t>(std::min(nsqr, opt_.io_queues - 1));
        f.cq_allocated = static_cast<uint16_t>(std::min(ncqr, opt_.io_queues - 1));
      }
      out.dw0 = uint32_t(view.cq_allocated) << 16 | view.sq_allocated;
      break;
    case kFeatInterruptCoalescing:
      if (set) f.interrupt_coalescing = cmd.cdw11 & 0xffff;  // stored; completions are not delayed
      out.dw0 = view.interrupt_coalescing;
      break;
    case kFeatAsyncEventConfig:
      if (set) f.async_event_config = cmd.cdw11;
      out.dw0 = view.async_event_config;
      break;
    default:
      return {CompletionStatus::generic(kScInvalidField)};
  }
  if (!set && select == 3) out.dw0 = 1u << 2;  // changeable, not saveable, controller-wide
  return out;
}

// Abort. dw0 bit 0 is 0 when the command was aborted.
NvmeController::Outcome NvmeController::admin_abort(const SubmissionEntry& cmd) {
  uint16_t sqid = cmd.cdw10 & 0xffff;
  uint16_t cid = static_cast<uint16_t>(cmd.cdw10 >> 16);
  Outcome out;
  out.dw0 = 1;
  if (sqid == 0) {
    auto it = std::find(st_.async_event_cids.begin(), st_.async_event_cids.end(), cid);
    // Two completions follow (the request's and the Abort's): both need room.
    const CompletionQueue& acq = st_.cqs[0];
    bool room = (acq.tail + 2) % acq.size != acq.head && (acq.tail + 1) % acq.size != acq.head;
    if (it != st_.async_event_cids.end() && room) {
      st_.async_event_cids.erase(it);
      if (!post_completion(0, 0, cid, CompletionStatus::generic(kScAbortRequested, false), 0)) return out;
      out.dw0 = 0;
    }
    return out;
  }
  if (sqid >= queue_count_ || !st_.sqs[sqid].live) return out;
  // Commands run to completion once fetched, so only one still waiting in its queue
  // can be aborted: it completes as Abort Requested when its turn comes.
  refresh_sq_tail(sqid);
  const SubmissionQueue& sq = st_.sqs[sqid];
  for (uint32_t slot = sq.head; slot != sq.tail; slot = (slot + 1) % sq.size) {
    uint16_t queued_cid = 0;
    if (!dma_->read(sq.base + (uint64_t(slot) << kSqEntryShift) + 2, &queued_cid, 2) || queued_cid != cid) continue;
    if (st_.aborts.size() >= kMaxAborts) return {CompletionStatus::specific(kScAbortLimitExceeded)};
    st_.aborts.push_back({sqid, cid});
    out.dw0 = 0;
    break;
  }
  return out;
}

// Asynchronous Event Request: kept outstanding until an event happens.
NvmeController::Outcome NvmeController::admin_async_event(const SubmissionEntry& cmd) {
  if (st_.async_event_cids.size() >= kMaxAsyncEvents) return {CompletionStatus::specific(kScAsyncEventLimitExceeded)};
  st_.async_event_cids.push_back(cmd.cid);
  Outcome out;
  out.deferred = true;
  return out;
}

// Doorbell Buffer Config: PRP1 the shadow doorbells, PRP2 the EventIdx buffer,
// each one memory page laid out like the doorbell registers.
NvmeController::Outcome NvmeController::admin_doorbell_buffer(const SubmissionEntry& cmd) {
  uint64_t mask = page_size() - 1;
  if (!cmd.prp1 || !cmd.prp2 || (cmd.prp1 & mask) || (cmd.prp2 & mask))
    return {CompletionStatus::generic(kScInvalidField)};
  uint32_t probe = 0;
  if (!dma_->read(cmd.prp1, &probe, 4) || !dma_->read(cmd.prp2, &probe, 4))
    return {CompletionStatus::generic(kScDataTransferError)};
  st_.shadow_doorbells = cmd.prp1;
  st_.event_indexes = cmd.prp2;
  for (uint32_t q = 0; q < queue_count_; ++q) {
    // What the shadow holds now is the baseline: only later changes are new work.
    if (st_.sqs[q].live) {
      dma_->read(cmd.prp1 + 8ull * q, &st_.sqs[q].last_shadow, 4);
      st_.sqs[q].last_event_idx = ~0u;
    }
    if (st_.cqs[q].live) {
      dma_->read(cmd.prp1 + 8ull * q + 4, &st_.cqs[q].last_shadow, 4);
      st_.cqs[q].last_event_idx = ~0u;
    }
  }
  UVIO_LOG(Debug, kLog, "shadow doorbells at {:#x}, event indexes at {:#x}", cmd.prp1, cmd.prp2);
  return {};
}

}  // namespace uvio::emu::nvme
