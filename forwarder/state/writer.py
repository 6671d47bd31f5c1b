"""The checkpoint writer thread: changes into the kernel at once, fsync'd on a cadence."""

from __future__ import annotations

import logging
import threading
import time

from ..stats import Stats
from .checkpoints import Checkpoints
from .deadletter import DeadLetter

log = logging.getLogger(__name__)

RETRY = 1.0  # seconds between attempts while writes fail (full disk)
PAUSE = 0.05  # seconds between two writes by this thread (senders write before each batch anyway)


class CheckpointWriter(threading.Thread):
    """Puts changes of the view into the kernel (the journal, `Checkpoints.publish`) and writes
    the fsync'd checkpoints.json at most every `fsync_interval` seconds (0: every write).

    Two crashes, two bounds. A process crash (kill -9, the OOM killer) keeps what reached the
    kernel; the acker lets a batch go only once the journal passes every batch outside the
    in-flight window (`publish`, called by the senders), so it re-sends at most
    `max_in_flight` x `batch_size` events. A machine crash keeps only what was fsync'd: at most
    that plus `fsync_interval` of traffic more. The dead-letter file is fsync'd before every
    checkpoint fsync (its records reached the kernel before the view passing their lines was
    taken). This thread also writes what no sender writes at once (an acknowledgement when no
    batch follows it, a file renamed, expired or skipped), at most every PAUSE.
    """

    def __init__(self, checkpoints: Checkpoints, deadletter: DeadLetter, fsync_interval: float,
                 stats: Stats | None = None) -> None:
        super().__init__(name="checkpoint-writer", daemon=True)
        self.checkpoints = checkpoints
        self.deadletter = deadletter
        self.fsync_interval = fsync_interval
        self.stopped = threading.Event()
        self.stats = stats
        self._moved = threading.Event()
        self._failing = False
        self._last_sync = float("-inf")
        checkpoints.watch(self.notify)

    def notify(self) -> None:
        """The checkpoints changed: write them (cheap; called with the view's lock held)."""
        self._moved.set()

    def stop(self) -> None:
        """Ask the thread to end (the caller does the final `flush`)."""
        self.stopped.set()
        self._moved.set()

    def run(self) -> None:
        self._moved.set()  # a view loaded from the journal or a temp file is written at once
        while not self.stopped.is_set():
            timeout = None  # idle: sleep until a change or stop() (no timer while nothing moves)
            if self.checkpoints.unsynced:
                timeout = max(0.0, self._last_sync + self.fsync_interval - time.monotonic())
            self._moved.wait(timeout)
            if self.stopped.is_set():
                return
            self._moved.clear()  # changes from now on are for the next write
            if not self.publish() or not self._sync_if_due():
                self._moved.set()  # still to do: try again after the pause
                self.stopped.wait(RETRY)
            else:
                self.stopped.wait(PAUSE)

    def publish(self, through: int | None = None) -> bool:
        """The kernel holds view version `through` (default: the current one) once this returns
        True; False when the write failed (this thread retries it, and says so once)."""
        if self.fsync_interval == 0:
            return self.flush()
        try:
            wrote = self.checkpoints.publish(through)
        except OSError as e:
            self._failed("cannot write checkpoint, will retry", e)
            return False
        if wrote and self.stats is not None:
            self.stats.add(checkpoint_writes=1)
        self._recovered()
        return True

    def _sync_if_due(self) -> bool:
        if time.monotonic() < self._last_sync + self.fsync_interval:
            return True
        if not self.flush():
            return False
        self._last_sync = time.monotonic()
        return True

    def flush(self) -> bool:
        """Write checkpoints.json durably if it is behind (the cadence, shutdown), the
        dead-letter file fsync'd first; False if it failed (retried)."""
        try:
            if self.checkpoints.flush(before_write=self.deadletter.sync) and self.stats is not None:
                self.stats.add(checkpoint_writes=1, checkpoint_syncs=1)
        except OSError as e:
            self._failed("cannot write checkpoint, will retry", e)
            return False
        self._recovered()
        return True

    def _failed(self, what: str, e: OSError) -> None:
        # The previous checkpoint file is intact (atomic replace); retried.
        if not self._failing:
            log.error(what, extra={"error": str(e), "path": str(self.checkpoints.path)})
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("checkpoint writes recovered")
        self._failing = False

    def report_previous_run(self, window_events: int) -> None:
        """Say at start what the last run may have left to be sent twice (Statsig does not
        de-duplicate): what it had in flight when it stopped, at most `window_events`."""
        loaded = self.checkpoints.loaded
        if loaded is None:
            return
        written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded.written)) if loaded.written else None
        if loaded.after_reboot:
            log.warning("the machine restarted since the last checkpoint write: resuming at the last fsync'd "
                        "checkpoint; events delivered after it are sent again (the batches in flight then, at "
                        "most the window, plus at most checkpoint_fsync_interval of traffic)",
                        extra={"checkpoint": str(loaded.path), "written": written,
                               "in_flight_events": loaded.in_flight_events,
                               "delivered_after_it_bytes": loaded.unsynced_bytes,
                               "window_events": window_events})
        elif loaded.in_flight_events or loaded.in_flight_batches:
            log.warning("the previous run stopped with events in flight: up to %d events it sent may be "
                        "sent again (Statsig counts them twice)", loaded.in_flight_events,
                        extra={"in_flight_events": loaded.in_flight_events,
                               "in_flight_batches": loaded.in_flight_batches,
                               "window_events": window_events, "checkpoint": str(loaded.path),
                               "written": written})
