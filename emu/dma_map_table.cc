#include "emu/dma_map_table.h"

#include <fmt/format.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace uvio::emu {

DmaMapTable::~DmaMapTable() { clear(); }

Status DmaMapTable::map(uint64_t iova, uint64_t size, int fd, uint64_t fd_offset, bool readable,
                        bool writable) {
  struct FdCloser {
    int fd;
    ~FdCloser() {
      if (fd >= 0) ::close(fd);
    }
  } closer{fd};
  if (size == 0 || iova + (size - 1) < iova)
    return Status::error(EINVAL, fmt::format("DMA map: range iova {:#x} size {:#x} is empty or wraps",
                                             iova, size));
  if (maps_.size() >= kMaxMappings)
    return Status::error(ENOSPC, fmt::format("DMA map: more than {} mappings", kMaxMappings));
  uint64_t last = iova + size - 1;
  auto next = maps_.lower_bound(iova);
  if (next != maps_.end() && next->first <= last)
    return Status::error(EEXIST, fmt::format("DMA map: [{:#x}, {:#x}] overlaps the mapping at {:#x}",
                                             iova, last, next->first));
  if (next != maps_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + (prev->second.size - 1) >= iova)
      return Status::error(EEXIST, fmt::format("DMA map: [{:#x}, {:#x}] overlaps the mapping at {:#x}",
                                               iova, last, prev->first));
  }
  Mapping m;
  m.size = size;
  m.readable = readable;
  m.writable = writable;
  if (fd >= 0) {
    // A mapping past the end of a file maps, but the first device access beyond it
    // raises SIGBUS in the server: refuse what the client's file does not hold.
    struct stat st;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (fd_offset > static_cast<uint64_t>(st.st_size) || size > static_cast<uint64_t>(st.st_size) - fd_offset))
      return Status::error(EINVAL, fmt::format("DMA map: [{:#x}, +{:#x}) of the client's fd lies beyond its "
                                               "{} bytes",
                                               fd_offset, size, st.st_size));
    // mmap wants a page-aligned offset; map from the page below and point inside it.
    uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    uint64_t delta = fd_offset % page;
    if (size > SIZE_MAX - delta) return Status::error(EINVAL, "DMA map: size too large");
    size_t len = static_cast<size_t>(size + delta);
    int prot = (readable ? PROT_READ : 0) | (writable ? PROT_WRITE : 0);
    void* p = ::mmap(nullptr, len, prot == 0 ? PROT_NONE : prot, MAP_SHARED, fd,
                     static_cast<off_t>(fd_offset - delta));
    if (p == MAP_FAILED)
      return errno_status(fmt::format("DMA map: cannot mmap {:#x} bytes at offset {:#x} of the "
                                      "client's fd",
                                      size, fd_offset));
    m.mmap_base = static_cast<std::byte*>(p);
    m.mmap_len = len;
    m.va = m.mmap_base + delta;
  }
  maps_.emplace(iova, m);
  return Status::ok();
}

Status DmaMapTable::unmap(uint64_t iova, uint64_t size) {
  auto it = maps_.find(iova);
  if (it == maps_.end() || it->second.size != size)
    return Status::error(EINVAL, fmt::format("DMA unmap: no mapping is exactly iova {:#x} size {:#x}",
                                             iova, size));
  if (it->second.mmap_base) ::munmap(it->second.mmap_base, it->second.mmap_len);
  maps_.erase(it);
  return Status::ok();
}

void DmaMapTable::clear() {
  for (auto& [iova, m] : maps_)
    if (m.mmap_base) ::munmap(m.mmap_base, m.mmap_len);
  maps_.clear();
  log_.stop();
}

std::vector<iommu::IovaRange> DmaMapTable::ranges() const {
  std::vector<iommu::IovaRange> out;
  for (const auto& [iova, m] : maps_) out.push_back({iova, iova + m.size - 1});
  return out;
}

const DmaMapTable::Mapping* DmaMapTable::find(uint64_t iova, uint64_t* offset) const {
  auto it = maps_.upper_bound(iova);
  if (it == maps_.begin()) return nullptr;
  --it;
  uint64_t off = iova - it->first;
  if (off >= it->second.size) return nullptr;
  *offset = off;
  return &it->second;
}

// Walks [iova, iova + len) across adjacent mappings; fails without touching anything
// when any byte is unmapped, unreachable or lacks the permission.
template <class Fn>
bool DmaMapTable::for_each_chunk(uint64_t iova, size_t len, bool write, Fn fn) {
  if (len == 0) return true;
  if (iova + (len - 1) < iova) return false;
  for (int pass = 0; pass < 2; ++pass) {
    uint64_t cur = iova;
    size_t left = len;
    size_t done = 0;
    while (left > 0) {
      uint64_t off;
      const Mapping* m = find(cur, &off);
      if (!m || !m->va || !(write ? m->writable : m->readable)) return false;
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, m->size - off));
      if (pass == 1) fn(m->va + off, done, n);
      cur += n;
      done += n;
      left -= n;
    }
  }
  return true;
}

bool DmaMapTable::read(uint64_t iova, void* dst, size_t len) {
  return for_each_chunk(iova, len, false, [&](std::byte* src, size_t done, size_t n) {
    std::memcpy(static_cast<std::byte*>(dst) + done, src, n);
  });
}

bool DmaMapTable::write(uint64_t iova, const void* src, size_t len) {
  bool ok = for_each_chunk(iova, len, true, [&](std::byte* dst, size_t done, size_t n) {
    std::memcpy(dst, static_cast<const std::byte*>(src) + done, n);
  });
  if (ok) log_.mark(iova, len);
  return ok;
}

std::byte* DmaMapTable::translate(uint64_t iova, size_t len) {
  uint64_t off;
  const Mapping* m = find(iova, &off);
  if (!m || !m->va || len == 0 || len > m->size - off) return nullptr;
  return m->va + off;
}

std::byte* DmaMapTable::translate_writable(uint64_t iova, size_t len) {
  uint64_t off;
  const Mapping* m = find(iova, &off);
  if (!m || !m->va || !m->writable || len == 0 || len > m->size - off) return nullptr;
  return m->va + off;
}

void DmaMapTable::mark_dirty(uint64_t iova, size_t len) { log_.mark(iova, len); }

}  // namespace uvio::emu
