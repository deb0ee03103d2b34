// Reading a fuzzer's input as a sequence of fields: every read is bounded by what is
// left, and an exhausted input reads as zeros, so a harness never has to check.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace uvio::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  size_t left() const { return size_ - pos_; }

  template <class T>
  T get() {
    T v{};
    size_t n = std::min(sizeof(T), left());
    std::memcpy(&v, data_ + pos_, n);
    pos_ += n;
    return v;
  }
  // Up to n bytes (fewer when the input ends first).
  std::span<const uint8_t> bytes(size_t n) {
    n = std::min(n, left());
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace uvio::fuzz
