"""Fixtures: the fake Statsig, the real CLI as a process, and the leak check every test gets.
Helpers live in kit.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from fake_statsig import FakeStatsig
from kit import SECRET, Cli, cli_env

LEAK_GRACE_S = 3.0  # threads and children get this long to end after their test


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if a thread or child process it started is still running after it
    (watchdog's tests/conftest.py). Only what started during the test counts, so the daemon
    threads libraries keep for the whole session are not blamed on the test that woke them."""
    threads_before = set(threading.enumerate())
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = [p for p in me.children(recursive=True) if p.pid not in children_before and _running(p)]
        if (not threads and not children) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for child in children:  # so that the next test starts clean
        child.kill()
    assert not threads, f"threads outlived the test: {[t.name for t in threads]}"
    assert not children, f"child processes outlived the test: {[(c.pid, _cmdline(c)) for c in children]}"


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return "?"


@pytest.fixture
def fake() -> Iterator[FakeStatsig]:
    server = FakeStatsig().start()
    yield server
    server.stop()


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
        cli.close()
