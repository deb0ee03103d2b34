#include "emu/nvme/namespace_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace uvio::emu::nvme {
namespace {

constexpr size_t kBounceBytes = 128 * 1024;  // one MDTS-sized transfer per chunk

bool pread_all(int fd, void* buf, size_t len, uint64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (len) {
    ssize_t n = ::pread(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n, len -= static_cast<size_t>(n), offset += static_cast<uint64_t>(n);
  }
  return true;
}

bool pwrite_all(int fd, const void* buf, size_t len, uint64_t offset) {
  auto* p = static_cast<const char*>(buf);
  while (len) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n, len -= static_cast<size_t>(n), offset += static_cast<uint64_t>(n);
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<NamespaceStore>> NamespaceStore::create_memory(uint64_t bytes, uint32_t lba_bytes) {
  bytes -= bytes % lba_bytes;
  if (bytes == 0)
    return Status::error(EINVAL, fmt::format("nvme: a namespace needs at least one {}-byte block", lba_bytes));
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return errno_status(fmt::format("nvme: cannot reserve {} bytes of memory for a namespace", bytes));
  std::unique_ptr<NamespaceStore> ns(new NamespaceStore(bytes, lba_bytes));
  ns->base_ = static_cast<std::byte*>(p);
  return ns;
}

Result<std::unique_ptr<NamespaceStore>> NamespaceStore::open_file(const std::string& path, uint64_t bytes,
                                                                  uint32_t lba_bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno_status(fmt::format("nvme: cannot open namespace file {}", path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = errno_status(fmt::format("nvme: cannot stat namespace file {}", path));
    ::close(fd);
    return s;
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (bytes > size) {
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      Status s = errno_status(fmt::format("nvme: cannot grow namespace file {} to {} bytes", path, bytes));
      ::close(fd);
      return s;
    }
    size = bytes;
  }
  size -= size % lba_bytes;
  if (size == 0) {
    ::close(fd);
    return Status::error(EINVAL, fmt::format("nvme: namespace file {} holds no whole {}-byte block; "
                                             "give size= to grow it", path, lba_bytes));
  }
  std::unique_ptr<NamespaceStore> ns(new NamespaceStore(size, lba_bytes));
  ns->fd_ = fd;
  ns->bounce_.resize(kBounceBytes);
  return ns;
}

NamespaceStore::~NamespaceStore() {
  if (base_) ::munmap(base_, bytes_);
  if (fd_ >= 0) ::close(fd_);
}

NamespaceStore::Copy NamespaceStore::to_host(DmaAccess& dma, uint64_t iova, uint64_t offset, size_t len) {
  if (base_) return dma.write(iova, base_ + offset, len) ? Copy::Ok : Copy::DmaFailed;
  while (len) {
    size_t chunk = std::min(len, bounce_.size());
    if (!pread_all(fd_, bounce_.data(), chunk, offset)) return Copy::MediaFailed;
    if (!dma.write(iova, bounce_.data(), chunk)) return Copy::DmaFailed;
    iova += chunk, offset += chunk, len -= chunk;
  }
  return Copy::Ok;
}

NamespaceStore::Copy NamespaceStore::from_host(DmaAccess& dma, uint64_t iova, uint64_t offset, size_t len) {
  if (base_) return dma.read(iova, base_ + offset, len) ? Copy::Ok : Copy::DmaFailed;
  while (len) {
    size_t chunk = std::min(len, bounce_.size());
    if (!dma.read(iova, bounce_.data(), chunk)) return Copy::DmaFailed;
    if (!pwrite_all(fd_, bounce_.data(), chunk, offset)) return Copy::MediaFailed;
    iova += chunk, offset += chunk, len -= chunk;
  }
  return Copy::Ok;
}

bool NamespaceStore::zero(uint64_t offset, uint64_t len) {
  if (base_) {
    // Whole pages go back to the kernel (they read as zeroes again); the edges are cleared.
    const uint64_t page = 4096;
    uint64_t first = (offset + page - 1) & ~(page - 1);
    uint64_t last = (offset + len) & ~(page - 1);
    if (first < last && ::madvise(base_ + first, last - first, MADV_DONTNEED) == 0) {
      std::memset(base_ + offset, 0, first - offset);
      std::memset(base_ + last, 0, offset + len - last);
    } else {
      std::memset(base_ + offset, 0, len);
    }
    return true;
  }
  if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0)
    return true;
  // Filesystems without ZERO_RANGE: write zeroes.
  std::fill(bounce_.begin(), bounce_.end(), std::byte{0});
  while (len) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(len, bounce_.size()));
    if (!pwrite_all(fd_, bounce_.data(), chunk, offset)) return false;
    offset += chunk, len -= chunk;
  }
  return true;
}

bool NamespaceStore::flush() {
  return base_ || ::fdatasync(fd_) == 0;
}

}  // namespace uvio::emu::nvme
