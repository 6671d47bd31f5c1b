"""Test helpers, in one place: the CLI as a process, event lines, waiting, file scenarios,
the torture suite's scale and tallies, and a real terminal (tmux). Fixtures live in conftest.py and use these."""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fake_statsig import FakeStatsig
from prometheus_client.parser import text_string_to_metric_families

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
        "--checkpoint-fsync-interval", "0.2", "--retry-initial", "0.05", "--retry-max", "0.5",
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
    """The positions in <state>/checkpoints.json ({} before it is written)."""
    try:
        files: dict[str, Any] = orjson.loads((state / "checkpoints.json").read_bytes())["files"]
    except FileNotFoundError:
        return {}
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
    crashes: list[int] = field(default_factory=list)  # events re-sent after each crash, in order


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- a real terminal: a tmux server of our own, one window of a fixed size --------------
class Tmux:
    """Start a command in a window, read the screen (`capture-pane`), send keys."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]
        self.session = "t"

    def start(self, command: str, cwd: Path, width: int = 150, height: int = 40, session: str = "t") -> None:
        """Run `command` in a new session; `screen` and `keys` then address that session."""
        self.session = session
        subprocess.run([*self.base, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", session,
                        "-c", str(cwd), command], check=True, env={**cli_env(), "TERM": "xterm-256color"})

    def screen(self) -> str:
        done = subprocess.run([*self.base, "capture-pane", "-p", "-t", self.session], capture_output=True,
                              text=True)
        return done.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", self.session, *keys], check=True)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@contextlib.contextmanager
def tmux_session(tmp_path: Path) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required (.ci/run installs it)"
    t = Tmux(f"forwarder-test-{os.getpid()}-{tmp_path.name}")
    try:
        yield t
    finally:
        t.kill()


# -- HTTP, systemd notify and config helpers --------------------------------------------
P = "statsig_forwarder_"  # metric name prefix


class Http:
    """Client for the CLI's --metrics-listen endpoint (port taken from its log)."""

    def __init__(self, cli: Cli) -> None:
        rec = cli.wait_log("metrics listening")
        self.base = "http://" + rec["address"]

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), float("nan"))

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, orjson.loads(body)


class NotifySocket:
    """A unix datagram socket collecting what the service sends, like systemd does."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.address = address
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def kinds(self) -> list[str]:
        names = ("READY", "WATCHDOG", "STOPPING", "RELOADING")
        return [next(k for k in names if k in m) for m in self.messages if any(k in m for k in names)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def write_config(path: Path, paths: list[Path], **extra: object) -> None:
    lines = [f"paths = [{', '.join(repr(str(p)) for p in paths)}]"]
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
