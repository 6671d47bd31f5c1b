"""Many files at once: 200 files written concurrently, followed by the real CLI.

Prints events/s (first write to last event accepted by the local fake Statsig), the
forwarder's CPU use while the 200 files sit idle, and its peak RSS.

    .venv/bin/python bench/many_files.py [--files 200] [--events-per-file 1000] [--idle 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_statsig import FakeStatsig  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def line(file_no: int, seq: int) -> bytes:
    return orjson.dumps({
        "event_name": "page_view", "user": {"userID": f"user-{seq % 5000}", "email": f"u{seq}@example.com",
                                            "custom": {"plan": "pro"}},
        "value": seq, "metadata": {"file": file_no, "seq": seq, "path": "/pricing"},
        "time": 1760000000000 + seq,
    }) + b"\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--events-per-file", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--poll", action="store_true", help="run the forwarder with --poll")
    args = ap.parse_args()

    fake = FakeStatsig(keep_events=False).start()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        paths = [logs / f"svc-{i:03d}.ndjson" for i in range(args.files)]
        for p in paths:
            p.touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
        env.update(STATSIG_SERVER_SECRET_KEY="secret-bench", FORWARDER_LOG_FORMAT="json")
        cmd = [sys.executable, "-m", "forwarder", "run", str(logs / "*.ndjson"), "--statsig-api", fake.url,
               "--state-dir", str(Path(tmp) / "state"), *(["--poll"] if args.poll else [])]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        time.sleep(2.0)  # start-up, first scan of the 200 empty files

        total = args.files * args.events_per_file
        per_writer = [paths[i :: args.writers] for i in range(args.writers)]

        def writer(mine: list[Path]) -> None:
            handles = [open(p, "ab", buffering=0) for p in mine]  # noqa: SIM115
            for start in range(0, args.events_per_file, 10):
                for n, h in enumerate(handles):
                    file_no = paths.index(mine[n])
                    h.write(b"".join(line(file_no, file_no * args.events_per_file + s)
                                     for s in range(start, min(start + 10, args.events_per_file))))
            for h in handles:
                h.close()

        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        threads = [threading.Thread(target=writer, args=(m,)) for m in per_writer]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        written = time.monotonic() - t0
        ok = fake.wait_for(total, timeout=300)
        elapsed = time.monotonic() - t0
        busy_cpu = cpu_seconds(proc.pid) - cpu0

        time.sleep(2.0)  # let the last checkpoint write and rotate_wait-free bookkeeping settle
        idle0 = cpu_seconds(proc.pid)
        time.sleep(args.idle)
        idle_cpu = cpu_seconds(proc.pid) - idle0
        rss = peak_rss_mb(proc.pid)
        proc.terminate()
        proc.wait(30)
        fake.stop()

    print(f"files: {args.files}, events: {total} ({args.events_per_file}/file, "
          f"{args.writers} writer threads), mode: {'poll' if args.poll else 'native'}")
    print(f"all delivered: {ok} (fake received {fake.event_count})")
    print(f"writes finished after {written:.2f} s; last event accepted after {elapsed:.2f} s")
    print(f"throughput: {fake.event_count / elapsed:,.0f} events/s; "
          f"forwarder CPU while busy: {busy_cpu:.2f} s")
    print(f"idle {args.idle:.0f} s with {args.files} quiet files: {idle_cpu:.2f} CPU s "
          f"= {100 * idle_cpu / args.idle:.2f}% of one core")
    print(f"peak RSS: {rss:.1f} MB")


if __name__ == "__main__":
    main()
