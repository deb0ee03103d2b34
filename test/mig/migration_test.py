#!/usr/bin/env python3
"""Live migration between two processes: mig_testapp as source and as destination.

Runtime memory lives at the same virtual addresses in both processes, so each test
starts two programs, sometimes with a small proxy between them that stalls, cuts or
corrupts the stream. Usage: migration_test.py PATH/TO/mig_testapp [unittest args]
"""
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

APP = None
# Same address-space layout in both processes: the runtime reserves its memory where the
# kernel chooses when its preferred address is taken (under sanitizers).
ADDR_NO_RANDOMIZE = 0x0040000
TIMEOUT = 60


def no_aslr():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(ADDR_NO_RANDOMIZE)


class Proc:
    """A mig_testapp with its stdout/stderr collected by threads."""

    def __init__(self, args, name):
        self.name = name
        self.p = subprocess.Popen([APP] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  preexec_fn=no_aslr, text=True)
        self.out, self.err = [], []
        self.listening = threading.Event()
        self._t = [threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
                   threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True)]
        for t in self._t:
            t.start()

    def _read(self, stream, into):
        for line in stream:
            into.append(line)
            if "waiting for a migration on" in line:
                self.listening.set()

    def wait(self, timeout=TIMEOUT):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{self.name} did not finish in {timeout}s:\n{self.text()}")
        self._close()
        return rc

    def _close(self):
        for t in self._t:
            t.join(5)
        self.p.stdout.close()
        self.p.stderr.close()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        if not self.p.stdout.closed:
            self._close()

    def values(self):
        kv = {}
        for line in self.out:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                kv[k] = v
        return kv

    def text(self):
        return f"--- {self.name} stdout\n{''.join(self.out)}--- {self.name} stderr\n{''.join(self.err)}"


class Proxy:
    """Forwards one connection; can flip one byte, stall, or cut the stream at an offset."""

    def __init__(self, listen_path, target_path, flip_at=None, stall_at=None):
        self.listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listen.bind(listen_path)
        self.listen.listen(1)
        self.target_path = target_path
        self.flip_at, self.stall_at = flip_at, stall_at
        self.forwarded = 0
        self.stalled = threading.Event()
        self.stop = threading.Event()
        self.conns = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        src, _ = self.listen.accept()
        dst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dst.connect(self.target_path)
        self.conns = [src, dst]
        while not self.stop.is_set():
            r, _, _ = select.select([src, dst], [], [], 0.05)
            for s in r:
                other = dst if s is src else src
                if s is src and self.stall_at is not None and self.forwarded >= self.stall_at:
                    self.stalled.set()
                    continue
                try:
                    data = bytearray(s.recv(1 << 16))
                except OSError:
                    data = b""
                if not data:
                    self.stop.set()
                    break
                if s is src:
                    if self.stall_at is not None:
                        data = data[: max(0, self.stall_at - self.forwarded)] or data[:0]
                    if self.flip_at is not None and self.forwarded <= self.flip_at < self.forwarded + len(data):
                        data[self.flip_at - self.forwarded] ^= 0x40
                    self.forwarded += len(data)
                try:
                    other.sendall(data)
                except OSError:
                    self.stop.set()
                    break
            if self.stall_at is not None and self.forwarded >= self.stall_at:
                self.stalled.set()
                time.sleep(0.01)
        # One side went away: so does the other, as a TCP connection through a dead peer.
        for c in self.conns:
            c.close()

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.listen.close()


class MigrationTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="uvio-mig-")
        self.procs = []
        self.id_ = f"{os.getpid()}-{self._testMethodName[:20]}"

    def tearDown(self):
        for p in self.procs:
            p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def eal(self, role, mem="64", huge=False, vdev="emu_nvme0,size=1M", extra=()):
        args = [] if huge else ["--no-huge"]
        args += ["-m", mem, "-l", "0-1", "--file-prefix", f"mig{role}-{self.id_}", "--vdev", vdev,
                 "--log-level", "notice"]
        if "--control-socket" not in extra:
            args += ["--control-socket", "none"]
        return args + list(extra)

    def dest(self, addr, name="destination", app=(), **kw):
        p = Proc(self.eal("dst" + name[-1], **kw) + ["--migrate-listen", addr, "--"] + list(app), name)
        self.procs.append(p)
        if not p.listening.wait(TIMEOUT):
            p.kill()
            self.fail(f"{name} never listened:\n{p.text()}")
        return p

    def source(self, app, **kw):
        p = Proc(self.eal("src", **kw) + ["--"] + list(app), "source")
        self.procs.append(p)
        return p

    def unix(self, name):
        return os.path.join(self.dir, name)

    def check_ok(self, src, dst):
        src_rc = src.wait()
        if src_rc != 0:
            dst.kill()
            self.fail(f"source exited {src_rc}:\n{src.text()}{dst.text()}")
        dst_rc = dst.wait()
        self.assertEqual(dst_rc, 0, dst.text())
        s, d = src.values(), dst.values()
        self.assertEqual(s["phase"], "completed", src.text())
        self.assertEqual(d["verified"], "yes", dst.text())
        # The destination holds exactly the source's state at the pause.
        self.assertEqual(d["steps"], s["steps_at_pause"], src.text() + dst.text())
        return s, d

    def check_source_survived(self, src):
        rc = src.wait()
        self.assertEqual(rc, 0, src.text())
        s = src.values()
        self.assertIn(s["phase"], ("failed", "cancelled"), src.text())
        self.assertEqual(s.get("running_after_failure"), "yes", src.text())
        return s

    # -------------------------------------------------------------------------------

    def test_unix_full_with_dirtying(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path)
        src = self.source(["--to=unix:" + path, "--rate-mib=40"])
        s, _ = self.check_ok(src, dst)
        # Pages were written while pre-copy ran, and the destination's copy is exact.
        self.assertGreater(int(s["steps_at_pause"]), int(s["steps_at_start"]), src.text())

    def test_tcp_full(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        dst = self.dest(f"tcp:127.0.0.1:{port}")
        src = self.source([f"--to=tcp:127.0.0.1:{port}", "--rate-mib=20"])
        self.check_ok(src, dst)

    def control(self, path, request):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(path)
            c.sendall((json.dumps(request) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def test_without_cpu_tracking(self):
        # Every page counts as dirty at every pass: no convergence, but a forced
        # stop-copy still moves an exact copy, as everything is sent with writers paused.
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path)
        os.environ["UVIO_MIG_CPU_TRACKING"] = "none"
        try:
            src = self.source(["--to=unix:" + path, "--rate-mib=20", "--max-passes=2", "--force"])
        finally:
            del os.environ["UVIO_MIG_CPU_TRACKING"]
        s, _ = self.check_ok(src, dst)
        self.assertIn("pre-copy cannot converge", "".join(src.err), src.text())

    def test_control_socket(self):
        path, ctl = self.unix("dst.sock"), self.unix("src-control.sock")
        dst = self.dest("unix:" + path)
        src = self.source(["--external", "--rate-mib=20"], extra=["--control-socket", ctl])
        for _ in range(1000):
            if any("ready=yes" in line for line in src.out):
                break
            time.sleep(0.01)
        idle = self.control(ctl, {"cmd": "migrate.status"})
        self.assertTrue(idle["ok"], idle)
        self.assertEqual(idle["phase"], "idle", idle)
        for key in ("pass", "bytes_sent", "bytes_remaining", "dirty_rate_bps", "bandwidth_bps",
                    "expected_downtime_ms", "downtime_ms", "total_ms", "message"):
            self.assertIn(key, idle)
        bad = self.control(ctl, {"cmd": "migrate.send"})
        self.assertFalse(bad["ok"], bad)
        self.assertIn("to", bad["error"])
        started = self.control(ctl, {"cmd": "migrate.send", "to": "unix:" + path, "max_downtime_ms": 300,
                                     "max_passes": 30, "force": False, "token": ""})
        self.assertEqual(started, {"ok": True, "started": True})
        self.check_ok(src, dst)

        try:
            with open("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") as f:
                free = int(f.read())
        except OSError:
            free = 0
        if free < 32:
            self.skipTest("needs 32 free 2 MiB hugepages")
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path, mem="16", huge=True)
        src = self.source(["--to=unix:" + path, "--rate-mib=20", "--zone-mib=4"], mem="16", huge=True)
        self.check_ok(src, dst)

    def test_idle_source(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path)
        src = self.source(["--to=unix:" + path, "--rate-mib=0"])
        self.check_ok(src, dst)

    def test_cancel_then_migrate_again(self):
        first, second, proxied = self.unix("first.sock"), self.unix("second.sock"), self.unix("proxy.sock")
        dst1 = self.dest("unix:" + first, name="destination1")
        dst2 = self.dest("unix:" + second, name="destination2")
        # The proxy holds the stream after 1 MiB: pre-copy cannot end before the cancel.
        proxy = Proxy(proxied, first, stall_at=1 << 20)
        src = self.source(["--cancel-to=unix:" + proxied, "--to=unix:" + second, "--rate-mib=20"])
        s, _ = self.check_ok(src, dst2)
        self.assertEqual(s["first_phase"], "cancelled", src.text())
        self.assertEqual(s["resumed_after_cancel"], "yes", src.text())
        proxy.close()
        self.assertEqual(dst1.wait(), 1, dst1.text())

    def test_destination_killed(self):
        path, proxied = self.unix("dst.sock"), self.unix("proxy.sock")
        dst = self.dest("unix:" + path)
        proxy = Proxy(proxied, path, stall_at=2 << 20)
        src = self.source(["--to=unix:" + proxied, "--rate-mib=20", "--expect=fail"])
        self.assertTrue(proxy.stalled.wait(TIMEOUT), src.text())
        dst.p.kill()
        dst.wait()
        proxy.close()
        s = self.check_source_survived(src)
        self.assertEqual(s["phase"], "failed", src.text())

    def test_corrupted_stream(self):
        path, proxied = self.unix("dst.sock"), self.unix("proxy.sock")
        dst = self.dest("unix:" + path)
        proxy = Proxy(proxied, path, flip_at=(3 << 20) + 123)
        src = self.source(["--to=unix:" + proxied, "--rate-mib=20", "--expect=fail"])
        self.assertEqual(dst.wait(), 1, dst.text())
        self.assertIn("CRC", dst.values().get("error", ""), dst.text())
        self.check_source_survived(src)
        proxy.close()

    def test_wrong_token_refused(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path, extra=["--migrate-token", "secret-a"])
        src = self.source(["--to=unix:" + path, "--token=secret-b", "--expect=fail"])
        self.assertEqual(dst.wait(), 1, dst.text())
        d = dst.values()
        self.assertIn("token", d["error"], dst.text())
        self.assertEqual(d["applied"], "nothing", dst.text())
        s = self.check_source_survived(src)
        self.assertIn("token", s["message"], src.text())

    def test_memory_size_refused(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path, mem="128")
        src = self.source(["--to=unix:" + path, "--expect=fail"])
        self.assertEqual(dst.wait(), 1, dst.text())
        self.assertEqual(dst.values()["applied"], "nothing", dst.text())
        s = self.check_source_survived(src)
        self.assertIn("memory", s["message"], src.text())

    def test_device_refuses_state(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path, vdev="emu_nvme0,size=1M,faults=migload@1")
        src = self.source(["--to=unix:" + path, "--rate-mib=20", "--expect=fail"])
        self.assertEqual(dst.wait(), 1, dst.text())
        self.assertIn("refused its state", dst.values()["error"], dst.text())
        s = self.check_source_survived(src)
        self.assertIn("refused its state", s["message"], src.text())

    def test_no_convergence(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path)
        # A zero budget never fits: the device state alone takes time to send.
        src = self.source(["--to=unix:" + path, "--rate-mib=20", "--max-downtime=0", "--max-passes=3", "--expect=fail"])
        s = self.check_source_survived(src)
        self.assertIn("did not converge", s["message"], src.text())
        self.assertEqual(dst.wait(), 1, dst.text())

    def test_no_convergence_forced(self):
        path = self.unix("dst.sock")
        dst = self.dest("unix:" + path)
        src = self.source(["--to=unix:" + path, "--rate-mib=20", "--max-downtime=0", "--max-passes=3", "--force"])
        s, _ = self.check_ok(src, dst)
        self.assertEqual(s["pass"], "2", src.text())


if __name__ == "__main__":
    APP = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
