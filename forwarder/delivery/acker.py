"""Acknowledge batches in file order and move checkpoints only over unbroken acknowledgements.

Senders run in worker threads and may finish out of order; `Acker` applies a batch's file
positions only when every earlier batch is finished too, so a checkpoint never passes an event
that Statsig has not accepted (Vector's OrderedFinalizer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..model import Batch
from ..state.checkpoints import Checkpoints

RETRY = 0.2  # seconds between attempts while the checkpoint file cannot be written
KEEP = 128  # versions remembered per acknowledged batch: more than any window (max_in_flight <= 64)


class Acker:
    """Moves checkpoints forward in batch order, and holds senders to the in-flight window.

    A batch may be sent (`wait_turn`) only while it is within `window` batches of the oldest
    unacknowledged one, and only once the checkpoint file (in the kernel: `publish`) passes
    every batch before that: the window slot is freed when the position is in the file, not
    when Statsig answers. A crash (kill -9) therefore re-sends at most the window, whatever
    the rate. The same write records the batch in flight, so the file a crash leaves says
    how many events may come twice (while checkpoint writes fail, a batch inside the bound
    still goes, unrecorded). One stuck request holds back the others after at most the
    window, instead of letting them deliver ever more batches the checkpoint cannot pass.
    """

    def __init__(
        self,
        checkpoints: Checkpoints | None,
        location: Callable[[str], tuple[str, int, int]],
        publish: Callable[[int], bool] | None = None,
    ) -> None:
        self._checkpoints = checkpoints
        self._location = location
        # Make the checkpoint file hold a view version; False: it failed (retried).
        self._publish = publish or self._publish_plain
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._done: dict[int, Batch] = {}
        self._opened: dict[int, float] = {}  # unacknowledged batches -> when they opened
        self._sending: dict[int, Batch] = {}  # let through, not yet passed by the view
        self._applied: dict[int, int] = {}  # acknowledged batch -> the view version that passes it
        self._next = 0

    def begin(self, batch: Batch) -> None:
        """A sender took `batch`: it counts as undelivered until acknowledged."""
        with self._lock:
            self._opened[batch.seq] = batch.opened

    def oldest_opened(self) -> float | None:
        """Monotonic time the oldest unacknowledged batch opened, if any."""
        with self._lock:
            return min(self._opened.values(), default=None)

    def done(self, batch: Batch) -> None:
        with self._lock:
            self._done[batch.seq] = batch
            while self._next in self._done:
                finished = self._done.pop(self._next)
                self._opened.pop(finished.seq, None)
                self._sending.pop(finished.seq, None)
                self._next += 1
                if self._checkpoints is not None:
                    if finished.positions:
                        where = {k: self._location(k) for k in finished.positions}
                        self._checkpoints.advance(finished.positions, where)
                    self._applied[finished.seq] = self._note_in_flight()  # the writer writes it at once
                    self._applied.pop(finished.seq - KEEP, None)
            self._turn.notify_all()

    def wait_turn(self, batch: Batch, window: int, abort: threading.Event) -> bool:
        """Block until `batch` may be sent; False on abort (it was not sent)."""
        with self._turn:
            while batch.seq >= self._next + window:
                if abort.is_set():
                    return False
                self._turn.wait(0.2)
            if self._checkpoints is None:
                return True
            self._sending[batch.seq] = batch
            version = self._note_in_flight()
            opened_by = self._applied.get(batch.seq - window, 0)  # the acknowledgement that freed this slot
        # One write holds both: the acknowledgements that opened the window and this batch in flight.
        while not self._publish(version) and self._checkpoints.published < opened_by:
            if abort.wait(RETRY):
                with self._lock:
                    self._sending.pop(batch.seq, None)
                    self._note_in_flight()
                return False
        return True

    def _note_in_flight(self) -> int:  # with self._lock held
        if self._checkpoints is None:
            return 0
        sent: dict[str, int] = {}
        for batch in self._sending.values():
            for key, end in batch.positions.items():
                sent[key] = max(end, sent.get(key, 0))
        return self._checkpoints.set_in_flight(len(self._sending), sum(len(b.events) for b in self._sending.values()),
                                               sent)

    def _publish_plain(self, version: int) -> bool:
        assert self._checkpoints is not None
        self._checkpoints.publish(version)
        return True
