"""The checkpoint writer thread: dead-letter file synced first, then the checkpoints."""

from __future__ import annotations

import logging
import threading

from .checkpoints import Checkpoints
from .deadletter import DeadLetter

log = logging.getLogger(__name__)


class CheckpointWriter(threading.Thread):
    """Flushes the dead-letter file, then the checkpoints, every interval."""

    def __init__(self, checkpoints: Checkpoints, deadletter: DeadLetter, interval: float) -> None:
        super().__init__(name="checkpoint-writer", daemon=True)
        self.checkpoints = checkpoints
        self.deadletter = deadletter
        self.interval = interval
        self.stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.flush()

    def flush(self) -> bool:
        try:
            self.deadletter.sync()
            self.checkpoints.flush()
        except OSError as e:
            # The previous checkpoint file is intact (atomic replace); retry next interval.
            if not self._failing:
                log.error("cannot write checkpoint, will retry", extra={"error": str(e),
                          "path": str(self.checkpoints.path)})
            self._failing = True
            return False
        if self._failing:
            log.info("checkpoint writes recovered")
        self._failing = False
        return True
