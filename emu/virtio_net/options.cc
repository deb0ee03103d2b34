#include "emu/virtio_net/options.h"

#include <fmt/format.h>

#include <bit>
#include <charconv>

namespace uvio::emu::virtio_net {
namespace {

bool parse_uint(std::string_view text, uint32_t min, uint32_t max, uint32_t* out) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) return false;
  *out = value;
  return true;
}

bool parse_mac(std::string_view text, std::array<uint8_t, 6>* out) {
  std::array<uint8_t, 6> mac{};
  size_t at = 0;
  for (size_t i = 0; i < 6; i++) {
    if (i > 0) {
      if (at >= text.size() || text[at] != ':') return false;
      at++;
    }
    if (at + 2 > text.size()) return false;
    auto [end, ec] = std::from_chars(text.data() + at, text.data() + at + 2, mac[i], 16);
    if (ec != std::errc() || end != text.data() + at + 2) return false;
    at += 2;
  }
  if (at != text.size()) return false;
  // A multicast station address would make every frame to it a broadcast.
  if (mac[0] & 1) return false;
  *out = mac;
  return true;
}

bool parse_faults(std::string_view text, uint32_t* out) {
  uint32_t faults = 0;
  while (!text.empty()) {
    size_t plus = text.find('+');
    std::string_view name = text.substr(0, plus);
    if (name == "used-id-range") faults |= kFaultUsedIdRange;
    else if (name == "used-id-repeat") faults |= kFaultUsedIdRepeat;
    else if (name == "used-len") faults |= kFaultUsedLen;
    else if (name == "config-change") faults |= kFaultConfigChange;
    else if (name == "stall") faults |= kFaultStall;
    else if (name == "used-wrap") faults |= kFaultUsedWrap;
    else if (name == "device-error") faults |= kFaultDeviceError;
    else return false;
    text = plus == std::string_view::npos ? std::string_view() : text.substr(plus + 1);
  }
  *out = faults;
  return true;
}

Status bad(std::string_view key, std::string_view value, std::string_view expected) {
  return Status::error(EINVAL, fmt::format("virtio-net: {}={} is invalid: expected {}", key, value, expected));
}

}  // namespace

Status apply_option(Options& options, std::string_view key, std::string_view value) {
  uint32_t n = 0;
  if (key == "queues") {
    if (!parse_uint(value, 1, kMaxQueuePairs, &n)) return bad(key, value, "a queue pair count from 1 to 32");
    options.queue_pairs = static_cast<uint16_t>(n);
  } else if (key == "mac") {
    if (!parse_mac(value, &options.mac)) return bad(key, value, "a unicast address like 52:54:00:12:34:56");
  } else if (key == "mtu") {
    if (!parse_uint(value, 68, 9000, &n)) return bad(key, value, "an MTU from 68 to 9000");
    options.mtu = static_cast<uint16_t>(n);
  } else if (key == "queue_size") {
    if (!parse_uint(value, 2, 1024, &n) || !std::has_single_bit(n))
      return bad(key, value, "a power of two from 2 to 1024");
    options.queue_size = static_cast<uint16_t>(n);
  } else if (key == "loopback" || key == "event_idx" || key == "indirect" || key == "packed") {
    if (!parse_uint(value, 0, 1, &n)) return bad(key, value, "0 or 1");
    bool& flag = key == "loopback"    ? options.loopback
                 : key == "event_idx" ? options.event_idx
                 : key == "indirect"  ? options.indirect
                                      : options.packed;
    flag = n != 0;
  } else if (key == "peer") {
    if (value.empty()) return bad(key, value, "a link name shared with the other port");
    options.peer = std::string(value);
  } else if (key == "faults") {
    if (!parse_faults(value, &options.faults))
      return bad(key, value,
                 "fault names joined by '+': used-id-range, used-id-repeat, used-len, used-wrap, config-change, device-error, stall");
  } else {
    return Status::error(EINVAL, fmt::format("virtio-net: unknown option '{}' (known: queues, mac, mtu, queue_size, "
                                             "loopback, peer, event_idx, indirect, packed, faults)", key));
  }
  if (options.loopback && !options.peer.empty())
    return Status::error(EINVAL, "virtio-net: loopback=1 and peer= exclude each other");
  return Status::ok();
}

Result<Options> parse_options(std::string_view text) {
  Options options;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return Status::error(EINVAL, fmt::format("virtio-net: option '{}' is not key=value", item));
    UVIO_TRY(apply_option(options, item.substr(0, eq), item.substr(eq + 1)));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return options;
}

}  // namespace uvio::emu::virtio_net
