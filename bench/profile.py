"""Where the CPU goes: py-spy over the whole process (all threads, native frames) during `run --once`.

Runs the real CLI on an N-line file against the fake Statsig (its own process) under
`py-spy record --threads --native -f raw`, drops the samples of threads that are blocked
(lock, condition, GIL, socket poll: py-spy's idle filter misses these with --native), and
buckets the rest by pipeline step, innermost step first. Needs py-spy (`pip install py-spy`)
and ptrace rights over the child (root, or kernel.yama.ptrace_scope=0).

    python bench/profile.py --native [--events 1000000] [--rate 200] [--raw OUT.txt] [-- extra forwarder flags]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, RemoteFake, events_file, forwarder_cmd

SECRET = "secret-bench-0000000000"

# A sample whose native frames (below its innermost Python frame) hold one of these is a
# thread waiting, not running.
_WAITING = ("PyThread_acquire_lock_timed", "pthread_cond_timedwait", "pthread_cond_wait", "take_gil",
            "internal_select", "poll (libc", "epoll_wait", "select (libc", "sem_timedwait", "sem_wait",
            "__futex", "nanosleep", "accept (libc")
_PY_WAITS = ("Thread._wait_for_tstate_lock", "Condition.wait", "Event.wait", "SocketIO.readinto",
             "time.sleep")

# (step, frame pattern): the innermost frame matching any pattern names the step.
_STEPS: list[tuple[str, str]] = [
    ("start-up", r"_find_and_load|<module> \(|statsig|startup\.py|cli\.py|settings\.py"),
    ("compress", r"gzip\.py|zlib|deflate|isal|igzip"),
    ("encode", r"_dumps \(forwarder|StatsigSink\.encode|dumps"),
    ("HTTP", r"http/client\.py|socket\.py|StatsigSink\.send|classify \(|sock_|send \(libc|recv"),
    ("acknowledge + checkpoint", r"acker\.py|state/checkpoints\.py|state/writer\.py|deadletter\.py"),
    ("metrics/stats", r"prometheus_client|stats\.py"),
    ("batch + hand-off", r"queue\.py|batcher\.py|Reader\._put|Reader\._ship|senders\.py|threading\.py"),
    ("decode (msgspec, one call per chunk)", r"ChunkDecoder\.decode \(|decode_lines"),
    ("validate + map", r"decode/event\.py|decode/codec\.py|pydantic"),
    ("decode (orjson.loads, per line)", r"@LOADS@"),
    ("read + split", r"source/|Reader\._chunk|Reader\._loop|watchdog"),
    ("GC", r"gc_collect|collect_with_callback|gcmodule"),
]


def classify(frames: list[str], loads_frames: tuple[str, ...]) -> str | None:
    """The step of one sample (innermost first), or None for a waiting thread."""
    py = [i for i, f in enumerate(frames) if ".py:" in f or "(<frozen" in f]
    native_tail = frames[py[-1] + 1:] if py else frames[1:]
    if any(w in f for f in native_tail for w in _WAITING):
        return None
    if py and any(w in frames[py[-1]] for w in _PY_WAITS) and not native_tail:
        return None
    if "MainThread" in frames[0] and not any("Forwarder.run" in f for f in frames):
        return "start-up"
    for frame in reversed(frames[1:]):
        if frame in loads_frames:
            return "decode (orjson.loads, per line)"
        for step, pattern in _COMPILED:
            if pattern.search(frame):
                return step
    return "other (main loop, interpreter)"


_COMPILED = [(step, re.compile(p)) for step, p in _STEPS if p != "@LOADS@"]


def loads_lines(reader: Path) -> tuple[str, ...]:
    """py-spy frame names of the reader's `orjson.loads` call sites."""
    return tuple(f"Reader._chunk (forwarder/decode/reader.py:{n})"
                 for n, text in enumerate(reader.read_text().splitlines(), 1)
                 if re.search(r"\bloads\(|\.decode\(", text))


def shares(raw: Path, reader: Path, thread_cpu: dict[int, float]) -> collections.Counter[str]:
    """CPU seconds per step: each thread's CPU time split in the proportions of its running samples.

    Sample counts alone overstate threads that are runnable but not running (waiting for
    the GIL or for a core), so they only apportion each thread's measured CPU time.
    """
    per_thread: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    loads_frames = loads_lines(reader)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        step = classify(frames, loads_frames)
        tid = re.match(r"thread \((?:0x)?(\w+)\)", frames[0])
        if step is not None and tid is not None:
            per_thread[int(tid.group(1), 16 if "0x" in frames[0] else 10)][step] += int(count)
    cpu: collections.Counter[str] = collections.Counter()
    for tid, seconds in thread_cpu.items():
        steps = per_thread.get(tid)
        if not steps:
            cpu["other (unsampled threads)"] += seconds
            continue
        total = sum(steps.values())
        for step, n in steps.items():
            cpu[step] += seconds * n / total
    return cpu


def cpu_of(pid: int) -> tuple[float, dict[int, float]]:
    """(the process's CPU s so far, CPU s of each live thread) from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(stat: str) -> float:
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / tick

    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            threads[int(task.name)] = seconds((task / "stat").read_text())
    return seconds(Path(f"/proc/{pid}/stat").read_text()), threads


def child_of(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        time.sleep(0.01)
    raise SystemExit("py-spy did not start the forwarder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    parser.add_argument("--native", action="store_true", help="also sample C frames (pauses the process more)")
    parser.add_argument("extra", nargs="*", help="extra flags for `statsig-forwarder run`")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    path = events_file(args.events)
    fake = RemoteFake()
    state = Path(tempfile.mkdtemp(prefix="fwd-profile-"))
    raw = args.raw or state / "profile.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY=SECRET, FORWARDER_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    cmd = [pyspy, "record", "--threads", "-r", str(args.rate), "-f", "raw", "-o", str(raw),
           *(["--native"] if args.native else []), "--", *forwarder_cmd(), "run", "--once", str(path),
           "--state-dir", str(state), "--statsig-api", fake.url, *args.extra]
    try:
        spy = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = child_of(spy.pid)
        process_cpu, threads = 0.0, {}
        while spy.poll() is None:  # the last reading before the forwarder exits
            with contextlib.suppress(OSError, ValueError):
                process_cpu, live = cpu_of(pid)
                threads.update(live)
            time.sleep(0.05)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed ({spy.returncode})")
        cpu = shares(raw, ROOT / "forwarder" / "decode" / "reader.py", threads)
    finally:
        fake.stop()
    ended = process_cpu - sum(threads.values())
    if ended > 0:
        cpu["other (threads that ended early)"] += ended
    scale = 1e6 / args.events
    print(f"forwarder CPU {process_cpu:.2f} s for {args.events:,} events "
          f"({process_cpu * scale:.2f} CPU s per million; py-spy slows it down)")
    print("| step | share | CPU s per million events |\n|---|---:|---:|")
    for step, seconds in cpu.most_common():
        print(f"| {step} | {seconds / process_cpu:.1%} | {seconds * scale:.2f} |")
    if args.raw is None:
        shutil.rmtree(state, ignore_errors=True)

if __name__ == "__main__":
    main()
