// Moving a device's v2 migration state by hand, as the engine does: walk the FSM with
// the shared stepping function, read the saved data, write it into another device.
#pragma once

#include "iommu/device.h"
#include "iommu/mig_fsm.h"

#include <fmt/format.h>

#include <cstdint>
#include <span>
#include <vector>

namespace uvio::emu::testing {

inline Status mig_walk(iommu::Device& dev, iommu::MigState target) {
  auto caps = dev.migration_caps();
  if (!caps) return caps.status();
  if (!caps->supported) return Status::error(ENOTSUP, fmt::format("{}: no migration v2", dev.name()));
  auto cur = dev.mig_state();
  if (!cur) return cur.status();
  auto path = iommu::mig_path(*cur, target, iommu::MigFeatures::from_flags(caps->flags));
  if (path.empty() && *cur != target)
    return Status::error(EINVAL, fmt::format("{}: no path from {} to {}", dev.name(), iommu::mig_state_name(*cur),
                                             iommu::mig_state_name(target)));
  for (iommu::MigState s : path) UVIO_TRY(dev.set_mig_state(s));
  return Status::ok();
}

inline Result<std::vector<uint8_t>> mig_read_all(iommu::Device& dev) {
  std::vector<uint8_t> out;
  uint8_t buf[4096];
  for (;;) {
    auto n = dev.mig_read(buf, sizeof(buf));
    if (!n) return n.status();
    if (*n == 0) return out;
    out.insert(out.end(), buf, buf + *n);
  }
}

inline Status mig_write_all(iommu::Device& dev, std::span<const uint8_t> data) {
  constexpr size_t kChunk = 4096;
  for (size_t at = 0; at < data.size(); at += kChunk)
    UVIO_TRY(dev.mig_write(data.data() + at, std::min(kChunk, data.size() - at)));
  return Status::ok();
}

// Source device RUNNING -> STOP_COPY, its data read, then STOP; destination device
// RUNNING -> RESUMING, the data written, then STOP (the load happens on that arc).
inline Status mig_move_device_state(iommu::Device& from, iommu::Device& to) {
  UVIO_TRY(mig_walk(from, iommu::MigState::StopCopy));
  auto data = mig_read_all(from);
  if (!data) return data.status();
  UVIO_TRY(mig_walk(from, iommu::MigState::Stop));
  UVIO_TRY(mig_walk(to, iommu::MigState::Resuming));
  UVIO_TRY(mig_write_all(to, *data));
  return mig_walk(to, iommu::MigState::Stop);
}

}  // namespace uvio::emu::testing
