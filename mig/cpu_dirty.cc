#include "mig/cpu_dirty.h"

#include "mig/abi/uffd_pagemap.h"

#include <uvio/log.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace uvio::mig {
namespace {

constexpr const char* kLog = "mig";
constexpr uint64_t kSmallPage = 4096;
constexpr size_t kScanRegions = 4096;       // page_region entries per PAGEMAP_SCAN call
constexpr size_t kPagemapChunk = 8192;      // pagemap entries per read (soft-dirty)

int open_uffd() {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | abi::kUffdUserModeOnly));
  if (fd < 0 && errno == EINVAL) fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  return fd;
}

// UFFDIO_API asking for async write-protect; `hugetlb` adds hugetlbfs/shmem WP.
Status uffd_handshake(int fd, bool need_hugetlb_shmem) {
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = abi::kUffdFeatureWpAsync | abi::kUffdFeatureWpUnpopulated;
  if (need_hugetlb_shmem) api.features |= abi::kUffdFeatureWpHugetlbfsShmem;
  if (ioctl(fd, UFFDIO_API, &api) != 0)
    return errno_status("userfaultfd: the kernel has no asynchronous write-protect (needs Linux 6.7)");
  return Status::ok();
}

Status uffd_register_wp(int fd, uint64_t va, uint64_t len) {
  uffdio_register reg{};
  reg.range.start = va;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0)
    return errno_status(fmt::format("userfaultfd: cannot register {:#x}+{:#x} for write-protect", va, len));
  return Status::ok();
}

Status uffd_protect(int fd, uint64_t va, uint64_t len, bool protect) {
  uffdio_writeprotect wp{};
  wp.range.start = va;
  wp.range.len = len;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0)
    return errno_status(fmt::format("userfaultfd: cannot write-protect {:#x}+{:#x}", va, len));
  return Status::ok();
}

// One scan of [start, end): written runs to `fn`, and they are protected again.
Status pagemap_scan(int pagemap, uint64_t start, uint64_t end, std::vector<uint8_t>& buf,
                    const CpuDirtyTracker::RunFn& fn) {
  buf.resize(kScanRegions * sizeof(abi::PageRegion));
  auto* regions = reinterpret_cast<abi::PageRegion*>(buf.data());
  while (start < end) {
    abi::PmScanArg arg{};
    arg.size = sizeof(arg);
    arg.flags = abi::kPmScanWpMatching | abi::kPmScanCheckWpAsync;
    arg.start = start;
    arg.end = end;
    arg.vec = reinterpret_cast<uintptr_t>(regions);
    arg.vec_len = kScanRegions;
    arg.category_mask = abi::kPageIsWritten;
    arg.return_mask = abi::kPageIsWritten;
    long n = ioctl(pagemap, abi::kPagemapScan, &arg);
    if (n < 0) return errno_status(fmt::format("PAGEMAP_SCAN of {:#x}-{:#x} failed", start, end));
    for (long i = 0; i < n; i++) {
      if (regions[i].end <= regions[i].start || regions[i].start < start || regions[i].end > end)
        return Status::error(EPROTO, fmt::format("PAGEMAP_SCAN returned {:#x}-{:#x} outside {:#x}-{:#x}",
                                                 regions[i].start, regions[i].end, start, end));
      fn(regions[i].start, regions[i].end - regions[i].start);
    }
    if (arg.walk_end <= start || arg.walk_end > end)
      return Status::error(EPROTO, fmt::format("PAGEMAP_SCAN made no progress at {:#x}", start));
    start = arg.walk_end;
  }
  return Status::ok();
}

// The whole chain on one scratch page, so a kernel that accepts the API but lacks
// PAGEMAP_SCAN is found before a migration relies on it.
Status probe_uffd_wp_async(bool need_hugetlb_shmem) {
  int fd = open_uffd();
  if (fd < 0) return errno_status("userfaultfd is not available");
  Status st;
  void* page = mmap(nullptr, kSmallPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  auto va = reinterpret_cast<uint64_t>(page);
  st = page == MAP_FAILED ? errno_status("mmap of a probe page failed")
       : pagemap < 0      ? errno_status("cannot open /proc/self/pagemap")
                          : uffd_handshake(fd, need_hugetlb_shmem);
  if (st) st = uffd_register_wp(fd, va, kSmallPage);
  if (st) st = uffd_protect(fd, va, kSmallPage, true);
  uint64_t written = 0;
  std::vector<uint8_t> buf;
  if (st) {
    static_cast<volatile uint8_t*>(page)[0] = 1;
    st = pagemap_scan(pagemap, va, va + kSmallPage, buf, [&](uint64_t, uint64_t len) { written += len; });
  }
  if (st && written != kSmallPage)
    st = Status::error(ENOTSUP, "PAGEMAP_SCAN did not report a page written under async write-protect");
  if (pagemap >= 0) close(pagemap);
  if (page != MAP_FAILED) munmap(page, kSmallPage);
  close(fd);
  return st;
}

Status write_clear_refs_soft_dirty() {
  int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno_status("cannot open /proc/self/clear_refs");
  // "4" clears the soft-dirty bits of every page of the process (proc(5)).
  ssize_t n = write(fd, "4", 1);
  int err = errno;
  close(fd);
  if (n != 1) return Status::error(err, fmt::format("writing /proc/self/clear_refs failed: {}", std::strerror(err)));
  return Status::ok();
}

Result<uint64_t> pagemap_entry(int pagemap, uint64_t va) {
  uint64_t e = 0;
  if (pread(pagemap, &e, sizeof(e), static_cast<off_t>(va / kSmallPage * 8)) != sizeof(e))
    return errno_status("reading /proc/self/pagemap failed");
  return e;
}

Status probe_soft_dirty() {
  void* page = mmap(nullptr, kSmallPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return errno_status("mmap of a probe page failed");
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  auto va = reinterpret_cast<uint64_t>(page);
  Status st = pagemap < 0 ? errno_status("cannot open /proc/self/pagemap") : Status::ok();
  static_cast<volatile uint8_t*>(page)[0] = 1;
  if (st) st = write_clear_refs_soft_dirty();
  if (st) {
    auto before = pagemap_entry(pagemap, va);
    static_cast<volatile uint8_t*>(page)[0] = 2;
    auto after = pagemap_entry(pagemap, va);
    if (!before || !after) st = before ? after.status() : before.status();
    else if ((*before & abi::kPagemapSoftDirty) || !(*after & abi::kPagemapSoftDirty))
      st = Status::error(ENOTSUP, "soft-dirty bits do not follow stores (kernel without CONFIG_MEM_SOFT_DIRTY)");
  }
  if (pagemap >= 0) close(pagemap);
  munmap(page, kSmallPage);
  return st;
}

}  // namespace

std::string_view cpu_track_mode_name(CpuTrackMode m) {
  switch (m) {
    case CpuTrackMode::UffdWpAsync: return "userfaultfd write-protect + PAGEMAP_SCAN";
    case CpuTrackMode::SoftDirty: return "soft-dirty";
    case CpuTrackMode::Everything: return "none (every page is resent each pass)";
  }
  return "?";
}

Result<std::unique_ptr<CpuDirtyTracker>> CpuDirtyTracker::create(Memory& memory, const CpuTrackMode* force) {
  bool any_huge = false;
  for (const MemArea* a : memory.areas()) any_huge = any_huge || a->page_size != kSmallPage;
  auto make = [&](CpuTrackMode m) { return std::unique_ptr<CpuDirtyTracker>(new CpuDirtyTracker(memory, m)); };

  if (!force || *force == CpuTrackMode::UffdWpAsync) {
    Status st = probe_uffd_wp_async(any_huge);
    if (st) return make(CpuTrackMode::UffdWpAsync);
    if (force) return st;
    UVIO_LOG(Info, kLog, "CPU dirty tracking: {}; trying soft-dirty", st.message());
  }
  if (!force || *force == CpuTrackMode::SoftDirty) {
    Status st = any_huge ? Status::error(ENOTSUP, "soft-dirty does not track hugetlb memory") : probe_soft_dirty();
    if (st) return make(CpuTrackMode::SoftDirty);
    if (force) return st;
    UVIO_LOG(Warning, kLog, "CPU dirty tracking: {}", st.message());
  }
  UVIO_LOG(Warning, kLog, "CPU dirty tracking unavailable: every page is resent at every pass, so pre-copy "
           "cannot converge while lcores write memory (needs Linux >= 6.7 for userfaultfd async write-protect)");
  return make(CpuTrackMode::Everything);
}

CpuDirtyTracker::~CpuDirtyTracker() {
  if (started_) (void)stop();
}

Status CpuDirtyTracker::arm_area(const Area& a) {
  switch (mode_) {
    case CpuTrackMode::UffdWpAsync:
      UVIO_TRY(uffd_register_wp(uffd_, a.va, a.len));
      return uffd_protect(uffd_, a.va, a.len, true);
    case CpuTrackMode::SoftDirty:
      if (a.page_size != kSmallPage)
        return Status::error(ENOTSUP, fmt::format("soft-dirty cannot track the {}-byte pages at {:#x}", a.page_size, a.va));
      return Status::ok();  // the next clear_refs covers it
    case CpuTrackMode::Everything: return Status::ok();
  }
  return Status::ok();
}

Status CpuDirtyTracker::start() {
  if (started_) return Status::error(EBUSY, "CPU dirty tracking already runs");
  if (mode_ == CpuTrackMode::UffdWpAsync) {
    uffd_ = open_uffd();
    if (uffd_ < 0) return errno_status("userfaultfd is not available");
    bool any_huge = false;
    for (const MemArea* a : memory_.areas()) any_huge = any_huge || a->page_size != kSmallPage;
    Status st = uffd_handshake(uffd_, any_huge);
    if (!st) {
      if (uffd_ >= 0) close(uffd_);
      uffd_ = -1;
      return st;
    }
  }
  if (mode_ != CpuTrackMode::Everything) {
    pagemap_ = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap_ < 0) {
      Status st = errno_status("cannot open /proc/self/pagemap");
      (void)stop();
      return st;
    }
  }
  started_ = true;
  {
    std::lock_guard lock(mu_);
    areas_.clear();
    replay_done_ = false;
    listener_error_ = Status::ok();
  }
  // Existing areas are replayed before this returns; later ones arrive from extend().
  listener_ = memory_.add_listener(
      [this](const MemArea& m) {
        Area a{reinterpret_cast<uint64_t>(m.va), m.len, m.page_size, false};
        Status st = arm_area(a);
        std::lock_guard lock(mu_);
        a.fresh = replay_done_;
        if (!st && listener_error_) listener_error_ = st;
        areas_.push_back(a);
      },
      true);
  Status st;
  {
    std::lock_guard lock(mu_);
    replay_done_ = true;
    st = listener_error_;
  }
  if (st && mode_ == CpuTrackMode::SoftDirty) st = write_clear_refs_soft_dirty();
  if (!st) {
    (void)stop();
    return st;
  }
  UVIO_LOG(Info, kLog, "CPU dirty tracking: {}", cpu_track_mode_name(mode_));
  return Status::ok();
}

Status CpuDirtyTracker::collect_uffd(const Area& a, const RunFn& fn) {
  return pagemap_scan(pagemap_, a.va, a.va + a.len, scan_buf_, fn);
}

Status CpuDirtyTracker::collect_soft_dirty(const Area& a, const RunFn& fn) {
  std::vector<uint64_t> entries(kPagemapChunk);
  uint64_t pages = a.len / kSmallPage;
  uint64_t run_start = 0, run_len = 0;
  for (uint64_t first = 0; first < pages; first += kPagemapChunk) {
    uint64_t n = std::min<uint64_t>(kPagemapChunk, pages - first);
    off_t at = static_cast<off_t>((a.va / kSmallPage + first) * 8);
    ssize_t got = pread(pagemap_, entries.data(), n * 8, at);
    if (got != static_cast<ssize_t>(n * 8)) return errno_status("reading /proc/self/pagemap failed");
    for (uint64_t i = 0; i < n; i++) {
      uint64_t va = a.va + (first + i) * kSmallPage;
      if (entries[i] & abi::kPagemapSoftDirty) {
        if (run_len && run_start + run_len == va) {
          run_len += kSmallPage;
        } else {
          if (run_len) fn(run_start, run_len);
          run_start = va;
          run_len = kSmallPage;
        }
      }
    }
  }
  if (run_len) fn(run_start, run_len);
  return Status::ok();
}

Status CpuDirtyTracker::collect(const RunFn& fn) {
  if (!started_) return Status::error(EINVAL, "CPU dirty tracking is not running");
  std::vector<Area> areas;
  {
    std::lock_guard lock(mu_);
    UVIO_TRY(listener_error_);
    areas = areas_;
    for (Area& a : areas_) a.fresh = false;
  }
  for (const Area& a : areas) {
    if (a.fresh || mode_ == CpuTrackMode::Everything) {
      // A new area is all unsent; write-protect was armed when it arrived, so a scan
      // now would report only part of it.
      if (mode_ == CpuTrackMode::UffdWpAsync) UVIO_TRY(collect_uffd(a, [](uint64_t, uint64_t) {}));
      fn(a.va, a.len);
      continue;
    }
    if (mode_ == CpuTrackMode::UffdWpAsync) UVIO_TRY(collect_uffd(a, fn));
    else UVIO_TRY(collect_soft_dirty(a, fn));
  }
  // Soft-dirty bits are cleared for the whole process at once, after all areas were read:
  // the caller keeps writers paused across collect() (see needs_writers_paused()).
  if (mode_ == CpuTrackMode::SoftDirty) UVIO_TRY(write_clear_refs_soft_dirty());
  return Status::ok();
}

Status CpuDirtyTracker::stop() {
  if (listener_) {
    memory_.remove_listener(listener_);
    listener_ = 0;
  }
  Status result;
  if (uffd_ >= 0) {
    std::lock_guard lock(mu_);
    for (const Area& a : areas_) {
      // Unprotect first so no page stays write-protected once nothing tracks it.
      Status st = uffd_protect(uffd_, a.va, a.len, false);
      uffdio_range r{a.va, a.len};
      if (st && ioctl(uffd_, UFFDIO_UNREGISTER, &r) != 0) st = errno_status("userfaultfd: unregister failed");
      if (!st && result) result = st;
    }
  }
  if (uffd_ >= 0) close(uffd_);
  uffd_ = -1;
  if (pagemap_ >= 0) close(pagemap_);
  pagemap_ = -1;
  std::lock_guard lock(mu_);
  areas_.clear();
  started_ = false;
  return result;
}

}  // namespace uvio::mig
