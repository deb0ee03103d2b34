// A tiny device model for the framework tests: a few registers in BAR0, one shared
// doorbell page, 2 MSI-X vectors, and a DMA copy engine.
#pragma once

#include "emu/device_model.h"

#include <atomic>
#include <cstring>

namespace uvio::emu::testing {

class TestDevice : public DeviceModel {
 public:
  // BAR0 layout.
  static constexpr uint64_t kBarSize = 0x4000;
  static constexpr uint64_t kRegId = 0x00;       // RO: kIdValue
  static constexpr uint64_t kRegScratch = 0x08;  // RW
  static constexpr uint64_t kRegDmaSrc = 0x10;
  static constexpr uint64_t kRegDmaDst = 0x18;
  static constexpr uint64_t kRegDmaLen = 0x20;
  static constexpr uint64_t kRegDmaGo = 0x28;    // write: copy, then STATUS and vector 0
  static constexpr uint64_t kRegStatus = 0x30;   // 1: last copy done, 2: it failed
  static constexpr uint64_t kRegIrq = 0x38;      // write v: trigger vector v
  static constexpr uint64_t kRegDoorbellSeen = 0x40;
  static constexpr uint64_t kDoorbellPage = 0x1000;  // shared: poll() watches its first u32
  static constexpr uint64_t kMsixTable = 0x2000;
  static constexpr uint64_t kMsixPba = 0x3000;
  static constexpr uint64_t kIdValue = 0x7465737464657631ull;

  explicit TestDevice(std::string type = "test-dev", uint32_t version = 1)
      : type_(std::move(type)), version_(version) {}

  std::string_view type_name() const override { return type_; }
  uint32_t state_version() const override { return version_; }
  PciIdentity identity() const override { return {0x1b36, 0x00ff, 0x1b36, 0x0001, 2, 0xff0000}; }
  std::vector<BarLayout> bars() const override {
    return {BarLayout{0, kBarSize, {{kDoorbellPage, 0x1000}}}};
  }
  MsixLayout msix() const override { return {2, 0, kMsixTable, kMsixPba}; }
  std::vector<PciCapability> capabilities() const override {
    return {PciCapability{0x09, {4, 0xaa, 0xbb}}};  // vendor-specific, 5 bytes
  }

  void attach(DmaAccess& dma, IrqSink& irq, std::span<std::byte* const> shared) override {
    dma_ = &dma;
    irq_ = &irq;
    bar0_ = shared[0];
  }

  uint64_t bar_read(uint32_t, uint64_t offset, unsigned) override {
    switch (offset) {
      case kRegId: return kIdValue;
      case kRegScratch: return scratch_;
      case kRegDmaSrc: return src_;
      case kRegDmaDst: return dst_;
      case kRegDmaLen: return len_;
      case kRegStatus: return status_;
      case kRegDoorbellSeen: return doorbell_seen_;
      default: return 0;
    }
  }

  void bar_write(uint32_t, uint64_t offset, uint64_t value, unsigned) override {
    switch (offset) {
      case kRegScratch: scratch_ = value; break;
      case kRegDmaSrc: src_ = value; break;
      case kRegDmaDst: dst_ = value; break;
      case kRegDmaLen: len_ = value; break;
      case kRegDmaGo: {
        std::vector<uint8_t> buf(len_ <= (1u << 20) ? len_ : 0);
        bool ok = len_ <= (1u << 20) && dma_->read(src_, buf.data(), buf.size()) &&
                  dma_->write(dst_, buf.data(), buf.size());
        status_ = ok ? 1 : 2;
        irq_->trigger(0);
        break;
      }
      case kRegIrq: irq_->trigger(static_cast<uint32_t>(value)); break;
      default: break;
    }
  }

  size_t poll() override {
    polls.fetch_add(1, std::memory_order_relaxed);
    uint32_t v;
    std::memcpy(&v, bar0_ + kDoorbellPage, sizeof(v));
    if (v == last_doorbell_) return 0;
    last_doorbell_ = v;
    doorbell_seen_ = v;
    irq_->trigger(1);
    return 1;
  }

  void reset() override {
    scratch_ = src_ = dst_ = len_ = status_ = doorbell_seen_ = 0;
    last_doorbell_ = 0;
    std::memset(bar0_ + kDoorbellPage, 0, 0x1000);
    resets.fetch_add(1);
  }

  void save_state(std::vector<uint8_t>& out) const override {
    uint64_t v[3] = {scratch_, doorbell_seen_, status_};
    out.resize(sizeof(v));
    std::memcpy(out.data(), v, sizeof(v));
  }
  Status load_state(std::span<const uint8_t> in) override {
    if (in.size() != 3 * sizeof(uint64_t)) return Status::error(EINVAL, "test-dev: bad state size");
    uint64_t v[3];
    std::memcpy(v, in.data(), sizeof(v));
    scratch_ = v[0];
    doorbell_seen_ = v[1];
    status_ = v[2];
    return Status::ok();
  }

  std::atomic<uint64_t> polls{0};
  std::atomic<uint64_t> resets{0};

 private:
  std::string type_;
  uint32_t version_;
  DmaAccess* dma_ = nullptr;
  IrqSink* irq_ = nullptr;
  std::byte* bar0_ = nullptr;
  uint64_t scratch_ = 0, src_ = 0, dst_ = 0, len_ = 0, status_ = 0, doorbell_seen_ = 0;
  uint32_t last_doorbell_ = 0;
};

}  // namespace uvio::emu::testing
