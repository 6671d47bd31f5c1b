#!/usr/bin/env python3
"""The cost of one `forwarder.client.EventLog.log_event` call, single thread, on a local file.

Prints per-call CPU microseconds (process CPU time / calls; wall in brackets), median and p99
of single calls, for: the seed's call (user id, value, small metadata), the same with a
statsig-python-core StatsigUser, a 100-event `log_events` batch (per event), and the parts:
encoding + validation alone (`encode_event`), and the write alone (stat + write of a ready line);
for reference, what a team would write without it: `json.dumps` + `WatchedFileHandler.emit`
(no validation, and a line it cannot write is printed to stderr, not refused).
Each figure is the best of --rounds rounds. Also the time to import `forwarder.client` in a
fresh interpreter, and which heavy modules that import loaded.

    python bench/client.py [--calls 200000] [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from forwarder.client import EventLog, encode_event

HEAVY = ("pydantic", "fastapi", "uvicorn", "watchdog", "statsig_python_core")


def measure(fn: Callable[[int], object], calls: int, rounds: int) -> tuple[float, float, float, float]:
    """(CPU us per call, wall us per call, median us, p99 us), best round by CPU."""
    best: tuple[float, float, float, float] | None = None
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(calls):
            fn(i)
        cpu = (time.process_time() - c0) / calls * 1e6
        wall = (time.perf_counter() - w0) / calls * 1e6
        samples = []
        clock = time.perf_counter_ns
        for i in range(min(calls, 20000)):
            t = clock()
            fn(i)
            samples.append(clock() - t)
        samples.sort()
        row = (cpu, wall, samples[len(samples) // 2] / 1000, samples[len(samples) * 99 // 100] / 1000)
        if best is None or row[0] < best[0]:
            best = row
    assert best is not None
    return best


def import_cost() -> tuple[float, list[str]]:
    code = ("import sys, time; t = time.perf_counter(); import forwarder.client; "
            "d = time.perf_counter() - t; print(d); print(' '.join(m for m in " + repr(HEAVY)
            + " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.splitlines()
    return float(out[0]) * 1000, out[1].split() if len(out) > 1 else []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the log (default: a temp dir)")
    args = parser.parse_args()
    from statsig_python_core import StatsigUser

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = Path(d) / "events.ndjson"
        events = EventLog(path)
        meta = {"model": "gpt-4o", "tokens": 123, "provider": "openai"}
        user = StatsigUser("user-123", email="a@example.com", custom={"plan": "pro"}, custom_ids={"org": "o1"})
        line = encode_event("user-123", "chat_message_sent", "1", meta)
        watched = logging.handlers.WatchedFileHandler(path)  # what a team would write without the client

        def record(i: int) -> logging.LogRecord:
            line = json.dumps({"event_name": "chat_message_sent", "user_id": "user-123", "value": "1",
                               "metadata": meta, "time": int(time.time() * 1000)})
            return logging.LogRecord("events", logging.INFO, __file__, 0, line, None, None)

        batch = [{"event_name": "chat_message_sent", "user_id": f"u{i}", "value": "1", "metadata": meta}
                 for i in range(100)]
        rows = {
            "log_event(user_id, name, value, metadata)":
                (lambda i: events.log_event("user-123", "chat_message_sent", "1", meta), args.calls),
            "log_event(StatsigUser, ...)":
                (lambda i: events.log_event(user, "chat_message_sent", "1", meta), args.calls),
            "encode_event only (encode + validate)":
                (lambda i: encode_event("user-123", "chat_message_sent", "1", meta), args.calls),
            "EventLog.write only (stat + write)": (lambda i: events.write(line), args.calls),
            "log_events, 100-event batch (per event)": (lambda i: events.log_events(batch), args.calls // 100),
            "reference: json.dumps + WatchedFileHandler": (lambda i: watched.emit(record(i)), args.calls),
        }
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, log on {path.parent} "
              f"({args.calls} calls x {args.rounds} rounds, best round)")
        print(f"{'':44} {'CPU us/call':>12} {'wall us/call':>13} {'p50 us':>8} {'p99 us':>8}")
        for name, (fn, calls) in rows.items():
            cpu, wall, p50, p99 = measure(fn, calls, args.rounds)
            per = 100 if "batch" in name else 1
            print(f"{name:44} {cpu / per:12.2f} {wall / per:13.2f} {p50 / per:8.2f} {p99 / per:8.2f}")
            path.unlink(missing_ok=True)
        events.close()
        watched.close()
    ms, heavy = import_cost()
    print(f"import forwarder.client: {ms:.1f} ms in a fresh interpreter; heavy modules loaded: "
          f"{', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
