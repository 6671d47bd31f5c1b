"""One followed file: its descriptor, identity, read position and lifecycle state.

    FOLLOWING --(path now names another file, or is gone)--> DRAINING --(read to its end)--> RELEASED
    FOLLOWING --(idle while more than max_open_files are open)--> PARKED (fd closed) --> FOLLOWING
    PARKED --(its path names another file now)--> RELEASED

Identity is separate from the state: a watcher without `key` has not been identified yet
(first line incomplete, or a .gz still being written). The tailer (tailer.py) moves
watchers between states and releases them through one path (`FileTailer._release`).
"""

from __future__ import annotations

import enum
import logging
import os
import time

from ..model import Item
from .compressed import GzipSource
from .fingerprint import Head, content_key, data_start, matches
from .lines import LineBuffer

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # bytes per pread, and per file per poll (fairness)


class State(enum.Enum):
    """Where a watcher is in its life (see the module docstring)."""

    FOLLOWING = "following"  # its path names it: read as it grows
    DRAINING = "draining"  # rotated away or deleted: read to its end, then released
    PARKED = "parked"  # descriptor closed while idle (max_open_files); reopened when it changes
    RELEASED = "released"  # closed for good


class Kind(enum.Enum):
    """How the content is read, decided from the same bytes as the identity."""

    UNKNOWN = "unknown"  # empty so far: neither identified nor classified
    TEXT = "text"  # followed as it grows
    GZIP = "gzip"  # read whole once complete, through a GzipSource; never followed


class Found(enum.Enum):
    """How the watcher came to be: decides where a file without checkpoint starts."""

    AT_START = "at_start"  # found by the first scan: start_at applies
    LATER = "later"  # appeared while running: from byte 0 (or what ignore_older skipped)
    REWRITTEN = "rewritten"  # truncated or rewritten in place while followed: always from byte 0


class FileWatcher:
    """One file read from a position; knows its identity (fingerprint key)."""

    def __init__(self, path: str, fd: int, st: os.stat_result, max_line_bytes: int, found: Found) -> None:
        self.path = path
        self.real = os.path.realpath(path)
        self.fd: int | None = fd  # None while parked or released
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.state = State.FOLLOWING
        self.kind = Kind.UNKNOWN
        self.found = found
        self.key: str | None = None
        self.pos = 0  # next byte to read
        self.origin = 0  # where reading started (delivered position before any checkpoint)
        self.lines = LineBuffer(None, path, 0, max_line_bytes)
        self.evented = False  # the observer reports changes to it
        self.changed = False  # the observer reported a change not read yet
        self.at_eof = False
        self.short_tried = False  # identified by its short head once fingerprint_wait passed (if at all)
        self.skip_to = 0  # without checkpoint, start here (ignore_older)
        self.opened = time.monotonic()
        self.last_growth = self.opened
        self.gz: GzipSource | None = None
        self.gz_sig: tuple[int, int] | None = None  # (size, mtime_ns) when last looked at

    @property
    def compressed(self) -> bool:
        return self.kind is Kind.GZIP

    @property
    def draining(self) -> bool:
        return self.state is State.DRAINING

    @property
    def parked(self) -> bool:
        return self.state is State.PARKED

    @property
    def read_upto(self) -> int:
        """Where a later copy of this content resumes: bytes read (decompressed for gzip)."""
        return self.gz.offset if self.gz is not None else self.pos

    def identify(self, head: Head, size: int, short_ok: bool) -> str | None:
        """Text identity from `head` (see fingerprint.content_key)."""
        self.kind = Kind.TEXT
        return content_key(head.data, size, short_ok=short_ok)

    def start(self, key: str, offset: int) -> None:
        self.key = key
        self.lines.key = key
        if self.gz is not None:
            # Same first line but shorter than what was read: a copy compressed while the app still
            # wrote to the original (logrotate `compress` without `delaycompress`), nothing new.
            self.gz.start(offset, restart_if_shorter=False)
            self.pos = self.origin = self.gz.position
            return
        if offset == 0 and self.fd is not None:
            offset = data_start(self.fd) or 0  # skip a leading hole (copytruncate, stale writer)
        self.pos = offset
        self.origin = offset
        self.lines.reset(offset)

    def read(self, budget: int, out: list[Item], fp_bytes: int) -> bool:
        """Read up to `budget` bytes; False when the file changed identity under us."""
        assert self.fd is not None
        if self.gz is not None:
            out.extend(self.gz.poll(budget))
            self.pos = self.gz.position
            return True
        if self.at_eof and not self._still_same_file(fp_bytes):
            return False
        while budget > 0:
            data = os.pread(self.fd, min(READ_SIZE, budget), self.pos)
            if not data:
                self.at_eof = True
                return True
            self.at_eof = False
            self.last_growth = time.monotonic()
            self.pos += len(data)
            budget -= len(data)
            self.lines.feed(data, out)
        return True

    def _still_same_file(self, fp_bytes: int) -> bool:
        """At EOF: detect truncation (shrunk) and in-place rewrites (head changed)."""
        assert self.fd is not None and self.key is not None
        size = os.fstat(self.fd).st_size
        if size == self.pos:
            return True
        if size < self.pos:
            log.info("file truncated, reading again from the start", extra={"path": self.path})
            return False
        if not matches(self.fd, self.key, fp_bytes):
            log.info("file rewritten in place, reading again from the start", extra={"path": self.path})
            return False
        return True

    def rewritten(self) -> None:
        """Truncated or rewritten in place: a new file from byte 0, to be identified again."""
        self.key = None
        self.lines.key = None
        self.kind = Kind.UNKNOWN
        self.at_eof = False
        self.found = Found.REWRITTEN
        self.short_tried = False
        self.opened = time.monotonic()
        self.lines.reset(0)

    def park(self) -> None:
        """Close the descriptor while idle."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.state = State.PARKED

    def unpark(self, fd: int) -> None:
        self.fd = fd
        self.at_eof = False
        self.state = State.FOLLOWING

    def close(self) -> None:
        """Release for good."""
        if self.gz is not None:
            self.gz.close()
            self.gz = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.state = State.RELEASED
