#include "emu/pci_config.h"

#include <algorithm>
#include <cstring>

namespace uvio::emu {

namespace {

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

}  // namespace

bool PciConfig::build(const PciIdentity& id, std::span<const BarLayout> bars, const MsixLayout& msix,
                      std::span<const PciCapability> model_caps) {
  bytes_.fill(0);
  wmask_.fill(0);
  uint8_t* b = bytes_.data();
  put16(b + 0x00, id.vendor_id);
  put16(b + 0x02, id.device_id);
  // Command: I/O, memory, bus master, parity, SERR#, INTx disable are writable.
  put16(wmask_.data() + kCommand, 0x0547);
  put16(b + kStatus, kStatusCapList);
  b[0x08] = id.revision;
  b[0x09] = static_cast<uint8_t>(id.class_code);
  b[0x0a] = static_cast<uint8_t>(id.class_code >> 8);
  b[0x0b] = static_cast<uint8_t>(id.class_code >> 16);
  b[0x0e] = 0;  // header type 0, single function
  put16(b + 0x2c, id.subsystem_vendor_id);
  put16(b + 0x2e, id.subsystem_id);
  b[0x3d] = 0;  // no INTx pin: the device interrupts with MSI-X only

  // 32-bit non-prefetchable memory BARs (6.2.5.1): the low bits encode the type (0),
  // and only the bits above the size are writable, which is how sizing reads back.
  for (const BarLayout& bar : bars) {
    if (bar.index > 5 || bar.size < 16 || bar.size > (1ull << 31) || (bar.size & (bar.size - 1)))
      return false;
    uint32_t mask = ~static_cast<uint32_t>(bar.size - 1) & ~0xfu;
    put32(wmask_.data() + kBar0 + 4 * bar.index, mask);
  }

  // Capability list from 0x40, each dword-aligned (6.7).
  uint32_t at = 0x40;
  uint32_t prev_next = kCapPtr;
  auto link = [&](uint32_t cap) {
    b[prev_next] = static_cast<uint8_t>(cap);
    prev_next = cap + 1;
  };

  // PCI Express capability, version 2, endpoint (PCIe Base 4.0, 7.5.3), 0x3c bytes.
  link(at);
  b[at] = kCapIdPcie;
  put16(b + at + 0x02, 0x0002);          // capability version 2, device/port type 0: endpoint
  put32(b + at + 0x04, 0x00000000);      // device capabilities: 128-byte max payload, no FLR
  put16(wmask_.data() + at + 0x08, 0x7fff);  // device control (bit 15 is FLR initiate)
  put32(b + at + 0x0c, 0x00000011);      // link capabilities: 2.5 GT/s, x1
  put16(wmask_.data() + at + 0x10, 0x0fff);  // link control
  put16(b + at + 0x12, 0x0011);          // link status: 2.5 GT/s, x1
  at += 0x3c;

  msix_cap_ = 0;
  if (msix.vectors > 0) {
    if (msix.vectors > 2048 || msix.bar > 5 || (msix.table_offset & 7) || (msix.pba_offset & 7))
      return false;
    link(at);
    msix_cap_ = at;
    b[at] = kCapIdMsix;
    put16(b + at + 2, static_cast<uint16_t>(msix.vectors - 1));  // table size, N-1
    put16(wmask_.data() + at + 2, kMsixCtrlEnable | kMsixCtrlFuncMask);
    put32(b + at + 4, static_cast<uint32_t>(msix.table_offset) | msix.bar);
    put32(b + at + 8, static_cast<uint32_t>(msix.pba_offset) | msix.bar);
    at += 12;
  }

  for (const PciCapability& cap : model_caps) {
    at = (at + 3) & ~3u;
    if (at + 2 + cap.body.size() > 0x100) return false;
    link(at);
    b[at] = cap.id;
    std::memcpy(b + at + 2, cap.body.data(), cap.body.size());
    at += 2 + static_cast<uint32_t>(cap.body.size());
  }
  b[prev_next] = 0;
  initial_ = bytes_;
  return true;
}

void PciConfig::read(uint32_t offset, void* buf, size_t len) const {
  if (offset >= kSize) return;
  len = std::min<size_t>(len, kSize - offset);
  std::memcpy(buf, bytes_.data() + offset, len);
}

void PciConfig::write(uint32_t offset, const void* buf, size_t len) {
  if (offset >= kSize) return;
  len = std::min<size_t>(len, kSize - offset);
  const uint8_t* src = static_cast<const uint8_t*>(buf);
  for (size_t i = 0; i < len; ++i) {
    uint8_t m = wmask_[offset + i];
    bytes_[offset + i] = static_cast<uint8_t>((bytes_[offset + i] & ~m) | (src[i] & m));
  }
}

uint16_t PciConfig::msix_control() const {
  if (msix_cap_ == 0) return 0;
  uint16_t v;
  std::memcpy(&v, bytes_.data() + msix_cap_ + 2, 2);
  return v;
}

void PciConfig::set_msix_enable(bool enabled) {
  if (msix_cap_ == 0) return;
  uint16_t v = msix_control();
  v = enabled ? (v | kMsixCtrlEnable) : (v & ~kMsixCtrlEnable);
  std::memcpy(bytes_.data() + msix_cap_ + 2, &v, 2);
}

std::vector<uint8_t> PciConfig::capability_ids() const {
  std::vector<uint8_t> ids;
  uint32_t at = bytes_[kCapPtr];
  // A list longer than 48 entries in 256 bytes would be a loop.
  for (int n = 0; at >= 0x40 && at < 0x100 && n < 48; ++n) {
    ids.push_back(bytes_[at]);
    at = bytes_[at + 1];
  }
  return ids;
}

}  // namespace uvio::emu
