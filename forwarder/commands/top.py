"""`top`: `status`, live, in the terminal (rich), refreshed every `interval`; `q` or Ctrl-C quits.

Costs the forwarder one /metrics and one /readyz request per refresh. Keys are read in
cbreak mode from the terminal, so it works over SSH and in tmux; the screen is rich's
alternate screen, restored on exit.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .status import Scrape, Status, Target, headline, human_bytes, human_seconds

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 40  # samples kept for the trends


def sparkline(values: list[float]) -> str:
    """Block characters scaled to the largest value (all ▁ when everything is 0)."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


def trend(values: list[float]) -> str:
    """Direction of a lag series: caught up | draining | growing | steady."""
    if not values or values[-1] == 0:
        return "caught up"
    recent = values[-4:]
    if len(recent) < 2 or recent[-1] == recent[0]:
        return "steady"
    return "draining" if recent[-1] < recent[0] else "growing"


@dataclass
class History:
    """Lag over the last HISTORY refreshes: in all, and per file."""

    total: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    files: dict[str, deque[float]] = field(default_factory=dict)
    at: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def add(self, st: Status) -> None:
        self.at.append(time.monotonic())
        self.total.append(float(st.bytes_behind))
        for f in st.files:
            self.files.setdefault(f.path, deque(maxlen=HISTORY)).append(float(f.bytes_behind or 0))

    def drain_rate(self) -> float | None:
        """Bytes/s the total lag shrank over the last few refreshes (None unless draining)."""
        if len(self.total) < 2:
            return None
        n = min(4, len(self.total))
        dt = self.at[-1] - self.at[-n]
        shrank = self.total[-n] - self.total[-1]
        return shrank / dt if dt > 0 and shrank > 0 else None


def render(st: Status, history: History, width: int = 160) -> RenderableType:
    """One frame for a terminal `width` columns wide."""
    parts: list[RenderableType] = [Text(line) for line in headline(st)]
    total = list(history.total)
    direction = trend(total)
    lag = Text(f"lag: {human_bytes(st.bytes_behind)} behind, {direction}  ")
    lag.append(sparkline(total), style="yellow" if direction == "growing" else "cyan")
    rate = history.drain_rate()
    if direction == "draining" and rate:
        lag.append(f"  {human_bytes(rate)}/s, caught up in ~{human_seconds(st.bytes_behind / rate)}")
    parts.append(lag)
    wide = width >= 120  # the bar and the trend only where they fit beside the figures
    table = Table(expand=True, box=None, pad_edge=False)
    table.add_column("PATH", overflow="fold", ratio=1, min_width=16)
    for name in ("DELIVERED", "SIZE", "BEHIND", "FOR", "RATE"):
        table.add_column(name, justify="right", no_wrap=True)
    if wide:
        table.add_column("DELIVERED / SIZE", width=22, no_wrap=True)
        table.add_column("LAG TREND", width=22, no_wrap=True)
    for f in st.files:
        size = f.size or 0
        cells: list[RenderableType] = [
            f.path, human_bytes(f.offset), human_bytes(f.size), human_bytes(f.bytes_behind),
            human_seconds(f.seconds_behind), "-" if f.bytes_per_s is None else f"{human_bytes(f.bytes_per_s)}/s"]
        if wide:
            series = list(history.files.get(f.path, []))
            cells.append(ProgressBar(total=max(size, 1), completed=min(f.offset, size) if size else 1, width=20,
                                     complete_style="green" if not f.bytes_behind else "yellow"))
            cells.append(f"{sparkline(series[-12:])} {trend(series)}")
        table.add_row(*cells)
    if not st.files:
        parts.append(Text("no files followed yet"))
    else:
        parts.append(table)
    parts.append(Text("q: quit", style="dim"))
    return Group(*parts)


class Keys:
    """Single key presses from the terminal on stdin (cbreak: Ctrl-C still interrupts)."""

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        self._saved: list[int | list[bytes | int]] | None = None

    def __enter__(self) -> Keys:
        if self._fd is not None:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as `q` is pressed."""
        if self._fd is None:
            time.sleep(seconds)
            return False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready and os.read(self._fd, 32).lower().startswith(b"q"):
                return True
        return False


def top(find: Callable[[], Target], interval: float, console: Console | None = None) -> int:
    """Refresh until `q` or Ctrl-C; exit code 0."""
    console = console or Console(stderr=False)
    history = History()
    prev: Scrape | None = None
    try:
        with Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                  redirect_stderr=False, redirect_stdout=False) as live:
            while True:
                st, scraped = find().status(prev)
                prev = scraped
                history.add(st)
                live.update(render(st, history, console.width), refresh=True)
                if keys.quit_within(interval):
                    break
    except KeyboardInterrupt:
        pass
    return 0
