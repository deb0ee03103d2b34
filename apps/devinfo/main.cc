// uvio-devinfo: what a VFIO device offers, seen through uvio — like `lspci -vv` for the
// VFIO view of a device: backend, device flags, regions and their capabilities, IRQ
// indexes, device features (migration, DMA logging) and the IOMMU domain's facts.
#include <uvio/log.h>
#include <uvio/mem.h>

#include "apps/devinfo/describe.h"
#include "iommu/device.h"
#include "iommu/dma_space.h"
#include "iommu/pci_address.h"

#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace {

using namespace uvio;
using namespace uvio::iommu;

constexpr const char* kUsage =
    "usage: uvio-devinfo <PCI address | vfio-user:/path/to.sock> [options]\n"
    "\n"
    "Opens the device the way a uvio application would and prints what it offers:\n"
    "the backend and why it was chosen, device flags, every region (size, flags,\n"
    "capabilities, mmappable sparse areas), every IRQ index (count, flags), device\n"
    "features (migration v2 flags and state, DMA logging) and the IOMMU domain\n"
    "(IOVA ranges, page sizes, mapping limit, dirty tracking).\n"
    "\n"
    "The device must be bound to vfio-pci (or be a vfio-user server's socket), and\n"
    "opening it maps a small amount of memory into its IOMMU domain.\n"
    "\n"
    "options:\n"
    "  --vfio-mode=MODE  auto (default: iommufd + cdev when /dev/iommu and\n"
    "                    /dev/vfio/devices exist, else the group path), iommufd,\n"
    "                    group, or noiommu (needs root for physical addresses)\n"
    "  --vf-token=UUID   the VF token of an SR-IOV PF/VF pair\n"
    "  --json            print one JSON object instead of text\n"
    "  --help            this text\n"
    "\n"
    "exit status: 0 success, 1 the device could not be opened, 2 bad arguments\n";

int bad_argument(const std::string& message) {
  std::fprintf(stderr, "uvio-devinfo: %s (see --help)\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec;
  OpenOptions opts;
  bool as_json = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--json") {
      as_json = true;
    } else if (a.rfind("--vfio-mode=", 0) == 0) {
      std::string_view m = a.substr(12);
      if (m == "auto") opts.mode = VfioMode::Auto;
      else if (m == "iommufd") opts.mode = VfioMode::Iommufd;
      else if (m == "group") opts.mode = VfioMode::Group;
      else if (m == "noiommu") opts.mode = VfioMode::NoIommu;
      else return bad_argument(fmt::format("--vfio-mode must be auto, iommufd, group or noiommu, not '{}'", m));
    } else if (a.rfind("--vf-token=", 0) == 0) {
      opts.vf_token = std::string(a.substr(11));
      std::array<uint8_t, 16> bytes;
      if (!parse_uuid(opts.vf_token, &bytes)) return bad_argument(fmt::format("--vf-token '{}' is not a UUID", opts.vf_token));
    } else if (a.rfind("-", 0) == 0) {
      return bad_argument(fmt::format("unknown option '{}'", a));
    } else if (!spec.empty()) {
      return bad_argument(fmt::format("one device at a time: '{}' and '{}'", spec, a));
    } else {
      spec = std::string(a);
    }
  }
  if (spec.empty()) return bad_argument("no device given: a PCI address (0000:03:00.0) or vfio-user:/path");
  std::string canonical;
  if (spec.rfind("vfio-user:", 0) != 0 && !parse_pci_address(spec, &canonical))
    return bad_argument(fmt::format("'{}' is neither a PCI address (0000:03:00.0) nor vfio-user:/path", spec));

  // The runtime's --no-huge warning is noise here: the tool maps only this little memory.
  log::set_component_level("mem", log::Level::Err);
  // A little memory: opening a device maps the runtime's memory into its domain.
  MemConfig cfg;
  cfg.total_bytes = 2u << 20;
  cfg.hugepages = false;
  cfg.file_prefix = "uvio-devinfo";
  if (opts.mode == VfioMode::NoIommu) cfg.iova_mode = IovaMode::Pa;
  auto mem = Memory::create(cfg);
  if (!mem) {
    std::fprintf(stderr, "uvio-devinfo: %s\n", mem.status().describe().c_str());
    return 1;
  }
  DmaSpace dma(**mem);
  auto dev = open_device(spec, dma, opts);
  if (!dev) {
    std::fprintf(stderr, "uvio-devinfo: %s: %s\n", spec.c_str(), dev.status().describe().c_str());
    return 1;
  }
  devinfo::json report = devinfo::describe(**dev);
  if (as_json) std::printf("%s\n", report.dump(2).c_str());
  else devinfo::print_text(report, stdout);
  return 0;
}
