// uvio-testpmd: forwards packets between Ethernet ports on worker lcores, in the
// manner of dpdk-testpmd, and prints per-port statistics.
//
//   uvio-testpmd [EAL options] -- [--forward-mode=io|mac|macswap|txonly|rxonly] ...
//
// Without -a or a network --vdev it runs on two emulated virtio-net ports linked back
// to back (emu_net0 <-> emu_net1).
#include <uvio/ethdev.h>
#include <uvio/mbuf.h>
#include <uvio/migrate.h>
#include <uvio/runtime.h>

#include "apps/testpmd/forward.h"
#include "apps/testpmd/options.h"
#include "iommu/device.h"
#include "iommu/mig_fsm.h"
#include "lib/state_io.h"

#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
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

// What a migration carries besides runtime memory: the counters of every stream.
struct StreamTotals {
  uint64_t rx_packets = 0, tx_packets = 0, fwd_drops = 0, generated = 0, busy_cycles = 0, busy_packets = 0;
};

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
  Status start_services();
  // Live migration (include/uvio/migrate.h): the participant that carries the pools'
  // and ports' driver state and the streams' counters.
  mig::Participant participant();
  void set_migration(mig::Migration* m) { migration_ = m; }
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
  void make_streams();
  StreamTotals totals() const;
  Status save(std::vector<uint8_t>& out);
  Status load(std::span<const uint8_t> in);
  void leave_after_migration();

  Runtime& rt_;
  Options opt_;
  std::vector<Port> ports_;
  std::vector<std::unique_ptr<Stream>> streams_;
  unsigned nb_cores_ = 0;
  std::atomic<bool> forwarding_{false};
  mig::Migration* migration_ = nullptr;
  // Counters that came with the migration: this process's own part is the rest.
  StreamTotals restored_{};
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
    // As DPDK's virtio_user: packed_vq=1 asks for packed rings, split rings otherwise.
    bool packed = false;
    if (const std::string* pv = v.arg("packed_vq")) {
      if (*pv != "0" && *pv != "1")
        return Status::error(EINVAL, fmt::format("--vdev {}: packed_vq={} must be 0 or 1", v.name, *pv));
      packed = *pv == "1";
    }
    auto eth = EthPort::open_vhost_user(rt_.memory(), *path, static_cast<uint16_t>(queues), packed);
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
  if (rt_.lcores().worker_lcores().empty())
    return Status::error(EINVAL, "testpmd forwards on worker lcores and has none: give at least two lcores (-l 0-1)");
  make_streams();
  return start_services();
}

void Testpmd::make_streams() {
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
      s->tx_limit = opt_.tx_count;
      streams_.push_back(std::move(s));
    }
  }
}

Status Testpmd::start_services() {
  std::vector<unsigned> workers = rt_.lcores().worker_lcores();
  if (workers.empty())
    return Status::error(EINVAL, "testpmd forwards on worker lcores and has none: give at least two lcores (-l 0-1)");
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

constexpr std::string_view kStateTag = "uvio-testpmd-state-v1";
constexpr uint32_t kMaxBlob = 64u << 20;

StreamTotals Testpmd::totals() const {
  StreamTotals t;
  for (auto& s : streams_) {
    t.rx_packets += s->rx_packets.get();
    t.tx_packets += s->tx_packets.get();
    t.fwd_drops += s->fwd_drops.get();
    t.generated += s->generated.get();
    t.busy_cycles += s->busy_cycles.get();
    t.busy_packets += s->busy_packets.get();
  }
  return t;
}

mig::Participant Testpmd::participant() {
  mig::Participant p;
  p.name = "testpmd";
  // The services are paused at their quiescent points: no stream holds a packet, so
  // there is nothing to finish before the devices stop.
  p.save = [this](std::vector<uint8_t>& out) { return save(out); };
  p.load = [this](std::span<const uint8_t> in) { return load(in); };
  return p;
}

Status Testpmd::save(std::vector<uint8_t>& out) {
  StateWriter w(out);
  w.put_string(kStateTag);
  w.put<uint8_t>(static_cast<uint8_t>(opt_.mode));
  w.put<uint16_t>(opt_.rxq);
  w.put<uint16_t>(opt_.txq);
  w.put<uint16_t>(opt_.txpkts);
  w.put<uint32_t>(static_cast<uint32_t>(ports_.size()));
  for (size_t i = 0; i < ports_.size(); i++) {
    std::vector<uint8_t> pool, eth;
    Status st = ports_[i].pool->save_state(pool);
    if (st) st = ports_[i].eth->save_state(eth);
    if (!st) return Status::error(st.code(), fmt::format("port {} ({}): {}", i, ports_[i].name, st.message()));
    w.put_string(ports_[i].name);
    w.put_string(std::string_view(reinterpret_cast<const char*>(pool.data()), pool.size()));
    w.put_string(std::string_view(reinterpret_cast<const char*>(eth.data()), eth.size()));
  }
  w.put<uint32_t>(static_cast<uint32_t>(streams_.size()));
  for (auto& s : streams_) {
    w.put<uint16_t>(s->rx_port_id);
    w.put<uint16_t>(s->rx_queue);
    w.put<uint16_t>(s->tx_port_id);
    w.put<uint16_t>(s->tx_queue);
    for (const StreamCounter* c : {&s->rx_packets, &s->tx_packets, &s->fwd_drops, &s->generated, &s->busy_cycles,
                                   &s->busy_packets})
      w.put<uint64_t>(c->get());
  }
  return Status::ok();
}

// Destination, inside receive(): the pools first (the ports find the mbufs' pools), then
// the ports on the devices of the same names, then the streams as the options build them.
Status Testpmd::load(std::span<const uint8_t> in) {
  StateReader r(in);
  std::string tag;
  uint8_t mode = 0;
  uint16_t rxq = 0, txq = 0, txpkts = 0;
  uint32_t n_ports = 0;
  if (!r.get_string(&tag, 64) || tag != kStateTag)
    return Status::error(EINVAL, "testpmd: the migrated state is not uvio-testpmd's (or of another version)");
  r.get(&mode), r.get(&rxq), r.get(&txq), r.get(&txpkts), r.get(&n_ports);
  if (!r.ok()) return Status::error(EINVAL, "testpmd: the migrated state is truncated");
  if (mode != static_cast<uint8_t>(opt_.mode) || rxq != opt_.rxq || txq != opt_.txq || txpkts != opt_.txpkts)
    return Status::error(EINVAL, fmt::format("testpmd: the source forwards in mode {} with {} RX / {} TX queues and "
                                             "{}-byte frames; start the destination with the same testpmd options",
                                             mode <= static_cast<uint8_t>(ForwardMode::RxOnly)
                                                 ? std::string(forward_mode_name(static_cast<ForwardMode>(mode)))
                                                 : std::to_string(mode),
                                             rxq, txq, txpkts));
  if (n_ports == 0 || n_ports > rt_.devices().size() + rt_.config().vdevs.size())
    return Status::error(EINVAL, fmt::format("testpmd: the source had {} ports, this process has {} devices", n_ports,
                                             rt_.devices().size()));
  for (uint32_t i = 0; i < n_ports; i++) {
    std::string name, pool_state, eth_state;
    if (!r.get_string(&name, 4096) || !r.get_string(&pool_state, kMaxBlob) || !r.get_string(&eth_state, kMaxBlob))
      return Status::error(EINVAL, "testpmd: the migrated state is truncated");
    const RuntimeDevice* dev = nullptr;
    for (const RuntimeDevice& d : rt_.devices())
      if (d.name == name && d.is_virtio_net()) dev = &d;
    if (!dev)
      return Status::error(ENODEV, fmt::format("testpmd: port {} was {} on the source; this process has no such "
                                               "virtio-net device (give the same -a / --vdev)", i, name));
    auto as_bytes = [](const std::string& b) {
      return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), b.size());
    };
    auto pool = mbuf_pool_restore(rt_.memory(), as_bytes(pool_state));
    if (!pool) return Status::error(pool.status().code(), fmt::format("port {} ({}) pool: {}", i, name, pool.status().message()));
    // Kept before the port: a failed port restore still leaves the pool owned.
    ports_.push_back(Port{name, std::move(*pool), nullptr, {}});
    auto eth = EthPort::restore(rt_.memory(), *dev->device, as_bytes(eth_state));
    if (!eth) return Status::error(eth.status().code(), fmt::format("port {} ({}): {}", i, name, eth.status().message()));
    ports_.back().eth = std::move(*eth);
  }
  make_streams();
  uint32_t n_streams = 0;
  if (!r.get(&n_streams) || n_streams != streams_.size())
    return Status::error(EINVAL, fmt::format("testpmd: the source had {} streams, these options make {}", n_streams,
                                             streams_.size()));
  for (auto& s : streams_) {
    uint16_t rx_port = 0, rx_queue = 0, tx_port = 0, tx_queue = 0;
    r.get(&rx_port), r.get(&rx_queue), r.get(&tx_port), r.get(&tx_queue);
    for (StreamCounter* c : {&s->rx_packets, &s->tx_packets, &s->fwd_drops, &s->generated, &s->busy_cycles,
                             &s->busy_packets}) {
      uint64_t v = 0;
      r.get(&v);
      c->clear();
      c->add(v);
    }
    if (!r.ok()) return Status::error(EINVAL, "testpmd: the migrated state is truncated");
    if (rx_port != s->rx_port_id || rx_queue != s->rx_queue || tx_port != s->tx_port_id || tx_queue != s->tx_queue)
      return Status::error(EINVAL, "testpmd: the source's streams differ from the ones these options make");
  }
  if (r.left() != 0) return Status::error(EINVAL, "testpmd: trailing bytes after the migrated state");
  restored_ = totals();
  return Status::ok();
}

// Source, once the destination has taken over: the devices, their rings and every mbuf
// belong to the destination now. The lcores stop where the migration paused them and
// nothing touches a device or a ring again.
void Testpmd::leave_after_migration() {
  rt_.services().stop();
  forwarding_.store(false);
  for (auto& p : ports_) {
    p.eth->release_after_migration();
    p.pool->release_objects();
  }
  const mig::Progress pr = migration_->progress();
  std::printf("Migrated: %s\n", pr.message.c_str());
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
    // A source that migrated no longer owns its devices: only the destination asks.
    if (!(migration_ && migration_->migrated()) && ports_[p].eth->link().needs_reset)
      std::printf("  Port %zu (%s): the device reported an error and stopped processing its queues (it needs "
                  "a reset)\n", p, ports_[p].name.c_str());
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
  if (migration_ && (migration_->migrated() || migration_->incoming())) {
    // This process's own part (a destination's counters began at the source's), so
    // that the source's and the destination's lines add up to the whole run.
    StreamTotals t = totals();
    std::printf("MIGRATION-TOTALS role=%s generated=%lu sent=%lu tx_dropped=%lu received=%lu\n",
                migration_->incoming() ? "destination" : "source", t.generated - restored_.generated,
                t.tx_packets - restored_.tx_packets, t.fwd_drops - restored_.fwd_drops,
                t.rx_packets - restored_.rx_packets);
  }
  std::fflush(stdout);
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
    if (migration_ && migration_->migrated()) {
      leave_after_migration();
      print_stats(true);
      return 0;
    }
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
  // Live migration: "uvio-migrate send" on the control socket moves this process to a
  // destination started with the same options and --migrate-listen (doc/migration.md).
  mig::Migration migration(*app.runtime);
  pmd.set_migration(&migration);
  migration.add_participant(pmd.participant());
  Status s;
  if (migration.incoming()) {
    // Nothing may be created in runtime memory before the source's memory is in.
    s = migration.receive();
    if (!s) {
      std::fprintf(stderr, "%s: the migration failed: %s\n", argv[0], s.message().c_str());
      return 1;
    }
    std::printf("Migration received: forwarding goes on from the source's state\n");
    for (const RuntimeDevice& d : app.runtime->devices()) {
      auto state = d.device->mig_state();
      if (!state || *state != iommu::MigState::Running)
        std::fprintf(stderr, "%s: warning: %s is not RUNNING after the migration (%s)\n", argv[0], d.name.c_str(),
                     state ? std::string(iommu::mig_state_name(*state)).c_str() : state.status().message().c_str());
    }
    s = pmd.start_services();
  } else {
    s = pmd.open_ports();
    if (s) s = pmd.start_ports();
    if (s) s = pmd.build_streams();
  }
  if (!s) {
    std::fprintf(stderr, "%s: %s\n", argv[0], s.message().c_str());
    return 1;
  }
  return pmd.run();
}
