#!/bin/sh
# uvio-testpmd owns QEMU's virtio-net-pci (modern only, iommu_platform=on) through VFIO
# and sends frames (txonly) for a few seconds; the e1000e NIC on the same QEMU hub,
# driven by the guest kernel's e1000e driver, must receive them:
#   testpmd_e1000e.sh BIN VIRTIO_BDF E1000E_BDF MODE
# Checks: the driver negotiated VIRTIO_F_ACCESS_PLATFORM (bit 33; without it the device
# bypasses the IOMMU), testpmd sent frames with no TX error, and the kernel's rx_packets
# of the e1000e interface rose by exactly what testpmd sent, less what the e1000e counted
# as dropped for lack of receive buffers (nothing else is on the hub that sends).
bin=$1 virtio=$2 e1000e=$3 mode=$4
seconds=${UVIO_TXONLY_SECONDS:-2}
# QEMU keeps a bounded queue of frames (10000) for a NIC that cannot take them yet and
# drops the rest silently, out of sight of the e1000e's counters. Under TCG the guest
# kernel receives far slower than testpmd sends (seen: 8000 of 8000 arrive, but only
# 70000 of 127000 in 2 s unbounded), so testpmd stops at a count below that queue.
count=${UVIO_TXONLY_COUNT:-8000}
dev=/sys/bus/pci/devices/$e1000e
failed=0

bad() { echo "testpmd_e1000e.sh: FAIL $1"; failed=1; }

# Hands a device to a driver: "vfio-pci", or "" for the kernel's own choice (e1000e).
rebind() {  # bdf driver
    d=/sys/bus/pci/devices/$1
    [ -e "$d/driver" ] && echo "$1" > "$d/driver/unbind"
    echo "$2" > "$d/driver_override"
    echo "$1" > /sys/bus/pci/drivers_probe
}

if [ ! -d /sys/bus/pci/drivers/e1000e ] && ! grep -q '^e1000e ' /proc/modules; then
    echo "testpmd_e1000e.sh: FAIL this guest kernel has no e1000e driver"
    exit 1
fi

# No IPv6 on the new interface: its router solicitations would draw router adverts from
# QEMU's user-mode sink port on the hub, frames the e1000e counts that testpmd never sent.
[ -w /proc/sys/net/ipv6/conf/default/disable_ipv6 ] && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
rebind "$e1000e" ""
iface=$(ls "$dev/net" 2>/dev/null | head -n 1)
if [ -z "$iface" ]; then
    echo "testpmd_e1000e.sh: FAIL $e1000e has no network interface after binding it to e1000e"
    rebind "$e1000e" vfio-pci
    exit 1
fi
# Promiscuous: testpmd's only port addresses its frames to its own MAC.
ip link set dev "$iface" promisc on up
n=0
while [ "$(cat "/sys/class/net/$iface/carrier" 2>/dev/null)" != 1 ] && [ $n -lt 100 ]; do
    sleep 0.1
    n=$((n + 1))
done
[ "$(cat "/sys/class/net/$iface/carrier" 2>/dev/null)" = 1 ] || bad "$iface: no carrier after 10 s"

stat() { cat "/sys/class/net/$iface/statistics/$1"; }
drops() { echo $(( $(stat rx_missed_errors) + $(stat rx_dropped) + $(stat rx_fifo_errors) + $(stat rx_over_errors) )); }
rx_before=$(stat rx_packets)
drops_before=$(drops)
errors_before=$(stat rx_errors)

out=/tmp/testpmd_e1000e.out
"$bin" -a "$virtio" --vfio-mode="$mode" -l 0-1 -m 64M --log-level virtio-net:info -- \
    --forward-mode=txonly --tx-count="$count" > "$out" 2>&1 &
pid=$!
sleep "$seconds"
kill -INT "$pid"
wait "$pid"
rc=$?
# Frames the device took before the stop may still be queued in QEMU on their way to
# the e1000e: wait until its count stops rising (10 s at most).
last=-1 n=0
while [ "$(stat rx_packets)" != "$last" ] && [ $n -lt 20 ]; do
    last=$(stat rx_packets)
    sleep 0.5
    n=$((n + 1))
done
rx=$(( $(stat rx_packets) - rx_before ))
dropped=$(( $(drops) - drops_before ))
rx_errors=$(( $(stat rx_errors) - errors_before ))
sed 's/^/[testpmd] /' "$out"
echo "testpmd_e1000e.sh: $iface rx_packets +$rx, dropped +$dropped, rx_errors +$rx_errors"

[ "$rc" = 0 ] || bad "uvio-testpmd exited with status $rc"
features=$(sed -n 's/.*features \(0x[0-9a-f]*\) (offered.*/\1/p' "$out" | head -n 1)
if [ -z "$features" ]; then
    bad "no negotiated feature line from the virtio-net driver"
elif [ $(( (features >> 33) & 1 )) != 1 ]; then
    bad "VIRTIO_F_ACCESS_PLATFORM (bit 33) not negotiated: features $features"
fi
port=$(sed -n '/Forward statistics for port 0/,/TX-packets/p' "$out" | grep 'TX-packets')
sent=$(echo "$port" | sed -n 's/.*TX-packets: *\([0-9]*\).*/\1/p')
tx_errors=$(echo "$port" | sed -n 's/.*TX-errors: *\([0-9]*\).*/\1/p')
if [ -z "$sent" ]; then
    bad "no final TX-packets figure for port 0"
else
    [ "$sent" -gt 0 ] || bad "testpmd sent nothing"
    [ "$sent" -le "$count" ] || bad "testpmd sent $sent frames, more than --tx-count=$count"
    [ "$tx_errors" = 0 ] || bad "testpmd counted $tx_errors TX errors"
    [ "$rx_errors" = 0 ] || bad "$iface counted $rx_errors receive errors"
    [ "$rx" -le "$sent" ] || bad "$iface received $rx frames, more than the $sent sent"
    [ $((rx + dropped)) -ge "$sent" ] ||
        bad "$iface received $rx and dropped $dropped of $sent sent: $((sent - rx - dropped)) unexplained"
fi

ip link set dev "$iface" down
rebind "$e1000e" vfio-pci
[ "$(basename "$(readlink "$dev/driver")")" = vfio-pci ] || bad "$e1000e did not return to vfio-pci"
[ "$failed" = 0 ] && echo "testpmd_e1000e.sh: PASS $sent sent, $rx received by $iface, $dropped dropped"
exit "$failed"
