// Writes the fuzz targets' seed corpora (test/fuzz/corpus/<target>/) from real traffic
// and the real encoders: the vfio-user client and server seeds are the messages of a
// real client talking to a real emu::Server (NVMe and virtio-net), recorded by a relay
// between them; the migration seeds come from mig/stream's encoders. The NVMe and
// virtio seeds are a well-behaved device written in those targets' formats, from the
// specification's layouts.
//
//   make_fuzz_seeds OUTPUT_DIR
#include <uvio/log.h>
#include <uvio/mbuf.h>
#include <uvio/mem.h>
#include <uvio/mempool.h>
#include <uvio/nvme.h>

#include "emu/registry.h"
#include "emu/server.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"
#include "iommu/vfio_user_socket.h"
#include "mig/stream.h"
#include "pmd/nvme/spec.h"
#include "pmd/virtio/net.h"
#include "pmd/virtio/transport.h"
#include "pmd/virtio/virtio_spec.h"
#include "test/fuzz/client_script.h"
#include "test/fuzz/scripted_peer.h"
#include "test/fuzz/server_records.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

namespace vu = uvio::iommu::vfio_user;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

fs::path g_out;

void write_seed(const std::string& target, const std::string& name, const Bytes& b) {
  fs::create_directories(g_out / target);
  std::ofstream f(g_out / target / name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::string fmt_name(const std::string& tag, size_t n) { return tag + "_" + std::to_string(n); }

template <class T>
void put(Bytes& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}

// One recorded exchange: the client's request and the server's answer.
struct Exchange {
  vu::Header req_header;
  Bytes req_payload;
  unsigned req_fds;
  Bytes reply_payload;
  unsigned reply_fds;
  uint32_t reply_error;
};

// Relays between the real client and the real server, recording each exchange.
void relay(int client, int server, std::vector<Exchange>* log) {
  for (;;) {
    auto req = vu::recv_message(client);
    if (!req) break;
    std::vector<int> fds;
    for (auto& fd : req->fds) fds.push_back(fd.get());
    if (!vu::send_message(server, req->header, req->payload, fds)) break;
    auto rep = vu::recv_message(server);
    if (!rep) break;
    log->push_back({req->header, req->payload, static_cast<unsigned>(req->fds.size()), rep->payload,
                    static_cast<unsigned>(rep->fds.size()),
                    (rep->header.flags & vu::kFlagError) ? rep->header.error : 0});
    std::vector<int> rfds;
    for (auto& fd : rep->fds) rfds.push_back(fd.get());
    if (!vu::send_message(client, rep->header, rep->payload, rfds)) break;
  }
  ::shutdown(client, SHUT_RDWR);
  ::close(client);
}

// A driver's whole life on the device: bring-up, one queue, I/O, shutdown. The server
// seeds then hold DMA_MAP, register programming and doorbells as a real driver sends them.
void drive_with_pmd(const char* type, uvio::iommu::Device& dev, uvio::Memory& mem) {
  if (std::string(type) == "nvme") {
    uvio::nvme::ControllerOptions opts;
    opts.io_queues_wanted = 1;
    auto ctrl = uvio::nvme::Controller::open(dev, mem, opts);
    if (!ctrl) return;
    auto qp = (*ctrl)->create_queue_pair({16, false});
    if (!qp || (*ctrl)->namespaces().empty()) return;
    void* buf = mem.alloc(4096, 4096);
    int done = 0;
    auto cb = [](void* ctx, uvio::nvme::IoStatus) { ++*static_cast<int*>(ctx); };
    if ((*qp)->submit_read((*ctrl)->namespaces()[0].id, buf, 0, 1, cb, &done) == 0)
      for (int i = 0; i < 1000000 && done == 0; ++i) (*qp)->poll(0);
    (void)(*ctrl)->destroy_queue_pair(*qp);
    mem.free(buf);
  } else {
    auto transport = uvio::virtio::open_pci_transport(dev);
    if (!transport) return;
    auto port = uvio::virtio::NetPort::create(mem, std::move(*transport), true);
    if (!port) return;
    auto pool = uvio::mbuf_pool_create(mem, "seed-rx", 255, 0);
    if (!pool) return;
    uvio::EthConfig cfg;
    cfg.ring_size = 32;
    cfg.rx_pool = pool->get();
    if ((*port)->configure(cfg) && (*port)->start()) {
      uvio::Mbuf* pkts[8];
      uint16_t n = (*port)->rx_burst(0, pkts, 8);
      uvio::mbuf_free_bulk(pkts, n);
      (*port)->stop();
    }
  }
}

std::vector<Exchange> record_session(const char* type, const uvio::emu::ModelArgs& args, uvio::Memory& mem,
                                     bool pmd) {
  auto model = uvio::emu::ModelRegistry::global().find(type)->create(args);
  auto server = uvio::emu::Server::create(std::move(*model));
  int to_server = *(*server)->connect();
  int sv[2];
  ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  std::vector<Exchange> log;
  std::thread t(relay, sv[1], to_server, &log);
  {
    uvio::iommu::DmaSpace space(mem);
    auto dev = uvio::iommu::open_vfio_user_fd(sv[0], "seed", space, {});
    if (!dev) {
      std::fprintf(stderr, "seed session: %s\n", dev.status().describe().c_str());
      std::exit(1);
    }
    if (pmd) {
      drive_with_pmd(type, **dev, mem);
      dev->reset();
      t.join();
      ::close(to_server);
      return log;
    }
    void* dirty = mem.alloc(64 * 4096, 4096);
    uvio::fuzz::exercise_vfio_user_client(**dev, mem.iova_of(dirty));
    // Beyond what the client target parses, what a driver also sends the server.
    uint32_t cc = 0;
    (void)(*dev)->region_write(uvio::iommu::kBar0, 0x14, &cc, sizeof(cc));
    (void)(*dev)->config_write(0x04, 2, 0x6);
    int efd = ::eventfd(0, EFD_CLOEXEC);
    (void)(*dev)->set_irq_eventfds(uvio::iommu::kMsixIrq, 0, std::span<const int>(&efd, 1));
    (void)(*dev)->disable_irqs(uvio::iommu::kMsixIrq);
    (void)(*dev)->reset();
    (void)(*dev)->set_mig_state(uvio::iommu::MigState::Stop);
    (void)(*dev)->set_mig_state(uvio::iommu::MigState::Resuming);
    uint8_t junk[64] = {};
    (void)(*dev)->mig_write(junk, sizeof(junk));
    ::close(efd);
    mem.free(dirty);
  }
  t.join();
  ::close(to_server);
  return log;
}

void vfio_user_seeds(uvio::Memory& mem) {
  const char* types[2] = {"nvme", "virtio-net"};
  uvio::emu::ModelArgs args[2] = {{{"size", "1M"}}, {}};
  for (int m = 0; m < 2; ++m) {
    auto log = record_session(types[m], args[m], mem, false);
    std::string tag = m == 0 ? "nvme" : "virtio_net";
    // Client: the server's answers, whole and cut after each exchange.
    Bytes client;
    for (size_t i = 0; i < log.size(); ++i) {
      uvio::fuzz::append_reply_record(client, log[i].reply_payload, log[i].reply_fds, log[i].reply_error);
      if (i + 1 == 2 || i + 1 == 12 || i + 1 == log.size())
        write_seed("vfio_user_client_fuzz", fmt_name(tag, i + 1), client);
    }
    // Client: the server reaching into the client's memory, once it is mapped (VERSION,
    // DEVICE_GET_INFO, DMA_MAP come first), inside it and beyond.
    Bytes dma;
    for (size_t i = 0; i < log.size(); ++i) {
      if (i == 3) {
        uvio::fuzz::append_server_dma_record(dma, false, 0x1000, {}, 64);
        uvio::fuzz::append_server_dma_record(dma, true, 0x2000, Bytes(32, 0xab), 32);
        uvio::fuzz::append_server_dma_record(dma, false, 1ull << 40, {}, 8);
      }
      uvio::fuzz::append_reply_record(dma, log[i].reply_payload, log[i].reply_fds, log[i].reply_error);
    }
    write_seed("vfio_user_client_fuzz", tag + "_server_dma", dma);
    // Server: the whole session, and VERSION followed by each other request alone.
    Bytes whole{static_cast<uint8_t>(m)};
    for (const auto& e : log)
      uvio::fuzz::append_request_record(whole, e.req_header, e.req_payload, e.req_fds,
                                        e.req_header.command == vu::kDeviceSetIrqs);
    write_seed("vfio_user_server_fuzz", tag + "_session", whole);
    std::map<uint16_t, int> kept;  // a few seeds per command: more add little
    for (size_t i = 1; i < log.size(); ++i) {
      uint16_t cmd = log[i].req_header.command;
      if (++kept[cmd] > (cmd == vu::kDeviceFeature ? 5 : 1)) continue;
      Bytes one{static_cast<uint8_t>(m)};
      uvio::fuzz::append_request_record(one, log[0].req_header, log[0].req_payload, 0, false);
      uvio::fuzz::append_request_record(one, log[i].req_header, log[i].req_payload, log[i].req_fds,
                                        log[i].req_header.command == vu::kDeviceSetIrqs);
      write_seed("vfio_user_server_fuzz", fmt_name(tag + "_" + vu::command_name(log[i].req_header.command), i), one);
    }
    // Server: a driver bringing the device up and doing I/O.
    Bytes driver{static_cast<uint8_t>(m)};
    for (const auto& e : record_session(types[m], args[m], mem, true))
      uvio::fuzz::append_request_record(driver, e.req_header, e.req_payload, e.req_fds,
                                        e.req_header.command == vu::kDeviceSetIrqs);
    write_seed("vfio_user_server_fuzz", tag + "_driver", driver);
  }
}

// ---- NVMe: a controller that answers everything well (nvme_fuzz.cc's format) ----

void nvme_completion(Bytes& b, uint8_t mode = 0, uint16_t cid = 0, uint16_t status = 0, uint32_t dw0 = 0) {
  put<uint8_t>(b, mode);
  put<uint16_t>(b, cid);
  put<uint16_t>(b, status);
  put<uint16_t>(b, 0);
  put<uint32_t>(b, dw0);
}

Bytes identify_controller(uint8_t mdts, uint32_t nn) {
  namespace spec = uvio::nvme::spec;
  Bytes page(spec::kIdentifyBytes, 0);
  std::memcpy(page.data() + spec::kIdSerial, "UVIOFUZZ0001        ", 20);
  std::memcpy(page.data() + spec::kIdModel, "uvio fuzz controller                    ", 40);
  std::memcpy(page.data() + spec::kIdFirmware, "1.0     ", 8);
  page[spec::kIdMdts] = mdts;
  uint16_t oncs = spec::kOncsWriteZeroes | spec::kOncsDsm;
  std::memcpy(page.data() + spec::kIdOncs, &oncs, 2);
  std::memcpy(page.data() + spec::kIdNn, &nn, 4);
  return page;
}

Bytes identify_namespace(uint64_t blocks, uint8_t lbads) {
  namespace spec = uvio::nvme::spec;
  Bytes page(spec::kIdentifyBytes, 0);
  std::memcpy(page.data() + spec::kNsSize, &blocks, 8);
  std::memcpy(page.data() + spec::kNsCapacity, &blocks, 8);
  uint32_t lbaf = uint32_t{lbads} << 16;
  std::memcpy(page.data() + spec::kNsLbaf0, &lbaf, 4);
  return page;
}

void nvme_seeds() {
  // CAP: MQES 1023, TO 1 (500 ms), DSTRD 0, CSS NVM (bit 37), MPSMIN 0.
  const uint64_t cap = 1023 | uint64_t{1} << 24 | uint64_t{1} << 37;
  for (int variant = 0; variant < 4; ++variant) {
    Bytes b;
    put<uint64_t>(b, cap);
    put<uint32_t>(b, variant == 1 ? 0x00010000 : 0x00010400);  // 1.0 has no active namespace list
    put<uint16_t>(b, 64);                                       // I/O queue entries
    auto id = identify_controller(5, 1);
    b.insert(b.end(), id.begin(), id.end());
    nvme_completion(b);
    if (variant != 1) {
      Bytes list(4096, 0);
      list[0] = 1;
      b.insert(b.end(), list.begin(), list.end());
      nvme_completion(b);
    }
    auto ns = identify_namespace(2048, variant == 2 ? 12 : 9);
    b.insert(b.end(), ns.begin(), ns.end());
    nvme_completion(b);
    nvme_completion(b, 0, 0, 0, 1u << 16 | 1u);  // Set Features, Number of Queues: 2 and 2
    nvme_completion(b);                           // Create I/O CQ
    nvme_completion(b);                           // Create I/O SQ
    for (int i = 0; i < 24; ++i) {
      switch (variant == 3 ? i % 4 : 0) {
        case 0: nvme_completion(b); break;
        case 1: nvme_completion(b, 2, 0, 0x0281); break;   // Unrecovered Read Error
        case 2: nvme_completion(b, 1, 0x7fff, 0); break;   // a command id never sent
        case 3: nvme_completion(b, 4, 0, 0); break;        // a stale phase tag
      }
    }
    write_seed("nvme_fuzz", "controller_" + std::to_string(variant), b);
  }
}

// ---- virtio-net: a device that returns every buffer well (virtio_net_fuzz.cc's format) ----

void virtio_seeds() {
  using namespace uvio::virtio;
  for (int variant = 0; variant < 4; ++variant) {
    bool packed = variant & 1, mergeable = variant & 2;
    Bytes b;
    uint64_t features = feature_bit(kFVersion1) | feature_bit(kFNetMac) | feature_bit(kFNetStatus) |
                        feature_bit(kFNetMtu) | (packed ? feature_bit(kFRingPacked) : 0) |
                        (mergeable ? feature_bit(kFNetMrgRxbuf) : 0);
    put<uint64_t>(b, features);
    uint8_t config[12] = {0x02, 0, 0, 0, 0, 1, kNetSLinkUp, 0, 1, 0, 0xdc, 0x05};  // MAC, status, pairs 1, MTU 1500
    b.insert(b.end(), config, config + sizeof(config));
    put<uint16_t>(b, 256);  // max queue size
    put<uint16_t>(b, 64);   // ring size
    put<uint8_t>(b, 0);     // no control queue
    for (int step = 0; step < 8; ++step) {
      bool tx = step % 2;
      put<uint8_t>(b, tx ? 1 : 0);
      put<uint8_t>(b, 4);
      for (uint32_t i = 0; i < 4; ++i) {
        uint32_t id = (step / 2) * 4 + i;
        put<uint32_t>(b, tx ? i : id % 64);
        put<uint32_t>(b, tx ? 0 : 12 + 60);
        put<uint16_t>(b, 1);
        put<uint16_t>(b, 0);
      }
      put<uint8_t>(b, tx ? 0 : 4);  // packets to send after this step
    }
    write_seed("virtio_net_fuzz", std::string(packed ? "packed" : "split") + (mergeable ? "_mergeable" : ""), b);
  }
}

// ---- EAL options: command lines as the documentation spells them, NUL-separated ----

void eal_seeds() {
  const std::vector<std::vector<std::string>> lines = {
      {"-l", "0-1", "--no-huge", "-m", "64"},
      {"-l", "0@0,1@0", "--main-lcore", "1", "--in-memory"},
      {"-a", "0000:03:00.0", "-a", "vfio-user:/tmp/nvme.sock", "--vfio-mode", "iommufd"},
      {"-b", "03:00.0", "--vfio-intr", "msi", "--vfio-vf-token", "14d63f20-8445-11ea-8900-1f9ce7d5650d"},
      {"--vdev", "emu_nvme0,size=64M,ns=1", "--vdev", "virtio_user0,path=/tmp/vhost.sock,queues=2"},
      {"--socket-mem", "64,0", "--huge-dir", "/dev/hugepages", "--iova-mode", "pa", "--file-prefix", "app"},
      {"--log-level", "debug", "--log-level", "nvme:info", "--control-socket", "none"},
      {"--migrate-listen", "tcp:127.0.0.1:4444", "--migrate-token", "secret", "--", "app-arg"},
      {"--help"},
      {"--version"},
  };
  int n = 0;
  for (const auto& line : lines) {
    Bytes b;
    for (size_t i = 0; i < line.size(); ++i) {
      if (i) b.push_back(0);
      b.insert(b.end(), line[i].begin(), line[i].end());
    }
    write_seed("eal_fuzz", "argv_" + std::to_string(n++), b);
  }
}

// ---- the migration stream, from mig/stream's encoders ----

void append_section(Bytes& out, uvio::mig::SectionType type, uint32_t id, const Bytes& payload) {
  Bytes h;
  put<uint32_t>(h, uvio::mig::kSectionMagic);
  put<uint16_t>(h, static_cast<uint16_t>(type));
  put<uint16_t>(h, 0);
  put<uint32_t>(h, id);
  put<uint32_t>(h, static_cast<uint32_t>(payload.size()));
  put<uint32_t>(h, uvio::mig::crc32c(payload));
  put<uint32_t>(h, uvio::mig::crc32c(h));
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), payload.begin(), payload.end());
}

void mig_seeds() {
  namespace mig = uvio::mig;
  mig::HelloPayload hello;
  hello.app = "testpmd";
  hello.token = "secret";
  hello.areas.push_back({0, 0x7f0000000000, 64u << 20, 0x7f0000000000, 2u << 20});
  hello.devices.push_back({"0000:03:00.0", 0x1af4, 0x1041, 0x020000});
  hello.participants = {"mempool", "ethdev"};
  Bytes page(4096, 0xa5);
  Bytes pass_end;
  put<uint32_t>(pass_end, 1);
  put<uint64_t>(pass_end, 4096);
  for (int mode = 0; mode < 2; ++mode) {
    Bytes s{static_cast<uint8_t>(mode)};
    append_section(s, mig::SectionType::Hello, 0, mig::encode_hello(hello));
    write_seed("mig_stream_fuzz", "hello_" + std::to_string(mode), s);
    append_section(s, mig::SectionType::Pages, 0, mig::encode_pages(0x7f0000000000, page.data(), 4096));
    append_section(s, mig::SectionType::PassEnd, 1, pass_end);
    append_section(s, mig::SectionType::DeviceState, 0, Bytes(100, 7));
    append_section(s, mig::SectionType::DeviceEnd, 0, {});
    append_section(s, mig::SectionType::Complete, 0, {});
    write_seed("mig_stream_fuzz", "stream_" + std::to_string(mode), s);
  }
  Bytes r{1};
  append_section(r, mig::SectionType::HelloReply, 0, mig::encode_reply({false, "token mismatch"}));
  append_section(r, mig::SectionType::Ack, 0, mig::encode_reply({true, ""}));
  append_section(r, mig::SectionType::Abort, 0, Bytes{'n', 'o'});
  write_seed("mig_stream_fuzz", "replies", r);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  uvio::log::set_global_level(uvio::log::Level::Emerg);
  uvio::MemConfig cfg;
  cfg.total_bytes = 6u << 20;
  cfg.hugepages = false;
  auto mem = uvio::Memory::create(cfg);
  if (!mem) return 1;
  vfio_user_seeds(**mem);
  nvme_seeds();
  virtio_seeds();
  eal_seeds();
  mig_seeds();
  return 0;
}
