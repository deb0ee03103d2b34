#include "emu/nvme/options.h"

#include <fmt/format.h>

#include <charconv>

namespace uvio::emu::nvme {
namespace {

bool parse_u64(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    text.remove_prefix(2);
    base = 16;
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out, base);
  return ec == std::errc() && end == text.data() + text.size();
}

// A byte count with an optional K, M or G suffix (powers of two).
bool parse_bytes(std::string_view text, uint64_t* out) {
  unsigned shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      default: break;
    }
    if (shift) text.remove_suffix(1);
  }
  uint64_t value = 0;
  if (!parse_u64(text, &value)) return false;
  if (shift && value > (~0ull >> shift)) return false;
  *out = value << shift;
  return true;
}

Status bad_value(std::string_view key, std::string_view value, std::string_view expected) {
  return Status::error(EINVAL, fmt::format("nvme: {}={} is not valid: expected {}", key, value, expected));
}

}  // namespace

Result<FaultPlan> parse_fault_plan(std::string_view text) {
  FaultPlan plan;
  while (!text.empty()) {
    size_t plus = text.find('+');
    std::string_view item = text.substr(0, plus);
    text = plus == std::string_view::npos ? std::string_view() : text.substr(plus + 1);
    size_t at = item.find('@');
    uint64_t n = 0;
    if (at == std::string_view::npos || !parse_u64(item.substr(at + 1), &n) || n == 0)
      return Status::error(EINVAL, fmt::format("nvme: fault '{}' is not name@N with N >= 1 "
                                               "(names: cfs, timeout, badcid, phase, stall, migload)", item));
    std::string_view name = item.substr(0, at);
    if (name == "cfs") plan.fatal_after = n;
    else if (name == "timeout") plan.drop_completion = n;
    else if (name == "badcid") plan.wrong_cid = n;
    else if (name == "phase") plan.stale_phase = n;
    else if (name == "stall") plan.stall_io = n;
    else if (name == "migload") plan.refuse_state_load = n;
    else
      return Status::error(EINVAL, fmt::format("nvme: unknown fault '{}' (known: cfs, timeout, "
                                               "badcid, phase, stall, migload)", name));
  }
  return plan;
}

Result<NvmeOptions> parse_nvme_options(const std::map<std::string, std::string>& args) {
  NvmeOptions opt;
  bool size_given = false;
  for (const auto& [key, value] : args) {
    uint64_t n = 0;
    if (key == "ns") {
      if (!parse_u64(value, &n) || n < 1 || n > 1024) return bad_value(key, value, "1..1024");
      opt.namespaces = static_cast<uint32_t>(n);
    } else if (key == "size") {
      if (!parse_bytes(value, &n) || n == 0) return bad_value(key, value, "a byte count such as 64M");
      opt.namespace_bytes = n;
      size_given = true;
    } else if (key == "lba") {
      if (!parse_u64(value, &n) || (n != 512 && n != 4096)) return bad_value(key, value, "512 or 4096");
      opt.lba_bytes = static_cast<uint32_t>(n);
    } else if (key == "file") {
      if (value.empty()) return bad_value(key, value, "a path");
      opt.file = value;
    } else if (key == "queues") {
      if (!parse_u64(value, &n) || n < 1 || n > 255) return bad_value(key, value, "1..255");
      opt.io_queues = static_cast<uint32_t>(n);
    } else if (key == "mqes") {
      if (!parse_u64(value, &n) || n < 2 || n > 65536) return bad_value(key, value, "2..65536");
      opt.max_queue_entries = static_cast<uint32_t>(n);
    } else if (key == "serial") {
      bool printable = !value.empty() && value.size() <= 20;
      for (char c : value) printable = printable && c >= 0x20 && c < 0x7f;
      if (!printable) return bad_value(key, value, "1 to 20 printable ASCII characters");
      opt.serial = value;
    } else if (key == "faults") {
      auto plan = parse_fault_plan(value);
      if (!plan) return plan.status();
      opt.faults = *plan;
    } else {
      return Status::error(EINVAL, fmt::format("nvme: unknown argument '{}' (known: ns, size, lba, "
                                               "file, queues, mqes, serial, faults)", key));
    }
  }
  if (size_given && opt.namespace_bytes < opt.lba_bytes)
    return Status::error(EINVAL, fmt::format("nvme: size={} is smaller than one {}-byte block",
                                             opt.namespace_bytes, opt.lba_bytes));
  return opt;
}

}  // namespace uvio::emu::nvme
