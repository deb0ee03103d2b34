#!/usr/bin/env bash
# Prepares a Debian 12 machine for uvio and builds it: packages (apt-get, as root),
# hugepages when the kernel gives them, then Meson + Ninja into ./build.
#   scripts/setup.sh [extra meson options...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

packages=(build-essential meson ninja-build pkg-config libhwloc-dev libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libfmt-dev liburing-dev dpdk dpdk-dev libdpdk-dev
          qemu-system-x86 busybox-static cpio clang iproute2 gdb)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2 MiB hugepages for the runtime and for DPDK in the side-by-side benchmarks. When the
# kernel cannot give them, everything still runs with --no-huge (4 KiB pages).
want=${UVIO_HUGEPAGES:-1024}
have=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
if [ "$have" -lt "$want" ]; then
  echo "$want" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
  have=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
fi
if [ "$have" -lt 64 ]; then
  echo "setup: no hugepages reserved (have $have); uvio will run with --no-huge"
else
  echo "setup: $have hugepages of 2 MiB reserved"
fi

cd "$top"
if [ ! -f build/build.ninja ]; then
  meson setup build "$@"
elif [ $# -gt 0 ]; then
  meson configure build "$@"
fi
ninja -C build
