"""What checkpointing costs: `run --once` over a pre-written N-line file, and the write itself.

The checkpoint reaches the kernel after every acknowledgement (write + rename, no fsync) and
is fsync'd every checkpoint_fsync_interval (issue 21). For each run this prints CPU seconds
(the process's own, from wait4), wall time, events/s, checkpoint writes and fsyncs (and per
second). With `--baseline DIR` (another checkout, e.g. `git worktree add DIR main`) each round
runs that build, then this one, alternating in one sitting (the machine may be shared: compare
runs next to each other), and a summary gives the median CPU of each and the difference.

`--micro` times the two ways to get the view into the kernel after an acknowledgement, on the
file system of the temp directory (the state directory's here): rewriting the checkpoint file
(write a temp file, rename it over) and appending it as one line to a journal (what the
forwarder does); and, for scale, a durable write (fsync, rename, fsync of the directory).

`--ack-path` times the checkpoint work per acknowledged batch of each build in one thread, free
of the noise of a full run: what the change adds per million events, whatever the machine does.

    python bench/checkpoints.py [--events 1000000] [--repeat 3] [--baseline DIR] [--micro] [--ack-path]
                                [-- extra flags]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from _common import RemoteFake, events_file, forwarder_cmd, hardware

SECRET = "secret-bench-0000000000"


def run_once(path: Path, fake: RemoteFake, root: Path, extra: list[str]) -> tuple[float, float, dict[str, int]]:
    """(wall s, CPU s, the `stopped` log record) of one run --once of the build at `root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json", PYTHONPATH=str(root))
    state = Path(tempfile.mkdtemp(prefix="fwd-bench-"))
    log = state.parent / (state.name + ".log")
    started = time.perf_counter()
    with open(log, "wb") as err:
        # cwd: `-m` imports the package from the working directory before PYTHONPATH
        proc = subprocess.Popen([*forwarder_cmd(), "run", "--once", str(path), "--state-dir", str(state),
                                 "--statsig-api", fake.url, *extra], env=env, cwd=root, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
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


def micro(directory: Path, n: int) -> None:
    """Microseconds (CPU and wall) per position put into the kernel, both ways, and durably.
    Each way serializes the view as the forwarder does (one tracked file)."""
    view = {"version": 1, "serial": 1, "boot_id": "b" * 36, "written": time.time(),
            "in_flight": {"batches": 2, "events": 1000, "sent": {"crc:0123456789abcdef": 123556789}},
            "files": {"crc:0123456789abcdef": {"offset": 123456789, "path": "/var/log/app/events.ndjson",
                                               "dev": 64769, "ino": 1234567, "updated": time.time()}}}
    target, tmp, journal = directory / "checkpoints.json", directory / "checkpoints.json.tmp", directory / "journal"

    def rewrite(i: int) -> None:
        view["serial"] = i
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.write(fd, orjson.dumps(view))
        os.close(fd)
        os.replace(tmp, target)

    jfd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def append(i: int) -> None:
        view["serial"] = i
        os.write(jfd, orjson.dumps(view) + b"\n")

    def durable(i: int) -> None:
        view["serial"] = i
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.write(fd, orjson.dumps(view, option=orjson.OPT_INDENT_2))
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, target)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)

    for name, op, count in (("file rewrite + rename (tried)", rewrite, n), ("journal append (kept)", append, n),
                            ("durable write (2 fsyncs)", durable, max(1, n // 50))):
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            op(i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"micro {name:<29}: {cpu / count * 1e6:8.1f} us CPU, {wall / count * 1e6:8.1f} us wall per write "
              f"({count:,} writes, {len(orjson.dumps(view))} byte view)", flush=True)
    os.close(jfd)


ACK_PATH = """
import inspect, sys, tempfile, threading, time
from pathlib import Path
from forwarder.delivery.acker import Acker
from forwarder.model import Batch
from forwarder.state.checkpoints import Checkpoints
n, per_sync = int(sys.argv[1]), int(sys.argv[2])
cps = Checkpoints(Path(tempfile.mkdtemp(prefix="fwd-bench-")))
acker = Acker(cps, lambda key: ("/var/log/app/events.ndjson", 64769, 1234567))
never = threading.Event()
new = "batch" in inspect.signature(acker.wait_turn).parameters
events = [{"eventName": "e"}] * 500
started = time.process_time()
for i in range(n):
    batch = Batch(i, events=events, positions={"crc:0123456789abcdef": (i + 1) * 100_000})
    acker.begin(batch)
    acker.wait_turn(batch if new else batch.seq, 2, never)  # new: the journal write happens here
    acker.done(batch)
    if i % per_sync == 0:
        cps.flush()  # the durable write, as often as at full speed
print((time.process_time() - started) / n * 1e6)
"""


def ack_path(builds: list[tuple[str, Path]], n: int, repeat: int) -> None:
    """CPU microseconds per acknowledged batch spent on checkpointing, in one thread (no GIL
    hand-offs, no other work): acker, view, journal write (new) and the durable writes at the
    rate each build makes them at full speed (old: every 0.1 s, about every 25th batch; new: every
    second, about every 200th)."""
    for i in range(repeat):
        for name, root in builds:
            env = {**os.environ, "PYTHONPATH": str(root)}
            per_sync = "25" if name == "old" else "200"
            out = subprocess.run([sys.executable, "-c", ACK_PATH, str(n), per_sync], env=env, cwd=root,
                                 capture_output=True, text=True, check=True).stdout
            us = float(out)
            print(f"ack path round {i + 1} {name}: {us:6.1f} us CPU per batch = {us * 2000 / 1e6:.3f} CPU s per "
                  f"million events at batch_size 500 (durable write every {per_sync} batches)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to alternate with, run first")
    parser.add_argument("--micro", type=int, nargs="?", const=20_000, default=0, metavar="N",
                        help="time N checkpoint writes each way (default 20,000), then exit")
    parser.add_argument("--ack-path", type=int, nargs="?", const=20_000, default=0, metavar="N",
                        help="time N acknowledged batches through the checkpoint path of each build, then exit")
    parser.add_argument("extra", nargs="*", help="extra flags for `statsig-forwarder run`")
    args = parser.parse_args()
    print(f"hardware: {hardware()}; load average {os.getloadavg()[0]:.1f} (a shared machine: compare neighbours)")
    if args.micro:
        with tempfile.TemporaryDirectory(prefix="fwd-bench-") as d:
            micro(Path(d), args.micro)
        return
    builds = [("new", Path(__file__).resolve().parent.parent)]
    if args.baseline is not None:
        builds.insert(0, ("old", args.baseline.resolve()))
    if args.ack_path:
        ack_path(builds, args.ack_path, args.repeat)
        return
    path = events_file(args.events)
    fake = RemoteFake()
    print(f"input: {path} ({args.events:,} lines)")
    cpu: dict[str, list[float]] = {name: [] for name, _ in builds}
    for i in range(args.repeat):
        for name, root in builds:
            wall, used, s = run_once(path, fake, root, args.extra)
            writes, syncs = int(s.get("checkpoint_writes", 0)), int(s.get("checkpoint_syncs", 0))
            cpu[name].append(used)
            print(f"round {i + 1} {name}: {args.events / wall:>9,.0f} events/s  wall {wall:6.2f} s  CPU {used:6.2f} s  "
                  f"checkpoint writes {writes:>6,} ({writes / wall:6.1f}/s)  fsyncs {syncs or '-':>5} "
                  f"delivered {int(s['events_delivered']):,}  load {os.getloadavg()[0]:.1f}", flush=True)
    for name, values in cpu.items():
        print(f"{name}: CPU s median {statistics.median(values):.2f}, min {min(values):.2f}, "
              f"runs {' '.join(f'{v:.2f}' for v in values)}")
    if args.baseline is not None:
        old, new = statistics.median(cpu["old"]), statistics.median(cpu["new"])
        pairs = [n / o - 1 for o, n in zip(cpu["old"], cpu["new"], strict=True)]
        print(f"new vs old: median CPU {100 * (new / old - 1):+.1f}%; per alternating pair "
              f"{' '.join(f'{100 * p:+.1f}%' for p in pairs)}")
    fake.stop()


if __name__ == "__main__":
    main()
