#include "apps/testpmd/forward.h"

#include <uvio/cycles.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace uvio::testpmd {
namespace {

constexpr uint16_t kEthHeader = 14;

void write_macs(Mbuf* m, const std::array<uint8_t, 6>& dst, const std::array<uint8_t, 6>& src) {
  if (m->data_len < kEthHeader) return;
  std::byte* eth = m->data();
  std::memcpy(eth, dst.data(), 6);
  std::memcpy(eth + 6, src.data(), 6);
}

void swap_macs(Mbuf* m) {
  if (m->data_len < kEthHeader) return;
  std::byte* eth = m->data();
  std::byte tmp[6];
  std::memcpy(tmp, eth, 6);
  std::memcpy(eth, eth + 6, 6);
  std::memcpy(eth + 6, tmp, 6);
}

}  // namespace

bool parse_forward_mode(std::string_view text, ForwardMode* out) {
  static constexpr std::pair<std::string_view, ForwardMode> kModes[] = {
      {"io", ForwardMode::Io},         {"mac", ForwardMode::Mac},       {"macswap", ForwardMode::MacSwap},
      {"txonly", ForwardMode::TxOnly}, {"rxonly", ForwardMode::RxOnly},
  };
  for (auto& [name, mode] : kModes) {
    if (text == name) {
      *out = mode;
      return true;
    }
  }
  return false;
}

std::string_view forward_mode_name(ForwardMode mode) {
  switch (mode) {
    case ForwardMode::Io: return "io";
    case ForwardMode::Mac: return "mac";
    case ForwardMode::MacSwap: return "macswap";
    case ForwardMode::TxOnly: return "txonly";
    case ForwardMode::RxOnly: return "rxonly";
  }
  return "?";
}

uint16_t forward_step(Stream& s) {
  Mbuf* pkts[kMaxBurst];
  uint64_t start = cycles();
  uint16_t n = s.rx_port->rx_burst(s.rx_queue, pkts, s.burst);
  const uint16_t received = n;
  if (n) s.rx_packets.add(n);
  switch (s.mode) {
    case ForwardMode::Io:
      break;
    case ForwardMode::Mac:
      for (uint16_t i = 0; i < n; i++) write_macs(pkts[i], s.eth_dst, s.eth_src);
      break;
    case ForwardMode::MacSwap:
      for (uint16_t i = 0; i < n; i++) swap_macs(pkts[i]);
      break;
    case ForwardMode::RxOnly:
    case ForwardMode::TxOnly:
      // Received packets end here; txonly also drains what its peer sends it.
      if (n) mbuf_free_bulk(pkts, n);
      n = 0;
      break;
  }
  if (s.mode == ForwardMode::TxOnly) {
    uint16_t want = s.burst;
    if (s.tx_limit) {
      uint64_t left = s.tx_limit - std::min(s.tx_limit, s.tx_packets.get());
      want = static_cast<uint16_t>(std::min<uint64_t>(want, left));
    }
    if (want && mbuf_alloc_bulk(*s.tx_pool, pkts, want)) {
      for (uint16_t i = 0; i < want; i++) {
        Mbuf* m = pkts[i];
        std::memcpy(m->data(), s.tx_template, s.tx_len);
        m->data_len = s.tx_len;
        m->pkt_len = s.tx_len;
      }
      n = want;
      s.generated.add(n);
    }
  }
  uint16_t sent = 0;
  if (n) {
    sent = s.tx_port->tx_burst(s.tx_queue, pkts, n);
    s.tx_packets.add(sent);
    if (sent < n) {
      s.fwd_drops.add(n - sent);
      mbuf_free_bulk(pkts + sent, n - sent);
    }
  }
  // As dpdk-testpmd's --record-core-cycles: packets sent for txonly, received otherwise.
  uint16_t counted = s.mode == ForwardMode::TxOnly ? sent : received;
  if (counted) {
    s.busy_cycles.add(cycles() - start);
    s.busy_packets.add(counted);
  }
  return static_cast<uint16_t>(received + sent);
}

void build_udp_template(std::byte* out, uint16_t len, const std::array<uint8_t, 6>& src,
                        const std::array<uint8_t, 6>& dst) {
  std::memset(out, 0, len);
  auto* p = reinterpret_cast<uint8_t*>(out);
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  p[12] = 0x08;  // IPv4
  p[13] = 0x00;
  uint8_t* ip = p + kEthHeader;
  uint16_t ip_len = static_cast<uint16_t>(len - kEthHeader);
  ip[0] = 0x45;  // version 4, 20-byte header
  ip[2] = static_cast<uint8_t>(ip_len >> 8);
  ip[3] = static_cast<uint8_t>(ip_len);
  ip[8] = 64;  // TTL
  ip[9] = 17;  // UDP
  const uint8_t src_ip[4] = {198, 18, 0, 1}, dst_ip[4] = {198, 18, 0, 2};  // RFC 2544 benchmarking range
  std::memcpy(ip + 12, src_ip, 4);
  std::memcpy(ip + 16, dst_ip, 4);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += (ip[i] << 8) | ip[i + 1];
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  uint16_t csum = static_cast<uint16_t>(~sum);
  ip[10] = static_cast<uint8_t>(csum >> 8);
  ip[11] = static_cast<uint8_t>(csum);
  uint8_t* udp = ip + 20;
  uint16_t udp_len = static_cast<uint16_t>(ip_len - 20);
  udp[0] = 0x04; udp[1] = 0x00;  // ports 1024 -> 1025
  udp[2] = 0x04; udp[3] = 0x01;
  udp[4] = static_cast<uint8_t>(udp_len >> 8);
  udp[5] = static_cast<uint8_t>(udp_len);
}

}  // namespace uvio::testpmd
