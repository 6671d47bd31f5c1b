"""Checkpoint writes at full speed: `run --once` over a pre-written N-line file, per floor.

Group commit writes a checkpoint as soon as the delivered position moves, one write at a
time; `checkpoint_interval` is a floor between writes. For each floor this prints the
checkpoint writes per second, events/s and CPU seconds, in alternating runs (the machine
may be shared: compare runs next to each other).

    python bench/checkpoints.py [--events 1000000] [--repeat 2] [--floors 0,1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson
from _common import RemoteFake, events_file, forwarder_cmd, hardware

SECRET = "secret-bench-0000000000"


def run_once(path: Path, fake: RemoteFake, floor: str, env: dict[str, str]) -> tuple[float, float, dict[str, int]]:
    """(wall s, CPU s, the `stopped` log record) of one run --once."""
    state = Path(tempfile.mkdtemp(prefix="fwd-bench-"))
    log = state.parent / (state.name + ".log")
    started = time.perf_counter()
    with open(log, "wb") as err:
        pid = os.posix_spawn(forwarder_cmd()[0], [*forwarder_cmd(), "run", "--once", str(path), "--state-dir",
                             str(state), "--statsig-api", fake.url, "--checkpoint-interval", floor], env,
                             file_actions=[(os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    stopped: dict[str, int] = {}
    for line in log.read_bytes().splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if rec.get("msg") == "stopped":
            stopped = rec
    shutil.rmtree(state, ignore_errors=True)
    log.unlink()
    if os.waitstatus_to_exitcode(status) != 0 or not stopped:
        sys.exit(f"run failed (status {status})")
    return wall, usage.ru_utime + usage.ru_stime, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--floors", default="0,1", help="checkpoint_interval values, alternated")
    args = parser.parse_args()
    path = events_file(args.events)
    fake = RemoteFake()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    print(f"hardware: {hardware()}; load average {os.getloadavg()[0]:.1f}")
    print(f"input: {path} ({args.events:,} lines)")
    for i in range(args.repeat):
        for floor in args.floors.split(","):
            wall, cpu, s = run_once(path, fake, floor, env)
            writes = int(s.get("checkpoint_writes", 0))
            print(f"run {i + 1} checkpoint_interval={floor:>4}: {args.events / wall:>9,.0f} events/s  "
                  f"wall {wall:6.2f} s  CPU {cpu:6.2f} s  checkpoint writes {writes:>6,} ({writes / wall:6.1f}/s)  "
                  f"delivered {int(s['events_delivered']):,}")
    fake.stop()


if __name__ == "__main__":
    main()
