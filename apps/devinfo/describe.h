// What uvio-devinfo reports about a device, as JSON, and its text rendering.
#pragma once

#include "iommu/device.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace uvio::devinfo {

using json = nlohmann::json;

// Asks the device for everything it offers; a query that fails becomes an "error"
// entry in its place rather than ending the report.
json describe(iommu::Device& dev);
void print_text(const json& report, std::FILE* out);

}  // namespace uvio::devinfo
