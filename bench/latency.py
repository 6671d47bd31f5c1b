"""Latency: a line appended to a quiet file, until the fake Statsig accepted it.

Appends N events spaced `--gap` seconds apart to a file the forwarder follows and prints
p50/p90/p99/max of (accepted at the fake - written to the file). The batch closes on
flush_interval after its first event, so expect roughly flush_interval plus a little.

    python bench/latency.py [--events 1000] [--gap 0.01] [--flush-interval 1.0]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import orjson
from _common import ROOT, FakeStatsig, forwarder_cmd, hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    args = parser.parse_args()

    fake = FakeStatsig().start()
    work = Path(tempfile.mkdtemp(prefix="fwd-latency-"))
    log = work / "events.ndjson"
    log.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY="secret-bench-latency", FORWARDER_LOG_FORMAT="json",
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*forwarder_cmd(), "run", str(log), "--state-dir", str(work / "state"),
                             "--statsig-api", fake.url, "--flush-interval", str(args.flush_interval)],
                            env=env, stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    written: dict[int, float] = {}
    with open(log, "ab", buffering=0) as f:
        for i in range(args.events):
            written[i] = time.time()
            f.write(orjson.dumps({"event_name": "latency", "user_id": "u", "metadata": {"seq": i}}) + b"\n")
            time.sleep(args.gap)
    fake.wait_for(args.events, timeout=30)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    latencies = sorted(
        request.received - written[e["metadata"]["seq"]]
        for request in fake.accepted_requests()
        for e in request.events
    )
    fake.stop()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    print(f"hardware: {hardware()}")
    print(f"{len(latencies)} events appended {args.gap * 1000:.0f} ms apart, flush_interval {args.flush_interval} s")
    print(f"latency ms: p50 {pct(50):.0f}  p90 {pct(90):.0f}  p99 {pct(99):.0f}  max {latencies[-1] * 1000:.0f}"
          f"  (target p99 <= flush_interval + 100 = {args.flush_interval * 1000 + 100:.0f})")


if __name__ == "__main__":
    main()
