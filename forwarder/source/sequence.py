"""Serve several sources one after the other, as one Source."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..model import Chunk, Item
from . import Source

log = logging.getLogger(__name__)


@dataclass
class Part:
    """One source of the sequence, opened only when its turn comes."""

    name: str
    size: int  # bytes on disk, for progress
    open: Callable[[], Source | None]  # None: nothing to read (e.g. an empty file)


class SequenceSource:
    """Polls each part until it is exhausted, then moves on to the next; exhausted at the end.

    Identities are read once per sequence: when a later part has an identity an earlier
    part already served (a `.gz` copy of a plain file given too), the bytes already read
    are dropped rather than sent twice.
    """

    def __init__(self, parts: list[Part]) -> None:
        self._parts = list(parts)
        self._index = -1
        self._current: Source | None = None
        self._opened: list[Source] = []
        self._owner: dict[str, Source] = {}
        self._read_upto: dict[str, int] = {}
        self._done_bytes = 0  # disk bytes of finished parts
        self._current_pos = 0
        self.total_bytes = sum(p.size for p in parts)
        self._next()

    @property
    def exhausted(self) -> bool:
        return self._current is None and self._index >= len(self._parts)

    @property
    def disk_position(self) -> int:
        """Disk bytes read so far, across parts (progress against total_bytes)."""
        current = self._current
        pos = getattr(current, "disk_position", self._current_pos) if current is not None else 0
        return self._done_bytes + min(pos, self._size())

    def location(self, key: str) -> tuple[str, int, int]:
        owner = self._owner.get(key)
        return owner.location(key) if owner is not None else ("", 0, 0)

    def poll(self, budget: int) -> list[Item]:
        while self._current is not None:
            items = self._current.poll(budget)
            if items:
                return self._dedupe(items)
            if not self._current.exhausted:
                return []
            self._done_bytes += self._size()
            self._next()
        return []

    def close(self) -> None:
        for source in self._opened:
            source.close()
        self._opened.clear()

    def _size(self) -> int:
        return self._parts[self._index].size if 0 <= self._index < len(self._parts) else 0

    def _next(self) -> None:
        if self._current is not None:
            self._current.close()
            self._opened.remove(self._current)
        self._current = None
        self._current_pos = 0
        while self._current is None and self._index + 1 < len(self._parts):
            self._index += 1
            part = self._parts[self._index]
            try:
                self._current = part.open()
            except OSError as e:
                log.error("cannot open file, skipping it", extra={"path": part.name, "error": str(e)})
                self._done_bytes += part.size
                continue
            if self._current is None:
                self._done_bytes += part.size
            else:
                self._opened.append(self._current)
        if self._current is None:
            self._index = len(self._parts)

    def _dedupe(self, items: list[Item]) -> list[Item]:
        assert self._current is not None
        out: list[Item] = []
        for item in items:
            key = item.key
            if key is None:
                out.append(item)
                continue
            owner = self._owner.setdefault(key, self._current)
            if isinstance(item, Chunk):
                end = item.start + len(item.data)
                upto = self._read_upto.get(key, 0) if owner is not self._current else 0
                if end <= upto:
                    continue
                if item.start < upto:
                    item = Chunk(key, item.path, upto, item.data[upto - item.start :], item.final)
            else:
                end = item.end
                if owner is not self._current and end <= self._read_upto.get(key, 0):
                    continue
            self._current_pos = end
            self._read_upto[key] = max(end, self._read_upto.get(key, 0))
            out.append(item)
        return out
