"""Idle cost: the forwarder following N quiet files; CPU % of one core over a window.

    python bench/idle.py [--files 100] [--seconds 30] [-- extra run flags, e.g. --poll]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from _common import ROOT, FakeStatsig, forwarder_cmd, hardware


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()

    fake = FakeStatsig().start()
    work = Path(tempfile.mkdtemp(prefix="fwd-idle-"))
    for i in range(args.files):
        (work / f"app-{i}.ndjson").write_bytes(b'{"event_name": "hello", "metadata": {"file": %d}}\n' % i)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY="secret-bench-idle", FORWARDER_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*forwarder_cmd(), "run", str(work / "*.ndjson"), "--state-dir", str(work / "state"),
                             "--statsig-api", fake.url, *args.extra], env=env, stderr=subprocess.DEVNULL)
    fake.wait_for(args.files, timeout=60)
    time.sleep(3)  # let start-up work (SDK check, first checkpoint) finish
    before = cpu_seconds(proc.pid)
    time.sleep(args.seconds)
    used = cpu_seconds(proc.pid) - before
    rss = rss_mb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    fake.stop()
    print(f"hardware: {hardware()}")
    print(f"{args.files} quiet files for {args.seconds:.0f} s {' '.join(args.extra)}: CPU {used:.2f} s = "
          f"{used / args.seconds * 100:.2f}% of one core, RSS {rss:.1f} MB (target < 1%)")


if __name__ == "__main__":
    main()
