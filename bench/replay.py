#!/usr/bin/env python3
"""Replay a large .gz file to a local fake Statsig; print events/s, CPU s and peak RSS
beside `zcat | wc -l` on the same file, timed in the same run.

    .venv/bin/python bench/replay.py [--lines 2000000] [--workdir DIR]

The fake Statsig runs in this process (keep_events=False: it decodes and counts every
event but keeps none); the forwarder is the real CLI in a subprocess, measured alone
(wall time, user+system CPU and peak RSS of that process from wait4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_statsig import FakeStatsig  # noqa: E402

GEN = ROOT / "bench" / "gen_events.py"


def timed(cmd: list[str], env: dict[str, str] | None = None,
          shell: bool = False) -> tuple[float, float, int, bytes]:
    """(wall s, CPU s, peak RSS KiB, stdout) of one child process (and, for a shell, its pipeline)."""
    start = time.perf_counter()
    before = os.times()
    if shell:
        out = subprocess.run(cmd[0], shell=True, check=True, capture_output=True).stdout
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        return time.perf_counter() - start, cpu, 0, out
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--workdir", type=Path, help="keep the generated files here (default: a temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    plain = work / f"events-{args.lines}.ndjson"
    gz = plain.with_suffix(".ndjson.gz")
    if not gz.exists():
        subprocess.run([sys.executable, str(GEN), str(args.lines), str(plain)], check=True)
        subprocess.run(f"gzip -c {plain} > {gz}", shell=True, check=True)
        plain.unlink()
    print(f"input: {gz} ({args.lines} lines, {gz.stat().st_size / 1e6:.1f} MB compressed)")

    wall, cpu, _, out = timed([f"zcat {gz} | wc -l"], shell=True)
    assert int(out.split()[0]) == args.lines
    print(f"zcat | wc -l              {wall:6.2f} s wall  {cpu:6.2f} CPU s  "
          f"{args.lines / wall:>10,.0f} lines/s")

    fake = FakeStatsig(keep_events=False).start()
    state = work / f"state-{time.time_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY="secret-bench", FORWARDER_LOG_FORMAT="json")
    cmd = [sys.executable, "-m", "forwarder", "replay", str(gz), "--statsig-api", fake.url,
           "--state-dir", str(state), "--progress-interval", "60"]
    try:
        wall, cpu, rss, _ = timed(cmd, env=env)
    finally:
        fake.stop()
    assert fake.event_count == args.lines, f"fake received {fake.event_count} of {args.lines}"
    print(f"statsig-forwarder replay  {wall:6.2f} s wall  {cpu:6.2f} CPU s  "
          f"{args.lines / wall:>10,.0f} events/s  peak RSS {rss / 1024:.0f} MB"
          f"  (all {fake.event_count:,} received by the fake)")
    # The same replay printing to /dev/null instead of posting: the forwarder alone, no HTTP, no fake.
    wall, cpu, rss, _ = timed([*cmd[:-4], "--state-dir", f"{state}-dry", "--dry-run"], env=env)
    print(f"  same, --dry-run >/dev/null {wall:6.2f} s wall  {cpu:6.2f} CPU s  "
          f"{args.lines / wall:>10,.0f} events/s  peak RSS {rss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
