#include "iommu/pci_address.h"

#include <cstdio>

namespace uvio::iommu {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses 1..max_digits hex digits that make up all of `s`.
bool parse_hex(std::string_view s, size_t max_digits, unsigned* out) {
  if (s.empty() || s.size() > max_digits) return false;
  unsigned v = 0;
  for (char c : s) {
    int d = hex_value(c);
    if (d < 0) return false;
    v = v * 16 + static_cast<unsigned>(d);
  }
  *out = v;
  return true;
}

}  // namespace

bool parse_pci_address(std::string_view text, std::string* canonical) {
  unsigned domain = 0, bus = 0, slot = 0, function = 0;
  size_t first = text.find(':');
  if (first == std::string_view::npos) return false;
  size_t second = text.find(':', first + 1);
  if (second != std::string_view::npos) {
    if (!parse_hex(text.substr(0, first), 4, &domain)) return false;
    text.remove_prefix(first + 1);
    first = second - first - 1;
  }
  size_t dot = text.find('.');
  if (dot == std::string_view::npos || dot < first) return false;
  if (!parse_hex(text.substr(0, first), 2, &bus) || !parse_hex(text.substr(first + 1, dot - first - 1), 2, &slot) ||
      !parse_hex(text.substr(dot + 1), 1, &function))
    return false;
  if (slot > 0x1f || function > 7) return false;  // PCI: 5-bit device, 3-bit function
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%x", domain, bus, slot, function);
  *canonical = buf;
  return true;
}

bool parse_uuid(std::string_view text, std::array<uint8_t, 16>* out) {
  if (text.size() != 36) return false;
  size_t byte = 0;
  for (size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return false;
      ++i;
      continue;
    }
    int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[byte++] = static_cast<uint8_t>(hi * 16 + lo);
    i += 2;
  }
  return byte == 16;
}

}  // namespace uvio::iommu
