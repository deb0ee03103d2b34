#!/bin/sh
# Runs uvio-nvme-perf on QEMU's NVMe through the kernel's VFIO and checks what it printed:
#   nvme_perf.sh BIN BDF MODE
# 1. a mixed write/read run with --verify over a 1 MiB span (so reads soon find blocks
#    written in the same run): the model is QEMU's, completions > 0, no I/O error, verified
#    reads > 0 and no mismatch;
# 2. a read run in interrupt mode (MSI-X through VFIO_DEVICE_SET_IRQS to an eventfd):
#    completions > 0, no I/O error, the eventfd woke the queue at least once.
# Short runs: under TCG a second of I/O is thousands of commands.
bin=$1 bdf=$2 mode=$3
eal="-a $bdf --vfio-mode=$mode -m 32M"
# noiommu: no IOMMU translates, the device needs physical addresses.
[ "$mode" = noiommu ] && eal="$eal --iova-mode=pa"
model="QEMU NVMe Ctrl"
failed=0

bad() { echo "nvme_perf.sh: FAIL $1"; failed=1; }

# field NAME LINE: the number after NAME in the app's "completions ..." line.
field() { echo "$2" | sed -n "s|.*$1 \([0-9][0-9]*\).*|\1|p"; }

run() {  # label, app options...
    label=$1
    shift
    out=$("$bin" $eal -- "$@" 2>&1)
    rc=$?
    echo "$out" | sed "s/^/[$label] /"
    [ "$rc" = 0 ] || bad "$label: exit status $rc"
    echo "$out" | grep -q "^$bdf: $model," || bad "$label: the model is not '$model'"
    summary=$(echo "$out" | grep '^completions ')
    [ -n "$summary" ] || { bad "$label: no summary line"; return; }
    completions=$(field completions "$summary")
    errors=$(field "I/O errors" "$summary")
    [ "${completions:-0}" -gt 0 ] || bad "$label: no completions"
    [ "$errors" = 0 ] || bad "$label: $errors I/O errors"
}

run verify -q 4 -t 1 -w rw --verify -s 1048576
verified=$(field "verified reads" "$summary")
mismatches=$(field "verify mismatches" "$summary")
[ "${verified:-0}" -gt 0 ] || bad "verify: no read was checked against written data"
[ "$mismatches" = 0 ] || bad "verify: $mismatches mismatches"

run interrupt -q 4 -t 1 -w randread --interrupt -s 1048576
wakeups=$(field "interrupt wakeups" "$summary")
[ "${wakeups:-0}" -gt 0 ] || bad "interrupt: the queue's MSI-X eventfd never fired"

[ "$failed" = 0 ] && echo "nvme_perf.sh: PASS $bdf $mode"
exit "$failed"
