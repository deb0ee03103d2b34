// Parsing the names a user gives a device: a PCI address and a VF token.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace uvio::iommu {

// "[DDDD:]BB:DD.F" to the form sysfs uses, "0000:03:00.0"; false when malformed.
bool parse_pci_address(std::string_view text, std::string* canonical);

// RFC 4122 text ("0123abcd-0123-4567-89ab-0123456789ab") to its 16 bytes.
bool parse_uuid(std::string_view text, std::array<uint8_t, 16>* out);

}  // namespace uvio::iommu
