"""Send batches with retry, split rejected ones, and hand them to the acker.

Senders run in worker threads and may finish out of order; `Acker` (acker.py) puts them back
in file order before any checkpoint moves.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import reprlib
import threading
import time

import msgspec

from ..errors import AuthError, RejectedError, RetryableError
from ..metrics import BATCH_SECONDS, REQUEST_SECONDS
from ..model import Batch, Rejection, StatsigEvent
from ..state.deadletter import DeadLetter
from ..stats import Stats
from .acker import Acker
from .ratelimit import TokenBucket
from .sink import Sink

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 100, 1000, 1000, 100_000, 1000

_OUTCOME_SECONDS = {name: REQUEST_SECONDS.labels(name)
                    for name in ("ok", "retryable", "auth_failed", "rejected")}


class Aborted(Exception):
    """Delivery was abandoned at shutdown; the batch stays unacknowledged."""


class Backoff:
    """Exponential backoff with full jitter, capped; Retry-After wins when given."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.maximum)
        ceiling = min(self.maximum, self.initial * (2 ** min(attempt, 30)))
        return random.uniform(ceiling / 2, ceiling)


class Senders:
    """A pool of worker threads draining the batch queue into the sink.

    Stopping, the same way for every worker: `stop()` queues one stop marker (None) per
    worker behind the batches already queued, so each worker exits once the queue is drained;
    `abort` (an Event, also their sleep) makes them give up at once, batches unacknowledged.
    """

    def __init__(
        self,
        sink: Sink,
        batches: queue.Queue[Batch | None],
        acker: Acker,
        deadletter: DeadLetter,
        stats: Stats,
        backoff: Backoff,
        workers: int,
        limiter: TokenBucket | None = None,
    ) -> None:
        self._sink = sink
        self._limiter = limiter  # paces every request, retries included
        self._batches = batches
        self._acker = acker
        self._deadletter = deadletter
        self._stats = stats
        self._backoff = backoff
        self.abort = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"sender-{i}", daemon=True) for i in range(workers)
        ]
        self._retrying = 0
        self._state_lock = threading.Lock()
        self._markers = 0  # stop markers still to queue
        self._marker_lock = threading.Lock()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """No more batches will come: each worker exits after the ones queued. Never blocks:
        markers that do not fit yet are queued by `join`."""
        with self._marker_lock:
            self._markers = len(self._threads)
        self._queue_markers()

    def _queue_markers(self) -> None:
        with self._marker_lock:
            while self._markers:
                try:
                    self._batches.put_nowait(None)
                except queue.Full:
                    if not self.abort.is_set():
                        return  # the workers are busy; the next join tries again
                    with contextlib.suppress(queue.Empty):  # abandoned: stays unacknowledged
                        self._batches.get_nowait()
                    continue
                self._markers -= 1

    def alive(self) -> bool:
        """True while every worker thread runs."""
        return all(t.is_alive() for t in self._threads)

    def join(self, deadline: float | None) -> bool:
        """Wait for the workers (after `stop` or `abort`); True if all finished before the deadline."""
        while True:
            self._queue_markers()
            alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            alive[0].join(0.05 if left is None else min(0.05, left))

    def _work(self) -> None:
        while True:
            batch = self._batches.get()
            if batch is None:
                return
            self._acker.begin(batch)
            if not self._acker.wait_turn(batch.seq, len(self._threads), self.abort):
                return
            try:
                if batch.events:
                    self._send(batch.events)
                    self._stats.add(batches_sent=1)
                    BATCH_SECONDS.observe(time.monotonic() - batch.opened)
            except Aborted:
                return
            self._acker.done(batch)

    def _send(self, events: list[StatsigEvent]) -> None:
        attempt = 0
        while True:
            if self.abort.is_set():
                raise Aborted
            if self._limiter is not None and self.abort.wait(self._limiter.reserve(len(events))):
                raise Aborted
            started = time.monotonic()
            try:
                self._sink.send(events, attempt)
            except RejectedError as e:
                _OUTCOME_SECONDS["rejected"].observe(time.monotonic() - started)
                self._set_state(attempt, None)
                self._isolate(events, e)
                return
            except RetryableError as e:
                outcome = "auth_failed" if isinstance(e, AuthError) else "retryable"
                _OUTCOME_SECONDS[outcome].observe(time.monotonic() - started)
                self._set_state(attempt, e)
                delay = self._backoff.delay(attempt, e.retry_after)
                level = logging.ERROR if isinstance(e, AuthError) else logging.WARNING
                if attempt == 0 or attempt % 10 == 0 or isinstance(e, AuthError):
                    log.log(level, "delivery failed, will retry", extra={
                        "error": str(e), "events": len(events), "attempt": attempt + 1,
                        "retry_in_s": round(delay, 2)})
                self._stats.add(send_retries=1, events_retried=len(events))
                attempt += 1
                if self.abort.wait(delay):
                    raise Aborted from None
                continue
            _OUTCOME_SECONDS["ok"].observe(time.monotonic() - started)
            self._set_state(attempt, None)
            self._stats.add(events_delivered=len(events))
            return

    def _isolate(self, events: list[StatsigEvent], error: RejectedError) -> None:
        """Statsig refused this batch: find the refused events by halving, send the rest."""
        if len(events) == 1:
            try:
                raw = _encode(events[0])
            except (TypeError, ValueError, RecursionError):  # unencodable (see sink._dumps): keep what it was
                raw = _REPR.repr(events[0]).encode()  # bounded: plain repr() recurses into RecursionError
            reason = f"rejected by Statsig: {error}" if error.status else f"cannot be sent: {error}"
            self._dead_letter(Rejection(None, "statsig", -1, -1, reason, raw, len(raw)))
            self._stats.add(events_rejected_by_statsig=1, events_dead_lettered=1)
            log.error("event rejected by Statsig, dead-lettered", extra={"error": str(error)})
            return
        mid = len(events) // 2
        self._send(events[:mid])
        self._send(events[mid:])

    def _dead_letter(self, rejection: Rejection) -> None:
        """Record a refused event; on a full disk hold the batch and retry (as the reader does).

        An OSError here used to end the sender thread: its batch was never acknowledged and,
        with the in-flight window, delivery stopped for good.
        """
        delay = 0.5
        while True:
            try:
                self._deadletter.write(rejection)
                return
            except OSError as e:
                log.error("cannot write dead-letter file, retrying",
                          extra={"path": str(self._deadletter.path), "error": str(e)})
                if self.abort.wait(delay):
                    raise Aborted from None
                delay = min(delay * 2, 30.0)

    def _set_state(self, attempt: int, error: RetryableError | None) -> None:
        """Track how many sends are failing; the sink state is the worst of them."""
        with self._state_lock:
            was_failing = attempt > 0
            if error is None:
                if was_failing:
                    self._retrying -= 1
                    if self._retrying == 0:
                        log.info("delivery recovered")
            elif not was_failing:
                self._retrying += 1
            if self._retrying == 0:
                self._stats.sink_state = "ok"
            elif isinstance(error, AuthError):
                self._stats.sink_state = "auth_failed"
            elif self._stats.sink_state != "auth_failed":
                self._stats.sink_state = "retrying"
