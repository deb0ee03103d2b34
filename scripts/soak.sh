#!/usr/bin/env bash
# Sustained load: uvio-testpmd (txonly between two emulated virtio-net ports linked back
# to back) and uvio-nvme-perf (verified random read/write on an emulated NVMe
# controller with a 16 MiB namespace, touched whole in the first second), each for SECONDS, from the build directory BUILD (default build).
#
# What it checks, per app:
#   - the app exits 0 (nvme-perf: no verify error; with ASan/UBSan/LSan builds, any
#     report makes the exit status non-zero: leaks are checked at exit);
#   - the process's anonymous memory (RssAnon: the heap, not the runtime's memory,
#     which is preallocated shmem/hugetlb) does not grow after the first quarter of the
#     run by more than SOAK_RSS_SLACK_KIB (default 4096). Under ASan the allocator's
#     quarantine grows by design, so the RSS check is skipped there.
# Prints one line per app: seconds, samples, RssAnon at the quarter and at the end.
#
# usage: scripts/soak.sh [SECONDS] [BUILD]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
build=${2:-$top/build}
slack_kib=${SOAK_RSS_SLACK_KIB:-4096}
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 8 ]] || { echo "soak: SECONDS must be a number >= 8" >&2; exit 2; }
[ -x "$build/apps/testpmd/uvio-testpmd" ] || { echo "soak: no uvio-testpmd in $build (build it first)" >&2; exit 2; }

sanitized=0
grep -q 'b_sanitize.*address' "$build/meson-info/intro-buildoptions.json" 2>/dev/null &&
  python3 - "$build" <<'EOF' && sanitized=1 || true
import json, sys
opts = json.load(open(sys.argv[1] + "/meson-info/intro-buildoptions.json"))
san = next((o["value"] for o in opts if o["name"] == "b_sanitize"), "none")
sys.exit(0 if "address" in str(san) else 1)
EOF
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

eal=(--no-huge -m 256 -l 0-1 --control-socket=none)
failed=0

rss_anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# run NAME SECONDS_TO_SIGNAL CMD...: runs CMD, samples RssAnon each second, sends SIGINT
# after the time given (0: the app ends by itself), and checks exit status and growth.
run() {
  local name=$1 stop_after=$2; shift 2
  local log; log=$(mktemp)
  "$@" >"$log" 2>&1 & local pid=$!
  local t=0 quarter=0 last=0 samples=0 quarter_at=$(( seconds / 4 ))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1; t=$((t + 1))
    local r; r=$(rss_anon_kib "$pid"); [ -n "$r" ] && [ "$r" != 0 ] && { last=$r; samples=$((samples + 1)); }
    [ $t -eq "$quarter_at" ] && quarter=$last
    if [ "$stop_after" -gt 0 ] && [ $t -eq "$stop_after" ]; then kill -INT "$pid" 2>/dev/null || true; fi
    if [ $t -gt $(( seconds + 60 )) ]; then echo "soak: $name did not stop; killing it" >&2; kill -KILL "$pid"; fi
  done
  local status=0; wait "$pid" || status=$?
  local growth=$(( last - quarter ))
  printf 'soak: %-14s %4d s  %4d samples  RssAnon %6d KiB at 1/4, %6d KiB at the end (%+d KiB)  exit %d\n' \
    "$name" "$t" "$samples" "$quarter" "$last" "$growth" "$status"
  if [ "$status" -ne 0 ]; then
    echo "soak: $name exited $status; its last output:" >&2; tail -n 30 "$log" >&2; failed=1
  elif [ "$sanitized" = 0 ] && [ "$growth" -gt "$slack_kib" ]; then
    echo "soak: $name's heap grew by $growth KiB after warm-up (allowed $slack_kib)" >&2; failed=1
  fi
  tail -n 12 "$log"
  rm -f "$log"
}

run testpmd "$seconds" "$build/apps/testpmd/uvio-testpmd" "${eal[@]}" --file-prefix soak-testpmd -- \
  --forward-mode=txonly
run nvme-perf 0 "$build/apps/nvme-perf/uvio-nvme-perf" "${eal[@]}" --file-prefix soak-nvme \
  --vdev emu_nvme0,size=16M -- \
  -q 32 -o 4096 -w rw -M 50 -t "$seconds" --verify
exit $failed
