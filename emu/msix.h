// MSI-X emulation for a software device (PCI Local Bus 3.0, section 6.8.2): the vector
// table and pending-bit array the client reads and writes through trapped BAR accesses,
// and delivery of each vector to the eventfd the client wired with SET_IRQS.
#pragma once

#include <uvio/status.h>

#include "emu/device_model.h"
#include "iommu/vfio_user_socket.h"

#include <cstdint>
#include <vector>

namespace uvio::emu {

class Msix final : public IrqSink {
 public:
  static constexpr uint32_t kEntryBytes = 16;       // 6.8.2.6: addr lo, addr hi, data, control
  static constexpr uint32_t kVectorCtrlMask = 1u;   // 6.8.2.9: vector control bit 0

  explicit Msix(uint32_t vectors);
  uint32_t vectors() const { return vectors_; }
  uint64_t table_bytes() const { return uint64_t{vectors_} * kEntryBytes; }
  uint64_t pba_bytes() const { return ((vectors_ + 63) / 64) * 8; }

  // Wires eventfds to [start, start + fds.size()); an invalid UniqueFd unwires one.
  // Wiring a vector unmasks it, as the kernel does when it programs a vector for
  // VFIO_DEVICE_SET_IRQS, so a client that never touches the table still gets interrupts.
  Status set_eventfds(uint32_t start, std::vector<iommu::vfio_user::UniqueFd> fds);
  void disable_all();  // unwires every vector and clears MSI-X enable
  // Per-vector masking through SET_IRQS ACTION_MASK / ACTION_UNMASK.
  void set_vector_masked(uint32_t vector, bool masked);

  // Message control bits 15 (enable) and 14 (function mask), from config space.
  void set_control(bool enabled, bool function_masked);
  bool enabled() const { return enabled_; }

  // Trapped accesses; offsets are relative to the table or PBA start and must be inside.
  void table_read(uint64_t offset, void* buf, size_t len) const;
  void table_write(uint64_t offset, const void* buf, size_t len);
  void pba_read(uint64_t offset, void* buf, size_t len) const;

  bool pending(uint32_t vector) const;
  void reset();

  // IrqSink
  void trigger(uint32_t vector) override;

 private:
  bool masked(uint32_t vector) const;
  void signal(uint32_t vector);
  void deliver_unmasked_pending();

  uint32_t vectors_;
  std::vector<uint8_t> table_;
  std::vector<uint64_t> pba_;
  std::vector<iommu::vfio_user::UniqueFd> eventfds_;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace uvio::emu
