// libFuzzer target: the migration stream as a destination receives it (mig/stream.h):
// parse_section over the bytes, then the decoder of each section's payload
// (decode_hello, decode_reply, decode_pages). A payload that decodes must survive
// encoding and decoding again unchanged.
//
// Input: u8 mode, then the stream's sections. With mode bit 0 the harness first fixes
// every section's CRCs (payload and header), so the fuzzer reaches the decoders
// instead of spending itself on checksums; without it, the CRC checks themselves are
// fuzzed.
#include "mig/stream.h"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace mig = uvio::mig;

namespace {

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void fix_crcs(std::vector<uint8_t>& b) {
  size_t at = 0;
  while (b.size() - at >= mig::kSectionHeaderBytes) {
    uint32_t len = load<uint32_t>(b.data() + at + 12);
    size_t avail = b.size() - at - mig::kSectionHeaderBytes;
    uint32_t payload_crc = mig::crc32c({b.data() + at + mig::kSectionHeaderBytes, std::min<size_t>(len, avail)});
    std::memcpy(b.data() + at + 16, &payload_crc, 4);
    uint32_t header_crc = mig::crc32c({b.data() + at, 20});
    std::memcpy(b.data() + at + 20, &header_crc, 4);
    if (len > avail) return;
    at += mig::kSectionHeaderBytes + len;
  }
}

[[noreturn]] void fail(const char*) { __builtin_trap(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::vector<uint8_t> stream(data + 1, data + size);
  if (data[0] & 1) fix_crcs(stream);
  std::span<const uint8_t> rest(stream);
  for (int n = 0; n < 256 && !rest.empty(); ++n) {
    size_t before = rest.size();
    auto section = mig::parse_section(&rest);
    if (!section) break;
    if (rest.size() >= before) fail("parse_section consumed nothing");
    const auto& p = section->payload;
    switch (section->type) {
      case mig::SectionType::Hello: {
        auto h = mig::decode_hello(p);
        if (h) {
          auto again = mig::decode_hello(mig::encode_hello(*h));
          if (!again || again->app != h->app || again->token != h->token || again->areas.size() != h->areas.size() ||
              again->devices.size() != h->devices.size() || again->participants != h->participants)
            fail("hello does not survive a round trip");
        }
        break;
      }
      case mig::SectionType::HelloReply:
      case mig::SectionType::Ack: {
        auto r = mig::decode_reply(p);
        if (r) {
          auto again = mig::decode_reply(mig::encode_reply(*r));
          if (!again || again->ok != r->ok || again->message != r->message) fail("reply does not survive a round trip");
        }
        break;
      }
      case mig::SectionType::Pages: {
        auto pages = mig::decode_pages(p);
        if (pages) {
          if (pages->data.data() < p.data() || pages->data.data() + pages->data.size() > p.data() + p.size())
            fail("pages point outside their section");
          auto again = mig::decode_pages(mig::encode_pages(pages->va, pages->data.data(),
                                                           static_cast<uint32_t>(pages->data.size())));
          if (!again || again->va != pages->va || again->data.size() != pages->data.size())
            fail("pages do not survive a round trip");
        }
        break;
      }
      default: break;
    }
  }
  return 0;
}
