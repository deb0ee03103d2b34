// The migration data a server streams for its device: one or more records, each a
// versioned header naming the model type and its state version, then the model's
// save_state bytes. PRE_COPY sends a record and STOP_COPY a final one; the last
// complete record in a stream is the state to load.
#pragma once

#include <uvio/status.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace uvio::emu {

struct StateRecordHeader {
  char magic[8];           // "uvioemu\0"
  uint32_t format;         // kStateRecordFormat
  uint32_t state_version;  // DeviceModel::state_version()
  uint32_t type_len;       // bytes of type_name that follow the header
  uint32_t reserved;
  uint64_t payload_len;    // bytes of model state after the type name
};
static_assert(sizeof(StateRecordHeader) == 32);

inline constexpr uint32_t kStateRecordFormat = 1;
inline constexpr uint32_t kMaxTypeName = 64;
inline constexpr uint64_t kMaxStatePayload = 256ull << 20;

void append_state_record(std::vector<uint8_t>& out, std::string_view type_name,
                         uint32_t state_version, std::span<const uint8_t> state);

// The payload of the last record in `stream`, after checking that every record is whole
// and names `type_name` at `state_version`; a clear error otherwise.
Result<std::span<const uint8_t>> last_state_record(std::span<const uint8_t> stream,
                                                   std::string_view type_name,
                                                   uint32_t state_version);

}  // namespace uvio::emu
