#include "apps/testpmd/options.h"

#include <fmt/format.h>

#include <charconv>
#include <string_view>

namespace uvio::testpmd {
namespace {

bool parse_uint(std::string_view text, unsigned long min, unsigned long max, unsigned long* out) {
  unsigned long v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < min || v > max) return false;
  *out = v;
  return true;
}

}  // namespace

std::string usage() {
  return "testpmd options (after --):\n"
         "  --forward-mode=MODE  io (default), mac, macswap, txonly, rxonly\n"
         "  --burst=N            packets per burst, 1..512 (32)\n"
         "  --rxq=N --txq=N      queues per port (1)\n"
         "  --rxd=N --txd=N      descriptors per queue (256)\n"
         "  --nb-cores=N         forwarding lcores (default: one per stream, up to the workers)\n"
         "  --txpkts=N           txonly frame length in bytes, 42..1514 (64)\n"
         "  --tx-count=N         txonly: each stream stops generating once it has sent N frames\n"
         "                       (0, the default: no limit); for a receiver that must see them all\n"
         "  --stats-period=N     print port statistics every N seconds\n"
         "  -i, --interactive    prompt: start, stop, show port stats all, clear port stats all, quit\n"
         "  --auto-start         start forwarding at once (the default without -i)\n"
         "  --help               this text\n";
}

Result<Options> parse_options(int argc, char* const argv[]) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string_view arg = argv[i];
    std::string_view key = arg, value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      key = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    auto need = [&](unsigned long min, unsigned long max, unsigned long* out) -> Status {
      if (!has_value) return Status::error(EINVAL, fmt::format("{} needs a value ({}=N)", key, key));
      if (!parse_uint(value, min, max, out))
        return Status::error(EINVAL, fmt::format("{}={}: expected a number from {} to {}", key, value, min, max));
      return Status::ok();
    };
    unsigned long v = 0;
    if (key == "--forward-mode") {
      if (!has_value || !parse_forward_mode(value, &o.mode))
        return Status::error(EINVAL, fmt::format("--forward-mode={}: expected io, mac, macswap, txonly or rxonly",
                                                 value));
    } else if (key == "--burst") {
      UVIO_TRY(need(1, kMaxBurst, &v));
      o.burst = static_cast<uint16_t>(v);
    } else if (key == "--rxq") {
      UVIO_TRY(need(1, 128, &v));
      o.rxq = static_cast<uint16_t>(v);
    } else if (key == "--txq") {
      UVIO_TRY(need(1, 128, &v));
      o.txq = static_cast<uint16_t>(v);
    } else if (key == "--rxd" || key == "--txd") {
      UVIO_TRY(need(2, 32768, &v));
      o.ring_size = static_cast<uint16_t>(v);
    } else if (key == "--nb-cores") {
      UVIO_TRY(need(1, 127, &v));
      o.nb_cores = static_cast<unsigned>(v);
    } else if (key == "--txpkts") {
      UVIO_TRY(need(42, 1514, &v));
      o.txpkts = static_cast<uint16_t>(v);
    } else if (key == "--tx-count") {
      UVIO_TRY(need(0, ~0ul, &v));
      o.tx_count = v;
    } else if (key == "--stats-period") {
      UVIO_TRY(need(0, 86400, &v));
      o.stats_period = static_cast<unsigned>(v);
    } else if ((key == "-i" || key == "--interactive") && !has_value) {
      o.interactive = true;
    } else if (key == "--auto-start" && !has_value) {
      o.auto_start = true;
    } else if ((key == "--help" || key == "-h") && !has_value) {
      o.help = true;
    } else {
      return Status::error(EINVAL, fmt::format("unknown option {} (see --help)", arg));
    }
  }
  return o;
}

}  // namespace uvio::testpmd
