// uvio-devbind: shows PCI devices with their drivers and IOMMU groups, and hands them to
// vfio-pci (or back), the way dpdk-devbind.py does, through sysfs only:
// driver_override + drivers_probe, so no device id tables are touched.
//   uvio-devbind --status
//   uvio-devbind --bind=vfio-pci 0000:03:00.0 [...]
//   uvio-devbind --unbind 0000:03:00.0 [...]
// UVIO_SYSFS_ROOT replaces /sys (tests).
#include <uvio/eal.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage = R"(Usage: uvio-devbind --status
       uvio-devbind --bind=DRIVER PCI_ADDRESS...   (e.g. --bind=vfio-pci 0000:03:00.0)
       uvio-devbind --unbind PCI_ADDRESS...
Shows PCI devices with their driver and IOMMU group, or binds them to a driver through
sysfs (driver_override + drivers_probe). Binding needs root and the driver loaded.
)";

std::string sysfs() {
  const char* root = std::getenv("UVIO_SYSFS_ROOT");
  return std::string(root ? root : "/sys") + "/bus/pci";
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

std::string link_name(const std::string& path) {
  char buf[4096];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  buf[n] = 0;
  const char* slash = std::strrchr(buf, '/');
  return slash ? slash + 1 : buf;
}

bool write_file(const std::string& path, const std::string& text, std::string* err) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = path + ": " + std::strerror(errno);
    return false;
  }
  ssize_t n = write(fd, text.data(), text.size());
  int e = errno;
  close(fd);
  if (n != ssize_t(text.size())) {
    *err = path + ": " + std::strerror(n < 0 ? e : EIO);
    return false;
  }
  return true;
}

std::vector<std::string> devices() {
  std::vector<std::string> out;
  DIR* d = opendir((sysfs() + "/devices").c_str());
  if (!d) return out;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') out.push_back(e->d_name);
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

const char* class_name(unsigned cls) {
  switch (cls >> 8) {
    case 0x0108: return "NVMe";
    case 0x0200: return "Ethernet";
    case 0x0106: return "SATA";
    case 0x0600: return "host bridge";
    case 0x0601: return "ISA bridge";
    case 0x0604: return "PCI bridge";
    case 0x0300: return "VGA";
    default: break;
  }
  switch (cls >> 16) {
    case 0x01: return "storage";
    case 0x02: return "network";
    case 0x06: return "bridge";
    default: return "other";
  }
}

int status() {
  auto devs = devices();
  if (devs.empty()) {
    std::printf("no PCI devices under %s/devices\n", sysfs().c_str());
    return 0;
  }
  std::printf("%-14s %-11s %-12s %-14s %-6s %s\n", "address", "vendor:dev", "class", "driver", "group", "vfio");
  for (const std::string& bdf : devs) {
    std::string dir = sysfs() + "/devices/" + bdf;
    std::string vendor = read_line(dir + "/vendor"), device = read_line(dir + "/device");
    unsigned cls = unsigned(std::strtoul(read_line(dir + "/class").c_str(), nullptr, 16));
    std::string driver = link_name(dir + "/driver");
    std::string group = link_name(dir + "/iommu_group");
    std::string vfio = driver == "vfio-pci" ? (group.empty() ? "noiommu?" : "/dev/vfio/" + group) : "-";
    std::printf("%-14s %s:%s  %-12s %-14s %-6s %s\n", bdf.c_str(), vendor.substr(vendor.size() > 2 ? 2 : 0).c_str(),
                device.substr(device.size() > 2 ? 2 : 0).c_str(), class_name(cls), driver.empty() ? "-" : driver.c_str(),
                group.empty() ? "-" : group.c_str(), vfio.c_str());
  }
  return 0;
}

int bind_to(const std::string& driver, const std::vector<std::string>& bdfs) {
  int rc = 0;
  for (const std::string& bdf : bdfs) {
    std::string dir = sysfs() + "/devices/" + bdf, err;
    std::string current = link_name(dir + "/driver");
    if (current == driver) {
      std::printf("%s: already bound to %s\n", bdf.c_str(), driver.c_str());
      continue;
    }
    if (!current.empty() && !write_file(dir + "/driver/unbind", bdf, &err)) {
      std::fprintf(stderr, "uvio-devbind: %s: cannot unbind from %s: %s\n", bdf.c_str(), current.c_str(), err.c_str());
      rc = 1;
      continue;
    }
    // driver_override makes the probe pick exactly this driver; an empty override after
    // an unbind returns the device to normal matching.
    if (!write_file(dir + "/driver_override", driver, &err) || (!driver.empty() && !write_file(sysfs() + "/drivers_probe", bdf, &err))) {
      std::fprintf(stderr, "uvio-devbind: %s: cannot bind to %s: %s\n", bdf.c_str(), driver.c_str(), err.c_str());
      rc = 1;
      continue;
    }
    if (driver.empty()) std::printf("%s: unbound (was %s)\n", bdf.c_str(), current.empty() ? "unbound" : current.c_str());
    else std::printf("%s: %s -> %s\n", bdf.c_str(), current.empty() ? "unbound" : current.c_str(), driver.c_str());
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::string action, driver;
  std::vector<std::string> bdfs;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--status" || a == "-s") {
      action = "status";
    } else if (a.rfind("--bind=", 0) == 0 || a == "--bind" || a == "-b") {
      action = "bind";
      if (a.size() > 7 && a[6] == '=') driver = a.substr(7);
      else if (i + 1 < argc) driver = argv[++i];
      if (driver.empty() || driver.find('/') != std::string::npos) {
        std::fprintf(stderr, "uvio-devbind: option --bind: needs a driver name, e.g. --bind=vfio-pci\n");
        return 2;
      }
    } else if (a == "--unbind" || a == "-u") {
      action = "unbind";
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "uvio-devbind: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    } else {
      std::string canon;
      if (!uvio::parse_pci_address(a, &canon)) {
        std::fprintf(stderr, "uvio-devbind: '%s' is not a PCI address (DDDD:BB:DD.F)\n", a.c_str());
        return 2;
      }
      if (access((sysfs() + "/devices/" + canon).c_str(), F_OK) != 0) {
        std::fprintf(stderr, "uvio-devbind: no PCI device %s\n", canon.c_str());
        return 2;
      }
      bdfs.push_back(canon);
    }
  }
  if (action.empty() || action == "status") {
    if (!bdfs.empty()) {
      std::fprintf(stderr, "uvio-devbind: addresses given without --bind or --unbind\n");
      return 2;
    }
    return status();
  }
  if (bdfs.empty()) {
    std::fprintf(stderr, "uvio-devbind: --%s needs at least one PCI address\n", action.c_str());
    return 2;
  }
  return bind_to(action == "bind" ? driver : "", bdfs);
}
