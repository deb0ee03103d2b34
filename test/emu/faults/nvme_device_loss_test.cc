// The device server dies mid-I/O: uvio-emud, a separate process serving an NVMe
// controller backed by a file, is killed with SIGKILL while writes are in flight. The
// driver must notice the device is gone, end every outstanding command exactly once
// with an error, keep the process alive; a new server on the same socket and file must
// then serve a new controller on which every write acknowledged before the kill reads
// back as written.
#include <uvio/mem.h>
#include <uvio/nvme.h>

#include "iommu/device.h"
#include "iommu/dma_space.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace uvio::nvme {
namespace {

using Clock = std::chrono::steady_clock;
// Upper bound for anything to happen: far above real delays, only hit on failure.
constexpr auto kPatience = std::chrono::seconds(20);
constexpr uint32_t kBlock = 512;
constexpr uint32_t kBlocksPerWrite = 8;  // 4 KiB writes
constexpr uint64_t kNamespaceBytes = 8u << 20;

// A scratch directory removed with the test.
struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/uvio-devloss-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data())) path = buf.data();
  }
  ~TempDir() {
    if (path.empty()) return;
    for (const char* f : {"/nvme.sock", "/ns1.img"}) ::unlink((path + f).c_str());
    ::rmdir(path.c_str());
  }
};

// One uvio-emud process serving one NVMe controller.
class EmudProcess {
 public:
  EmudProcess(const std::string& socket, const std::string& backing_file) {
    const char* exe = std::getenv("UVIO_EMUD");
    if (!exe || !*exe) return;
    std::string spec = socket + ",file=" + backing_file + ",size=" + std::to_string(kNamespaceBytes) +
                       ",queues=2";
    std::vector<std::string> args = {exe, "--log-level", "err", "--nvme", spec};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, exe, nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  ~EmudProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      reap();
    }
  }
  bool started() const { return pid_ > 0; }
  // The exit status as waitpid gives it.
  int kill_now() {
    ::kill(pid_, SIGKILL);
    return reap();
  }

 private:
  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }
  pid_t pid_ = -1;
};

// Connects as soon as the server listens.
Result<std::unique_ptr<iommu::Device>> connect(const std::string& socket, iommu::DmaSpace& space) {
  auto deadline = Clock::now() + kPatience;
  for (;;) {
    auto d = iommu::open_device("vfio-user:" + socket, space, {});
    if (d || Clock::now() > deadline) return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void fill(std::byte* p, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; ++i) p[i] = std::byte((i * 37 + seed * 11 + (i >> 8)) & 0xff);
}

// One write of the test; `calls` counts its callbacks, which must end at exactly one.
struct Write {
  uint64_t lba = 0;
  int calls = 0;
  IoStatus status = 0;
  bool acknowledged() const { return calls == 1 && status == kStatusSuccess; }
};
void on_write(void* ctx, IoStatus s) {
  auto* w = static_cast<Write*>(ctx);
  ++w->calls;
  w->status = s;
}

TEST(NvmeDeviceLoss, ServerKilledMidIoFailsOutstandingOnceThenReconnects) {
  ASSERT_NE(std::getenv("UVIO_EMUD"), nullptr) << "the test needs UVIO_EMUD, the path of uvio-emud";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string socket = dir.path + "/nvme.sock";
  const std::string file = dir.path + "/ns1.img";
  int file_fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);  // size= grows it
  ASSERT_GE(file_fd, 0) << std::strerror(errno);
  ::close(file_fd);

  MemConfig cfg;
  cfg.total_bytes = 32u << 20;
  cfg.hugepages = false;
  cfg.file_prefix = "devloss";
  auto mem = Memory::create(cfg);
  ASSERT_TRUE(mem) << mem.status().describe();
  iommu::DmaSpace space(**mem);

  constexpr uint32_t kWrites = 512;  // 2 MiB over distinct LBAs
  constexpr size_t kBytes = size_t(kBlock) * kBlocksPerWrite;
  auto* data = static_cast<std::byte*>((*mem)->alloc(kWrites * kBytes, 4096));
  ASSERT_NE(data, nullptr);
  for (uint32_t i = 0; i < kWrites; ++i) fill(data + i * kBytes, kBytes, i + 1);
  std::vector<Write> writes(kWrites);
  for (uint32_t i = 0; i < kWrites; ++i) writes[i].lba = uint64_t(i) * kBlocksPerWrite;

  auto server = std::make_unique<EmudProcess>(socket, file);
  ASSERT_TRUE(server->started());
  auto dev = connect(socket, space);
  ASSERT_TRUE(dev) << dev.status().describe();
  ControllerOptions opts;
  opts.health_check_polls = 1;  // notice the loss at the next poll, not 4096 polls later
  auto ctrl = Controller::open(**dev, **mem, opts);
  ASSERT_TRUE(ctrl) << ctrl.status().describe();
  auto qp = (*ctrl)->create_queue_pair({.entries = 64});
  ASSERT_TRUE(qp) << qp.status().describe();
  QueuePair& q = **qp;

  // The first half, all completed: the controller works and the data is on the file.
  uint32_t next = 0;
  while (next < kWrites / 2 || q.outstanding()) {
    while (next < kWrites / 2) {
      int rc = q.submit_write(1, data + next * kBytes, writes[next].lba, kBlocksPerWrite, on_write, &writes[next]);
      if (rc == -EAGAIN) break;
      ASSERT_EQ(rc, 0);
      ++next;
    }
    q.poll();
  }
  for (uint32_t i = 0; i < next; ++i) ASSERT_TRUE(writes[i].acknowledged()) << "write " << i;

  // Then a full queue of writes handed to the device, and the server killed under them.
  uint32_t in_flight_at_kill = 0;
  while (next < kWrites && q.submit_write(1, data + next * kBytes, writes[next].lba, kBlocksPerWrite, on_write,
                                          &writes[next]) == 0) {
    ++next;
    ++in_flight_at_kill;
  }
  ASSERT_EQ(in_flight_at_kill, q.capacity());
  q.flush_submissions();
  int status = server->kill_now();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "uvio-emud ended before the kill: " << status;

  // The driver finds the device gone at its next health check, and ends every command
  // that was outstanding: those the device posted before it died succeed, the rest fail.
  auto deadline = Clock::now() + kPatience;
  while ((q.outstanding() || !(*ctrl)->failed()) && Clock::now() < deadline) q.poll();
  EXPECT_TRUE((*ctrl)->failed()) << "the controller still looks alive with its server dead";
  EXPECT_EQ(q.outstanding(), 0u);
  uint32_t acked_late = 0, failed = 0;
  for (uint32_t i = kWrites / 2; i < next; ++i) {
    EXPECT_EQ(writes[i].calls, 1) << "write " << i << " completed " << writes[i].calls << " times";
    if (writes[i].acknowledged()) ++acked_late;
    else {
      EXPECT_EQ(writes[i].status, kStatusAbortedByHost) << "write " << i;
      ++failed;
    }
  }
  EXPECT_EQ(acked_late + failed, in_flight_at_kill);
  // Which of the two each write became depends on how far the server got: not asserted.
  RecordProperty("in_flight_at_kill", static_cast<int>(in_flight_at_kill));
  RecordProperty("failed_by_the_driver", static_cast<int>(failed));
  std::printf("in flight at the kill: %u; acknowledged by the device before it died: %u; failed: %u\n",
              in_flight_at_kill, acked_late, failed);
  EXPECT_EQ(q.stats().submitted, q.stats().completed);
  EXPECT_EQ(q.stats().errors, failed);
  EXPECT_EQ(q.stats().unknown_completions, 0u);

  // The failed controller refuses new work with a clear error instead of hanging.
  Write refused;
  EXPECT_EQ(q.submit_write(1, data, 0, kBlocksPerWrite, on_write, &refused), -EIO);
  EXPECT_EQ(q.poll(), 0u);
  EXPECT_EQ(refused.calls, 0);
  auto more = (*ctrl)->create_queue_pair({.entries = 16});
  ASSERT_FALSE(more);
  EXPECT_EQ(more.status().code(), EIO);
  for (auto& w : writes) ASSERT_LE(w.calls, 1);

  // Closing a controller and a device whose server is gone returns, and lets go of the
  // runtime memory's DMA registration.
  ctrl->reset();
  dev->reset();

  // Reconnect: a new server on the same socket and file, a new device and controller.
  server = std::make_unique<EmudProcess>(socket, file);
  ASSERT_TRUE(server->started());
  auto dev2 = connect(socket, space);
  ASSERT_TRUE(dev2) << dev2.status().describe();
  auto ctrl2 = Controller::open(**dev2, **mem, opts);
  ASSERT_TRUE(ctrl2) << ctrl2.status().describe();
  auto qp2 = (*ctrl2)->create_queue_pair({.entries = 64});
  ASSERT_TRUE(qp2) << qp2.status().describe();
  auto* back = static_cast<std::byte*>((*mem)->alloc(kBytes, 4096));
  ASSERT_NE(back, nullptr);
  uint32_t checked = 0;
  for (uint32_t i = 0; i < next; ++i) {
    if (!writes[i].acknowledged()) continue;
    std::memset(back, 0, kBytes);
    Status s = sync_read(**qp2, 1, back, writes[i].lba, kBlocksPerWrite);
    ASSERT_TRUE(s) << "write " << i << ": " << s.describe();
    ASSERT_EQ(std::memcmp(back, data + i * kBytes, kBytes), 0) << "acknowledged write " << i << " was lost";
    ++checked;
  }
  EXPECT_GE(checked, kWrites / 2);
  // The new controller takes writes again.
  fill(data, kBytes, 999);
  ASSERT_TRUE(sync_write(**qp2, 1, data, 0, kBlocksPerWrite));
  ASSERT_TRUE(sync_read(**qp2, 1, back, 0, kBlocksPerWrite));
  EXPECT_EQ(std::memcmp(back, data, kBytes), 0);
  ctrl2->reset();
  dev2->reset();
  (*mem)->free(back);
  (*mem)->free(data);
}

}  // namespace
}  // namespace uvio::nvme
