#!/usr/bin/env python3
"""Live migration of the applications: uvio-testpmd and uvio-nvme-perf, each started as a
source and as a destination (--migrate-listen), migrated with `uvio-migrate send` over a
UNIX socket, and over TCP between two network namespaces joined by a veth pair.

Usage: app_migration_test.py UVIO_TESTPMD UVIO_NVME_PERF UVIO_MIGRATE [unittest args]
"""
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

TESTPMD = NVME_PERF = MIGRATE = None
# Runtime memory lives at the same virtual addresses in both processes.
ADDR_NO_RANDOMIZE = 0x0040000
TIMEOUT = 60


def no_aslr():
    ctypes.CDLL(None, use_errno=True).personality(ADDR_NO_RANDOMIZE)


class Proc:
    def __init__(self, argv, name):
        self.name = name
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=no_aslr)
        self.out = []
        self.listening = threading.Event()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.out.append(line)
            if "waiting for a migration on" in line:
                self.listening.set()

    def has(self, text):
        return any(text in line for line in self.out)

    def wait(self, timeout=TIMEOUT):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = self.stacks()
            self.kill()
            raise AssertionError(f"{self.name} did not finish in {timeout}s:\n{self.text()}\n{stacks}")
        self.t.join(5)
        self.p.stdout.close()
        return rc

    def stacks(self):
        """Every thread's backtrace of a process that hangs, when gdb is at hand."""
        gdb = shutil.which("gdb")
        if not gdb:
            return "(no gdb: no backtraces)"
        try:
            r = subprocess.run([gdb, "-p", str(self.p.pid), "-batch", "-nx", "-ex", "thread apply all bt 30"],
                               capture_output=True, text=True, timeout=60)
            return f"--- {self.name}: threads\n{r.stdout}{r.stderr[-2000:]}"
        except subprocess.TimeoutExpired:
            return "(gdb did not answer within 60 s)"

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.t.join(5)
        if not self.p.stdout.closed:
            self.p.stdout.close()

    def text(self):
        return f"--- {self.name}\n{''.join(self.out)}"


def totals(proc):
    for line in proc.out:
        if line.startswith("MIGRATION-TOTALS "):
            return {k: (int(v) if v.isdigit() else v) for k, v in (f.split("=", 1) for f in line.split()[1:])}
    raise AssertionError(f"no MIGRATION-TOTALS line:\n{proc.text()}")


class AppMigration(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="uvio-appmig-")
        self.procs = []
        self.tag = f"{os.getpid()}-{self._testMethodName[5:20]}"

    def tearDown(self):
        for p in self.procs:
            p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, app, role, eal, app_args, listen=None, control=None, netns=None):
        argv = [app, "--no-huge", "-m", "64", "-l", "0-1", "--file-prefix", f"am{role}-{self.tag}",
                "--log-level", "notice", "--control-socket", control or "none"] + eal
        if listen:
            argv += ["--migrate-listen", listen]
        argv += ["--"] + app_args
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        p = Proc(argv, role)
        self.procs.append(p)
        return p

    def migrate(self, app, eal, app_args, to_listen, to_send, ready, ns_dst=None, ns_src=None):
        """Destination, then source; once `ready` shows on the source, uvio-migrate send."""
        dst = self.start(app, "destination", eal, app_args, listen=to_listen, netns=ns_dst)
        if not dst.listening.wait(TIMEOUT):
            self.fail(f"the destination never listened:\n{dst.text()}")
        ctl = os.path.join(self.dir, "src.ctl")
        src = self.start(app, "source", eal, app_args, control=ctl, netns=ns_src)
        deadline = time.monotonic() + TIMEOUT
        while not src.has(ready):
            if src.p.poll() is not None or time.monotonic() > deadline:
                self.fail(f"the source did not get going:\n{src.text()}")
            time.sleep(0.02)
        cli = subprocess.run([MIGRATE, "--socket", ctl, "--interval", "20", "send", "--to", to_send,
                              "--max-passes", "8", "--force"], capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(cli.returncode, 0, cli.stdout + cli.stderr + src.text() + dst.text())
        self.assertIn("migrated:", cli.stdout)
        src_rc = src.wait()
        self.assertEqual(src_rc, 0, src.text() + dst.text())
        return src, dst

    # ----------------------------------------------------------------------------------
    def check_testpmd(self, to_listen, to_send, **ns):
        eal = ["--vdev", "emu_net0,peer=emu_net1", "--vdev", "emu_net1,peer=emu_net0"]
        # txonly on both ports of the link: each port generates and also receives what
        # the other sends.
        args = ["--forward-mode=txonly", "--stats-period=1"]
        src, dst = self.migrate(TESTPMD, eal, args, to_listen, to_send, "statistics for port", **ns)
        self.assertTrue(src.has("Migrated: completed"), src.text())
        # The destination forwards on from the source's state; let its first statistics
        # period pass, then stop it as an operator would.
        deadline = time.monotonic() + TIMEOUT
        while not dst.has("Port statistics") and not dst.has("statistics for port"):
            self.assertIsNone(dst.p.poll(), dst.text())
            self.assertLess(time.monotonic(), deadline, dst.text())
            time.sleep(0.05)
        dst.p.send_signal(signal.SIGINT)
        self.assertEqual(dst.wait(), 0, dst.text())
        s, d = totals(src), totals(dst)
        self.assertEqual((s["role"], d["role"]), ("source", "destination"))
        gen = s["generated"] + d["generated"]
        sent = s["sent"] + d["sent"]
        tx_dropped = s["tx_dropped"] + d["tx_dropped"]
        received = s["received"] + d["received"]
        # Every generated frame is sent or dropped at TX; every frame sent is received
        # or dropped by a device on the way (lack of RX buffers): none is created, none
        # received twice across the migration.
        self.assertEqual(gen, sent + tx_dropped, src.text() + dst.text())
        self.assertLessEqual(received, sent, src.text() + dst.text())
        rx_dropped_by_device = sent - received
        self.assertGreaterEqual(rx_dropped_by_device, 0)
        self.assertGreater(s["received"], 0, src.text())
        # No device failed on either side (a failed device would carry its
        # DEVICE_NEEDS_RESET across and the destination would move nothing).
        for p in (src, dst):
            self.assertFalse(p.has("device error"), src.text() + dst.text())
            self.assertFalse(p.has("needs a reset"), src.text() + dst.text())
        self.assertGreater(d["received"], 0, src.text() + dst.text())
        self.assertGreater(d["sent"], 0, src.text() + dst.text())
        # The destination's cumulative counters began exactly at the source's.
        m = re.search(r"Accounting: generated (\d+) = sent (\d+)", "".join(dst.out))
        self.assertIsNotNone(m, dst.text())
        self.assertEqual(int(m.group(1)), gen, dst.text())

    def check_nvme_perf(self, to_listen, to_send, **ns):
        eal = ["--vdev", "emu_nvme0,size=16M"]
        # Ten seconds: the migration begins after the first and must complete before the
        # run ends, also under ThreadSanitizer on a loaded machine (pass 0 alone then
        # takes seconds); the destination finishes the run.
        args = ["-w", "rw", "--verify", "-t", "10", "-s", str(4 << 20), "-q", "8"]
        src, dst = self.migrate(NVME_PERF, eal, args, to_listen, to_send, "[  1s]", **ns)
        self.assertTrue(src.has("migrated after"), src.text())
        self.assertFalse(src.has("read-back"), src.text())
        rc = dst.wait()
        self.assertEqual(rc, 0, src.text() + dst.text())
        text = "".join(dst.out)
        m = re.search(r"completions (\d+), I/O errors (\d+), verified reads (\d+), verify mismatches (\d+)", text)
        self.assertIsNotNone(m, dst.text())
        self.assertEqual(int(m.group(2)), 0, dst.text())
        self.assertGreater(int(m.group(3)), 0, dst.text())
        self.assertEqual(int(m.group(4)), 0, dst.text())
        # Every write acknowledged on either side reads back with its last pattern.
        m = re.search(r"read-back of acknowledged writes: (\d+) units checked, I/O errors (\d+), "
                      r"verify mismatches (\d+)", text)
        self.assertIsNotNone(m, dst.text())
        self.assertGreater(int(m.group(1)), 0, dst.text())
        self.assertEqual((int(m.group(2)), int(m.group(3))), (0, 0), dst.text())
        # The destination's counters go on from the source's.
        src_done = re.search(r"completions here (\d+)", "".join(src.out))
        dst_total = re.search(r"completions (\d+),", text)
        self.assertGreater(int(dst_total.group(1)), int(src_done.group(1)), src.text() + dst.text())

    def test_testpmd_unix(self):
        path = "unix:" + os.path.join(self.dir, "dst.sock")
        self.check_testpmd(path, path)

    def test_nvme_perf_unix(self):
        path = "unix:" + os.path.join(self.dir, "dst.sock")
        self.check_nvme_perf(path, path)

    # ----------------------------------------------------------------------------------
    def netns_pair(self):
        """Two namespaces joined by a veth pair; skips (77 when alone) when not permitted."""
        if shutil.which("ip") is None:
            self.skipTest("no ip(8)")
        a, b = f"uvio-src-{os.getpid()}", f"uvio-dst-{os.getpid()}"
        va, vb = f"uvs{os.getpid() % 100000}", f"uvd{os.getpid() % 100000}"

        def ip(*args, check=True):
            r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
            if check and r.returncode != 0:
                raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
            return r

        def cleanup():
            ip("netns", "del", a, check=False)
            ip("netns", "del", b, check=False)
        self.addCleanup(cleanup)
        try:
            ip("netns", "add", a)
            ip("netns", "add", b)
            ip("link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
            ip("-n", a, "addr", "add", "10.213.0.1/24", "dev", va)
            ip("-n", b, "addr", "add", "10.213.0.2/24", "dev", vb)
            for ns, dev in ((a, va), (b, vb)):
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", ns, "link", "set", dev, "up")
        except RuntimeError as e:
            self.skipTest(f"network namespaces are not permitted here: {e}")
        return a, b

    def test_testpmd_tcp_between_netns(self):
        a, b = self.netns_pair()
        self.check_testpmd("tcp:10.213.0.2:7411", "tcp:10.213.0.2:7411", ns_src=a, ns_dst=b)

    def test_nvme_perf_tcp_between_netns(self):
        a, b = self.netns_pair()
        self.check_nvme_perf("tcp:10.213.0.2:7412", "tcp:10.213.0.2:7412", ns_src=a, ns_dst=b)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    TESTPMD, NVME_PERF, MIGRATE = (os.path.abspath(p) for p in sys.argv[1:4])
    only_netns = "--netns-only" in sys.argv
    argv = [sys.argv[0]] + [a for a in sys.argv[4:] if a != "--netns-only"]
    result = unittest.main(argv=argv, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    # Meson reads 77 as "skipped": the netns test alone, and not permitted here.
    if only_netns and result.skipped and len(result.skipped) == result.testsRun:
        print("skipped: " + "; ".join(reason for _, reason in result.skipped))
        sys.exit(77)
    sys.exit(0)
