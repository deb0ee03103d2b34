#include <uvio/log.h>
#include <uvio/mem.h>
#include <uvio/topology.h>

#include "lib/state_io.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>

namespace uvio {
namespace {

constexpr const char* kLog = "mem";
constexpr size_t kSmallPage = 4096;

// Where the runtime asks for its address space: low enough that IOVA = VA fits an
// IOMMU with 39 address bits (QEMU's VT-d, many real ones), high enough to stay out of
// the way. When taken (sanitizers reserve this range), the kernel chooses and the DMA
// space assigns IOVAs instead.
// The same address in every process, so that a migrated application finds its memory
// where it left it. AddressSanitizer's shadow covers [2 GiB, 16 TiB) on x86-64, so a
// sanitized build reserves above it (and below its allocator at 96 TiB).
#if defined(__SANITIZE_ADDRESS__)
#define UVIO_ASAN_LAYOUT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UVIO_ASAN_LAYOUT 1
#endif
#endif
#ifdef UVIO_ASAN_LAYOUT
constexpr uintptr_t kVaHint = 0x500000000000ull;  // 80 TiB
#else
constexpr uintptr_t kVaHint = 0x1000000000ull;  // 64 GiB
#endif
constexpr size_t kVaReserve = 256ull << 30;

size_t default_hugepage_size() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key) {
    if (key == "Hugepagesize:") {
      in >> kb >> unit;
      return kb << 10;
    }
    in.ignore(4096, '\n');
  }
  return 2u << 20;
}

long read_long(const std::string& path) {
  std::ifstream in(path);
  long v = -1;
  if (in) in >> v;
  return v;
}

std::string hugepage_dir(size_t page_size) { return "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(page_size >> 10) + "kB"; }

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

std::string human(size_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + " GiB";
  if (bytes >= (1ull << 20)) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes >> 10) + " KiB";
}

}  // namespace

struct Memory::Impl {
  mutable std::mutex mu;
  std::byte* reserve_base = nullptr;
  size_t reserve_len = 0;
  size_t reserve_used = 0;
  std::deque<MemArea> areas;  // deque: pointers stay valid as areas are added
  // Per area: free blocks (addr -> len) and live allocations (addr -> {block start, block len}).
  struct Heap {
    std::map<uintptr_t, size_t> free;
    std::map<uintptr_t, std::pair<uintptr_t, size_t>> used;
  };
  std::deque<Heap> heaps;
  std::map<std::string, Memzone, std::less<>> zones;
  std::mutex listeners_mu;
  std::vector<std::pair<int, AreaListener>> listeners;
  int next_listener = 1;

  ~Impl() {
    for (MemArea& a : areas) {
      if (a.fd >= 0) close(a.fd);
    }
    if (reserve_base) munmap(reserve_base, reserve_len);
  }
};

Memory::Memory(const MemConfig& cfg) : cfg_(cfg), impl_(std::make_unique<Impl>()) {}

Memory::~Memory() = default;

Result<std::unique_ptr<Memory>> Memory::create(const MemConfig& cfg_in) {
  MemConfig cfg = cfg_in;
  if (!cfg.socket_bytes.empty()) {
    cfg.total_bytes = 0;
    for (size_t b : cfg.socket_bytes) cfg.total_bytes += b;
  }
  if (cfg.total_bytes == 0) return Status::error(EINVAL, "memory: asked for 0 bytes");
  if (cfg.hugepages && cfg.hugepage_size == 0) cfg.hugepage_size = default_hugepage_size();
  if (!cfg.hugepages) {
    UVIO_LOG(Warning, kLog, "--no-huge: {} of 4 KiB pages; DMA pays a TLB miss per page and the IOMMU maps more entries", human(cfg.total_bytes));
  }

  std::unique_ptr<Memory> mem(new Memory(cfg));
  Impl& im = *mem->impl_;
  // One reservation for all areas, so areas added later stay contiguous with the first.
  void* want = reinterpret_cast<void*>(kVaHint);
  void* p = mmap(want, kVaReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (p != MAP_FAILED) {
    im.reserve_base = static_cast<std::byte*>(p);
    im.reserve_len = kVaReserve;
  } else {
    // Wherever the kernel puts it, hugepages need the areas aligned to the largest page
    // size: reserve 1 GiB more and give back the unaligned ends.
    constexpr size_t kAlign = 1ull << 30;
    p = mmap(nullptr, kVaReserve + kAlign, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return errno_status("memory: cannot reserve address space for the runtime's memory");
    auto raw = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (raw + kAlign - 1) & ~(kAlign - 1);
    if (aligned > raw) munmap(p, aligned - raw);
    if (raw + kAlign > aligned) munmap(reinterpret_cast<void*>(aligned + kVaReserve), raw + kAlign - aligned);
    im.reserve_base = reinterpret_cast<std::byte*>(aligned);
    im.reserve_len = kVaReserve;
  }

  if (cfg.socket_bytes.empty()) {
    size_t left = cfg.total_bytes;
    size_t chunk = cfg.area_bytes ? cfg.area_bytes : left;
    while (left > 0) {
      size_t n = std::min(left, chunk);
      auto area = mem->extend(n, -1);
      if (!area) return area.status();
      left -= std::min(left, area.value()->len);
    }
  } else {
    for (size_t node = 0; node < cfg.socket_bytes.size(); node++) {
      if (cfg.socket_bytes[node] == 0) continue;
      auto area = mem->extend(cfg.socket_bytes[node], static_cast<int>(node));
      if (!area) return area.status();
    }
  }
  return mem;
}

Result<const MemArea*> Memory::extend(size_t bytes, int numa_node) {
  const bool huge = cfg_.hugepages;
  const size_t page = huge ? cfg_.hugepage_size : kSmallPage;
  const size_t len = round_up(bytes, page);

  std::unique_lock lock(impl_->mu);
  Impl& im = *impl_;
  if (im.reserve_used + len > im.reserve_len)
    return Status::error(ENOMEM, fmt::format("memory: {} more would exceed the runtime's {} address space", human(len), human(im.reserve_len)));

  if (huge) {
    long free_pages = read_long(hugepage_dir(page) + "/free_hugepages");
    size_t need = len / page;
    if (free_pages >= 0 && static_cast<size_t>(free_pages) < need) {
      return Status::error(ENOMEM, fmt::format(
          "memory: asked for {} in {} hugepages ({} pages) but only {} are free; reserve more with "
          "'echo {} > {}/nr_hugepages' as root, or run with --no-huge",
          human(len), human(page), need, free_pages,
          read_long(hugepage_dir(page) + "/nr_hugepages") + static_cast<long>(need) - free_pages, hugepage_dir(page)));
    }
  }

  uint32_t id = static_cast<uint32_t>(im.areas.size());
  std::string name = fmt::format("{}-area{}", cfg_.file_prefix, id);
  int fd = -1;
  if (!cfg_.huge_dir.empty()) {
    std::string path = cfg_.huge_dir + "/" + name;
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return errno_status(fmt::format("memory: cannot create {} on --huge-dir", path));
    unlink(path.c_str());  // the fd keeps it; nothing is left behind when the process dies
  } else {
    unsigned flags = MFD_CLOEXEC;
    if (huge) {
      flags |= MFD_HUGETLB;
      if (page == (1ull << 30)) flags |= MFD_HUGE_1GB;
      else if (page == (2ull << 20)) flags |= MFD_HUGE_2MB;
    }
    fd = memfd_create(name.c_str(), flags);
    if (fd < 0) return errno_status(fmt::format("memory: memfd_create of {} failed", name));
  }
  if (ftruncate(fd, static_cast<off_t>(len)) != 0) {
    Status st = errno_status(fmt::format("memory: cannot size {} to {}", name, human(len)));
    close(fd);
    return st;
  }
  std::byte* va = im.reserve_base + im.reserve_used;
  void* got = mmap(va, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
  if (got == MAP_FAILED) {
    Status st = errno_status(fmt::format("memory: cannot map {} of {}", human(len), huge ? "hugepages" : "memory"));
    close(fd);
    // Give the range back to the reservation.
    mmap(va, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return st;
  }
  if (numa_node >= 0 && topology::numa_node_count() > 1 && !topology::bind_memory_to_node(va, len, numa_node))
    UVIO_LOG(Warning, kLog, "cannot bind area {} to NUMA node {}", id, numa_node);
  // Touch every page now: hugepage faults on the fast path cost microseconds, and
  // IOVA-as-PA needs the pages to exist.
  for (size_t off = 0; off < len; off += page) va[off] = std::byte{0};

  MemArea area;
  area.id = id;
  area.va = va;
  area.len = len;
  area.fd = fd;
  area.fd_offset = 0;
  area.page_size = page;
  area.numa_node = numa_node;
  area.hugepages = huge;
  if (cfg_.iova_mode == IovaMode::Va) {
    area.iova = reinterpret_cast<uintptr_t>(va);
  } else {
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm < 0) {
      munmap(va, len);
      close(fd);
      return errno_status("memory: --iova-mode=pa needs /proc/self/pagemap");
    }
    for (size_t off = 0; off < len; off += page) {
      uint64_t entry = 0;
      off_t at = static_cast<off_t>((reinterpret_cast<uintptr_t>(va) + off) / kSmallPage * 8);
      if (pread(pm, &entry, sizeof(entry), at) != sizeof(entry) || !(entry >> 63) || (entry & ((1ull << 55) - 1)) == 0) {
        close(pm);
        munmap(va, len);
        close(fd);
        return Status::error(EPERM, "memory: --iova-mode=pa cannot read physical addresses (needs root: CAP_SYS_ADMIN)");
      }
      area.page_iova.push_back((entry & ((1ull << 55) - 1)) * kSmallPage);
    }
    close(pm);
    area.iova = area.page_iova.front();
  }
  im.reserve_used += len;
  im.areas.push_back(std::move(area));
  Impl::Heap heap;
  heap.free[reinterpret_cast<uintptr_t>(va)] = len;
  im.heaps.push_back(std::move(heap));
  const MemArea* added = &im.areas.back();
  UVIO_LOG(Info, kLog, "area {}: {} of {} pages at {} (fd {}, node {})", id, human(len), human(page),
           static_cast<void*>(va), fd, numa_node);
  lock.unlock();

  std::lock_guard ll(im.listeners_mu);
  for (auto& [lid, fn] : im.listeners) fn(*added);
  return added;
}

std::vector<const MemArea*> Memory::areas() const {
  std::lock_guard lock(impl_->mu);
  std::vector<const MemArea*> out;
  for (const MemArea& a : impl_->areas) out.push_back(&a);
  return out;
}

void* Memory::alloc(size_t size, size_t align, int numa_node) {
  if (size == 0) size = 1;
  if (align == 0 || (align & (align - 1)) != 0) return nullptr;
  std::lock_guard lock(impl_->mu);
  Impl& im = *impl_;
  for (int pass = 0; pass < 2; pass++) {
    // Pass 0: the asked node only; pass 1: anywhere (as DPDK falls back to other sockets).
    if (pass == 1 && numa_node < 0) break;
    for (size_t i = 0; i < im.areas.size(); i++) {
      if (pass == 0 && numa_node >= 0 && im.areas[i].numa_node != numa_node && im.areas[i].numa_node >= 0) continue;
      auto& heap = im.heaps[i];
      for (auto it = heap.free.begin(); it != heap.free.end(); ++it) {
        uintptr_t start = it->first;
        size_t len = it->second;
        uintptr_t aligned = (start + align - 1) & ~(uintptr_t)(align - 1);
        if (aligned + size > start + len) continue;
        // Whole cache lines, so neighbours never share one.
        size_t used_len = round_up(aligned + size - start, 64);
        if (used_len > len) used_len = len;
        heap.free.erase(it);
        if (used_len < len) heap.free[start + used_len] = len - used_len;
        heap.used[aligned] = {start, used_len};
        return reinterpret_cast<void*>(aligned);
      }
    }
  }
  return nullptr;
}

void Memory::free(void* p) {
  if (!p) return;
  std::lock_guard lock(impl_->mu);
  Impl& im = *impl_;
  uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  for (size_t i = 0; i < im.areas.size(); i++) {
    auto& heap = im.heaps[i];
    auto it = heap.used.find(addr);
    if (it == heap.used.end()) continue;
    uintptr_t start = it->second.first;
    size_t len = it->second.second;
    heap.used.erase(it);
    auto next = heap.free.lower_bound(start);
    if (next != heap.free.end() && start + len == next->first) {
      len += next->second;
      next = heap.free.erase(next);
    }
    if (next != heap.free.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == start) {
        prev->second += len;
        return;
      }
    }
    heap.free[start] = len;
    return;
  }
  UVIO_LOG(Err, kLog, "free of {} which the DMA heap never handed out", p);
}

const MemArea* Memory::area_of(const void* p) const {
  std::lock_guard lock(impl_->mu);
  auto* b = static_cast<const std::byte*>(p);
  for (const MemArea& a : impl_->areas)
    if (b >= a.va && b < a.va + a.len) return &a;
  return nullptr;
}

bool Memory::contains(const void* p) const { return area_of(p) != nullptr; }

uint64_t Memory::iova_of(const void* p) const {
  const MemArea* a = area_of(p);
  if (!a) return kBadIova;
  size_t off = static_cast<size_t>(static_cast<const std::byte*>(p) - a->va);
  if (a->page_iova.empty()) return a->iova + off;
  return a->page_iova[off / a->page_size] + off % a->page_size;
}

MemStats Memory::stats() const {
  std::lock_guard lock(impl_->mu);
  MemStats s;
  s.areas = impl_->areas.size();
  for (size_t i = 0; i < impl_->areas.size(); i++) {
    s.total += impl_->areas[i].len;
    for (auto& [addr, len] : impl_->heaps[i].free) {
      s.free += len;
      s.largest_free = std::max(s.largest_free, len);
    }
  }
  return s;
}

Status Memory::assign_iova(uint32_t area_id, uint64_t iova) {
  std::lock_guard lock(impl_->mu);
  if (area_id >= impl_->areas.size()) return Status::error(ENOENT, fmt::format("memory: no area {}", area_id));
  MemArea& a = impl_->areas[area_id];
  if (!impl_->heaps[area_id].used.empty())
    return Status::error(EBUSY, fmt::format("memory: area {} already hands out memory; its IOVA cannot move", area_id));
  if (!a.page_iova.empty()) return Status::error(EINVAL, "memory: IOVA-as-PA areas keep their physical addresses");
  a.iova = iova;
  return Status::ok();
}

Result<const Memzone*> Memory::memzone_reserve(std::string_view name, size_t len, size_t align) {
  if (name.empty()) return Status::error(EINVAL, "memzone: empty name");
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->zones.count(name)) return Status::error(EEXIST, fmt::format("memzone '{}' exists already", name));
  }
  void* p = alloc(len, align);
  if (!p) {
    MemStats s = stats();
    return Status::error(ENOMEM, fmt::format("memzone '{}': {} asked, largest free block {} of {} free; start with more memory (-m)",
                                             name, human(len), human(s.largest_free), human(s.free)));
  }
  std::memset(p, 0, len);
  std::lock_guard lock(impl_->mu);
  Memzone z{std::string(name), p, len, kBadIova};
  auto [it, ok] = impl_->zones.emplace(std::string(name), z);
  (void)ok;
  // iova_of takes the lock itself; compute it from the area directly.
  for (const MemArea& a : impl_->areas) {
    auto* b = static_cast<std::byte*>(p);
    if (b >= a.va && b < a.va + a.len) {
      size_t off = static_cast<size_t>(b - a.va);
      it->second.iova = a.page_iova.empty() ? a.iova + off : a.page_iova[off / a.page_size] + off % a.page_size;
    }
  }
  return &it->second;
}

const Memzone* Memory::memzone_lookup(std::string_view name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->zones.find(name);
  return it == impl_->zones.end() ? nullptr : &it->second;
}

Status Memory::memzone_free(std::string_view name) {
  void* p = nullptr;
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->zones.find(name);
    if (it == impl_->zones.end()) return Status::error(ENOENT, fmt::format("memzone '{}' does not exist", name));
    p = it->second.addr;
    impl_->zones.erase(it);
  }
  free(p);
  return Status::ok();
}

std::vector<Memzone> Memory::memzones() const {
  std::lock_guard lock(impl_->mu);
  std::vector<Memzone> out;
  for (auto& [n, z] : impl_->zones) out.push_back(z);
  return out;
}

int Memory::add_listener(AreaListener fn, bool replay_existing) {
  std::vector<const MemArea*> existing;
  if (replay_existing) existing = areas();
  std::lock_guard ll(impl_->listeners_mu);
  for (const MemArea* a : existing) fn(*a);
  int id = impl_->next_listener++;
  impl_->listeners.emplace_back(id, std::move(fn));
  return id;
}

void Memory::remove_listener(int id) {
  std::lock_guard ll(impl_->listeners_mu);
  auto& v = impl_->listeners;
  v.erase(std::remove_if(v.begin(), v.end(), [id](auto& e) { return e.first == id; }), v.end());
}

// State layout (little-endian): u32 magic "UMEM", u32 version, u32 areas; per area:
// u32 id, u64 va, u64 len, u32 free blocks {u64 addr, u64 len}, u32 used blocks
// {u64 addr, u64 block start, u64 block len}; then u32 memzones {string name, u64 addr,
// u64 len}. IOVAs are not carried: the destination recomputes them from its own areas.
namespace {
constexpr uint32_t kMemStateMagic = 0x4d454d55;  // "UMEM"
constexpr uint32_t kMemStateVersion = 1;
constexpr uint32_t kMaxZoneName = 256;
}  // namespace

Status Memory::save_state(std::vector<uint8_t>& out) const {
  std::lock_guard lock(impl_->mu);
  const Impl& im = *impl_;
  StateWriter w(out);
  w.put(kMemStateMagic);
  w.put(kMemStateVersion);
  w.put(static_cast<uint32_t>(im.areas.size()));
  for (size_t i = 0; i < im.areas.size(); i++) {
    const MemArea& a = im.areas[i];
    w.put(a.id);
    w.put<uint64_t>(reinterpret_cast<uintptr_t>(a.va));
    w.put<uint64_t>(a.len);
    w.put(static_cast<uint32_t>(im.heaps[i].free.size()));
    for (auto& [addr, len] : im.heaps[i].free) {
      w.put<uint64_t>(addr);
      w.put<uint64_t>(len);
    }
    w.put(static_cast<uint32_t>(im.heaps[i].used.size()));
    for (auto& [addr, block] : im.heaps[i].used) {
      w.put<uint64_t>(addr);
      w.put<uint64_t>(block.first);
      w.put<uint64_t>(block.second);
    }
  }
  w.put(static_cast<uint32_t>(im.zones.size()));
  for (auto& [name, z] : im.zones) {
    w.put_string(name);
    w.put<uint64_t>(reinterpret_cast<uintptr_t>(z.addr));
    w.put<uint64_t>(z.len);
  }
  return Status::ok();
}

Status Memory::load_state(std::span<const uint8_t> in) {
  auto bad = [](std::string_view what) {
    return Status::error(EINVAL, fmt::format("memory state refused: {}", what));
  };
  StateReader r(in);
  uint32_t magic = 0, version = 0, area_count = 0;
  if (!r.get(&magic) || magic != kMemStateMagic) return bad("not a memory state (bad magic)");
  if (!r.get(&version) || version != kMemStateVersion)
    return bad(fmt::format("version {} (this build reads {})", version, kMemStateVersion));
  std::unique_lock lock(impl_->mu);
  Impl& im = *impl_;
  if (!r.get(&area_count) || area_count != im.areas.size())
    return bad(fmt::format("{} areas, this process has {}", area_count, im.areas.size()));
  std::deque<Impl::Heap> heaps(im.areas.size());
  for (size_t i = 0; i < im.areas.size(); i++) {
    const MemArea& a = im.areas[i];
    const uint64_t lo = reinterpret_cast<uintptr_t>(a.va), hi = lo + a.len;
    uint32_t id = 0, nfree = 0, nused = 0;
    uint64_t va = 0, len = 0;
    if (!r.get(&id) || !r.get(&va) || !r.get(&len)) return bad("truncated area");
    if (id != a.id || va != lo || len != a.len)
      return bad(fmt::format("area {} at {:#x}+{:#x} where this process has area {} at {:#x}+{:#x}", id, va, len, a.id,
                             lo, a.len));
    // Free and used blocks must tile the area exactly: sorted, disjoint, no gap.
    std::map<uint64_t, uint64_t> tiles;
    if (!r.get(&nfree) || !r.has_room(nfree, 16)) return bad("truncated free list");
    for (uint32_t k = 0; k < nfree; k++) {
      uint64_t addr = 0, blen = 0;
      r.get(&addr);
      r.get(&blen);
      if (blen == 0 || addr < lo || addr > hi || blen > hi - addr) return bad(fmt::format("free block {:#x}+{:#x} outside area {}", addr, blen, id));
      if (!heaps[i].free.emplace(addr, blen).second || !tiles.emplace(addr, blen).second) return bad("free block given twice");
    }
    if (!r.get(&nused) || !r.has_room(nused, 24)) return bad("truncated allocation list");
    for (uint32_t k = 0; k < nused; k++) {
      uint64_t addr = 0, start = 0, blen = 0;
      r.get(&addr);
      r.get(&start);
      r.get(&blen);
      if (blen == 0 || start < lo || start > hi || blen > hi - start || addr < start || addr >= start + blen)
        return bad(fmt::format("allocation {:#x} (block {:#x}+{:#x}) outside area {}", addr, start, blen, id));
      if (!heaps[i].used.emplace(addr, std::make_pair(start, blen)).second || !tiles.emplace(start, blen).second)
        return bad("allocation block given twice");
    }
    uint64_t at = lo;
    for (auto& [s, l] : tiles) {
      if (s != at) return bad(fmt::format("area {}: blocks overlap or leave a hole at {:#x}", id, at));
      at = s + l;
    }
    if (at != hi) return bad(fmt::format("area {}: blocks end at {:#x}, the area at {:#x}", id, at, hi));
  }
  uint32_t nzones = 0;
  if (!r.get(&nzones) || !r.has_room(nzones, 20)) return bad("truncated memzone list");
  std::map<std::string, Memzone, std::less<>> zones;
  for (uint32_t k = 0; k < nzones; k++) {
    std::string name;
    uint64_t addr = 0, len = 0;
    if (!r.get_string(&name, kMaxZoneName) || !r.get(&addr) || !r.get(&len)) return bad("truncated memzone");
    if (name.empty()) return bad("memzone without a name");
    // A memzone is one live allocation of the heap, and lies inside its block.
    const Impl::Heap* owner = nullptr;
    const MemArea* area = nullptr;
    for (size_t i = 0; i < heaps.size(); i++) {
      auto it = heaps[i].used.find(addr);
      if (it != heaps[i].used.end() && len <= it->second.first + it->second.second - addr) {
        owner = &heaps[i];
        area = &im.areas[i];
      }
    }
    if (!owner) return bad(fmt::format("memzone '{}' at {:#x}+{:#x} is not an allocation of the heap", name, addr, len));
    size_t off = addr - reinterpret_cast<uintptr_t>(area->va);
    Memzone z{name, reinterpret_cast<void*>(static_cast<uintptr_t>(addr)), len,
              area->page_iova.empty() ? area->iova + off : area->page_iova[off / area->page_size] + off % area->page_size};
    if (!zones.emplace(name, z).second) return bad(fmt::format("memzone '{}' given twice", name));
  }
  if (!r.ok() || r.left() != 0) return bad(fmt::format("{} bytes after the end", r.left()));
  im.heaps = std::move(heaps);
  im.zones = std::move(zones);
  return Status::ok();
}

}  // namespace uvio
