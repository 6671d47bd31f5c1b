"""Files through which other commands talk to a running forwarder, in its state directory.

    runtime.json        {"version": 1, "pid", "started", "metrics", "receiver", "paths"}
                        written once the HTTP servers are bound (their addresses, or null),
                        removed at exit; `status` and `top` find the instance there.
    reload-status.json  {"version": 1, "pid", "generation", "requested", "finished",
                        "outcome": "applied" | "refused", "reason", "applied", "restart"}
                        rewritten after every SIGHUP; `reload` waits for a new generation.

Both are written atomically (temp file, rename), so a reader sees a whole document or the
previous one.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

RUNTIME_FILE = "runtime.json"
RELOAD_FILE = "reload-status.json"
VERSION = 1


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps({"version": VERSION, **doc}, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("version") == VERSION else None


@dataclass(frozen=True)
class Runtime:
    """Where a running instance can be reached."""

    pid: int
    started: float
    metrics: str | None  # HOST:PORT serving /metrics and /readyz (metrics_listen, else the receiver)
    receiver: str | None
    paths: list[str] = field(default_factory=list)

    @staticmethod
    def publish(state_dir: Path, servers: dict[str, str], paths: list[str]) -> None:
        """Write this process's entry; `servers` maps server name (metrics, receiver) to HOST:PORT."""
        metrics = servers.get("metrics") or servers.get("receiver")
        with contextlib.suppress(OSError):
            _write(state_dir / RUNTIME_FILE,
                   asdict(Runtime(os.getpid(), time.time(), metrics, servers.get("receiver"), list(paths))))

    @staticmethod
    def read(state_dir: Path) -> Runtime | None:
        doc = _read(state_dir / RUNTIME_FILE)
        if doc is None:
            return None
        try:
            return Runtime(int(doc["pid"]), float(doc["started"]), doc.get("metrics"), doc.get("receiver"),
                           list(doc.get("paths") or []))
        except (KeyError, TypeError, ValueError):
            return None

    @staticmethod
    def remove(state_dir: Path) -> None:
        with contextlib.suppress(OSError):
            (state_dir / RUNTIME_FILE).unlink()

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


@dataclass(frozen=True)
class ReloadOutcome:
    """The answer to one SIGHUP."""

    pid: int
    generation: int
    requested: float  # epoch s at which the reload began (after the signal arrived)
    finished: float
    outcome: str  # applied | refused
    reason: str | None = None
    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)  # changed, but only a restart applies them

    @staticmethod
    def read(state_dir: Path) -> ReloadOutcome | None:
        doc = _read(state_dir / RELOAD_FILE)
        if doc is None:
            return None
        try:
            return ReloadOutcome(int(doc["pid"]), int(doc["generation"]), float(doc["requested"]),
                                 float(doc["finished"]), str(doc["outcome"]), doc.get("reason"),
                                 list(doc.get("applied") or []), list(doc.get("restart") or []))
        except (KeyError, TypeError, ValueError):
            return None


class ReloadReporter:
    """Records the outcome of each reload of this process in <state_dir>/reload-status.json."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        previous = ReloadOutcome.read(state_dir)
        self.generation = previous.generation if previous is not None else 0
        self._began = time.time()

    def begin(self) -> None:
        """Call when a reload starts: outcomes are for signals sent before this moment."""
        self._began = time.time()

    def report(self, outcome: str, reason: str | None = None, applied: list[str] | None = None,
               restart: list[str] | None = None) -> None:
        """Publish the outcome (`applied` or `refused`); never raises (a full disk must not stop a run)."""
        self.generation += 1
        doc = ReloadOutcome(os.getpid(), self.generation, self._began, time.time(), outcome, reason,
                            list(applied or []), list(restart or []))
        with contextlib.suppress(OSError):
            _write(self.state_dir / RELOAD_FILE, asdict(doc))
