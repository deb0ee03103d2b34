// testpmd's own options, the ones after "--", spelled as dpdk-testpmd spells them.
#pragma once

#include <uvio/status.h>

#include "apps/testpmd/forward.h"

#include <string>

namespace uvio::testpmd {

struct Options {
  ForwardMode mode = ForwardMode::Io;
  uint16_t burst = 32;
  uint16_t rxq = 1;
  uint16_t txq = 1;
  unsigned nb_cores = 0;     // 0: one per stream, up to the worker lcores
  uint16_t txpkts = 64;      // txonly frame length
  uint64_t tx_count = 0;     // txonly: frames each stream sends before it stops, 0: no limit
  uint16_t ring_size = 256;  // --rxd / --txd
  unsigned stats_period = 0; // seconds, 0: none
  bool interactive = false;
  bool auto_start = false;
  bool help = false;
};

// argv[0] is the program; a bad option is EINVAL with a message naming it.
Result<Options> parse_options(int argc, char* const argv[]);
std::string usage();

}  // namespace uvio::testpmd
