// The system calls the kernel backends make, behind an interface so tests can put a
// fake kernel (one that checks arguments the way VFIO and iommufd do) in its place.
// Every call returns what the syscall returns on success and -errno on failure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace uvio::iommu {

class Sys {
 public:
  virtual ~Sys() = default;
  virtual int open(const std::string& path, int flags) = 0;
  virtual int close(int fd) = 0;
  // `arg` is a pointer or a plain value, as the request defines.
  virtual int ioctl(int fd, unsigned long request, uintptr_t arg) = 0;
  virtual ssize_t pread(int fd, void* buf, size_t len, uint64_t offset) = 0;
  virtual ssize_t pwrite(int fd, const void* buf, size_t len, uint64_t offset) = 0;
  virtual ssize_t read(int fd, void* buf, size_t len) = 0;
  virtual ssize_t write(int fd, const void* buf, size_t len) = 0;
  // Returns the address, or nullptr with *err set to the errno.
  virtual void* mmap(size_t len, int prot, int flags, int fd, uint64_t offset, int* err) = 0;
  virtual int munmap(void* addr, size_t len) = 0;
  virtual int eventfd(unsigned initval, int flags) = 0;

  // sysfs and /dev, for finding groups and cdevs.
  virtual bool exists(const std::string& path) = 0;
  virtual int read_link(const std::string& path, std::string* target) = 0;
  virtual int list_dir(const std::string& path, std::vector<std::string>* names) = 0;

  // pointer-argument convenience
  int ioctl_ptr(int fd, unsigned long request, void* arg) {
    return ioctl(fd, request, reinterpret_cast<uintptr_t>(arg));
  }
};

// The process's Sys: the real kernel unless a test installed another.
Sys& sys();
Sys& real_sys();

// Installs `fake` for the lifetime of the object (tests only; not thread-safe).
class ScopedSys {
 public:
  explicit ScopedSys(Sys& fake);
  ~ScopedSys();
  ScopedSys(const ScopedSys&) = delete;
  ScopedSys& operator=(const ScopedSys&) = delete;

 private:
  Sys* previous_;
};

}  // namespace uvio::iommu
