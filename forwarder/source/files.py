"""Follow NDJSON files: appends, rename rotation, truncation, deletion, new files.

`FileWatcher` reads one file; `FileTailer` finds files (paths, globs, `exclude`),
decides which watcher owns which identity (fingerprint key), and moves watchers through
their states:

    unidentified --(first line complete, or fingerprint_wait passed)--> active
    active --(path now names another file, or is gone)--> draining
    draining --(read to its end, no partial line, quiet for rotate_wait)--> released
    active --(idle while more than max_open_files are open)--> parked (fd closed) --> active
    compressed: unidentified --(unchanged for rotate_wait)--> active --(read whole)--> released

A draining file is released only once it has been read to its end, so a rotation while
the sink is down never abandons unread bytes (reading pauses, the file stays open).

With native events (inotify) a file at its end is read again only when an event names
it, or on the glob_interval sweep; files the observer cannot see (symlink targets in
other directories, --poll, fallback) are checked every poll_interval.

A file starting with the gzip magic bytes (whatever its name: `events.ndjson.1.gz`) is a
compressed rotated file: complete once it has not changed for rotate_wait (logrotate
compresses into the final name), then read whole, once, through a GzipSource, keyed by the
fingerprint of its decompressed start and checkpointed in decompressed offsets, so the
compressed copy of a file already read resumes at its end. It is not followed: read to its
end (or to damage, which is logged), it is closed and not opened again unless it changes.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..model import Item
from ..state.checkpoints import Checkpoints, FileState
from .compressed import GZIP_MAGIC, GzipSource
from .fingerprint import data_start, fingerprint_fd, matches, matches_head
from .lines import LineBuffer

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # bytes per pread, and per file per poll (fairness)


@dataclass(slots=True)
class TailOptions:
    """The file-following knobs, taken from Settings."""

    start_at: str = "beginning"
    max_line_bytes: int = 1024 * 1024
    rotate_wait: float = 5.0
    scan_interval: float = 1.0
    once: bool = False  # read every file to its end, then report exhausted
    exclude: list[str] = field(default_factory=list)
    fingerprint_bytes: int = 256
    fingerprint_wait: float = 5.0
    partial_line_timeout: float = 30.0
    checkpoint_ttl: float = 7 * 86400.0
    ignore_older: float = 0.0  # 0: off
    max_open_files: int = 512

    @classmethod
    def from_settings(cls, s: Settings) -> TailOptions:
        return cls(
            start_at=s.start_at, max_line_bytes=s.max_line_bytes, rotate_wait=s.rotate_wait,
            scan_interval=s.glob_interval, once=s.once, exclude=list(s.exclude),
            fingerprint_bytes=s.fingerprint_bytes, fingerprint_wait=s.fingerprint_wait,
            partial_line_timeout=s.partial_line_timeout, checkpoint_ttl=s.checkpoint_ttl,
            ignore_older=s.ignore_older, max_open_files=s.max_open_files,
        )


class FileWatcher:
    """One file read from a position; knows its identity (fingerprint key)."""

    def __init__(self, path: str, fd: int, st: os.stat_result, max_line_bytes: int) -> None:
        self.path = path
        self.real = os.path.realpath(path)
        self.fd: int | None = fd  # None while parked
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.key: str | None = None
        self.pos = 0  # next byte to read
        self.origin = 0  # where reading started (delivered position before any checkpoint)
        self.lines = LineBuffer(None, path, 0, max_line_bytes)
        self.draining = False
        self.fresh = False  # appeared while running (truncated/rewritten): always from byte 0
        self.initial = False  # found by the first scan: start_at applies
        self.evented = False  # the observer reports changes to it
        self.changed = False  # the observer reported a change not read yet
        self.at_eof = False
        self.short_tried = False
        self.skip_to = 0  # without checkpoint, start here (ignore_older)
        self.opened = time.monotonic()
        self.last_growth = self.opened
        self.compressed = False  # starts with the gzip magic: read whole through `gz`, never followed
        self.gz: GzipSource | None = None
        self.gz_sig: tuple[int, int] | None = None  # (size, mtime_ns) when last looked at

    def identify(self, size: int, short_ok: bool) -> str | None:
        assert self.fd is not None
        return fingerprint_fd(self.fd, size, short_ok)

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

    def park(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        if self.gz is not None:
            self.gz.close()
            self.gz = None
        self.park()


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
        self._by_inode: dict[tuple[int, int], FileWatcher] = {}  # every watcher
        self._by_key: dict[str, FileWatcher] = {}  # every identified watcher
        self._unidentified: list[FileWatcher] = []
        self._draining: list[FileWatcher] = []
        self._read_upto: dict[str, tuple[int, float]] = {}  # released keys: (bytes read, when)
        # keys of files released after being deleted -> (bytes read, delivered state then)
        self._deleted: dict[str, tuple[int, FileState | None]] = {}
        self._gz_done: dict[tuple[int, int], tuple[int, int]] = {}  # (dev, ino) -> gz_sig when read whole
        self._scanned: set[tuple[int, int]] = set()
        self._locations: dict[str, tuple[str, int, int]] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._native = False
        self._watched: dict[str, bool] = {}
        self._next_scan = 0.0
        self._started = False
        self._cursor = 0
        self._idle = False
        self._warned: set[str] = set()
        self._ignored: dict[str, tuple[int, int, int]] = {}  # path -> dev, ino, size when too old

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
            if w.fd is None or w.compressed:  # closed while idle; compressed: size is not offsets
                continue
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
            parts = os.path.abspath(pattern).split(os.sep)
            magic = [i for i, part in enumerate(parts) if glob.has_magic(part)]
            if not magic:
                base, recursive = os.sep.join(parts[:-1]), False
            else:
                base, recursive = os.sep.join(parts[: magic[0]]), magic[0] < len(parts) - 1
            base = base or os.sep
            dirs[base] = dirs.get(base, False) or recursive
        return dirs

    def set_watching(self, native: bool, dirs: dict[str, bool]) -> None:
        """Tell the tailer which real directories deliver native events."""
        self._native = native
        self._watched = dict(dirs)

    def notify(self, path: str) -> None:
        """An observer saw `path` (a real path) change; called from the observer thread."""
        with self._dirty_lock:
            self._dirty.add(path)

    # -- the poll loop -------------------------------------------------------------------
    def poll(self, budget: int) -> list[Item]:
        """Read what is new, at most about `budget` bytes in all, files taken in turn."""
        now = time.monotonic()
        opts = self.options
        if self.dir_change.is_set():
            self.dir_change.clear()
            self.rescan = True
        sweep = False
        if self.rescan or now >= self._next_scan:
            self.rescan = False
            self._next_scan = now + opts.scan_interval
            self._scan()
            self._expire()
            sweep = True
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        if dirty:  # remembered per watcher: a file the budget does not reach now is read next time
            for w in self._by_inode.values():
                if w.real in dirty:
                    w.changed = True
            for w in self._unidentified:
                if w.real in dirty:
                    w.changed = True
        out: list[Item] = []
        for w in list(self._unidentified):
            waited = now - w.opened >= opts.fingerprint_wait or opts.once
            if self._due(w, sweep) or (waited and not w.short_tried):
                w.changed = False
                self._try_identify(w, waited)
        watchers = list(self._by_key.values())
        n = len(watchers)
        start = self._cursor % n if n else 0
        self._cursor = start + 1
        remaining = budget
        for i in range(n):
            w = watchers[(start + i) % n]
            if remaining <= 0:
                self._cursor = start + i  # the next poll starts with the first file skipped
                break
            if w.fd is None and not ((sweep or w.changed) and self._unpark(w)):
                continue
            if self._due(w, sweep):
                w.changed = False
                before = len(out)
                pos = w.pos
                if not w.read(min(remaining, READ_SIZE), out, opts.fingerprint_bytes):
                    self._reidentify(w)
                    continue
                remaining -= w.pos - pos
                if w.gz is not None and w.gz.exhausted:
                    self._release_compressed(w)
                    continue
                if len(out) > before:
                    continue
            if w.at_eof and w.lines.pending and now - w.lines.partial_since >= opts.partial_line_timeout:
                log.info("partial last line timed out; releasing it",
                         extra={"path": w.path, "offset": w.lines.offset, "size": w.lines.pending})
                w.lines.finish(out)
        self._release_drained(now)
        if opts.once and not out and all(w.at_eof for w in self._by_key.values()):
            for w in self._by_key.values():
                w.lines.finish(out)  # no more writes expected: release partial last lines
            self._idle = not out
        return out

    def _due(self, w: FileWatcher, sweep: bool) -> bool:
        """Does `w` need a read (or identity check) now?"""
        return sweep or not self._native or not w.evented or not w.at_eof or w.draining or w.changed

    def close(self) -> None:
        for w in {id(w): w for w in [*self._by_inode.values(), *self._by_key.values(),
                                     *self._unidentified, *self._draining]}.values():
            w.close()
        self._by_key.clear()
        self._by_path.clear()
        self._by_inode.clear()
        self._unidentified.clear()
        self._draining.clear()

    # -- discovery and rotation ------------------------------------------------------------
    def _scan(self) -> None:
        seen: set[str] = set()
        self._scanned.clear()
        for pattern in self.patterns:
            paths = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if path in seen or self._excluded(path):
                    continue
                seen.add(path)
                self._check_path(path)
        for path in list(self._by_path):
            if path not in seen:
                self._start_draining(self._by_path.pop(path))
        for where in [k for k in self._gz_done if k not in self._scanned]:
            del self._gz_done[where]
        self._started = True

    def _excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in self.options.exclude)

    def _check_path(self, path: str) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            w = self._by_path.pop(path, None)
            if w is not None:
                self._start_draining(w)
            elif path not in self._warned:
                self._warned.add(path)
                log.warning("file does not exist yet; waiting for it", extra={"path": path})
            return
        except OSError as e:
            log.error("cannot stat file", extra={"path": path, "error": str(e)})
            return
        self._warned.discard(path)
        if not stat.S_ISREG(st.st_mode):
            return
        self._scanned.add((st.st_dev, st.st_ino))
        current = self._by_path.get(path)
        if current is not None:
            if (current.dev, current.ino) == (st.st_dev, st.st_ino):
                return
            log.info("file rotated: draining the old one, opening the new one", extra={"path": path})
            self._start_draining(self._by_path.pop(path))
        if self._gz_done.get((st.st_dev, st.st_ino)) == (st.st_size, st.st_mtime_ns):
            return  # a compressed file already read whole, unchanged since
        other = self._by_inode.get((st.st_dev, st.st_ino))
        if other is not None and other.fd is None:
            self._drop_parked(other)  # renamed while parked, or its inode reused: identity decides
        elif other is not None:
            if other.draining:
                self._adopt(other, path)  # a rotated file renamed to a name the paths match
            return  # otherwise: the same file through another path (symlink, hard link)
        too_old = self.options.ignore_older > 0 and time.time() - st.st_mtime > self.options.ignore_older
        if too_old:
            if path not in self._ignored:
                log.info("file older than ignore_older; not followed until it changes", extra={"path": path})
            self._ignored[path] = (st.st_dev, st.st_ino, st.st_size)
            return
        if self._open_count() >= self.options.max_open_files and not self._park_one():
            if "max_open_files" not in self._warned:
                self._warned.add("max_open_files")
                log.warning("max_open_files reached and no file is idle; waiting to open more",
                            extra={"max_open_files": self.options.max_open_files, "path": path})
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            log.error("cannot open file", extra={"path": path, "error": str(e)})
            return
        w = FileWatcher(path, fd, os.fstat(fd), self.options.max_line_bytes)
        w.initial = not self._started
        ignored = self._ignored.pop(path, None)
        if ignored is not None and ignored[:2] == (w.dev, w.ino):
            w.skip_to = ignored[2]  # what it held while too old stays skipped (without checkpoint)
        w.evented = self._is_evented(w.real)
        self._by_path[path] = w
        self._by_inode[(w.dev, w.ino)] = w
        self._unidentified.append(w)
        self._try_identify(w, self.options.once)

    def _adopt(self, w: FileWatcher, path: str) -> None:
        log.info("rotated file matches the paths; following it under its new name",
                 extra={"path": path, "was": w.path})
        if w in self._draining:
            self._draining.remove(w)
        w.draining = False
        w.path = w.lines.path = path
        w.real = os.path.realpath(path)
        w.evented = self._is_evented(w.real)
        self._by_path[path] = w
        if w.key is not None:
            self._locations[w.key] = (os.path.abspath(path), w.dev, w.ino)
            self.checkpoints.track(w.key, *self._locations[w.key])

    def _is_evented(self, real: str) -> bool:
        d = os.path.dirname(real)
        return d in self._watched or any(
            rec and d.startswith(base.rstrip(os.sep) + os.sep) for base, rec in self._watched.items())

    def _try_identify(self, w: FileWatcher, short_ok: bool) -> None:
        if w.fd is None:
            return
        opts = self.options
        if w.compressed or os.pread(w.fd, 2, 0) == GZIP_MAGIC:
            key = self._identify_compressed(w)
        else:
            key = w.identify(opts.fingerprint_bytes, short_ok)
            if short_ok:
                w.short_tried = True
        if key is None:
            return
        if key.startswith("crc:") and key not in self._read_upto and self.checkpoints.get(key) is None:
            key = self._short_match(w) or key  # a short file identified earlier, grown since
        if key in self._by_key and w.gz is not None:
            # The compressed copy of a file still being read (logrotate `compress`): wait until
            # that one is released, then resume where it stopped.
            w.gz.close()
            w.gz = None
            return
        if w.gz is not None and self._skips_history(w, key):
            log.info("compressed file present at start not read (start_at = end)", extra={"path": w.path})
            self._release_compressed(w)
            return
        if key in self._by_key:
            # Same content already being read through another file (e.g. a copytruncate
            # copy while the original is not yet seen truncated): read it once.
            self._unidentified.remove(w)
            self._forget(w)
            w.close()
            return
        self._unidentified.remove(w)
        w.start(key, self._resume_offset(w, key))
        self._by_key[key] = w
        self._locations[key] = (os.path.abspath(w.path), w.dev, w.ino)
        self.checkpoints.track(key, *self._locations[key])

    def _identify_compressed(self, w: FileWatcher) -> str | None:
        """Identity of a compressed file once it is complete; None while it may still be written."""
        assert w.fd is not None
        if not w.compressed:
            w.compressed = True
            log.info("compressed file found; read whole once complete", extra={"path": w.path})
        st = os.fstat(w.fd)
        now = time.monotonic()
        if (st.st_size, st.st_mtime_ns) != w.gz_sig:
            w.gz_sig = (st.st_size, st.st_mtime_ns)
            w.last_growth = now
        quiet = self.options.rotate_wait
        if not (self.options.once or now - w.last_growth >= quiet or time.time() - st.st_mtime >= quiet):
            return None  # written moments ago: logrotate compresses into the final name
        w.gz = GzipSource(w.path, self.options.max_line_bytes, w.fd, self.options.fingerprint_bytes)
        if w.gz.key is None:  # empty, or not readable at all (logged)
            self._release_compressed(w)
        return w.gz.key if w.gz is not None else None

    def _skips_history(self, w: FileWatcher, key: str) -> bool:
        """start_at = end: a compressed file present at start and never read is history."""
        return (self.options.start_at == "end" and w.initial and key not in self._deleted
                and key not in self._read_upto and self.checkpoints.get(key) is None
                and self.checkpoints.load_problem is None)  # unreadable checkpoints: read it all

    def _release_compressed(self, w: FileWatcher) -> None:
        """Done with a compressed file (read to its end or to damage): not opened again unless it changes."""
        if w in self._unidentified:
            self._unidentified.remove(w)
        if w in self._draining:
            self._draining.remove(w)
        if w.key is not None and self._by_key.get(w.key) is w:
            del self._by_key[w.key]
            assert w.gz is not None
            self._read_upto[w.key] = (w.gz.offset, time.monotonic())
            log.info("compressed file read; released", extra={"path": w.path, "offset": w.gz.offset})
        if w.gz_sig is not None:
            self._gz_done[(w.dev, w.ino)] = w.gz_sig
        self._forget(w)
        w.close()

    def _short_match(self, w: FileWatcher) -> str | None:
        assert w.fd is not None
        candidates = {k for k in self.checkpoints.known() if k.startswith("head")}
        candidates.update(k for k in self._read_upto if k.startswith("head"))
        size = self.options.fingerprint_bytes
        for k in sorted(candidates):
            if k in self._by_key:
                continue
            if matches_head(w.gz.head, k, size) if w.gz is not None else matches(w.fd, k, size):
                return k
        return None

    def _resume_offset(self, w: FileWatcher, key: str) -> int:
        assert w.fd is not None
        size = os.fstat(w.fd).st_size
        offset: int | None = None
        if key in self._deleted:
            read, delivered = self._deleted.pop(key)  # the old file with this head was deleted...
            if w.gz is not None:  # ...and this is its compressed copy: resume where it stopped
                offset = read
                if delivered is not None:
                    self.checkpoints.set(key, delivered)  # keep the position across a restart
        else:
            upto = self._read_upto.pop(key, None)
            offset = upto[0] if upto is not None else None
            if offset is None:
                state = self.checkpoints.get(key)
                offset = state.offset if state is not None else None
        if offset is None:
            # start_at=end skips only what was never tracked: after an unreadable checkpoint
            # file, every file starts over from 0 (duplicates, never loss).
            skip = (self.options.start_at == "end" and w.initial and not w.fresh
                    and self.checkpoints.load_problem is None)
            offset = size if skip else 0
            if not w.fresh and w.skip_to <= size:
                offset = max(offset, w.skip_to)
            if w.compressed:
                offset = 0  # start_at = end was decided by _skips_history; skip_to counts disk bytes
            log.info("new file", extra={"path": w.path, "offset": offset})
            if offset:
                # A deliberate skip (start_at=end, ignore_older) is a position too: without it a
                # crash before the first delivery would skip again what was appended meanwhile.
                self.checkpoints.advance({key: offset}, {key: (os.path.abspath(w.path), w.dev, w.ino)})
        elif offset > size and not w.compressed:  # (a compressed file checks its decompressed length)
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
            self._read_upto[w.key] = (w.lines.offset, time.monotonic())  # a copytruncate copy resumes here
        w.key = None
        w.lines.key = None
        w.at_eof = False
        w.fresh = True
        w.short_tried = False
        w.opened = time.monotonic()
        w.lines.reset(0)
        self.rescan = True  # the rotated copy may be waiting for this key
        self._unidentified.append(w)
        self._try_identify(w, self.options.once)

    def _start_draining(self, w: FileWatcher) -> None:
        if w.fd is None:  # parked: its rest is read if the rotated name matches the paths
            self._drop_parked(w)
            return
        w.draining = True
        w.last_growth = time.monotonic()  # the old writer may still append for a moment
        self._draining.append(w)

    def _release_drained(self, now: float) -> None:
        for w in list(self._draining):
            if now - w.last_growth < self.options.rotate_wait or w.lines.pending:
                continue
            if w.key is None:
                if w.fd is not None and os.fstat(w.fd).st_size > 0:
                    continue  # its first line is still coming, or fingerprint_wait has not passed
                self._unidentified.remove(w)
            elif not w.at_eof:
                continue
            self._draining.remove(w)
            assert w.fd is not None
            deleted = os.fstat(w.fd).st_nlink == 0
            if w.key is not None and self._by_key.get(w.key) is w:
                del self._by_key[w.key]
                if deleted:
                    self._deleted[w.key] = (w.pos, self.checkpoints.get(w.key))
                    self.checkpoints.remove(w.key)
                else:
                    self._read_upto[w.key] = (w.pos, now)
            self._forget(w)
            w.close()
            log.info("released deleted file" if deleted else "released rotated file", extra={"path": w.path})

    def _forget(self, w: FileWatcher) -> None:
        if self._by_path.get(w.path) is w:
            del self._by_path[w.path]
        if self._by_inode.get((w.dev, w.ino)) is w:
            del self._by_inode[(w.dev, w.ino)]

    # -- open-file cap ------------------------------------------------------------------------
    def _open_count(self) -> int:
        return sum(1 for w in self._by_inode.values() if w.fd is not None)

    def _park_one(self) -> bool:
        """Close the file idle the longest to stay under max_open_files."""
        idle = [w for w in self._by_key.values()
                if w.fd is not None and w.at_eof and not w.draining and not w.lines.pending]
        if not idle:
            return False
        w = min(idle, key=lambda x: x.last_growth)
        w.park()
        log.debug("parked idle file (max_open_files)", extra={"path": w.path})
        return True

    def _unpark(self, w: FileWatcher) -> bool:
        """Reopen a parked file; False (and let it go) when its path names another file now."""
        assert w.key is not None
        try:
            fd = os.open(w.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._drop_parked(w)
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (w.dev, w.ino) or not matches(fd, w.key, self.options.fingerprint_bytes):
            os.close(fd)
            self._drop_parked(w)
            return False
        if st.st_size == w.pos and self._open_count() >= self.options.max_open_files:
            os.close(fd)  # nothing new: stay parked
            return False
        if self._open_count() >= self.options.max_open_files and not self._park_one():
            os.close(fd)
            return False
        w.fd = fd
        w.at_eof = False
        return True

    def _drop_parked(self, w: FileWatcher) -> None:
        if w.key is not None and self._by_key.get(w.key) is w:
            del self._by_key[w.key]
            self._read_upto[w.key] = (w.pos, time.monotonic())
        self._forget(w)
        self.rescan = True

    # -- expiry -------------------------------------------------------------------------------
    def _expire(self) -> None:
        ttl = self.options.checkpoint_ttl
        cutoff = time.monotonic() - ttl
        for key, (_, when) in list(self._read_upto.items()):
            if when < cutoff:
                del self._read_upto[key]
                self._locations.pop(key, None)
        expired = self.checkpoints.expire(ttl, set(self._by_key) | set(self._read_upto))
        if expired:
            log.info("expired checkpoints of files not seen for checkpoint_ttl", extra={"keys": expired})
