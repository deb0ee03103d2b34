// CPU and NUMA facts from hwloc, loaded once per process.
#pragma once

#include <cstdint>
#include <vector>

namespace uvio::topology {

// CPUs this process may run on (its affinity mask), ascending.
const std::vector<int>& usable_cpus();
bool cpu_usable(int cpu);
int numa_node_count();             // at least 1
int numa_node_of_cpu(int cpu);     // 0 when unknown
// Binds [addr, addr + len) to a NUMA node before it is touched; false if hwloc cannot.
bool bind_memory_to_node(void* addr, uint64_t len, int node);
// Pins the calling thread to one CPU.
bool pin_current_thread(int cpu);

}  // namespace uvio::topology
