// uvio-testpmd: forwards packets between Ethernet ports on worker lcores, in the
// manner of dpdk-testpmd, and prints per-port statistics.
//
//   uvio-testpmd [EAL options] -- [--forward-mode=io|mac|macswap|txonly|rxonly] ...
//
// Without -a or a network --vdev it runs on two emulated virtio-net ports linked back
// to back (emu_net0 <-> emu_net1).
#include <uvio/ethdev.h>
#include <uvio/mbuf.h>
#include <uvio/runtime.h>

#include "apps/testpmd/forward.h"
#include "apps/testpmd/options.h"

#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace uvio::testpmd {
namespace {

std::atomic<bool> g_quit{false};
void on_signal(int) { g_quit.store(true, std::memory_order_relaxed); }

bool is_net_vdev(const VdevSpec& v) { return v.name.rfind("emu_net", 0) == 0 || v.name.rfind("virtio_user", 0) == 0; }

struct Port {
  std::string name;
  std::unique_ptr<Mempool> pool;
  std::unique_ptr<EthPort> eth;
  std::vector<std::byte> tx_template;
};

class Testpmd {
 public:
  Testpmd(Runtime& rt, const Options& opt) : rt_(rt), opt_(opt) {}

  Status open_ports();
  Status start_ports();
  Status build_streams();
  void start_forwarding() {
    if (forwarding_.exchange(true)) {
      std::printf("Packet forwarding already started\n");
      return;
    }
    std::printf("Start %s forwarding on %zu streams, %u cores\n", std::string(forward_mode_name(opt_.mode)).c_str(),
                streams_.size(), nb_cores_);
  }
  void stop_forwarding(bool print = true) {
    if (!forwarding_.exchange(false)) {
      if (print) std::printf("Packet forwarding not started\n");
      return;
    }
    // Every lcore finishes its step and parks: nothing is in a stream's hands now.
    rt_.services().pause();
    drain_receivers();
    rt_.services().resume();
    if (print) print_stats(true);
  }
  void print_stats(bool final);
  void clear_stats();
  void shutdown();
  int run();

 private:
  void drain_receivers();

  Runtime& rt_;
  Options opt_;
  std::vector<Port> ports_;
  std::vector<std::unique_ptr<Stream>> streams_;
  unsigned nb_cores_ = 0;
  std::atomic<bool> forwarding_{false};
};

Status Testpmd::open_ports() {
  for (const RuntimeDevice& d : rt_.devices()) {
    if (!d.is_virtio_net()) continue;
    auto eth = EthPort::open(rt_.memory(), *d.device);
    if (!eth) return Status::error(eth.status().code(), fmt::format("{}: {}", d.name, eth.status().message()));
    ports_.push_back(Port{d.name, nullptr, std::move(*eth), {}});
  }
  for (const VdevSpec& v : rt_.config().vdevs) {
    if (v.name.rfind("virtio_user", 0) != 0) continue;
    const std::string* path = v.arg("path");
    if (!path) return Status::error(EINVAL, fmt::format("--vdev {}: path=SOCKET is required", v.name));
    unsigned long queues = 1;
    if (const std::string* q = v.arg("queues")) {
      char* end = nullptr;
      queues = std::strtoul(q->c_str(), &end, 10);
      if (*end != 0 || queues < 1 || queues > 128)
        return Status::error(EINVAL, fmt::format("--vdev {}: queues={} must be from 1 to 128", v.name, *q));
    }
    auto eth = EthPort::open_vhost_user(rt_.memory(), *path, static_cast<uint16_t>(queues));
    if (!eth) return Status::error(eth.status().code(), fmt::format("--vdev {}: {}", v.name, eth.status().message()));
    ports_.push_back(Port{v.name, nullptr, std::move(*eth), {}});
  }
  if (ports_.empty())
    return Status::error(ENODEV, "no Ethernet port: give -a with a virtio-net device, --vdev emu_netN or "
                                 "--vdev virtio_userN,path=SOCKET");
  return Status::ok();
}

Status Testpmd::start_ports() {
  unsigned lcores = static_cast<unsigned>(rt_.lcores().lcores().size());
  for (size_t i = 0; i < ports_.size(); i++) {
    Port& p = ports_[i];
    uint16_t queues = std::max(opt_.rxq, opt_.txq);
    if (queues > p.eth->max_queue_pairs())
      return Status::error(EINVAL, fmt::format("port {} ({}): {} queues asked, it has {} queue pairs", i, p.name,
                                               queues, p.eth->max_queue_pairs()));
    // RX rings full, TX rings full, a burst in each stream's hands, and lcore caches.
    uint32_t count = 2u * queues * opt_.ring_size + 4u * kMaxBurst + 256u * (lcores + 1);
    auto pool = mbuf_pool_create(rt_.memory(), fmt::format("mbuf_pool_{}", i), count, 256);
    if (!pool) return Status::error(pool.status().code(), fmt::format("port {}: {}", i, pool.status().message()));
    p.pool = std::move(*pool);
    EthConfig cfg;
    cfg.rx_queues = opt_.rxq;
    cfg.tx_queues = opt_.txq;
    cfg.ring_size = opt_.ring_size;
    cfg.rx_pool = p.pool.get();
    cfg.port_id = static_cast<uint16_t>(i);
    UVIO_TRY(p.eth->configure(cfg));
    UVIO_TRY(p.eth->start());
    auto mac = p.eth->mac();
    EthLink link = p.eth->link();
    std::printf("Port %zu (%s): %02x:%02x:%02x:%02x:%02x:%02x, link %s, mtu %u, %u RX / %u TX queues\n", i,
                p.name.c_str(), mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], link.up ? "up" : "down", link.mtu,
                opt_.rxq, opt_.txq);
  }
  return Status::ok();
}

Status Testpmd::build_streams() {
  std::vector<unsigned> workers = rt_.lcores().worker_lcores();
  if (workers.empty())
    return Status::error(EINVAL, "testpmd forwards on worker lcores and has none: give at least two lcores (-l 0-1)");
  size_t n_ports = ports_.size();
  for (size_t p = 0; p < n_ports; p++) {
    // Ports pair up 0<->1, 2<->3; an odd last port forwards to itself.
    size_t peer = (p % 2 == 0) ? (p + 1 < n_ports ? p + 1 : p) : p - 1;
    ports_[p].tx_template.resize(opt_.txpkts);
    build_udp_template(ports_[p].tx_template.data(), opt_.txpkts, ports_[p].eth->mac(), ports_[peer].eth->mac());
    for (uint16_t q = 0; q < opt_.rxq; q++) {
      auto s = std::make_unique<Stream>();
      s->rx_port = ports_[p].eth.get();
      s->rx_port_id = static_cast<uint16_t>(p);
      s->rx_queue = q;
      // txonly generates on the stream's own port; the others forward to the peer.
      size_t tx = opt_.mode == ForwardMode::TxOnly ? p : peer;
      s->tx_port = ports_[tx].eth.get();
      s->tx_port_id = static_cast<uint16_t>(tx);
      s->tx_queue = static_cast<uint16_t>(q % opt_.txq);
      s->mode = opt_.mode;
      s->burst = opt_.burst;
      s->eth_src = ports_[tx].eth->mac();
      s->eth_dst = ports_[tx == p ? peer : p].eth->mac();
      s->tx_pool = ports_[tx].pool.get();
      s->tx_template = ports_[tx].tx_template.data();
      s->tx_len = opt_.txpkts;
      streams_.push_back(std::move(s));
    }
  }
  if (opt_.nb_cores > workers.size())
    return Status::error(EINVAL, fmt::format("--nb-cores={}: only {} worker lcores (give more with -l)", opt_.nb_cores,
                                             workers.size()));
  nb_cores_ = opt_.nb_cores ? opt_.nb_cores : static_cast<unsigned>(std::min(streams_.size(), workers.size()));
  for (size_t i = 0; i < streams_.size(); i++) {
    Stream* s = streams_[i].get();
    unsigned lcore = workers[i % nb_cores_];
    rt_.services().add(lcore, fmt::format("fwd-{}-{}", s->rx_port_id, s->rx_queue), [this, s] {
      if (forwarding_.load(std::memory_order_relaxed)) {
        forward_step(*s);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // stopped: do not burn the CPU
      }
    });
  }
  return rt_.services().start(rt_.lcores());
}

// After a stop, packets still on their way are received and counted, so that the
// accounting adds up.
void Testpmd::drain_receivers() {
  Mbuf* pkts[kMaxBurst];
  auto quiet_since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - quiet_since < std::chrono::milliseconds(100)) {
    for (auto& s : streams_) {
      uint16_t n = s->rx_port->rx_burst(s->rx_queue, pkts, kMaxBurst);
      if (n) {
        s->rx_packets.add(n);
        mbuf_free_bulk(pkts, n);
        quiet_since = std::chrono::steady_clock::now();
      }
    }
  }
}

void Testpmd::print_stats(bool final) {
  uint64_t generated = 0, fwd_drops = 0, rx_total = 0, tx_total = 0, busy_cycles = 0, busy_packets = 0;
  for (size_t p = 0; p < ports_.size(); p++) {
    uint64_t drops = 0;
    for (auto& s : streams_) {
      if (s->tx_port_id == p) drops += s->fwd_drops.get();
    }
    EthStats st = ports_[p].eth->stats();
    std::printf("  ---------------------- %s statistics for port %zu  ----------------------\n",
                final ? "Forward" : "Port", p);
    std::printf("  RX-packets: %-14lu RX-bytes: %-14lu RX-errors: %-10lu RX-nombuf: %lu\n", st.rx_packets,
                st.rx_bytes, st.rx_errors, st.rx_nombuf);
    std::printf("  TX-packets: %-14lu TX-bytes: %-14lu TX-errors: %-10lu TX-dropped: %lu\n", st.tx_packets,
                st.tx_bytes, st.tx_errors, drops);
    rx_total += st.rx_packets;
    tx_total += st.tx_packets;
  }
  for (auto& s : streams_) {
    generated += s->generated.get();
    fwd_drops += s->fwd_drops.get();
    busy_cycles += s->busy_cycles.get();
    busy_packets += s->busy_packets.get();
  }
  if (!final) return;
  std::printf("  +++++++++++++++ Accumulated forward statistics for all ports +++++++++++++++\n");
  std::printf("  RX-packets: %-14lu TX-packets: %-14lu TX-dropped: %lu\n", rx_total, tx_total, fwd_drops);
  if (opt_.mode == ForwardMode::TxOnly) {
    bool adds_up = generated == tx_total + fwd_drops;
    std::printf("  Accounting: generated %lu = sent %lu + dropped at TX %lu: %s\n", generated, tx_total, fwd_drops,
                adds_up ? "every generated packet is sent or counted as dropped" : "MISMATCH");
  }
  // Ports in this process linked to each other: what was sent and not received was
  // dropped by the receiving device (no RX buffer), which virtio does not report.
  std::printf("  Sent %lu, received %lu: %lu not received (dropped by the peer for lack of RX buffers, or "
              "sent to a peer outside this process)\n",
              tx_total, rx_total, tx_total > rx_total ? tx_total - rx_total : 0);
  if (busy_packets)
    std::printf("  CPU cycles/packet on the forwarding lcores: %.1f\n",
                static_cast<double>(busy_cycles) / static_cast<double>(busy_packets));
}

void Testpmd::clear_stats() {
  for (auto& p : ports_) p.eth->reset_stats();
  for (auto& s : streams_) {
    for (StreamCounter* c : {&s->rx_packets, &s->tx_packets, &s->fwd_drops, &s->generated, &s->busy_cycles,
                             &s->busy_packets})
      c->clear();
  }
}

void Testpmd::shutdown() {
  stop_forwarding(false);
  rt_.services().stop();
  print_stats(true);
  for (auto& p : ports_) p.eth->stop();
}

int Testpmd::run() {
  if (opt_.auto_start || !opt_.interactive) start_forwarding();
  auto next_stats = std::chrono::steady_clock::now() + std::chrono::seconds(opt_.stats_period);
  if (opt_.interactive) {
    std::printf("testpmd> ");
    std::fflush(stdout);
  }
  std::string line;
  while (!g_quit.load(std::memory_order_relaxed)) {
    if (opt_.stats_period && std::chrono::steady_clock::now() >= next_stats) {
      print_stats(false);
      next_stats += std::chrono::seconds(opt_.stats_period);
    }
    if (!opt_.interactive) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    pollfd in{STDIN_FILENO, POLLIN, 0};
    if (::poll(&in, 1, 100) <= 0) continue;
    if (!std::getline(std::cin, line)) break;  // end of input: quit
    if (line == "start") {
      start_forwarding();
    } else if (line == "stop") {
      stop_forwarding();
    } else if (line == "show port stats all") {
      print_stats(false);
    } else if (line == "clear port stats all") {
      clear_stats();
    } else if (line == "quit") {
      break;
    } else if (!line.empty()) {
      std::printf("unknown command: %s (start, stop, show port stats all, clear port stats all, quit)\n",
                  line.c_str());
    }
    std::printf("testpmd> ");
    std::fflush(stdout);
  }
  shutdown();
  return 0;
}

}  // namespace
}  // namespace uvio::testpmd

int main(int argc, char** argv) {
  using namespace uvio;
  // testpmd's own options are checked before the runtime takes memory and devices.
  int sep = 1;
  while (sep < argc && std::string_view(argv[sep]) != "--") sep++;
  if (sep < argc) {
    std::vector<char*> own{argv[0]};
    own.insert(own.end(), argv + sep + 1, argv + argc);
    auto early = testpmd::parse_options(static_cast<int>(own.size()), own.data());
    if (!early) {
      std::fprintf(stderr, "%s: %s\n", argv[0], early.status().message().c_str());
      return 2;
    }
    if (early->help) {
      std::printf("Usage: %s [EAL options] -- [testpmd options]\n\n%s", argv[0], testpmd::usage().c_str());
      return 0;
    }
  }
  EalApp app = eal_init_or_exit(argc, argv, testpmd::usage(), [](EalConfig& cfg) {
    bool has_net = std::any_of(cfg.vdevs.begin(), cfg.vdevs.end(), testpmd::is_net_vdev);
    if (cfg.allow.empty() && !has_net) {
      cfg.vdevs.push_back(VdevSpec{"emu_net0", {{"peer", "emu_net1"}, {"mac", "52:54:00:00:00:01"}}});
      cfg.vdevs.push_back(VdevSpec{"emu_net1", {{"peer", "emu_net0"}, {"mac", "52:54:00:00:00:02"}}});
    }
  });
  auto opts = testpmd::parse_options(app.argc, app.argv);
  if (!opts) {
    std::fprintf(stderr, "%s: %s\n", argv[0], opts.status().message().c_str());
    return 2;
  }
  if (opts->help) {
    std::printf("%s", testpmd::usage().c_str());
    return 0;
  }
  std::signal(SIGINT, testpmd::on_signal);
  std::signal(SIGTERM, testpmd::on_signal);
  testpmd::Testpmd pmd(*app.runtime, *opts);
  Status s = pmd.open_ports();
  if (s) s = pmd.start_ports();
  if (s) s = pmd.build_streams();
  if (!s) {
    std::fprintf(stderr, "%s: %s\n", argv[0], s.message().c_str());
    return 1;
  }
  return pmd.run();
}
