// The blocks behind one emulated namespace: anonymous memory or a file. Data moves
// between the store and the host's memory through DmaAccess only.
#pragma once

#include <uvio/status.h>

#include "emu/device_model.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace uvio::emu::nvme {

class NamespaceStore {
 public:
  enum class Copy { Ok, DmaFailed, MediaFailed };

  // Zero-filled memory reserved lazily (pages are touched only when written).
  static Result<std::unique_ptr<NamespaceStore>> create_memory(uint64_t bytes, uint32_t lba_bytes);
  // An existing file; grown to `bytes` when bytes is larger than the file, else its
  // size rounded down to whole blocks.
  static Result<std::unique_ptr<NamespaceStore>> open_file(const std::string& path, uint64_t bytes,
                                                           uint32_t lba_bytes);
  ~NamespaceStore();
  NamespaceStore(const NamespaceStore&) = delete;
  NamespaceStore& operator=(const NamespaceStore&) = delete;

  uint32_t lba_bytes() const { return lba_bytes_; }
  uint64_t lba_count() const { return bytes_ / lba_bytes_; }
  uint64_t bytes() const { return bytes_; }
  bool memory_backed() const { return fd_ < 0; }

  // [offset, offset + len) lies inside the namespace (the caller checked the LBA range).
  Copy to_host(DmaAccess& dma, uint64_t iova, uint64_t offset, size_t len);
  Copy from_host(DmaAccess& dma, uint64_t iova, uint64_t offset, size_t len);
  bool zero(uint64_t offset, uint64_t len);
  bool flush();

  // Memory-backed contents, for migration; nullptr for a file.
  const std::byte* memory() const { return fd_ < 0 ? base_ : nullptr; }
  std::byte* memory() { return fd_ < 0 ? base_ : nullptr; }

 private:
  NamespaceStore(uint64_t bytes, uint32_t lba_bytes) : bytes_(bytes), lba_bytes_(lba_bytes) {}

  uint64_t bytes_;
  uint32_t lba_bytes_;
  std::byte* base_ = nullptr;  // memory-backed
  int fd_ = -1;                // file-backed
  std::vector<std::byte> bounce_;
};

}  // namespace uvio::emu::nvme
