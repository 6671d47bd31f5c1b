"""The reader loop: source -> decode/validate -> batch -> queue for the senders."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import orjson

from ..delivery.batcher import Batcher
from ..model import Batch, Chunk, Rejection, StatsigEvent
from ..rules import ActiveRules
from ..source import Source
from ..source.lines import too_long
from ..state.deadletter import DeadLetter
from ..stats import Stats
from .codec import LineError, StatsigRuleError, decode_object, parse_line
from .event import OversizeFields, UnknownFields, fast_path, over_limits

log = logging.getLogger(__name__)

READ_BUDGET = 1024 * 1024  # bytes per poll in all; sources take files in turn (fairness)

Selector = Callable[[dict[str, Any], StatsigEvent], bool]
"""(the line's JSON object, its Statsig event) -> send it? False: a valid event left out on
purpose (replay's filters): counted as skipped, and passed by the checkpoint like any line."""


@runtime_checkable
class Paced(Protocol):
    """A source that says when it needs polling (FileTailer); others are polled every poll_interval."""

    @property
    def settle(self) -> float:
        """Seconds to let writes gather after a wake-up before reading."""
        ...

    def next_poll(self) -> float:
        """Seconds until a poll is needed without a wake-up (math.inf: only on a wake-up)."""
        ...


class Reader:
    """Runs in its own thread until stopped or the source is exhausted.

    Blocks on the bounded batch queue when the senders fall behind (backpressure), so
    memory is bounded by the queue depth times the batch size, whatever the file size.
    """

    def __init__(
        self,
        source: Source,
        batcher: Batcher,
        batches: queue.Queue[Batch | None],
        deadletter: DeadLetter,
        stats: Stats,
        wake: threading.Event,
        poll_interval: float,
        max_line_bytes: int,
        unknown_fields: UnknownFields,
        select: Selector | None = None,
        event_id_field: str = "",
        oversize_fields: OversizeFields = "send",
        rules: ActiveRules | None = None,
    ) -> None:
        self.source = source
        self.batcher = batcher
        self.batches = batches
        self.deadletter = deadletter
        self.stats = stats
        self.wake = wake
        self.poll_interval = poll_interval
        self.max_line_bytes = max_line_bytes
        self.unknown_fields = unknown_fields
        self.select = select
        self.event_id_field = event_id_field  # metadata key of "<fingerprint>:<offset>"; "" = none
        self.oversize_fields = oversize_fields
        self.rules = rules  # event rules: removed events are counted and passed like skipped ones
        self.stop = threading.Event()  # stop reading, ship what was read
        self.abort = threading.Event()  # give up even on shipping

    def run(self) -> None:
        """Read until stopped or exhausted, then ship the partial batch. Whoever owns the
        senders tells them that no more batches come (`Senders.stop`), once this returns."""
        self._loop()
        self._ship(self.batcher.take())

    def _loop(self) -> None:
        source = self.source
        paced = source if isinstance(source, Paced) else None
        since = time.monotonic()  # what the next poll reads was written after this
        while not self.stop.is_set():
            self.wake.clear()
            polled = time.monotonic()
            self.batcher.since = since
            items = source.poll(READ_BUDGET)
            for item in items:
                if isinstance(item, Chunk):
                    self._chunk(item)
                else:
                    self._reject(item)
                if self.abort.is_set():
                    return
            due = self.batcher.seconds_until_due()
            if due is not None and due <= 0:
                self._ship(self.batcher.take())
                due = None
            since = polled
            timeout = self.poll_interval if paced is None else paced.next_poll()
            if items and (paced is None or timeout <= 0):
                continue  # more may be there already (byte budget)
            if not items and source.exhausted:
                return
            if due is not None:
                timeout = min(timeout, max(due, 0.0))
            if timeout <= 0:
                continue
            if self.wake.wait(None if timeout == math.inf else timeout):
                since = time.monotonic()  # woken by a write: it came just before
                if paced is not None:
                    self.stop.wait(paced.settle)  # let what follows it gather: one read for them all

    def _chunk(self, chunk: Chunk) -> None:
        lines = chunk.data.split(b"\n")
        if not chunk.final:
            lines.pop()  # the empty piece after the last newline
        key = chunk.key
        offset = chunk.start
        batcher = self.batcher
        max_len = self.max_line_bytes
        loads, fast = orjson.loads, fast_path
        select = self.select
        id_field = self.event_id_field
        id_prefix = key + ":" if key is not None and id_field else None
        ruleset = self.rules.current if self.rules is not None else None  # swapped between chunks only
        plans = ruleset.plans if ruleset is not None else {}
        key_prefix = key + ":" if key is not None else None
        # Events gather in a local list and go to the batcher once per batch or chunk, not
        # once per event; `room_*` count down what the open batch still takes.
        room_n, room_b = batcher.room()
        pending: list[StatsigEvent] = []
        append = pending.append
        pending_bytes = 0
        n_events = 0
        n_skipped = 0
        n_removed = 0
        holes = b"\0" in chunk.data
        check_len = len(chunk.data) > max_len  # no line can be longer than its chunk
        lines_done = 0  # lines already counted in stats (before a mid-chunk ship)
        for i, line in enumerate(lines):
            start = offset
            size = len(line)
            offset += size + 1
            if holes and line[:1] == b"\0":  # hole left by a writer that kept its offset (copytruncate)
                line = line.lstrip(b"\0")
                size = len(line)
            if check_len and size > max_len:
                self._reject(too_long(key, chunk.path, start, offset, line, size, max_len))
                continue
            try:  # the common case inline; parse_line/decode_object decide (and explain) the rest
                obj = loads(line)
                event = fast(obj, size) if type(obj) is dict else None
            except orjson.JSONDecodeError:
                obj = event = None
            if event is None:
                if not line.strip(b" \t\r"):  # JSON whitespace only; a form feed is garbage
                    continue
                try:
                    if type(obj) is not dict:
                        obj = parse_line(line)
                    event = decode_object(obj, self.unknown_fields, self.oversize_fields)
                except LineError as e:
                    if isinstance(e, StatsigRuleError):
                        self.stats.count_statsig_rules(e.over, rejected=True)
                    self._reject(Rejection(key, chunk.path, start, offset, str(e), line, size))
                    continue
                if self.oversize_fields == "send":  # ("reject" raised above)
                    over = over_limits(event, size)
                    if over:
                        self.stats.count_statsig_rules(over, rejected=False)
            if select is not None and not select(obj, event):
                n_skipped += 1
                continue
            if ruleset is not None:
                try:
                    plan = plans[event["eventName"]]  # None for names no rule touches
                except KeyError:
                    plan = ruleset.plan(event["eventName"])
                if plan is not None and plan(event, key_prefix, start, line):
                    n_removed += 1
                    continue
            if id_prefix is not None:
                try:
                    event["metadata"][id_field] = id_prefix + str(start)
                except KeyError:
                    event["metadata"] = {id_field: id_prefix + str(start)}
            append(event)
            pending_bytes += size
            room_n -= 1
            room_b -= size
            if room_n <= 0 or room_b <= 0:
                batcher.extend(pending, pending_bytes)
                n_events += len(pending)
                if key is not None:
                    batcher.mark(key, offset)
                # Publish the counts so far: _ship may wait long on back-pressure (Statsig down).
                self._count(i + 1 - lines_done, n_events, n_skipped, n_removed)
                lines_done, n_events, n_skipped, n_removed = i + 1, 0, 0, 0
                self._ship(batcher.take())
                pending = []
                append = pending.append
                pending_bytes = 0
                room_n, room_b = batcher.room()
        batcher.extend(pending, pending_bytes)
        n_events += len(pending)
        if chunk.final:
            offset -= 1  # no newline after the last line
        if key is not None:
            batcher.mark(key, offset)
        if ruleset is not None:
            ruleset.flush(self.stats)
        self._count(len(lines) - lines_done, n_events, n_skipped, n_removed)

    def _count(self, lines: int, sent: int, skipped: int, removed: int) -> None:
        """Add lines and events read to the stats (read = sent + skipped + removed by rules)."""
        self.stats.add(lines_read=lines, events_read=sent + skipped + removed, events_skipped=skipped,
                       events_removed=removed)

    def _reject(self, rejection: Rejection) -> None:
        delay = 0.5
        while True:
            try:
                self.deadletter.write(rejection)
                break
            except OSError as e:  # disk full: hold the position until it can be recorded
                log.error("cannot write dead-letter file, retrying",
                          extra={"path": str(self.deadletter.path), "error": str(e)})
                if self.abort.wait(delay):
                    return
                delay = min(delay * 2, 30.0)
        self.stats.add(events_dead_lettered=1)
        if rejection.key is not None:
            self.batcher.mark(rejection.key, rejection.end)

    def _ship(self, batch: Batch | None) -> None:
        """Queue `batch`, waiting while the senders are behind (backpressure); dropped on abort."""
        while batch is not None and not self.abort.is_set():
            try:
                self.batches.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue
