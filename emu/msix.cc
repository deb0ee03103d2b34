#include "emu/msix.h"

#include <fmt/format.h>

#include <sys/eventfd.h>

#include <cstring>

namespace uvio::emu {

Msix::Msix(uint32_t vectors)
    : vectors_(vectors), table_(table_bytes()), pba_((vectors + 63) / 64), eventfds_(vectors) {
  reset();
}

void Msix::reset() {
  std::fill(table_.begin(), table_.end(), 0);
  // 6.8.2.9: every vector's mask bit is set after reset.
  for (uint32_t v = 0; v < vectors_; ++v) table_[v * kEntryBytes + 12] = kVectorCtrlMask;
  std::fill(pba_.begin(), pba_.end(), 0);
  for (auto& fd : eventfds_) fd.reset();
  enabled_ = false;
  function_masked_ = false;
}

Status Msix::set_eventfds(uint32_t start, std::vector<iommu::vfio_user::UniqueFd> fds) {
  if (start > vectors_ || fds.size() > vectors_ - start)
    return Status::error(EINVAL, fmt::format("MSI-X: vectors [{}, {}) exceed the device's {}", start,
                                             start + fds.size(), vectors_));
  for (size_t i = 0; i < fds.size(); ++i) {
    uint32_t v = start + static_cast<uint32_t>(i);
    bool wired = fds[i].valid();
    eventfds_[v] = std::move(fds[i]);
    if (wired) table_[v * kEntryBytes + 12] &= static_cast<uint8_t>(~kVectorCtrlMask);
  }
  enabled_ = false;
  for (const auto& fd : eventfds_) enabled_ |= fd.valid();
  deliver_unmasked_pending();
  return Status::ok();
}

void Msix::disable_all() {
  for (auto& fd : eventfds_) fd.reset();
  enabled_ = false;
}

void Msix::set_vector_masked(uint32_t vector, bool mask) {
  if (vector >= vectors_) return;
  uint8_t& ctrl = table_[vector * kEntryBytes + 12];
  if (mask)
    ctrl |= kVectorCtrlMask;
  else
    ctrl &= static_cast<uint8_t>(~kVectorCtrlMask);
  deliver_unmasked_pending();
}

void Msix::set_control(bool enabled, bool function_masked) {
  enabled_ = enabled;
  function_masked_ = function_masked;
  deliver_unmasked_pending();
}

bool Msix::masked(uint32_t vector) const {
  return function_masked_ || (table_[vector * kEntryBytes + 12] & kVectorCtrlMask);
}

bool Msix::pending(uint32_t vector) const {
  return vector < vectors_ && (pba_[vector / 64] >> (vector % 64)) & 1;
}

void Msix::signal(uint32_t vector) {
  if (eventfds_[vector].valid()) eventfd_write(eventfds_[vector].get(), 1);
}

void Msix::trigger(uint32_t vector) {
  if (vector >= vectors_ || !enabled_) return;
  if (masked(vector)) {
    // 6.8.2.10: a masked vector's message is held as pending until it is unmasked.
    pba_[vector / 64] |= 1ull << (vector % 64);
    return;
  }
  signal(vector);
}

void Msix::deliver_unmasked_pending() {
  if (!enabled_) return;
  for (uint32_t v = 0; v < vectors_; ++v) {
    if (!pending(v) || masked(v)) continue;
    pba_[v / 64] &= ~(1ull << (v % 64));
    signal(v);
  }
}

void Msix::table_read(uint64_t offset, void* buf, size_t len) const {
  std::memcpy(buf, table_.data() + offset, len);
}

void Msix::table_write(uint64_t offset, const void* buf, size_t len) {
  std::memcpy(table_.data() + offset, buf, len);
  // Vector control is the only field with behaviour; only bit 0 is writable (6.8.2.9).
  for (uint32_t v = static_cast<uint32_t>(offset / kEntryBytes);
       v < vectors_ && v * kEntryBytes < offset + len; ++v) {
    uint8_t* ctrl = &table_[v * kEntryBytes + 12];
    ctrl[0] &= kVectorCtrlMask;
    ctrl[1] = ctrl[2] = ctrl[3] = 0;
  }
  deliver_unmasked_pending();
}

void Msix::pba_read(uint64_t offset, void* buf, size_t len) const {
  std::memcpy(buf, reinterpret_cast<const uint8_t*>(pba_.data()) + offset, len);
}

}  // namespace uvio::emu
