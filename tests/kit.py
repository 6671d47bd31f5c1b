"""Test helpers, in one place: the CLI as a process, event lines, waiting, file scenarios,
and the torture suite's scale and tallies. Fixtures live in conftest.py and use these."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fake_statsig import FakeStatsig

SECRET = "secret-test-key-0123456789"


@dataclass
class Cli:
    """A running `statsig-forwarder` process with its output collected."""

    proc: subprocess.Popen[bytes]
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, buf in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            t = threading.Thread(target=_pump, args=(stream, buf), daemon=True)
            t.start()
            self._threads.append(t)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float = 30) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def close(self) -> None:
        """Kill the process if it still runs; reap it and its output pumps."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.stderr).splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(line))
        return out

    def wait_log(self, text: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.logs():
                if text in rec.get("msg", ""):
                    return rec
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"log {text!r} not seen; stderr:\n{bytes(self.stderr).decode(errors='replace')}")


def _pump(stream: Any, buf: bytearray) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        buf.extend(chunk)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDER_") and k != "STATSIG_SERVER_SECRET_KEY"}
    env.update(extra)
    return env


def fast_args(fake: FakeStatsig, state: Path) -> list[str]:
    """Flags that keep end-to-end tests quick: short intervals, quick retries."""
    return [
        "--statsig-api", fake.url, "--state-dir", str(state), "--flush-interval", "0.2",
        "--checkpoint-interval", "0.2", "--retry-initial", "0.05", "--retry-max", "0.5",
        "--poll-interval", "0.1", "--rotate-wait", "0.5", "--glob-interval", "0.5",
    ]


def event_line(seq: int, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "event_name": "test_event",
        "user": {"userID": f"u{seq % 97}", "email": f"u{seq}@example.com", "custom": {"plan": "pro"}},
        "value": seq,
        "metadata": {"seq": seq, "nested": {"ok": True}},
        "time": 1760000000000 + seq,
    }
    doc.update(extra)
    return orjson.dumps(doc) + b"\n"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()


def seqs(fake: FakeStatsig) -> list[int]:
    return [e["metadata"]["seq"] for e in fake.events if "seq" in (e.get("metadata") or {})]


def read_checkpoints(state: Path) -> dict[str, Any]:
    files: dict[str, Any] = orjson.loads((state / "checkpoints.json").read_bytes())["files"]
    return files


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A local port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def wait_until(cond: Callable[[], bool], timeout: float = 20, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


# -- file-following scenarios (tests/test_files_*.py) ------------------------------------
def logs_dir(tmp_path: Path) -> Path:
    """A fresh directory for a scenario's log files (apart from the state dir)."""
    d = tmp_path / "logs"
    d.mkdir()
    return d


def lines(seq_range: Iterable[int]) -> bytes:
    return b"".join(event_line(i) for i in seq_range)


def write(path: Path, seq_range: Iterable[int]) -> None:
    with open(path, "ab") as f:
        f.write(lines(seq_range))


def run(spawn: Callable[..., Cli], fake: FakeStatsig, state: Path, *args: str) -> Cli:
    """The real CLI following `args` (paths and extra flags) with quick intervals."""
    return spawn("run", *args, *fast_args(fake, state))


def deliver_and_stop(spawn: Callable[..., Cli], fake: FakeStatsig, state: Path, expected: Iterable[int],
                     *args: str) -> None:
    """A first run that delivers `expected` and stops cleanly (the state then holds its checkpoints)."""
    cli = run(spawn, fake, state, *args)
    wait_seqs(fake, expected)
    assert cli.stop() == 0


def wait_seqs(fake: FakeStatsig, expected: Iterable[int], timeout: float = 30) -> None:
    want = set(expected)
    ok = wait_until(lambda: want <= set(seqs(fake)), timeout)
    missing = sorted(want - set(seqs(fake)))
    assert ok, f"{len(missing)} events missing, first {missing[:10]}"


def assert_exactly_once(fake: FakeStatsig, expected: Iterable[int], settle: float = 0.6) -> None:
    """Every expected event arrived exactly once, and nothing else arrived."""
    wait_seqs(fake, expected)
    time.sleep(settle)  # a duplicate would arrive within a flush or two
    got = seqs(fake)
    dups = sorted(k for k, c in collections.Counter(got).items() if c > 1)
    assert not dups, f"{len(dups)} duplicated, first {dups[:10]}"
    assert sorted(got) == sorted(set(expected))


def assert_no_loss(fake: FakeStatsig, expected: Iterable[int]) -> None:
    """After a kill -9: every event arrived at least once (duplicates allowed)."""
    wait_seqs(fake, expected)
    assert set(seqs(fake)) == set(expected)


# -- torture suite (tests/torture/) -------------------------------------------------------
SCALE = max(1, int(os.environ.get("TORTURE_SCALE", "1")))


@dataclass
class Tally:
    """What one scenario wrote and what came out of the forwarder."""

    scenario: str
    written: int = 0
    delivered: int = 0  # distinct events that reached the fake Statsig
    duplicated: int = 0  # extra copies beyond the first
    dead_lettered: int = 0
    lost: int = 0
    note: str = ""


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
