"""Sources turn files or stdin into Chunks of whole lines and Rejections.

Files: discovery.py (paths, globs, exclude) -> tailer.py (the scheduling loop) owning one
watcher.py per file, identified by fingerprint.py; wake.py wires a watchdog observer to the
tailer (`follow`). compressed.py reads a .gz, sequence.py chains sources (replay), stdin.py
reads standard input, lines.py splits bytes into whole lines.
"""

from __future__ import annotations

from typing import Protocol

from ..model import Item


class Source(Protocol):
    """What the pipeline needs from a source of lines."""

    def poll(self, budget: int) -> list[Item]:
        """Return what can be read now without blocking (about `budget` bytes per file)."""
        ...

    @property
    def exhausted(self) -> bool:
        """True once the source will never produce anything again (stdin at EOF)."""
        ...

    def location(self, key: str) -> tuple[str, int, int]:
        """(path, dev, ino) of the file behind a checkpoint key."""
        ...

    def close(self) -> None: ...
