#!/bin/sh
# PID 1 of the VFIO test guest (busybox sh). run_guest.py writes /etc/uvio-vm.conf and
# /etc/uvio-vm-tests (one "name|command" per line) beside it.
#
# Output contract with the host: one "UVIO-VM: PASS <name>" or "UVIO-VM: FAIL <name>"
# line per check, then "UVIO-VM-RESULT: PASS" or "UVIO-VM-RESULT: FAIL", then the
# result code on the isa-debug-exit port (0 = pass, QEMU exits with 1).

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# The console is a tty: keep GoogleTest's colour codes out of the serial log.
export GTEST_COLOR=no
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp
mount -t devpts devpts /dev/pts

. /etc/uvio-vm.conf

failures=0
checks=0

pass() { checks=$((checks + 1)); echo "UVIO-VM: PASS $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "UVIO-VM: FAIL $1: $2"; }

# isa-debug-exit at port 0xf4 (244): QEMU exits with (code << 1) | 1.
exit_guest() {
    # The console is interrupt driven: the result line may still sit in the serial
    # driver's buffer when echo returns, and the port write ends QEMU at once.
    sleep 0.5
    if [ "$1" = 0 ]; then
        dd if=/dev/zero of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    else
        printf '\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    fi
    # Only reached when the port write did not end QEMU (no /dev/port): a power-off
    # ends it with status 0, which the host counts as a failure.
    poweroff -f
}

echo "uvio-vm: kernel $(uname -r), flavour $KERNEL_FLAVOUR, iommu $IOMMU"

# --- modules (Debian's kernel has VFIO as modules; the test kernel has it built in)
modules_ok=1
for m in $MODULES; do
    if ! insmod "/lib/modules/uvio/$m.ko"; then
        modules_ok=0
        fail modules "insmod $m failed"
    fi
done
[ "$modules_ok" = 1 ] && [ -n "$MODULES" ] && pass modules

# --- bind every device to vfio-pci
bind_device() {  # name bdf vendor:device
    dir=/sys/bus/pci/devices/$2
    if [ ! -d "$dir" ]; then
        fail "bind/$1" "no PCI device at $2"
        return
    fi
    id="$(sed 's/^0x//' "$dir/vendor"):$(sed 's/^0x//' "$dir/device")"
    if [ "$id" != "$3" ]; then
        fail "bind/$1" "$2 is $id, expected $3"
        return
    fi
    if [ -e "$dir/driver" ]; then
        current=$(basename "$(readlink "$dir/driver")")
        [ "$current" != vfio-pci ] && echo "$2" > "$dir/driver/unbind"
    fi
    echo vfio-pci > "$dir/driver_override"
    echo "$2" > /sys/bus/pci/drivers_probe
    if [ "$(basename "$(readlink "$dir/driver")")" = vfio-pci ]; then
        pass "bind/$1"
    else
        fail "bind/$1" "$2 did not bind to vfio-pci"
    fi
}

for d in $DEVICES; do
    IFS=, read -r name bdf id <<EOF
$d
EOF
    bind_device "$name" "$bdf" "$id"
done

# --- report and check the VFIO device nodes this kernel should offer
echo "uvio-vm: /dev/vfio: $(ls /dev/vfio 2>/dev/null | tr '\n' ' ')"
echo "uvio-vm: /dev/vfio/devices: $(ls /dev/vfio/devices 2>/dev/null | tr '\n' ' ')"
echo "uvio-vm: /dev/iommu: $([ -c /dev/iommu ] && echo present || echo absent)"

check_nodes() {  # name bdf
    dir=/sys/bus/pci/devices/$2
    problems=""
    group=""
    [ -e "$dir/iommu_group" ] && group=$(basename "$(readlink "$dir/iommu_group")")
    cdev=$(ls "$dir/vfio-dev" 2>/dev/null | head -n 1)
    echo "uvio-vm: $1 $2 iommu_group=${group:-none} vfio-dev=${cdev:-none}"
    if [ "$IOMMU" = none ]; then
        [ -c "/dev/vfio/noiommu-$group" ] || problems="$problems no /dev/vfio/noiommu-$group;"
        [ -c "/dev/vfio/devices/noiommu-$cdev" ] || [ -c "/dev/vfio/devices/$cdev" ] ||
            problems="$problems no cdev for $cdev;"
    else
        [ -n "$group" ] || problems="$problems no IOMMU group;"
        [ -c "/dev/vfio/$group" ] || problems="$problems no /dev/vfio/$group;"
        case " $groups_seen " in
            *" $group "*) problems="$problems group $group shared with another device;" ;;
        esac
        groups_seen="$groups_seen $group"
    fi
    case "$KERNEL_FLAVOUR" in
        iommufd)
            [ -n "$cdev" ] && { [ -c "/dev/vfio/devices/$cdev" ] ||
                                [ -c "/dev/vfio/devices/noiommu-$cdev" ]; } ||
                problems="$problems no VFIO cdev under /dev/vfio/devices;" ;;
        debian)
            # 6.1 already has the vfio-dev sysfs class device, but no char device.
            [ ! -e /dev/vfio/devices ] || problems="$problems unexpected /dev/vfio/devices;" ;;
    esac
    if [ -z "$problems" ]; then pass "nodes/$1"; else fail "nodes/$1" "$problems"; fi
}

groups_seen=""
for d in $DEVICES; do
    IFS=, read -r name bdf id <<EOF
$d
EOF
    check_nodes "$name" "$bdf"
done

if [ -c /dev/vfio/vfio ]; then pass nodes/container; else fail nodes/container "no /dev/vfio/vfio"; fi
case "$KERNEL_FLAVOUR" in
    iommufd) if [ -c /dev/iommu ]; then pass nodes/iommufd; else fail nodes/iommufd "no /dev/iommu"; fi ;;
    debian) if [ -e /dev/iommu ]; then fail nodes/iommufd "unexpected /dev/iommu"; else pass nodes/iommufd; fi ;;
esac

# --- hugepages
echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages
mkdir -p /dev/hugepages
got=$(cat /proc/sys/vm/nr_hugepages)
if [ "$got" = "$HUGEPAGES" ] && mount -t hugetlbfs nodev /dev/hugepages; then
    pass hugepages
else
    fail hugepages "asked for $HUGEPAGES 2 MiB pages, got $got"
fi

if [ "$GUEST_SHELL" = 1 ]; then
    echo "uvio-vm: test programs are in /opt/uvio/bin; their command lines:"
    sed 's/^/uvio-vm:   /' /etc/uvio-vm-tests
    echo "uvio-vm: leave the shell to power off"
    setsid cttyhack sh
    poweroff -f
fi

# --- the test programs
while IFS='|' read -r name command; do
    [ -n "$name" ] || continue
    echo "uvio-vm: run $name: $command"
    sh -c "$command" < /dev/null 2>&1
    rc=$?
    if [ "$rc" = 0 ]; then pass "$name"; else fail "$name" "exit status $rc"; fi
done < /etc/uvio-vm-tests

if [ "$failures" = 0 ]; then
    echo "UVIO-VM-RESULT: PASS ($checks checks)"
    exit_guest 0
else
    echo "uvio-vm: kernel log follows"
    dmesg | tail -n 80
    echo "UVIO-VM-RESULT: FAIL ($failures of $checks checks failed)"
    exit_guest 1
fi
