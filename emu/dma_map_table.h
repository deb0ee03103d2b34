// The client's DMA mappings on the server side (VFIO_USER_DMA_MAP/UNMAP): each mapping
// with an fd is mmapped here, and the device model reaches client memory only through
// the bounds-checked DmaAccess this table implements. Writes are dirty-logged.
#pragma once

#include <uvio/status.h>

#include "emu/device_model.h"
#include "emu/dirty_log.h"

#include <cstdint>
#include <map>
#include <vector>

namespace uvio::emu {

class DmaMapTable final : public DmaAccess {
 public:
  static constexpr uint32_t kMaxMappings = 1024;

  DmaMapTable() = default;
  ~DmaMapTable() override;
  DmaMapTable(const DmaMapTable&) = delete;
  DmaMapTable& operator=(const DmaMapTable&) = delete;

  // Takes ownership of fd (-1: no fd; the memory can then not be reached directly and
  // accesses to it fail). EEXIST for an overlap, EINVAL for a zero or wrapping size,
  // ENOSPC beyond kMaxMappings, the mmap errno when the fd cannot be mapped.
  Status map(uint64_t iova, uint64_t size, int fd, uint64_t fd_offset, bool readable, bool writable);
  // Must match one mapping exactly.
  Status unmap(uint64_t iova, uint64_t size);
  void clear();

  size_t size() const { return maps_.size(); }
  // The IOVA ranges mapped, in order (for "log everything" DMA logging).
  std::vector<iommu::IovaRange> ranges() const;

  DirtyLog& dirty_log() { return log_; }

  // DmaAccess
  bool read(uint64_t iova, void* dst, size_t len) override;
  bool write(uint64_t iova, const void* src, size_t len) override;
  std::byte* translate(uint64_t iova, size_t len) override;
  void mark_dirty(uint64_t iova, size_t len) override;
  std::byte* translate_writable(uint64_t iova, size_t len) override;

 private:
  struct Mapping {
    uint64_t size = 0;
    std::byte* va = nullptr;  // nullptr: no fd was given
    size_t mmap_len = 0;
    std::byte* mmap_base = nullptr;
    bool readable = false;
    bool writable = false;
  };
  // The mapping holding iova with at least one byte from it, or nullptr.
  const Mapping* find(uint64_t iova, uint64_t* offset) const;
  template <class Fn>
  bool for_each_chunk(uint64_t iova, size_t len, bool write, Fn fn);

  std::map<uint64_t, Mapping> maps_;  // by IOVA
  DirtyLog log_;
};

}  // namespace uvio::emu
