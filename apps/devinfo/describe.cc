#include "apps/devinfo/describe.h"

#include "iommu/abi/vfio.h"
#include "iommu/kernel_backends.h"

#include <fmt/format.h>

#include <cstdio>

namespace uvio::devinfo {
namespace {

using namespace uvio::iommu;

std::string flag_names(uint64_t value, std::initializer_list<std::pair<uint64_t, const char*>> names) {
  std::string out;
  for (auto [bit, name] : names)
    if (value & bit) out += fmt::format("{}{}", out.empty() ? "" : " ", name);
  return out;
}

std::string region_name(uint32_t index) {
  if (index <= kBar5) return fmt::format("BAR{}", index);
  if (index == kRomRegion) return "ROM";
  if (index == kConfigRegion) return "config";
  if (index == kVgaRegion) return "VGA";
  return fmt::format("device-specific {}", index);
}

const char* irq_name(uint32_t index) {
  static constexpr const char* kNames[] = {"INTx", "MSI", "MSI-X", "ERR", "REQ"};
  return index < 5 ? kNames[index] : "device-specific";
}

const char* mig_state_name(MigState s) {
  static constexpr const char* kNames[] = {"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING",
                                           "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P"};
  auto i = static_cast<uint32_t>(s);
  return i < 8 ? kNames[i] : "unknown";
}

// VFIO_REGION_INFO_CAP_* ids (vfio.h).
std::string region_cap_name(unsigned id) {
  switch (id) {
    case 1: return "sparse-mmap";
    case 2: return "type";
    case 3: return "msix-mappable";
    case 4: return "nvlink2-ssatgt";
    case 5: return "nvlink2-lnkspd";
  }
  return fmt::format("unknown-{}", id);
}

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

}  // namespace

json describe(Device& dev) {
  using namespace uvio::iommu::abi;
  json j;
  j["device"] = std::string(dev.name());
  j["backend"] = std::string(dev.backend());
  j["backend_reason"] = std::string(dev.backend_reason());
  const DeviceInfo& info = dev.info();
  j["flags"] = {{"value", info.flags},
                {"names", flag_names(info.flags, {{kVfioDeviceFlagsReset, "RESET"},
                                                  {kVfioDeviceFlagsPci, "PCI"},
                                                  {kVfioDeviceFlagsCaps, "CAPS"}})}};
  j["num_regions"] = info.num_regions;
  j["num_irqs"] = info.num_irqs;
  if (info.is_pci()) {
    auto vendor = dev.config_read(0x00, 2), device = dev.config_read(0x02, 2);  // PCI spec 7.5.1.1
    auto class_rev = dev.config_read(0x08, 4);
    if (vendor && device && class_rev)
      j["pci"] = {{"vendor_id", fmt::format("{:04x}", *vendor)},
                  {"device_id", fmt::format("{:04x}", *device)},
                  {"class", fmt::format("{:06x}", *class_rev >> 8)},
                  {"revision", *class_rev & 0xff}};
  }
  json regions = json::array();
  for (uint32_t i = 0; i < info.num_regions; ++i) {
    json r{{"index", i}, {"name", region_name(i)}};
    auto ri = dev.region_info(i);
    if (!ri && ri.status().code() == EINVAL && i == kVgaRegion) {
      r["size"] = 0;  // vfio-pci refuses the VGA region of a device that has none
    } else if (!ri) {
      r["error"] = ri.status().describe();
    } else {
      r["size"] = ri->size;
      r["offset"] = hex(ri->offset);
      r["flags"] = {{"value", ri->flags},
                    {"names", flag_names(ri->flags, {{kVfioRegionInfoFlagRead, "READ"},
                                                     {kVfioRegionInfoFlagWrite, "WRITE"},
                                                     {kVfioRegionInfoFlagMmap, "MMAP"},
                                                     {kVfioRegionInfoFlagCaps, "CAPS"}})}};
      r["capabilities"] = ri->cap_ids;
      r["msix_mappable"] = ri->msix_mappable;
      json sparse = json::array();
      for (const SparseArea& a : ri->sparse) sparse.push_back({{"offset", a.offset}, {"size", a.size}});
      r["sparse_mmap"] = sparse;
    }
    regions.push_back(r);
  }
  j["regions"] = regions;
  json irqs = json::array();
  for (uint32_t i = 0; i < info.num_irqs; ++i) {
    json q{{"index", i}, {"name", irq_name(i)}};
    auto ii = dev.irq_info(i);
    if (!ii) {
      q["error"] = ii.status().describe();
    } else {
      q["count"] = ii->count;
      q["flags"] = {{"value", ii->flags},
                    {"names", flag_names(ii->flags, {{kVfioIrqInfoEventfd, "EVENTFD"},
                                                     {kVfioIrqInfoMaskable, "MASKABLE"},
                                                     {kVfioIrqInfoAutomasked, "AUTOMASKED"},
                                                     {kVfioIrqInfoNoresize, "NORESIZE"}})}};
    }
    irqs.push_back(q);
  }
  j["irqs"] = irqs;
  json mig;
  auto caps = dev.migration_caps();
  if (!caps) {
    mig["error"] = caps.status().describe();
  } else {
    mig["supported"] = caps->supported;
    if (caps->supported) {
      mig["flags"] = {{"value", caps->flags},
                      {"names", flag_names(caps->flags, {{kVfioMigrationStopCopy, "STOP_COPY"},
                                                         {kVfioMigrationP2p, "P2P"},
                                                         {kVfioMigrationPreCopy, "PRE_COPY"}})}};
      auto state = dev.mig_state();
      mig["state"] = state ? mig_state_name(*state) : state.status().describe();
    }
  }
  j["migration"] = mig;
  j["dma_logging"] = dev.dma_logging() != nullptr;
  DmaDomain& d = dev.domain();
  json dom{{"name", std::string(d.name())}, {"page_size_mask", hex(d.page_size_mask())}};
  json ranges = json::array();
  for (const IovaRange& r : d.iova_ranges()) ranges.push_back({{"start", hex(r.start)}, {"last", hex(r.last)}});
  dom["iova_ranges"] = ranges;
  dom["max_mappings"] = d.max_mappings();
  DirtyTracker* t = d.dirty_tracker();
  dom["dirty_tracking"] = t ? std::string(t->name()) : "none";
  if (auto* kd = dynamic_cast<KernelDomain*>(&d)) {
    json facts;
    for (auto& [k, v] : kd->facts()) facts[k] = v;
    dom["facts"] = facts;
  }
  j["iommu"] = dom;
  return j;
}

void print_text(const json& j, std::FILE* out) {
  std::fprintf(out, "%s: backend %s (%s)\n", j["device"].get<std::string>().c_str(), j["backend"].get<std::string>().c_str(),
              j["backend_reason"].get<std::string>().c_str());
  std::fprintf(out, "\tFlags: %#x [%s], %u regions, %u IRQ indexes\n", j["flags"]["value"].get<unsigned>(),
              j["flags"]["names"].get<std::string>().c_str(), j["num_regions"].get<unsigned>(),
              j["num_irqs"].get<unsigned>());
  if (j.contains("pci"))
    std::fprintf(out, "\tPCI: vendor %s device %s class %s rev %u\n", j["pci"]["vendor_id"].get<std::string>().c_str(),
                j["pci"]["device_id"].get<std::string>().c_str(), j["pci"]["class"].get<std::string>().c_str(),
                j["pci"]["revision"].get<unsigned>());
  for (const json& r : j["regions"]) {
    std::string name = r["name"];
    if (r.contains("error")) {
      std::fprintf(out, "\tRegion %u (%s): %s\n", r["index"].get<unsigned>(), name.c_str(), r["error"].get<std::string>().c_str());
      continue;
    }
    if (r["size"].get<uint64_t>() == 0) {
      std::fprintf(out, "\tRegion %u (%s): not present\n", r["index"].get<unsigned>(), name.c_str());
      continue;
    }
    std::fprintf(out, "\tRegion %u (%s): size %#llx at fd offset %s, flags %#x [%s]\n", r["index"].get<unsigned>(),
                name.c_str(), static_cast<unsigned long long>(r["size"].get<uint64_t>()),
                r["offset"].get<std::string>().c_str(), r["flags"]["value"].get<unsigned>(),
                r["flags"]["names"].get<std::string>().c_str());
    if (!r["capabilities"].empty()) {
      std::string ids;
      for (const json& id : r["capabilities"]) ids += fmt::format("{}{}", ids.empty() ? "" : " ", region_cap_name(id.get<unsigned>()));
      std::fprintf(out, "\t\tCapabilities: %s\n", ids.c_str());
    }
    for (const json& a : r["sparse_mmap"])
      std::fprintf(out, "\t\tSparse mmap: [%#llx, +%#llx)\n", static_cast<unsigned long long>(a["offset"].get<uint64_t>()),
                  static_cast<unsigned long long>(a["size"].get<uint64_t>()));
  }
  for (const json& q : j["irqs"]) {
    if (q.contains("error")) {
      std::fprintf(out, "\tIRQ %u (%s): %s\n", q["index"].get<unsigned>(), q["name"].get<std::string>().c_str(),
                  q["error"].get<std::string>().c_str());
      continue;
    }
    std::fprintf(out, "\tIRQ %u (%s): count %u, flags %#x [%s]\n", q["index"].get<unsigned>(),
                q["name"].get<std::string>().c_str(), q["count"].get<unsigned>(), q["flags"]["value"].get<unsigned>(),
                q["flags"]["names"].get<std::string>().c_str());
  }
  const json& mig = j["migration"];
  if (mig.contains("error")) std::fprintf(out, "\tMigration: %s\n", mig["error"].get<std::string>().c_str());
  else if (!mig["supported"].get<bool>()) std::fprintf(out, "\tMigration: not supported\n");
  else
    std::fprintf(out, "\tMigration: v2, flags [%s], state %s\n", mig["flags"]["names"].get<std::string>().c_str(),
                mig["state"].get<std::string>().c_str());
  std::fprintf(out, "\tDMA logging: %s\n", j["dma_logging"].get<bool>() ? "supported" : "not supported");
  const json& dom = j["iommu"];
  std::fprintf(out, "\tIOMMU: %s\n", dom["name"].get<std::string>().c_str());
  std::string ranges;
  for (const json& r : dom["iova_ranges"])
    ranges += fmt::format("{}[{}, {}]", ranges.empty() ? "" : " ", r["start"].get<std::string>(), r["last"].get<std::string>());
  std::fprintf(out, "\t\tIOVA ranges: %s\n", ranges.empty() ? "(not reported)" : ranges.c_str());
  std::fprintf(out, "\t\tPage size mask: %s\n", dom["page_size_mask"].get<std::string>().c_str());
  unsigned max = dom["max_mappings"].get<unsigned>();
  if (max) std::fprintf(out, "\t\tMax DMA mappings: %u\n", max);
  std::fprintf(out, "\t\tDirty tracking: %s\n", dom["dirty_tracking"].get<std::string>().c_str());
  if (dom.contains("facts"))
    for (auto& [k, v] : dom["facts"].items()) std::fprintf(out, "\t\t%s: %s\n", k.c_str(), v.get<std::string>().c_str());
}

}  // namespace uvio::devinfo
