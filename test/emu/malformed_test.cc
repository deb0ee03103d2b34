// Malformed messages on both sides of the vfio-user connection: raw bytes written to the
// server, and a scripted fake server feeding the client. Each must end in a clear error
// (and, where the protocol is broken, a closed connection), never in a crash.
#include <uvio/mem.h>

#include "emu/server.h"
#include "iommu/abi/vfio_user.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "iommu/vfio_user_socket.h"
#include "test/emu/test_device.h"

#include <gtest/gtest.h>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

namespace uvio::emu {
namespace {

MemConfig small_memory() {
  MemConfig cfg;
  cfg.total_bytes = 4u << 20;
  cfg.hugepages = false;
  return cfg;
}

namespace vu = iommu::vfio_user;
using testing::TestDevice;

template <class T>
std::vector<uint8_t> bytes(const T& v) {
  auto p = reinterpret_cast<const uint8_t*>(&v);
  return {p, p + sizeof(T)};
}

void send_raw(int fd, const void* p, size_t n) { ASSERT_EQ(::send(fd, p, n, MSG_NOSIGNAL), static_cast<ssize_t>(n)); }

// A raw client: sends one command and returns the reply.
Result<vu::Message> call(int fd, uint16_t cmd, const std::vector<uint8_t>& payload, std::span<const int> fds = {},
                         uint16_t id = 7) {
  vu::Header h{id, cmd, 0, vu::kFlagTypeCommand, 0};
  UVIO_TRY(vu::send_message(fd, h, payload, fds));
  return vu::recv_message(fd);
}

void negotiate(int fd) {
  vu::Version v{0, 1};
  auto r = call(fd, vu::kVersion, bytes(v));
  ASSERT_TRUE(r) << r.status().describe();
  ASSERT_FALSE(r->header.flags & vu::kFlagError);
}

bool is_error(const Result<vu::Message>& r, uint32_t err) {
  return r && (r->header.flags & vu::kFlagError) && r->header.error == err;
}

// The server closes our end: the next receive sees the end of the stream.
bool closed_by_server(int fd) {
  uint8_t b;
  for (;;) {
    ssize_t n = ::recv(fd, &b, 1, 0);
    if (n == 0 || (n < 0 && errno != EINTR)) return true;
    if (n > 0) continue;  // a reply that was in flight
  }
}

struct ServerFixture : ::testing::Test {
  std::unique_ptr<Server> server;
  void SetUp() override {
    auto s = Server::create(std::make_unique<TestDevice>());
    ASSERT_TRUE(s);
    server = std::move(*s);
  }
  int connect() {
    auto fd = server->connect();
    EXPECT_TRUE(fd);
    return *fd;
  }
  void wait_served(uint64_t n) {
    for (int i = 0; i < 10000 && server->clients_served() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_GE(server->clients_served(), n);
  }
  // After any abuse, a well-behaved client still gets a working device.
  void expect_next_client_served() {
    int fd = connect();
    negotiate(fd);
    vu::RegionAccess a{TestDevice::kRegId, 0, 8};
    auto r = call(fd, vu::kRegionRead, bytes(a));
    ASSERT_TRUE(r) << r.status().describe();
    ASSERT_EQ(r->payload.size(), 24u);
    uint64_t id;
    std::memcpy(&id, r->payload.data() + 16, 8);
    EXPECT_EQ(id, TestDevice::kIdValue);
    ::close(fd);
  }
};

TEST_F(ServerFixture, ShortHeaderDropsTheClient) {
  int fd = connect();
  uint8_t half[8] = {1, 0, 1, 0};
  send_raw(fd, half, sizeof(half));
  ::shutdown(fd, SHUT_WR);
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  wait_served(1);
  expect_next_client_served();
}

TEST_F(ServerFixture, SizeLargerThanTheMessageDropsTheClient) {
  int fd = connect();
  vu::Header h{1, vu::kVersion, 100, 0, 0};
  send_raw(fd, &h, sizeof(h));
  vu::Version v{0, 1};
  send_raw(fd, &v, sizeof(v));
  ::shutdown(fd, SHUT_WR);
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  wait_served(1);
  expect_next_client_served();
}

TEST_F(ServerFixture, HugeOrTinySizeIsRefusedWithoutReading) {
  for (uint32_t size : {0xfffffff0u, 8u}) {
    int fd = connect();
    vu::Header h{1, vu::kVersion, size, 0, 0};
    send_raw(fd, &h, sizeof(h));
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  wait_served(2);
  expect_next_client_served();
}

TEST_F(ServerFixture, CommandBeforeVersionIsAnErrorAndDisconnects) {
  int fd = connect();
  vu::DeviceInfo di{16, 0, 0, 0};
  auto r = call(fd, vu::kDeviceGetInfo, bytes(di));
  EXPECT_TRUE(is_error(r, EINVAL));
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  wait_served(1);
  expect_next_client_served();
}

TEST_F(ServerFixture, BadCommandAndBadArgszAreRefusedAndServiceContinues) {
  int fd = connect();
  negotiate(fd);
  EXPECT_TRUE(is_error(call(fd, 99, {}), ENOSYS));
  EXPECT_TRUE(is_error(call(fd, vu::kDmaRead, {}), ENOSYS));  // a server-to-client command
  vu::RegionInfo ri{8, 0, 0, 0, 0, 0};
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceGetRegionInfo, bytes(ri)), EINVAL));
  vu::IrqSet is{20, vu::kIrqSetDataNone | vu::kIrqSetDataBool | vu::kIrqSetActionTrigger, 2, 0, 1};
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceSetIrqs, bytes(is)), EINVAL));
  vu::IrqSet too_many{20, vu::kIrqSetDataNone | vu::kIrqSetActionTrigger, 2, 1, 0xffffffff};
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceSetIrqs, bytes(too_many)), EINVAL));
  vu::RegionAccess outside{TestDevice::kBarSize - 4, 0, 8};
  EXPECT_TRUE(is_error(call(fd, vu::kRegionRead, bytes(outside)), EINVAL));
  vu::RegionAccess wrap{~0ull - 2, 7, 8};
  EXPECT_TRUE(is_error(call(fd, vu::kRegionRead, bytes(wrap)), EINVAL));
  vu::DeviceFeature feat{8, vu::kFeatureGet | vu::kFeatureSet | 2};
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceFeature, bytes(feat)), EINVAL));
  vu::DeviceFeature report{8, vu::kFeatureGet | vu::kFeatureDmaLoggingReport};
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceFeature, bytes(report)), EINVAL));
  // Still served on the same connection.
  vu::DeviceInfo di{16, 0, 0, 0};
  auto r = call(fd, vu::kDeviceGetInfo, bytes(di));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->header.flags & vu::kFlagError);
  ASSERT_EQ(r->payload.size(), 16u);
  ::close(fd);
}

TEST_F(ServerFixture, RegionWriteWithMismatchedCountDisconnects) {
  int fd = connect();
  negotiate(fd);
  vu::RegionAccess a{TestDevice::kRegScratch, 0, 8};
  auto p = bytes(a);
  p.resize(p.size() + 4);  // 4 data bytes where 8 were announced
  EXPECT_TRUE(is_error(call(fd, vu::kRegionWrite, p), EINVAL));
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  wait_served(1);
  expect_next_client_served();
}

TEST_F(ServerFixture, TooManyFdsDropTheClient) {
  int fd = connect();
  negotiate(fd);
  // 20 fds: more than the 16 the server announced.
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) fds.push_back(eventfd(0, EFD_CLOEXEC));
  vu::IrqSet is{20, vu::kIrqSetDataEventfd | vu::kIrqSetActionTrigger, 2, 0, 2};
  vu::Header h{3, vu::kDeviceSetIrqs, sizeof(h) + sizeof(is), 0, 0};
  char buf[sizeof(h) + sizeof(is)];
  std::memcpy(buf, &h, sizeof(h));
  std::memcpy(buf + sizeof(h), &is, sizeof(is));
  iovec iov{buf, sizeof(buf)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 20)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * 20);
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * 20);
  ASSERT_EQ(::sendmsg(fd, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof(buf)));
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  for (int f : fds) ::close(f);
  wait_served(1);
  expect_next_client_served();
}

TEST_F(ServerFixture, FdsOnACommandThatTakesNoneDisconnect) {
  int fd = connect();
  negotiate(fd);
  int e = eventfd(0, EFD_CLOEXEC);
  vu::DeviceInfo di{16, 0, 0, 0};
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceGetInfo, bytes(di), {&e, 1}), EINVAL));
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  ::close(e);
  wait_served(1);
}

TEST_F(ServerFixture, OverlappingDmaMapIsRefusedAndUnmapMustMatch) {
  int fd = connect();
  negotiate(fd);
  int mem = memfd_create("malformed-test", MFD_CLOEXEC);
  ASSERT_EQ(ftruncate(mem, 0x10000), 0);
  vu::DmaMap m{32, vu::kDmaMapRead | vu::kDmaMapWrite, 0, 0x100000, 0x8000};
  auto r = call(fd, vu::kDmaMap, bytes(m), {&mem, 1});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->header.flags & vu::kFlagError);
  vu::DmaMap overlap{32, vu::kDmaMapRead, 0, 0x104000, 0x8000};
  EXPECT_TRUE(is_error(call(fd, vu::kDmaMap, bytes(overlap), {&mem, 1}), EEXIST));
  vu::DmaMap unaligned{32, vu::kDmaMapRead, 0, 0x200010, 0x1000};
  EXPECT_TRUE(is_error(call(fd, vu::kDmaMap, bytes(unaligned)), EINVAL));
  int two[2] = {mem, mem};
  vu::DmaMap other{32, vu::kDmaMapRead, 0, 0x300000, 0x1000};
  EXPECT_TRUE(is_error(call(fd, vu::kDmaMap, bytes(other), two), EINVAL));
  vu::DmaUnmap partial{24, 0, 0x100000, 0x4000};
  EXPECT_TRUE(is_error(call(fd, vu::kDmaUnmap, bytes(partial)), EINVAL));
  vu::DmaUnmap exact{24, 0, 0x100000, 0x8000};
  r = call(fd, vu::kDmaUnmap, bytes(exact));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->header.flags & vu::kFlagError);
  EXPECT_EQ(r->payload, bytes(exact));
  ::close(mem);
  ::close(fd);
  expect_next_client_served();
}

TEST_F(ServerFixture, MigrationMessagesAreChecked) {
  int fd = connect();
  negotiate(fd);
  vu::MigData w{8, 100};  // says 100 bytes, carries none
  EXPECT_TRUE(is_error(call(fd, vu::kMigDataWrite, bytes(w)), EINVAL));
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
  fd = connect();
  negotiate(fd);
  vu::DeviceFeature f{16, vu::kFeatureSet | vu::kFeatureMigDeviceState};
  auto p = bytes(f);
  vu::FeatureMigState bogus{42, -1};
  auto b = bytes(bogus);
  p.insert(p.end(), b.begin(), b.end());
  EXPECT_TRUE(is_error(call(fd, vu::kDeviceFeature, p), EINVAL));
  ::close(fd);
}

// ---------------------------------------------------------------------------------
// The client against a fake server.
// ---------------------------------------------------------------------------------

// Answers the usual commands so the client opens; `script` sees every message first
// and returns true when it answered (or broke) it itself.
class FakeServer {
 public:
  using Script = std::function<bool(int fd, vu::Message& m)>;
  explicit FakeServer(Script script) : script_(std::move(script)) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_fd = sv[0];
    fd_ = sv[1];
    thread_ = std::thread([this] { run(); });
  }
  ~FakeServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  static void reply(int fd, const vu::Message& m, const std::vector<uint8_t>& payload, uint32_t error = 0,
                    std::span<const int> fds = {}) {
    vu::Header h{m.header.msg_id, m.header.command, 0, vu::kFlagTypeReply | (error ? vu::kFlagError : 0u), error};
    EXPECT_TRUE(vu::send_message(fd, h, payload, fds));
  }
  int client_fd = -1;

 private:
  void run() {
    for (;;) {
      auto m = vu::recv_message(fd_);
      if (!m) return;
      if (script_(fd_, *m)) continue;
      switch (m->header.command) {
        case vu::kVersion: {
          auto p = bytes(vu::Version{0, 1});
          std::string caps = R"({"capabilities":{"max_msg_fds":8,"unknown_key":[1,2],"pgsizes":4096}})";
          p.insert(p.end(), caps.begin(), caps.end());
          p.push_back(0);
          reply(fd_, *m, p);
          break;
        }
        case vu::kDeviceGetInfo:
          reply(fd_, *m, bytes(vu::DeviceInfo{16, vu::kDeviceFlagsPci, 9, 5}));
          break;
        case vu::kDmaMap: reply(fd_, *m, {}); break;
        case vu::kDmaUnmap: reply(fd_, *m, m->payload); break;
        default: reply(fd_, *m, {}, ENOSYS); break;
      }
    }
  }
  Script script_;
  int fd_ = -1;
  std::thread thread_;
};

struct ClientFixture : ::testing::Test {
  std::unique_ptr<Memory> mem;
  std::unique_ptr<iommu::DmaSpace> space;
  void SetUp() override {
    auto m = Memory::create(small_memory());
    ASSERT_TRUE(m);
    mem = std::move(*m);
    space = std::make_unique<iommu::DmaSpace>(*mem);
  }
  Result<std::unique_ptr<iommu::Device>> open(FakeServer& fake) {
    return iommu::open_vfio_user_fd(fake.client_fd, "fake", *space, {});
  }
};

TEST_F(ClientFixture, TruncatedReplyFailsTheOpen) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command != vu::kVersion) return false;
    vu::Header h{m.header.msg_id, m.header.command, 40, vu::kFlagTypeReply, 0};
    ::send(fd, &h, sizeof(h), MSG_NOSIGNAL);
    ::send(fd, "\0\0\1\0", 4, MSG_NOSIGNAL);  // 4 of 24 payload bytes, then silence
    ::shutdown(fd, SHUT_WR);
    return true;
  });
  auto dev = open(fake);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.status().code(), EPROTO);
}

TEST_F(ClientFixture, WrongMessageIdClosesTheConnection) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command != vu::kDeviceGetInfo) return false;
    m.header.msg_id++;
    FakeServer::reply(fd, m, bytes(vu::DeviceInfo{16, 2, 9, 5}));
    return true;
  });
  auto dev = open(fake);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.status().code(), EPROTO);
  EXPECT_NE(dev.status().message().find("does not answer"), std::string::npos);
}

TEST_F(ClientFixture, OversizedReplyIsRefusedWithoutAllocatingIt) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command != vu::kDeviceGetInfo) return false;
    vu::Header h{m.header.msg_id, m.header.command, 0x7fffffff, vu::kFlagTypeReply, 0};
    ::send(fd, &h, sizeof(h), MSG_NOSIGNAL);
    return true;
  });
  auto dev = open(fake);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.status().code(), EMSGSIZE);
}

TEST_F(ClientFixture, ErrorReplyWithPayloadIsARefusalNotABreak) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command != vu::kDeviceGetRegionInfo) return false;
    vu::RegionInfo q;
    vu::read_struct(m.payload, 0, &q);
    if (q.index == 0) {
      FakeServer::reply(fd, m, std::vector<uint8_t>(100, 0xee), EACCES);
    } else {
      FakeServer::reply(fd, m, bytes(vu::RegionInfo{32, 3, q.index, 0, 4096, 0}));
    }
    return true;
  });
  auto dev = open(fake);
  ASSERT_TRUE(dev) << dev.status().describe();
  auto r0 = (*dev)->region_info(0);
  ASSERT_FALSE(r0);
  EXPECT_EQ(r0.status().code(), EACCES);
  auto r7 = (*dev)->region_info(7);
  ASSERT_TRUE(r7) << r7.status().describe();
  EXPECT_EQ(r7->size, 4096u);
}

TEST_F(ClientFixture, BrokenCapabilityChainClosesTheConnection) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command != vu::kDeviceGetRegionInfo) return false;
    vu::RegionInfo q;
    vu::read_struct(m.payload, 0, &q);
    // Claims a 48-byte reply whose sparse mmap capability lists 1000 areas.
    vu::RegionInfo ri{48, vu::kRegionFlagRead | vu::kRegionFlagCaps, q.index, 32, 0x4000, 0};
    auto p = bytes(ri);
    if (q.argsz >= 48) {
      vu::SparseMmapCap cap{{vu::kRegionCapSparseMmap, 1, 0}, 1000, 0};
      auto c = bytes(cap);
      p.insert(p.end(), c.begin(), c.end());
    }
    FakeServer::reply(fd, m, p);
    return true;
  });
  auto dev = open(fake);
  ASSERT_TRUE(dev);
  auto r = (*dev)->region_info(0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), EPROTO);
  // Every later call fails with the reason; nothing is sent on a broken connection.
  auto again = (*dev)->region_info(7);
  ASSERT_FALSE(again);
  EXPECT_NE(again.status().message().find("closed"), std::string::npos);
}

TEST_F(ClientFixture, LoopingCapabilityChainIsRefused) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command != vu::kDeviceGetRegionInfo) return false;
    vu::RegionInfo q;
    vu::read_struct(m.payload, 0, &q);
    vu::RegionInfo ri{40, vu::kRegionFlagRead | vu::kRegionFlagCaps, q.index, 32, 0x4000, 0};
    auto p = bytes(ri);
    if (q.argsz >= 40) {
      auto c = bytes(vu::CapHeader{42, 1, 32});  // points at itself
      p.insert(p.end(), c.begin(), c.end());
    }
    FakeServer::reply(fd, m, p);
    return true;
  });
  auto dev = open(fake);
  ASSERT_TRUE(dev);
  EXPECT_EQ((*dev)->region_info(0).status().code(), EPROTO);
}

TEST_F(ClientFixture, PaddedMigrationReadUsesTheSizeField) {
  int calls = 0;
  FakeServer fake([&calls](int fd, vu::Message& m) {
    if (m.header.command == vu::kMigDataRead) {
      uint32_t n = calls++ == 0 ? 3 : 0;
      auto p = bytes(vu::MigData{8 + 64, n});
      p.insert(p.end(), {'a', 'b', 'c'});
      p.resize(8 + 64, 0xff);  // padding beyond `size`
      FakeServer::reply(fd, m, p);
      return true;
    }
    return false;
  });
  auto dev = open(fake);
  ASSERT_TRUE(dev);
  char buf[16] = {};
  auto n = (*dev)->mig_read(buf, sizeof(buf));
  ASSERT_TRUE(n) << n.status().describe();
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(std::string(buf, 3), "abc");
}

TEST_F(ClientFixture, OversizedRegionReadReplyClosesTheConnection) {
  FakeServer fake([](int fd, vu::Message& m) {
    if (m.header.command == vu::kDeviceGetRegionInfo) {
      vu::RegionInfo q;
      vu::read_struct(m.payload, 0, &q);
      FakeServer::reply(fd, m, bytes(vu::RegionInfo{32, 3, q.index, 0, 4096, 0}));
      return true;
    }
    if (m.header.command == vu::kRegionRead) {
      vu::RegionAccess a;
      vu::read_struct(m.payload, 0, &a);
      auto p = bytes(a);
      p.resize(16 + a.count + 8, 0x55);
      FakeServer::reply(fd, m, p);
      return true;
    }
    return false;
  });
  auto dev = open(fake);
  ASSERT_TRUE(dev);
  uint64_t guard[3] = {1, 2, 3};
  auto st = (*dev)->region_read(7, 0, &guard[1], 8);
  EXPECT_EQ(st.code(), EPROTO);
  EXPECT_EQ(guard[0], 1u);
  EXPECT_EQ(guard[2], 3u);
}

TEST_F(ClientFixture, ServerDmaRequestsAreAnsweredOnlyInsideRegisteredMemory) {
  auto* buf = static_cast<uint8_t*>(mem->alloc(4096, 4096));
  ASSERT_NE(buf, nullptr);
  std::memcpy(buf, "hello", 5);
  uint64_t iova = mem->iova_of(buf);
  std::atomic<bool> read_ok{false}, write_ok{false}, outside_refused{false};
  FakeServer fake([&](int fd, vu::Message& m) {
    if (m.header.command != vu::kDeviceReset) return false;
    // While the client waits for the reset reply, reach into its memory.
    vu::DmaAccess rd{iova, 5};
    EXPECT_TRUE(vu::send_message(fd, vu::Header{100, vu::kDmaRead, 0, 0, 0}, bytes(rd)));
    auto r = vu::recv_message(fd);
    read_ok = r && r->payload.size() == 21 && std::memcmp(r->payload.data() + 16, "hello", 5) == 0;
    auto wp = bytes(vu::DmaAccess{iova + 8, 3});
    wp.insert(wp.end(), {'x', 'y', 'z'});
    EXPECT_TRUE(vu::send_message(fd, vu::Header{101, vu::kDmaWrite, 0, 0, 0}, wp));
    r = vu::recv_message(fd);
    write_ok = r && !(r->header.flags & vu::kFlagError);
    vu::DmaAccess outside{0x10, 8};
    EXPECT_TRUE(vu::send_message(fd, vu::Header{102, vu::kDmaRead, 0, 0, 0}, bytes(outside)));
    r = vu::recv_message(fd);
    outside_refused = r && (r->header.flags & vu::kFlagError) && r->header.error == EFAULT;
    vu::DmaAccess straddle{iova + 4090, 4096 * 1024};
    EXPECT_TRUE(vu::send_message(fd, vu::Header{103, vu::kDmaRead, 0, 0, 0}, bytes(straddle)));
    r = vu::recv_message(fd);
    outside_refused = outside_refused && r && (r->header.flags & vu::kFlagError);
    FakeServer::reply(fd, m, {});
    return true;
  });
  auto dev = open(fake);
  ASSERT_TRUE(dev) << dev.status().describe();
  ASSERT_TRUE((*dev)->reset());
  EXPECT_TRUE(read_ok);
  EXPECT_TRUE(write_ok);
  EXPECT_TRUE(outside_refused);
  EXPECT_EQ(std::memcmp(buf + 8, "xyz", 3), 0);
}

}  // namespace
}  // namespace uvio::emu
