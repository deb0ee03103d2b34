#include "iommu/dma_space.h"

#include <uvio/log.h>

#include <sys/resource.h>

#include <algorithm>

namespace uvio::iommu {
namespace {

constexpr const char* kLog = "dma";

std::string mib(uint64_t bytes) { return fmt::format("{} MiB", (bytes + (1u << 20) - 1) >> 20); }

// A piece of memory contiguous in VA and IOVA, with the fd behind it.
struct Piece {
  uint64_t iova;
  std::byte* va;
  uint64_t len;
  int fd;
  uint64_t fd_offset;
  uint32_t area_id;
};

// In IOVA-as-PA mode an area is contiguous only page by page: cut it where the physical
// addresses jump.
void area_pieces(const MemArea& a, std::vector<Piece>* out) {
  if (a.page_iova.empty()) {
    out->push_back({a.iova, a.va, a.len, a.fd, a.fd_offset, a.id});
    return;
  }
  for (size_t i = 0; i < a.page_iova.size(); ++i) {
    uint64_t off = i * a.page_size;
    Piece p{a.page_iova[i], a.va + off, a.page_size, a.fd, a.fd_offset + off, a.id};
    if (!out->empty()) {
      Piece& last = out->back();
      if (last.area_id == a.id && last.iova + last.len == p.iova && last.va + last.len == p.va) {
        last.len += p.len;
        continue;
      }
    }
    out->push_back(p);
  }
}

// Where the domain maps by address, pieces contiguous in both VA and IOVA become one
// map call: the IOMMU needs one entry per range, not per area.
std::vector<Piece> coalesce(std::vector<Piece> pieces, bool by_address) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.iova < b.iova; });
  if (!by_address) return pieces;
  std::vector<Piece> out;
  for (const Piece& p : pieces) {
    if (!out.empty() && out.back().iova + out.back().len == p.iova && out.back().va + out.back().len == p.va) {
      Piece& last = out.back();
      if (last.fd != p.fd || last.fd_offset + last.len != p.fd_offset) last.fd = -1;
      last.len += p.len;
    } else {
      out.push_back(p);
    }
  }
  return out;
}

bool inside_ranges(const std::vector<IovaRange>& ranges, uint64_t iova, uint64_t len) {
  if (ranges.empty()) return true;  // the domain reports no limits
  if (len == 0 || iova + len - 1 < iova) return false;
  uint64_t last = iova + len - 1;
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const IovaRange& r) { return iova >= r.start && last <= r.last; });
}

std::string describe_ranges(const std::vector<IovaRange>& ranges) {
  std::string s;
  for (const IovaRange& r : ranges) s += fmt::format("{}[{:#x}, {:#x}]", s.empty() ? "" : " ", r.start, r.last);
  return s;
}

// ENOMEM from a map is almost always the locked-memory limit: the kernel pins every
// mapped page and charges it to RLIMIT_MEMLOCK.
Status map_failure(const Status& st, const DmaDomain& d, const Piece& p, uint64_t mapped_before) {
  if (st.code() != ENOMEM)
    return Status::error(st.code(), fmt::format("mapping {} at IOVA {:#x} into {} failed: {}", mib(p.len), p.iova,
                                                d.name(), st.message()));
  struct rlimit lim {};
  getrlimit(RLIMIT_MEMLOCK, &lim);
  uint64_t need = mapped_before + p.len;
  if (lim.rlim_cur == RLIM_INFINITY)
    return Status::error(ENOMEM, fmt::format("mapping {} into {} failed with ENOMEM although RLIMIT_MEMLOCK is "
                                             "unlimited: the kernel is out of memory for page tables or pins",
                                             mib(p.len), d.name()));
  uint64_t have = lim.rlim_cur;
  uint64_t more = need > have ? need - have : p.len;
  return Status::error(ENOMEM, fmt::format("mapping {} into {} failed with ENOMEM: the locked-memory limit "
                                           "(RLIMIT_MEMLOCK) is {}, the runtime needs at least {} pinned; raise "
                                           "it by {} or more (ulimit -l, LimitMEMLOCK= for a service, or run as root)",
                                           mib(p.len), d.name(), mib(have), mib(need), mib(more)));
}

}  // namespace

struct DmaSpace::Impl {
  struct Attached {
    std::shared_ptr<DmaDomain> domain;
    std::vector<Mapping> mappings;  // IOVA order
  };
  mutable std::mutex mu;
  std::vector<Attached> domains;
  std::map<std::string, std::shared_ptr<DmaDomain>> shared;
  int listener = -1;
  bool anything_mapped = false;

  Attached* find(const DmaDomain* d) {
    for (Attached& a : domains)
      if (a.domain.get() == d) return &a;
    return nullptr;
  }

  Status map_pieces(Attached& at, const std::vector<Piece>& pieces);
  Status unmap_all(Attached& at);
  Status place_areas(Memory& memory, const DmaDomain& d, const std::vector<IovaRange>& ranges);
  void on_new_area(const MemArea& area);
};

Status DmaSpace::Impl::map_pieces(Attached& at, const std::vector<Piece>& pieces) {
  DmaDomain& d = *at.domain;
  uint64_t mapped_bytes = 0;
  for (const Mapping& m : at.mappings) mapped_bytes += m.len;
  uint32_t limit = d.max_mappings();
  if (limit != 0 && at.mappings.size() + pieces.size() > limit)
    return Status::error(ENOSPC, fmt::format(
        "{} accepts at most {} DMA mappings and the runtime needs {}: use larger memory areas "
        "(fewer, bigger hugepage areas) or raise vfio_iommu_type1's dma_entry_limit module parameter",
        d.name(), limit, at.mappings.size() + pieces.size()));
  auto ranges = d.iova_ranges();
  for (const Piece& p : pieces) {
    if (!inside_ranges(ranges, p.iova, p.len))
      return Status::error(ERANGE, fmt::format("memory at IOVA [{:#x}, {:#x}] lies outside the IOVA ranges of {} ({})",
                                               p.iova, p.iova + p.len - 1, d.name(), describe_ranges(ranges)));
  }
  std::vector<Mapping> done;
  for (const Piece& p : pieces) {
    Status st = d.map(p.iova, p.va, p.len, p.fd, p.fd_offset);
    if (!st) {
      Status err = map_failure(st, d, p, mapped_bytes);
      // Leave nothing of this batch behind.
      for (auto it = done.rbegin(); it != done.rend(); ++it) (void)d.unmap(it->iova, it->len);
      return err;
    }
    mapped_bytes += p.len;
    done.push_back({p.iova, p.va, p.len});
  }
  at.mappings.insert(at.mappings.end(), done.begin(), done.end());
  std::sort(at.mappings.begin(), at.mappings.end(), [](const Mapping& a, const Mapping& b) { return a.iova < b.iova; });
  if (!done.empty()) anything_mapped = true;
  return Status::ok();
}

Status DmaSpace::Impl::unmap_all(Attached& at) {
  Status first = Status::ok();
  // One call per mapping made, never per page: type1 refuses to split a mapping anyway.
  for (auto it = at.mappings.rbegin(); it != at.mappings.rend(); ++it) {
    Status st = at.domain->unmap(it->iova, it->len);
    if (!st && first) first = st;
  }
  at.mappings.clear();
  return first;
}

// IOVA = VA does not fit this IOMMU (a 39-bit VT-d under a 47-bit address space, or a
// reserved window): give every area an IOVA inside the ranges, keeping areas that are
// adjacent in VA adjacent in IOVA so they still map with one call.
Status DmaSpace::Impl::place_areas(Memory& memory, const DmaDomain& d, const std::vector<IovaRange>& ranges) {
  auto areas = memory.areas();
  std::sort(areas.begin(), areas.end(), [](const MemArea* a, const MemArea* b) { return a->va < b->va; });
  size_t r = 0;
  uint64_t cursor = 0;
  std::vector<std::pair<uint32_t, uint64_t>> plan;
  for (const MemArea* a : areas) {
    if (!a->page_iova.empty())
      return Status::error(EINVAL, fmt::format("area {} uses IOVA-as-PA and lies outside the IOVA ranges of {}",
                                               a->id, d.name()));
    uint64_t align = std::max<uint64_t>(a->page_size ? a->page_size : 4096, 4096);
    bool placed = false;
    for (; r < ranges.size(); ++r) {
      // IOVA 0 looks like a null pointer to too many devices: start one alignment up.
      uint64_t start = std::max({cursor, ranges[r].start, align});
      start = (start + align - 1) / align * align;
      if (start >= ranges[r].start && start <= ranges[r].last && a->len - 1 <= ranges[r].last - start) {
        plan.emplace_back(a->id, start);
        cursor = start + a->len;
        placed = true;
        break;
      }
    }
    if (!placed)
      return Status::error(ERANGE, fmt::format("the runtime's memory ({} areas) does not fit the IOVA ranges of {} ({})",
                                               areas.size(), d.name(), describe_ranges(ranges)));
  }
  for (auto [id, iova] : plan) UVIO_TRY(memory.assign_iova(id, iova));
  UVIO_LOG(Info, kLog, "IOVA = VA lies outside the IOVA ranges of {}; memory moved to IOVA {:#x} and up",
           d.name(), plan.empty() ? 0 : plan.front().second);
  return Status::ok();
}

void DmaSpace::Impl::on_new_area(const MemArea& area) {
  std::lock_guard lock(mu);
  std::vector<Piece> pieces;
  area_pieces(area, &pieces);
  for (Attached& at : domains) {
    Status st = map_pieces(at, coalesce(pieces, at.domain->maps_by_address()));
    if (!st)
      UVIO_LOG(Err, kLog, "new memory area {} is not reachable by devices in {}: {}", area.id, at.domain->name(),
               st.describe());
  }
}

DmaSpace::DmaSpace(Memory& memory) : memory_(memory), impl_(std::make_unique<Impl>()) {
  Impl* impl = impl_.get();
  impl_->listener = memory_.add_listener([impl](const MemArea& a) { impl->on_new_area(a); }, false);
}

DmaSpace::~DmaSpace() {
  memory_.remove_listener(impl_->listener);
  std::lock_guard lock(impl_->mu);
  for (auto& at : impl_->domains) {
    Status st = impl_->unmap_all(at);
    if (!st) UVIO_LOG(Warning, kLog, "unmapping memory from {} at exit: {}", at.domain->name(), st.describe());
  }
}

Status DmaSpace::attach(std::shared_ptr<DmaDomain> domain) {
  if (!domain) return Status::error(EINVAL, "DmaSpace::attach: no domain");
  std::lock_guard lock(impl_->mu);
  if (impl_->find(domain.get())) return Status::ok();  // already receives all memory
  auto ranges = domain->iova_ranges();
  auto areas = memory_.areas();
  bool fits = std::all_of(areas.begin(), areas.end(), [&](const MemArea* a) {
    std::vector<Piece> pieces;
    area_pieces(*a, &pieces);
    return std::all_of(pieces.begin(), pieces.end(),
                       [&](const Piece& p) { return inside_ranges(ranges, p.iova, p.len); });
  });
  if (!fits) {
    if (impl_->anything_mapped)
      return Status::error(ERANGE, fmt::format(
          "the runtime's memory is already mapped at IOVAs outside the ranges of {} ({}); it cannot move now. "
          "Open this device first, or use devices whose IOMMUs share an address width",
          domain->name(), describe_ranges(ranges)));
    UVIO_TRY(impl_->place_areas(memory_, *domain, ranges));
    areas = memory_.areas();
  }
  std::vector<Piece> pieces;
  for (const MemArea* a : areas) area_pieces(*a, &pieces);
  Impl::Attached at{domain, {}};
  UVIO_TRY(impl_->map_pieces(at, coalesce(std::move(pieces), domain->maps_by_address())));
  UVIO_LOG(Debug, kLog, "{}: {} mapping(s) for {} area(s)", domain->name(), at.mappings.size(), areas.size());
  impl_->domains.push_back(std::move(at));
  return Status::ok();
}

Status DmaSpace::detach(DmaDomain* domain) {
  std::lock_guard lock(impl_->mu);
  auto& v = impl_->domains;
  auto it = std::find_if(v.begin(), v.end(), [&](const Impl::Attached& a) { return a.domain.get() == domain; });
  if (it == v.end()) return Status::error(ENOENT, "DmaSpace::detach: domain is not attached");
  Status st = impl_->unmap_all(*it);
  v.erase(it);
  for (auto sit = impl_->shared.begin(); sit != impl_->shared.end();) {
    if (sit->second.get() == domain) sit = impl_->shared.erase(sit);
    else ++sit;
  }
  return st;
}

std::shared_ptr<DmaDomain> DmaSpace::shared_domain(const std::string& key) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->shared.find(key);
  return it == impl_->shared.end() ? nullptr : it->second;
}

void DmaSpace::set_shared_domain(const std::string& key, std::shared_ptr<DmaDomain> domain) {
  std::lock_guard lock(impl_->mu);
  impl_->shared[key] = std::move(domain);
}

std::vector<DmaSpace::Mapping> DmaSpace::mappings(const DmaDomain* domain) const {
  std::lock_guard lock(impl_->mu);
  for (const auto& at : impl_->domains)
    if (at.domain.get() == domain) return at.mappings;
  return {};
}

}  // namespace uvio::iommu
