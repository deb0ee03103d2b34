#include "iommu/sys.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace uvio::iommu {
namespace {

int neg_errno(long rc) { return rc < 0 ? -errno : static_cast<int>(rc); }

class KernelSys final : public Sys {
 public:
  int open(const std::string& path, int flags) override {
    return neg_errno(::open(path.c_str(), flags | O_CLOEXEC));
  }
  int close(int fd) override { return neg_errno(::close(fd)); }
  int ioctl(int fd, unsigned long request, uintptr_t arg) override {
    return neg_errno(::ioctl(fd, request, arg));
  }
  ssize_t pread(int fd, void* buf, size_t len, uint64_t offset) override {
    ssize_t n = ::pread(fd, buf, len, static_cast<off_t>(offset));
    return n < 0 ? -errno : n;
  }
  ssize_t pwrite(int fd, const void* buf, size_t len, uint64_t offset) override {
    ssize_t n = ::pwrite(fd, buf, len, static_cast<off_t>(offset));
    return n < 0 ? -errno : n;
  }
  ssize_t read(int fd, void* buf, size_t len) override {
    ssize_t n = ::read(fd, buf, len);
    return n < 0 ? -errno : n;
  }
  ssize_t write(int fd, const void* buf, size_t len) override {
    ssize_t n = ::write(fd, buf, len);
    return n < 0 ? -errno : n;
  }
  void* mmap(size_t len, int prot, int flags, int fd, uint64_t offset, int* err) override {
    void* p = ::mmap(nullptr, len, prot, flags, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) {
      *err = errno;
      return nullptr;
    }
    return p;
  }
  int munmap(void* addr, size_t len) override { return neg_errno(::munmap(addr, len)); }
  int eventfd(unsigned initval, int flags) override {
    return neg_errno(::eventfd(initval, flags | EFD_CLOEXEC));
  }
  bool exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }
  int read_link(const std::string& path, std::string* target) override {
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf) - 1);
    if (n < 0) return -errno;
    target->assign(buf, static_cast<size_t>(n));
    return 0;
  }
  int list_dir(const std::string& path, std::vector<std::string>* names) override {
    DIR* dir = ::opendir(path.c_str());
    if (!dir) return -errno;
    names->clear();
    while (struct dirent* e = ::readdir(dir)) {
      std::string_view name(e->d_name);
      if (name == "." || name == "..") continue;
      names->emplace_back(name);
    }
    ::closedir(dir);
    return 0;
  }
};

Sys* g_current = nullptr;

}  // namespace

Sys& real_sys() {
  static KernelSys kernel;
  return kernel;
}

Sys& sys() { return g_current ? *g_current : real_sys(); }

ScopedSys::ScopedSys(Sys& fake) : previous_(g_current) { g_current = &fake; }
ScopedSys::~ScopedSys() { g_current = previous_; }

}  // namespace uvio::iommu
