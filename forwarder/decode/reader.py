"""The reader loop: source -> decode/validate -> batch -> queue for the senders."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..delivery.batcher import Batcher
from ..model import Batch, Chunk, Rejection, StatsigEvent
from ..rules import ActiveRules
from ..rules.match import RuleSet
from ..source import Source
from ..source.lines import too_long
from ..state.deadletter import DeadLetter
from ..stats import Stats
from .codec import ChunkDecoder, LineError, StatsigRuleError, judge_line, line_ends, now_ms
from .event import OversizeFields, UnknownFields, add_event_ids, set_metadata

log = logging.getLogger(__name__)

READ_BUDGET = 1024 * 1024  # bytes per poll in all; sources take files in turn (fairness)

Selector = Callable[[StatsigEvent, bool], bool]
"""(a Statsig event, whether its line had its own time) -> send it? False: a valid event left
out on purpose (replay's filters): counted as skipped, and passed by the checkpoint like any line."""

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
        self.decoder = ChunkDecoder()
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
        """Decode a chunk in one call; when that call refuses anything, line by line."""
        data = chunk.data
        now = now_ms()
        many = None
        ids = (self.event_id_field, chunk.key + ":", chunk.start) if chunk.key is not None and self.event_id_field \
            else None
        # NULs (a copytruncate hole) and lines that may be too long are the per-line path's.
        if len(data) <= self.max_line_bytes and b"\0" not in data:
            many = self.decoder.decode(data, self.oversize_fields, now, ids)
        if many is None:
            self._lines(chunk, now)
            return
        count = self.stats.count_statsig_rules
        for _, over in many.over:
            count(over, rejected=False)
        events = many.events
        ruleset = self.rules.current if self.rules is not None else None  # swapped between chunks only
        if ids is not None and not many.ids_set:
            add_event_ids(events, [0, *many.ends[:-1]], *ids, data)
        if self.select is not None or ruleset is not None:
            self._filter(chunk, events, many.ends, set(many.untimed), ruleset)
            return
        self._add(chunk, events, many.ends, len(events))

    def _filter(self, chunk: Chunk, events: list[StatsigEvent], ends: list[int], untimed: set[int],
                ruleset: RuleSet | None) -> None:
        """The events of an all-good chunk through replay's selector and the rules."""
        key = chunk.key
        base = chunk.start
        data = chunk.data
        select = self.select
        key_prefix = key + ":" if key is not None else None
        kept: list[StatsigEvent] = []
        kept_ends: list[int] = []
        start = 0
        n_skipped = n_removed = 0
        for i, event in enumerate(events):
            end = ends[i]
            line_start, start = start, end
            if select is not None and not select(event, i not in untimed):
                n_skipped += 1
                continue
            if ruleset is not None and ruleset.removes(
                    event, key_prefix, base + line_start,
                    b"" if key_prefix is not None else data[line_start:end].rstrip(b"\n")):
                n_removed += 1
                continue
            kept.append(event)
            kept_ends.append(end)
        if ruleset is not None:
            ruleset.flush(self.stats)
        self._add(chunk, kept, kept_ends, len(events), n_skipped, n_removed)

    def _add(self, chunk: Chunk, events: list[StatsigEvent], ends: list[int] | None, lines: int,
             n_skipped: int = 0, n_removed: int = 0) -> None:
        """Batch the valid events of a chunk (`ends`: where each one's line ends in chunk.data;
        needed only when the chunk does not fit in the open batch), and mark the chunk read."""
        batcher = self.batcher
        key = chunk.key
        data = chunk.data
        end = chunk.start + len(data)
        room_n, room_b = batcher.room()
        n = len(events)
        # The whole chunk is read: counted before any ship, which may wait long on back-pressure.
        self._count(lines, n, n_skipped, n_removed)
        # Strictly less: a chunk that fills the batch exactly takes the loop, which ships the
        # batch with this chunk's position. (Left open and full, the next chunk's position
        # would be marked on it without its events: a crash after its acknowledgement lost them.)
        if n < room_n and len(data) - lines < room_b:  # line bytes, without newlines
            batcher.extend(events, len(data) - lines)
        else:
            if ends is None:
                ends = line_ends(data)
            # Batches close on count and on bytes, exactly as line by line.
            first = 0
            first_at = 0
            while first < n:
                room_n, room_b = batcher.room()
                if room_n <= 0 or room_b <= 0:  # full already: it goes as it is, marked as it is
                    self._ship(batcher.take())
                    continue
                last = min(n, first + room_n)
                if ends[last - 1] - first_at - (last - first) >= room_b:
                    last = first + 1
                    while last < n and ends[last - 1] - first_at - (last - first) < room_b:
                        last += 1
                nbytes = ends[last - 1] - first_at - (last - first)
                batcher.extend(events[first:last], nbytes)
                stop = ends[last - 1]
                if last - first >= room_n or nbytes >= room_b:
                    if key is not None:
                        batcher.mark(key, chunk.start + stop)
                    self._ship(batcher.take())
                first, first_at = last, stop
        if key is not None:
            batcher.mark(key, end)

    def _lines(self, chunk: Chunk, now: int) -> None:
        """A chunk line by line: the bad lines dead-lettered with their reasons, the rest batched."""
        lines = chunk.data.split(b"\n")
        if not chunk.final:
            lines.pop()  # the empty piece after the last newline
        key = chunk.key
        offset = chunk.start
        batcher = self.batcher
        max_len = self.max_line_bytes
        select = self.select
        id_field = self.event_id_field
        id_prefix = key + ":" if key is not None and id_field else None
        ruleset = self.rules.current if self.rules is not None else None  # swapped between chunks only
        key_prefix = key + ":" if key is not None else None
        unknown, oversize = self.unknown_fields, self.oversize_fields
        room_n, room_b = batcher.room()
        pending: list[StatsigEvent] = []
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
            if not line.strip(b" \t\r"):  # JSON whitespace only; a form feed is garbage
                continue
            try:
                decoded = judge_line(line, unknown, oversize, now)
            except LineError as e:
                if isinstance(e, StatsigRuleError):
                    self.stats.count_statsig_rules(e.over, rejected=True)
                self._reject(Rejection(key, chunk.path, start, offset, str(e), line, size))
                continue
            event = decoded.event
            if decoded.over:
                self.stats.count_statsig_rules(decoded.over, rejected=False)
            if select is not None and not select(event, decoded.timed):
                n_skipped += 1
                continue
            if ruleset is not None and ruleset.removes(event, key_prefix, start, line):
                n_removed += 1
                continue
            if id_prefix is not None:
                set_metadata(event, id_field, id_prefix + str(start))
            pending.append(event)
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
