#!/usr/bin/env python3
"""Boot a QEMU guest with real Linux VFIO and run test programs inside it.

The guest is q35 with an emulated Intel IOMMU (with interrupt remapping, which type1
needs), an NVMe controller, a virtio-net and an e1000e NIC on one QEMU hub. Its root
is a busybox initramfs whose /init (guest/init.sh) loads the VFIO modules when the
kernel has them as modules, binds every device to vfio-pci, checks that the VFIO
device nodes the kernel should offer are there, reserves hugepages and runs the test
programs given on the command line, once per device and VFIO mode that applies.

A run passes only when QEMU exits with the isa-debug-exit code for success (1) AND
the serial console carries the guest's "UVIO-VM-RESULT: PASS" line. The serial log
of every run is kept under <work-dir>/runs/.

Kernels:
  debian   Debian 12's own 6.1 kernel, fetched with apt-get download (not installed):
           VFIO group + type1 container, no iommufd.
  iommufd  the project's test kernel (../shared/test-kernel/bzImage beside the
           repository): iommufd + the VFIO cdev, the group/type1 path, noiommu.
"""

import argparse
import fcntl
import fnmatch
import gzip
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
GUEST_INIT = HERE / "guest" / "init.sh"
# Guest-side checkers (guest/*.sh but init.sh) go to this folder of every guest: a
# KNOWN_PROGRAMS template runs a program through one when its output needs checking.
GUEST_SCRIPTS = "/opt/uvio/guest"
DEFAULT_TEST_KERNEL = REPO.parent / "shared" / "test-kernel" / "bzImage"

RESULT_PASS = "UVIO-VM-RESULT: PASS"
# isa-debug-exit: the guest writes N to port 0xf4 and QEMU exits with (N << 1) | 1.
QEMU_EXIT_PASS = 1

# The VFIO modules of Debian's 6.1 kernel that a vfio-pci user needs. vfio_iommu_type1
# is not a symbol dependency of vfio-pci (vfio requests it by name when a container
# is set up), so it is named here; the load order comes from each module's .modinfo.
DEBIAN_VFIO_MODULES = ["vfio", "vfio_iommu_type1", "vfio_virqfd", "irqbypass",
                       "vfio-pci-core", "vfio-pci"]
# The e1000e NIC stays with the kernel's own driver when a test needs a kernel network
# interface (a test moves it there from vfio-pci); ptp and pps_core are its dependencies.
DEBIAN_NIC_MODULES = ["e1000e"]
DEBIAN_MODULE_DIRS = ("/kernel/drivers/vfio/", "/kernel/virt/lib/",
                      "/kernel/drivers/net/ethernet/intel/e1000e/", "/kernel/drivers/ptp/",
                      "/kernel/drivers/pps/")
DEBIAN_KERNEL_SERIES = "6.1.0"


@dataclass(frozen=True)
class GuestDevice:
    name: str      # used in test names and as a template field ({nvme}, {virtio_net}, ...)
    slot: int      # fixed PCI slot on pcie.0, so the BDF is known before boot
    vendor: str
    device: str
    qemu_args: tuple

    @property
    def bdf(self):
        return f"0000:00:{self.slot:02x}.0"


DEVICES = [
    GuestDevice("nvme", 4, "1b36", "0010",
                ("-drive", "file={disk},if=none,id=nvm0,format=raw",
                 "-device", "nvme,serial=uvio0001,drive=nvm0,addr=0x4")),
    # iommu_platform=on: without it QEMU's virtio-net ignores the IOMMU and DMAs to
    # guest-physical addresses (the driver must then negotiate VIRTIO_F_ACCESS_PLATFORM).
    GuestDevice("virtio_net", 5, "1af4", "1041",
                ("-netdev", "hubport,id=p0,hubid=0",
                 "-device", "virtio-net-pci,netdev=p0,disable-legacy=on,iommu_platform=on,"
                            "romfile=,addr=0x5")),
    GuestDevice("e1000e", 6, "8086", "10d3",
                ("-netdev", "hubport,id=p1,hubid=0",
                 "-device", "e1000e,netdev=p1,romfile=,addr=0x6")),
]
# A hub with no sink back-pressures: a transmit from one NIC never completes.
HUB_SINK_ARGS = ("-netdev", "user,id=u0,restrict=on",
                 "-netdev", "hubport,id=p2,hubid=0,netdev=u0")

# How each known program is run. Fields: {bin}, {mode}, {bdf}, {device}, and one per
# device name ({nvme}, {virtio_net}, {e1000e}) holding its BDF. A template with {mode}
# runs once per VFIO mode the guest offers, one with {bdf} once per device.
KNOWN_PROGRAMS = {
    "uvio-vm-vfio-probe": "{bin} --bdf {bdf} --mode {mode} --check-dma-fault",
    "uvio-devinfo": "{bin} {bdf} --vfio-mode={mode}",
    "uvio-iommu-guest-tests": "UVIO_TEST_BDF={nvme} UVIO_TEST_VFIO_MODE={mode} {bin}",
    "uvio-nvme-perf": f"sh {GUEST_SCRIPTS}/nvme_perf.sh {{bin}} {{nvme}} {{mode}}",
    "uvio-testpmd": f"sh {GUEST_SCRIPTS}/testpmd_e1000e.sh {{bin}} {{virtio_net}} {{e1000e}} {{mode}}",
}
# Known programs that need more than VFIO: the guest kernels and VFIO modes they run
# on, and why. Elsewhere they are left out of the plan with that reason.
PROGRAM_NEEDS = {
    "uvio-testpmd": ({"debian"}, {"group"},
                     "its frames are received by the guest kernel's e1000e driver, which only "
                     "Debian's kernel has; the IOMMU is what the run checks, so not noiommu"),
}


class HarnessError(Exception):
    """A problem on the host side: missing tool, failed download, bad argument."""


class DownloadUnavailable(HarnessError):
    """The Debian kernel cannot be fetched: the run is skipped, not failed."""


# Meson's exit status for a skipped test.
EXIT_SKIP = 77


def log(msg):
    print(f"run_guest: {msg}", flush=True)


# ---------------------------------------------------------------- host tools

def host_packages_missing():
    missing = []
    if not shutil.which("qemu-system-x86_64"):
        missing.append("qemu-system-x86")
    # busybox (dynamic) and busybox-static both install /bin/busybox; only the static
    # one runs in a guest that has no libc.
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "busybox-static"],
                            capture_output=True, text=True)
    if "install ok installed" not in status.stdout:
        missing.append("busybox-static")
    return missing


def ensure_host_tools():
    missing = host_packages_missing()
    if not missing:
        return
    if os.geteuid() != 0:
        raise HarnessError(f"missing packages {' '.join(missing)}: run "
                           f"'apt-get install {' '.join(missing)}' as root")
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    still = host_packages_missing()
    if still:
        raise HarnessError(f"apt-get install did not provide {' '.join(still)}")


def busybox_version():
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"],
                         capture_output=True, text=True, check=True).stdout
    return re.sub(r"[^A-Za-z0-9.+~-]", "_", out.strip())


class CacheLock:
    """Serialises cache preparation between runner instances started in parallel."""

    def __init__(self, cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / ".lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# ---------------------------------------------------------------- kernels

@dataclass
class Kernel:
    flavour: str          # "debian" or "iommufd"
    image: Path           # passed to -kernel
    release: str          # cache key
    modules: list         # (module name, Path) in load order; empty when built in


def newest_debian_kernel_package():
    pattern = rf"^linux-image-{re.escape(DEBIAN_KERNEL_SERIES)}-[0-9]+-amd64$"
    for attempt in range(2):
        out = subprocess.run(["apt-cache", "search", "--names-only", pattern],
                             capture_output=True, text=True).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        if names:
            return max(names, key=lambda n: int(n.split("-")[3]))
        if attempt == 0:
            if os.geteuid() != 0:
                break
            log("no 6.1 kernel package in the apt lists, running apt-get update")
            subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    raise HarnessError("apt-cache finds no linux-image-6.1.0-NN-amd64 package: this "
                       "needs Debian 12 (bookworm) apt sources and 'apt-get update'")


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """Debian's 6.1 bzImage carries the kernel as an xz stream after the setup code;
    booting the ELF inside through its PVH entry skips the BIOS and the decompressor."""
    magic = b"\xfd7zXZ\x00"
    start = vmlinuz.find(magic)
    while start >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
            if elf.startswith(b"\x7fELF"):
                return elf
        except lzma.LZMAError:
            pass
        start = vmlinuz.find(magic, start + 1)
    raise HarnessError("no xz-compressed ELF found in the Debian vmlinuz")


def modinfo(ko: bytes) -> dict:
    """The key=value strings of a module's .modinfo ELF section (name, depends, ...)."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2:
        raise HarnessError("a kernel module is not a 64-bit ELF file")
    shoff = int.from_bytes(ko[0x28:0x30], "little")
    shentsize = int.from_bytes(ko[0x3a:0x3c], "little")
    shnum = int.from_bytes(ko[0x3c:0x3e], "little")
    shstrndx = int.from_bytes(ko[0x3e:0x40], "little")

    def section(i):
        h = ko[shoff + i * shentsize: shoff + (i + 1) * shentsize]
        offset = int.from_bytes(h[0x18:0x20], "little")
        size = int.from_bytes(h[0x20:0x28], "little")
        return int.from_bytes(h[0:4], "little"), ko[offset:offset + size]

    names = section(shstrndx)[1]
    for i in range(shnum):
        name_off, data = section(i)
        if names[name_off:names.index(b"\0", name_off)] == b".modinfo":
            fields = {}
            for item in data.split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    fields.setdefault(key, value)
            return fields
    raise HarnessError("a kernel module has no .modinfo section")


def module_load_order(modules: dict, wanted):
    """Dependencies first, each module once. modules maps a module's name (with '_')
    to its .ko contents; the package carries no modules.dep (depmod writes it at
    install time), so the order comes from each module's own "depends=" list."""
    def norm(name):
        return name.replace("-", "_")

    order = []

    def visit(name, stack=()):
        if name in order:
            return
        if name not in modules:
            raise HarnessError(f"module {name} is not in the kernel package")
        if name in stack:
            raise HarnessError(f"module dependency cycle at {name}")
        for dep in filter(None, modinfo(modules[name]).get("depends", "").split(",")):
            visit(norm(dep), stack + (name,))
        order.append(name)

    for name in wanted:
        visit(norm(name))
    return order


def prepare_debian_kernel(cache_dir: Path) -> Kernel:
    package = newest_debian_kernel_package()
    release = package[len("linux-image-"):]
    # The module set is part of the cache key: a cache made for fewer modules is redone.
    wanted = DEBIAN_VFIO_MODULES + DEBIAN_NIC_MODULES
    modules_key = hashlib.sha256(" ".join(wanted).encode()).hexdigest()[:8]
    kdir = cache_dir / f"kernel-{release}-m{modules_key}"
    stamp = kdir / "complete"
    if not stamp.exists():
        shutil.rmtree(kdir, ignore_errors=True)
        download = cache_dir / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir(parents=True)
        log(f"downloading {package} (not installing it)")
        fetched = subprocess.run(["apt-get", "download", package], cwd=download,
                                 stdout=subprocess.DEVNULL)
        if fetched.returncode != 0:
            raise DownloadUnavailable(f"apt-get download {package} failed (no network or "
                                      "no Debian mirror?)")
        debs = list(download.glob("*.deb"))
        if len(debs) != 1:
            raise HarnessError(f"apt-get download {package} left {len(debs)} .deb files")
        (kdir / "modules").mkdir(parents=True)
        wanted_dirs = DEBIAN_MODULE_DIRS
        members = {}
        # Stream the package's data archive and keep only the kernel and the VFIO
        # modules: the unpacked package is several hundred MB.
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                              stdout=subprocess.PIPE) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    keep = (name.startswith("boot/vmlinuz-")
                            or (any(d in "/" + name for d in wanted_dirs)
                                and ".ko" in name))
                    if keep and member.isfile():
                        members[name] = tar.extractfile(member).read()
            if proc.wait() != 0:
                raise HarnessError(f"dpkg-deb could not read {debs[0].name}")
        vmlinuz = [v for k, v in members.items() if k.startswith("boot/vmlinuz-")]
        if len(vmlinuz) != 1:
            raise HarnessError(f"{package} has {len(vmlinuz)} vmlinuz files, expected one")
        (kdir / "vmlinux").write_bytes(extract_vmlinux(vmlinuz[0]))
        modules = {}
        for path, data in members.items():
            if path.endswith(".ko.xz"):
                data = lzma.decompress(data)
            elif not path.endswith(".ko"):
                continue
            modules[modinfo(data).get("name", "").replace("-", "_")] = data
        lines = module_load_order(modules, wanted)
        for name in lines:
            (kdir / "modules" / f"{name}.ko").write_bytes(modules[name])
        (kdir / "modules" / "order").write_text("\n".join(lines) + "\n")
        shutil.rmtree(download)
        stamp.write_text(package + "\n")
    names = (kdir / "modules" / "order").read_text().split()
    return Kernel("debian", kdir / "vmlinux", f"{release}-m{modules_key}",
                  [(n, kdir / "modules" / f"{n}.ko") for n in names])


def prepare_test_kernel(image: Path) -> Kernel:
    if not image.is_file():
        raise HarnessError(f"the iommufd test kernel {image} does not exist (see "
                           "shared/test-kernel/README.md beside the repository)")
    digest = hashlib.sha256(image.read_bytes()).hexdigest()[:16]
    return Kernel("iommufd", image, f"testkernel-{digest}", [])


def vfio_modes(args):
    """The VFIO modes the guest offers, which {mode} templates run in."""
    if args.noiommu:
        return ["noiommu"]
    return ["group", "iommufd"] if args.kernel == "iommufd" else ["group"]


# ---------------------------------------------------------------- initramfs

class Cpio:
    """A "newc" cpio archive, the format the kernel unpacks into its rootfs."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1000
        self.dirs = set()

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + name.encode() + b"\0")
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self):
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, path):
        path = path.strip("/")
        if not path or path in self.dirs:
            return
        parent = os.path.dirname(path)
        if parent:
            self.directory(parent)
        self.dirs.add(path)
        self._entry(path, 0o040755)

    def file(self, path, data, mode=0o755):
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        self._entry(path, 0o120777, target.encode())

    def char_device(self, path, major, minor):
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        self._entry(path, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        # Archives are concatenated: each must end on a 4-byte boundary or the kernel
        # loses the start of the next one.
        self.out.write(b"\0" * (-self.out.tell() % 4))
        return self.out.getvalue()


def gzip_padded(data: bytes, level: int) -> bytes:
    packed = gzip.compress(data, compresslevel=level, mtime=0)
    return packed + b"\0" * (-len(packed) % 4)


def base_initramfs(cache_dir: Path, kernel: Kernel) -> Path:
    path = cache_dir / f"initramfs-base-{kernel.release}-busybox-{busybox_version()}.cpio.gz"
    if path.exists():
        return path
    archive = Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc",
              "run", "mnt", "root", "lib/modules/uvio"):
        archive.directory(d)
    # The console exists before devtmpfs is mounted, so init's output is not lost.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", Path("/bin/busybox").read_bytes())
    applets = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True,
                             text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "bin/busybox":  # a link to itself makes exec fail with ELOOP
            archive.symlink(applet, "/bin/busybox")
    for name, ko in kernel.modules:
        archive.file(f"lib/modules/uvio/{name}.ko", ko.read_bytes(), 0o644)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip_padded(archive.finish(), level=9))  # built once, cached
    tmp.rename(path)
    return path


def shared_libraries(binary: Path):
    """The loader and libraries a dynamic binary needs, as ldd resolves them here."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return []
    libs = []
    for line in out.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
        elif "=>" in line and "not found" in line:
            raise HarnessError(f"{binary}: ldd cannot resolve {line.strip()}")
    return libs


# ---------------------------------------------------------------- test plan

@dataclass
class GuestTest:
    name: str
    command: str


def parse_program(spec):
    """PATH or PATH=TEMPLATE (a command line with the fields of KNOWN_PROGRAMS)."""
    path, sep, template = spec.partition("=")
    binary = Path(path)
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise HarnessError(f"{binary} is not an executable file")
    if not sep:
        template = KNOWN_PROGRAMS.get(binary.name, "{bin}")
    return binary, template


def plan_tests(programs, modes, flavour=None):
    fields = {d.name: d.bdf for d in DEVICES}
    tests = []
    for binary, template in programs:
        modes_here = modes if "{mode}" in template else [None]
        needs = PROGRAM_NEEDS.get(binary.name)
        if needs and flavour is not None:
            kernels, needed_modes, why = needs
            if flavour not in kernels:
                log(f"{binary.name}: not run on the {flavour} kernel: {why}")
                continue
            modes_here = [m for m in modes_here if m is None or m in needed_modes]
            if not modes_here:
                log(f"{binary.name}: not run in VFIO mode {' '.join(modes)}: {why}")
                continue
        devices_here = DEVICES if "{bdf}" in template else [None]
        for mode in modes_here:
            for dev in devices_here:
                values = dict(fields, bin=f"/opt/uvio/bin/{binary.name}", mode=mode or "",
                              bdf=dev.bdf if dev else "", device=dev.name if dev else "")
                parts = [binary.name] + [p for p in (dev and dev.name, mode) if p]
                tests.append(GuestTest("/".join(parts), template.format(**values)))
    return tests


def select_tests(tests, patterns):
    if not patterns:
        return tests
    chosen = [t for t in tests
              if any(fnmatch.fnmatch(t.name, p) or fnmatch.fnmatch(t.name.split("/")[0], p)
                     for p in patterns)]
    if not chosen:
        raise HarnessError(f"--tests {','.join(patterns)} matches none of: "
                           + ", ".join(t.name for t in tests))
    return chosen


def run_initramfs(kernel: Kernel, programs, tests, args) -> bytes:
    archive = Cpio()
    archive.file("init", GUEST_INIT.read_bytes())
    for script in sorted((HERE / "guest").glob("*.sh")):
        if script != GUEST_INIT:
            archive.file(f"{GUEST_SCRIPTS.lstrip('/')}/{script.name}", script.read_bytes())
    libraries = set()
    for binary, _ in programs:
        archive.file(f"opt/uvio/bin/{binary.name}", binary.read_bytes())
        libraries.update(shared_libraries(binary))
    for lib in sorted(libraries):
        # At the path ldd printed (the loader's path is baked into the binary); the
        # content is that of the final target of any symlink.
        archive.file(str(lib), lib.resolve().read_bytes())
    conf = {
        "KERNEL_FLAVOUR": kernel.flavour,
        "IOMMU": "none" if args.noiommu else "intel",
        "MODULES": " ".join(name for name, _ in kernel.modules),
        "DEVICES": " ".join(f"{d.name},{d.bdf},{d.vendor}:{d.device}" for d in DEVICES),
        "HUGEPAGES": str(args.hugepages),
        "GUEST_SHELL": "1" if args.shell else "0",
    }
    archive.file("etc/uvio-vm.conf",
                 "".join(f"{k}={shlex.quote(v)}\n" for k, v in conf.items()).encode(), 0o644)
    archive.file("etc/uvio-vm-tests",
                 "".join(f"{t.name}|{t.command}\n" for t in tests).encode(), 0o644)
    return gzip_padded(archive.finish(), level=1)  # built every run: fast over small


# ---------------------------------------------------------------- QEMU

def qemu_command(kernel: Kernel, initrd: Path, disk: Path, serial_args, args):
    # no_timer_check: the boot-time IO-APIC timer test counts on the guest getting CPU
    # time promptly; a TCG guest on a busy host fails it and panics ("timer doesn't
    # work through Interrupt-remapped IO-APIC").
    append = ["console=ttyS0", "rdinit=/init", "panic=-1", "loglevel=4", "no_timer_check"]
    cmd = ["qemu-system-x86_64",
           "-machine", "q35", "-cpu", "max", "-smp", "2", "-m", str(args.memory),
           # One host thread for both vCPUs: the build machines have few cores.
           "-accel", "tcg,thread=single",
           "-nographic", "-no-reboot", "-nodefaults", "-monitor", "none",
           *serial_args]
    if args.noiommu:
        append.append("vfio.enable_unsafe_noiommu_mode=1")
    else:
        # The IOMMU must come before the devices it translates for. intremap=on is
        # needed: type1 refuses a container without interrupt remapping (EPERM).
        cmd += ["-device", "intel-iommu,intremap=on"]
        append.append("intel_iommu=on")
    for dev in DEVICES:
        cmd += [a.format(disk=disk) for a in dev.qemu_args]
    cmd += HUB_SINK_ARGS
    cmd += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
            "-kernel", str(kernel.image), "-initrd", str(initrd),
            "-append", " ".join(append + args.append)]
    return cmd


def run_qemu(cmd, serial_log: Path, timeout, echo):
    """Runs QEMU with the serial console into serial_log; returns (exit code, timed out)."""
    with open(serial_log, "wb") as logf, subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT) as proc:
        def pump():
            for line in proc.stdout:
                logf.write(line)
                logf.flush()
                if echo:
                    sys.stdout.write(line.decode(errors="replace").replace("\r", ""))
                    sys.stdout.flush()
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            timed_out = True
        reader.join(timeout=10)
    return rc, timed_out


def judge(serial_log: Path, rc, timed_out, seconds, expected_tests):
    text = serial_log.read_text(errors="replace").replace("\r", "")
    lines = text.splitlines()
    results = [l for l in lines if l.startswith("UVIO-VM: ")]
    passed = any(l.startswith(RESULT_PASS) for l in lines)
    problems = []
    if timed_out:
        running = [l for l in lines if l.startswith("uvio-vm: run ")]
        where = f", last started: {running[-1][len('uvio-vm: run '):]}" if running else ""
        problems.append(f"the guest did not finish within {seconds:.0f} s{where}")
    elif rc != QEMU_EXIT_PASS:
        problems.append(f"QEMU exited with {rc}, not {QEMU_EXIT_PASS} (guest reported "
                        f"code {(rc - 1) // 2 if rc % 2 else 'none: no debug-exit write'})")
    if not passed:
        problems.append(f"no '{RESULT_PASS}' line on the serial console")
    panic = next((l for l in lines if "Kernel panic" in l), None)
    if panic:
        problems.append(f"the guest kernel panicked: {panic.strip()}")
    ran = {l.split()[2] for l in results if l.startswith("UVIO-VM: PASS ")}
    missing = [t.name for t in expected_tests if t.name not in ran]
    if passed and missing:
        problems.append(f"the guest passed without reporting {', '.join(missing)}")
    return results, problems


def prune_runs(runs_dir: Path, keep=40):
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="PROGRAM is PATH or PATH=TEMPLATE; known programs (" +
               ", ".join(KNOWN_PROGRAMS) + ") have built-in templates. Template fields: "
               "{bin} {mode} {bdf} {device} " + " ".join("{%s}" % d.name for d in DEVICES)
               + ". Example: run_guest.py --kernel iommufd "
                 "'./my-test=UVIO_TEST_BDF={nvme} {bin} --mode={mode}'")
    parser.add_argument("programs", nargs="*", metavar="PROGRAM",
                        help="test programs to copy into the guest and run")
    parser.add_argument("--kernel", choices=["debian", "iommufd"], default="debian",
                        help="guest kernel (default: %(default)s)")
    parser.add_argument("--kernel-image", type=Path, default=DEFAULT_TEST_KERNEL,
                        help="the iommufd test kernel (default: %(default)s)")
    parser.add_argument("--noiommu", action="store_true",
                        help="no vIOMMU; VFIO's unsafe noiommu mode (iommufd kernel only)")
    parser.add_argument("--work-dir", type=Path, default=Path.cwd() / "build-vm",
                        help="cache and serial logs (default: %(default)s)")
    parser.add_argument("--tests", default="",
                        help="comma-separated globs of test names (e.g. "
                             "'uvio-vm-vfio-probe/nvme/*') or program names to run")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds for one whole guest run (default: %(default)s)")
    parser.add_argument("--shell", action="store_true",
                        help="set the guest up as for a test run, then give an interactive "
                             "shell on this terminal instead of running the tests")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's initramfs and NVMe disk beside the serial log")
    parser.add_argument("--memory", type=int, default=512,
                        help="guest MiB (default: %(default)s)")
    parser.add_argument("--hugepages", type=int, default=64,
                        help="2 MiB pages to reserve (default: %(default)s)")
    parser.add_argument("--append", action="append", default=[],
                        help="extra kernel command line argument")
    parser.add_argument("--quiet", action="store_true",
                        help="do not echo the serial console")
    parser.add_argument("--list", action="store_true",
                        help="print the test names and exit")
    args = parser.parse_args(argv)
    if args.noiommu and args.kernel != "iommufd":
        parser.error("--noiommu needs --kernel iommufd (Debian's 6.1 lacks noiommu)")

    try:
        programs = [parse_program(p) for p in args.programs]
        modes = vfio_modes(args)
        tests = select_tests(plan_tests(programs, modes, args.kernel), [p for p in args.tests.split(",") if p])
        if args.list:
            for t in tests:
                print(f"{t.name}: {t.command}")
            return 0
        ensure_host_tools()
        work = args.work_dir.resolve()
        cache = work / "cache"
        prep_start = time.monotonic()
        with CacheLock(cache):
            kernel = (prepare_debian_kernel(cache) if args.kernel == "debian"
                      else prepare_test_kernel(args.kernel_image.resolve()))
            base = base_initramfs(cache, kernel)
        run_dir = work / "runs" / (time.strftime("%Y%m%d-%H%M%S-")
                                   + f"{kernel.flavour}{'-noiommu' if args.noiommu else ''}"
                                   + f"-{os.getpid()}")
        run_dir.mkdir(parents=True)
        prune_runs(work / "runs")
        initrd = run_dir / "initramfs.cpio.gz"
        with open(initrd, "wb") as f:
            f.write(base.read_bytes())
            f.write(run_initramfs(kernel, programs, tests, args))
        disk = run_dir / "nvme.img"
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
        serial_log = run_dir / "serial.log"
        log(f"kernel {kernel.release}, modes {' '.join(modes)}, {len(tests)} tests, "
            f"prepared in {time.monotonic() - prep_start:.1f} s")

        if args.shell:
            # The terminal is the console; QEMU copies it to the log. signal=off lets
            # Ctrl-C reach the guest's shell instead of ending QEMU.
            cmd = qemu_command(kernel, initrd, disk,
                               ["-chardev", f"stdio,id=con,logfile={serial_log},signal=off",
                                "-serial", "chardev:con"], args)
            (run_dir / "qemu-command").write_text(shlex.join(cmd) + "\n")
            log(f"interactive guest: leave the shell to power off; serial log {serial_log}")
            rc = subprocess.run(cmd).returncode
            if not args.keep:
                initrd.unlink()
                disk.unlink()
            return rc

        cmd = qemu_command(kernel, initrd, disk, ["-serial", "stdio"], args)
        (run_dir / "qemu-command").write_text(shlex.join(cmd) + "\n")

        start = time.monotonic()
        rc, timed_out = run_qemu(cmd, serial_log, args.timeout, echo=not args.quiet)
        seconds = time.monotonic() - start
        results, problems = judge(serial_log, rc, timed_out, seconds, tests)
        if not args.keep:
            initrd.unlink()
            disk.unlink()
        print()
        for line in results:
            print(line)
        if problems:
            for p in problems:
                log(f"FAIL: {p}")
            log(f"serial log: {serial_log}")
            return 1
        log(f"PASS: {kernel.flavour} guest, {len(tests)} tests, boot+tests {seconds:.1f} s; "
            f"serial log: {serial_log}")
        return 0
    except DownloadUnavailable as e:
        log(f"SKIP: {e}")
        return EXIT_SKIP
    except (HarnessError, subprocess.CalledProcessError, OSError) as e:
        log(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
