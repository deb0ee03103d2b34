// The contract between the vfio-user server (emu/server) and a software device model
// (emu/nvme, emu/virtio_net). The server owns the socket, the PCI config space, the
// MSI-X table, the client's DMA mappings and the migration state machine; a model owns
// its registers and queues and is polled on the device thread.
#pragma once

#include <uvio/status.h>

#include "iommu/device.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace uvio::emu {

// Bounds-checked access to the memory the client registered with DMA_MAP. Every byte
// written through it is logged when dirty logging runs. An address outside the client's
// mappings fails (the model turns that into its own error status); it never faults.
class DmaAccess {
 public:
  virtual ~DmaAccess() = default;
  virtual bool read(uint64_t iova, void* dst, size_t len) = 0;
  virtual bool write(uint64_t iova, const void* src, size_t len) = 0;
  // A direct pointer when [iova, iova + len) lies inside one mapping the server can
  // reach directly, else nullptr. Writes through it must be reported with mark_dirty.
  virtual std::byte* translate(uint64_t iova, size_t len) = 0;
  virtual void mark_dirty(uint64_t iova, size_t len) = 0;
  // translate(), for a range the device may also write: nullptr when it may not.
  virtual std::byte* translate_writable(uint64_t iova, size_t len) { return translate(iova, len); }

  // Ring indexes, descriptor flags, doorbell shadows and phase words, which the driver
  // writes or reads while the device runs: one naturally aligned access of the whole
  // value (acquire on load, release on store). read()/write() copy, and a copy may be
  // seen half done (byte by byte under some sanitizers): an index read half-updated
  // looks like garbage. False outside the mappings, misaligned, or not writable.
  template <class T>
  bool load_shared(uint64_t iova, T* out) {
    T* p = shared_word<T>(iova, false);
    if (!p) return false;
    *out = std::atomic_ref<T>(*p).load(std::memory_order_acquire);
    return true;
  }
  template <class T>
  bool store_shared(uint64_t iova, T value) {
    T* p = shared_word<T>(iova, true);
    if (!p) return false;
    std::atomic_ref<T>(*p).store(value, std::memory_order_release);
    mark_dirty(iova, sizeof(T));
    return true;
  }

 private:
  template <class T>
  T* shared_word(uint64_t iova, bool write) {
    static_assert(std::is_same_v<T, uint16_t> || std::is_same_v<T, uint32_t>);
    if (iova % sizeof(T) != 0) return nullptr;
    std::byte* p = write ? translate_writable(iova, sizeof(T)) : translate(iova, sizeof(T));
    if (!p || reinterpret_cast<uintptr_t>(p) % sizeof(T) != 0) return nullptr;
    return reinterpret_cast<T*>(p);
  }
};

// Interrupt delivery to the client (MSI-X vectors wired to its eventfds with SET_IRQS).
class IrqSink {
 public:
  virtual ~IrqSink() = default;
  // No-op when the vector is masked or unwired; a masked vector's interrupt is pending
  // (PBA) and fires on unmask, as PCI requires.
  virtual void trigger(uint32_t vector) = 0;
};

struct PciIdentity {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // base << 16 | sub << 8 | prog-if
};

// One memory BAR. Pages listed in `shared` live in memory the client mmaps (sparse
// mmap), so the fast path (doorbells, notify areas) needs no messages; the model sees
// them through the pointer the server hands it and polls them. Other accesses arrive
// as bar_read/bar_write.
struct BarLayout {
  uint32_t index = 0;
  uint64_t size = 0;  // power of two, >= 4 KiB
  std::vector<iommu::SparseArea> shared;
};

struct MsixLayout {
  uint32_t vectors = 0;    // 0: no MSI-X capability
  uint32_t bar = 0;        // table and PBA live in this BAR (trapped, emulated by the server)
  uint64_t table_offset = 0;
  uint64_t pba_offset = 0;
};

// Extra PCI capabilities the model wants in config space (vendor-specific ones such as
// virtio's). The server adds PCIe and MSI-X itself and links the list.
struct PciCapability {
  uint8_t id = 0;
  std::vector<uint8_t> body;  // bytes after the id/next pair
};

class DeviceModel {
 public:
  virtual ~DeviceModel() = default;

  virtual std::string_view type_name() const = 0;  // "nvme", "virtio-net": checked on migration load
  virtual uint32_t state_version() const = 0;      // bumped when the saved format changes
  virtual PciIdentity identity() const = 0;
  virtual std::vector<BarLayout> bars() const = 0;
  virtual MsixLayout msix() const = 0;
  virtual std::vector<PciCapability> capabilities() const { return {}; }

  // Called once before the first client, with the server's services. `shared[i]`
  // points at the shared pages of bars()[i] laid out at their BAR offsets (the pointer
  // is the BAR's offset 0; only the shared areas may be touched).
  virtual void attach(DmaAccess& dma, IrqSink& irq, std::span<std::byte* const> shared) = 0;

  // Trapped BAR accesses (width 1, 2, 4 or 8).
  virtual uint64_t bar_read(uint32_t bar, uint64_t offset, unsigned width) = 0;
  virtual void bar_write(uint32_t bar, uint64_t offset, uint64_t value, unsigned width) = 0;

  // Polled on the device thread while the device runs; returns work done (0 = idle).
  virtual size_t poll() = 0;

  // DEVICE_RESET, a client disconnecting, and the function-level reset.
  virtual void reset() = 0;

  // Migration: the server stops polling before save (STOP_COPY) and after load
  // (RESUMING), so a model serializes a quiet device. Loading checks what it reads and
  // refuses a bad stream with a clear Status, leaving the device as it was.
  virtual void save_state(std::vector<uint8_t>& out) const = 0;
  virtual Status load_state(std::span<const uint8_t> in) = 0;
};

}  // namespace uvio::emu
