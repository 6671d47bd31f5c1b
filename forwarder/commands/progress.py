"""Progress of a one-shot run (`replay`, `run --once`).

On a terminal: a rich progress bar that stays whole at the bottom of the screen (bytes in
human units, rate, time left, event counts); log lines are printed above it while it is
shown. Otherwise: a `<label> progress` log line every `interval` seconds (or nothing, for
`run --once`, as before).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console
from rich.file_proxy import FileProxy
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar
from rich.text import Text

from ..health import Lag
from ..source import Source
from ..stats import Stats
from .status import human_bytes, human_count

log = logging.getLogger(__name__)

# (bytes done, bytes in all) of a source; total None: unknown yet
Measure = Callable[[Source], tuple[int, int | None]]


def counts(stats: Stats) -> dict[str, int]:
    """Event counters that add up: read >= delivered + dead-lettered + skipped + removed (rules).

    The reader adds a chunk's events to `events_read` after shipping its batches, so a
    snapshot can see a batch delivered before it was counted as read.
    """
    s = stats.snapshot()
    dead, by_statsig = int(s["events_dead_lettered"]), int(s["events_rejected_by_statsig"])
    delivered, skipped, removed = int(s["events_delivered"]), int(s["events_skipped"]), int(s["events_removed"])
    read = max(int(s["events_read"]) + dead - by_statsig, delivered + dead + skipped + removed)
    return {"read": read, "delivered": delivered, "dead_lettered": dead, "skipped": skipped, "removed": removed}


def delivered_bytes(lag: Callable[[], Lag], commit: bool) -> Measure:
    """For `run --once`: bytes delivered (checkpointed) out of the files' sizes; every file seen
    counts until the end, also once released. Without checkpoints (a dry run) only the counts."""
    seen: dict[str, tuple[int, int]] = {}

    def measure(source: Source) -> tuple[int, int | None]:
        for path, f in lag().files.items():
            seen[path] = (f.delivered, f.size)
        if not commit:
            return 0, None
        return sum(d for d, _ in seen.values()), sum(size for _, size in seen.values())

    return measure


class _Speed(ProgressColumn):
    """Bytes/s in the same binary units as the sizes (rich's own column uses decimal ones)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed")


class Progress:
    """Call `tick` about 5 times a second (RunHooks.tick), `close` at the end."""

    def __init__(self, label: str, measure: Measure, interval: float | None, tty: bool,
                 total: int | None = None, stream: IO[str] | None = None) -> None:
        self.label = label
        self.measure = measure
        self.interval = interval  # None: no log lines when not on a terminal
        self.started = time.monotonic()
        self._next_log = self.started + (interval or 0.0)
        self._bar: Bar | None = None
        self._task: Any = None
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._last: tuple[Source, Stats] | None = None
        if tty:
            self._show(stream or sys.stderr, total)

    def _show(self, stream: IO[str], total: int | None) -> None:
        console = Console(file=stream)
        self._bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                        DownloadColumn(binary_units=True), _Speed(), TimeRemainingColumn(elapsed_when_finished=True),
                        TextColumn("{task.fields[events]}"), console=console, transient=False,
                        redirect_stdout=False, redirect_stderr=False, refresh_per_second=5)
        self._task = self._bar.add_task(self.label, total=total, events="0 events read, 0 delivered")
        self._bar.start()
        # Log lines go through rich, which prints them above the bar.
        proxy = FileProxy(console, stream)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                self._swapped.append((handler, handler.setStream(proxy)))

    def tick(self, source: Source, stats: Stats) -> None:
        self._last = (source, stats)
        done, total = self.measure(source)
        c = counts(stats)
        if self._bar is not None:
            elapsed = time.monotonic() - self.started
            per_s = f" ({human_count(round(c['delivered'] / elapsed))}/s)" if elapsed > 0 else ""
            events = f"{human_count(c['read'])} events read, {human_count(c['delivered'])} delivered{per_s}"
            if c["dead_lettered"]:
                events += f", {c['dead_lettered']} dead-lettered"
            if c["skipped"]:
                events += f", {c['skipped']} skipped"
            if c["removed"]:
                events += f", {c['removed']} removed by rules"
            self._bar.update(self._task, completed=done, total=total, events=events)
            return
        if self.interval is None:
            return
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + self.interval
            elapsed = now - self.started
            eta = (total - done) * elapsed / done if done and total else None
            log.info(f"{self.label} progress", extra={
                "events_read": c["read"], "events_delivered": c["delivered"],
                "bytes_read": done, "bytes_total": total,
                "percent": round(100 * done / total, 1) if total else 100.0,
                "eta_s": None if eta is None else round(eta, 1)})

    def close(self, complete: bool = False) -> None:
        """Stop showing; `complete`: everything was delivered (the bar ends full)."""
        if self._bar is not None:
            if self._last is not None:
                self.tick(*self._last)  # the final counts
            task = self._bar.tasks[0]
            if complete and task.total is not None:
                self._bar.update(self._task, completed=task.total)
            self._bar.refresh()
            self._bar.stop()
            self._bar = None
        for handler, previous in self._swapped:
            handler.setStream(previous)
        self._swapped.clear()
