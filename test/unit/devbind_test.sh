#!/usr/bin/env bash
# uvio-devbind against a fake sysfs tree: --status lists it, --bind writes exactly the
# files the kernel reads (unbind, driver_override, drivers_probe), bad input exits 2.
set -euo pipefail
bin=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pci=$root/bus/pci
dev=$pci/devices/0000:00:03.0
mkdir -p "$dev" "$pci/drivers/virtio-pci" "$root/kernel/iommu_groups/7"
echo 0x1af4 > "$dev/vendor"; echo 0x1041 > "$dev/device"; echo 0x020000 > "$dev/class"
: > "$dev/driver_override"; : > "$pci/drivers_probe"; : > "$pci/drivers/virtio-pci/unbind"
ln -s ../../drivers/virtio-pci "$dev/driver"
ln -s ../../../kernel/iommu_groups/7 "$dev/iommu_group"
export UVIO_SYSFS_ROOT=$root

out=$("$bin" --status)
echo "$out" | grep -q "0000:00:03.0   1af4:1041  Ethernet     virtio-pci     7" || { echo "status: $out"; exit 1; }

"$bin" --bind=vfio-pci 00:03.0
[ "$(cat "$pci/drivers/virtio-pci/unbind")" = 0000:00:03.0 ] || { echo "unbind not written"; exit 1; }
[ "$(cat "$dev/driver_override")" = vfio-pci ] || { echo "driver_override not written"; exit 1; }
[ "$(cat "$pci/drivers_probe")" = 0000:00:03.0 ] || { echo "drivers_probe not written"; exit 1; }

set +e
"$bin" --bind=vfio-pci 0000:00:09.0 2>/dev/null; [ $? = 2 ] || { echo "missing device must exit 2"; exit 1; }
"$bin" --bind=vfio-pci zz 2>/dev/null; [ $? = 2 ] || { echo "bad address must exit 2"; exit 1; }
"$bin" --frob 2>/dev/null; [ $? = 2 ] || { echo "unknown option must exit 2"; exit 1; }
"$bin" --unbind 2>/dev/null; [ $? = 2 ] || { echo "--unbind without address must exit 2"; exit 1; }
echo "devbind: ok"
