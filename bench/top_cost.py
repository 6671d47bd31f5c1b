#!/usr/bin/env python3
"""What watching a forwarder costs it: CPU of the forwarder idle, then while `top` refreshes
every second in a tmux terminal (and while `status` runs in a loop), following FILES files;
plus /metrics scrape latency with that many files (the per-file gauges are computed then).

usage: python bench/top_cost.py [--files 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_statsig import FakeStatsig
from ops_resources import cpu_seconds, get, scrape_latency_ms, socket_port, wait


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    line = b'{"event_name": "bench", "user_id": "u1", "metadata": {"k": "v"}}\n'
    with tempfile.TemporaryDirectory() as tmp, FakeStatsig(keep_events=False) as fake:
        work = Path(tmp)
        (work / "logs").mkdir()
        for i in range(args.files):
            (work / "logs" / f"f{i:04d}.ndjson").write_bytes(line * 10)
        env = {**os.environ, "STATSIG_SERVER_SECRET_KEY": "secret-bench-0000000000000",
               "FORWARDER_LOG_FORMAT": "json"}
        with socket_port() as port:
            pass
        state = work / "state"
        proc = subprocess.Popen(
            [sys.executable, "-m", "forwarder", "run", str(work / "logs" / "*.ndjson"), "--statsig-api", fake.url,
             "--state-dir", str(state), "--metrics-listen", f"127.0.0.1:{port}",
             "--max-open-files", str(args.files + 10)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        base = f"http://127.0.0.1:{port}"
        tmux = ["tmux", "-L", f"bench-top-{os.getpid()}"]
        try:
            wait(lambda: get(base + "/readyz") == 200)
            fake.wait_for(args.files * 10, timeout=60)
            time.sleep(2)

            def cpu_ms_per_s(during: float) -> float:
                c0 = cpu_seconds(proc.pid)
                time.sleep(during)
                return (cpu_seconds(proc.pid) - c0) / during * 1000

            idle = cpu_ms_per_s(args.seconds)
            print(f"{args.files} files, idle: forwarder CPU {idle:.1f} ms/s")

            if shutil.which("tmux"):
                subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "50", "-s", "t",
                                f"{sys.executable} -m forwarder top --state-dir {state} --interval 1"],
                               check=True, env={**os.environ, "TERM": "xterm-256color"})
                time.sleep(2)
                watched = cpu_ms_per_s(args.seconds)
                print(f"{args.files} files, top refreshing every 1 s: forwarder CPU {watched:.1f} ms/s "
                      f"(+{watched - idle:.1f} ms/s)")
                subprocess.run([*tmux, "kill-server"], capture_output=True)

            p50, p99 = scrape_latency_ms(base + "/metrics", 100)
            print(f"{args.files} files, /metrics scrape: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            s = time.perf_counter()
            subprocess.run([sys.executable, "-m", "forwarder", "status", "--state-dir", str(state), "--interval", "0"],
                           check=True, capture_output=True)
            print(f"status --interval 0 (whole command, Python start-up included): "
                  f"{(time.perf_counter() - s) * 1000:.0f} ms")
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
