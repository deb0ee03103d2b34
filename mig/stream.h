// The migration stream: what a source sends a destination, and how the destination
// checks it before it applies a byte. A stream is a magic, a version, then sections;
// every section carries its type, an id, a bounded length and a CRC-32C of its payload,
// and its header has its own CRC, so a flipped bit anywhere is found where it lands.
//
// Wire layout (little-endian):
//   stream start:   "UVIOMIG\0" (8 bytes), u32 version (kStreamVersion), u32 reserved = 0
//   section header: u32 magic kSectionMagic, u16 type, u16 flags (0), u32 id,
//                   u32 payload length (<= kMaxSectionPayload), u32 payload CRC-32C,
//                   u32 header CRC-32C (of the 20 bytes before it)
//   then the payload.
#pragma once

#include "mig/transport.h"

#include <uvio/status.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace uvio::mig {

inline constexpr char kStreamMagic[8] = {'U', 'V', 'I', 'O', 'M', 'I', 'G', '\0'};
inline constexpr uint32_t kStreamVersion = 1;
inline constexpr uint32_t kSectionMagic = 0x43455355;  // "USEC"
inline constexpr uint32_t kMaxSectionPayload = 4u << 20;
inline constexpr size_t kSectionHeaderBytes = 24;

enum class SectionType : uint16_t {
  Hello = 1,        // source -> destination, first: who is sending what (HelloPayload)
  HelloReply = 2,   // destination -> source: accepted, or why not (ReplyPayload)
  Pages = 3,        // one run of memory pages (PagesPayload)
  PassEnd = 4,      // end of a memory pass: u32 pass number, u64 bytes in the pass
  DeviceState = 5,  // one chunk of a device's v2 migration data; id = device index
  DeviceEnd = 6,    // a device's data is complete; id = device index
  Participant = 7,  // an application or runtime participant's saved state; id = index
  Complete = 8,     // source: everything is sent
  Ack = 9,          // destination -> source: applied and running (ReplyPayload)
  Abort = 10,       // either side: giving up; payload is the reason (UTF-8)
};

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

struct Section {
  SectionType type{};
  uint32_t id = 0;
  std::vector<uint8_t> payload;
};

// What the destination must agree to before anything is applied.
struct MemAreaLayout {
  uint32_t id = 0;
  uint64_t va = 0;
  uint64_t len = 0;
  uint64_t iova = 0;
  uint64_t page_size = 0;
};
struct DeviceLayout {
  std::string name;         // source side name (informative)
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint32_t class_code = 0;
};
struct HelloPayload {
  std::string app;          // the application's name: a destination runs the same one
  std::string token;        // must equal the destination's --migrate-token (both may be empty)
  std::vector<MemAreaLayout> areas;
  std::vector<DeviceLayout> devices;
  std::vector<std::string> participants;  // names, in the order they are loaded
};
struct ReplyPayload {
  bool ok = false;
  std::string message;      // why not, when !ok
};
// One run of whole pages: `data.size()` bytes at `va` (inside one area).
struct PagesPayload {
  uint64_t va = 0;
  std::span<const uint8_t> data;  // points into the section's payload
};

std::vector<uint8_t> encode_hello(const HelloPayload& hello);
Result<HelloPayload> decode_hello(std::span<const uint8_t> payload);
std::vector<uint8_t> encode_reply(const ReplyPayload& reply);
Result<ReplyPayload> decode_reply(std::span<const uint8_t> payload);
// encode_pages appends the header and copies `len` bytes from `va`.
std::vector<uint8_t> encode_pages(uint64_t va, const void* src, uint32_t len);
Result<PagesPayload> decode_pages(std::span<const uint8_t> payload);

class StreamWriter {
 public:
  explicit StreamWriter(Channel& channel) : channel_(channel) {}
  Status begin();  // the stream start
  Status write(SectionType type, uint32_t id, std::span<const uint8_t> payload);
  // Pages straight from memory, split into sections of at most kMaxSectionPayload.
  Status write_pages(uint64_t va, const void* src, uint64_t len);
  uint64_t bytes_written() const { return bytes_; }

 private:
  Channel& channel_;
  uint64_t bytes_ = 0;
  // Pages are copied before their CRC is taken: lcores may store into them meanwhile,
  // and the CRC must describe the bytes that go out.
  std::vector<uint8_t> buffer_;
};

class StreamReader {
 public:
  explicit StreamReader(Channel& channel) : channel_(channel) {}
  // Checks the stream start: EPROTO on a wrong magic, EPROTONOSUPPORT on another version.
  Status begin();
  // The next section, with its CRCs and bounds checked (EBADMSG on a mismatch, EPROTO on
  // an unknown type or bad header, ECONNRESET when the peer closed mid-stream).
  Result<Section> next();
  uint64_t bytes_read() const { return bytes_; }
  // ETIMEDOUT from begin()/next() when the peer sends nothing for this long (0, the
  // default: wait until the peer closes or the channel is shut down).
  void set_timeout(int timeout_ms) { timeout_ms_ = timeout_ms; }

 private:
  Channel& channel_;
  uint64_t bytes_ = 0;
  int timeout_ms_ = 0;
};

// Parses one section from bytes already in memory (fuzzing, tests): consumes the header
// and payload from the front of `bytes`, or returns why not.
Result<Section> parse_section(std::span<const uint8_t>* bytes);

}  // namespace uvio::mig
