#include <uvio/eal.h>
#include <uvio/topology.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>

namespace uvio {
namespace {

Status bad(std::string_view option, std::string reason) {
  return Status::error(EINVAL, fmt::format("option {}: {}", option, reason));
}

bool parse_uint(std::string_view s, uint64_t* out, int base = 10) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

std::string cpu_list_text(const std::vector<int>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) j++;
    if (!out.empty()) out += ",";
    out += j == i ? std::to_string(cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

// "3" or "0-3" -> [lo, hi].
bool parse_range(std::string_view s, uint64_t* lo, uint64_t* hi) {
  size_t dash = s.find('-');
  if (dash == std::string_view::npos) {
    if (!parse_uint(s, lo)) return false;
    *hi = *lo;
    return true;
  }
  return parse_uint(s.substr(0, dash), lo) && parse_uint(s.substr(dash + 1), hi) && *lo <= *hi;
}

Status check_cpu(std::string_view option, uint64_t cpu) {
  if (!topology::cpu_usable(static_cast<int>(cpu)))
    return bad(option, fmt::format("CPU {} does not exist or is not allowed for this process (usable CPUs: {})", cpu,
                                   cpu_list_text(topology::usable_cpus())));
  return Status::ok();
}

Status check_lcore(std::string_view option, uint64_t lcore) {
  if (lcore >= kMaxLcores) return bad(option, fmt::format("lcore {} is beyond the maximum lcore id {}", lcore, kMaxLcores - 1));
  return Status::ok();
}

// -l / --lcores: "0-3,5" (lcore = CPU), "1@3" (lcore 1 on CPU 3), "4-5@1" (lcores 4 and 5 on CPU 1).
Status parse_lcores(std::string_view option, std::string_view text, std::vector<LcoreSpec>* out) {
  if (text.empty()) return bad(option, "empty lcore list");
  if (text.find('(') != std::string_view::npos)
    return bad(option, "lcore groups in parentheses are not supported: give each lcore one CPU, e.g. 0@2,1@3");
  for (std::string_view item : split(text, ',')) {
    if (item.empty()) return bad(option, fmt::format("empty item in '{}'", text));
    size_t at = item.find('@');
    uint64_t lo, hi;
    if (!parse_range(item.substr(0, at), &lo, &hi))
      return bad(option, fmt::format("'{}' is not an lcore, a range A-B or a map lcore@cpu", item));
    int cpu = -1;
    if (at != std::string_view::npos) {
      uint64_t c;
      if (!parse_uint(item.substr(at + 1), &c)) return bad(option, fmt::format("'{}': CPU after '@' is not a number", item));
      UVIO_TRY(check_cpu(option, c));
      cpu = static_cast<int>(c);
    }
    for (uint64_t l = lo; l <= hi; l++) {
      UVIO_TRY(check_lcore(option, l));
      if (at == std::string_view::npos) UVIO_TRY(check_cpu(option, l));
      out->push_back({static_cast<unsigned>(l), at == std::string_view::npos ? static_cast<int>(l) : cpu});
    }
  }
  return Status::ok();
}

Status parse_coremask(std::string_view option, std::string_view text, std::vector<LcoreSpec>* out) {
  std::string_view hex = text;
  if (hex.substr(0, 2) == "0x" || hex.substr(0, 2) == "0X") hex.remove_prefix(2);
  if (hex.empty() || hex.size() > 32) return bad(option, fmt::format("'{}' is not a hexadecimal core mask", text));
  // Bit i from the right is CPU i; masks may be longer than 64 bits.
  for (size_t i = 0; i < hex.size(); i++) {
    char ch = hex[hex.size() - 1 - i];
    uint64_t nibble;
    if (!parse_uint(std::string_view(&ch, 1), &nibble, 16)) return bad(option, fmt::format("'{}' is not a hexadecimal core mask", text));
    for (int b = 0; b < 4; b++) {
      if (nibble & (1u << b)) {
        uint64_t cpu = i * 4 + b;
        UVIO_TRY(check_lcore(option, cpu));
        UVIO_TRY(check_cpu(option, cpu));
        out->push_back({static_cast<unsigned>(cpu), static_cast<int>(cpu)});
      }
    }
  }
  if (out->empty()) return bad(option, "the core mask selects no CPU");
  return Status::ok();
}

Status parse_vdev(std::string_view option, std::string_view text, VdevSpec* out) {
  auto parts = split(text, ',');
  if (parts[0].empty()) return bad(option, "missing device name (e.g. --vdev emu_nvme0,size=64M)");
  out->name = std::string(parts[0]);
  for (size_t i = 1; i < parts.size(); i++) {
    size_t eq = parts[i].find('=');
    if (parts[i].empty() || eq == 0 || eq == std::string_view::npos)
      return bad(option, fmt::format("'{}' in '{}' is not key=value", parts[i], text));
    out->args.emplace_back(std::string(parts[i].substr(0, eq)), std::string(parts[i].substr(eq + 1)));
  }
  return Status::ok();
}

Status parse_log_level(std::string_view option, std::string_view text, EalConfig* cfg) {
  size_t colon = text.rfind(':');
  log::Level level;
  if (colon == std::string_view::npos) {
    if (!log::parse_level(text, &level))
      return bad(option, fmt::format("'{}' is not a level (1-8, or emerg alert crit err warning notice info debug)", text));
    cfg->log_level = level;
    return Status::ok();
  }
  std::string_view comp = text.substr(0, colon);
  if (comp.empty()) return bad(option, "missing component before ':'");
  if (!log::parse_level(text.substr(colon + 1), &level))
    return bad(option, fmt::format("'{}' is not a level (1-8, or emerg alert crit err warning notice info debug)", text.substr(colon + 1)));
  cfg->component_log_levels.emplace_back(std::string(comp), level);
  return Status::ok();
}

bool parse_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < 36; i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

struct OptionDef {
  const char* long_name;  // without "--"
  char short_name;        // 0: none
  bool takes_value;
};

constexpr OptionDef kOptions[] = {
    {"lcores", 'l', true},     {nullptr, 'c', true},     {"main-lcore", 0, true},  {"allow", 'a', true},
    {"block", 'b', true},      {"vdev", 0, true},        {nullptr, 'm', true},     {"socket-mem", 0, true},
    {"huge-dir", 0, true},     {"no-huge", 0, false},    {"in-memory", 0, false},  {"iova-mode", 0, true},
    {"file-prefix", 0, true},  {"log-level", 0, true},   {"vfio-mode", 0, true},   {"vfio-intr", 0, true},
    {"vfio-vf-token", 0, true}, {"help", 'h', false},    {"version", 'v', false},
    {"control-socket", 0, true}, {"migrate-listen", 0, true}, {"migrate-token", 0, true},
};

}  // namespace

const std::string* VdevSpec::arg(std::string_view key) const {
  for (auto& [k, v] : args)
    if (k == key) return &v;
  return nullptr;
}

bool parse_size_mib_default(std::string_view text, size_t* bytes) {
  if (text.empty()) return false;
  uint64_t mult = 1ull << 20;
  char last = text.back();
  switch (last) {
    case 'k': case 'K': mult = 1ull << 10; text.remove_suffix(1); break;
    case 'm': case 'M': mult = 1ull << 20; text.remove_suffix(1); break;
    case 'g': case 'G': mult = 1ull << 30; text.remove_suffix(1); break;
    case 't': case 'T': mult = 1ull << 40; text.remove_suffix(1); break;
    default: break;
  }
  uint64_t v;
  if (!parse_uint(text, &v) || v == 0 || v > (~0ull / mult)) return false;
  *bytes = v * mult;
  return true;
}

bool parse_pci_address(std::string_view text, std::string* canonical) {
  uint64_t dom = 0, bus, dev, fn;
  auto parts = split(text, ':');
  std::string_view b, df;
  if (parts.size() == 3) {
    if (parts[0].empty() || parts[0].size() > 4 || !parse_uint(parts[0], &dom, 16)) return false;
    b = parts[1];
    df = parts[2];
  } else if (parts.size() == 2) {
    b = parts[0];
    df = parts[1];
  } else {
    return false;
  }
  size_t dot = df.find('.');
  if (dot == std::string_view::npos) return false;
  if (b.empty() || b.size() > 2 || !parse_uint(b, &bus, 16)) return false;
  if (dot == 0 || dot > 2 || !parse_uint(df.substr(0, dot), &dev, 16) || dev > 0x1f) return false;
  if (!parse_uint(df.substr(dot + 1), &fn, 16) || fn > 7) return false;
  if (canonical) *canonical = fmt::format("{:04x}:{:02x}:{:02x}.{:x}", dom, bus, dev, fn);
  return true;
}

Result<EalConfig> eal_parse(int argc, char* const argv[]) {
  EalConfig cfg;
  cfg.app_args_index = argc;
  if (argc > 0 && argv[0] != nullptr) {
    std::string_view prog = argv[0];
    size_t slash = prog.find_last_of('/');
    cfg.app_name = std::string(slash == std::string_view::npos ? prog : prog.substr(slash + 1));
  }
  bool lcores_given = false, main_given = false, m_given = false, socket_mem_given = false;
  for (int i = 1; i < argc; i++) {
    std::string_view arg = argv[i];
    if (arg == "--") {
      cfg.app_args_index = i + 1;
      break;
    }
    const OptionDef* def = nullptr;
    std::string_view value;
    bool has_inline_value = false;
    std::string shown;
    if (arg.size() > 2 && arg.substr(0, 2) == "--") {
      std::string_view name = arg.substr(2);
      size_t eq = name.find('=');
      if (eq != std::string_view::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_inline_value = true;
      }
      for (const OptionDef& d : kOptions)
        if (d.long_name && name == d.long_name) def = &d;
      shown = fmt::format("--{}", name);
      if (!def) return Status::error(EINVAL, fmt::format("unknown option '{}' (see --help; application options go after '--')", arg));
    } else if (arg.size() >= 2 && arg[0] == '-' && arg[1] != '-') {
      for (const OptionDef& d : kOptions)
        if (d.short_name == arg[1]) def = &d;
      shown = def && def->long_name ? fmt::format("-{}/--{}", arg[1], def->long_name) : fmt::format("-{}", arg[1]);
      if (!def) return Status::error(EINVAL, fmt::format("unknown option '{}' (see --help; application options go after '--')", arg));
      if (arg.size() > 2) {
        if (!def->takes_value) return Status::error(EINVAL, fmt::format("unknown option '{}'", arg));
        value = arg.substr(2);
        has_inline_value = true;
      }
    } else {
      return Status::error(EINVAL, fmt::format("unexpected argument '{}' (application options go after '--')", arg));
    }
    if (def->takes_value && !has_inline_value) {
      if (i + 1 >= argc) return bad(shown, "missing value");
      value = argv[++i];
    } else if (!def->takes_value && has_inline_value) {
      return bad(shown, "takes no value");
    }

    std::string_view name = def->long_name ? def->long_name : "";
    char s = def->short_name;
    if (name == "lcores" || s == 'c') {
      if (lcores_given) return bad(shown, "lcores given twice (-l, --lcores and -c exclude each other)");
      lcores_given = true;
      UVIO_TRY(s == 'c' ? parse_coremask(shown, value, &cfg.lcores) : parse_lcores(shown, value, &cfg.lcores));
    } else if (name == "main-lcore") {
      uint64_t v;
      if (!parse_uint(value, &v)) return bad(shown, fmt::format("'{}' is not an lcore id", value));
      UVIO_TRY(check_lcore(shown, v));
      cfg.main_lcore = static_cast<unsigned>(v);
      main_given = true;
    } else if (name == "allow" || name == "block") {
      std::string canon;
      if (name == "allow" && value.substr(0, 10) == "vfio-user:") {
        if (value.size() == 10) return bad(shown, "vfio-user: needs a socket path (vfio-user:/path/to.sock)");
        cfg.allow.emplace_back(value);
        continue;
      }
      if (!parse_pci_address(value, &canon))
        return bad(shown, fmt::format("'{}' is not a PCI address (DDDD:BB:DD.F){}", value, name == "allow" ? " or vfio-user:/path" : ""));
      (name == "allow" ? cfg.allow : cfg.block).push_back(canon);
    } else if (name == "vdev") {
      VdevSpec v;
      UVIO_TRY(parse_vdev(shown, value, &v));
      cfg.vdevs.push_back(std::move(v));
    } else if (s == 'm') {
      size_t bytes;
      if (!parse_size_mib_default(value, &bytes)) return bad(shown, fmt::format("'{}' is not a size (MiB, or with K/M/G suffix)", value));
      cfg.mem.total_bytes = bytes;
      m_given = true;
    } else if (name == "socket-mem") {
      cfg.mem.socket_bytes.clear();
      for (std::string_view part : split(value, ',')) {
        size_t bytes = 0;
        if (part != "0" && !parse_size_mib_default(part, &bytes))
          return bad(shown, fmt::format("'{}' in '{}' is not a size", part, value));
        cfg.mem.socket_bytes.push_back(bytes);
      }
      if (cfg.mem.socket_bytes.size() > static_cast<size_t>(topology::numa_node_count()))
        return bad(shown, fmt::format("{} NUMA nodes given but this machine has {}", cfg.mem.socket_bytes.size(), topology::numa_node_count()));
      socket_mem_given = true;
    } else if (name == "huge-dir") {
      if (value.empty()) return bad(shown, "empty path");
      cfg.mem.huge_dir = std::string(value);
    } else if (name == "no-huge") {
      cfg.mem.hugepages = false;
    } else if (name == "in-memory") {
      cfg.in_memory = true;
    } else if (name == "iova-mode") {
      if (value == "va") cfg.mem.iova_mode = IovaMode::Va;
      else if (value == "pa") cfg.mem.iova_mode = IovaMode::Pa;
      else return bad(shown, fmt::format("'{}' is not va or pa", value));
    } else if (name == "file-prefix") {
      if (value.empty() || value.find('/') != std::string_view::npos) return bad(shown, "must be a non-empty name without '/'");
      cfg.mem.file_prefix = std::string(value);
    } else if (name == "log-level") {
      UVIO_TRY(parse_log_level(shown, value, &cfg));
    } else if (name == "vfio-mode") {
      if (value == "auto") cfg.vfio_mode = VfioMode::Auto;
      else if (value == "iommufd") cfg.vfio_mode = VfioMode::Iommufd;
      else if (value == "group") cfg.vfio_mode = VfioMode::Group;
      else if (value == "noiommu") cfg.vfio_mode = VfioMode::NoIommu;
      else return bad(shown, fmt::format("'{}' is not auto, iommufd, group or noiommu", value));
    } else if (name == "vfio-intr") {
      if (value == "msix") cfg.vfio_intr = IntrMode::Msix;
      else if (value == "msi") cfg.vfio_intr = IntrMode::Msi;
      else if (value == "legacy") cfg.vfio_intr = IntrMode::Legacy;
      else return bad(shown, fmt::format("'{}' is not msix, msi or legacy", value));
    } else if (name == "vfio-vf-token") {
      if (!parse_uuid(value)) return bad(shown, fmt::format("'{}' is not a UUID (8-4-4-4-12 hex digits)", value));
      cfg.vf_token = std::string(value);
    } else if (name == "control-socket") {
      if (value.empty()) return bad(shown, "empty path (use 'none' for no control socket)");
      cfg.control_socket = std::string(value);
    } else if (name == "migrate-listen") {
      if (value.substr(0, 4) != "tcp:" && value.substr(0, 5) != "unix:")
        return bad(shown, fmt::format("'{}' is not tcp:HOST:PORT or unix:PATH", value));
      cfg.migrate_listen = std::string(value);
    } else if (name == "migrate-token") {
      if (value.empty() || value.size() > 256) return bad(shown, "must be 1 to 256 characters");
      cfg.migrate_token = std::string(value);
    } else if (name == "help") {
      cfg.help = true;
    } else if (name == "version") {
      cfg.version = true;
    }
  }

  if (m_given && socket_mem_given) return bad("-m", "-m and --socket-mem exclude each other");
  if (cfg.in_memory && !cfg.mem.huge_dir.empty()) return bad("--in-memory", "--in-memory uses no files: drop --huge-dir");
  if (!cfg.mem.hugepages && !cfg.mem.huge_dir.empty()) return bad("--no-huge", "--no-huge and --huge-dir exclude each other");
  if (!cfg.mem.hugepages && !cfg.mem.socket_bytes.empty()) return bad("--socket-mem", "--socket-mem needs hugepages (drop --no-huge, or use -m)");
  if (cfg.vfio_mode == VfioMode::NoIommu && cfg.mem.iova_mode != IovaMode::Pa && std::any_of(cfg.allow.begin(), cfg.allow.end(), [](auto& a) {
        return a.substr(0, 10) != "vfio-user:";
      }))
    cfg.mem.iova_mode = IovaMode::Pa;  // without an IOMMU the device sees physical addresses

  if (!lcores_given) {
    for (int cpu : topology::usable_cpus())
      if (static_cast<unsigned>(cpu) < kMaxLcores) cfg.lcores.push_back({static_cast<unsigned>(cpu), cpu});
  }
  std::set<unsigned> seen;
  for (const LcoreSpec& l : cfg.lcores)
    if (!seen.insert(l.lcore).second) return bad("--lcores", fmt::format("lcore {} is given twice", l.lcore));
  if (main_given) {
    if (!seen.count(cfg.main_lcore))
      return bad("--main-lcore", fmt::format("lcore {} is not among the enabled lcores", cfg.main_lcore));
  } else if (!cfg.lcores.empty()) {
    cfg.main_lcore = *seen.begin();
  }
  for (const std::string& a : cfg.allow)
    if (std::find(cfg.block.begin(), cfg.block.end(), a) != cfg.block.end())
      return bad("--block", fmt::format("{} is both allowed and blocked", a));
  return cfg;
}

std::string eal_usage() {
  return R"(EAL options:
  -l, --lcores LIST        lcores to run: "0-3,5" (lcore = CPU), "1@3" (lcore 1 on CPU 3)
  -c MASK                  hexadecimal mask of CPUs to run lcores on
      --main-lcore ID      lcore that runs main() (default: the lowest)
  -a, --allow DEV          use this device: a PCI address (0000:03:00.0) or vfio-user:/path/to.sock
  -b, --block ADDR         never use this PCI device
      --vdev NAME,K=V,...  a virtual device: emu_nvme0,size=64M | emu_net0,peer=emu_net1 | virtio_user0,path=/sock
  -m SIZE                  memory to reserve (MiB, or with K/M/G suffix; default 64M)
      --socket-mem S0,S1   memory per NUMA node
      --huge-dir DIR       hugetlbfs mount for memory files (default: memfd, no mount needed)
      --no-huge            use 4 KiB pages instead of hugepages
      --in-memory          keep no files at all
      --iova-mode va|pa    IOVA = virtual address (default) or physical address (noiommu)
      --file-prefix NAME   name of this process's memory files and sockets (default uvio)
      --log-level LEVEL    global level (1-8 or emerg..debug), or COMPONENT:LEVEL
      --vfio-mode MODE     auto | iommufd | group | noiommu (auto: iommufd + cdev when present)
      --vfio-intr MODE     msix | msi | legacy
      --vfio-vf-token UUID token shared between a PF and its VFs
      --control-socket PATH|none
                           where this process answers uvio-migrate and other tools
                           (default /run/uvio/<file-prefix>/control.sock)
      --migrate-listen ADDR
                           start as a migration destination: wait on tcp:HOST:PORT or
                           unix:PATH for a source's state instead of starting afresh
      --migrate-token TEXT a source must present this token to migrate here
  -h, --help               this text
  -v, --version            print the version
Application options follow '--'.
)";
}

}  // namespace uvio
