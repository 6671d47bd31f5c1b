"""Counters of what the pipeline did, for the exit summary, logs and metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class Stats:
    """Monotonic counters; `add` is safe from any thread."""

    lines_read: int = 0
    events_read: int = 0
    events_delivered: int = 0
    events_dead_lettered: int = 0
    events_skipped: int = 0  # read, valid, left out on purpose (replay filters)
    events_rejected_by_statsig: int = 0
    batches_sent: int = 0
    send_retries: int = 0
    events_retried: int = 0
    sink_state: str = "ok"  # ok | retrying | auth_failed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int | str]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
