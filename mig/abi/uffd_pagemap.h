// The userfaultfd write-protect-async and PAGEMAP_SCAN ABI (linux/userfaultfd.h and
// linux/fs.h from Linux 6.7), spelled here because older kernel headers lack it. The
// layouts are the kernel's; the static_asserts hold them to it.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace uvio::mig::abi {

// uffdio_api.features bits (UFFD_FEATURE_*).
inline constexpr uint64_t kUffdFeatureWpHugetlbfsShmem = 1ull << 12;
inline constexpr uint64_t kUffdFeatureWpUnpopulated = 1ull << 13;
// Write faults on protected pages are resolved by the kernel itself, which clears the
// protection: no thread has to read fault events, and PAGEMAP_SCAN reports the page.
inline constexpr uint64_t kUffdFeatureWpAsync = 1ull << 15;

// userfaultfd(2) flag: only faults from user mode (needs no privilege).
inline constexpr int kUffdUserModeOnly = 1;

// struct page_region: one run of pages sharing the categories asked for.
struct PageRegion {
  uint64_t start;
  uint64_t end;  // exclusive
  uint64_t categories;
};
static_assert(sizeof(PageRegion) == 24, "struct page_region is 24 bytes");

// struct pm_scan_arg.
struct PmScanArg {
  uint64_t size;                 // sizeof(PmScanArg)
  uint64_t flags;                // PM_SCAN_*
  uint64_t start;
  uint64_t end;
  uint64_t walk_end;             // out: where the walk stopped
  uint64_t vec;                  // PageRegion array
  uint64_t vec_len;
  uint64_t max_pages;            // 0 = no limit
  uint64_t category_inverted;
  uint64_t category_mask;        // pages must have all of these
  uint64_t category_anyof_mask;
  uint64_t return_mask;          // categories reported in PageRegion::categories
};
static_assert(sizeof(PmScanArg) == 96, "struct pm_scan_arg is 96 bytes");

inline constexpr uint64_t kPmScanWpMatching = 1ull << 0;    // write-protect what matches
inline constexpr uint64_t kPmScanCheckWpAsync = 1ull << 1;  // fail unless WP_ASYNC is on

inline constexpr uint64_t kPageIsWpAllowed = 1ull << 0;
inline constexpr uint64_t kPageIsWritten = 1ull << 1;

inline constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);

// /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
inline constexpr uint64_t kPagemapSoftDirty = 1ull << 55;
inline constexpr uint64_t kPagemapPresent = 1ull << 63;

}  // namespace uvio::mig::abi
