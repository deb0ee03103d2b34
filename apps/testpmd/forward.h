// testpmd's forwarding streams: each takes packets from one port's RX queue and hands
// them to a TX queue (io, mac, macswap), only receives (rxonly), or generates (txonly).
// A stream belongs to one lcore; its counters have that single writer and are read by
// the main lcore for statistics.
#pragma once

#include <uvio/ethdev.h>
#include <uvio/mbuf.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

namespace uvio::testpmd {

enum class ForwardMode { Io, Mac, MacSwap, TxOnly, RxOnly };
bool parse_forward_mode(std::string_view text, ForwardMode* out);
std::string_view forward_mode_name(ForwardMode mode);

inline constexpr uint16_t kMaxBurst = 512;

// A counter with one writer: a relaxed load and store, no locked instruction.
struct StreamCounter {
  std::atomic<uint64_t> v{0};
  void add(uint64_t n) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return v.load(std::memory_order_relaxed); }
  void clear() { v.store(0, std::memory_order_relaxed); }
};

struct Stream {
  EthPort* rx_port = nullptr;
  uint16_t rx_queue = 0;
  EthPort* tx_port = nullptr;
  uint16_t tx_queue = 0;
  uint16_t rx_port_id = 0;
  uint16_t tx_port_id = 0;
  ForwardMode mode = ForwardMode::Io;
  uint16_t burst = 32;
  // mac mode: the addresses written into forwarded frames.
  std::array<uint8_t, 6> eth_src{};
  std::array<uint8_t, 6> eth_dst{};
  // txonly: where generated packets come from and what they look like.
  Mempool* tx_pool = nullptr;
  const std::byte* tx_template = nullptr;
  uint16_t tx_len = 64;
  uint64_t tx_limit = 0;  // txonly: stop generating after this many frames sent (0: never)

  StreamCounter rx_packets;
  StreamCounter tx_packets;
  StreamCounter fwd_drops;   // taken from RX (or generated) but refused by TX, then freed
  StreamCounter generated;   // txonly
  StreamCounter busy_cycles; // cycles in steps that moved packets
  StreamCounter busy_packets;
};

// One pass over the stream: at most one RX burst and one TX burst. Returns packets moved.
uint16_t forward_step(Stream& s);

// Ethernet + IPv4 + UDP frame of `len` bytes (>= 42) from src to dst, checksum filled.
void build_udp_template(std::byte* out, uint16_t len, const std::array<uint8_t, 6>& src,
                        const std::array<uint8_t, 6>& dst);

}  // namespace uvio::testpmd
