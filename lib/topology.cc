#include <uvio/topology.h>

#include <hwloc.h>
#include <sched.h>

#include <mutex>

namespace uvio::topology {
namespace {

struct Topology {
  hwloc_topology_t topo = nullptr;
  std::vector<int> cpus;
  int numa_nodes = 1;

  Topology() {
    if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
      topo = nullptr;
    } else {
      int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
      numa_nodes = n > 0 ? n : 1;
    }
    // The affinity mask, not the machine: a CPU we may not run on does not exist for us.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
  }
  ~Topology() {
    if (topo) hwloc_topology_destroy(topo);
  }
};

Topology& get() {
  static Topology t;
  return t;
}

std::mutex& hwloc_mutex() {  // hwloc topology objects are not documented thread-safe for binding
  static std::mutex m;
  return m;
}

}  // namespace

const std::vector<int>& usable_cpus() { return get().cpus; }

bool cpu_usable(int cpu) {
  for (int c : get().cpus)
    if (c == cpu) return true;
  return false;
}

int numa_node_count() { return get().numa_nodes; }

int numa_node_of_cpu(int cpu) {
  Topology& t = get();
  if (!t.topo) return 0;
  hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(t.topo, static_cast<unsigned>(cpu));
  if (!pu || !pu->nodeset) return 0;
  int node = hwloc_bitmap_first(pu->nodeset);
  return node < 0 ? 0 : node;
}

bool bind_memory_to_node(void* addr, uint64_t len, int node) {
  Topology& t = get();
  if (!t.topo || node < 0) return false;
  std::lock_guard lock(hwloc_mutex());
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  hwloc_bitmap_only(set, static_cast<unsigned>(node));
  int rc = hwloc_set_area_membind(t.topo, addr, len, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
  hwloc_bitmap_free(set);
  return rc == 0;
}

bool pin_current_thread(int cpu) {
  Topology& t = get();
  if (!t.topo) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
  }
  std::lock_guard lock(hwloc_mutex());
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  hwloc_bitmap_only(set, static_cast<unsigned>(cpu));
  int rc = hwloc_set_cpubind(t.topo, set, HWLOC_CPUBIND_THREAD);
  hwloc_bitmap_free(set);
  return rc == 0;
}

}  // namespace uvio::topology
