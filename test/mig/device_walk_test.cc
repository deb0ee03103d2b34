// Devices through the VFIO migration v2 states along the shared FSM's paths, and the
// reasons a device cannot migrate.
#include "mig/device_walk.h"

#include <gtest/gtest.h>

#include <vector>

namespace uvio::mig {
namespace {

using iommu::MigState;

class FakeDomain final : public iommu::DmaDomain {
 public:
  std::string_view name() const override { return "fake"; }
  Status map(uint64_t, void*, uint64_t, int, uint64_t) override { return Status::ok(); }
  Status unmap(uint64_t, uint64_t) override { return Status::ok(); }
  std::vector<iommu::IovaRange> iova_ranges() const override { return {}; }
  uint64_t page_size_mask() const override { return 4096; }
  iommu::DirtyTracker* dirty_tracker() override { return tracker; }
  uint64_t map_calls() const override { return 0; }
  uint64_t unmap_calls() const override { return 0; }
  iommu::DirtyTracker* tracker = nullptr;
};

class FakeTracker final : public iommu::DirtyTracker {
 public:
  std::string_view name() const override { return "fake tracker"; }
  Status start(std::span<const iommu::IovaRange>, uint64_t) override { return Status::ok(); }
  Status read_and_clear(uint64_t, uint64_t, uint64_t, std::span<uint64_t>) override { return Status::ok(); }
  Status stop() override { return Status::ok(); }
};

// Records every arc; refuses the arc into `refuse` once.
class FakeDevice final : public iommu::Device {
 public:
  std::string_view backend() const override { return "fake"; }
  std::string_view backend_reason() const override { return "test"; }
  std::string_view name() const override { return "fake0"; }
  const iommu::DeviceInfo& info() const override { return info_; }
  iommu::DmaDomain& domain() override { return domain_; }
  Result<iommu::RegionInfo> region_info(uint32_t) override { return Status::error(ENOTSUP, "no"); }
  Status region_read(uint32_t, uint64_t, void*, size_t) override { return Status::error(ENOTSUP, "no"); }
  Status region_write(uint32_t, uint64_t, const void*, size_t) override { return Status::error(ENOTSUP, "no"); }
  Result<void*> region_map(uint32_t, uint64_t, uint64_t) override { return Status::error(ENOTSUP, "no"); }
  Status reset() override { return Status::ok(); }
  Result<iommu::IrqInfo> irq_info(uint32_t) override { return Status::error(ENOTSUP, "no"); }
  Status set_irq_eventfds(uint32_t, uint32_t, std::span<const int>) override { return Status::ok(); }
  Status disable_irqs(uint32_t) override { return Status::ok(); }
  Status feature(uint32_t, uint32_t, std::span<uint8_t>) override { return Status::error(ENOTSUP, "no"); }
  Result<iommu::MigrationCaps> migration_caps() override { return caps; }
  Result<MigState> mig_state() override { return state; }
  Status set_mig_state(MigState next) override {
    if (!iommu::mig_is_arc(state, next, iommu::MigFeatures::from_flags(caps.flags)))
      return Status::error(EINVAL, "not one arc");
    if (next == refuse) {
      refuse = MigState::Error;
      return Status::error(EIO, "refused");
    }
    arcs.push_back(next);
    state = next;
    return Status::ok();
  }
  Result<size_t> mig_read(void* buf, size_t len) override {
    size_t n = std::min(len, data.size() - read_pos);
    std::memcpy(buf, data.data() + read_pos, n);
    read_pos += n;
    return n;
  }
  Status mig_write(const void*, size_t) override { return Status::ok(); }
  Result<uint64_t> mig_data_size() override { return data.size(); }
  Result<iommu::PrecopyInfo> precopy_info() override { return Status::error(ENOTSUP, "no"); }
  iommu::DirtyTracker* dma_logging() override { return logging; }

  iommu::MigrationCaps caps{true, 1};  // STOP_COPY
  MigState state = MigState::Running;
  MigState refuse = MigState::Error;
  std::vector<MigState> arcs;
  std::vector<uint8_t> data;
  size_t read_pos = 0;
  iommu::DirtyTracker* logging = nullptr;
  FakeDomain domain_;

 private:
  iommu::DeviceInfo info_;
};

RuntimeDevice runtime_device(FakeDevice& d) {
  RuntimeDevice rd;
  rd.name = "emu_net0";
  rd.vendor_id = 0x1af4;
  rd.device_id = 0x1041;
  rd.device = &d;
  return rd;
}

TEST(DeviceWalk, StopCopyAndBackFollowTheSharedPaths) {
  FakeDevice d;
  auto f = iommu::MigFeatures::from_flags(d.caps.flags);
  ASSERT_TRUE(walk_device(d, f, MigState::StopCopy));
  EXPECT_EQ(d.arcs, (std::vector<MigState>{MigState::Stop, MigState::StopCopy}));
  d.arcs.clear();
  ASSERT_TRUE(walk_device(d, f, MigState::Running));
  EXPECT_EQ(d.arcs, (std::vector<MigState>{MigState::Stop, MigState::Running}));
  d.arcs.clear();
  ASSERT_TRUE(walk_device(d, f, MigState::Running));  // already there: no arc
  EXPECT_TRUE(d.arcs.empty());
}

TEST(DeviceWalk, PreCopyWhenOffered) {
  FakeDevice d;
  d.caps.flags = 1 | 4;  // STOP_COPY | PRE_COPY
  auto f = iommu::MigFeatures::from_flags(d.caps.flags);
  ASSERT_TRUE(walk_device(d, f, MigState::PreCopy));
  ASSERT_TRUE(walk_device(d, f, MigState::StopCopy));
  EXPECT_EQ(d.arcs, (std::vector<MigState>{MigState::PreCopy, MigState::StopCopy}));
}

TEST(DeviceWalk, ResumingThenRunning) {
  FakeDevice d;
  auto f = iommu::MigFeatures::from_flags(d.caps.flags);
  ASSERT_TRUE(walk_device(d, f, MigState::Resuming));
  ASSERT_TRUE(walk_device(d, f, MigState::Stop));
  ASSERT_TRUE(walk_device(d, f, MigState::Running));
  EXPECT_EQ(d.arcs, (std::vector<MigState>{MigState::Stop, MigState::Resuming, MigState::Stop, MigState::Running}));
}

TEST(DeviceWalk, FailedArcIsNamedAndLeavesTheDeviceWhereItStopped) {
  FakeDevice d;
  d.refuse = MigState::StopCopy;
  auto f = iommu::MigFeatures::from_flags(d.caps.flags);
  Status st = walk_device(d, f, MigState::StopCopy);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("STOP -> STOP_COPY"), std::string::npos) << st.message();
  EXPECT_EQ(d.state, MigState::Stop);
  ASSERT_TRUE(walk_device(d, f, MigState::Running));
  EXPECT_EQ(d.state, MigState::Running);
}

TEST(DeviceWalk, ReadsDataUntilTheEnd) {
  FakeDevice d;
  d.data.assign(10000, 7);
  std::vector<uint8_t> buf, got;
  size_t chunks = 0;
  ASSERT_TRUE(read_device_data(d, 4096, buf, [&](std::span<const uint8_t> c) {
    chunks++;
    got.insert(got.end(), c.begin(), c.end());
    return Status::ok();
  }));
  EXPECT_EQ(chunks, 3u);
  EXPECT_EQ(got, d.data);
}

TEST(DeviceProbe, NamesWhatIsMissing) {
  FakeDevice d;
  FakeTracker t;
  d.caps.supported = false;
  auto info = probe_device(runtime_device(d));
  EXPECT_EQ(info.why_not, "device emu_net0 (1af4:1041) cannot migrate: no VFIO migration support");

  d.caps.supported = true;
  info = probe_device(runtime_device(d));
  EXPECT_NE(info.why_not.find("no dirty page tracking for its DMA"), std::string::npos) << info.why_not;

  d.domain_.tracker = &t;  // the IOMMU's tracker will do
  info = probe_device(runtime_device(d));
  EXPECT_TRUE(info.why_not.empty()) << info.why_not;
  EXPECT_EQ(info.tracker, &t);

  FakeTracker own;
  d.logging = &own;  // the device's own logging is preferred
  info = probe_device(runtime_device(d));
  EXPECT_EQ(info.tracker, &own);
  EXPECT_FALSE(info.pre_copy);
}

}  // namespace
}  // namespace uvio::mig
