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


class Acker:
    """Moves checkpoints forward in batch order.

    Senders also ask it for their turn (`wait_turn`): a batch may be sent only while it is
    within `window` batches of the oldest unfinished one. One stuck request therefore holds
    back the others after at most the window, instead of letting them deliver (and keep in
    memory) ever more batches the checkpoint cannot pass, all of which a crash re-sends.
    """

    def __init__(
        self,
        checkpoints: Checkpoints | None,
        location: Callable[[str], tuple[str, int, int]],
    ) -> None:
        self._checkpoints = checkpoints
        self._location = location
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._done: dict[int, Batch] = {}
        self._opened: dict[int, float] = {}  # unacknowledged batches -> when they opened
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
                self._next += 1
                if self._checkpoints is not None and finished.positions:
                    where = {k: self._location(k) for k in finished.positions}
                    self._checkpoints.advance(finished.positions, where)
            self._turn.notify_all()

    def wait_turn(self, seq: int, window: int, abort: threading.Event) -> bool:
        """Block until batch `seq` is within `window` of the oldest unfinished; False on abort."""
        with self._turn:
            while seq >= self._next + window:
                if abort.is_set():
                    return False
                self._turn.wait(0.2)
        return True
