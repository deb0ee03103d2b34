#include "mig/device_walk.h"

#include <fmt/format.h>

namespace uvio::mig {

// VFIO_MIGRATION_STOP_COPY (linux/vfio.h): the one flag every migratable device has.
constexpr uint64_t kVfioMigrationStopCopy = 1u << 0;

DeviceMigInfo probe_device(const RuntimeDevice& d) {
  DeviceMigInfo info;
  auto who = fmt::format("device {} ({:04x}:{:04x})", d.name, d.vendor_id, d.device_id);
  auto caps = d.device->migration_caps();
  if (!caps || !caps->supported || !(caps->flags & kVfioMigrationStopCopy)) {
    info.why_not = fmt::format("{} cannot migrate: no VFIO migration support{}", who,
                               caps ? "" : fmt::format(" ({})", caps.status().message()));
    return info;
  }
  info.features = iommu::MigFeatures::from_flags(caps->flags);
  info.pre_copy = info.features.pre_copy;
  info.tracker = d.device->dma_logging();
  if (!info.tracker) info.tracker = d.device->domain().dirty_tracker();
  if (!info.tracker)
    info.why_not = fmt::format("{} cannot migrate: no dirty page tracking for its DMA (neither device DMA "
                               "logging nor an IOMMU dirty tracker)", who);
  return info;
}

Status walk_device(iommu::Device& dev, iommu::MigFeatures features, iommu::MigState target) {
  auto cur = dev.mig_state();
  if (!cur) return Status::error(cur.status().code(), fmt::format("{}: reading its migration state: {}", dev.name(), cur.status().message()));
  if (*cur == target) return Status::ok();
  std::vector<iommu::MigState> path = iommu::mig_path(*cur, target, features);
  if (path.empty())
    return Status::error(EINVAL, fmt::format("{}: no migration path from {} to {}", dev.name(),
                                             iommu::mig_state_name(*cur), iommu::mig_state_name(target)));
  iommu::MigState at = *cur;
  for (iommu::MigState next : path) {
    Status st = dev.set_mig_state(next);
    if (!st)
      return Status::error(st.code(), fmt::format("{}: {} -> {} failed: {}", dev.name(), iommu::mig_state_name(at),
                                                  iommu::mig_state_name(next), st.message()));
    at = next;
  }
  return Status::ok();
}

}  // namespace uvio::mig
