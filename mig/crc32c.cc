// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of the migration stream's
// sections. The SSE4.2 crc32 instruction computes exactly this polynomial; without it a
// byte table does the same, more slowly.
#include "mig/stream.h"

#include <array>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace uvio::mig {
namespace {

#if !defined(__SSE4_2__)
constexpr uint32_t kReflectedPoly = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? (c >> 1) ^ kReflectedPoly : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = make_table();
#endif

}  // namespace

// `crc` is a previous result (0 to start), so a CRC can be computed over pieces.
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) {
  uint32_t c = ~crc;
  const uint8_t* p = data.data();
  size_t n = data.size();
#if defined(__SSE4_2__)
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));
    c64 = _mm_crc32_u64(c64, word);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n > 0) {
    c = _mm_crc32_u8(c, *p++);
    --n;
  }
#else
  while (n > 0) {
    c = kTable[(c ^ *p++) & 0xff] ^ (c >> 8);
    --n;
  }
#endif
  return ~c;
}

}  // namespace uvio::mig
