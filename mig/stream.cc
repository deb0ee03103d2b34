// The migration stream: section framing with CRC-32C, and the payloads both ends must
// agree on before anything is applied.
//
// Payload layouts (little-endian; a string is u32 length + bytes, no NUL):
//   Hello:      string app, string token,
//               u32 areas,        each: u32 id, u32 reserved 0, u64 va, u64 len, u64 iova, u64 page_size
//               u32 devices,      each: string name, u16 vendor_id, u16 device_id, u32 class_code
//               u32 participants, each: string name
//   HelloReply, Ack: u32 ok (0 or 1), string message
//   Pages:      u64 va, then the bytes of the run (at least one)
#include "mig/stream.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace uvio::mig {
namespace {

constexpr size_t kStreamStartBytes = 16;
constexpr uint32_t kMaxString = 4096;
constexpr uint32_t kMaxAreas = 1024;
constexpr uint32_t kMaxDevices = 256;
constexpr uint32_t kMaxParticipants = 256;
constexpr size_t kPagesHeaderBytes = 8;
// A run per section: the largest whole number of 4 KiB pages that fits beside its va.
constexpr uint64_t kMaxPagesPerSection = (kMaxSectionPayload - kPagesHeaderBytes) & ~uint64_t{4095};
// Small sections go out in one write with their header (one segment with TCP_NODELAY).
constexpr size_t kCoalesceBytes = 64 << 10;

void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t load_u32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t load_u64(const uint8_t* p) { return uint64_t{load_u32(p)} | uint64_t{load_u32(p + 4)} << 32; }

void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Reads a payload front to back; the first short read or bad value sticks, so a decoder
// checks once at the end and never reads outside the span.
class PayloadReader {
 public:
  PayloadReader(std::span<const uint8_t> bytes, std::string_view what) : bytes_(bytes), what_(what) {}

  uint16_t u16() { return take(2) ? load_u16(last_) : 0; }
  uint32_t u32() { return take(4) ? load_u32(last_) : 0; }
  uint64_t u64() { return take(8) ? load_u64(last_) : 0; }
  std::string string(std::string_view field) {
    uint32_t len = u32();
    if (!status_) return {};
    if (len > kMaxString) {
      fail(fmt::format("{} is {} bytes, more than {}", field, len, kMaxString));
      return {};
    }
    if (!take(len)) return {};
    return std::string(reinterpret_cast<const char*>(last_), len);
  }
  uint32_t count(std::string_view field, uint32_t max) {
    uint32_t n = u32();
    if (status_ && n > max) fail(fmt::format("{} {}, more than {}", n, field, max));
    return status_ ? n : 0;
  }
  void fail(std::string why) {
    if (status_) status_ = Status::error(EBADMSG, fmt::format("{} payload: {}", what_, why));
  }
  std::span<const uint8_t> rest() const { return bytes_.subspan(pos_); }
  // The decoded value, or why not: a short payload, a bad field, or bytes left over.
  Status finish() {
    if (status_ && pos_ != bytes_.size())
      fail(fmt::format("{} trailing bytes after the last field", bytes_.size() - pos_));
    return status_;
  }
  bool ok() const { return status_.is_ok(); }

 private:
  bool take(size_t n) {
    if (!status_) return false;
    if (bytes_.size() - pos_ < n) {
      fail(fmt::format("truncated at byte {} of {}", pos_, bytes_.size()));
      return false;
    }
    last_ = bytes_.data() + pos_;
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> bytes_;
  std::string_view what_;
  size_t pos_ = 0;
  const uint8_t* last_ = nullptr;
  Status status_;
};

bool known_type(uint16_t type) {
  return type >= static_cast<uint16_t>(SectionType::Hello) && type <= static_cast<uint16_t>(SectionType::Abort);
}

void build_header(uint8_t* h, SectionType type, uint32_t id, uint32_t len, uint32_t payload_crc) {
  store_u32(h, kSectionMagic);
  h[4] = static_cast<uint8_t>(static_cast<uint16_t>(type));
  h[5] = static_cast<uint8_t>(static_cast<uint16_t>(type) >> 8);
  h[6] = 0;  // flags
  h[7] = 0;
  store_u32(h + 8, id);
  store_u32(h + 12, len);
  store_u32(h + 16, payload_crc);
  store_u32(h + 20, crc32c({h, 20}));
}

struct HeaderFields {
  SectionType type;
  uint32_t id;
  uint32_t len;
  uint32_t payload_crc;
};

// Checks a section header: the magic, then its CRC (so no field of a damaged header is
// trusted, least of all the length), then the fields.
Result<HeaderFields> check_header(const uint8_t* h) {
  uint32_t magic = load_u32(h);
  if (magic != kSectionMagic)
    return Status::error(EPROTO, fmt::format("section header magic is {:#010x}, expected {:#010x}", magic,
                                             kSectionMagic));
  uint32_t want = load_u32(h + 20);
  uint32_t got = crc32c({h, 20});
  if (want != got)
    return Status::error(EBADMSG, fmt::format("section header CRC-32C is {:#010x}, the header says {:#010x}",
                                              got, want));
  uint16_t type = load_u16(h + 4);
  uint16_t flags = load_u16(h + 6);
  HeaderFields f{static_cast<SectionType>(type), load_u32(h + 8), load_u32(h + 12), load_u32(h + 16)};
  if (!known_type(type)) return Status::error(EPROTO, fmt::format("unknown section type {}", type));
  if (flags != 0) return Status::error(EPROTO, fmt::format("section flags {:#06x}, none are defined", flags));
  if (f.len > kMaxSectionPayload)
    return Status::error(EPROTO, fmt::format("section payload of {} bytes, more than {}", f.len, kMaxSectionPayload));
  return f;
}

Status check_payload(const HeaderFields& f, std::span<const uint8_t> payload) {
  uint32_t got = crc32c(payload);
  if (got != f.payload_crc)
    return Status::error(EBADMSG, fmt::format("section type {} id {}: payload CRC-32C is {:#010x}, the header "
                                              "says {:#010x}", static_cast<uint16_t>(f.type), f.id, got,
                                              f.payload_crc));
  return Status::ok();
}

}  // namespace

std::vector<uint8_t> encode_hello(const HelloPayload& hello) {
  std::vector<uint8_t> out;
  put_string(out, hello.app);
  put_string(out, hello.token);
  put_u32(out, static_cast<uint32_t>(hello.areas.size()));
  for (const MemAreaLayout& a : hello.areas) {
    put_u32(out, a.id);
    put_u32(out, 0);
    put_u64(out, a.va);
    put_u64(out, a.len);
    put_u64(out, a.iova);
    put_u64(out, a.page_size);
  }
  put_u32(out, static_cast<uint32_t>(hello.devices.size()));
  for (const DeviceLayout& d : hello.devices) {
    put_string(out, d.name);
    put_u16(out, d.vendor_id);
    put_u16(out, d.device_id);
    put_u32(out, d.class_code);
  }
  put_u32(out, static_cast<uint32_t>(hello.participants.size()));
  for (const std::string& p : hello.participants) put_string(out, p);
  return out;
}

Result<HelloPayload> decode_hello(std::span<const uint8_t> payload) {
  PayloadReader r(payload, "Hello");
  HelloPayload h;
  h.app = r.string("the application name");
  h.token = r.string("the token");
  uint32_t areas = r.count("memory areas", kMaxAreas);
  for (uint32_t i = 0; i < areas && r.ok(); ++i) {
    MemAreaLayout a;
    a.id = r.u32();
    if (r.u32() != 0) r.fail(fmt::format("area {}: reserved field is not 0", i));
    a.va = r.u64();
    a.len = r.u64();
    a.iova = r.u64();
    a.page_size = r.u64();
    h.areas.push_back(a);
  }
  uint32_t devices = r.count("devices", kMaxDevices);
  for (uint32_t i = 0; i < devices && r.ok(); ++i) {
    DeviceLayout d;
    d.name = r.string("a device name");
    d.vendor_id = r.u16();
    d.device_id = r.u16();
    d.class_code = r.u32();
    h.devices.push_back(std::move(d));
  }
  uint32_t participants = r.count("participants", kMaxParticipants);
  for (uint32_t i = 0; i < participants && r.ok(); ++i) h.participants.push_back(r.string("a participant name"));
  UVIO_TRY(r.finish());
  return h;
}

std::vector<uint8_t> encode_reply(const ReplyPayload& reply) {
  std::vector<uint8_t> out;
  put_u32(out, reply.ok ? 1 : 0);
  put_string(out, reply.message);
  return out;
}

Result<ReplyPayload> decode_reply(std::span<const uint8_t> payload) {
  PayloadReader r(payload, "reply");
  ReplyPayload reply;
  uint32_t ok = r.u32();
  if (r.ok() && ok > 1) r.fail(fmt::format("ok is {}, not 0 or 1", ok));
  reply.ok = ok == 1;
  reply.message = r.string("the message");
  UVIO_TRY(r.finish());
  return reply;
}

std::vector<uint8_t> encode_pages(uint64_t va, const void* src, uint32_t len) {
  std::vector<uint8_t> out;
  out.reserve(kPagesHeaderBytes + len);
  put_u64(out, va);
  auto* p = static_cast<const uint8_t*>(src);
  out.insert(out.end(), p, p + len);
  return out;
}

Result<PagesPayload> decode_pages(std::span<const uint8_t> payload) {
  if (payload.size() <= kPagesHeaderBytes)
    return Status::error(EBADMSG, fmt::format("Pages payload of {} bytes holds no page data", payload.size()));
  PagesPayload pages;
  pages.va = load_u64(payload.data());
  pages.data = payload.subspan(kPagesHeaderBytes);
  if (pages.va + pages.data.size() < pages.va)
    return Status::error(EBADMSG, fmt::format("Pages run at {:#x} of {} bytes wraps the address space", pages.va,
                                              pages.data.size()));
  return pages;
}

Status StreamWriter::begin() {
  uint8_t start[kStreamStartBytes];
  std::memcpy(start, kStreamMagic, sizeof(kStreamMagic));
  store_u32(start + 8, kStreamVersion);
  store_u32(start + 12, 0);
  UVIO_TRY(channel_.write_all(start, sizeof(start)));
  bytes_ += sizeof(start);
  return Status::ok();
}

Status StreamWriter::write(SectionType type, uint32_t id, std::span<const uint8_t> payload) {
  if (payload.size() > kMaxSectionPayload)
    return Status::error(EMSGSIZE, fmt::format("section of {} bytes, more than the stream's {}", payload.size(),
                                               kMaxSectionPayload));
  uint8_t header[kSectionHeaderBytes];
  build_header(header, type, id, static_cast<uint32_t>(payload.size()), crc32c(payload));
  if (payload.size() <= kCoalesceBytes) {
    buffer_.assign(header, header + sizeof(header));
    buffer_.insert(buffer_.end(), payload.begin(), payload.end());
    UVIO_TRY(channel_.write_all(buffer_.data(), buffer_.size()));
  } else {
    UVIO_TRY(channel_.write_all(header, sizeof(header)));
    UVIO_TRY(channel_.write_all(payload.data(), payload.size()));
  }
  bytes_ += sizeof(header) + payload.size();
  return Status::ok();
}

Status StreamWriter::write_pages(uint64_t va, const void* src, uint64_t len) {
  auto* p = static_cast<const uint8_t*>(src);
  while (len > 0) {
    uint64_t chunk = std::min(len, kMaxPagesPerSection);
    size_t payload_len = kPagesHeaderBytes + chunk;
    // header, va, pages in one buffer: one copy, then one CRC over what is sent.
    buffer_.resize(kSectionHeaderBytes + payload_len);
    uint8_t* payload = buffer_.data() + kSectionHeaderBytes;
    store_u32(payload, static_cast<uint32_t>(va));
    store_u32(payload + 4, static_cast<uint32_t>(va >> 32));
    std::memcpy(payload + kPagesHeaderBytes, p, chunk);
    build_header(buffer_.data(), SectionType::Pages, 0, static_cast<uint32_t>(payload_len),
                 crc32c({payload, payload_len}));
    UVIO_TRY(channel_.write_all(buffer_.data(), buffer_.size()));
    bytes_ += buffer_.size();
    va += chunk;
    p += chunk;
    len -= chunk;
  }
  return Status::ok();
}

Status StreamReader::begin() {
  uint8_t start[kStreamStartBytes];
  UVIO_TRY(channel_.read_exact(start, sizeof(start), timeout_ms_));
  bytes_ += sizeof(start);
  if (std::memcmp(start, kStreamMagic, sizeof(kStreamMagic)) != 0)
    return Status::error(EPROTO, fmt::format("{} is not a uvio migration stream (wrong magic)", channel_.peer()));
  uint32_t version = load_u32(start + 8);
  if (version != kStreamVersion)
    return Status::error(EPROTONOSUPPORT, fmt::format("{} sends migration stream version {}; this build speaks "
                                                      "version {}", channel_.peer(), version, kStreamVersion));
  if (load_u32(start + 12) != 0)
    return Status::error(EPROTO, fmt::format("{}: reserved field of the stream start is not 0", channel_.peer()));
  return Status::ok();
}

Result<Section> StreamReader::next() {
  uint8_t header[kSectionHeaderBytes];
  UVIO_TRY(channel_.read_exact(header, sizeof(header), timeout_ms_));
  bytes_ += sizeof(header);
  auto f = check_header(header);
  if (!f) return Status::error(f.status().code(), fmt::format("{} at stream byte {}", f.status().message(),
                                                              bytes_ - sizeof(header)));
  Section s;
  s.type = f->type;
  s.id = f->id;
  s.payload.resize(f->len);
  if (f->len > 0) UVIO_TRY(channel_.read_exact(s.payload.data(), f->len, timeout_ms_));
  bytes_ += f->len;
  UVIO_TRY(check_payload(*f, s.payload));
  return s;
}

Result<Section> parse_section(std::span<const uint8_t>* bytes) {
  if (bytes->size() < kSectionHeaderBytes)
    return Status::error(ENODATA, fmt::format("{} bytes, less than a section header", bytes->size()));
  auto f = check_header(bytes->data());
  if (!f) return f.status();
  if (bytes->size() - kSectionHeaderBytes < f->len)
    return Status::error(ENODATA, fmt::format("section payload of {} bytes, only {} present", f->len,
                                              bytes->size() - kSectionHeaderBytes));
  std::span<const uint8_t> payload = bytes->subspan(kSectionHeaderBytes, f->len);
  UVIO_TRY(check_payload(*f, payload));
  Section s;
  s.type = f->type;
  s.id = f->id;
  s.payload.assign(payload.begin(), payload.end());
  *bytes = bytes->subspan(kSectionHeaderBytes + f->len);
  return s;
}

}  // namespace uvio::mig
