#include "iommu/mig_fsm.h"

#include <array>
#include <cstdint>

namespace uvio::iommu {

namespace {

constexpr int kStates = 8;

bool saving(MigState s) {
  return s == MigState::PreCopy || s == MigState::PreCopyP2P || s == MigState::StopCopy;
}

int idx(MigState s) { return static_cast<int>(s); }

}  // namespace

MigFeatures MigFeatures::from_flags(uint64_t flags) {
  MigFeatures f;
  f.p2p = flags & (1u << 1);       // VFIO_MIGRATION_P2P
  f.pre_copy = flags & (1u << 2);  // VFIO_MIGRATION_PRE_COPY
  return f;
}

std::string_view mig_state_name(MigState s) {
  switch (s) {
    case MigState::Error: return "ERROR";
    case MigState::Stop: return "STOP";
    case MigState::Running: return "RUNNING";
    case MigState::StopCopy: return "STOP_COPY";
    case MigState::Resuming: return "RESUMING";
    case MigState::RunningP2P: return "RUNNING_P2P";
    case MigState::PreCopy: return "PRE_COPY";
    case MigState::PreCopyP2P: return "PRE_COPY_P2P";
  }
  return "INVALID";
}

bool mig_state_from_u32(uint32_t value, MigState* out) {
  if (value >= kStates) return false;
  *out = static_cast<MigState>(value);
  return true;
}

bool mig_state_supported(MigState s, MigFeatures f) {
  switch (s) {
    case MigState::Error:
    case MigState::Stop:
    case MigState::Running:
    case MigState::StopCopy:
    case MigState::Resuming: return true;
    case MigState::RunningP2P: return f.p2p;
    case MigState::PreCopy: return f.pre_copy;
    case MigState::PreCopyP2P: return f.p2p && f.pre_copy;
  }
  return false;
}

// The arcs of linux/vfio.h. With P2P the device stops and starts through RUNNING_P2P
// (and leaves PRE_COPY through PRE_COPY_P2P); without it those arcs collapse into the
// direct ones RUNNING <-> STOP and PRE_COPY -> STOP_COPY.
bool mig_is_arc(MigState cur, MigState next, MigFeatures f) {
  if (!mig_state_supported(cur, f) || !mig_state_supported(next, f)) return false;
  if (cur == MigState::Error || next == MigState::Error || cur == next) return false;
  using S = MigState;
  switch (cur) {
    case S::Stop:
      return next == S::StopCopy || next == S::Resuming || next == (f.p2p ? S::RunningP2P : S::Running);
    case S::StopCopy:
    case S::Resuming:
      return next == S::Stop;
    case S::Running:
      return next == S::PreCopy || next == (f.p2p ? S::RunningP2P : S::Stop);
    case S::RunningP2P:
      return next == S::Running || next == S::Stop || next == S::PreCopyP2P;
    case S::PreCopy:
      return next == S::Running || next == (f.p2p ? S::PreCopyP2P : S::StopCopy);
    case S::PreCopyP2P:
      return next == S::PreCopy || next == S::RunningP2P || next == S::StopCopy;
    case S::Error:
      return false;
  }
  return false;
}

std::vector<MigState> mig_path(MigState cur, MigState target, MigFeatures f) {
  if (cur == target || cur == MigState::Error || target == MigState::Error) return {};
  if (!mig_state_supported(cur, f) || !mig_state_supported(target, f)) return {};
  // Breadth-first search from cur. Between two saving states the path stays inside the
  // saving group (one data session moves on: PRE_COPY -> PRE_COPY_P2P -> STOP_COPY);
  // otherwise no interior state is a saving one, so a session is never begun or ended
  // by accident — which also makes STOP_COPY -> PRE_COPY impossible, as in the kernel.
  const bool within_group = saving(cur) && saving(target);
  auto may_pass = [&](int s) { return within_group ? saving(static_cast<MigState>(s))
                                                   : !saving(static_cast<MigState>(s)); };
  std::array<int, kStates> prev;
  prev.fill(-1);
  prev[idx(cur)] = idx(cur);
  std::array<int, kStates> queue{};
  int head = 0, tail = 0;
  queue[tail++] = idx(cur);
  while (head < tail) {
    int s = queue[head++];
    if (s == idx(target)) break;
    if (s != idx(cur) && !may_pass(s)) continue;
    for (int n = 0; n < kStates; ++n) {
      if (prev[n] != -1) continue;
      if (within_group && !saving(static_cast<MigState>(n))) continue;
      if (!mig_is_arc(static_cast<MigState>(s), static_cast<MigState>(n), f)) continue;
      prev[n] = s;
      queue[tail++] = n;
    }
  }
  if (prev[idx(target)] == -1) return {};
  std::vector<MigState> path;
  for (int s = idx(target); s != idx(cur); s = prev[s]) path.insert(path.begin(), static_cast<MigState>(s));
  return path;
}

MigState mig_next_state(MigState cur, MigState target, MigFeatures f) {
  if (cur == target && cur != MigState::Error && mig_state_supported(cur, f)) return cur;
  auto path = mig_path(cur, target, f);
  return path.empty() ? MigState::Error : path.front();
}

}  // namespace uvio::iommu
