#!/usr/bin/env bash
# Side by side: the same vhost-user backend (dpdk-testpmd, net_vhost, rxonly) driven by
# uvio-testpmd's virtio-user port and by dpdk-testpmd's net_virtio_user, on split and on
# packed rings, generating 64-byte frames (txonly). Each figure is the backend's receive
# rate; runs are interleaved (uvio, DPDK, uvio, ...) and the median of the runs is shown
# with the frontend's own cycles per packet (both testpmds count busy cycles only).
#
#   bench/virtio_user_vs_dpdk.sh [-t SECONDS] [-r RUNS] [-u UVIO_TESTPMD]
#
# Needs dpdk-testpmd (Debian's dpdk) and 2 CPUs: the backend forwards on CPU 0, each
# frontend on CPU 1. With at least 512 free 2 MiB hugepages both frontends use them,
# else both use 4 KiB pages (--no-huge); the line "memory:" says which. Run it on a
# quiet machine: the figures are only comparable within one run.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=10 runs=3 uvio=$top/build/apps/testpmd/uvio-testpmd
while getopts "t:r:u:h" opt; do
    case $opt in
        t) seconds=$OPTARG ;;
        r) runs=$OPTARG ;;
        u) uvio=$OPTARG ;;
        *) sed -n '2,15p' "$0"; exit 2 ;;
    esac
done
dpdk=$(command -v dpdk-testpmd) || { echo "dpdk-testpmd not found (apt-get install dpdk)" >&2; exit 1; }
[ -x "$uvio" ] || { echo "$uvio is not built (ninja -C build apps/testpmd/uvio-testpmd)" >&2; exit 1; }

free_huge=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [ "${free_huge:-0}" -ge 512 ]; then
    memory=hugepages
    dpdk_mem=(-m 512 --in-memory --single-file-segments)
    uvio_mem=(-m 256M --in-memory)
else
    memory="4 KiB pages (fewer than 512 free hugepages)"
    dpdk_mem=(-m 512 --no-huge --single-file-segments)
    uvio_mem=(-m 256M --no-huge --in-memory)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/uvio-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

# One run: prints "MPPS CYCLES_PER_PACKET". $1 = uvio|dpdk, $2 = 0 (split) | 1 (packed).
run_once() {
    local frontend=$1 packed=$2 tag=$1-$2-$RANDOM
    local sock=$work/$tag.sock back=$work/$tag.back.log front=$work/$tag.front.log
    timeout $((seconds + 60)) "$dpdk" --lcores 0@1,1@0 --no-pci --no-huge -m 256 --file-prefix "b$tag" \
        --vdev "net_vhost0,iface=$sock,queues=1" -- \
        --forward-mode=rxonly --nb-cores=1 --total-num-mbufs=8192 --stats-period=1 > "$back" 2>&1 &
    local back_pid=$!
    pids+=("$back_pid")
    for _ in $(seq 150); do grep -q "NIC statistics for port" "$back" && break; sleep 0.1; done
    if [ "$frontend" = uvio ]; then
        timeout $((seconds + 60)) "$uvio" --lcores 0@0,1@1 "${uvio_mem[@]}" \
            --vdev "virtio_user0,path=$sock,packed_vq=$packed" -- \
            --forward-mode=txonly --txpkts=64 > "$front" 2>&1 &
    else
        timeout $((seconds + 60)) "$dpdk" --lcores 0@0,1@1 --no-pci "${dpdk_mem[@]}" --file-prefix "f$tag" \
            --vdev "net_virtio_user0,path=$sock,queues=1,packed_vq=$packed" -- \
            --forward-mode=txonly --txpkts=64 --nb-cores=1 --total-num-mbufs=8192 \
            --record-core-cycles --stats-period=1 > "$front" 2>&1 &
    fi
    local front_pid=$!
    pids+=("$front_pid")
    sleep "$seconds"
    kill -INT "$front_pid"; wait "$front_pid"
    sleep 0.3
    kill -INT "$back_pid"; wait "$back_pid"
    pids=()
    # The backend's per-second Rx-pps, without the first sample (the frontend starting)
    # and the samples after it stopped (zero); the median of the rest.
    local pps
    pps=$(sed -n 's/.*Rx-pps: *\([0-9]*\).*/\1/p' "$back" | awk '$1 > 0' | tail -n +2 | sort -n |
          awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}')
    if [ -z "$pps" ]; then  # runs too short for two samples: the total over the run
        local total
        total=$(sed -n '/Accumulated forward statistics/,$p' "$back" | sed -n 's/.*RX-packets: *\([0-9]*\).*/\1/p' | head -n 1)
        pps=$(( ${total:-0} / seconds ))
    fi
    local cpp
    if [ "$frontend" = uvio ]; then
        cpp=$(sed -n 's/.*CPU cycles\/packet on the forwarding lcores: *\([0-9.]*\).*/\1/p' "$front" | tail -n 1)
    else
        cpp=$(sed -n 's/.*CPU cycles\/packet=\([0-9.]*\).*/\1/p' "$front" | tail -n 1)
    fi
    echo "$(awk -v p="$pps" 'BEGIN {printf "%.3f", p / 1e6}') ${cpp:-n/a}"
}

median() { sort -n | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "n/a"}'; }

echo "virtio-user TX -> DPDK vhost RX, 64-byte frames, $seconds s per run, median of $runs interleaved runs"
echo "memory: $memory; backend on CPU 0, frontend on CPU 1; load now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-7s %-12s %-12s %-8s %-14s %-14s\n" ring "uvio Mpps" "DPDK Mpps" "uvio/DPDK" "uvio cyc/pkt" "DPDK cyc/pkt"
for packed in 0 1; do
    : > "$work/uvio.mpps"; : > "$work/dpdk.mpps"; : > "$work/uvio.cpp"; : > "$work/dpdk.cpp"
    for _ in $(seq "$runs"); do
        for frontend in uvio dpdk; do
            read -r mpps cpp < <(run_once "$frontend" "$packed")
            echo "$mpps" >> "$work/$frontend.mpps"
            echo "$cpp" >> "$work/$frontend.cpp"
            echo "  run: $frontend $( [ $packed = 1 ] && echo packed || echo split ) $mpps Mpps, $cpp cycles/packet" >&2
        done
    done
    u=$(median < "$work/uvio.mpps") d=$(median < "$work/dpdk.mpps")
    ratio=$(awk -v u="$u" -v d="$d" 'BEGIN {if (d > 0) printf "%.2f", u / d; else print "n/a"}')
    printf "%-7s %-12s %-12s %-8s %-14s %-14s\n" "$( [ $packed = 1 ] && echo packed || echo split )" "$u" "$d" \
        "$ratio" "$(median < "$work/uvio.cpp")" "$(median < "$work/dpdk.cpp")"
done
