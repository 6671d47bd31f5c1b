"""Follow NDJSON files: appends, rename rotation, truncation, deletion, new files.

`FileWatcher` reads one open file; `FileTailer` finds files, decides which watcher owns
which identity, and moves watchers through their states:

    active  --(path now names another file, or is gone)-->  draining  --(EOF, quiet for
    rotate_wait)--> released

A draining file is released only once it has been read to its end, so a rotation while
the sink is down never abandons unread bytes (reading pauses, the file stays open).
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass

from ..checkpoint import Checkpoints
from ..fingerprint import fingerprint_fd
from ..model import Item
from .lines import LineBuffer

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024


@dataclass(slots=True)
class TailOptions:
    """The file-following knobs, taken from Settings."""

    start_at: str = "beginning"
    max_line_bytes: int = 1024 * 1024
    rotate_wait: float = 5.0
    scan_interval: float = 1.0
    once: bool = False  # read every file to its end, then report exhausted


class FileWatcher:
    """One open file read from a position; knows its identity (fingerprint key)."""

    def __init__(self, path: str, fd: int, st: os.stat_result, max_line_bytes: int) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.key: str | None = None
        self.pos = 0  # next byte to read
        self.origin = 0  # where reading started (delivered position before any checkpoint)
        self.lines = LineBuffer(None, path, 0, max_line_bytes)
        self.draining = False
        self.fresh = False  # appeared while running (truncated/rewritten): always from byte 0
        self.at_eof = False
        self.last_growth = time.monotonic()

    def identify(self) -> str | None:
        if self.key is None:
            self.key = fingerprint_fd(self.fd)
            self.lines.key = self.key
        return self.key

    def start(self, offset: int) -> None:
        self.pos = offset
        self.origin = offset
        self.lines.reset(offset)

    def read(self, budget: int, out: list[Item]) -> bool:
        """Read up to `budget` bytes; False when the file changed identity under us."""
        if self.at_eof and not self._still_same_file():
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

    def _still_same_file(self) -> bool:
        """At EOF: detect truncation (shrunk) and in-place rewrites (head changed)."""
        size = os.fstat(self.fd).st_size
        if size == self.pos:
            return True
        if size < self.pos:
            log.info("file truncated, reading again from the start", extra={"path": self.path})
            return False
        if fingerprint_fd(self.fd) != self.key:
            log.info("file rewritten in place, reading again from the start", extra={"path": self.path})
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)


class FileTailer:
    """A Source over paths and globs, resuming each file at its checkpoint."""

    def __init__(
        self,
        patterns: list[str],
        checkpoints: Checkpoints,
        options: TailOptions,
        dir_change: threading.Event | None = None,
    ) -> None:
        self.patterns = patterns
        self.dir_change = dir_change or threading.Event()
        self.checkpoints = checkpoints
        self.options = options
        self.rescan = True
        self._by_path: dict[str, FileWatcher] = {}  # active watcher of each path
        self._by_key: dict[str, FileWatcher] = {}  # every identified watcher
        self._unidentified: list[FileWatcher] = []
        self._draining: list[FileWatcher] = []
        self._read_upto: dict[str, int] = {}  # keys whose watcher was released: bytes read
        self._locations: dict[str, tuple[str, int, int]] = {}
        self._next_scan = 0.0
        self._idle = False
        self._warned_missing: set[str] = set()

    @property
    def exhausted(self) -> bool:
        """With `once`: every file has been read to its end."""
        return self.options.once and self._idle


    def location(self, key: str) -> tuple[str, int, int]:
        return self._locations.get(key, ("", 0, 0))

    def open_files(self) -> list[tuple[str, str, int, int]]:
        """(path, key, size, origin) of each identified open file; callable from any thread."""
        out = []
        for key, w in list(self._by_key.items()):
            try:
                st = os.fstat(w.fd)
            except OSError:  # closed meanwhile
                continue
            if (st.st_dev, st.st_ino) == (w.dev, w.ino):  # not a reused descriptor
                out.append((w.path, key, st.st_size, w.origin))
        return out

    def watched_dirs(self) -> dict[str, bool]:
        """Directories whose changes should wake the tailer -> watch recursively?"""
        dirs: dict[str, bool] = {}
        for pattern in self.patterns:
            base = os.path.abspath(pattern)
            if not glob.has_magic(base):
                base = os.path.dirname(base)
            while glob.has_magic(base):
                base = os.path.dirname(base)
            dirs[base] = dirs.get(base, False) or "**" in pattern
        return dirs

    # -- the poll loop -------------------------------------------------------------------
    def poll(self, budget: int) -> list[Item]:
        now = time.monotonic()
        if self.dir_change.is_set():
            self.dir_change.clear()
            self.rescan = True
        if self.rescan or now >= self._next_scan:
            self.rescan = False
            self._next_scan = now + self.options.scan_interval
            self._scan()
        out: list[Item] = []
        for w in list(self._unidentified):
            self._try_identify(w)
        for w in list(self._by_key.values()):
            if not w.read(budget, out):
                self._reidentify(w)
        self._release_drained(now)
        if self.options.once and not out and all(w.at_eof for w in self._by_key.values()):
            for w in self._by_key.values():
                w.lines.finish(out)  # no more writes expected: release partial last lines
            self._idle = not out
        return out

    def close(self) -> None:
        for w in {id(w): w for w in [*self._by_key.values(), *self._unidentified]}.values():
            w.close()
        self._by_key.clear()
        self._by_path.clear()
        self._unidentified.clear()

    # -- discovery and rotation ------------------------------------------------------------
    def _scan(self) -> None:
        seen: set[str] = set()
        for pattern in self.patterns:
            paths = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if path in seen:
                    continue
                seen.add(path)
                self._check_path(path)
        for path in list(self._by_path):
            if path not in seen:
                self._start_draining(self._by_path.pop(path))

    def _check_path(self, path: str) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            w = self._by_path.pop(path, None)
            if w is not None:
                self._start_draining(w)
            elif path not in self._warned_missing:
                self._warned_missing.add(path)
                log.warning("file does not exist yet; waiting for it", extra={"path": path})
            return
        except OSError as e:
            log.error("cannot stat file", extra={"path": path, "error": str(e)})
            return
        self._warned_missing.discard(path)
        current = self._by_path.get(path)
        if current is not None:
            if (current.dev, current.ino) == (st.st_dev, st.st_ino):
                return
            log.info("file rotated: draining the old one, opening the new one", extra={"path": path})
            self._start_draining(self._by_path.pop(path))
        if any((w.dev, w.ino) == (st.st_dev, st.st_ino) for w in self._all_watchers()):
            return  # the same file through another path (symlink, hard link)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            log.error("cannot open file", extra={"path": path, "error": str(e)})
            return
        w = FileWatcher(path, fd, os.fstat(fd), self.options.max_line_bytes)
        self._by_path[path] = w
        self._unidentified.append(w)
        self._try_identify(w)

    def _try_identify(self, w: FileWatcher) -> None:
        key = w.identify()
        if key is None:
            return
        self._unidentified.remove(w)
        if key in self._by_key:
            # Same content already being read through another file (e.g. a copytruncate
            # copy while the original is not yet seen truncated): read it once.
            w.close()
            if self._by_path.get(w.path) is w:
                del self._by_path[w.path]
            return
        w.start(self._resume_offset(w, key))
        self._by_key[key] = w
        self._locations[key] = (os.path.abspath(w.path), w.dev, w.ino)
        self.checkpoints.track(key, *self._locations[key])

    def _resume_offset(self, w: FileWatcher, key: str) -> int:
        size = os.fstat(w.fd).st_size
        offset = self._read_upto.pop(key, None)
        if offset is None:
            state = self.checkpoints.get(key)
            offset = state.offset if state is not None else None
        if offset is None:
            offset = size if self.options.start_at == "end" and not w.fresh else 0
            log.info("new file", extra={"path": w.path, "offset": offset})
        elif offset > size:
            log.warning(
                "file is shorter than its checkpoint (truncated while stopped); reading from 0",
                extra={"path": w.path, "checkpoint": offset, "size": size},
            )
            offset = 0
        else:
            log.info("resuming file at checkpoint", extra={"path": w.path, "offset": offset})
        return offset

    def _reidentify(self, w: FileWatcher) -> None:
        """The file behind `w` was truncated or rewritten: it is a new file now."""
        if w.key is not None and self._by_key.get(w.key) is w:
            del self._by_key[w.key]
            self._read_upto[w.key] = w.lines.offset  # a copytruncate copy resumes here
        w.key = None
        w.lines.key = None
        w.at_eof = False
        w.fresh = True
        w.start(0)
        self._unidentified.append(w)
        self._try_identify(w)

    def _start_draining(self, w: FileWatcher) -> None:
        if w in self._unidentified:
            self._unidentified.remove(w)
            w.close()
            return
        w.draining = True
        self._draining.append(w)

    def _release_drained(self, now: float) -> None:
        for w in list(self._draining):
            if w.at_eof and w.lines.pending == 0 and now - w.last_growth >= self.options.rotate_wait:
                self._draining.remove(w)
                if w.key is not None and self._by_key.get(w.key) is w:
                    del self._by_key[w.key]
                    self._read_upto[w.key] = w.pos
                w.close()
                log.info("released rotated or deleted file", extra={"path": w.path})

    def _all_watchers(self) -> list[FileWatcher]:
        return [*self._by_key.values(), *self._unidentified]
