"""How far behind a run is, and whether it is ready (the answer behind /readyz).

Liveness (/healthz) is only "the process answers"; readiness is false while starting or
stopping, when Statsig refuses the key (401/403/404), or when the lag exceeds the bounds
`ready_max_lag_bytes` / `ready_max_lag_seconds` (unset: no bound). Following no file yet
(a log directory not created yet) is said in `reasons` but keeps it ready: nothing is
wrong, and a pod held unready would keep its backend from ever writing the file.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileLag:
    """One followed file: its size, delivered offset and when that offset last moved."""

    size: int
    delivered: int  # just past the last delivered line (where reading began, before any delivery)
    moved: float = 0.0  # epoch s of the last delivery from it (0: none yet)

    @property
    def behind(self) -> int:
        return max(0, self.size - self.delivered)


@dataclass(frozen=True)
class Lag:
    """Undelivered work: bytes behind per followed file, and the oldest unacknowledged event."""

    bytes_behind: dict[str, int] = field(default_factory=dict)
    oldest_age: float = 0.0  # seconds since the oldest event read but not yet acknowledged was read
    waiting_for: tuple[str, ...] = ()  # the paths, while none of them exists
    files: dict[str, FileLag] = field(default_factory=dict)  # by path, the same files as bytes_behind

    @property
    def max_bytes_behind(self) -> int:
        return max(self.bytes_behind.values(), default=0)


class LagProbe:
    """Computes `Lag` on demand from the run's parts; safe to call from any thread.

    `files` yields (path, checkpoint key, size, offset reading started at) of each open file;
    `delivered(key)` is the key's (delivered offset, epoch s it moved), or None before the
    first delivery;
    `oldest_read` gives the monotonic times at which still-unacknowledged batches opened.
    """

    def __init__(
        self,
        files: Callable[[], list[tuple[str, str, int, int]]],
        delivered: Callable[[str], tuple[int, float] | None],
        oldest_read: Callable[[], list[float | None]],
        paths: PathWatch | None = None,
    ) -> None:
        self._files = files
        self._delivered = delivered
        self._oldest_read = oldest_read
        self._paths = paths

    def __call__(self) -> Lag:
        files: dict[str, FileLag] = {}
        for path, key, size, origin in self._files():
            done = self._delivered(key)
            files[path] = FileLag(size, origin) if done is None else FileLag(size, *done)
        opened = [t for t in self._oldest_read() if t is not None]
        age = time.monotonic() - min(opened) if opened else 0.0
        waiting = tuple(self._paths.waiting_for) if self._paths is not None else ()
        return Lag({p: f.behind for p, f in files.items()}, max(0.0, age), waiting, files)


class PathWatch:
    """Notices a run that follows no file because none of its paths exists yet.

    `check()` (from the main loop; throttled) logs once when it starts waiting and once when
    a path appears; the tailer picks the files up on its own.
    """

    def __init__(self, patterns: Callable[[], list[str]], files: Callable[[], list[tuple[str, str, int, int]]],
                 interval: float = 1.0) -> None:
        self._patterns = patterns
        self._files = files
        self._interval = interval
        self._next = 0.0
        self.waiting_for: list[str] = []

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        patterns = self._patterns()
        waiting = not self._files() and not any(_exists(p) for p in patterns)
        if waiting and not self.waiting_for:
            log.warning("waiting for paths to appear: no file to follow yet", extra={"paths": patterns})
        elif self.waiting_for and not waiting:
            log.info("paths appeared, following them", extra={"paths": patterns})
        self.waiting_for = list(patterns) if waiting else []


def _exists(pattern: str) -> bool:
    if not glob.has_magic(pattern):
        return os.path.isfile(pattern)
    return any(os.path.isfile(p) for p in glob.iglob(pattern, recursive=True))


def readiness(
    phase: str,
    sink_state: str,
    lag: Lag,
    max_lag_bytes: int | None,
    max_lag_seconds: float | None,
) -> tuple[bool, list[str]]:
    """(ready, reasons it is not); `phase` is starting | running | stopping."""
    reasons: list[str] = []
    if phase != "running":
        reasons.append(phase)
    if sink_state == "auth_failed":
        reasons.append("statsig refuses the key or URL (401/403/404)")
    if max_lag_bytes is not None and lag.max_bytes_behind > max_lag_bytes:
        reasons.append(f"{lag.max_bytes_behind} bytes behind > ready_max_lag_bytes {max_lag_bytes}")
    if max_lag_seconds is not None and lag.oldest_age > max_lag_seconds:
        reasons.append(f"oldest undelivered event {lag.oldest_age:.1f} s old > "
                       f"ready_max_lag_seconds {max_lag_seconds:g}")
    ok = not reasons
    if lag.waiting_for:  # said, but ready all the same (module docstring)
        reasons.append(f"no files yet: waiting for {', '.join(lag.waiting_for)}")
    return ok, reasons
