#!/usr/bin/env bash
# Sets up, builds and runs uvio's applications on the built-in software devices.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh"
cd "$top/build"
huge=()
[ "$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)" -ge 64 ] || huge=(--no-huge)
echo "== uvio-demo: memory, lcores, ring and mbuf pool"
./apps/demo/uvio-demo "${huge[@]}" -m 128 -- --packets 5000000
