"""The lock that gives one process a state directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StateLockedError

LOCK_FILE = "lock"
REPLAY_LOCK_FILE = "replay.lock"  # `replay` takes its own lock, so it can run beside `run`


class StateDirLock:
    """An exclusive flock on <state_dir>/lock (or `name`), held for the life of a run."""

    def __init__(self, state_dir: Path, name: str = LOCK_FILE) -> None:
        self.path = state_dir / name
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateLockedError(
                f"state directory {self.path.parent} is in use by pid {holder}; "
                "only one forwarder may own a state directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
