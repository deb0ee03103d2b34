// The emulated PCI configuration space of a software device: a type 0 header (PCI Local
// Bus 3.0, section 6.1), memory BARs with sizing, and the capability list — PCI Express
// and MSI-X added by the server, the model's own capabilities linked after them. Writes
// go through a per-byte mask of writable bits; everything else reads back unchanged.
#pragma once

#include "emu/device_model.h"

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace uvio::emu {

class PciConfig {
 public:
  static constexpr uint32_t kSize = 4096;  // PCIe extended configuration space

  // Register offsets (PCI Local Bus 3.0, 6.1).
  static constexpr uint32_t kVendorId = 0x00;
  static constexpr uint32_t kCommand = 0x04;
  static constexpr uint32_t kStatus = 0x06;
  static constexpr uint32_t kBar0 = 0x10;
  static constexpr uint32_t kCapPtr = 0x34;
  static constexpr uint16_t kStatusCapList = 1u << 4;
  static constexpr uint8_t kCapIdPcie = 0x10;
  static constexpr uint8_t kCapIdMsix = 0x11;
  static constexpr uint16_t kMsixCtrlEnable = 1u << 15;    // 6.8.2.3
  static constexpr uint16_t kMsixCtrlFuncMask = 1u << 14;  // 6.8.2.3

  // Fails (returns false) when the capabilities do not fit in the first 256 bytes.
  bool build(const PciIdentity& id, std::span<const BarLayout> bars, const MsixLayout& msix,
             std::span<const PciCapability> model_caps);

  // Both clamp to the space; the caller checks the range first.
  void read(uint32_t offset, void* buf, size_t len) const;
  void write(uint32_t offset, const void* buf, size_t len);

  // Offset of the MSI-X capability, 0 when there is none.
  uint32_t msix_cap() const { return msix_cap_; }
  uint16_t msix_control() const;
  void set_msix_enable(bool enabled);
  // Every capability id in list order (what a driver walking the list would find).
  std::vector<uint8_t> capability_ids() const;
  // Back to the values after build() (function-level reset).
  void reset() { bytes_ = initial_; }

 private:
  std::array<uint8_t, kSize> bytes_{};
  std::array<uint8_t, kSize> initial_{};
  std::array<uint8_t, kSize> wmask_{};
  uint32_t msix_cap_ = 0;
};

}  // namespace uvio::emu
