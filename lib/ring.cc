#include <uvio/ring.h>

#include <fmt/format.h>

#include <cstdlib>
#include <new>

namespace uvio {

Result<std::unique_ptr<Ring>> Ring::create(std::string_view name, uint32_t size, unsigned flags) {
  if (size < 2 || size > (1u << 31) || (size & (size - 1)) != 0)
    return Status::error(EINVAL, fmt::format("ring '{}': size {} is not a power of two in [2, 2^31]", name, size));
  if (flags & ~(kSingleProducer | kSingleConsumer))
    return Status::error(EINVAL, fmt::format("ring '{}': unknown flags {:#x}", name, flags));
  std::unique_ptr<Ring> ring(new Ring(name, size, flags));
  if (!ring->slots_) return Status::error(ENOMEM, fmt::format("ring '{}': no memory for {} slots", name, size));
  return ring;
}

Ring::Ring(std::string_view name, uint32_t size, unsigned flags) : mask_(size - 1), flags_(flags), name_(name) {
  prod_.single = flags & kSingleProducer;
  cons_.single = flags & kSingleConsumer;
  slots_ = static_cast<void**>(std::aligned_alloc(kCacheLine, (size_t{size} * sizeof(void*) + kCacheLine - 1) / kCacheLine * kCacheLine));
}

Ring::~Ring() { std::free(slots_); }

}  // namespace uvio
