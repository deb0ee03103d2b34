// The migration v2 stepping function: every (from, to) pair under every feature set.
#include "iommu/mig_fsm.h"

#include <gtest/gtest.h>

#include <functional>

namespace uvio::iommu {
namespace {

using S = MigState;
constexpr S kAll[] = {S::Error, S::Stop, S::Running, S::StopCopy, S::Resuming, S::RunningP2P, S::PreCopy, S::PreCopyP2P};

bool saving(S s) { return s == S::PreCopy || s == S::PreCopyP2P || s == S::StopCopy; }

// The shortest length by exhaustive search over simple paths, checking the rules
// independently of the function under test. -1 when there is none.
int brute_force_shortest(S from, S to, MigFeatures f) {
  int best = -1;
  std::vector<S> path{from};
  std::function<void()> dfs = [&] {
    S last = path.back();
    if (last == to && path.size() > 1) {
      bool ok = true;
      bool both = saving(from) && saving(to);
      for (size_t i = 1; i + 1 < path.size(); ++i) ok &= both ? saving(path[i]) : !saving(path[i]);
      if (ok && (best < 0 || static_cast<int>(path.size()) - 1 < best)) best = static_cast<int>(path.size()) - 1;
      return;
    }
    for (S n : kAll) {
      if (!mig_is_arc(last, n, f) || std::find(path.begin(), path.end(), n) != path.end()) continue;
      path.push_back(n);
      dfs();
      path.pop_back();
    }
  };
  dfs();
  return best;
}

class MigFsmAllPairs : public ::testing::TestWithParam<int> {};

TEST_P(MigFsmAllPairs, EveryPairReachesTargetByLegalArcsOrFailsCleanly) {
  MigFeatures f{.p2p = (GetParam() & 1) != 0, .pre_copy = (GetParam() & 2) != 0};
  for (S from : kAll) {
    for (S to : kAll) {
      SCOPED_TRACE(std::string(mig_state_name(from)) + " -> " + std::string(mig_state_name(to)));
      auto path = mig_path(from, to, f);
      S next = mig_next_state(from, to, f);
      bool usable = from != S::Error && to != S::Error && mig_state_supported(from, f) && mig_state_supported(to, f);
      if (!usable) {
        EXPECT_TRUE(path.empty());
        EXPECT_EQ(next, S::Error);
        continue;
      }
      if (from == to) {
        EXPECT_EQ(next, from);
        continue;
      }
      int shortest = brute_force_shortest(from, to, f);
      if (shortest < 0) {
        EXPECT_TRUE(path.empty());
        EXPECT_EQ(next, S::Error);
        continue;
      }
      ASSERT_EQ(static_cast<int>(path.size()), shortest);
      EXPECT_EQ(next, path.front());
      EXPECT_EQ(path.back(), to);
      S cur = from;
      for (S s : path) {
        EXPECT_TRUE(mig_is_arc(cur, s, f));
        EXPECT_TRUE(mig_state_supported(s, f));
        cur = s;
      }
      // Stepping one state at a time follows the same path.
      cur = from;
      for (S s : path) {
        cur = mig_next_state(cur, to, f);
        EXPECT_EQ(cur, s);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Features, MigFsmAllPairs, ::testing::Values(0, 1, 2, 3));

TEST(MigFsm, KernelCombinationPathsWithP2pAndPreCopy) {
  MigFeatures f{.p2p = true, .pre_copy = true};
  using V = std::vector<S>;
  EXPECT_EQ(mig_path(S::PreCopy, S::StopCopy, f), (V{S::PreCopyP2P, S::StopCopy}));
  EXPECT_EQ(mig_path(S::PreCopy, S::RunningP2P, f), (V{S::Running, S::RunningP2P}));
  EXPECT_EQ(mig_path(S::PreCopy, S::Resuming, f), (V{S::Running, S::RunningP2P, S::Stop, S::Resuming}));
  EXPECT_EQ(mig_path(S::PreCopyP2P, S::Running, f), (V{S::RunningP2P, S::Running}));
  EXPECT_EQ(mig_path(S::Resuming, S::PreCopyP2P, f), (V{S::Stop, S::RunningP2P, S::PreCopyP2P}));
  EXPECT_EQ(mig_path(S::Resuming, S::PreCopy, f), (V{S::Stop, S::RunningP2P, S::Running, S::PreCopy}));
  EXPECT_EQ(mig_path(S::Running, S::StopCopy, f), (V{S::RunningP2P, S::Stop, S::StopCopy}));
  EXPECT_EQ(mig_path(S::StopCopy, S::Running, f), (V{S::Stop, S::RunningP2P, S::Running}));
  // A saving session is not ended and begun again implicitly.
  EXPECT_EQ(mig_next_state(S::StopCopy, S::PreCopy, f), S::Error);
  EXPECT_EQ(mig_next_state(S::StopCopy, S::PreCopyP2P, f), S::Error);
}

TEST(MigFsm, WithoutOptionalFeatures) {
  MigFeatures f{};
  using V = std::vector<S>;
  EXPECT_EQ(mig_path(S::Running, S::Stop, f), (V{S::Stop}));
  EXPECT_EQ(mig_path(S::Running, S::Resuming, f), (V{S::Stop, S::Resuming}));
  EXPECT_EQ(mig_path(S::StopCopy, S::Resuming, f), (V{S::Stop, S::Resuming}));
  EXPECT_EQ(mig_next_state(S::Running, S::PreCopy, f), S::Error);
  EXPECT_EQ(mig_next_state(S::Running, S::RunningP2P, f), S::Error);
  MigFeatures pre{.pre_copy = true};
  EXPECT_EQ(mig_path(S::PreCopy, S::StopCopy, pre), (V{S::StopCopy}));
  EXPECT_EQ(mig_path(S::PreCopy, S::Stop, pre), (V{S::Running, S::Stop}));
  EXPECT_EQ(mig_path(S::Running, S::StopCopy, pre), (V{S::Stop, S::StopCopy}));
}

TEST(MigFsm, NamesAndConversion) {
  S s;
  EXPECT_TRUE(mig_state_from_u32(6, &s));
  EXPECT_EQ(s, S::PreCopy);
  EXPECT_FALSE(mig_state_from_u32(8, &s));
  EXPECT_EQ(mig_state_name(S::StopCopy), "STOP_COPY");
  EXPECT_EQ(MigFeatures::from_flags(1 | 2 | 4).p2p, true);
  EXPECT_EQ(MigFeatures::from_flags(1).pre_copy, false);
}

}  // namespace
}  // namespace uvio::iommu
