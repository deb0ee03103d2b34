// A device migrating from one uvio-emud process to another: data written to an NVMe
// memory namespace served by the first process reads back from the second after its
// v2 state was copied across, through the NVMe driver restored on the second. A damaged
// state is refused by the receiving process, which then serves nothing of it.
//
// UVIO_EMUD names the uvio-emud binary (set by meson).
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "test/emu/mig_walk.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace uvio {
namespace {

using emu::testing::mig_read_all;
using emu::testing::mig_walk;
using emu::testing::mig_write_all;
using iommu::MigState;

// One uvio-emud serving one NVMe controller on a socket in a private directory.
class EmudProcess {
 public:
  explicit EmudProcess(const std::string& socket) : socket_(socket) {
    const char* bin = std::getenv("UVIO_EMUD");
    if (!bin) return;
    std::string arg = socket + ",size=4M,serial=MIGRATE1";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(bin, bin, "--nvme", arg.c_str(), "--log-level", "error", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Wait for the socket; bounded, it appears within milliseconds.
    for (int i = 0; i < 1000 && !ready(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~EmudProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  bool ready() const {
    struct stat st{};
    return pid_ > 0 && ::stat(socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
  }

 private:
  std::string socket_;
  pid_t pid_ = -1;
};

class EmudMigration : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::getenv("UVIO_EMUD")) GTEST_SKIP() << "UVIO_EMUD is not set (run through meson test)";
    char tmpl[] = "/tmp/uvio-emud-mig-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    MemConfig cfg;
    cfg.total_bytes = 16u << 20;
    cfg.hugepages = false;
    auto m = Memory::create(cfg);
    ASSERT_TRUE(m) << m.status().describe();
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
  }
  void TearDown() override {
    ctrls.clear();
    devs.clear();
    procs.clear();
    if (!dir.empty()) {
      for (const char* name : {"/a.sock", "/b.sock", "/c.sock"}) ::unlink((dir + name).c_str());
      ::rmdir(dir.c_str());
    }
  }
  iommu::Device* start(const char* name) {
    std::string path = dir + name;
    procs.push_back(std::make_unique<EmudProcess>(path));
    EXPECT_TRUE(procs.back()->ready()) << "uvio-emud did not create " << path;
    auto d = iommu::open_vfio_user(path, *space, {});
    EXPECT_TRUE(d) << d.status().describe();
    if (!d) return nullptr;
    devs.push_back(std::move(*d));
    return devs.back().get();
  }

  std::string dir;
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  std::vector<std::unique_ptr<EmudProcess>> procs;
  std::vector<std::unique_ptr<iommu::Device>> devs;
  std::vector<std::unique_ptr<nvme::Controller>> ctrls;
};

void fill(std::byte* p, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; i++) p[i] = std::byte((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}

TEST_F(EmudMigration, NamespaceDataMovesToAnotherProcess) {
  iommu::Device* a = start("/a.sock");
  ASSERT_NE(a, nullptr);
  auto ctrl = nvme::Controller::open(*a, *mem);
  ASSERT_TRUE(ctrl) << ctrl.status().describe();
  auto q = (*ctrl)->create_queue_pair({.entries = 32});
  ASSERT_TRUE(q);
  auto* buf = static_cast<std::byte*>(mem->alloc(64 << 10, 4096));
  ASSERT_NE(buf, nullptr);
  constexpr uint64_t kLbas[] = {0, 128, 4000, 8000};
  for (uint64_t lba : kLbas) {
    fill(buf, 64 << 10, static_cast<uint32_t>(lba));
    ASSERT_TRUE(nvme::sync_write(**q, 1, buf, lba, 128));
  }
  ASSERT_TRUE((*ctrl)->quiesce(5000));
  std::vector<uint8_t> driver_state;
  ASSERT_TRUE((*ctrl)->save_state(driver_state));

  // The second process; its device takes the first one's state.
  iommu::Device* b = start("/b.sock");
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(mig_walk(*a, MigState::StopCopy));
  auto data = mig_read_all(*a);
  ASSERT_TRUE(data) << data.status().describe();
  ASSERT_GT(data->size(), 4u * (64 << 10)) << "the namespace's written pages travel";
  ASSERT_TRUE(mig_walk(*a, MigState::Stop));
  ASSERT_TRUE(mig_walk(*b, MigState::Resuming));
  ASSERT_TRUE(mig_write_all(*b, *data));
  Status loaded = mig_walk(*b, MigState::Stop);
  ASSERT_TRUE(loaded) << loaded.describe();
  (*ctrl)->release_after_migration();
  ctrls.push_back(std::move(*ctrl));
  auto restored = nvme::Controller::restore(*b, *mem, driver_state);
  ASSERT_TRUE(restored) << restored.status().describe();
  ASSERT_TRUE(mig_walk(*b, MigState::Running));
  EXPECT_EQ((*restored)->info().serial, "MIGRATE1");
  nvme::QueuePair* qb = (*restored)->queue_pairs().at(0);
  auto* expect = static_cast<std::byte*>(mem->alloc(64 << 10, 4096));
  for (uint64_t lba : kLbas) {
    std::memset(buf, 0, 64 << 10);
    Status s = nvme::sync_read(*qb, 1, buf, lba, 128);
    ASSERT_TRUE(s) << s.describe();
    fill(expect, 64 << 10, static_cast<uint32_t>(lba));
    EXPECT_EQ(std::memcmp(buf, expect, 64 << 10), 0) << "LBA " << lba << " differs in the second process";
  }
  ctrls.push_back(std::move(*restored));
}

TEST_F(EmudMigration, DamagedStateIsRefusedAndNothingOfItIsServed) {
  iommu::Device* a = start("/a.sock");
  ASSERT_NE(a, nullptr);
  auto ctrl = nvme::Controller::open(*a, *mem);
  ASSERT_TRUE(ctrl) << ctrl.status().describe();
  auto q = (*ctrl)->create_queue_pair({.entries = 32});
  ASSERT_TRUE(q);
  auto* buf = static_cast<std::byte*>(mem->alloc(64 << 10, 4096));
  fill(buf, 64 << 10, 5);
  ASSERT_TRUE(nvme::sync_write(**q, 1, buf, 256, 128));
  ASSERT_TRUE(mig_walk(*a, MigState::StopCopy));
  auto data = mig_read_all(*a);
  ASSERT_TRUE(data) << data.status().describe();
  ASSERT_TRUE(mig_walk(*a, MigState::Running));  // the source goes on, as after a failed migration

  iommu::Device* c = start("/c.sock");
  ASSERT_NE(c, nullptr);
  std::vector<uint8_t> bad = *data;
  bad[bad.size() / 2] ^= 0x40;  // inside the namespace data
  ASSERT_TRUE(mig_walk(*c, MigState::Resuming));
  ASSERT_TRUE(mig_write_all(*c, bad));
  Status s = mig_walk(*c, MigState::Stop);
  EXPECT_FALSE(s) << "a damaged state was accepted";
  auto state = c->mig_state();
  ASSERT_TRUE(state);
  EXPECT_TRUE(*state == MigState::Resuming || *state == MigState::Error) << iommu::mig_state_name(*state);

  // The refusing device never reached a running state; the source still serves its data.
  std::memset(buf, 0, 64 << 10);
  ASSERT_TRUE(nvme::sync_read(**q, 1, buf, 256, 128));
  auto* expect = static_cast<std::byte*>(mem->alloc(64 << 10, 4096));
  fill(expect, 64 << 10, 5);
  EXPECT_EQ(std::memcmp(buf, expect, 64 << 10), 0);
  ctrls.push_back(std::move(*ctrl));
}

}  // namespace
}  // namespace uvio
