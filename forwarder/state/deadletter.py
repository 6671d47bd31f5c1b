"""The dead-letter file: one JSON object per rejected line, with where and why."""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from ..model import Rejection


class DeadLetter:
    """Append-only NDJSON file of rejected lines; `sync()` makes them durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._dirty = False

    def write(self, rejection: Rejection) -> None:
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": rejection.path,
            "offset": rejection.offset,
            "size": rejection.size,
            "reason": rejection.reason,
        }
        try:
            record["line"] = rejection.raw.decode("utf-8")
        except UnicodeDecodeError:
            record["line_b64"] = base64.b64encode(rejection.raw).decode("ascii")
        if len(rejection.raw) < rejection.size:
            record["truncated"] = True
        data = orjson.dumps(record) + b"\n"
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            size = os.fstat(self._fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, size)  # never leave a torn record behind
                raise
            self._dirty = True

    def sync(self) -> None:
        """fsync what was written; called before a checkpoint that covers it is saved."""
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                if self._dirty:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
