#!/usr/bin/env python3
"""Throughput and latency of the HTTP receiver (`statsig-forwarder receive`).

Starts the real CLI on a free port, then drives it with C keep-alive connections from a
small asyncio client (raw HTTP/1.1, one request in flight per connection) for each case:
single-event posts and B-event batch posts, with durability "write" and "fsync". Prints
requests/s, events/s, p50/p99 latency, the server's CPU seconds, and checks that the log
holds exactly the accepted events.

    python bench/receiver.py [--clients 16] [--seconds 5] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

EVENT_PATH = "/v1/analytics/events"
BATCH_PATH = "/v1/analytics/batch"


def event(i: int) -> dict[str, object]:
    # Same shape and size as bench/gen_events.py (about 190 bytes a line).
    names = ["page_view", "checkout", "add_to_cart", "login", "search", "click"]
    return {
        "event_name": names[i % len(names)],
        "user": {"userID": f"u{i % 50000}", "custom": {"plan": ["free", "pro", "team"][i % 3]}},
        "value": i % 1000,
        "time": 1760000000000 + i,
        "metadata": {"seq": i, "path": f"/p/{i % 999}", "ua": "Mozilla/5.0 (X11; Linux x86_64)"},
    }


def request(path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def client(host: str, port: int, reqs: list[bytes], deadline: float, lat: list[float],
                 counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(6, 1, 1)  # TCP_NODELAY
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        writer.write(reqs[i % len(reqs)])
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(m.group(1)) if m else 0)
        if not head.startswith(b"HTTP/1.1 20"):  # 200 (receiver endpoints) or 202 (relay)
            raise RuntimeError(f"unexpected answer: {head[:80]!r}")
        lat.append(time.perf_counter() - t0)
        counts[0] += 1
        i += 1
    writer.close()


async def drive(port: int, reqs: list[bytes], clients: int, seconds: float) -> tuple[int, float, list[float]]:
    lat: list[float] = []
    counts = [0]
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(client("127.0.0.1", port, reqs[k::clients] or reqs, deadline, lat, counts)
                           for k in range(clients)))
    return counts[0], time.perf_counter() - start, lat


def start_receiver(log: Path, durability: str, env_extra: dict[str, str] | None = None,
                   *args: str, build: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`receive` on a free port; `build`: a checkout (git worktree) whose code to run instead of this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env["FORWARDER_LOG_FORMAT"] = "json"
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "forwarder", "receive", "--listen", "127.0.0.1:0",
                             "--durability", durability, str(log), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=build)
    assert proc.stderr is not None
    for line in proc.stderr:
        doc = orjson.loads(line)
        if doc.get("msg") == "receiver listening":
            return proc, int(doc["address"].rsplit(":", 1)[1])
    raise RuntimeError("receiver did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


def run_case(durability: str, batch: int, clients: int, seconds: float,
             build: Path | None = None) -> dict[str, float | str | int]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "events.ndjson"
        proc, port = start_receiver(log, durability, build=build)
        try:
            if batch == 1:
                reqs = [request(EVENT_PATH, orjson.dumps(event(i))) for i in range(2000)]
            else:
                reqs = [request(BATCH_PATH, orjson.dumps([event(i * batch + j) for j in range(batch)]))
                        for i in range(200)]
            asyncio.run(drive(port, reqs, clients, min(1.0, seconds)))  # warm-up
            cpu0 = cpu_seconds(proc.pid)
            size0 = log.stat().st_size
            n, elapsed, lat = asyncio.run(drive(port, reqs, clients, seconds))
            cpu = cpu_seconds(proc.pid) - cpu0
            lines = (log.read_bytes()[size0:]).count(b"\n")
            rss_kb = _peak_rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
        assert lines == n * batch, f"log holds {lines} lines, expected {n * batch}"
    return {"durability": durability, "batch": batch, "requests/s": n / elapsed,
            "events/s": n * batch / elapsed,
            "p50 ms": percentile(lat, 0.5) * 1000, "p99 ms": percentile(lat, 0.99) * 1000,
            "server CPU s/s": cpu / elapsed, "server peak RSS MB": rss_kb / 1024,
            "server CPU us/event": cpu / (n * batch) * 1e6}


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--durability", choices=["write", "fsync"], action="append",
                    help="only this durability (repeatable; default both)")
    ap.add_argument("--batched-only", action="store_true", help="skip the single-event case")
    ap.add_argument("--build", action="append", type=Path, default=[],
                    help="also run the server from this checkout (e.g. `git worktree add /tmp/old main`), "
                    "alternating with this one, case by case (repeatable)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of every build")
    args = ap.parse_args()
    print(f"receiver benchmark: {args.clients} keep-alive clients, {args.seconds:g} s per case, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    builds: list[Path | None] = [None, *args.build]
    head = (f"{'build':<14} {'durability':<10} {'events/req':>10} {'req/s':>9} {'events/s':>10} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'srv CPU':>7} {'us/event':>8} {'RSS MB':>6}")
    print(head)
    for _ in range(args.rounds):
        for durability in args.durability or ("write", "fsync"):
            for batch in (args.batch,) if args.batched_only else (1, args.batch):
                for build in builds:
                    r = run_case(durability, batch, args.clients, args.seconds, build)
                    name = "this" if build is None else build.name
                    print(f"{name:<14} {durability:<10} {batch:>10} {r['requests/s']:>9,.0f} {r['events/s']:>10,.0f} "
                          f"{r['p50 ms']:>7.2f} {r['p99 ms']:>7.2f} {r['server CPU s/s']:>7.2f} "
                          f"{r['server CPU us/event']:>8.2f} {r['server peak RSS MB']:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
