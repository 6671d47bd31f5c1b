"""`replay`: deliver whole files again (plain or .gz), oldest first, then exit with a summary.

It is `run --once` with extras, built from the same pieces: the files become one
SequenceSource (a FileTailer per plain file, a GzipSource per .gz), an EventSelector
decodes and filters lines, a TokenBucket paces the senders, and positions go to their own
checkpoint file (`replay-checkpoints.json`, own lock) so a replay resumes where it was
interrupted, never sends a file twice by accident, and never moves `run`'s positions.

What it serves is its own (`REPLAY`), not `run`'s: health and metrics on --metrics-listen
(a long replay can be watched and scraped), never the receiver (--listen is ignored with a
warning: a replay reads finished files, nothing appends to them).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..app import Forwarder, RunHooks, RunResult, Server
from ..decode.event import iso_to_epoch_ms
from ..delivery.ratelimit import TokenBucket
from ..errors import ConfigError
from ..model import StatsigEvent
from ..settings import Settings
from ..source import Source
from ..source.compressed import GzipSource, is_gzip
from ..source.discovery import expand as discover
from ..source.fingerprint import identify_path
from ..source.sequence import Part, SequenceSource
from ..source.tailer import FileTailer
from ..state.checkpoints import REPLAY_CHECKPOINT_FILE, Checkpoints
from ..state.lock import REPLAY_LOCK_FILE
from .progress import Progress

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
REPLAY_SERVES: frozenset[Server] = frozenset({"metrics"})
RATE_BATCHES_PER_S = 4  # with --rate, batches hold at most rate/4 events: requests go out smoothly


def parse_time(text: str) -> int:
    """Epoch milliseconds from `1760000000000` or an ISO-8601 date/time (UTC when no zone)."""
    text = text.strip()
    return int(text) if text.isdigit() else iso_to_epoch_ms(text)


@dataclass
class EventSelector:
    """Which valid events a replay sends: `since <= time < until`, and names in `names`.

    Events without a `time` are kept (they sit in file order among the others) unless
    `require_time`. Events left out are "skipped": counted, and passed by the checkpoint.
    """

    since: int | None = None
    until: int | None = None
    require_time: bool = False
    names: frozenset[str] | None = None

    @property
    def filters_time(self) -> bool:
        return self.since is not None or self.until is not None or self.require_time

    @property
    def filters(self) -> bool:
        """Whether it may leave any event out (else the reader need not ask it)."""
        return self.filters_time or self.names is not None

    def __call__(self, event: StatsigEvent, timed: bool) -> bool:
        """Send this event? `timed`: its line had a time (a missing one is filled when decoding)."""
        if self.filters_time:
            if not timed:
                if self.require_time:
                    return False
            elif (self.since is not None and event.time < self.since) or (
                self.until is not None and event.time >= self.until
            ):
                return False
        return self.names is None or event.eventName in self.names


def expand(patterns: tuple[str, ...], exclude: list[str] | None = None) -> list[str]:
    """Files named by paths and globs, each once, oldest (mtime) first, minus `exclude`
    (as `run` does); raises ConfigError."""
    found: dict[str, tuple[float, str]] = {}
    for pattern in patterns:
        paths = list(discover([pattern], exclude or ()))
        if not paths:
            log.warning("pattern matches no file", extra={"pattern": pattern})
        for path in paths:
            try:
                st = os.stat(path)
            except OSError as e:
                raise ConfigError(f"cannot read {path}: {e.strerror}") from None
            if not os.path.isfile(path):
                continue
            found.setdefault(os.path.realpath(path), (st.st_mtime, path))
    if not found:
        raise ConfigError("no files to replay")
    return [path for _, path in sorted(found.values())]


def sequence(files: list[str], checkpoints: Checkpoints, settings: Settings, restart: bool) -> SequenceSource:
    """One Source over `files` in order, each resuming at its replay checkpoint."""

    # Each file read whole once, from its start when it has no replay checkpoint.
    whole = settings.model_copy(update={"start_at": "beginning", "rotate_wait": 0.0, "once": True})
    fp = settings.fingerprint_bytes

    def opener(path: str, compressed: bool) -> Callable[[], Source | None]:
        def open_plain() -> Source | None:
            if restart:
                key = identify_path(path, fp).key(fp)
                if key is not None:
                    checkpoints.remove(key)
            return FileTailer([path], checkpoints, whole)

        def open_gzip() -> Source | None:
            source = GzipSource(path, settings.max_line_bytes, fingerprint_size=fp)
            if source.key is None:
                source.close()
                return None
            state = None if restart else checkpoints.get(source.key)
            if restart:
                checkpoints.remove(source.key)
            source.start(state.offset if state is not None else 0)
            checkpoints.track(source.key, *source.location(source.key))
            log.info("reading compressed file", extra={"path": path,
                                                       "offset": state.offset if state else 0})
            return source

        return open_gzip if compressed else open_plain

    return SequenceSource([Part(path, os.path.getsize(path), opener(path, is_gzip(path))) for path in files])


@dataclass
class ReplayOptions:
    """The replay command's own options (the rest are Settings)."""

    selector: EventSelector
    rate: float | None = None
    restart: bool = False
    progress_interval: float = 10.0


def replay(settings: Settings, patterns: tuple[str, ...], options: ReplayOptions) -> int:
    """Run a replay to its end (or a signal); print the summary; return the exit code."""
    files = expand(patterns, settings.exclude)
    limiter = None
    if options.rate is not None:
        batch = min(settings.batch_size, max(1, int(options.rate / RATE_BATCHES_PER_S)))
        settings = settings.model_copy(update={"batch_size": batch})
        limiter = TokenBucket(options.rate, burst=batch)
    total = sum(os.path.getsize(f) for f in files)
    log.info("replay starting", extra={"files": files, "bytes": total, "rate": options.rate,
                                       "restart": options.restart})
    progress = Progress("replay", lambda source: (getattr(source, "disk_position", 0), total),
                        options.progress_interval, sys.stderr.isatty(), total)
    hooks = RunHooks(
        serves=REPLAY_SERVES,
        namespace=REPLAY_CHECKPOINT_FILE,
        lock_name=REPLAY_LOCK_FILE,
        make_source=lambda checkpoints: sequence(files, checkpoints, settings, options.restart),
        select=options.selector if options.selector.filters else None,
        limiter=limiter,
        tick=progress.tick,
    )
    started = time.monotonic()
    result = None
    try:
        result = Forwarder(settings, hooks=hooks).run()
    finally:
        progress.close(complete=result is not None and result.clean and not result.interrupted)
    summary = summarize(result, time.monotonic() - started)
    log.info("replay finished" if not result.interrupted else "replay interrupted", extra=summary)
    click.echo(format_summary(summary, result), err=True)
    if result.failed:
        return 1
    return EXIT_INTERRUPTED if result.interrupted else 0


def summarize(result: RunResult, duration: float) -> dict[str, Any]:
    s = result.stats
    invalid = int(s["events_dead_lettered"]) - int(s["events_rejected_by_statsig"])
    read = int(s["events_read"]) + invalid
    return {
        "events_read": read,
        "events_delivered": s["events_delivered"],
        "events_dead_lettered": s["events_dead_lettered"],
        "events_skipped": s["events_skipped"],
        "events_removed": s["events_removed"],
        "removed_by_rule": result.removed_by_rule,
        "duration_s": round(duration, 3),
        "events_per_s": round(read / duration, 1) if duration > 0 else 0.0,
        "complete": not result.interrupted and result.clean,
    }


def format_summary(summary: dict[str, Any], result: RunResult) -> str:
    head = "replay interrupted (re-run the same command to resume)" if result.interrupted else "replay done"
    removed = f", {summary['events_removed']} removed by rules" if summary["removed_by_rule"] else ""
    rules = "".join(f"\n  rule {r['origin']}:{r['rule']} ({r['action']}"
                    + (", dry run: would have removed" if r["dry_run"] else "") + f") {r['events']}"
                    for r in summary["removed_by_rule"])
    return (f"{head}: {summary['events_read']} events read, {summary['events_delivered']} delivered, "
            f"{summary['events_dead_lettered']} dead-lettered, {summary['events_skipped']} skipped{removed} "
            f"in {summary['duration_s']:.1f} s ({summary['events_per_s']:.0f} events/s){rules}")
