// The migration stream and its transports: round trips over every channel kind, and
// every kind of damage found before a byte is applied.
#include "mig/stream.h"
#include "mig/transport.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace uvio::mig {
namespace {

std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> socket_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {channel_from_fd(fds[0], "pair-a"), channel_from_fd(fds[1], "pair-b")};
}

std::string temp_socket_path(const char* name) {
  return "/tmp/uvio-mig-test-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

HelloPayload sample_hello() {
  HelloPayload h;
  h.app = "uvio-testpmd";
  h.token = "s3cret";
  h.areas.push_back({0, 0x7f0000000000, 64 << 20, 0x100000000, 2 << 20});
  h.areas.push_back({1, 0x7f1000000000, 4096 * 3, 0x200000000, 4096});
  h.devices.push_back({"emu_nvme0", 0x1b36, 0x0010, 0x010802});
  h.devices.push_back({"vfio-user:/run/x.sock", 0x1af4, 0x1041, 0x020000});
  h.participants = {"runtime", "app.flows"};
  return h;
}

void expect_same(const HelloPayload& a, const HelloPayload& b) {
  EXPECT_EQ(a.app, b.app);
  EXPECT_EQ(a.token, b.token);
  ASSERT_EQ(a.areas.size(), b.areas.size());
  for (size_t i = 0; i < a.areas.size(); ++i) {
    EXPECT_EQ(a.areas[i].id, b.areas[i].id);
    EXPECT_EQ(a.areas[i].va, b.areas[i].va);
    EXPECT_EQ(a.areas[i].len, b.areas[i].len);
    EXPECT_EQ(a.areas[i].iova, b.areas[i].iova);
    EXPECT_EQ(a.areas[i].page_size, b.areas[i].page_size);
  }
  ASSERT_EQ(a.devices.size(), b.devices.size());
  for (size_t i = 0; i < a.devices.size(); ++i) {
    EXPECT_EQ(a.devices[i].name, b.devices[i].name);
    EXPECT_EQ(a.devices[i].vendor_id, b.devices[i].vendor_id);
    EXPECT_EQ(a.devices[i].device_id, b.devices[i].device_id);
    EXPECT_EQ(a.devices[i].class_code, b.devices[i].class_code);
  }
  EXPECT_EQ(a.participants, b.participants);
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1103515245u + 12345u;
    b = static_cast<uint8_t>(x >> 16);
  }
  return v;
}

// A Channel over a byte vector: what StreamWriter produced, for tests that damage it.
class MemoryChannel final : public Channel {
 public:
  Status write_all(const void* buf, size_t len) override {
    auto* p = static_cast<const uint8_t*>(buf);
    bytes.insert(bytes.end(), p, p + len);
    return Status::ok();
  }
  Status read_exact(void* buf, size_t len, int) override {
    if (bytes.size() - pos < len) {
      pos = bytes.size();
      return Status::error(ECONNRESET, "end of bytes");
    }
    std::memcpy(buf, bytes.data() + pos, len);
    pos += len;
    return Status::ok();
  }
  void shutdown() override {}
  std::string peer() const override { return "memory"; }
  std::vector<uint8_t> bytes;
  size_t pos = 0;
};

// The small stream the damage tests start from: start, Hello, two pages, Complete.
std::vector<uint8_t> small_stream() {
  MemoryChannel mem;
  StreamWriter w(mem);
  EXPECT_TRUE(w.begin().is_ok());
  EXPECT_TRUE(w.write(SectionType::Hello, 0, encode_hello(sample_hello())).is_ok());
  auto pages = pattern(64, 7);
  EXPECT_TRUE(w.write_pages(0x7f0000001000, pages.data(), pages.size()).is_ok());
  EXPECT_TRUE(w.write(SectionType::Complete, 0, {}).is_ok());
  EXPECT_EQ(w.bytes_written(), mem.bytes.size());
  return mem.bytes;
}

// Reads a whole stream; the first error, or ok once Complete arrives.
Status read_stream(std::vector<uint8_t> bytes, int* sections = nullptr) {
  MemoryChannel mem;
  mem.bytes = std::move(bytes);
  StreamReader r(mem);
  UVIO_TRY(r.begin());
  int n = 0;
  for (;;) {
    auto s = r.next();
    if (!s) return s.status();
    ++n;
    if (sections) *sections = n;
    if (s->type == SectionType::Hello) UVIO_TRY(decode_hello(s->payload).status());
    if (s->type == SectionType::Pages) UVIO_TRY(decode_pages(s->payload).status());
    if (s->type == SectionType::Complete) return Status::ok();
  }
}

TEST(Crc32c, KnownValueAndPieces) {
  const char* text = "123456789";
  auto bytes = std::span(reinterpret_cast<const uint8_t*>(text), 9);
  EXPECT_EQ(crc32c(bytes), 0xE3069283u);  // the check value of CRC-32C (RFC 3720, B.4)
  EXPECT_EQ(crc32c(bytes.subspan(4), crc32c(bytes.first(4))), 0xE3069283u);
  EXPECT_EQ(crc32c({}), 0u);
  auto big = pattern(1000, 1);
  EXPECT_EQ(crc32c(std::span(big).subspan(3), crc32c(std::span(big).first(3))), crc32c(big));
}

TEST(StreamPayloads, HelloReplyPagesRoundTrip) {
  HelloPayload h = sample_hello();
  auto decoded = decode_hello(encode_hello(h));
  ASSERT_TRUE(decoded) << decoded.status().describe();
  expect_same(h, *decoded);

  auto empty = decode_hello(encode_hello(HelloPayload{}));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->areas.empty());

  auto reply = decode_reply(encode_reply({false, "token mismatch"}));
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply->ok);
  EXPECT_EQ(reply->message, "token mismatch");
  auto yes = decode_reply(encode_reply({true, ""}));
  ASSERT_TRUE(yes);
  EXPECT_TRUE(yes->ok);

  auto data = pattern(8192, 3);
  auto enc = encode_pages(0x1234000, data.data(), static_cast<uint32_t>(data.size()));
  auto pages = decode_pages(enc);
  ASSERT_TRUE(pages);
  EXPECT_EQ(pages->va, 0x1234000u);
  ASSERT_EQ(pages->data.size(), data.size());
  EXPECT_EQ(std::memcmp(pages->data.data(), data.data(), data.size()), 0);
}

TEST(StreamPayloads, TrailingBytesAndTruncationRejected) {
  auto hello = encode_hello(sample_hello());
  auto longer = hello;
  longer.push_back(0);
  EXPECT_EQ(decode_hello(longer).status().code(), EBADMSG);
  for (size_t cut = 0; cut < hello.size(); ++cut)
    EXPECT_EQ(decode_hello(std::span(hello).first(cut)).status().code(), EBADMSG) << "cut at " << cut;

  auto reply = encode_reply({true, "fine"});
  auto reply_longer = reply;
  reply_longer.push_back(1);
  EXPECT_EQ(decode_reply(reply_longer).status().code(), EBADMSG);
  for (size_t cut = 0; cut < reply.size(); ++cut)
    EXPECT_FALSE(decode_reply(std::span(reply).first(cut))) << "cut at " << cut;

  auto not_bool = reply;
  not_bool[0] = 2;
  EXPECT_EQ(decode_reply(not_bool).status().code(), EBADMSG);

  EXPECT_EQ(decode_pages(encode_pages(0x1000, nullptr, 0)).status().code(), EBADMSG);
  uint8_t wrap[16] = {};
  std::memset(wrap, 0xff, 8);
  EXPECT_EQ(decode_pages(wrap).status().code(), EBADMSG);
}

TEST(StreamPayloads, BoundsOnCountsAndStrings) {
  HelloPayload h;
  h.app = std::string(4097, 'a');
  EXPECT_EQ(decode_hello(encode_hello(h)).status().code(), EBADMSG);
  h.app = std::string(4096, 'a');
  EXPECT_TRUE(decode_hello(encode_hello(h)));

  HelloPayload areas;
  areas.areas.resize(1025);
  EXPECT_EQ(decode_hello(encode_hello(areas)).status().code(), EBADMSG);
  areas.areas.resize(1024);
  EXPECT_TRUE(decode_hello(encode_hello(areas)));

  HelloPayload devices;
  devices.devices.resize(257);
  EXPECT_EQ(decode_hello(encode_hello(devices)).status().code(), EBADMSG);

  HelloPayload parts;
  parts.participants.resize(257);
  EXPECT_EQ(decode_hello(encode_hello(parts)).status().code(), EBADMSG);

  // A count that claims more than the payload holds stops at the end of the bytes.
  auto enc = encode_hello(HelloPayload{});
  enc[8] = 200;  // areas count (after two empty strings)
  EXPECT_EQ(decode_hello(enc).status().code(), EBADMSG);

  // Area reserved field must be zero.
  auto one = encode_hello([] { HelloPayload x; x.areas.resize(1); return x; }());
  one[16] = 1;
  EXPECT_EQ(decode_hello(one).status().code(), EBADMSG);
}

TEST(StreamSections, SmallStreamReadsBack) {
  int sections = 0;
  Status s = read_stream(small_stream(), &sections);
  EXPECT_TRUE(s) << s.describe();
  EXPECT_EQ(sections, 3);
}

TEST(StreamSections, EveryHeaderBitFlipIsCaught) {
  auto stream = small_stream();
  // The Hello section's header starts right after the 16-byte stream start.
  for (size_t byte = 0; byte < kSectionHeaderBytes; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto damaged = stream;
      damaged[16 + byte] ^= static_cast<uint8_t>(1u << bit);
      Status s = read_stream(damaged);
      ASSERT_FALSE(s) << "header byte " << byte << " bit " << bit;
      EXPECT_TRUE(s.code() == EPROTO || s.code() == EBADMSG) << s.describe();
      std::span<const uint8_t> view = std::span(damaged).subspan(16);
      EXPECT_FALSE(parse_section(&view)) << "header byte " << byte << " bit " << bit;
      EXPECT_EQ(view.size(), damaged.size() - 16) << "a failed parse consumes nothing";
    }
  }
}

TEST(StreamSections, EveryPayloadBitFlipIsCaught) {
  auto stream = small_stream();
  std::span<const uint8_t> view = std::span(stream).subspan(16);
  auto hello = parse_section(&view);
  ASSERT_TRUE(hello);
  size_t first = 16 + kSectionHeaderBytes;
  for (size_t byte = first; byte < first + hello->payload.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto damaged = stream;
      damaged[byte] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_EQ(read_stream(damaged).code(), EBADMSG) << "payload byte " << byte << " bit " << bit;
    }
  }
}

TEST(StreamSections, TruncationAtEveryOffsetIsCaught) {
  auto stream = small_stream();
  for (size_t cut = 0; cut < stream.size(); ++cut) {
    std::vector<uint8_t> part(stream.begin(), stream.begin() + static_cast<ptrdiff_t>(cut));
    EXPECT_EQ(read_stream(part).code(), ECONNRESET) << "cut at " << cut;
  }
  // parse_section on a truncated section: an error, nothing consumed.
  for (size_t cut = 16; cut < stream.size(); ++cut) {
    std::span<const uint8_t> view = std::span(stream).subspan(16, cut - 16);
    size_t before = view.size();
    while (parse_section(&view)) before = view.size();
    EXPECT_EQ(view.size(), before);
  }
}

TEST(StreamSections, WrongMagicAndVersion) {
  auto stream = small_stream();
  auto magic = stream;
  magic[0] = 'X';
  EXPECT_EQ(read_stream(magic).code(), EPROTO);
  auto version = stream;
  version[8] = 2;
  EXPECT_EQ(read_stream(version).code(), EPROTONOSUPPORT);
  auto reserved = stream;
  reserved[12] = 1;
  EXPECT_EQ(read_stream(reserved).code(), EPROTO);
}

// A header with a correct CRC but a field no writer produces.
std::vector<uint8_t> forged_header(uint32_t magic, uint16_t type, uint16_t flags, uint32_t len) {
  std::vector<uint8_t> h(kSectionHeaderBytes);
  auto put32 = [&](size_t off, uint32_t v) { std::memcpy(&h[off], &v, 4); };
  put32(0, magic);
  std::memcpy(&h[4], &type, 2);
  std::memcpy(&h[6], &flags, 2);
  put32(8, 0);
  put32(12, len);
  put32(16, 0);
  put32(20, crc32c(std::span(h).first(20)));
  return h;
}

TEST(StreamSections, ForgedHeadersRejected) {
  auto check = [](std::vector<uint8_t> h, int expected) {
    h.resize(h.size() + 64);
    std::span<const uint8_t> view = h;
    EXPECT_EQ(parse_section(&view).status().code(), expected);
  };
  check(forged_header(kSectionMagic, 11, 0, 0), EPROTO);   // unknown type
  check(forged_header(kSectionMagic, 0, 0, 0), EPROTO);    // type 0
  check(forged_header(kSectionMagic, 3, 1, 0), EPROTO);    // flags
  check(forged_header(kSectionMagic, 3, 0, kMaxSectionPayload + 1), EPROTO);  // oversize
  check(forged_header(0x12345678, 3, 0, 0), EPROTO);       // magic
  // A good empty Complete parses and consumes exactly its header.
  auto good = forged_header(kSectionMagic, 8, 0, 0);
  good.push_back(0xaa);
  std::span<const uint8_t> view = good;
  auto s = parse_section(&view);
  ASSERT_TRUE(s) << s.status().describe();
  EXPECT_EQ(s->type, SectionType::Complete);
  EXPECT_EQ(view.size(), 1u);
}

TEST(StreamWriter, OversizeSectionRefused) {
  MemoryChannel mem;
  StreamWriter w(mem);
  std::vector<uint8_t> big(kMaxSectionPayload + 1);
  EXPECT_EQ(w.write(SectionType::DeviceState, 0, big).code(), EMSGSIZE);
  EXPECT_TRUE(mem.bytes.empty());
}

// Sends a stream with a multi-section page run over `a` on a thread, reads it on `b`.
void round_trip(Channel& a, Channel& b) {
  HelloPayload hello = sample_hello();
  auto pages = pattern((9 << 20) + 4096, 11);  // more than two sections' worth
  std::vector<uint8_t> device_state = pattern(100000, 5);
  Status sent;
  uint64_t written = 0;
  std::thread writer([&] {
    StreamWriter w(a);
    sent = [&]() -> Status {
      UVIO_TRY(w.begin());
      UVIO_TRY(w.write(SectionType::Hello, 0, encode_hello(hello)));
      UVIO_TRY(w.write_pages(0x7f0000000000, pages.data(), pages.size()));
      UVIO_TRY(w.write(SectionType::DeviceState, 3, device_state));
      UVIO_TRY(w.write(SectionType::Complete, 0, {}));
      return Status::ok();
    }();
    written = w.bytes_written();
  });
  StreamReader r(b);
  r.set_timeout(30000);
  ASSERT_TRUE(r.begin());
  auto s = r.next();
  ASSERT_TRUE(s) << s.status().describe();
  ASSERT_EQ(s->type, SectionType::Hello);
  auto h = decode_hello(s->payload);
  ASSERT_TRUE(h);
  expect_same(hello, *h);
  std::vector<uint8_t> received;
  uint64_t expect_va = 0x7f0000000000;
  for (;;) {
    s = r.next();
    ASSERT_TRUE(s) << s.status().describe();
    if (s->type != SectionType::Pages) break;
    EXPECT_LE(s->payload.size(), kMaxSectionPayload);
    auto p = decode_pages(s->payload);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->va, expect_va);
    expect_va += p->data.size();
    received.insert(received.end(), p->data.begin(), p->data.end());
  }
  EXPECT_EQ(received, pages);
  ASSERT_EQ(s->type, SectionType::DeviceState);
  EXPECT_EQ(s->id, 3u);
  EXPECT_EQ(s->payload, device_state);
  s = r.next();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->type, SectionType::Complete);
  writer.join();
  EXPECT_TRUE(sent) << sent.describe();
  EXPECT_EQ(r.bytes_read(), written);
}

TEST(Transport, RoundTripOverSocketPair) {
  auto [a, b] = socket_pair();
  round_trip(*a, *b);
}

void round_trip_via_listener(const std::string& address) {
  auto listener = Listener::listen(address);
  ASSERT_TRUE(listener) << listener.status().describe();
  std::string bound = (*listener)->address();
  std::unique_ptr<Channel> client;
  std::thread connector([&] {
    auto c = connect(bound, 5000);
    ASSERT_TRUE(c) << c.status().describe();
    client = std::move(*c);
  });
  auto server = (*listener)->accept(10000);
  connector.join();
  ASSERT_TRUE(server) << server.status().describe();
  ASSERT_TRUE(client);
  round_trip(*client, **server);
}

TEST(Transport, RoundTripOverUnix) {
  std::string path = temp_socket_path("rt");
  round_trip_via_listener("unix:" + path);
  struct stat st;
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << "the listener removes its socket file";
}

TEST(Transport, TcpListenerReportsChosenPort) {
  auto listener = Listener::listen("tcp:127.0.0.1:0");
  ASSERT_TRUE(listener) << listener.status().describe();
  std::string bound = (*listener)->address();
  auto a = parse_address(bound);
  ASSERT_TRUE(a) << bound;
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_NE(a->port, 0);
}

TEST(Transport, RoundTripOverTcp) { round_trip_via_listener("tcp:127.0.0.1:0"); }

TEST(Transport, RoundTripOverTcpByHostName) {
  auto listener = Listener::listen("tcp:127.0.0.1:0");
  ASSERT_TRUE(listener);
  auto a = parse_address((*listener)->address());
  ASSERT_TRUE(a);
  auto c = connect("tcp:localhost:" + std::to_string(a->port), 5000);
  if (!c && c.status().code() == EHOSTUNREACH) GTEST_SKIP() << "no resolver for localhost here";
  // localhost may resolve to ::1 first; connect tries every address in turn.
  ASSERT_TRUE(c) << c.status().describe();
  auto s = (*listener)->accept(5000);
  ASSERT_TRUE(s);
  round_trip(**c, **s);
}

TEST(Transport, RoundTripOverTcpIpv6) {
  auto listener = Listener::listen("tcp:[::1]:0");
  if (!listener) GTEST_SKIP() << "no IPv6 loopback: " << listener.status().describe();
  EXPECT_TRUE((*listener)->address().starts_with("tcp:[::1]:")) << (*listener)->address();
  listener->reset();
  round_trip_via_listener("tcp:[::1]:0");
}

TEST(Transport, ParseAddress) {
  auto t = parse_address("tcp:10.0.0.2:4444");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Address::Kind::Tcp);
  EXPECT_EQ(t->host, "10.0.0.2");
  EXPECT_EQ(t->port, 4444);
  auto v6 = parse_address("tcp:[fe80::1%eth0]:65535");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "fe80::1%eth0");
  EXPECT_EQ(v6->port, 65535);
  auto name = parse_address("tcp:dest.example:0");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->host, "dest.example");
  auto u = parse_address("unix:/run/uvio/mig.sock");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->kind, Address::Kind::Unix);
  EXPECT_EQ(u->path, "/run/uvio/mig.sock");

  for (const char* bad : {"", "tcp:", "tcp:host", "tcp:host:", "tcp::80", "tcp:host:65536", "tcp:host:-1",
                          "tcp:host:80x", "tcp:::1:80", "tcp:[::1]80", "tcp:[::1", "tcp:[]:80", "udp:h:1",
                          "unix:", "TCP:h:1", "host:80"}) {
    auto r = parse_address(bad);
    EXPECT_FALSE(r) << "'" << bad << "' parsed";
    if (!r) {
      EXPECT_EQ(r.status().code(), EINVAL);
    }
  }
  EXPECT_FALSE(parse_address("unix:" + std::string(200, 'x')));
  EXPECT_FALSE(parse_address(std::string_view("tcp:a\0b:1", 9)));
}

TEST(Transport, AcceptTimesOut) {
  auto listener = Listener::listen("tcp:127.0.0.1:0");
  ASSERT_TRUE(listener);
  auto c = (*listener)->accept(50);
  EXPECT_EQ(c.status().code(), ETIMEDOUT);
}

TEST(Transport, ReadTimesOut) {
  auto [a, b] = socket_pair();
  uint8_t byte;
  EXPECT_EQ(b->read_exact(&byte, 1, 30).code(), ETIMEDOUT);
  StreamReader r(*b);
  r.set_timeout(30);
  EXPECT_EQ(r.begin().code(), ETIMEDOUT);
}

TEST(Transport, ConnectRefusedAndMissing) {
  auto listener = Listener::listen("tcp:127.0.0.1:0");
  ASSERT_TRUE(listener);
  std::string address = (*listener)->address();
  listener->reset();  // the port is closed now
  EXPECT_EQ(connect(address, 2000).status().code(), ECONNREFUSED);
  EXPECT_EQ(connect("unix:" + temp_socket_path("absent"), 2000).status().code(), ENOENT);
  EXPECT_EQ(connect("tcp:127.0.0.1:0", 2000).status().code(), EINVAL);
}

TEST(Transport, ShutdownUnblocksReadOnAnotherThread) {
  auto [a, b] = socket_pair();
  Status read_status;
  std::thread reader([&, &b = b] {
    uint8_t buf[16];
    read_status = b->read_exact(buf, sizeof(buf));
  });
  b->shutdown();
  reader.join();
  EXPECT_EQ(read_status.code(), ECANCELED) << read_status.describe();
}

TEST(Transport, ShutdownUnblocksWriteOnAnotherThread) {
  auto [a, b] = socket_pair();
  Status write_status;
  std::thread writer([&, &a = a] {
    // Far more than the socket buffers hold, with nobody reading.
    std::vector<uint8_t> big(64 << 20);
    write_status = a->write_all(big.data(), big.size());
  });
  a->shutdown();
  writer.join();
  EXPECT_EQ(write_status.code(), ECANCELED) << write_status.describe();
}

TEST(Transport, PeerGoneIsAnErrorNotSigpipe) {
  auto [a, b] = socket_pair();
  b.reset();
  std::vector<uint8_t> buf(1 << 20);
  Status s = a->write_all(buf.data(), buf.size());
  EXPECT_EQ(s.code(), EPIPE) << s.describe();
  uint8_t byte;
  EXPECT_EQ(a->read_exact(&byte, 1, 1000).code(), ECONNRESET);
}

TEST(Transport, UnixListenerReplacesStaleSocketAndRefusesLiveOne) {
  std::string path = temp_socket_path("stale");
  // A socket file with nobody behind it, as a crashed process leaves it.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  auto first = Listener::listen("unix:" + path);
  ASSERT_TRUE(first) << first.status().describe();
  auto second = Listener::listen("unix:" + path);
  EXPECT_EQ(second.status().code(), EADDRINUSE);
  // The probe connection the refused listener made is queued; the live one still works.
  auto probe = (*first)->accept(1000);
  EXPECT_TRUE(probe);
}

}  // namespace
}  // namespace uvio::mig
