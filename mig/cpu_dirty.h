// Which pages of runtime memory this process's own threads wrote: the lcores' stores,
// which no IOMMU or device log sees. Three ways, best first:
//   - userfaultfd write-protect in async mode with PAGEMAP_SCAN (Linux >= 6.7): the
//     kernel un-protects a page on its first store, one scan reports the written runs
//     and protects them again; works for shmem and hugetlb areas.
//   - soft-dirty bits (/proc/self/clear_refs and pagemap bit 55): 4 KiB memory only.
//   - none: every page counts as written at every pass, and pre-copy cannot converge.
#pragma once

#include <uvio/mem.h>
#include <uvio/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace uvio::mig {

enum class CpuTrackMode { UffdWpAsync, SoftDirty, Everything };
std::string_view cpu_track_mode_name(CpuTrackMode m);

class CpuDirtyTracker {
 public:
  // Called with each written run [va, va + len), page-aligned.
  using RunFn = std::function<void(uint64_t va, uint64_t len)>;

  // Picks the best mode the kernel and the memory allow. `force` (tests) asks for one
  // mode and fails when it is not available.
  static Result<std::unique_ptr<CpuDirtyTracker>> create(Memory& memory, const CpuTrackMode* force = nullptr);
  ~CpuDirtyTracker();
  CpuDirtyTracker(const CpuDirtyTracker&) = delete;
  CpuDirtyTracker& operator=(const CpuDirtyTracker&) = delete;

  CpuTrackMode mode() const { return mode_; }
  // Soft-dirty bits are read, then cleared for the whole process: a store between the
  // two would be lost, so writers must be paused across collect().
  bool needs_writers_paused() const { return mode_ == CpuTrackMode::SoftDirty; }

  // Arms tracking over every area, and over areas added later (those are reported
  // whole at the next collect).
  Status start();
  // Reports the runs written since start() or the previous collect(), and re-arms them.
  Status collect(const RunFn& fn);
  // Disarms everything; the memory is left as it was.
  Status stop();

 private:
  struct Area {
    uint64_t va = 0;
    uint64_t len = 0;
    uint64_t page_size = 0;
    bool fresh = false;  // added after start: reported whole once
  };
  CpuDirtyTracker(Memory& memory, CpuTrackMode mode) : memory_(memory), mode_(mode) {}
  Status arm_area(const Area& a);
  Status collect_uffd(const Area& a, const RunFn& fn);
  Status collect_soft_dirty(const Area& a, const RunFn& fn);

  Memory& memory_;
  CpuTrackMode mode_;
  int uffd_ = -1;
  int pagemap_ = -1;
  int listener_ = 0;
  bool started_ = false;
  std::mutex mu_;  // areas_ (the listener runs on whichever thread extends memory)
  std::vector<Area> areas_;
  bool replay_done_ = false;  // areas heard of after start() are reported whole once
  Status listener_error_;
  std::vector<uint8_t> scan_buf_;
};

}  // namespace uvio::mig
