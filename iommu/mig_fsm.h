// The VFIO migration v2 state machine (linux/vfio.h, enum vfio_device_mig_state): which
// arcs a device implements, and one stepping function that finds the next state on the
// shortest legal path, as the kernel's vfio_mig_get_next_state does. mig/ walks devices
// with it; emu/ servers execute client requests with it.
#pragma once

#include "iommu/device.h"

#include <string_view>
#include <vector>

namespace uvio::iommu {

struct MigFeatures {
  bool p2p = false;       // VFIO_MIGRATION_P2P: RUNNING_P2P (and PRE_COPY_P2P)
  bool pre_copy = false;  // VFIO_MIGRATION_PRE_COPY: PRE_COPY (and PRE_COPY_P2P)
  static MigFeatures from_flags(uint64_t vfio_migration_flags);
};

std::string_view mig_state_name(MigState s);
// False for values outside the enum.
bool mig_state_from_u32(uint32_t value, MigState* out);

// Whether `s` exists on a device with `features` (ERROR always does).
bool mig_state_supported(MigState s, MigFeatures features);
// Whether cur -> next is one arc a device with `features` implements.
bool mig_is_arc(MigState cur, MigState next, MigFeatures features);

// The next state to enter on the way from `cur` to `target`: `target` itself when it is
// one arc away, `cur` when they are equal, MigState::Error when there is no legal path
// (ERROR as either end, or a state the device lacks). Paths are the shortest that begin
// or end a saving session (PRE_COPY, PRE_COPY_P2P, STOP_COPY) only at their ends: from
// one saving state to another the path stays in the saving group, else no interior state
// is a saving one.
MigState mig_next_state(MigState cur, MigState target, MigFeatures features);

// Every state after `cur` up to and including `target`; empty when cur == target or when
// there is no path.
std::vector<MigState> mig_path(MigState cur, MigState target, MigFeatures features);

}  // namespace uvio::iommu
