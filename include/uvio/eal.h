// EAL-style command-line options, spelled as DPDK spells them so habits carry over.
// Parsing is pure (no side effects) so that every bad input gets one clear line.
#pragma once

#include <uvio/lcore.h>
#include <uvio/log.h>
#include <uvio/mem.h>
#include <uvio/status.h>
#include <uvio/vfio_options.h>

#include <string>
#include <utility>
#include <vector>

namespace uvio {

// --vdev name,key=value,...
struct VdevSpec {
  std::string name;  // e.g. "emu_nvme0", "virtio_user0"
  std::vector<std::pair<std::string, std::string>> args;
  const std::string* arg(std::string_view key) const;
};

struct EalConfig {
  std::vector<LcoreSpec> lcores;  // default: one lcore per usable CPU
  unsigned main_lcore = 0;        // default: the lowest lcore
  std::vector<std::string> allow; // -a: PCI addresses or vfio-user:/path
  std::vector<std::string> block; // -b: PCI addresses
  std::vector<VdevSpec> vdevs;
  MemConfig mem;
  bool in_memory = false;
  VfioMode vfio_mode = VfioMode::Auto;
  IntrMode vfio_intr = IntrMode::Msix;
  std::string vf_token;
  std::string control_socket;   // --control-socket: empty = the default path, "none" = no socket
  std::string migrate_listen;   // --migrate-listen: a migration destination's address
  std::string migrate_token;    // --migrate-token
  std::string app_name;         // argv[0]'s basename: what the control socket's "app" says
  log::Level log_level = log::Level::Notice;
  std::vector<std::pair<std::string, log::Level>> component_log_levels;
  bool help = false;
  bool version = false;
  // argv index of the first application argument (after "--"), or argc.
  int app_args_index = 0;
};

// Parses argv[1..]. A malformed or unknown option: a Status whose message names the
// option and the reason.
Result<EalConfig> eal_parse(int argc, char* const argv[]);
// The options and what they mean, for --help.
std::string eal_usage();

// Parses a size: "512" (MiB, as DPDK's -m), "64K", "512M", "2G", "1T".
bool parse_size_mib_default(std::string_view text, size_t* bytes);
// Parses a PCI address "DDDD:BB:DD.F" or "BB:DD.F" into canonical "dddd:bb:dd.f".
bool parse_pci_address(std::string_view text, std::string* canonical);

}  // namespace uvio
