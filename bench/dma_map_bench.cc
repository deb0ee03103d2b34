// uvio-dma-map-bench: what batching DMA maps buys. Maps N GiB of runtime memory into a
// device's IOMMU domain (type1 container or iommufd IOAS) the DmaSpace way — one call per
// contiguous run, or per area for fd-backed maps — and then one call per 2 MiB page, and
// prints map/unmap calls and times for both and their ratio. A plain program (no Google
// Benchmark) so it runs in the QEMU test guest; numbers under TCG are not performance
// figures, only the call counts and the ratio mean something there.
//
// usage: uvio-dma-map-bench <PCI address> [--gib=N] [--vfio-mode=group|iommufd|auto]
//                           [--area-mib=M] [--no-huge] [--rounds=N]
#include <uvio/log.h>
#include <uvio/mem.h>

#include "iommu/dma_space.h"
#include "iommu/kernel_backends.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace uvio;
using namespace uvio::iommu;
using Clock = std::chrono::steady_clock;

constexpr size_t kPage = 2u << 20;

struct Timing {
  uint64_t map_calls = 0, unmap_calls = 0;
  double map_s = 0, unmap_s = 0;
};

// Per field: the call counts do not vary, the times are noisy.
Timing median(std::vector<Timing> v) {
  auto mid = [&](auto field) {
    std::vector<double> x;
    for (const Timing& t : v) x.push_back(t.*field);
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  Timing m = v[0];
  m.map_s = mid(&Timing::map_s);
  m.unmap_s = mid(&Timing::unmap_s);
  return m;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int usage(const char* why) {
  std::fprintf(stderr, "uvio-dma-map-bench: %s\nusage: uvio-dma-map-bench <PCI address> [--gib=N] "
                       "[--vfio-mode=group|iommufd|auto] [--area-mib=M] [--no-huge] [--rounds=N]\n", why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bdf;
  double gib = 1;
  size_t area_mib = 0;
  bool huge = true;
  int rounds = 3;
  OpenOptions opts;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.rfind("--gib=", 0) == 0) gib = std::atof(argv[i] + 6);
    else if (a.rfind("--area-mib=", 0) == 0) area_mib = std::strtoull(argv[i] + 11, nullptr, 10);
    else if (a == "--no-huge") huge = false;
    else if (a.rfind("--rounds=", 0) == 0) rounds = std::atoi(argv[i] + 9);
    else if (a == "--vfio-mode=group") opts.mode = VfioMode::Group;
    else if (a == "--vfio-mode=iommufd") opts.mode = VfioMode::Iommufd;
    else if (a == "--vfio-mode=auto") opts.mode = VfioMode::Auto;
    else if (a.rfind("-", 0) == 0) return usage("unknown option");
    else bdf = std::string(a);
  }
  if (bdf.empty()) return usage("no device given");
  if (gib <= 0) return usage("--gib must be positive");
  if (rounds < 1 || rounds > 100) return usage("--rounds must be 1 to 100");

  MemConfig cfg;
  cfg.total_bytes = static_cast<size_t>(gib * (1u << 30)) / kPage * kPage;
  cfg.hugepages = huge;
  cfg.area_bytes = area_mib << 20;
  cfg.file_prefix = "uvio-dma-map-bench";
  log::set_component_level("mem", log::Level::Err);
  auto mem = Memory::create(cfg);
  if (!mem) {
    std::fprintf(stderr, "uvio-dma-map-bench: %s\n", mem.status().describe().c_str());
    return 1;
  }
  DmaSpace dma(**mem);
  auto dev = open_pci_device(bdf, dma, opts);
  if (!dev) {
    std::fprintf(stderr, "uvio-dma-map-bench: %s: %s\n", bdf.c_str(), dev.status().describe().c_str());
    return 1;
  }
  DmaDomain& d = (*dev)->domain();
  auto domain = dma.shared_domain(std::string((*dev)->backend()));
  if (!domain) {
    std::fprintf(stderr, "uvio-dma-map-bench: backend %s keeps no shared domain\n", std::string((*dev)->backend()).c_str());
    return 1;
  }

  // Opening mapped everything already; start from an empty domain.
  Status st = dma.detach(&d);
  if (!st) {
    std::fprintf(stderr, "uvio-dma-map-bench: %s\n", st.describe().c_str());
    return 1;
  }

  // Both ways, alternating which goes first, so that neither always pays for first touch
  // or warms the caches for the other; medians over the rounds.
  auto batched = [&](Timing* t) -> Status {
    uint64_t c0 = d.map_calls(), u0 = d.unmap_calls();
    auto t0 = Clock::now();
    UVIO_TRY(dma.attach(domain));
    t->map_s = seconds_since(t0);
    t0 = Clock::now();
    UVIO_TRY(dma.detach(&d));
    t->unmap_s = seconds_since(t0);
    t->map_calls = d.map_calls() - c0;
    t->unmap_calls = d.unmap_calls() - u0;
    return Status::ok();
  };
  // The same memory, one map call per 2 MiB page, as a page-at-a-time mapper would.
  auto per_page = [&](Timing* t) -> Status {
    uint64_t c0 = d.map_calls(), u0 = d.unmap_calls();
    auto t0 = Clock::now();
    for (const MemArea* a : (*mem)->areas())
      for (size_t off = 0; off < a->len; off += kPage) UVIO_TRY(d.map(a->iova + off, a->va + off, kPage, a->fd, a->fd_offset + off));
    t->map_s = seconds_since(t0);
    t0 = Clock::now();
    for (const MemArea* a : (*mem)->areas())
      for (size_t off = 0; off < a->len; off += kPage) UVIO_TRY(d.unmap(a->iova + off, kPage));
    t->unmap_s = seconds_since(t0);
    t->map_calls = d.map_calls() - c0;
    t->unmap_calls = d.unmap_calls() - u0;
    return Status::ok();
  };
  std::vector<Timing> b(rounds), p(rounds);
  for (int r = 0; r < rounds; ++r) {
    Status first = (r % 2) ? batched(&b[r]) : per_page(&p[r]);
    Status second = first ? ((r % 2) ? per_page(&p[r]) : batched(&b[r])) : first;
    if (!second) {
      std::fprintf(stderr, "uvio-dma-map-bench: round %d: %s\n", r, second.describe().c_str());
      return 1;
    }
  }
  // Leave the domain as the DmaSpace expects it (mapped) until exit.
  (void)dma.attach(domain);
  Timing bm = median(b), pm = median(p);
  uint64_t batched_map_calls = bm.map_calls, batched_unmap_calls = bm.unmap_calls;
  uint64_t page_map_calls = pm.map_calls, page_unmap_calls = pm.unmap_calls;
  double batched_map = bm.map_s, batched_unmap = bm.unmap_s, page_map = pm.map_s, page_unmap = pm.unmap_s;

  std::printf("device %s, backend %s, %.2f GiB in %zu area(s), %s pages\n", bdf.c_str(),
              std::string((*dev)->backend()).c_str(), static_cast<double>(cfg.total_bytes) / (1u << 30),
              (*mem)->areas().size(), huge ? "2 MiB" : "4 KiB");
  std::printf("medians of %d rounds, alternating which way goes first\n", rounds);
  std::printf("%-10s %10s %12s %10s %12s\n", "", "map calls", "map s", "unmap calls", "unmap s");
  std::printf("%-10s %10llu %12.6f %10llu %12.6f\n", "batched", static_cast<unsigned long long>(batched_map_calls),
              batched_map, static_cast<unsigned long long>(batched_unmap_calls), batched_unmap);
  std::printf("%-10s %10llu %12.6f %10llu %12.6f\n", "per-2MiB", static_cast<unsigned long long>(page_map_calls),
              page_map, static_cast<unsigned long long>(page_unmap_calls), page_unmap);
  std::printf("ratio per-page/batched: map calls %.1fx, map time %.2fx, unmap time %.2fx\n",
              static_cast<double>(page_map_calls) / static_cast<double>(batched_map_calls ? batched_map_calls : 1),
              page_map / (batched_map > 0 ? batched_map : 1e-9), page_unmap / (batched_unmap > 0 ? batched_unmap : 1e-9));
  return 0;
}
