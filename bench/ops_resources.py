#!/usr/bin/env python3
"""What the forwarder costs as a sidecar: the figures behind deploy/k8s resources.

Runs the real CLI against the local fake Statsig and prints, from /proc of the process:
idle RSS and CPU; steady CPU and RSS at a fixed event rate; a catch-up burst (events/s,
CPU s, peak RSS); and /metrics scrape latency percentiles.

usage: python bench/ops_resources.py [--rate 2000] [--seconds 10] [--burst 200000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_statsig import FakeStatsig  # noqa: E402

GEN = ROOT / "bench" / "gen_events.py"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000, help="events/s in the steady phase")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--burst", type=int, default=200_000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeStatsig(keep_events=False) as fake:
        work = Path(tmp)
        events = work / "source.ndjson"
        total = args.burst + int(args.rate * args.seconds)
        subprocess.run([sys.executable, str(GEN), str(total), str(events)], check=True)
        lines = events.read_bytes().splitlines(keepends=True)
        log = work / "events.ndjson"
        log.touch()
        env = {**os.environ, "STATSIG_SERVER_SECRET_KEY": "secret-bench-0000000000000",
               "FORWARDER_LOG_FORMAT": "json"}
        with socket_port() as port:
            pass
        proc = subprocess.Popen(
            [sys.executable, "-m", "forwarder", "run", str(log), "--statsig-api", fake.url,
             "--state-dir", str(work / "state"), "--metrics-listen", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait(lambda: get(base + "/readyz") == 200)
            time.sleep(3)
            c0 = cpu_seconds(proc.pid)
            time.sleep(5)
            idle_ms = (cpu_seconds(proc.pid) - c0) / 5 * 1000
            print(f"idle: RSS {rss_mb(proc.pid):.1f} MB, CPU {idle_ms:.1f} ms/s")

            steady = lines[: int(args.rate * args.seconds)]
            step = max(1, args.rate // 10)
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            with open(log, "ab") as f:
                for i in range(0, len(steady), step):
                    f.write(b"".join(steady[i : i + step]))
                    f.flush()
                    time.sleep(max(0.0, t0 + (i + step) / args.rate - time.monotonic()))
            fake.wait_for(len(steady), timeout=60)
            took = time.monotonic() - t0
            share = (cpu_seconds(proc.pid) - c0) / took * 100
            print(f"steady {args.rate} events/s for {took:.1f} s: CPU {share:.1f} % of one core,"
                  f" RSS {rss_mb(proc.pid):.1f} MB")

            burst = lines[len(steady) :]
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            with open(log, "ab") as f:
                f.write(b"".join(burst))
            fake.wait_for(len(lines), timeout=300)
            took = time.monotonic() - t0
            cpu = cpu_seconds(proc.pid) - c0
            print(f"burst {len(burst)} events: {len(burst) / took:,.0f} events/s, CPU {cpu:.2f} s,"
                  f" peak RSS {rss_mb(proc.pid, 'VmHWM'):.1f} MB")

            p50, p99 = scrape_latency_ms(base + "/metrics", 200)
            print(f"/metrics scrape: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        finally:
            proc.terminate()
            proc.wait(30)


def scrape_latency_ms(url: str, n: int) -> tuple[float, float]:
    """p50 and p99 of n GETs of url, in ms."""
    lat = []
    for _ in range(n):
        started = time.perf_counter()
        get(url)
        lat.append((time.perf_counter() - started) * 1000)
    q = statistics.quantiles(lat, n=100)
    return q[49], q[98]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
            return int(r.status)
    except OSError:
        return 0


def wait(cond: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for the forwarder")


class socket_port:
    """A free TCP port on 127.0.0.1 (closed again before use)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    main()
