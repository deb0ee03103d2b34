// The runtime's DMA-able memory: few, large areas, each backed by one file descriptor
// (a hugetlb memfd, a hugetlbfs file, or 4 KiB shmem with --no-huge), so that one DMA
// map call, one vhost-user region or one vfio-user DMA_MAP covers a whole area.
#pragma once

#include <uvio/status.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace uvio {

inline constexpr uint64_t kBadIova = ~0ull;

enum class IovaMode { Va, Pa };

struct MemConfig {
  size_t total_bytes = 64ull << 20;   // -m, or the sum of --socket-mem
  std::vector<size_t> socket_bytes;   // --socket-mem, per NUMA node; empty = anywhere
  bool hugepages = true;              // false with --no-huge
  size_t hugepage_size = 0;           // 0: the system default (2 MiB); 1 GiB when asked
  std::string huge_dir;               // --huge-dir: files on this hugetlbfs mount, else memfd
  std::string file_prefix = "uvio";   // names memfds and hugetlbfs files
  IovaMode iova_mode = IovaMode::Va;
  size_t area_bytes = 0;              // largest area; 0 = everything asked in one area per node
};

// One virtually contiguous piece of runtime memory backed by one fd.
struct MemArea {
  uint32_t id = 0;
  std::byte* va = nullptr;
  size_t len = 0;
  int fd = -1;              // owned by Memory; valid while the area lives
  uint64_t fd_offset = 0;   // offset of va within fd
  size_t page_size = 0;     // 4 KiB with --no-huge, else the hugepage size
  int numa_node = -1;
  bool hugepages = false;
  // IOVA of the area's first byte. In IOVA-as-PA mode an area is contiguous only page by
  // page: use Memory::iova_of() there.
  uint64_t iova = kBadIova;
  std::vector<uint64_t> page_iova;  // PA mode only: IOVA of each page
};

struct Memzone {
  std::string name;
  void* addr = nullptr;
  size_t len = 0;
  uint64_t iova = kBadIova;
};

struct MemStats {
  size_t total = 0;
  size_t free = 0;
  size_t largest_free = 0;
  size_t areas = 0;
};

class Memory {
 public:
  // Reserves cfg.total_bytes. When hugepages are short: a Status naming what was asked,
  // what is free and how to reserve more; with --no-huge: 4 KiB memory and a warning.
  static Result<std::unique_ptr<Memory>> create(const MemConfig& cfg);
  ~Memory();
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;

  const MemConfig& config() const { return cfg_; }
  // Areas never move or disappear while Memory lives; the vector may grow.
  std::vector<const MemArea*> areas() const;
  // Adds an area of at least `bytes`; listeners hear of it before this returns.
  Result<const MemArea*> extend(size_t bytes, int numa_node = -1);

  // DMA heap: control-path allocation of IOVA-addressable memory. nullptr when full.
  void* alloc(size_t size, size_t align = 64, int numa_node = -1);
  void free(void* p);
  bool contains(const void* p) const;
  uint64_t iova_of(const void* p) const;  // kBadIova when not runtime memory
  const MemArea* area_of(const void* p) const;
  MemStats stats() const;
  // The DMA space moves an area's IOVA when the IOMMU cannot reach IOVA = VA; only
  // before anything has been mapped or handed out from the area.
  Status assign_iova(uint32_t area_id, uint64_t iova);

  // Named regions an application finds again (after a restart or a migration).
  Result<const Memzone*> memzone_reserve(std::string_view name, size_t len, size_t align = 64);
  const Memzone* memzone_lookup(std::string_view name) const;
  Status memzone_free(std::string_view name);
  std::vector<Memzone> memzones() const;

  // Migration: the DMA heap's allocator state and the memzones (the bytes themselves
  // move with the pages). load_state checks the whole input against this Memory's areas
  // and changes nothing when any of it is wrong: it comes from another process. Memzone
  // pointers looked up before a load are not valid after it.
  Status save_state(std::vector<uint8_t>& out) const;
  Status load_state(std::span<const uint8_t> in);

  // Called for every area added (and once per existing area when replay is asked):
  // how the DMA space maps memory into each IOMMU domain.
  using AreaListener = std::function<void(const MemArea&)>;
  int add_listener(AreaListener fn, bool replay_existing);
  void remove_listener(int id);

 private:
  explicit Memory(const MemConfig& cfg);
  struct Impl;
  MemConfig cfg_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uvio
