// Migration state of the NVMe controller: a versioned, little-endian record of the
// registers, queues, features, logs, doorbells and memory-backed namespace contents
// (a file-backed namespace is shared storage: its contents are not copied), closed by
// a CRC-32C of everything before it. Loading parses and checks the whole stream, the
// checksum last, before it changes anything: a damaged namespace page is refused
// rather than served.
#include "emu/nvme/controller.h"
#include "mig/stream.h"

#include <fmt/format.h>

#include <cstring>
#include <type_traits>

namespace uvio::emu::nvme {
namespace {

constexpr uint32_t kStateMagic = 0x4d564e55;  // "UNVM"
constexpr uint32_t kStateEndMagic = 0x444e4555;  // "UEND"
constexpr uint64_t kPageBytes = 4096;

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  template <class T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }

 private:
  std::vector<uint8_t>& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  template <class T>
  bool get(T* v) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (in_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool get_bool(bool* v) {
    uint8_t b = 0;
    if (!get(&b) || b > 1) return false;
    *v = b;
    return true;
  }
  const uint8_t* take(size_t n) {
    if (in_.size() - pos_ < n) return nullptr;
    const uint8_t* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  size_t left() const { return in_.size() - pos_; }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

Status corrupt(std::string_view what) {
  return Status::error(EINVAL, fmt::format("nvme: migration state refused: {}", what));
}

}  // namespace

void NvmeController::save_state(std::vector<uint8_t>& out) const {
  size_t start = out.size();
  Writer w(out);
  w.put(kStateMagic);
  w.put(state_version());
  w.put(queue_count_);
  w.put(opt_.max_queue_entries);
  w.put(static_cast<uint32_t>(namespaces_.size()));
  w.put(opt_.lba_bytes);
  for (const auto& ns : namespaces_) {
    w.put(ns->bytes());
    w.put(static_cast<uint8_t>(ns->memory_backed()));
  }
  w.put(st_.cc); w.put(st_.csts); w.put(st_.aqa); w.put(st_.intms);
  w.put(st_.asq); w.put(st_.acq);
  for (uint32_t q = 0; q < queue_count_; ++q) {
    const SubmissionQueue& sq = st_.sqs[q];
    w.put(static_cast<uint8_t>(sq.live)); w.put(sq.base); w.put(sq.size); w.put(sq.head); w.put(sq.tail);
    w.put(sq.cqid); w.put(sq.priority); w.put(sq.last_doorbell); w.put(sq.last_shadow); w.put(sq.last_event_idx);
    const CompletionQueue& cq = st_.cqs[q];
    w.put(static_cast<uint8_t>(cq.live)); w.put(cq.base); w.put(cq.size); w.put(cq.head); w.put(cq.tail);
    w.put(cq.vector); w.put(static_cast<uint8_t>(cq.phase)); w.put(static_cast<uint8_t>(cq.irq_enabled));
    w.put(cq.sq_refs); w.put(cq.last_doorbell); w.put(cq.last_shadow); w.put(cq.last_event_idx);
    w.put(static_cast<uint8_t>(cq.irq_pending));
  }
  const Features& f = st_.features;
  w.put(f.arbitration); w.put(f.power_management); w.put(f.temp_over); w.put(f.temp_under);
  w.put(static_cast<uint8_t>(f.write_cache)); w.put(f.sq_allocated); w.put(f.cq_allocated);
  w.put(f.interrupt_coalescing); w.put(f.async_event_config);
  const HealthCounters& h = st_.health;
  w.put(h.blocks_read_512); w.put(h.blocks_written_512); w.put(h.host_reads); w.put(h.host_writes);
  w.put(h.error_entries);
  w.put(st_.shadow_doorbells); w.put(st_.event_indexes);
  w.put(static_cast<uint32_t>(st_.async_event_cids.size()));
  for (uint16_t cid : st_.async_event_cids) w.put(cid);
  w.put(static_cast<uint8_t>(st_.error_event_pending)); w.put(st_.error_event_info);
  w.put(static_cast<uint8_t>(st_.error_events_masked));
  w.put(static_cast<uint32_t>(st_.aborts.size()));
  for (const PendingAbort& a : st_.aborts) { w.put(a.sqid); w.put(a.cid); }
  w.bytes(st_.error_log.data(), sizeof(st_.error_log));
  w.put(st_.commands_fetched);
  w.put(static_cast<uint8_t>(st_.fatal_fault_fired));
  // The doorbell page is the server's memory, not the host's: it moves with the device.
  for (uint32_t i = 0; i < 2 * queue_count_; ++i) w.put(__atomic_load_n(&doorbells_[i], __ATOMIC_ACQUIRE));
  // Memory-backed namespaces: a bitmap of the 4 KiB pages holding non-zero bytes, then
  // those pages.
  for (const auto& ns : namespaces_) {
    if (!ns->memory_backed()) continue;
    uint64_t pages = (ns->bytes() + kPageBytes - 1) / kPageBytes;
    std::vector<uint8_t> bitmap((pages + 7) / 8, 0);
    const std::byte* mem = ns->memory();
    static const std::byte zero_page[kPageBytes] = {};
    for (uint64_t p = 0; p < pages; ++p) {
      uint64_t len = std::min(kPageBytes, ns->bytes() - p * kPageBytes);
      if (std::memcmp(mem + p * kPageBytes, zero_page, len) != 0) bitmap[p / 8] |= uint8_t(1u << (p % 8));
    }
    w.put(pages);
    w.bytes(bitmap.data(), bitmap.size());
    for (uint64_t p = 0; p < pages; ++p)
      if (bitmap[p / 8] & (1u << (p % 8))) w.bytes(mem + p * kPageBytes, std::min(kPageBytes, ns->bytes() - p * kPageBytes));
  }
  w.put(kStateEndMagic);
  w.put(mig::crc32c(std::span<const uint8_t>(out).subspan(start)));
}

Status NvmeController::load_state(std::span<const uint8_t> in) {
  if (++state_loads_ == opt_.faults.refuse_state_load)
    return Status::error(EIO, fmt::format("nvme: migration state refused (fault migload@{})", state_loads_));
  Reader r(in);
  uint32_t magic = 0, version = 0, queues = 0, mqes = 0, ns_count = 0, lba = 0;
  if (!r.get(&magic) || magic != kStateMagic) return corrupt("not an NVMe controller state (bad magic)");
  if (!r.get(&version)) return corrupt("truncated header");
  if (version != state_version())
    return corrupt(fmt::format("format version {} is not the supported version {}", version, state_version()));
  if (!r.get(&queues) || !r.get(&mqes) || !r.get(&ns_count) || !r.get(&lba)) return corrupt("truncated header");
  if (queues != queue_count_ || mqes != opt_.max_queue_entries || ns_count != namespaces_.size() ||
      lba != opt_.lba_bytes)
    return corrupt(fmt::format("saved with queues={} mqes={} ns={} lba={}, this controller has queues={} "
                               "mqes={} ns={} lba={}", queues - 1, mqes, ns_count, lba, opt_.io_queues,
                               opt_.max_queue_entries, namespaces_.size(), opt_.lba_bytes));
  for (const auto& ns : namespaces_) {
    uint64_t bytes = 0;
    bool memory = false;
    if (!r.get(&bytes) || !r.get_bool(&memory)) return corrupt("truncated namespace list");
    if (bytes != ns->bytes() || memory != ns->memory_backed())
      return corrupt(fmt::format("a namespace of {} bytes ({}) does not match this controller's {} bytes ({})",
                                 bytes, memory ? "memory" : "file", ns->bytes(), ns->memory_backed() ? "memory" : "file"));
  }

  ControllerState s;
  s.sqs.resize(queue_count_);
  s.cqs.resize(queue_count_);
  bool ok = r.get(&s.cc) && r.get(&s.csts) && r.get(&s.aqa) && r.get(&s.intms) && r.get(&s.asq) && r.get(&s.acq);
  for (uint32_t q = 0; ok && q < queue_count_; ++q) {
    SubmissionQueue& sq = s.sqs[q];
    ok = r.get_bool(&sq.live) && r.get(&sq.base) && r.get(&sq.size) && r.get(&sq.head) && r.get(&sq.tail) &&
         r.get(&sq.cqid) && r.get(&sq.priority) && r.get(&sq.last_doorbell) && r.get(&sq.last_shadow) &&
         r.get(&sq.last_event_idx);
    CompletionQueue& cq = s.cqs[q];
    ok = ok && r.get_bool(&cq.live) && r.get(&cq.base) && r.get(&cq.size) && r.get(&cq.head) && r.get(&cq.tail) &&
         r.get(&cq.vector) && r.get_bool(&cq.phase) && r.get_bool(&cq.irq_enabled) && r.get(&cq.sq_refs) &&
         r.get(&cq.last_doorbell) && r.get(&cq.last_shadow) && r.get(&cq.last_event_idx) && r.get_bool(&cq.irq_pending);
  }
  Features& f = s.features;
  ok = ok && r.get(&f.arbitration) && r.get(&f.power_management) && r.get(&f.temp_over) && r.get(&f.temp_under) &&
       r.get_bool(&f.write_cache) && r.get(&f.sq_allocated) && r.get(&f.cq_allocated) &&
       r.get(&f.interrupt_coalescing) && r.get(&f.async_event_config);
  HealthCounters& h = s.health;
  ok = ok && r.get(&h.blocks_read_512) && r.get(&h.blocks_written_512) && r.get(&h.host_reads) &&
       r.get(&h.host_writes) && r.get(&h.error_entries);
  ok = ok && r.get(&s.shadow_doorbells) && r.get(&s.event_indexes);
  uint32_t aers = 0, aborts = 0;
  ok = ok && r.get(&aers);
  if (!ok) return corrupt("truncated controller state");
  if (aers > kMaxAsyncEvents) return corrupt(fmt::format("{} outstanding event requests, at most {}", aers, kMaxAsyncEvents));
  s.async_event_cids.resize(aers);
  for (uint16_t& cid : s.async_event_cids) ok = ok && r.get(&cid);
  ok = ok && r.get_bool(&s.error_event_pending) && r.get(&s.error_event_info) && r.get_bool(&s.error_events_masked) &&
       r.get(&aborts);
  if (!ok) return corrupt("truncated event state");
  if (aborts > kMaxAborts) return corrupt(fmt::format("{} pending aborts, at most {}", aborts, kMaxAborts));
  s.aborts.resize(aborts);
  for (PendingAbort& a : s.aborts) ok = ok && r.get(&a.sqid) && r.get(&a.cid);
  const uint8_t* log = ok ? r.take(sizeof(s.error_log)) : nullptr;
  if (!log) return corrupt("truncated error log");
  std::memcpy(s.error_log.data(), log, sizeof(s.error_log));
  ok = r.get(&s.commands_fetched) && r.get_bool(&s.fatal_fault_fired);
  std::vector<uint32_t> doorbell_values(2 * queue_count_);
  for (uint32_t& v : doorbell_values) ok = ok && r.get(&v);
  if (!ok) return corrupt("truncated doorbells");

  // Consistency: every index inside its queue, every reference to a live queue.
  std::vector<uint16_t> refs(queue_count_, 0);
  for (uint32_t q = 0; q < queue_count_; ++q) {
    const SubmissionQueue& sq = s.sqs[q];
    if (sq.live) {
      if (sq.size < 2 || sq.size > opt_.max_queue_entries || sq.head >= sq.size || sq.tail >= sq.size)
        return corrupt(fmt::format("submission queue {} has size {}, head {}, tail {}", q, sq.size, sq.head, sq.tail));
      if (sq.cqid >= queue_count_ || !s.cqs[sq.cqid].live || (q == 0) != (sq.cqid == 0))
        return corrupt(fmt::format("submission queue {} names completion queue {}, which it cannot use", q, sq.cqid));
      refs[sq.cqid]++;
    }
    const CompletionQueue& cq = s.cqs[q];
    if (cq.live && (cq.size < 2 || cq.size > opt_.max_queue_entries || cq.head >= cq.size || cq.tail >= cq.size ||
                    cq.vector >= queue_count_))
      return corrupt(fmt::format("completion queue {} has size {}, head {}, tail {}, vector {}", q, cq.size, cq.head,
                                 cq.tail, cq.vector));
  }
  for (uint32_t q = 0; q < queue_count_; ++q)
    if (s.cqs[q].live && s.cqs[q].sq_refs != refs[q])
      return corrupt(fmt::format("completion queue {} counts {} submission queues, {} name it", q, s.cqs[q].sq_refs, refs[q]));
  if ((s.csts & kCstsRdy) && (!s.sqs[0].live || !s.cqs[0].live)) return corrupt("ready without admin queues");
  if (((s.cc >> kCcMpsShift) & 0xf) > kMpsMax) return corrupt("CC.MPS above CAP.MPSMAX");
  if (f.sq_allocated >= opt_.io_queues || f.cq_allocated >= opt_.io_queues) return corrupt("more queues allocated than exist");
  for (const PendingAbort& a : s.aborts)
    if (a.sqid == 0 || a.sqid >= queue_count_ || !s.sqs[a.sqid].live) return corrupt("an abort names a missing queue");

  // Namespace contents: check the whole layout before copying anything.
  struct NsImage {
    uint64_t pages;
    const uint8_t* bitmap;
    const uint8_t* data;
  };
  std::vector<NsImage> images;
  for (const auto& ns : namespaces_) {
    if (!ns->memory_backed()) continue;
    uint64_t pages = 0;
    if (!r.get(&pages)) return corrupt("truncated namespace contents");
    if (pages != (ns->bytes() + kPageBytes - 1) / kPageBytes) return corrupt("namespace page count does not match");
    const uint8_t* bitmap = r.take((pages + 7) / 8);
    if (!bitmap) return corrupt("truncated namespace bitmap");
    uint64_t data_bytes = 0;
    for (uint64_t p = 0; p < pages; ++p)
      if (bitmap[p / 8] & (1u << (p % 8))) data_bytes += std::min(kPageBytes, ns->bytes() - p * kPageBytes);
    const uint8_t* data = r.take(data_bytes);
    if (!data) return corrupt("truncated namespace data");
    images.push_back({pages, bitmap, data});
  }
  uint32_t end = 0;
  uint32_t sum = 0;
  if (!r.get(&end) || end != kStateEndMagic) return corrupt("missing end marker");
  if (!r.get(&sum)) return corrupt("missing checksum");
  if (r.left()) return corrupt(fmt::format("{} unexpected bytes after the end marker", r.left()));
  if (mig::crc32c(in.first(in.size() - sizeof(sum))) != sum) return corrupt("checksum mismatch: the stream is corrupted");

  // Commit.
  size_t image = 0;
  for (auto& ns : namespaces_) {
    if (!ns->memory_backed()) continue;
    const NsImage& img = images[image++];
    const uint8_t* src = img.data;
    for (uint64_t p = 0; p < img.pages; ++p) {
      uint64_t len = std::min(kPageBytes, ns->bytes() - p * kPageBytes);
      if (img.bitmap[p / 8] & (1u << (p % 8))) {
        std::memcpy(ns->memory() + p * kPageBytes, src, len);
        src += len;
      } else {
        ns->zero(p * kPageBytes, len);
      }
    }
  }
  st_ = std::move(s);
  enable_error_.clear();
  for (uint32_t i = 0; i < doorbell_values.size(); ++i) set_doorbell(i, doorbell_values[i]);
  return Status::ok();
}

}  // namespace uvio::emu::nvme
