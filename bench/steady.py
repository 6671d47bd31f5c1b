#!/usr/bin/env python3
"""Steady load: the forwarder's CPU, wake-ups and latency at the rates backends really write.

A writer process appends events at a fixed rate to a file that `statsig-forwarder run` follows,
posting to the fake Statsig (tests/fake_statsig.py, in this process). Each event carries its
write time; latency is the fake's receive time minus that. Over `--seconds` (after a warm-up)
the forwarder's own CPU seconds and voluntary context switches (wake-ups) are read from /proc.

Cases (`--cases`, comma-separated):
    write@RATE    one write per event (a logging handler, a request handler)
    flush@RATE    the events of each 10 ms in one write (--flush-ms)
    idle          a followed file nobody writes to
    relay@RPS     `run --listen`: an SDK posting a batch of --relay-events to /v1/log_event RPS
                  times a second on one keep-alive connection, appended and forwarded
    receive@RPS   `receive` alone, the same requests (latency: the answer)

Old and new side by side, alternating, same script: `--repo old=/work/wt/old20 --repo new=.`
(each repo's .venv/bin/python, else this interpreter, with PYTHONPATH=repo), or
`--forwarder-cmd LABEL='python -m forwarder'`.

`--profile` also samples the forwarder with py-spy over the window (non-blocking) and splits
each thread's CPU time by pipeline step as bench/profile.py does; its CPU figures are then
not comparable (py-spy runs beside it), the split is the point.

    python bench/steady.py [--cases write@2000,flush@2000,idle] [--seconds 20] [--rounds 3]
                           [--repo LABEL=PATH ...] [--threads] [--profile] [-- extra run flags]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import http.client
import importlib.util
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from _common import ROOT, FakeStatsig, hardware

KEY = "secret-bench-steady-0123456789"
TICK = os.sysconf("SC_CLK_TCK")


# -- the writer (its own process) ---------------------------------------------------------
def writer(path: str, rate: float, mode: str, seconds: float, flush_ms: float) -> None:
    """Append `rate` events/s for `seconds`; print how many were written."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    start = time.monotonic()
    end = start + seconds
    step = 1.0 / rate if mode == "write" else flush_ms / 1000
    next_at = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now < next_at:
            time.sleep(next_at - now)
            continue
        due = int((min(now, end) - start) * rate) + 1 - n
        if mode == "write":
            for _ in range(due):
                os.write(fd, event_line(n))
                n += 1
        elif due > 0:
            os.write(fd, b"".join(event_line(n + i) for i in range(due)))
            n += due
        next_at += step
    os.close(fd)
    print(n, flush=True)


def event_line(seq: int) -> bytes:
    return orjson.dumps({"event_name": "steady", "user": {"userID": f"u{seq % 5000}"}, "value": seq % 100,
                         "metadata": {"seq": seq, "w": repr(time.time()), "path": "/checkout"}}) + b"\n"


# -- the fake keeps only (seq, latency) ---------------------------------------------------
@dataclass
class Arrivals(FakeStatsig):
    """The fake Statsig recording when each event arrived, not the events."""

    keep_events: bool = False
    seen: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def _record(self, request: Any) -> None:
        if request.status < 300:
            with self._lock:
                for e in request.events:
                    meta = e.get("metadata") or {}
                    seq = int(meta["seq"])
                    self.seen[seq] = self.seen.get(seq, 0) + 1
                    self.latencies.append(request.received - float(meta["w"]))
        super()._record(request)

    def reset(self) -> None:
        with self._lock:
            self.seen, self.latencies = {}, []


# -- /proc --------------------------------------------------------------------------------
def proc_sample(pid: int) -> tuple[float, dict[int, tuple[float, int, int]]]:
    """(process CPU s, {tid: (CPU s, voluntary, involuntary context switches)})."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            tf = (task / "stat").read_text().rsplit(")", 1)[1].split()
            vol = nonvol = 0
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    nonvol = int(line.split()[1])
            threads[int(task.name)] = ((int(tf[11]) + int(tf[12])) / TICK, vol, nonvol)
    return cpu, threads


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from `py-spy dump` when it is installed."""
    pyspy = Path(sys.executable).parent / "py-spy"
    try:
        out = subprocess.run([str(pyspy), "dump", "--pid", str(pid), "--native"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for line in out.splitlines():  # Thread 1234 (idle): "reader"
        if line.startswith("Thread "):
            parts = line.split()
            with contextlib.suppress(ValueError):
                tid = int(parts[1], 16) if parts[1].startswith("0x") else int(parts[1])
                names[tid] = line.split('"')[1] if '"' in line else "?"
    return names


# -- one measurement ----------------------------------------------------------------------
@dataclass
class Result:
    label: str
    case: str
    cpu_pct: float
    wakeups_s: float
    sent: int
    arrived: int
    dups: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    threads: list[tuple[str, float, float]] = field(default_factory=list)  # name, CPU %, wake-ups/s
    steps: collections.Counter[str] = field(default_factory=collections.Counter)  # --profile: CPU s by step


class Sampler:
    """py-spy over the measurement window (--profile)."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                                      "--threads", "--nonblocking", "-r", "100", "-f", "raw",
                                      "-d", str(int(seconds)), "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def steps(self, repo: Path | None, thread_cpu: dict[int, float]) -> collections.Counter[str]:
        self.proc.wait(120)
        spec = importlib.util.spec_from_file_location("bench_profile", ROOT / "bench" / "profile.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        reader = (repo or ROOT) / "forwarder" / "decode" / "reader.py"
        steps: collections.Counter[str] = module.shares(self.out, reader, thread_cpu)
        return steps


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")


def start_forwarder(cmd: list[str], repo: Path | None, args: list[str], work: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_")}
    env.update(STATSIG_SERVER_SECRET_KEY=KEY, FORWARDER_LOG_FORMAT="json", FORWARDER_STATE_DIR=str(work / "state"))
    if repo is not None:
        env["PYTHONPATH"] = str(repo)
    stderr = open(work / "forwarder.log", "wb")  # noqa: SIM115 (kept by the child)
    return subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                            cwd=repo or ROOT)


def listening(work: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for line in (work / "forwarder.log").read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if doc.get("msg") == "receiver listening":
                    return int(str(doc["address"]).rsplit(":", 1)[1])
        time.sleep(0.05)
    raise SystemExit(f"receiver did not start: {(work / 'forwarder.log').read_text()[-2000:]}")


def sdk_body(first: int, n: int) -> bytes:
    now = time.time()
    events = [{"eventName": "steady_sdk", "user": {"userID": f"u{first + i}"}, "time": int(now * 1000),
               "metadata": {"seq": str(first + i), "w": repr(now)}} for i in range(n)]
    return gzip.compress(orjson.dumps({"events": events, "statsigMetadata": {"sdkType": "py-server"}}), 1)


def measure(label: str, cmd: list[str], repo: Path | None, case: str, a: argparse.Namespace,
            fake: Arrivals) -> Result:
    kind, _, arg = case.partition("@")
    rate = float(arg or 0)
    fake.reset()
    work = Path(tempfile.mkdtemp(prefix="fwd-steady-"))
    (work / "data").mkdir()
    log = work / "data" / "events.ndjson"  # the forwarder's own log is not in the watched directory
    log.write_bytes(b"")
    common = ["--state-dir", str(work / "state"), "--statsig-api", fake.url, *a.extra]
    if kind == "receive":
        proc = start_forwarder(cmd, repo, ["receive", "--listen", "127.0.0.1:0", str(log)], work)
    elif kind == "relay":
        proc = start_forwarder(cmd, repo, ["run", str(log), "--listen", "127.0.0.1:0", *common], work)
    else:
        proc = start_forwarder(cmd, repo, ["run", str(log), *common], work)
    sent = 0
    latencies: list[float] = []
    try:
        port = listening(work, proc) if kind in ("relay", "receive") else 0
        time.sleep(a.startup)  # start-up work: the key check, the first scan
        if kind == "idle":
            os.write(os.open(log, os.O_WRONLY | os.O_APPEND), event_line(0))
            fake.wait_for(1, timeout=30)
            sent = 1
            time.sleep(a.warmup)
            cpu0, th0 = proc_sample(proc.pid)
            sampler = Sampler(proc.pid, a.seconds, work / "profile.txt") if a.profile else None
            time.sleep(a.seconds)
            cpu1, th1 = proc_sample(proc.pid)
        elif kind in ("write", "flush"):
            total = a.warmup + a.seconds + 0.5
            w = subprocess.Popen([sys.executable, __file__, "--writer", str(log), str(rate), kind, str(total),
                                  str(a.flush_ms)], stdout=subprocess.PIPE)
            time.sleep(a.warmup)
            cpu0, th0 = proc_sample(proc.pid)
            sampler = Sampler(proc.pid, a.seconds, work / "profile.txt") if a.profile else None
            time.sleep(a.seconds)
            cpu1, th1 = proc_sample(proc.pid)
            out, _ = w.communicate(timeout=60)
            sent = int(out)
        else:  # relay / receive: an SDK flushing on a timer, one keep-alive connection
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            answers: list[float] = []
            stop = threading.Event()

            def post() -> None:
                nonlocal sent
                t0 = time.monotonic()
                i = 0
                while not stop.is_set():
                    started = time.time()
                    conn.request("POST", "/v1/log_event", sdk_body(sent, a.relay_events),
                                 {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                  "STATSIG-API-KEY": KEY})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status >= 300:
                        raise SystemExit(f"relay answered {resp.status}")
                    answers.append(time.time() - started)
                    sent += a.relay_events
                    i += 1
                    stop.wait(max(0.0, t0 + i / rate - time.monotonic()))

            poster = threading.Thread(target=post, daemon=True)
            poster.start()
            time.sleep(a.warmup)
            cpu0, th0 = proc_sample(proc.pid)
            sampler = Sampler(proc.pid, a.seconds, work / "profile.txt") if a.profile else None
            time.sleep(a.seconds)
            cpu1, th1 = proc_sample(proc.pid)
            stop.set()
            poster.join(30)
            conn.close()
            if kind == "receive":
                latencies = sorted(answers)
        if kind != "receive":
            fake.wait_for(sent, timeout=a.flush_wait)
            time.sleep(0.5)  # a duplicate would come with the next request
            latencies = sorted(fake.latencies)
        names = thread_names(proc.pid) if a.threads else {}
        steps: collections.Counter[str] = collections.Counter()
        if sampler is not None:
            steps = sampler.steps(repo, {t: th1[t][0] - th0.get(t, (0.0, 0, 0))[0] for t in th1})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    arrived = len(fake.seen) if kind != "receive" else sent
    dups = sum(c - 1 for c in fake.seen.values())
    wake = sum(th1[t][1] - th0.get(t, (0, 0, 0))[1] for t in th1)
    per_thread = []
    for tid, (c1, v1, _) in th1.items():
        c0, v0, _ = th0.get(tid, (0.0, 0, 0))
        per_thread.append((names.get(tid, str(tid)), (c1 - c0) / a.seconds * 100, (v1 - v0) / a.seconds))
    per_thread.sort(key=lambda x: -x[2])
    return Result(label, case, (cpu1 - cpu0) / a.seconds * 100, wake / a.seconds, sent, arrived, dups,
                  pct(latencies, 50), pct(latencies, 99), latencies[-1] * 1000 if latencies else float("nan"),
                  per_thread, steps)


def forwarders(a: argparse.Namespace) -> list[tuple[str, list[str], Path | None]]:
    out: list[tuple[str, list[str], Path | None]] = []
    for spec in a.repo:
        label, _, path = spec.rpartition("=")
        repo = Path(path).resolve()
        py = repo / ".venv" / "bin" / "python"
        out.append((label or repo.name, [str(py if py.exists() else sys.executable), "-m", "forwarder"], repo))
    for spec in a.forwarder_cmd:
        label, _, command = spec.partition("=")
        out.append((label, shlex.split(command), None))
    return out or [("this", [sys.executable, "-m", "forwarder"], ROOT)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        path, rate, mode, seconds, flush_ms = sys.argv[2:7]
        writer(path, float(rate), mode, float(seconds), float(flush_ms))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cases", default="write@2000,flush@2000,idle")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--startup", type=float, default=3.0, help="seconds after start before the writer starts")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--flush-ms", type=float, default=10.0)
    p.add_argument("--flush-wait", type=float, default=30.0, help="seconds to wait for the last events")
    p.add_argument("--relay-events", type=int, default=50, help="events per SDK request (relay/receive)")
    p.add_argument("--repo", action="append", default=[], help="LABEL=PATH of a checkout (repeatable)")
    p.add_argument("--forwarder-cmd", action="append", default=[], help="LABEL=COMMAND (repeatable)")
    p.add_argument("--threads", action="store_true", help="per-thread CPU and wake-ups (names via py-spy)")
    p.add_argument("--profile", action="store_true", help="split the CPU by pipeline step (py-spy)")
    p.add_argument("--keep", action="store_true", help="keep each case's directory (forwarder.log, profile.txt)")
    p.add_argument("extra", nargs="*", help="extra flags for `statsig-forwarder run`")
    a = p.parse_args()
    fake = Arrivals(expected_key=KEY).start()
    results: list[Result] = []
    try:
        for r in range(a.rounds):
            for case in a.cases.split(","):
                for label, cmd, repo in forwarders(a):
                    res = measure(label, cmd, repo, case, a, fake)
                    results.append(res)
                    print(f"round {r + 1} {label:>6} {case:<14} CPU {res.cpu_pct:6.2f}%  wake-ups/s "
                          f"{res.wakeups_s:7.0f}  sent {res.sent} arrived {res.arrived} dup {res.dups}  "
                          f"p50/p99/max ms {res.p50_ms:.0f}/{res.p99_ms:.0f}/{res.max_ms:.0f}", flush=True)
                    if a.threads:
                        for name, cpu, wakes in res.threads:
                            if cpu >= 0.05 or wakes >= 0.5:
                                print(f"        {name:<28} CPU {cpu:6.2f}%  wake-ups/s {wakes:7.1f}")
                    total = sum(res.steps.values())
                    for step, secs in res.steps.most_common():
                        print(f"        step {step:<34} {secs / total:6.1%}  {secs / a.seconds * 100:5.2f}% of a core")
    finally:
        fake.stop()
    print(f"\nhardware: {hardware()}; {a.seconds:.0f} s windows, {a.rounds} round(s), machine load "
          f"{os.getloadavg()[0]:.1f}")
    print("| case | forwarder | CPU % of a core (each round) | wake-ups/s | events sent / arrived / dup "
          "| latency p50 / p99 / max ms |")
    print("|---|---|---|---:|---|---|")
    for case in a.cases.split(","):
        for label, _, _ in forwarders(a):
            rs = [r for r in results if r.case == case and r.label == label]
            if not rs:
                continue
            cpus = " ".join(f"{r.cpu_pct:.2f}" for r in rs)
            med = statistics.median(r.cpu_pct for r in rs)
            print(f"| {case} | {label} | **{med:.2f}** ({cpus}) | {statistics.median(r.wakeups_s for r in rs):.0f} "
                  f"| {sum(r.sent for r in rs)} / {sum(r.arrived for r in rs)} / {sum(r.dups for r in rs)} "
                  f"| {statistics.median(r.p50_ms for r in rs):.0f} / {max(r.p99_ms for r in rs):.0f} / "
                  f"{max(r.max_ms for r in rs):.0f} |")


if __name__ == "__main__":
    main()
