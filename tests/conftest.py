"""Shared fixtures: the fake Statsig, and a helper that runs the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import contextlib

from fake_statsig import FakeStatsig

SECRET = "secret-test-key-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeStatsig]:
    server = FakeStatsig().start()
    yield server
    server.stop()


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


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Cli]]:
    """Start the CLI: spawn("run", path, "--flag", ..., key=SECRET, stdin=...)."""
    running: list[Cli] = []

    def start(*args: str, key: str | None = SECRET, stdin: int | None = subprocess.DEVNULL,
              env: dict[str, str] | None = None) -> Cli:
        extra = dict(env or {})
        if key is not None:
            extra["STATSIG_SERVER_SECRET_KEY"] = key
        extra.setdefault("FORWARDER_LOG_FORMAT", "json")
        proc = subprocess.Popen(
            [sys.executable, "-m", "forwarder", *args],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(**extra), cwd=tmp_path,
        )
        cli = Cli(proc)
        running.append(cli)
        return cli

    yield start
    for cli in running:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait(10)


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
    return orjson.loads((state / "checkpoints.json").read_bytes())["files"]


def wait_until(cond: Callable[[], bool], timeout: float = 20, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()
