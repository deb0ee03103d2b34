// The migration engine: pre-copy passes on a thread of its own, stop-copy with the
// services paused, and the destination's checked apply. doc/migration.md ("Engine")
// describes the passes, the convergence rule and the failure handling.
#include <uvio/migrate.h>

#include "iommu/dma_space.h"
#include "mig/cpu_dirty.h"
#include "mig/device_walk.h"
#include "mig/dirty_bitmap.h"
#include "mig/stream.h"
#include "mig/transport.h"

#include <uvio/control.h>
#include <uvio/log.h>
#include <uvio/runtime.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>

namespace uvio::mig {

std::string_view phase_name(Phase p) {
  switch (p) {
    case Phase::Idle: return "idle";
    case Phase::Setup: return "setup";
    case Phase::PreCopy: return "precopy";
    case Phase::StopCopy: return "stopcopy";
    case Phase::Completed: return "completed";
    case Phase::Failed: return "failed";
    case Phase::Cancelled: return "cancelled";
  }
  return "?";
}

namespace {

constexpr const char* kLog = "mig";
constexpr int kHelloTimeoutMs = 10000;
constexpr int kAckTimeoutMs = 30000;
// Destination: a source that sends nothing for this long is gone.
constexpr int kStreamTimeoutMs = 30000;
// After an Abort, how long one side keeps reading so the other finds the reason.
constexpr int kAbortDrainMs = 1000;
// Pages go out in runs of at most this much between two checks for cancel.
constexpr uint64_t kMaxRunBytes = 8ull << 20;
// A pass must send this much before its rate says anything about the link.
constexpr uint64_t kMinBandwidthSample = 1ull << 20;
constexpr uint64_t kMaxParticipantBytes = 1ull << 30;
constexpr const char* kRuntimeParticipant = "uvio.memory";

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string app_name() { return program_invocation_short_name; }

std::string human_bytes(double b) {
  if (b >= 1 << 30) return fmt::format("{:.1f} GiB", b / (1 << 30));
  if (b >= 1 << 20) return fmt::format("{:.1f} MiB", b / (1 << 20));
  return fmt::format("{:.0f} KiB", b / 1024);
}

// UVIO_MIG_CPU_TRACKING=uffd|soft-dirty|none picks the CPU tracker instead of the best
// available (tests of the fallbacks; a way around a kernel that misbehaves).
std::optional<CpuTrackMode> forced_cpu_mode() {
  const char* v = std::getenv("UVIO_MIG_CPU_TRACKING");
  if (!v) return std::nullopt;
  std::string_view s = v;
  if (s == "uffd") return CpuTrackMode::UffdWpAsync;
  if (s == "soft-dirty") return CpuTrackMode::SoftDirty;
  if (s == "none") return CpuTrackMode::Everything;
  UVIO_LOG(Warning, kLog, "UVIO_MIG_CPU_TRACKING={} is not uffd, soft-dirty or none; ignored", s);
  return std::nullopt;
}

// Pre-copy reads pages while lcores store into them: by design, as a page stored after
// its copy is found dirty and sent again, and the last copy is made with every writer
// paused. ThreadSanitizer is told to ignore the copying thread's reads meanwhile (a
// suppression would still pay for each racy word of megabytes of pages).
#if defined(__SANITIZE_THREAD__)
#define UVIO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UVIO_TSAN 1
#endif
#endif
#ifdef UVIO_TSAN
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
struct LiveMemoryReads {
  LiveMemoryReads() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
  ~LiveMemoryReads() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
};
#else
struct LiveMemoryReads {};
#endif

std::vector<uint8_t> pass_end_payload(uint32_t pass, uint64_t bytes) {
  std::vector<uint8_t> out;
  for (int i = 0; i < 4; i++) out.push_back(static_cast<uint8_t>(pass >> (8 * i)));
  for (int i = 0; i < 8; i++) out.push_back(static_cast<uint8_t>(bytes >> (8 * i)));
  return out;
}

Status with_context(const Status& st, std::string_view what) {
  return Status::error(st.code(), fmt::format("{}: {}", what, st.message()));
}

// What a peer's Abort says, when the peer sent one before the channel failed.
std::string abort_reason(StreamReader& reader) {
  reader.set_timeout(kAbortDrainMs);
  for (int i = 0; i < 64; i++) {
    auto s = reader.next();
    if (!s) return {};
    if (s->type == SectionType::Abort) return std::string(s->payload.begin(), s->payload.end());
  }
  return {};
}

}  // namespace

struct Migration::Impl {
  explicit Impl(Runtime& r) : rt(r) {}
  Runtime& rt;
  std::vector<Participant> participants;  // [0] is the runtime's own

  // Set once a control client has read a Completed status: the source exits right after
  // migrating, and the tool that started it must learn the outcome first.
  std::atomic<bool> completion_reported{false};
  mutable std::mutex mu;  // everything below
  Progress prog;
  std::thread worker;
  bool running = false;
  Status last_result;
  Channel* channel = nullptr;  // the live connection, for cancel()
  bool cancel_requested = false;
  std::atomic<bool> migrated{false};

  // The control socket may outlive this object: its handlers reach it through here.
  struct Handle {
    std::mutex mu;
    Impl* impl = nullptr;
  };
  std::shared_ptr<Handle> handle = std::make_shared<Handle>();

  void update(const std::function<void(Progress&)>& fn) {
    std::lock_guard lock(mu);
    fn(prog);
  }
  bool cancelled() const {
    std::lock_guard lock(mu);
    return cancel_requested;
  }
  void set_channel(Channel* c) {
    std::lock_guard lock(mu);
    channel = c;
    if (c && cancel_requested) c->shutdown();
  }

  bool committing = false;  // Complete sent: the destination may already run
  // The worker's outcome when it failed (its own thread only, until published).
  std::optional<Phase> end_phase;
  std::string end_message;
  double end_total_ms = 0;

  Status check_migratable() const;
  Status start(const SendOptions& o);
  void cancel(bool quiet = false);
  Status run_source(const SendOptions& o);
  Status receive();
  HelloPayload local_hello(const std::string& token) const;
  std::string check_hello(const HelloPayload& h) const;
};

// ------------------------------------------------------------------------------------
// What both ends compare.

HelloPayload Migration::Impl::local_hello(const std::string& token) const {
  HelloPayload h;
  h.app = app_name();
  h.token = token;
  for (const MemArea* a : rt.memory().areas())
    h.areas.push_back({a->id, reinterpret_cast<uint64_t>(a->va), a->len, a->iova, a->page_size});
  for (const RuntimeDevice& d : rt.devices()) h.devices.push_back({d.name, d.vendor_id, d.device_id, d.class_code});
  for (const Participant& p : participants) h.participants.push_back(p.name);
  return h;
}

// Empty when the destination accepts `h`; else why not, for a person to act on.
std::string Migration::Impl::check_hello(const HelloPayload& h) const {
  HelloPayload mine = local_hello(rt.config().migrate_token);
  if (h.app != mine.app)
    return fmt::format("the source runs '{}', this destination runs '{}'", h.app, mine.app);
  if (h.token != mine.token) return "the migration token does not match this destination's --migrate-token";
  auto area_text = [](const MemAreaLayout& a) {
    return fmt::format("area {} at {:#x}+{} IOVA {:#x} in {} pages", a.id, a.va, human_bytes(double(a.len)), a.iova,
                       human_bytes(double(a.page_size)));
  };
  if (h.areas.size() != mine.areas.size())
    return fmt::format("the source has {} memory areas, this destination {}: start it with the same -m/--socket-mem",
                       h.areas.size(), mine.areas.size());
  for (size_t i = 0; i < h.areas.size(); i++) {
    const MemAreaLayout &s = h.areas[i], &d = mine.areas[i];
    if (s.id != d.id || s.va != d.va || s.len != d.len || s.iova != d.iova || s.page_size != d.page_size)
      return fmt::format("memory layout differs: source {}, destination {} (same -m, page size and IOVA mode "
                         "needed)", area_text(s), area_text(d));
  }
  if (h.devices.size() != mine.devices.size())
    return fmt::format("the source has {} devices, this destination {}", h.devices.size(), mine.devices.size());
  for (size_t i = 0; i < h.devices.size(); i++) {
    const DeviceLayout &s = h.devices[i], &d = mine.devices[i];
    if (s.vendor_id != d.vendor_id || s.device_id != d.device_id || s.class_code != d.class_code)
      return fmt::format("device {} differs: source {} is {:04x}:{:04x} class {:06x}, destination {} is "
                         "{:04x}:{:04x} class {:06x}", i, s.name, s.vendor_id, s.device_id, s.class_code, d.name,
                         d.vendor_id, d.device_id, d.class_code);
  }
  if (h.participants != mine.participants) {
    auto join = [](const std::vector<std::string>& v) {
      std::string out;
      for (auto& s : v) out += (out.empty() ? "" : ",") + s;
      return out;
    };
    return fmt::format("participants differ: source [{}], destination [{}]", join(h.participants),
                       join(mine.participants));
  }
  return {};
}

Status Migration::Impl::check_migratable() const {
  for (const MemArea* a : rt.memory().areas())
    if (!a->page_iova.empty())
      return Status::error(ENOTSUP, "memory in IOVA-as-PA mode cannot migrate: physical addresses differ on the "
                                    "destination (use --iova-mode=va)");
  for (const RuntimeDevice& d : rt.devices()) {
    DeviceMigInfo info = probe_device(d);
    if (!info.why_not.empty()) return Status::error(ENOTSUP, info.why_not);
  }
  return Status::ok();
}

// ------------------------------------------------------------------------------------
// Source.

namespace {

struct SourceDevice {
  const RuntimeDevice* rd = nullptr;
  DeviceMigInfo info;
  bool left_running = false;  // moved out of RUNNING: must go back on failure
};

struct TrackerRun {
  iommu::DirtyTracker* tracker = nullptr;
  std::vector<iommu::IovaRange> ranges;
  uint64_t page_size = kDirtyPageBytes;
  bool started = false;
};

}  // namespace

Status Migration::Impl::run_source(const SendOptions& o) {
  const auto t_start = Clock::now();
  Memory& memory = rt.memory();
  std::vector<SourceDevice> devices;
  std::vector<TrackerRun> trackers;
  std::unique_ptr<CpuDirtyTracker> cpu;
  std::unique_ptr<Channel> channel;
  std::unique_ptr<StreamWriter> writer;
  std::unique_ptr<StreamReader> reader;
  bool paused = false, quiesce_started = false;
  Clock::time_point t_pause{};

  auto stop_tracking = [&] {
    for (TrackerRun& t : trackers)
      if (t.started) {
        Status st = t.tracker->stop();
        if (!st) UVIO_LOG(Warning, kLog, "{}: stopping dirty tracking: {}", t.tracker->name(), st.message());
        t.started = false;
      }
    if (cpu) {
      Status st = cpu->stop();
      if (!st) UVIO_LOG(Warning, kLog, "stopping CPU dirty tracking: {}", st.message());
    }
  };

  // Everything back as it was: devices RUNNING, participants resumed, services going.
  auto roll_back = [&](const Status& why) {
    bool was_cancel = cancelled() || why.code() == ECANCELED;
    for (SourceDevice& d : devices) {
      if (!d.left_running) continue;
      Status st = walk_device(*d.rd->device, d.info.features, iommu::MigState::Running);
      if (!st) UVIO_LOG(Err, kLog, "cannot return {} to RUNNING after the failed migration: {}", d.rd->name, st.message());
    }
    if (quiesce_started)
      for (auto it = participants.rbegin(); it != participants.rend(); ++it)
        if (it->resume) it->resume();
    if (paused) rt.services().resume();
    stop_tracking();
    // Published with running = false when this thread ends: whoever sees the outcome
    // can start the next migration.
    end_phase = was_cancel ? Phase::Cancelled : Phase::Failed;
    end_message = was_cancel ? "cancelled; the source goes on" : why.message();
    end_total_ms = ms_between(t_start, Clock::now());
    // The source runs again before the destination is told (a stalled peer may block
    // this write until cancel() shuts the channel down).
    if (writer && !was_cancel) {
      std::string reason = why.message();
      (void)writer->write(SectionType::Abort, 0, std::span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(reason.data()), reason.size()));
    }
    set_channel(nullptr);
    channel.reset();
    if (was_cancel) UVIO_LOG(Notice, kLog, "migration to {} cancelled", o.to);
    else UVIO_LOG(Err, kLog, "migration to {} failed: {}", o.to, why.message());
    return was_cancel ? Status::error(ECANCELED, "migration cancelled") : why;
  };
#define SOURCE_TRY(expr)                                  \
  do {                                                    \
    ::uvio::Status source_try_st_ = (expr);               \
    if (!source_try_st_) return roll_back(source_try_st_); \
  } while (0)
  // A failed write may hide the peer's reason: its Abort is likely already here.
  auto stream_error = [&](const Status& st) {
    if (st.code() == ECANCELED || cancelled() || !reader) return st;
    std::string reason = abort_reason(*reader);
    if (reason.empty()) return st;
    return Status::error(ECONNABORTED, fmt::format("the destination gave up: {}", reason));
  };

  update([&](Progress& p) {
    p = Progress{};
    p.phase = Phase::Setup;
    p.message = fmt::format("connecting to {}", o.to);
  });
  SOURCE_TRY(check_migratable());
  for (const RuntimeDevice& d : rt.devices()) devices.push_back({&d, probe_device(d), false});

  // Connect and agree.
  auto ch = connect(o.to);
  if (!ch) return roll_back(with_context(ch.status(), fmt::format("connecting to {}", o.to)));
  channel = std::move(ch.value());
  set_channel(channel.get());
  if (cancelled()) return roll_back(Status::error(ECANCELED, "cancelled"));
  writer = std::make_unique<StreamWriter>(*channel);
  reader = std::make_unique<StreamReader>(*channel);
  SOURCE_TRY(writer->begin());
  SOURCE_TRY(writer->write(SectionType::Hello, 0, encode_hello(local_hello(o.token))));
  reader->set_timeout(kHelloTimeoutMs);
  SOURCE_TRY(reader->begin());
  {
    auto s = reader->next();
    if (!s) return roll_back(with_context(s.status(), "waiting for the destination's reply"));
    if (s->type == SectionType::Abort)
      return roll_back(Status::error(ECONNREFUSED, fmt::format("the destination refused: {}",
                                                               std::string(s->payload.begin(), s->payload.end()))));
    if (s->type != SectionType::HelloReply)
      return roll_back(Status::error(EPROTO, fmt::format("the destination answered with section type {}, not a reply",
                                                         static_cast<unsigned>(s->type))));
    auto reply = decode_reply(s->payload);
    if (!reply) return roll_back(with_context(reply.status(), "the destination's reply"));
    if (!reply->ok) return roll_back(Status::error(ECONNREFUSED, fmt::format("the destination refused: {}", reply->message)));
  }

  // Tracking: devices' DMA by IOVA, lcores' stores by VA.
  std::vector<DirtyBitmap::AreaSpan> spans;
  for (const MemArea* a : memory.areas())
    spans.push_back({reinterpret_cast<uint64_t>(a->va), a->len, a->iova});
  const size_t area_count = spans.size();
  DirtyBitmap bitmap(spans);
  for (SourceDevice& d : devices) {
    auto it = std::find_if(trackers.begin(), trackers.end(), [&](const TrackerRun& t) { return t.tracker == d.info.tracker; });
    if (it == trackers.end()) {
      trackers.push_back({d.info.tracker, {}, kDirtyPageBytes, false});
      it = trackers.end() - 1;
    }
    for (const auto& m : rt.dma().mappings(&d.rd->device->domain()))
      it->ranges.push_back({m.iova, m.iova + m.len - 1});
  }
  for (TrackerRun& t : trackers) {
    std::sort(t.ranges.begin(), t.ranges.end(), [](auto& a, auto& b) { return a.start < b.start; });
    std::vector<iommu::IovaRange> merged;
    for (const auto& r : t.ranges) {
      if (!merged.empty() && r.start <= merged.back().last + 1) merged.back().last = std::max(merged.back().last, r.last);
      else merged.push_back(r);
    }
    t.ranges = combine_iova_ranges(std::move(merged), t.tracker->max_ranges());
    if (t.ranges.empty()) continue;
    Status st = t.tracker->start(t.ranges, t.page_size);
    if (!st) return roll_back(with_context(st, fmt::format("starting {}", t.tracker->name())));
    t.started = true;
  }
  const std::optional<CpuTrackMode> forced = forced_cpu_mode();
  auto cpu_tracker = CpuDirtyTracker::create(memory, forced ? &*forced : nullptr);
  if (!cpu_tracker) return roll_back(cpu_tracker.status());
  cpu = std::move(cpu_tracker.value());
  SOURCE_TRY(cpu->start());

  std::vector<uint64_t> scratch;
  auto collect = [&]() -> Status {
    // Soft-dirty loses stores made between its read and its clear: hold the writers.
    bool hold = cpu->needs_writers_paused() && !paused;
    if (hold) rt.services().pause();
    Status st = cpu->collect([&](uint64_t va, uint64_t len) { bitmap.mark_va(va, len); });
    if (hold) rt.services().resume();
    UVIO_TRY(st);
    for (TrackerRun& t : trackers)
      if (t.started) UVIO_TRY(read_tracker_into(*t.tracker, t.ranges, t.page_size, bitmap, scratch));
    if (memory.areas().size() != area_count)
      return Status::error(EBUSY, "runtime memory grew during the migration; the destination's layout no longer matches");
    return Status::ok();
  };
  auto send_dirty = [&]() -> Status {
    return bitmap.drain_runs(kMaxRunBytes, [&](uint64_t va, uint64_t len) -> Status {
      if (cancelled()) return Status::error(ECANCELED, "cancelled");
      [[maybe_unused]] LiveMemoryReads racy_by_design;
      return writer->write_pages(va, reinterpret_cast<const void*>(va), len);
    });
  };
  std::vector<uint8_t> devbuf;
  auto send_device_data = [&](size_t index) -> Status {
    iommu::Device& dev = *devices[index].rd->device;
    Status st = read_device_data(dev, kMaxSectionPayload, devbuf, [&](std::span<const uint8_t> chunk) {
      return writer->write(SectionType::DeviceState, static_cast<uint32_t>(index), chunk);
    });
    if (!st) return with_context(st, fmt::format("reading {}'s migration data", devices[index].rd->name));
    return Status::ok();
  };

  // Pre-copy: devices that can keep running while their state is read do so.
  for (SourceDevice& d : devices) {
    if (!d.info.pre_copy) continue;
    d.left_running = true;
    SOURCE_TRY(walk_device(*d.rd->device, d.info.features, iommu::MigState::PreCopy));
  }
  update([&](Progress& p) {
    p.phase = Phase::PreCopy;
    p.message = fmt::format("pre-copy to {}; CPU tracking: {}", channel->peer(), cpu_track_mode_name(cpu->mode()));
  });
  bitmap.mark_all();
  double bandwidth = 0;
  for (uint32_t pass = 0;; pass++) {
    const auto t0 = Clock::now();
    const uint64_t before = writer->bytes_written();
    update([&](Progress& p) { p.pass = pass; });
    Status st = send_dirty();
    for (size_t i = 0; st && i < devices.size(); i++)
      if (devices[i].info.pre_copy) st = send_device_data(i);
    if (st) st = writer->write(SectionType::PassEnd, 0, pass_end_payload(pass, writer->bytes_written() - before));
    if (!st) return roll_back(stream_error(st));
    SOURCE_TRY(collect());
    const double secs = std::max(1e-6, ms_between(t0, Clock::now()) / 1000);
    const uint64_t sent = writer->bytes_written() - before;
    if (sent >= kMinBandwidthSample || bandwidth == 0) bandwidth = double(sent) / secs;
    const double dirty_rate = double(bitmap.dirty_bytes()) / secs;
    uint64_t device_bytes = 0;
    for (SourceDevice& d : devices)
      if (auto n = d.rd->device->mig_data_size()) device_bytes += *n;
    const double expected_ms = double(bitmap.dirty_bytes() + device_bytes) / std::max(1.0, bandwidth) * 1000;
    update([&](Progress& p) {
      p.bytes_sent = writer->bytes_written();
      p.bytes_remaining = bitmap.dirty_bytes();
      p.dirty_rate_bps = dirty_rate;
      p.bandwidth_bps = bandwidth;
      p.expected_downtime_ms = expected_ms;
    });
    UVIO_LOG(Info, kLog, "pass {}: sent {} in {:.1f} ms; {} dirty ({}/s), link {}/s, expected downtime {:.1f} ms", pass,
             human_bytes(double(sent)), secs * 1000, human_bytes(double(bitmap.dirty_bytes())), human_bytes(dirty_rate),
             human_bytes(bandwidth), expected_ms);
    if (expected_ms <= o.max_downtime_ms) break;
    if (pass + 1 >= o.max_passes) {
      if (o.force) {
        UVIO_LOG(Warning, kLog, "no convergence after {} passes; forcing stop-copy with an expected downtime of {:.0f} ms",
                 pass + 1, expected_ms);
        break;
      }
      return roll_back(Status::error(
          ETIMEDOUT, fmt::format("pre-copy did not converge in {} passes: memory is dirtied at {}/s while the link "
                                 "moves {}/s; {} would remain, an expected downtime of {:.1f} ms over the {} ms "
                                 "budget (raise max_downtime_ms, or force)",
                                 o.max_passes, human_bytes(dirty_rate), human_bytes(bandwidth),
                                 human_bytes(double(bitmap.dirty_bytes())), expected_ms, o.max_downtime_ms)));
    }
  }

  // Stop-copy: nothing writes memory any more once services, participants and devices stop.
  update([&](Progress& p) {
    p.phase = Phase::StopCopy;
    p.message = "stop-copy";
  });
  t_pause = Clock::now();
  rt.services().pause();
  paused = true;
  const auto t_paused = Clock::now();
  quiesce_started = true;
  for (Participant& p : participants)
    if (p.quiesce) {
      Status st = p.quiesce();
      if (!st) return roll_back(with_context(st, fmt::format("participant {} could not quiesce", p.name)));
    }
  const auto t_quiesced = Clock::now();
  for (SourceDevice& d : devices) {
    d.left_running = true;
    SOURCE_TRY(walk_device(*d.rd->device, d.info.features, iommu::MigState::StopCopy));
  }
  const auto t_stopped = Clock::now();
  SOURCE_TRY(collect());
  const auto t_collected = Clock::now();
  const uint64_t final_bytes = bitmap.dirty_bytes();
  {
    Status st = send_dirty();
    for (size_t i = 0; st && i < devices.size(); i++) {
      st = send_device_data(i);
      if (st) st = writer->write(SectionType::DeviceEnd, static_cast<uint32_t>(i), {});
    }
    for (size_t i = 0; st && i < participants.size(); i++) {
      std::vector<uint8_t> saved;
      st = participants[i].save ? participants[i].save(saved) : Status::ok();
      if (!st) {
        st = with_context(st, fmt::format("participant {} could not save", participants[i].name));
        break;
      }
      size_t off = 0;
      do {
        size_t n = std::min<size_t>(kMaxSectionPayload, saved.size() - off);
        st = writer->write(SectionType::Participant, static_cast<uint32_t>(i),
                           std::span<const uint8_t>(saved.data() + off, n));
        off += n;
      } while (st && off < saved.size());
    }
    if (st) {
      // From here on a cancel would leave two copies running: it is refused.
      std::lock_guard lock(mu);
      if (cancel_requested) st = Status::error(ECANCELED, "cancelled");
      else committing = true;
    }
    if (st) st = writer->write(SectionType::Complete, 0, {});
    if (!st) return roll_back(stream_error(st));
  }
  reader->set_timeout(kAckTimeoutMs);
  auto ack = reader->next();
  if (!ack) return roll_back(with_context(ack.status(), "waiting for the destination's acknowledgement"));
  if (ack->type == SectionType::Abort)
    return roll_back(Status::error(ECONNABORTED, fmt::format("the destination gave up: {}",
                                                             std::string(ack->payload.begin(), ack->payload.end()))));
  if (ack->type != SectionType::Ack)
    return roll_back(Status::error(EPROTO, fmt::format("expected the acknowledgement, got section type {}",
                                                       static_cast<unsigned>(ack->type))));
  auto reply = decode_reply(ack->payload);
  if (!reply) return roll_back(with_context(reply.status(), "the acknowledgement"));
  if (!reply->ok) return roll_back(Status::error(ECONNABORTED, fmt::format("the destination gave up: {}", reply->message)));

  // The destination runs: this side must not touch its devices or memory again.
  const auto t_ack = Clock::now();
  UVIO_LOG(Info, kLog, "stop-copy: services paused in {:.2f} ms, participants quiesced in {:.2f} ms, devices "
           "stopped in {:.2f} ms, dirty scan {:.2f} ms, send and apply until the ack {:.2f} ms",
           ms_between(t_pause, t_paused), ms_between(t_paused, t_quiesced), ms_between(t_quiesced, t_stopped),
           ms_between(t_stopped, t_collected), ms_between(t_collected, t_ack));
  // Progress says Completed before migrated() turns true: whoever sees the one sees both.
  update([&](Progress& p) {
    p.phase = Phase::Completed;
    p.bytes_sent = writer->bytes_written();
    p.bytes_remaining = 0;
    p.downtime_ms = ms_between(t_pause, t_ack);
    p.total_ms = ms_between(t_start, t_ack);
    p.message = fmt::format("completed: {} sent, {} in stop-copy, downtime {:.1f} ms", human_bytes(double(p.bytes_sent)),
                            human_bytes(double(final_bytes)), p.downtime_ms);
    UVIO_LOG(Notice, kLog, "migration to {} {}", o.to, p.message);
  });
  migrated.store(true, std::memory_order_release);
  stop_tracking();
  set_channel(nullptr);
  channel.reset();
  return Status::ok();
#undef SOURCE_TRY
}

// ------------------------------------------------------------------------------------
// Destination.

Status Migration::Impl::receive() {
  const auto t_start = Clock::now();
  const EalConfig& cfg = rt.config();
  if (cfg.migrate_listen.empty()) return Status::error(EINVAL, "receive() needs --migrate-listen=ADDRESS");
  update([&](Progress& p) {
    p = Progress{};
    p.phase = Phase::Setup;
    p.message = fmt::format("listening on {}", cfg.migrate_listen);
  });
  auto fail = [&](const Status& st) {
    update([&](Progress& p) {
      p.phase = Phase::Failed;
      p.message = st.message();
      p.total_ms = ms_between(t_start, Clock::now());
    });
    UVIO_LOG(Err, kLog, "incoming migration failed: {}", st.message());
    return st;
  };
  auto listener = Listener::listen(cfg.migrate_listen);
  if (!listener) return fail(with_context(listener.status(), fmt::format("--migrate-listen={}", cfg.migrate_listen)));
  UVIO_LOG(Notice, kLog, "waiting for a migration on {}", (*listener)->address());
  auto ch = (*listener)->accept(0);
  if (!ch) return fail(with_context(ch.status(), "accepting the source"));
  std::unique_ptr<Channel> channel = std::move(ch.value());
  listener.value().reset();
  StreamReader reader(*channel);
  StreamWriter writer(*channel);
  reader.set_timeout(kStreamTimeoutMs);
  bool writer_started = false;

  // Refusal: the reason goes back to the source, which keeps running.
  auto abort_with = [&](const Status& st, bool drain) {
    std::string reason = st.message();
    if (!writer_started) writer_started = writer.begin().is_ok();
    if (writer_started)
      (void)writer.write(SectionType::Abort, 0,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(reason.data()), reason.size()));
    if (drain) {
      // Read on a little, so the source finds this Abort instead of a reset connection.
      reader.set_timeout(kAbortDrainMs);
      for (int i = 0; i < 4096; i++)
        if (!reader.next()) break;
    }
    return fail(st);
  };

  if (Status st = reader.begin(); !st) return abort_with(st, false);
  auto first = reader.next();
  if (!first) return abort_with(first.status(), false);
  if (first->type != SectionType::Hello)
    return abort_with(Status::error(EPROTO, "the source did not begin with its Hello"), false);
  auto hello = decode_hello(first->payload);
  if (!hello) return abort_with(with_context(hello.status(), "the source's Hello"), false);
  std::string refusal = check_hello(*hello);
  if (Status st = writer.begin(); !st) return fail(with_context(st, "answering the source"));
  writer_started = true;
  {
    ReplyPayload reply{refusal.empty(), refusal};
    Status st = writer.write(SectionType::HelloReply, 0, encode_reply(reply));
    if (!refusal.empty()) return fail(Status::error(EPERM, fmt::format("refused the source: {}", refusal)));
    if (!st) return fail(st);
  }
  UVIO_LOG(Notice, kLog, "receiving {} from {}", hello->app, channel->peer());

  // Devices wait in RESUMING for their data.
  const auto& rdevs = rt.devices();
  std::vector<DeviceMigInfo> infos;
  std::vector<bool> device_done(rdevs.size(), false);
  for (const RuntimeDevice& d : rdevs) {
    infos.push_back(probe_device(d));
    if (!infos.back().why_not.empty()) return abort_with(Status::error(ENOTSUP, infos.back().why_not), true);
    Status st = walk_device(*d.device, infos.back().features, iommu::MigState::Resuming);
    if (!st) return abort_with(st, true);
  }
  update([&](Progress& p) {
    p.phase = Phase::PreCopy;
    p.message = fmt::format("receiving from {}", channel->peer());
  });

  std::vector<const MemArea*> areas = rt.memory().areas();
  std::vector<std::vector<uint8_t>> saved(participants.size());
  uint64_t participant_bytes = 0;
  for (;;) {
    auto s = reader.next();
    if (!s) return abort_with(with_context(s.status(), "the migration stream"), false);
    switch (s->type) {
      case SectionType::Pages: {
        auto pages = decode_pages(s->payload);
        if (!pages) return abort_with(pages.status(), true);
        const uint64_t va = pages->va, len = pages->data.size();
        const MemArea* into = nullptr;
        for (const MemArea* a : areas) {
          auto lo = reinterpret_cast<uint64_t>(a->va);
          if (va >= lo && va - lo <= a->len && len <= a->len - (va - lo)) into = a;
        }
        if (!into || len == 0)
          return abort_with(Status::error(EFAULT, fmt::format("pages at {:#x}+{:#x} lie outside this runtime's memory",
                                                              va, len)), true);
        std::memcpy(reinterpret_cast<void*>(va), pages->data.data(), len);
        update([&](Progress& p) { p.bytes_sent = reader.bytes_read(); });
        break;
      }
      case SectionType::PassEnd:
        update([&](Progress& p) { p.pass++; });
        break;
      case SectionType::DeviceState:
      case SectionType::DeviceEnd: {
        if (s->id >= rdevs.size() || device_done[s->id])
          return abort_with(Status::error(EPROTO, fmt::format("device data for device {} (this side has {}{})", s->id,
                                                              rdevs.size(), s->id < rdevs.size() ? ", already loaded" : "")),
                            true);
        iommu::Device& dev = *rdevs[s->id].device;
        Status st = s->type == SectionType::DeviceState
                        ? dev.mig_write(s->payload.data(), s->payload.size())
                        : walk_device(dev, infos[s->id].features, iommu::MigState::Stop);
        if (!st)
          return abort_with(with_context(st, fmt::format("device {} refused its state", rdevs[s->id].name)), true);
        if (s->type == SectionType::DeviceEnd) device_done[s->id] = true;
        break;
      }
      case SectionType::Participant:
        if (s->id >= saved.size())
          return abort_with(Status::error(EPROTO, fmt::format("state for participant {} (this side has {})", s->id,
                                                              saved.size())), true);
        participant_bytes += s->payload.size();
        if (participant_bytes > kMaxParticipantBytes)
          return abort_with(Status::error(EFBIG, "participants' state exceeds 1 GiB"), true);
        saved[s->id].insert(saved[s->id].end(), s->payload.begin(), s->payload.end());
        break;
      case SectionType::Complete: {
        update([&](Progress& p) { p.phase = Phase::StopCopy; });
        for (size_t i = 0; i < rdevs.size(); i++)
          if (!device_done[i])
            return abort_with(Status::error(EPROTO, fmt::format("the stream ended without device {}'s state", rdevs[i].name)),
                              true);
        for (size_t i = 0; i < participants.size(); i++) {
          if (!participants[i].load) continue;
          Status st = participants[i].load(saved[i]);
          if (!st) return abort_with(with_context(st, fmt::format("participant {} could not load", participants[i].name)), true);
        }
        for (size_t i = 0; i < rdevs.size(); i++) {
          Status st = walk_device(*rdevs[i].device, infos[i].features, iommu::MigState::Running);
          if (!st) return abort_with(st, true);
        }
        Status st = writer.write(SectionType::Ack, 0, encode_reply(ReplyPayload{true, ""}));
        if (!st) return fail(with_context(st, "sending the acknowledgement"));
        update([&](Progress& p) {
          p.phase = Phase::Completed;
          p.total_ms = ms_between(t_start, Clock::now());
          p.message = fmt::format("received {} from {}", human_bytes(double(reader.bytes_read())), channel->peer());
        });
        UVIO_LOG(Notice, kLog, "incoming migration complete: {} received", human_bytes(double(reader.bytes_read())));
        return Status::ok();
      }
      case SectionType::Abort:
        return fail(Status::error(ECONNABORTED, fmt::format("the source gave up: {}",
                                                            std::string(s->payload.begin(), s->payload.end()))));
      default:
        return abort_with(Status::error(EPROTO, fmt::format("unexpected section type {} in the stream",
                                                            static_cast<unsigned>(s->type))), true);
    }
  }
}

// ------------------------------------------------------------------------------------
// The public face.

// "migrate.send", "migrate.status", "migrate.cancel" on the runtime's control socket.
// The handlers reach the engine through `handle`: the socket may outlive it. A template,
// so that a runtime without a control socket (none configured) costs nothing here.
constexpr const char* kMigrationGone =
    "the application is shutting down (its run ended); an unfinished migration was cancelled";

template <class R, class H>
void register_control(R& runtime, const std::shared_ptr<H>& handle) {
  if constexpr (requires { runtime.control(); }) {
    auto* socket = runtime.control();
    if (!socket) return;
    auto& control = *socket;
    std::weak_ptr<H> weak = handle;
    auto with_impl = [weak](auto fn) -> Result<std::string> {
      auto h = weak.lock();
      if (!h) return Status::error(ESHUTDOWN, kMigrationGone);
      std::lock_guard lock(h->mu);
      if (!h->impl) return Status::error(ESHUTDOWN, kMigrationGone);
      return fn(*h->impl);
    };
    control.add("migrate.send", "live-migrate this process: to, max_downtime_ms, max_passes, force, token",
                 [with_impl](std::string_view req) {
                   return with_impl([&](auto& impl) -> Result<std::string> {
                     auto j = nlohmann::json::parse(req, nullptr, false);
                     if (j.is_discarded() || !j.is_object()) return Status::error(EINVAL, "the request is not a JSON object");
                     SendOptions o;
                     try {
                       if (!j.contains("to") || !j["to"].is_string()) return Status::error(EINVAL, "\"to\" (tcp:HOST:PORT or unix:PATH) is required");
                       o.to = j["to"].get<std::string>();
                       if (j.contains("max_downtime_ms")) o.max_downtime_ms = j["max_downtime_ms"].get<uint32_t>();
                       if (j.contains("max_passes")) o.max_passes = j["max_passes"].get<uint32_t>();
                       if (j.contains("force")) o.force = j["force"].get<bool>();
                       if (j.contains("token")) o.token = j["token"].get<std::string>();
                     } catch (const nlohmann::json::exception& e) {
                       return Status::error(EINVAL, fmt::format("bad migrate.send arguments: {}", e.what()));
                     }
                     if (o.max_passes == 0) return Status::error(EINVAL, "max_passes must be at least 1");
                     UVIO_TRY(impl.start(o));
                     return std::string(R"({"started":true})");
                   });
                 });
    control.add("migrate.status", "the current or last migration's progress", [with_impl](std::string_view) {
      return with_impl([&](auto& impl) -> Result<std::string> {
        Progress p;
        {
          std::lock_guard lock(impl.mu);
          p = impl.prog;
        }
        nlohmann::json j = {{"phase", std::string(phase_name(p.phase))},
                            {"pass", p.pass},
                            {"bytes_sent", p.bytes_sent},
                            {"bytes_remaining", p.bytes_remaining},
                            {"dirty_rate_bps", p.dirty_rate_bps},
                            {"bandwidth_bps", p.bandwidth_bps},
                            {"expected_downtime_ms", p.expected_downtime_ms},
                            {"downtime_ms", p.downtime_ms},
                            {"total_ms", p.total_ms},
                            {"message", p.message}};
        if (p.phase == Phase::Completed) impl.completion_reported.store(true, std::memory_order_release);
        return j.dump();
      });
    });
    control.add("migrate.cancel", "cancel the running migration; the source goes on", [with_impl](std::string_view) {
      return with_impl([&](auto& impl) -> Result<std::string> {
        impl.cancel();
        return std::string("{}");
      });
    });
  }
}

Migration::Migration(Runtime& runtime) : impl_(std::make_unique<Impl>(runtime)) {
  impl_->handle->impl = impl_.get();
  Memory& mem = runtime.memory();
  Participant self;
  self.name = kRuntimeParticipant;
  self.save = [&mem](std::vector<uint8_t>& out) { return mem.save_state(out); };
  self.load = [&mem](std::span<const uint8_t> in) { return mem.load_state(in); };
  impl_->participants.push_back(std::move(self));

  register_control(runtime, impl_->handle);
}

Status Migration::Impl::start(const SendOptions& o) {
  if (o.max_passes == 0) return Status::error(EINVAL, "max_passes must be at least 1");
  if (migrated.load(std::memory_order_acquire)) return Status::error(EALREADY, "this process has already migrated");
  UVIO_TRY(check_migratable());
  std::lock_guard lock(mu);
  if (running) return Status::error(EBUSY, "a migration is already running");
  if (worker.joinable()) worker.join();  // the previous one has finished
  running = true;
  cancel_requested = false;
  committing = false;
  prog = Progress{};
  prog.phase = Phase::Setup;
  end_phase.reset();
  worker = std::thread([this, o] {
    Status st = run_source(o);
    std::lock_guard l(mu);
    if (end_phase) {
      prog.phase = *end_phase;
      prog.message = end_message;
      prog.total_ms = end_total_ms;
    }
    last_result = st;
    running = false;
  });
  return Status::ok();
}

void Migration::Impl::cancel(bool quiet) {
  std::lock_guard lock(mu);
  if (!running) return;
  if (committing) {
    if (!quiet) UVIO_LOG(Warning, kLog, "cancel ignored: the stream is complete and the destination may already run");
    return;
  }
  cancel_requested = true;
  if (channel) channel->shutdown();
}

Migration::~Migration() {
  // A source that migrated lingers (at most 2 s) until uvio-migrate, polling the control
  // socket, has seen the outcome; without a socket nobody can ask.
  if (migrated() && impl_->rt.control()) {
    for (int i = 0; i < 200 && !impl_->completion_reported.load(std::memory_order_acquire); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard lock(impl_->handle->mu);
    impl_->handle->impl = nullptr;
  }
  impl_->cancel(/*quiet=*/true);
  if (impl_->worker.joinable()) impl_->worker.join();
}

void Migration::add_participant(Participant p) { impl_->participants.push_back(std::move(p)); }

Status Migration::check_migratable() const { return impl_->check_migratable(); }

Status Migration::start_send(const SendOptions& options) { return impl_->start(options); }

Status Migration::send(const SendOptions& options) {
  UVIO_TRY(impl_->start(options));
  std::thread worker;
  {
    std::lock_guard lock(impl_->mu);
    worker = std::move(impl_->worker);
  }
  worker.join();
  std::lock_guard lock(impl_->mu);
  return impl_->last_result;
}

void Migration::cancel() { impl_->cancel(); }

Progress Migration::progress() const {
  std::lock_guard lock(impl_->mu);
  return impl_->prog;
}

bool Migration::migrated() const { return impl_->migrated.load(std::memory_order_acquire); }

bool Migration::incoming() const { return !impl_->rt.config().migrate_listen.empty(); }

Status Migration::receive() { return impl_->receive(); }

}  // namespace uvio::mig
