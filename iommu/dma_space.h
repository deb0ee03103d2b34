// DmaSpace: registers all runtime memory with every IOMMU domain the runtime knows
// (an iommufd IOAS, a type1 container, each vfio-user connection) — one map call per
// contiguous area, never per page — and maps memory added later into each of them.
#pragma once

#include <uvio/mem.h>

#include "iommu/device.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace uvio::iommu {

class DmaSpace {
 public:
  explicit DmaSpace(Memory& memory);
  ~DmaSpace();
  DmaSpace(const DmaSpace&) = delete;
  DmaSpace& operator=(const DmaSpace&) = delete;

  Memory& memory() { return memory_; }

  // Maps every existing area into `domain` (coalescing areas that are contiguous in
  // both VA and IOVA into one call), then every area added later. On failure nothing
  // stays mapped in that domain.
  Status attach(std::shared_ptr<DmaDomain> domain);
  // Unmaps everything this space mapped into `domain` and forgets it.
  Status detach(DmaDomain* domain);

  // Kernel domains are shared by all devices of a runtime (one IOAS, one container):
  // backends look them up by key ("iommufd", "type1", "noiommu").
  std::shared_ptr<DmaDomain> shared_domain(const std::string& key) const;
  void set_shared_domain(const std::string& key, std::shared_ptr<DmaDomain> domain);

  struct Mapping {
    uint64_t iova;
    void* va;
    uint64_t len;
  };
  // What this space has mapped into `domain`, in IOVA order.
  std::vector<Mapping> mappings(const DmaDomain* domain) const;

 private:
  struct Impl;
  Memory& memory_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uvio::iommu
