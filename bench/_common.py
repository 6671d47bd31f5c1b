"""Helpers shared by the benchmarks: test data, the fake Statsig, child process accounting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_statsig import FakeStatsig  # noqa: E402

GEN = Path(os.environ.get("BENCH_GEN", ROOT.parent / "shared" / "bench" / "gen_events.py"))  # worktrees: set it
DATA = Path(os.environ.get("BENCH_DATA", "/tmp/statsig-forwarder-bench"))


def events_file(n: int) -> Path:
    """A cached file of n events in the shape of ../shared/bench/gen_events.py."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"events-{n}.ndjson"
    if not path.exists():
        subprocess.run([sys.executable, str(GEN), str(n), str(path) + ".part"], check=True)
        os.replace(str(path) + ".part", path)
    return path


@dataclass
class ChildUsage:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int


def run_child(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              stdin: Path | None = None) -> ChildUsage:
    """Run a command to completion and report its own wall time, CPU time and peak RSS.

    Peak RSS is sampled from /proc/PID/status (VmHWM): rusage's ru_maxrss of a child also
    counts the parent's pages shared between fork and exec.
    """
    started = time.perf_counter()
    source = open(stdin, "rb") if stdin is not None else None  # noqa: SIM115
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if source is not None:
        source.close()
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) / 1024)
            except (OSError, ValueError):
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-3000:])
    return ChildUsage(wall, usage.ru_utime + usage.ru_stime, peak[0], proc.returncode)


class RemoteFake:
    """The fake Statsig in its own process, so it does not share a GIL with the benchmark."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_statsig.py"), "--port", "0",
                                      "--quiet"], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().decode().split()[-1]
        host_port = self.url.split("//")[1].split("/")[0]
        self.host, port = host_port.split(":")
        self.port = int(port)
        import urllib3

        self._pool = urllib3.HTTPConnectionPool(self.host, self.port, maxsize=1)

    @property
    def event_count(self) -> int:
        import orjson

        return int(orjson.loads(self._pool.request("GET", "/_fake/stats").data)["events"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def forwarder_cmd() -> list[str]:
    return [sys.executable, "-m", "forwarder"]


def hardware() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"


__all__ = ["DATA", "ChildUsage", "FakeStatsig", "RemoteFake", "events_file", "forwarder_cmd", "hardware", "run_child"]
