#!/usr/bin/env python3
"""Checks of run_guest.py's host side that need no guest: the initramfs format (read
back by busybox's own cpio), module ordering from .modinfo, the test plan, and the
pass/fail verdict on a serial log."""

import lzma
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_guest  # noqa: E402


def fake_module(modinfo: dict) -> bytes:
    """A minimal ELF64 relocatable file whose only content is a .modinfo section."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    shstr_off = info_off + len(info)
    shoff = (shstr_off + len(shstrtab) + 7) & ~7
    header = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2))

    def section(name, kind, offset, size):
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    body = header + info + shstrtab
    body += bytes(shoff - len(body))
    body += section(0, 0, 0, 0) + section(1, 1, info_off, len(info)) \
        + section(10, 3, shstr_off, len(shstrtab))
    return body


class CpioTest(unittest.TestCase):
    def setUp(self):
        if not Path("/bin/busybox").exists():
            self.skipTest("busybox is not installed")

    def test_busybox_cpio_reads_back_every_entry_kind(self):
        archive = run_guest.Cpio()
        archive.file("opt/uvio/bin/prog", b"\x7fELF program bytes", 0o755)
        archive.file("etc/conf", b"A=1\n", 0o644)
        archive.symlink("bin/sh", "/bin/busybox")
        archive.char_device("dev/console", 5, 1)
        data = archive.finish()
        self.assertEqual(len(data) % 4, 0)
        listing = subprocess.run(["/bin/busybox", "cpio", "-tv"], input=data,
                                 capture_output=True, check=True).stdout.decode()
        self.assertRegex(listing, r"(?m)^-rwxr-xr-x .* opt/uvio/bin/prog$")
        self.assertRegex(listing, r"(?m)^drwxr-xr-x .* opt/uvio$")
        self.assertRegex(listing, r"(?m)^l.* bin/sh -> /bin/busybox$")
        self.assertRegex(listing, r"(?m)^c.* dev/console$")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["/bin/busybox", "cpio", "-i", "-d", "opt/uvio/bin/prog", "etc/conf"],
                           input=data, cwd=tmp, capture_output=True, check=True)
            self.assertEqual((Path(tmp) / "opt/uvio/bin/prog").read_bytes(),
                             b"\x7fELF program bytes")
            self.assertEqual((Path(tmp) / "etc/conf").read_bytes(), b"A=1\n")

    def test_each_appended_piece_ends_on_four_bytes(self):
        # The kernel unpacks the cached base and the per-run archive one after the
        # other; a piece that does not end on a 4-byte boundary hides the next one.
        for size in range(1, 9):
            archive = run_guest.Cpio()
            archive.file("f" * size, b"x" * size)
            raw = archive.finish()
            self.assertEqual(len(raw) % 4, 0, size)
            packed = run_guest.gzip_padded(raw, level=1)
            self.assertEqual(len(packed) % 4, 0, size)
            stream = zlib.decompressobj(wbits=31)  # one gzip member
            self.assertEqual(stream.decompress(packed), raw)
            self.assertTrue(stream.eof)
            self.assertEqual(stream.unused_data.strip(b"\0"), b"")


class ModuleOrderTest(unittest.TestCase):
    def test_dependencies_load_first_and_once(self):
        mods = {
            "vfio": fake_module({"name": "vfio", "depends": ""}),
            "irqbypass": fake_module({"name": "irqbypass", "depends": ""}),
            "vfio_pci_core": fake_module({"name": "vfio_pci_core",
                                          "depends": "vfio,irqbypass"}),
            "vfio_pci": fake_module({"name": "vfio_pci", "depends": "vfio_pci_core,vfio"}),
        }
        order = run_guest.module_load_order(mods, ["vfio-pci", "vfio"])
        self.assertEqual(order, ["vfio", "irqbypass", "vfio_pci_core", "vfio_pci"])

    def test_missing_dependency_is_an_error(self):
        mods = {"vfio_pci": fake_module({"name": "vfio_pci", "depends": "vfio"})}
        with self.assertRaisesRegex(run_guest.HarnessError, "vfio is not in"):
            run_guest.module_load_order(mods, ["vfio_pci"])

    def test_cycle_is_an_error(self):
        mods = {"a": fake_module({"depends": "b"}), "b": fake_module({"depends": "a"})}
        with self.assertRaisesRegex(run_guest.HarnessError, "cycle"):
            run_guest.module_load_order(mods, ["a"])

    def test_not_elf_is_an_error(self):
        with self.assertRaises(run_guest.HarnessError):
            run_guest.modinfo(b"not an ELF file at all, just text" * 4)


class VmlinuxTest(unittest.TestCase):
    def test_finds_the_xz_stream_after_other_bytes(self):
        elf = b"\x7fELF" + bytes(range(256)) * 8
        image = b"MZ setup code" + b"\xfd7zXZ\x00 false magic" + lzma.compress(elf) + b"tail"
        self.assertEqual(run_guest.extract_vmlinux(image), elf)

    def test_no_stream_is_an_error(self):
        with self.assertRaises(run_guest.HarnessError):
            run_guest.extract_vmlinux(b"MZ nothing compressed here")


class PlanTest(unittest.TestCase):
    def setUp(self):
        self.bin = Path(tempfile.mkdtemp()) / "uvio-vm-vfio-probe"
        shutil.copy("/bin/true", self.bin)

    def tearDown(self):
        shutil.rmtree(self.bin.parent)

    def test_known_program_runs_per_device_and_mode(self):
        tests = run_guest.plan_tests([run_guest.parse_program(str(self.bin))],
                                     ["group", "iommufd"])
        self.assertEqual(len(tests), len(run_guest.DEVICES) * 2)
        self.assertIn("uvio-vm-vfio-probe/nvme/iommufd", [t.name for t in tests])
        nvme = next(t for t in tests if t.name == "uvio-vm-vfio-probe/nvme/group")
        self.assertEqual(nvme.command, "/opt/uvio/bin/uvio-vm-vfio-probe --bdf 0000:00:04.0 "
                                       "--mode group --check-dma-fault")

    def test_template_with_env_and_device_fields(self):
        spec = f"{self.bin}=UVIO_TEST_BDF={{nvme}} UVIO_TEST_VFIO_MODE={{mode}} {{bin}} -v"
        tests = run_guest.plan_tests([run_guest.parse_program(spec)], ["group"])
        self.assertEqual([(t.name, t.command) for t in tests], [(
            "uvio-vm-vfio-probe/group",
            "UVIO_TEST_BDF=0000:00:04.0 UVIO_TEST_VFIO_MODE=group "
            "/opt/uvio/bin/uvio-vm-vfio-probe -v")])

    def test_selection_by_glob_and_no_match_is_an_error(self):
        tests = run_guest.plan_tests([run_guest.parse_program(str(self.bin))], ["group"])
        chosen = run_guest.select_tests(tests, ["*/e1000e/*"])
        self.assertEqual([t.name for t in chosen], ["uvio-vm-vfio-probe/e1000e/group"])
        with self.assertRaises(run_guest.HarnessError):
            run_guest.select_tests(tests, ["nothing-like-this"])

    def test_program_that_needs_a_kernel_runs_only_there(self):
        testpmd = self.bin.parent / "uvio-testpmd"
        shutil.copy("/bin/true", testpmd)
        program = run_guest.parse_program(str(testpmd))
        self.assertEqual(run_guest.plan_tests([program], ["group", "iommufd"], "iommufd"), [])
        self.assertEqual(run_guest.plan_tests([program], ["noiommu"], "iommufd"), [])
        tests = run_guest.plan_tests([program], ["group"], "debian")
        self.assertEqual([t.name for t in tests], ["uvio-testpmd/group"])
        self.assertIn("testpmd_e1000e.sh /opt/uvio/bin/uvio-testpmd 0000:00:05.0 0000:00:06.0 group",
                      tests[0].command)

    def test_guest_scripts_ride_in_every_run_archive(self):
        kernel = run_guest.Kernel("iommufd", Path("/dev/null"), "x", [])
        args = type("Args", (), {"noiommu": False, "hugepages": 1, "shell": False})()
        archive = run_guest.run_initramfs(kernel, [], [], args)
        raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(archive)  # padding follows
        for script in ("nvme_perf.sh", "testpmd_e1000e.sh"):
            self.assertIn(f"opt/uvio/guest/{script}".encode(), raw)

    def test_missing_program_is_an_error(self):
        with self.assertRaises(run_guest.HarnessError):
            run_guest.parse_program(str(self.bin.parent / "absent"))


class JudgeTest(unittest.TestCase):
    def verdict(self, text, rc, timed_out=False, expected=("probe/nvme/group",)):
        with tempfile.NamedTemporaryFile("w", suffix=".log") as f:
            f.write(text)
            f.flush()
            tests = [run_guest.GuestTest(name, "") for name in expected]
            return run_guest.judge(Path(f.name), rc, timed_out, 1.0, tests)[1]

    GOOD = "boot\r\nUVIO-VM: PASS probe/nvme/group\r\nUVIO-VM-RESULT: PASS (1 checks)\r\n"

    def test_pass_needs_the_line_and_the_exit_code(self):
        self.assertEqual(self.verdict(self.GOOD, 1), [])
        self.assertTrue(self.verdict(self.GOOD, 0))       # rebooted/panicked instead
        self.assertTrue(self.verdict(self.GOOD, 3))       # guest wrote code 1
        self.assertTrue(self.verdict(self.GOOD, 1, timed_out=True))
        self.assertTrue(self.verdict("UVIO-VM-RESULT: FAIL (1 of 1)\n", 1))
        self.assertTrue(self.verdict("UVIO-VM: PASS probe/nvme/group\n", 1))

    def test_timeout_names_the_test_that_was_running(self):
        log = "UVIO-VM: PASS bind/nvme\nuvio-vm: run probe/nvme/group: /opt/x --y\n"
        problems = self.verdict(log, -9, timed_out=True)
        self.assertTrue(any("last started: probe/nvme/group" in p for p in problems), problems)

    def test_a_kernel_panic_is_named(self):
        log = "[ 0.02] Kernel panic - not syncing: timer doesn't work\n"
        problems = self.verdict(log, 0)
        self.assertTrue(any("panicked: [ 0.02] Kernel panic" in p for p in problems), problems)

    def test_a_test_that_never_reported_fails_the_run(self):
        self.assertTrue(self.verdict(self.GOOD, 1, expected=("probe/nvme/group",
                                                             "probe/nvme/iommufd")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
