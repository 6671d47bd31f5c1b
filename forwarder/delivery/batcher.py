"""Group events into batches that close on count, bytes or age."""

from __future__ import annotations

import time

from ..model import Batch, StatsigEvent


class Batcher:
    """Builds one open batch at a time; the caller ships it when `full` or `due`."""

    def __init__(self, batch_size: int, batch_bytes: int, flush_interval: float) -> None:
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self._seq = 0
        self.current = Batch(self._seq)
        self._empty = True
        # When what is being added was written, at the earliest (the reader's previous look at
        # the source): a batch opens then, so waiting to read never delays its flush. None: now.
        self.since: float | None = None

    def add(self, event: StatsigEvent, nbytes: int) -> bool:
        """Add one event; True when the batch is now full."""
        batch = self.current
        if self._empty:
            self._open(batch)
        batch.events.append(event)
        batch.nbytes += nbytes
        return len(batch.events) >= self.batch_size or batch.nbytes >= self.batch_bytes

    def room(self) -> tuple[int, int]:
        """(events, bytes) the open batch takes before it is full; hot loops count down locally."""
        batch = self.current
        return self.batch_size - len(batch.events), self.batch_bytes - batch.nbytes

    def extend(self, events: list[StatsigEvent], nbytes: int) -> None:
        """Add events counted against `room()`, in one call instead of one per event."""
        if not events:
            return
        batch = self.current
        if self._empty:
            self._open(batch)
        batch.events.extend(events)
        batch.nbytes += nbytes

    def mark(self, key: str, end: int) -> None:
        """Record that the batch completes `key` up to byte `end`."""
        if self._empty:
            self._open(self.current)
        self.current.positions[key] = end

    def seconds_until_due(self) -> float | None:
        """Time left before the open batch must go; None when nothing is open."""
        if self._empty:
            return None
        return self.current.opened + self.flush_interval - time.monotonic()

    def open_since(self) -> float | None:
        """Monotonic time the open batch got its first item; None when nothing is open."""
        return None if self._empty else self.current.opened

    def take(self) -> Batch | None:
        """Close and return the open batch (None if it is empty)."""
        if self._empty:
            return None
        batch = self.current
        self._seq += 1
        self.current = Batch(self._seq)
        self._empty = True
        return batch

    def _open(self, batch: Batch) -> None:
        batch.opened = time.monotonic() if self.since is None else self.since
        self._empty = False
