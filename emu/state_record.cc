#include "emu/state_record.h"

#include <fmt/format.h>

#include <cstring>

namespace uvio::emu {

namespace {
constexpr char kMagic[8] = {'u', 'v', 'i', 'o', 'e', 'm', 'u', '\0'};
}

void append_state_record(std::vector<uint8_t>& out, std::string_view type_name,
                         uint32_t state_version, std::span<const uint8_t> state) {
  StateRecordHeader h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.format = kStateRecordFormat;
  h.state_version = state_version;
  h.type_len = static_cast<uint32_t>(type_name.size());
  h.payload_len = state.size();
  const uint8_t* hp = reinterpret_cast<const uint8_t*>(&h);
  out.insert(out.end(), hp, hp + sizeof(h));
  out.insert(out.end(), type_name.begin(), type_name.end());
  out.insert(out.end(), state.begin(), state.end());
}

Result<std::span<const uint8_t>> last_state_record(std::span<const uint8_t> stream,
                                                   std::string_view type_name,
                                                   uint32_t state_version) {
  if (stream.empty()) return Status::error(ENODATA, "migration: no device state was written");
  std::span<const uint8_t> last;
  size_t at = 0;
  while (at < stream.size()) {
    StateRecordHeader h{};
    if (stream.size() - at < sizeof(h))
      return Status::error(EINVAL, fmt::format("migration: stream ends inside a record header at "
                                               "byte {}",
                                               at));
    std::memcpy(&h, stream.data() + at, sizeof(h));
    if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0)
      return Status::error(EINVAL, fmt::format("migration: byte {} is not the start of a uvio device "
                                               "state record",
                                               at));
    if (h.format != kStateRecordFormat)
      return Status::error(EPROTO, fmt::format("migration: record format {} is not supported (this "
                                               "build reads format {})",
                                               h.format, kStateRecordFormat));
    if (h.type_len > kMaxTypeName || h.payload_len > kMaxStatePayload)
      return Status::error(EINVAL, "migration: record header has impossible lengths");
    at += sizeof(h);
    if (stream.size() - at < h.type_len + h.payload_len)
      return Status::error(EINVAL, "migration: stream ends inside a record");
    std::string_view type(reinterpret_cast<const char*>(stream.data() + at), h.type_len);
    if (type != type_name)
      return Status::error(EINVAL, fmt::format("migration: the stream holds a '{}' device, this "
                                               "device is '{}'",
                                               type, type_name));
    if (h.state_version != state_version)
      return Status::error(EPROTO, fmt::format("migration: '{}' state version {} cannot be loaded by "
                                               "version {}",
                                               type, h.state_version, state_version));
    at += h.type_len;
    last = stream.subspan(at, static_cast<size_t>(h.payload_len));
    at += static_cast<size_t>(h.payload_len);
  }
  return last;
}

}  // namespace uvio::emu
