// Little-endian, bounds-checked encoding of the state a driver or a pool keeps outside
// runtime memory, for migration. The reader never reads past its span: a short or
// malformed input turns every later get() into false, so a parser checks once at the end.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace uvio {

class StateWriter {
 public:
  explicit StateWriter(std::vector<uint8_t>& out) : out_(out) {}
  template <class T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void put_bool(bool v) { put<uint8_t>(v ? 1 : 0); }
  // Addresses in runtime memory travel as numbers: they mean the same on the destination.
  void put_address(const void* p) { put<uint64_t>(reinterpret_cast<uintptr_t>(p)); }
  void put_string(std::string_view s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }

 private:
  std::vector<uint8_t>& out_;
};

class StateReader {
 public:
  explicit StateReader(std::span<const uint8_t> in) : in_(in) {}
  template <class T>
  bool get(T* v) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>);
    if (!ok_ || in_.size() - pos_ < sizeof(T)) return ok_ = false;
    std::memcpy(v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool get_bool(bool* v) {
    uint8_t b = 0;
    if (!get(&b)) return false;
    if (b > 1) return ok_ = false;
    *v = b != 0;
    return true;
  }
  template <class T>
  bool get_address(T** p) {
    uint64_t v = 0;
    if (!get(&v)) return false;
    *p = reinterpret_cast<T*>(static_cast<uintptr_t>(v));
    return true;
  }
  bool get_string(std::string* s, uint32_t max_len) {
    uint32_t n = 0;
    if (!get(&n)) return false;
    if (n > max_len || in_.size() - pos_ < n) return ok_ = false;
    s->assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool ok() const { return ok_; }
  size_t left() const { return in_.size() - pos_; }
  // Whether `count` more elements of `elem_bytes` each could still be in the input: a
  // length field is checked with this before anything is sized from it.
  bool has_room(uint64_t count, uint64_t elem_bytes) const {
    return ok_ && elem_bytes != 0 && count <= (in_.size() - pos_) / elem_bytes;
  }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace uvio
