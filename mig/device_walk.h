// Moving a device through VFIO migration v2 states: one arc per set_mig_state call,
// along the path the shared stepping function chooses (iommu::mig_path), never a path
// written by hand.
#pragma once

#include "iommu/device.h"
#include "iommu/mig_fsm.h"

#include <uvio/runtime.h>
#include <uvio/status.h>

#include <cstdint>
#include <string>
#include <vector>

namespace uvio::mig {

// What a device offers for migration, and why it cannot migrate when it cannot.
struct DeviceMigInfo {
  iommu::MigFeatures features;
  bool pre_copy = false;
  iommu::DirtyTracker* tracker = nullptr;  // device DMA logging, else its domain's tracker
  std::string why_not;                     // empty when the device can migrate
};
DeviceMigInfo probe_device(const RuntimeDevice& d);

// Walks `dev` from its current state to `target`. On an arc that fails, the device is
// left where it stopped and the Status names the arc.
Status walk_device(iommu::Device& dev, iommu::MigFeatures features, iommu::MigState target);

// Reads the device's migration data until the device reports the end (0 bytes), in
// chunks of at most `chunk`; `sink` takes each.
template <class Sink>
Status read_device_data(iommu::Device& dev, size_t chunk, std::vector<uint8_t>& buf, Sink&& sink) {
  buf.resize(chunk);
  for (;;) {
    auto n = dev.mig_read(buf.data(), buf.size());
    if (!n) return n.status();
    if (*n == 0) return Status::ok();
    if (*n > buf.size()) return Status::error(EPROTO, "device returned more migration data than asked");
    UVIO_TRY(sink(std::span<const uint8_t>(buf.data(), *n)));
  }
}

}  // namespace uvio::mig
