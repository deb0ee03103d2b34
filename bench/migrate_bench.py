#!/usr/bin/env python3
"""Live migration downtime and total time against the dirty rate.

Runs mig_testapp (test/mig) as source and destination on this machine over a UNIX
socket: 1 GiB of runtime memory (-m 1024, 4 KiB pages), an emulated NVMe controller,
and a service lcore that rewrites pages of a 256 MiB memzone at each rate. Every run
must end with the destination's exact copy (mig_testapp checks every page and the
participant's state); the table gives the median of the runs at each rate.

  bench/migrate_bench.py BUILD/test/mig/mig_testapp [--rates 0,10,100,1000] [--runs 3]
                         [--max-downtime 10] [--svg doc/img/migration-downtime.svg]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(app, rate, args, tag):
    with tempfile.TemporaryDirectory(prefix="uvio-migbench-") as d:
        sock = os.path.join(d, "dst.sock")
        eal = ["--no-huge", "-m", str(args.memory), "-l", "0-1", "--control-socket", "none",
               "--vdev", "emu_nvme0,size=1M", "--log-level", "warning", "--log-level", "mig:info"]
        dst = subprocess.Popen([app] + eal + ["--file-prefix", f"mbd{tag}", "--migrate-listen", "unix:" + sock, "--"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3000):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        time.sleep(0.05)  # bound, then listening
        src = subprocess.run([app] + eal + ["--file-prefix", f"mbs{tag}", "--", "--to=unix:" + sock,
                                            f"--rate-mib={rate}", f"--zone-mib={args.zone}", "--warmup=1024",
                                            f"--max-downtime={args.max_downtime}", f"--max-passes={args.max_passes}",
                                            "--force"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
        dout, derr = dst.communicate(timeout=600)
        kv = dict(line.split("=", 1) for line in src.stdout.splitlines() if "=" in line)
        dkv = dict(line.split("=", 1) for line in dout.splitlines() if "=" in line)
        if src.returncode != 0 or dst.returncode != 0 or dkv.get("verified") != "yes":
            sys.exit(f"rate {rate} MiB/s: migration failed or the copy differs\n{src.stdout}{src.stderr}{dout}{derr}")
        # "services paused in X ms": how long the service lcore took to reach its quiescent
        # point, which on a loaded machine is mostly the wait for a CPU.
        pause = next((float(line.split("services paused in ")[1].split()[0]) for line in src.stderr.splitlines()
                      if "services paused in " in line), 0.0)
        return {"pause": pause, "downtime": float(kv["downtime_ms"]), "total": float(kv["total_ms"]), "passes": int(kv["pass"]) + 1,
                "sent": int(kv["bytes_sent"]) / (1 << 20), "achieved": float(kv.get("dirty_mib_s", 0))}


def svg(rows, path):
    """A bar chart of median downtime per rate, log-free and dependency-free."""
    w, h, left, bottom, top = 520, 300, 60, 50, 30
    peak = max(r["downtime"] for r in rows) or 1
    bar = (w - left - 20) / len(rows)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="{w / 2}" y="18" text-anchor="middle">Live migration downtime (median, ms) vs dirty rate</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>']
    for i in range(5):
        v = peak * i / 4
        y = h - bottom - (h - bottom - top) * i / 4
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" stroke="#ddd"/>')
    for i, r in enumerate(rows):
        bh = (h - bottom - top) * r["downtime"] / peak
        x = left + i * bar + bar * 0.2
        out.append(f'<rect x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{bar * 0.6:.1f}" height="{bh:.1f}" fill="#4472c4"/>')
        out.append(f'<text x="{x + bar * 0.3:.1f}" y="{h - bottom - bh - 4:.1f}" text-anchor="middle">{r["downtime"]:.1f}</text>')
        out.append(f'<text x="{x + bar * 0.3:.1f}" y="{h - bottom + 16}" text-anchor="middle">{r["rate"]} MiB/s</text>')
    out.append(f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">dirty rate of the service lcore</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("app")
    ap.add_argument("--rates", default="0,10,100,1000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory", type=int, default=1024, help="MiB of runtime memory (-m)")
    ap.add_argument("--zone", type=int, default=256, help="MiB the service lcore rewrites")
    ap.add_argument("--max-downtime", type=int, default=10)
    ap.add_argument("--max-passes", type=int, default=30)
    ap.add_argument("--svg")
    args = ap.parse_args()
    rows = []
    print(f"| dirty rate asked | achieved MiB/s | downtime ms (median of {args.runs}) | of which pausing the lcore | "
          "total ms | passes | MiB sent |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate in [int(r) for r in args.rates.split(",")]:
        runs = [run_once(args.app, rate, args, f"{os.getpid()}-{rate}-{i}") for i in range(args.runs)]
        row = {"rate": rate, **{k: statistics.median(r[k] for r in runs) for k in ("downtime", "pause", "total", "passes", "sent", "achieved")}}
        rows.append(row)
        print(f"| {rate} MiB/s | {row['achieved']:.0f} | {row['downtime']:.2f} | {row['pause']:.2f} | {row['total']:.0f} | {row['passes']:.0f} | {row['sent']:.0f} |",
              flush=True)
    if args.svg:
        svg(rows, args.svg)


if __name__ == "__main__":
    main()
