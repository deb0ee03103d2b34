#!/usr/bin/env bash
# Sets up, builds and runs every test suite: unit, concurrency, iommu, emu, the QEMU
# test guest (vm) and DPDK interop (skipped without dpdk-testpmd). Ends with "N passed, N failed".
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh"
cd "$top"
status=0
meson test -C build --print-errorlogs --num-processes 2 "$@" || status=$?
python3 - "$top/build/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["result"] in ("OK", "EXPECTEDFAIL"): passed += 1
    elif r["result"] == "SKIP": skipped += 1
    else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
