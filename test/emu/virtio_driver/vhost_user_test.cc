// The vhost-user transport against a scripted backend on a UNIX socket: the messages
// it sends, the memory table it shares, the rings it describes and the kicks it makes.
#include <uvio/ethdev.h>
#include <uvio/intr.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace uvio {
namespace {

constexpr uint32_t kGetFeatures = 1, kSetFeatures = 2, kSetOwner = 3, kSetMemTable = 5, kSetVringNum = 8,
                   kSetVringAddr = 9, kSetVringBase = 10, kGetVringBase = 11, kSetVringKick = 12,
                   kSetVringCall = 13, kGetProtocolFeatures = 15, kSetProtocolFeatures = 16, kSetVringEnable = 18;
constexpr uint64_t kVersion1 = 1ull << 32, kMrgRxbuf = 1ull << 15, kEventIdx = 1ull << 29, kMac = 1ull << 5,
                   kProtocolFeatures = 1ull << 30;

struct Message {
  uint32_t request = 0;
  std::vector<uint8_t> payload;
  std::vector<int> fds;
  template <class T>
  T at(size_t offset) const {
    T v{};
    if (offset + sizeof(T) <= payload.size()) std::memcpy(&v, payload.data() + offset, sizeof(T));
    return v;
  }
};

// Answers the GET requests and records everything.
class ScriptedBackend {
 public:
  ScriptedBackend() {
    path_ = "/tmp/uvio-vhost-test-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path_.c_str());
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedBackend() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
    ::unlink(path_.c_str());
    for (auto& m : messages_)
      for (int fd : m.fds) ::close(fd);
  }
  const std::string& path() const { return path_; }
  std::vector<Message> messages() {
    std::lock_guard g(mu_);
    return messages_;
  }
  void wait_closed() { thread_.join(), thread_ = std::thread([] {}); }

 private:
  void serve() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    for (;;) {
      uint32_t header[3];
      std::vector<uint8_t> payload(4096);
      iovec iov[2] = {{header, sizeof(header)}, {nullptr, 0}};
      msghdr msg{};
      char control[CMSG_SPACE(sizeof(int) * 8)];
      msg.msg_iov = iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(fd, &msg, MSG_WAITALL);
      if (n != sizeof(header)) break;
      Message m;
      m.request = header[0];
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[8];
        std::memcpy(fds, CMSG_DATA(c), count * sizeof(int));
        m.fds.assign(fds, fds + count);
      }
      m.payload.resize(header[2]);
      if (header[2] && ::recv(fd, m.payload.data(), header[2], MSG_WAITALL) != static_cast<ssize_t>(header[2])) break;
      uint64_t reply = 0;
      bool answer = true;
      std::vector<uint8_t> body;
      if (m.request == kGetFeatures) {
        reply = kVersion1 | kMrgRxbuf | kEventIdx | kMac | kProtocolFeatures;
      } else if (m.request == kGetProtocolFeatures) {
        reply = 0x1 | 0x8;
      } else if (m.request == kGetVringBase) {
        uint32_t state[2] = {m.at<uint32_t>(0), 0};  // {index, num = 0}
        body.assign(reinterpret_cast<uint8_t*>(state), reinterpret_cast<uint8_t*>(state) + sizeof(state));
      } else {
        answer = false;
      }
      if (answer) {
        if (body.empty()) body.assign(reinterpret_cast<uint8_t*>(&reply), reinterpret_cast<uint8_t*>(&reply) + 8);
        uint32_t h[3] = {m.request, 0x1 | 0x4, static_cast<uint32_t>(body.size())};
        std::vector<uint8_t> out(sizeof(h) + body.size());
        std::memcpy(out.data(), h, sizeof(h));
        std::memcpy(out.data() + sizeof(h), body.data(), body.size());
        if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) break;
      }
      std::lock_guard g(mu_);
      messages_.push_back(std::move(m));
    }
    ::close(fd);
  }

  std::string path_;
  int listen_fd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Message> messages_;
};

std::vector<Message> of(const std::vector<Message>& all, uint32_t request) {
  std::vector<Message> out;
  for (auto& m : all)
    if (m.request == request) out.push_back(m);
  return out;
}

TEST(VhostUserTransport, SharesMemoryDescribesRingsAndKicks) {
  MemConfig cfg;
  cfg.total_bytes = 16u << 20;
  cfg.hugepages = false;
  auto mem = Memory::create(cfg);
  ASSERT_TRUE(mem) << mem.status().describe();
  ScriptedBackend backend;
  auto pool = mbuf_pool_create(**mem, "vu_pool", 512, 0);
  ASSERT_TRUE(pool);
  auto port = EthPort::open_vhost_user(**mem, backend.path(), 1);
  ASSERT_TRUE(port) << port.status().describe();
  EthConfig ec;
  ec.rx_pool = pool->get();
  ec.ring_size = 64;
  ASSERT_TRUE((*port)->configure(ec));
  ASSERT_TRUE((*port)->start());

  Mbuf* m = mbuf_alloc(**pool);
  ASSERT_NE(m, nullptr);
  ASSERT_NE(mbuf_append(m, 60), nullptr);
  EXPECT_EQ((*port)->tx_burst(0, &m, 1), 1);
  (*port)->stop();
  port->reset();
  // The connection is closed: every message has been recorded.
  backend.wait_closed();

  auto msgs = backend.messages();
  ASSERT_FALSE(msgs.empty());
  EXPECT_EQ(msgs[0].request, kSetOwner);
  auto features = of(msgs, kSetFeatures);
  ASSERT_EQ(features.size(), 1u);
  // MAC needs device configuration, which vhost-user does not give: not accepted.
  EXPECT_EQ(features[0].at<uint64_t>(0), kVersion1 | kMrgRxbuf | kEventIdx | kProtocolFeatures);
  auto proto = of(msgs, kSetProtocolFeatures);
  ASSERT_EQ(proto.size(), 1u);
  EXPECT_EQ(proto[0].at<uint64_t>(0), 0x1u);

  auto table = of(msgs, kSetMemTable);
  ASSERT_EQ(table.size(), 1u);
  auto areas = (*mem)->areas();
  uint32_t nregions = table[0].at<uint32_t>(0);
  ASSERT_EQ(nregions, areas.size());
  EXPECT_EQ(table[0].fds.size(), areas.size());
  for (uint32_t i = 0; i < nregions; i++) {
    size_t base = 8 + 32 * i;
    EXPECT_EQ(table[0].at<uint64_t>(base), areas[i]->iova);
    EXPECT_EQ(table[0].at<uint64_t>(base + 8), areas[i]->len);
    EXPECT_EQ(table[0].at<uint64_t>(base + 16), reinterpret_cast<uint64_t>(areas[i]->va));
    EXPECT_EQ(table[0].at<uint64_t>(base + 24), areas[i]->fd_offset);
  }

  auto nums = of(msgs, kSetVringNum);
  auto addrs = of(msgs, kSetVringAddr);
  auto bases = of(msgs, kSetVringBase);
  auto kicks = of(msgs, kSetVringKick);
  auto calls = of(msgs, kSetVringCall);
  auto enables = of(msgs, kSetVringEnable);
  ASSERT_EQ(nums.size(), 2u);
  ASSERT_EQ(addrs.size(), 2u);
  ASSERT_EQ(bases.size(), 2u);
  ASSERT_EQ(kicks.size(), 2u);
  ASSERT_EQ(calls.size(), 2u);
  ASSERT_EQ(enables.size(), 2u);
  for (uint32_t q = 0; q < 2; q++) {
    EXPECT_EQ(nums[q].at<uint32_t>(0), q);
    EXPECT_EQ(nums[q].at<uint32_t>(4), 64u);
    EXPECT_EQ(bases[q].at<uint32_t>(4), 0u);
    // desc, used and avail are addresses in our memory, as the backend maps it.
    for (size_t off : {8, 16, 24}) EXPECT_TRUE((*mem)->contains(reinterpret_cast<void*>(addrs[q].at<uint64_t>(off))));
    EXPECT_EQ(kicks[q].fds.size(), 1u);
    EXPECT_EQ(calls[q].fds.size(), 1u);
    EXPECT_EQ(enables[q].at<uint32_t>(4), 1u);
  }
  // The RX ring was filled and the TX packet published: both were kicked.
  for (uint32_t q = 0; q < 2; q++) {
    ASSERT_EQ(kicks[q].fds.size(), 1u);
    EXPECT_GT(drain_eventfd(kicks[q].fds[0]), 0u) << "queue " << q << " was not kicked";
  }
  EXPECT_EQ(of(msgs, kGetVringBase).size(), 2u);  // stopping the rings
  EXPECT_EQ((*pool)->available(), (*pool)->count());
}

TEST(VhostUserTransport, MissingBackendIsAClearError) {
  MemConfig cfg;
  cfg.total_bytes = 4u << 20;
  cfg.hugepages = false;
  auto mem = Memory::create(cfg);
  ASSERT_TRUE(mem);
  auto port = EthPort::open_vhost_user(**mem, "/tmp/uvio-no-such-backend.sock", 1);
  ASSERT_FALSE(port);
  EXPECT_NE(port.status().message().find("is the backend running"), std::string::npos) << port.status().message();
}

}  // namespace
}  // namespace uvio
