#!/usr/bin/env bash
# Sets up, builds and runs uvio's applications on the built-in software devices:
# the runtime demo, uvio-testpmd on two emulated virtio-net ports back to back,
# uvio-nvme-perf with --verify on an emulated NVMe controller, and uvio-devinfo on a
# device served by uvio-emud in another process.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh"
cd "$top/build"
eal=(-m 256)
[ "$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)" -ge 128 ] || eal=(--no-huge -m 256)

echo; echo "== uvio-demo: memory, lcores, a ring and an mbuf pool"
./apps/demo/uvio-demo "${eal[@]}" --file-prefix demo -- --packets 5000000

echo; echo "== uvio-testpmd: txonly on two emulated virtio-net ports, 5 s (SIGINT prints the final statistics)"
timeout -s INT 5 ./apps/testpmd/uvio-testpmd "${eal[@]}" --file-prefix testpmd -- --forward-mode=txonly --stats-period=2 || \
  [ $? = 124 ]

echo; echo "== uvio-nvme-perf: 4 KiB random writes then reads, verified, on an emulated NVMe controller"
./apps/nvme-perf/uvio-nvme-perf "${eal[@]}" --file-prefix nvme-perf -- -q 32 -o 4096 -w randwrite -t 2 --verify
./apps/nvme-perf/uvio-nvme-perf "${eal[@]}" --file-prefix nvme-perf -- -q 32 -o 4096 -w rw -M 70 -t 3 --verify

echo; echo "== uvio-devinfo on an NVMe controller served by uvio-emud over a vfio-user socket"
sock=$(mktemp -u /tmp/uvio-emud-XXXXXX.sock)
./apps/emud/uvio-emud --nvme "$sock,size=16M" & emud=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
./apps/devinfo/uvio-devinfo "vfio-user:$sock" || status=$?
kill -INT $emud; wait $emud || true
rm -f "$sock"
exit ${status:-0}
