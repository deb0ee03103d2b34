#!/usr/bin/env bash
# uvio-testpmd's virtio-user port against DPDK's vhost-user PMD (dpdk-testpmd, net_vhost)
# on one UNIX socket, one direction per run:
#   vhost_peer.sh UVIO_TESTPMD uvio-tx|dpdk-tx split|packed [SECONDS]
# uvio-tx: uvio generates (txonly), DPDK receives (rxonly); dpdk-tx: the reverse.
# The sender is stopped first and the receiver a moment later, so the receiver sees all
# that reached its ring. Checks: both exit cleanly, the ring layout asked for was
# negotiated, sent > 0, no RX/TX error on either side, received <= sent, and received >=
# sent - 256: only what was still posted in the 256-entry ring when the sender stopped
# may be lost (the vhost side stops a ring when its frontend goes away).
# Exit 77 (skipped) when dpdk-testpmd is not installed.
set -uo pipefail
uvio=$1 direction=$2 layout=$3 seconds=${4:-2}
ring=256

dpdk=$(command -v dpdk-testpmd || true)
if [ -z "$dpdk" ]; then
    echo "SKIP: dpdk-testpmd is not installed (Debian package 'dpdk')"
    exit 77
fi
case "$direction" in uvio-tx|dpdk-tx) ;; *) echo "bad direction $direction"; exit 2 ;; esac
case "$layout" in split) packed=0 ;; packed) packed=1 ;; *) echo "bad layout $layout"; exit 2 ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/uvio-interop.XXXXXX")
sock=$work/vhost.sock
prefix=uvio-interop-$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$work" "/var/run/dpdk/$prefix" "${XDG_RUNTIME_DIR:-/tmp}/dpdk/$prefix"
}
trap cleanup EXIT

if [ "$direction" = uvio-tx ]; then uvio_mode=txonly dpdk_mode=rxonly; else uvio_mode=rxonly dpdk_mode=txonly; fi

# DPDK: the vhost-user server (client=0), its forwarding lcore on CPU 0, the main lcore on
# CPU 1; 4 KiB pages (--no-huge) and a small mbuf pool, so CI needs no hugepages.
# --stats-period: without it testpmd waits for a key on stdin, and exits at its EOF.
timeout 60 "$dpdk" --lcores 0@1,1@0 --no-pci --no-huge -m 256 --file-prefix "$prefix" \
    --vdev "net_vhost0,iface=$sock,queues=1,client=0" -- \
    --forward-mode="$dpdk_mode" --nb-cores=1 --total-num-mbufs=8192 --txd=$ring --rxd=$ring --stats-period=1 \
    > "$work/dpdk.log" 2>&1 &
dpdk_pid=$!
pids+=("$dpdk_pid")
# The socket file exists from bind(); it accepts only once the port has started, and
# the first periodic statistics come after that.
for _ in $(seq 150); do grep -q "NIC statistics for port" "$work/dpdk.log" && break; sleep 0.1; done
if [ ! -S "$sock" ] || ! grep -q "NIC statistics for port" "$work/dpdk.log"; then
    echo "FAIL: dpdk-testpmd did not start its vhost-user port in 15 s"; cat "$work/dpdk.log"; exit 1
fi

# uvio: the virtio-user frontend, its forwarding lcore on CPU 1.
timeout 60 "$uvio" -l 0-1 --no-huge --in-memory -m 64M --log-level virtio-net:info \
    --vdev "virtio_user0,path=$sock,packed_vq=$packed" -- \
    --forward-mode="$uvio_mode" --rxd=$ring --txd=$ring > "$work/uvio.log" 2>&1 &
uvio_pid=$!
pids+=("$uvio_pid")

sleep "$seconds"
stop() {  # pid: SIGINT, then the exit status (a hang is ended by timeout's SIGTERM)
    kill -INT "$1" 2>/dev/null
    wait "$1"
}
if [ "$direction" = uvio-tx ]; then
    stop "$uvio_pid"; uvio_rc=$?
    sleep 0.5
    stop "$dpdk_pid"; dpdk_rc=$?
else
    stop "$dpdk_pid"; dpdk_rc=$?
    sleep 0.5
    stop "$uvio_pid"; uvio_rc=$?
fi
pids=()

echo "---- uvio-testpmd ($uvio_mode)"; cat "$work/uvio.log"
echo "---- dpdk-testpmd ($dpdk_mode)"; sed -n '/Accumulated forward statistics/,/^Done/p' "$work/dpdk.log"

failed=0
bad() { echo "FAIL: $*"; failed=1; }
[ "$uvio_rc" = 0 ] || bad "uvio-testpmd exited with status $uvio_rc"
[ "$dpdk_rc" = 0 ] || { bad "dpdk-testpmd exited with status $dpdk_rc"; tail -20 "$work/dpdk.log"; }

# uvio: the final "Forward statistics for port 0" block.
uvio_stat() { sed -n '/Forward statistics for port 0/,/TX-packets/p' "$work/uvio.log" |
              sed -n "s/.*$1: *\([0-9]*\).*/\1/p" | head -n 1; }
# DPDK: the "Accumulated forward statistics for all ports" block.
dpdk_stat() { sed -n '/Accumulated forward statistics/,/++++++++*$/p' "$work/dpdk.log" |
              sed -n "s/.*$1: *\([0-9]*\).*/\1/p" | head -n 1; }

features=$(sed -n 's/.*features \(0x[0-9a-f]*\) (offered.*/\1/p' "$work/uvio.log" | head -n 1)
if [ -z "$features" ]; then
    bad "uvio printed no negotiated features"
elif [ $(( (features >> 34) & 1 )) != "$packed" ]; then
    bad "VIRTIO_F_RING_PACKED (bit 34) is $(( (features >> 34) & 1 )), asked packed_vq=$packed: features $features"
fi

for e in RX-errors TX-errors; do
    v=$(uvio_stat "$e")
    [ "${v:-x}" = 0 ] || bad "uvio $e is ${v:-missing}"
done
grep -q "RX-error:\|TX-error:" "$work/dpdk.log" && bad "dpdk-testpmd reports errors: $(grep 'error:' "$work/dpdk.log" | head -n 2)"

if [ "$direction" = uvio-tx ]; then
    sent=$(uvio_stat TX-packets) received=$(dpdk_stat RX-packets) rx_dropped=$(dpdk_stat RX-dropped)
    [ "${rx_dropped:-x}" = 0 ] || bad "dpdk-testpmd RX-dropped is ${rx_dropped:-missing}"
else
    sent=$(dpdk_stat TX-packets) received=$(uvio_stat RX-packets)
fi
echo "sent $sent, received $received (${direction}, ${layout} rings)"
if [ -z "$sent" ] || [ -z "$received" ]; then
    bad "a final packet count is missing"
else
    [ "$sent" -gt 0 ] || bad "nothing was sent"
    [ "$received" -le "$sent" ] || bad "received $received, more than the $sent sent"
    [ "$received" -ge $(( sent - ring )) ] ||
        bad "received $received of $sent: $(( sent - received )) lost, more than one ring ($ring)"
fi
[ "$failed" = 0 ] && echo "PASS"
exit "$failed"
