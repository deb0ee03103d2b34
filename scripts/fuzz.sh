#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -Dfuzzing=true, ASan + UBSan) into build-fuzz and
# runs each for SECONDS (default 45) over a copy of its corpus in test/fuzz/corpus.
# Prints one table of executions per second and total executions per target. Exits
# non-zero when any target finds a crash, a leak, undefined behaviour or a hang; the
# input that found it is kept under build-fuzz/fuzz-findings/<target>/.
#
#   scripts/fuzz.sh [SECONDS]        NINJA_JOBS=N limits the build's parallelism.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
seconds=${1:-45}
targets=(eal_fuzz vfio_user_client_fuzz vfio_user_server_fuzz nvme_fuzz virtio_net_fuzz mig_stream_fuzz)

# clang-14 and its runtimes (libFuzzer, ASan, UBSan) from Debian's packages.
if ! command -v clang++-14 >/dev/null || ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
fi
[ -f build-fuzz/build.ninja ] || CXX=clang++-14 CC=clang-14 meson setup build-fuzz -Dfuzzing=true \
  -Db_sanitize=address,undefined -Db_lundef=false -Dtests=false \
  -Dbenchmarks=false -Ddpdk=disabled -Dvm_tests=disabled
ninja -C build-fuzz ${NINJA_JOBS:+-j "$NINJA_JOBS"} "${targets[@]/#/test/fuzz/}"

findings=build-fuzz/fuzz-findings
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1

failed=()
rows=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$findings/$t"
  cp test/fuzz/corpus/"$t"/* "$work/$t"/ 2>/dev/null || true
  log=$findings/$t/log.txt
  echo "== $t: ${seconds} s over $(ls "$work/$t" | wc -l) corpus inputs"
  status=0
  build-fuzz/test/fuzz/"$t" "$work/$t" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$findings/$t/" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  result=ok
  if [ "$status" -ne 0 ]; then
    result="FINDING (exit $status)"
    failed+=("$t")
    grep -E "^==[0-9]+==ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -8 || true
  fi
  rows+=("$(printf '%-24s %12s %14s  %s' "$t" "${rate:-?}" "${execs:-?}" "$result")")
done

echo
printf '%-24s %12s %14s  %s\n' target "execs/s" "executions" result
for r in "${rows[@]}"; do echo "$r"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}; inputs and logs are in $findings/"
  exit 1
fi
echo "fuzz: no findings"
