#!/usr/bin/env python3
"""The Statsig SDK relay: how fast SDK-sized batches are appended, and what an SDK loses without it.

Part 1 starts the real CLI (`receive`, durability fsync) and posts SDK-shaped batches to
`/v1/log_event` (500 and 2,000 events, gzip and zstd, the headers a core SDK sends) from C
keep-alive connections, one request in flight each (bench/receiver.py's client). Prints
events/s, p50/p99 answer latency and the server's CPU, and checks that the log holds
exactly the accepted events.

Part 2 (--sdk-calls N) makes N fast `log_event` calls with the real statsig-python-core
(tests/sdk/python_core.py, no pause between calls), once with its event URL at a local fake
Statsig and once at the sidecar (`run --listen`, forwarding to the same kind of fake; or
`--sdk-way receive`: the relay alone; `--sdk-way split`: `receive` plus a separate `run` tailing
its log), and counts what arrives at the fake each way.

With --build DIR (a `git worktree` of another commit) every case also runs that checkout's
server, alternating case by case, --rounds times: old vs new in one sitting.

    python bench/relay.py [--clients 4] [--seconds 5] [--batch 2000] [--encoding gzip] [--rounds 3]
                          [--build ../old] [--sdk-calls 1000000 [--sdk-way run] [--sdk-way receive]]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import zstandard
from _common import ROOT, RemoteFake, hardware
from receiver import _peak_rss_kb, cpu_seconds, drive, percentile, start_receiver

KEY = "secret-relay-bench-key-0123456789"


def sdk_event(i: int) -> dict[str, object]:
    """Half exposures with a secondary exposure, half custom events, as statsig-python-core sends them."""
    user = {"userID": f"u{i % 50000}", "email": f"u{i % 50000}@example.com", "custom": {"plan": "pro"},
            "statsigEnvironment": {"tier": "production"}}
    if i % 2:
        return {"eventName": "statsig::gate_exposure", "value": None, "user": user, "time": 1795615408601 + i,
                "metadata": {"gate": "checkout_v2", "gateValue": "true", "ruleID": "5ZtvHO3b", "lcut": "1795615400000",
                             "reason": "Network:Recognized", "receivedAt": "1795615408600"},
                "statsigMetadata": {}, "secondaryExposures": [{"gate": "holdout", "gateValue": "false",
                                                               "ruleID": "disabled"}]}
    return {"eventName": "add_to_cart", "value": float(i % 1000), "user": user, "time": 1795615408601 + i,
            "metadata": {"sku": f"SKU-{i % 999}", "path": f"/p/{i % 999}"}, "statsigMetadata": None,
            "secondaryExposures": None}


def sdk_request(batch: list[dict[str, object]], encoding: str) -> bytes:
    raw = orjson.dumps({"events": batch, "statsigMetadata": {"sdkType": "statsig-server-core-python",
                                                             "sdkVersion": "0.24.2"}})
    body = gzip.compress(raw, 6) if encoding == "gzip" else zstandard.ZstdCompressor(level=3).compress(raw)
    head = (f"POST /v1/log_event HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Encoding: {encoding}\r\nSTATSIG-API-KEY: {KEY}\r\n"
            f"STATSIG-SDK-TYPE: statsig-server-core-python\r\nSTATSIG-SDK-VERSION: 0.24.2\r\n"
            f"STATSIG-CLIENT-TIME: {int(time.time() * 1000)}\r\nstatsig-event-count: {len(batch)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def parse_rate(batch: int) -> float:
    """Events/s of `orjson.loads` on the same (uncompressed) bodies, in CPU time of this process: the yardstick."""
    bodies = [orjson.dumps({"events": [sdk_event(i * batch + j) for j in range(batch)],
                            "statsigMetadata": {"sdkType": "statsig-server-core-python"}}) for i in range(16)]
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for b in bodies:
            orjson.loads(b)
        best = min(best, time.process_time() - t0)
    return len(bodies) * batch / best


def run_case(batch: int, encoding: str, clients: int, seconds: float, build: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "events.ndjson"
        proc, port = start_receiver(log, "fsync", {"STATSIG_SERVER_SECRET_KEY": KEY, "FORWARDER_STATE_DIR": tmp},
                                    build=build)
        try:
            reqs = [sdk_request([sdk_event(i * batch + j) for j in range(batch)], encoding) for i in range(16)]
            asyncio.run(drive(port, reqs, clients, min(1.0, seconds)))  # warm-up
            cpu0 = cpu_seconds(proc.pid)
            size0 = log.stat().st_size
            n, elapsed, lat = asyncio.run(drive(port, reqs, clients, seconds))
            cpu = cpu_seconds(proc.pid) - cpu0
            lines = log.read_bytes()[size0:].count(b"\n")
            rss_kb = _peak_rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
        assert lines == n * batch, f"log holds {lines} lines, expected {n * batch}"
    return {"events/s": n * batch / elapsed, "requests/s": n / elapsed, "p50 ms": percentile(lat, 0.5) * 1000,
            "p99 ms": percentile(lat, 0.99) * 1000, "cpu": cpu / elapsed, "rss": rss_kb / 1024,
            "body KB": len(reqs[0]) / 1024, "us/event": cpu / (n * batch) * 1e6}


def sdk_flood(calls: int, way: str, options: dict[str, object], linger: float,
              build: Path | None = None) -> tuple[int, int | None, float, float | None]:
    """(events arrived, lines the relay appended, seconds the SDK took, the sidecar's CPU s) for `calls`
    log_event calls; `way`: "direct" (event URL at the fake), "run" (`run --listen` forwarding to the
    fake), "receive" (the relay alone: what it appended counts as arrived), "split" (`receive`, and a
    separate `run` process forwarding what it appends)."""
    fake = RemoteFake()
    sidecar = tailer = None
    try:
        url = f"{fake.url}/log_event"
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "events.ndjson"
            if way == "run":
                env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
                env.update(STATSIG_SERVER_SECRET_KEY=KEY, FORWARDER_LOG_FORMAT="json")
                sidecar = subprocess.Popen(
                    [sys.executable, "-m", "forwarder", "run", str(log), "--listen", "127.0.0.1:0",
                     "--statsig-api", fake.url, "--state-dir", f"{tmp}/state", "--batch-size", "2000"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=build)
                assert sidecar.stderr is not None
                for line in sidecar.stderr:
                    doc = orjson.loads(line)
                    if doc.get("msg") == "receiver listening":
                        url = f"http://{doc['address']}/v1/log_event"
                        break
            elif way in ("receive", "split"):
                sidecar, port = start_receiver(log, "fsync", {"STATSIG_SERVER_SECRET_KEY": KEY,
                                                              "FORWARDER_STATE_DIR": tmp}, build=build)
                url = f"http://127.0.0.1:{port}/v1/log_event"
                if way == "split":  # a second process tails what `receive` appends
                    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
                    env.update(STATSIG_SERVER_SECRET_KEY=KEY, FORWARDER_LOG_FORMAT="json")
                    tailer = subprocess.Popen(
                        [sys.executable, "-m", "forwarder", "run", str(log), "--statsig-api", fake.url,
                         "--state-dir", f"{tmp}/state-run", "--batch-size", "2000"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=build)
            cpu0 = cpu_seconds(sidecar.pid) if sidecar is not None else 0.0
            spec = {"key": KEY, "log_event_url": url, "specs_url": f"{fake.url}/download_config_specs",
                    "stream": {"count": calls, "per_second": 0}, "options": options,
                    "linger_s": linger}
            started = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "tests" / "sdk" / "python_core.py"), json.dumps(spec)],
                           check=True, stdout=subprocess.DEVNULL)
            sdk_done = time.perf_counter() - started
            appended = log.read_bytes().count(b"\n") if sidecar is not None else None
            last, still = -1, 0
            while still < 6 or (appended is not None and last < appended and still < 60):  # settled
                time.sleep(0.5)
                count = log.read_bytes().count(b"\n") if way == "receive" else fake.event_count
                still = still + 1 if count == last else 0
                last = count
            cpu = cpu_seconds(sidecar.pid) - cpu0 if sidecar is not None else None
            return last, appended, sdk_done, cpu
    finally:
        for proc in (sidecar, tailer):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        fake.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4, help="concurrent SDK connections")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sdk-calls", type=int, default=0, help="part 2: this many log_event calls (0: skip)")
    ap.add_argument("--only-sdk", action="store_true", help="skip part 1")
    ap.add_argument("--sdk-linger", type=float, default=0.0,
                    help="part 2: seconds the app waits after its last call before shutdown()")
    ap.add_argument("--sdk-options", type=json.loads, default={},
                    help='part 2: StatsigOptions for the SDK, as JSON ({"event_logging_max_queue_size": 5000})')
    ap.add_argument("--batch", type=int, action="append", help="part 1: events per request (repeatable; "
                    "default 500 and 2000)")
    ap.add_argument("--encoding", choices=["gzip", "zstd"], action="append",
                    help="part 1: body encoding (repeatable; default both)")
    ap.add_argument("--build", action="append", type=Path, default=[],
                    help="also run the server from this checkout (e.g. `git worktree add /tmp/old main`), "
                    "alternating with this one, case by case (repeatable)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of every build")
    ap.add_argument("--sdk-way", choices=["run", "receive", "split"], action="append",
                    help="part 2: the SDK's event URL at `run --listen` (default), at `receive` alone, or at "
                    "`receive` with a separate `run` tailing its log (split) (repeatable); it is always also "
                    "run straight at the fake")
    args = ap.parse_args()
    args.sdk_way = args.sdk_way or ["run"]
    builds: list[Path | None] = [None, *args.build]
    print(f"relay benchmark: {hardware()}; {args.clients} keep-alive clients, {args.seconds:g} s per case, "
          "durability fsync; srv CPU = the server's CPU s per s, us/event = its CPU per event")
    batches = () if args.only_sdk else args.batch or (500, 2000)
    rates = {batch: parse_rate(batch) for batch in batches}
    for batch, rate in rates.items():
        print(f"yardstick: orjson.loads of the same {batch}-event bodies, {rate:,.0f} events/s (CPU time)")
    print(f"{'build':<10} {'events/req':>10} {'encoding':>8} {'body KB':>8} {'req/s':>7} {'events/s':>10} "
          f"{'x parse':>7} {'p50 ms':>7} {'p99 ms':>7} {'srv CPU':>7} {'us/event':>8} {'RSS MB':>6}")
    for _ in range(args.rounds):
        for batch in batches:
            for encoding in args.encoding or ("gzip", "zstd"):
                for build in builds:
                    r = run_case(batch, encoding, args.clients, args.seconds, build)
                    name = "this" if build is None else build.name
                    print(f"{name:<10} {batch:>10} {encoding:>8} {r['body KB']:>8.0f} {r['requests/s']:>7,.0f} "
                          f"{r['events/s']:>10,.0f} {r['events/s'] / rates[batch]:>7.3f} {r['p50 ms']:>7.1f} "
                          f"{r['p99 ms']:>7.1f} {r['cpu']:>7.2f} {r['us/event']:>8.2f} {r['rss']:>6.0f}", flush=True)
    if args.sdk_calls:
        print(f"\nstatsig-python-core, {args.sdk_calls:,} log_event calls without pause, options "
              f"{args.sdk_options or 'default'}, {args.sdk_linger:g} s before shutdown() "
              "(events arrived include the SDK's own diagnostics events; CPU: the sidecar's):")
        for _ in range(args.rounds):
            ways = [("direct", None), *((way, b) for way in args.sdk_way for b in builds)]
            for way, build in ways:
                arrived, appended, secs, cpu = sdk_flood(args.sdk_calls, way, args.sdk_options, args.sdk_linger,
                                                         build)
                name = {"direct": "directly to the fake", "run": "through run --listen",
                        "receive": "into receive (appended)", "split": "through receive + run (2 processes)"}[way]
                name += "" if build is None else f" ({build.name})"
                via = f", {appended:,} appended by the relay" if appended is not None and way == "run" else ""
                used = f"; sidecar CPU {cpu:.1f} s" if cpu is not None else ""
                print(f"  {name:<40} {arrived:>10,} arrived ({arrived / args.sdk_calls:.1%}){via}; the SDK took "
                      f"{secs:.0f} s{used}", flush=True)


if __name__ == "__main__":
    main()
