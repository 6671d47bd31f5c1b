"""Follow NDJSON files: appends, rename rotation, truncation, deletion, new files.

`FileTailer` is the scheduling loop: it asks discovery (discovery.py) which paths to
follow, opens a `FileWatcher` (watcher.py) per file, decides which watcher owns which
identity (fingerprint.py), reads the watchers in turn within a byte budget, and releases
them through one path (`_release`). A watcher is identified when its first line is
complete (or fingerprint_wait has passed); it is then FOLLOWING until its path names
another file or is gone (DRAINING), and is released once read to its end, with no
partial line, quiet for rotate_wait. Idle watchers beyond max_open_files are PARKED
(descriptor closed) and reopened when they change.

A draining file is released only once it has been read to its end, so a rotation while
the sink is down never abandons unread bytes (reading pauses, the file stays open).

With native events (inotify) a file at its end is read again only when an event names
it, or on the glob_interval sweep; files the observer cannot see (symlink targets in
other directories, --poll, fallback) are checked every poll_interval.

Busy files are polled, not woken per write: when a read finds that several writes came
within the settle time (SETTLE, at most a quarter of flush_interval; the reader waits that
long after a wake-up), the tailer pauses the write events (wake.py) and reads every file
each settle time instead (sooner at high rates: about every SETTLE_BYTES); a settle time
that brings nothing turns write events back on and reads once more (what came between).
`next_poll` tells the reader when the tailer needs a poll without a wake-up, so nothing
runs on a timer while every file is quiet and evented.

A file starting with the gzip magic bytes (whatever its name: `events.ndjson.1.gz`) is a
compressed rotated file: complete once it has not changed for rotate_wait (logrotate
compresses into the final name), then read whole, once, through a GzipSource, keyed by the
fingerprint of its decompressed start and checkpointed in decompressed offsets, so the
compressed copy of a file already read resumes at its end. It is not followed: read to its
end (or to damage, which is logged), it is closed and not opened again unless it changes.

Options come from the one settings table (forwarder/settings.py): the tailer reads the
Settings object it is given (`replay` gives a copy with its own start_at/once/rotate_wait).
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Protocol

from ..model import Item
from ..state.checkpoints import Checkpoints, FileState
from .compressed import GzipSource
from .discovery import expand, watched_dirs
from .fingerprint import matches, matches_head, read_head
from .watcher import READ_SIZE, FileWatcher, Found, Kind, State

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

__all__ = ["READ_SIZE", "FileTailer"]

SETTLE = 0.1  # seconds: polling cadence of busy files, and the wait after a first write
SETTLE_BYTES = 64 * 1024  # busy files are polled sooner when a settle time brings more than this
PAUSE_MAX_FILES = 16  # with more files open, polling them all costs more than the events saved


class WriteEvents(Protocol):
    """Write notifications the tailer can switch off while it polls (wake.Watching)."""

    def pause(self) -> bool: ...

    def resume(self) -> bool: ...


class Release(enum.Enum):
    """Why a watcher is let go (see FileTailer._release)."""

    ROTATED = "rotated"  # drained to its end after its path moved on
    DELETED = "deleted"  # drained to its end after it was unlinked
    COMPRESSED = "compressed"  # a .gz read whole (or to damage), or skipped as history
    GONE_WHILE_PARKED = "gone while parked"  # its path names another file now: identity decides
    DUPLICATE = "duplicate"  # the same content is already read through another file


class FileTailer:
    """A Source over paths and globs, resuming each file at its checkpoint."""

    def __init__(
        self,
        patterns: list[str],
        checkpoints: Checkpoints,
        settings: Settings,
        dir_change: threading.Event | None = None,
    ) -> None:
        self.patterns = patterns
        self.dir_change = dir_change or threading.Event()
        self.checkpoints = checkpoints
        self.settings = settings
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
        self._writes: WriteEvents | None = None  # native write events, paused while busy
        self._polling = False  # write events paused: every file is read each settle time
        self._notes = 0  # notifications since the last poll
        self._last_data = 0.0  # when a poll last found something
        self._cadence = SETTLE  # seconds between polls of busy files
        self._polled = 0.0  # when the previous poll began
        self._next_scan = 0.0
        self._started = False
        self._cursor = 0
        self._idle = False
        self._warned: set[str] = set()
        self._ignored: dict[str, tuple[int, int, int]] = {}  # path -> dev, ino, size when too old

    @property
    def exhausted(self) -> bool:
        """With `once`: every file has been read to its end."""
        return self.settings.once and self._idle

    def location(self, key: str) -> tuple[str, int, int]:
        return self._locations.get(key, ("", 0, 0))

    def open_files(self) -> list[tuple[str, str, int, int]]:
        """(path, key, size, origin) of each identified open file; callable from any thread."""
        out = []
        for key, w in list(self._by_key.items()):
            fd = w.fd
            if fd is None or w.compressed:  # closed while idle; compressed: size is not offsets
                continue
            try:
                st = os.fstat(fd)
            except OSError:  # closed meanwhile
                continue
            if (st.st_dev, st.st_ino) == (w.dev, w.ino):  # not a reused descriptor
                out.append((w.path, key, st.st_size, w.origin))
        return out

    def watched_dirs(self) -> dict[str, bool]:
        """Directories whose changes should wake the tailer -> watch recursively?"""
        return watched_dirs(self.patterns)

    def set_watching(self, native: bool, dirs: dict[str, bool], writes: WriteEvents | None = None) -> None:
        """Tell the tailer which real directories deliver native events (again after a reload),
        and what pauses their write events while files are busy."""
        self._native = native
        self._watched = dict(dirs)
        self._writes = writes
        self._polling = False
        for w in self._by_inode.values():
            w.evented = self._is_evented(w.real)
            w.changed = True  # changes between two observers are reported by none
        self.rescan = True

    def notify(self, path: str) -> None:
        """An observer saw `path` (a real path) change; called from the observer thread."""
        with self._dirty_lock:
            self._dirty.add(path)
            self._notes += 1

    @property
    def settle(self) -> float:
        """Seconds to let writes gather after a wake-up before reading (bounded by flush_interval)."""
        return min(SETTLE, self.settings.flush_interval / 4)

    def next_poll(self) -> float:
        """Seconds until a poll is needed without a wake-up (0: at once; inf: only on a wake-up)."""
        if self.rescan or self.dir_change.is_set() or self._dirty or self.settings.once:
            return 0.0  # events not read yet; `once` reads until a poll finds nothing
        timed = not self._native or bool(self._unidentified)
        for w in self._by_key.values():
            if w.parked:
                timed = timed or w.changed  # reopened when there is room (max_open_files)
                continue
            if w.gz is not None:
                return 0.0  # a compressed file being read whole
            if not w.compressed and (w.changed or not w.at_eof):
                return 0.0  # left for the next poll by the byte budget, or write events re-armed
            if w.compressed or not w.evented or w.draining or w.lines.pending:
                timed = True  # read whole once complete, read on a timer, released after rotate_wait,
                # or a partial line's timeout
        wait = self._next_scan - time.monotonic()
        if self._polling:
            wait = min(wait, self._cadence)
        elif timed:
            wait = min(wait, self.settings.poll_interval)
        return max(wait, 0.0)

    # -- the poll loop -------------------------------------------------------------------
    def poll(self, budget: int) -> list[Item]:
        """Read what is new, at most about `budget` bytes in all, files taken in turn."""
        now = time.monotonic()
        s = self.settings
        if self.dir_change.is_set():
            self.dir_change.clear()
            self.rescan = True
        sweep = False
        if self.rescan or now >= self._next_scan:
            self.rescan = False
            self._next_scan = now + s.glob_interval
            self._scan()
            self._expire()
            sweep = True
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
            notes, self._notes = self._notes, 0
        if dirty:  # remembered per watcher: a file the budget does not reach now is read next time
            for w in self._by_inode.values():
                if w.real in dirty:
                    w.changed = True
            for w in self._unidentified:
                if w.real in dirty:
                    w.changed = True
        out: list[Item] = []
        for w in list(self._unidentified):
            waited = now - w.opened >= s.fingerprint_wait or s.once
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
            if w.state is State.RELEASED:
                continue  # let go earlier in this poll (a parked duplicate of a reopened file)
            if w.parked and not ((sweep or w.changed) and self._unpark(w)):
                continue
            if self._due(w, sweep):
                w.changed = False
                before = len(out)
                pos = w.pos
                if not w.read(min(remaining, READ_SIZE), out, s.fingerprint_bytes):
                    self._reidentify(w)
                    continue
                remaining -= w.pos - pos
                if w.gz is not None and w.gz.exhausted:
                    self._release(w, Release.COMPRESSED)
                    continue
                if len(out) > before:
                    continue
            if w.at_eof and w.lines.pending and now - w.lines.partial_since >= s.partial_line_timeout:
                log.info("partial last line timed out; releasing it",
                         extra={"path": w.path, "offset": w.lines.offset, "size": w.lines.pending})
                w.lines.finish(out)
        self._release_drained(now)
        self._pace(bool(out), notes, now, budget - remaining)
        if s.once and not out and all(w.at_eof for w in self._by_key.values()):
            for w in self._by_key.values():
                w.lines.finish(out)  # no more writes expected: release partial last lines
            self._idle = not out
        return out

    def _due(self, w: FileWatcher, sweep: bool) -> bool:
        """Does `w` need a read (or identity check) now?"""
        return (sweep or not self._native or not w.evented or not w.at_eof or w.draining or w.changed
                or self._polling)

    def _pace(self, got: bool, notes: int, now: float, nbytes: int) -> None:
        """Pause write events while writes keep coming; resume them once a settle time brought nothing.

        While busy, a poll comes every settle time, or sooner when one brings more than
        SETTLE_BYTES: fast writers are read about a batch at a time, not in bursts of several
        batches that would queue behind the in-flight window."""
        writes = self._writes
        if writes is None:
            return
        elapsed, self._polled = now - self._polled, now
        if got:
            if nbytes:  # the time SETTLE_BYTES take to come, at the rate since the previous poll
                self._cadence = max(0.005, min(self.settle, SETTLE_BYTES * elapsed / nbytes))
            self._last_data = now
        if self._polling:
            if got or now - self._last_data < self.settle * 0.9:
                return  # the poll right after a read (byte budget), not a settle time later
            if not all(w.at_eof for w in self._by_key.values() if not w.compressed):
                return
            self._polling = False
            if not writes.resume():
                self._native = False  # every file is read each poll_interval from now on
                self._writes = None
            for w in self._by_inode.values():
                w.changed = True  # written between the last read and the events coming back
        elif got and notes > 1 and len(self._by_inode) <= PAUSE_MAX_FILES and writes.pause():
            self._polling = True

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
        for path in expand(self.patterns, self.settings.exclude):
            seen.add(path)
            self._check_path(path)
        for path in list(self._by_path):
            if path not in seen:
                self._start_draining(self._by_path.pop(path))
        for where in [k for k in self._gz_done if k not in self._scanned]:
            del self._gz_done[where]
        self._started = True

    def _check_path(self, path: str) -> None:
        s = self.settings
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
        if other is not None and other.parked:
            self._release(other, Release.GONE_WHILE_PARKED)  # renamed while parked, or inode reused
        elif other is not None:
            if other.draining:
                self._adopt(other, path)  # a rotated file renamed to a name the paths match
            return  # otherwise: the same file through another path (symlink, hard link)
        too_old = s.ignore_older > 0 and time.time() - st.st_mtime > s.ignore_older
        if too_old:
            if path not in self._ignored:
                log.info("file older than ignore_older; not followed until it changes", extra={"path": path})
            self._ignored[path] = (st.st_dev, st.st_ino, st.st_size)
            return
        if self._open_count() >= s.max_open_files and not self._park_one():
            if "max_open_files" not in self._warned:
                self._warned.add("max_open_files")
                log.warning("max_open_files reached and no file is idle; waiting to open more",
                            extra={"max_open_files": s.max_open_files, "path": path})
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            log.error("cannot open file", extra={"path": path, "error": str(e)})
            return
        found = Found.LATER if self._started else Found.AT_START
        w = FileWatcher(path, fd, os.fstat(fd), s.max_line_bytes, found)
        ignored = self._ignored.pop(path, None)
        if ignored is not None and ignored[:2] == (w.dev, w.ino):
            w.skip_to = ignored[2]  # what it held while too old stays skipped (without checkpoint)
        w.evented = self._is_evented(w.real)
        self._by_path[path] = w
        self._by_inode[(w.dev, w.ino)] = w
        self._unidentified.append(w)
        self._try_identify(w, s.once)

    def _adopt(self, w: FileWatcher, path: str) -> None:
        log.info("rotated file matches the paths; following it under its new name",
                 extra={"path": path, "was": w.path})
        if w in self._draining:
            self._draining.remove(w)
        w.state = State.FOLLOWING
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

    # -- identity ---------------------------------------------------------------------------
    def _try_identify(self, w: FileWatcher, short_ok: bool) -> None:
        if w.fd is None:
            return
        s = self.settings
        if w.compressed:
            key = self._identify_compressed(w)
        else:
            head = read_head(w.fd, s.fingerprint_bytes)  # kind and identity from the same bytes
            if head.compressed:
                key = self._identify_compressed(w)
            elif head.undecided:  # empty (logrotate creates the .gz, gzip fills it a moment later)
                w.short_tried = w.short_tried or short_ok
                return
            else:
                key = w.identify(head, s.fingerprint_bytes, short_ok)
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
            self._release(w, Release.COMPRESSED)
            return
        if key in self._by_key:
            # Same content already being read through another file (e.g. a copytruncate
            # copy while the original is not yet seen truncated): read it once.
            self._release(w, Release.DUPLICATE)
            return
        self._unidentified.remove(w)
        w.start(key, self._resume_offset(w, key))
        self._by_key[key] = w
        self._locations[key] = (os.path.abspath(w.path), w.dev, w.ino)
        self.checkpoints.track(key, *self._locations[key])

    def _identify_compressed(self, w: FileWatcher) -> str | None:
        """Identity of a compressed file once it is complete; None while it may still be written."""
        assert w.fd is not None
        s = self.settings
        if not w.compressed:
            w.kind = Kind.GZIP
            log.info("compressed file found; read whole once complete", extra={"path": w.path})
        st = os.fstat(w.fd)
        now = time.monotonic()
        if (st.st_size, st.st_mtime_ns) != w.gz_sig:
            w.gz_sig = (st.st_size, st.st_mtime_ns)
            w.last_growth = now
        quiet = s.rotate_wait
        if not (s.once or now - w.last_growth >= quiet or time.time() - st.st_mtime >= quiet):
            return None  # written moments ago: logrotate compresses into the final name
        w.gz = GzipSource(w.path, s.max_line_bytes, w.fd, s.fingerprint_bytes)
        if w.gz.key is None:  # empty, or not readable at all (logged)
            self._release(w, Release.COMPRESSED)
            return None
        return w.gz.key

    def _skips_history(self, w: FileWatcher, key: str) -> bool:
        """start_at = end: a compressed file present at start and never read is history."""
        return (self.settings.start_at == "end" and w.found is Found.AT_START and key not in self._deleted
                and key not in self._read_upto and self.checkpoints.get(key) is None
                and self.checkpoints.load_problem is None)  # unreadable checkpoints: read it all

    def _short_match(self, w: FileWatcher) -> str | None:
        assert w.fd is not None
        candidates = {k for k in self.checkpoints.known() if k.startswith("head")}
        candidates.update(k for k in self._read_upto if k.startswith("head"))
        size = self.settings.fingerprint_bytes
        for k in sorted(candidates):
            if k in self._by_key:
                continue
            if matches_head(w.gz.head, k, size) if w.gz is not None else matches(w.fd, k, size):
                return k
        return None

    def _resume_offset(self, w: FileWatcher, key: str) -> int:
        assert w.fd is not None
        s = self.settings
        size = os.fstat(w.fd).st_size
        offset: int | None = None
        upto: tuple[int, float] | None = None  # read this run through another file
        copied = False
        if key in self._deleted:
            read, delivered = self._deleted.pop(key)  # the old file with this head was deleted...
            if w.gz is not None:  # ...and this is its compressed copy: resume where it stopped
                offset = read
                if delivered is not None:
                    self.checkpoints.set(key, delivered)  # keep the position across a restart
        else:
            upto = self._read_upto.pop(key, None)
            offset = upto[0] if upto is not None else None
            state = self.checkpoints.get(key) if offset is None else None
            if state is not None:
                offset = state.offset
                # Saved while following another inode (dev, ino of 0: unknown): this file is a copy.
                copied = bool(state.ino) and (state.dev, state.ino) != (w.dev, w.ino)
        if offset is None:
            # start_at=end skips only what was never tracked: after an unreadable checkpoint
            # file, every file starts over from 0 (duplicates, never loss).
            skip = (s.start_at == "end" and w.found is Found.AT_START
                    and self.checkpoints.load_problem is None)
            offset = size if skip else 0
            if w.found is not Found.REWRITTEN and w.skip_to <= size:
                offset = max(offset, w.skip_to)
            if w.compressed:
                offset = 0  # start_at = end was decided by _skips_history; skip_to counts disk bytes
            log.info("new file", extra={"path": w.path, "offset": offset})
            if offset:
                # A deliberate skip (start_at=end, ignore_older) is a position too: without it a
                # crash before the first delivery would skip again what was appended meanwhile.
                self.checkpoints.advance({key: offset}, {key: (os.path.abspath(w.path), w.dev, w.ino)})
        elif offset > size and not w.compressed and (upto is not None or copied):
            # The same first line on a file shorter than what was read of it: a copy taken before
            # the last lines were read (copytruncate while the writer appends), a prefix of what
            # was read already. (A compressed file checks its decompressed length itself.)
            log.info("copy of a file already read further (copytruncate); nothing of it is sent again",
                     extra={"path": w.path, "read": offset, "size": size})
            offset = size
        elif offset > size and not w.compressed:
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
        w.rewritten()
        self.rescan = True  # the rotated copy may be waiting for this key
        self._unidentified.append(w)
        self._try_identify(w, self.settings.once)

    # -- draining and release ------------------------------------------------------------------
    def _start_draining(self, w: FileWatcher) -> None:
        if w.parked:  # its rest is read if the rotated name matches the paths
            self._release(w, Release.GONE_WHILE_PARKED)
            return
        w.state = State.DRAINING
        w.last_growth = time.monotonic()  # the old writer may still append for a moment
        self._draining.append(w)

    def _release_drained(self, now: float) -> None:
        for w in list(self._draining):
            if now - w.last_growth < self.settings.rotate_wait or w.lines.pending:
                continue
            if w.key is None:
                if w.fd is not None and os.fstat(w.fd).st_size > 0:
                    continue  # its first line is still coming, or fingerprint_wait has not passed
            elif not w.at_eof:
                continue
            assert w.fd is not None
            self._release(w, Release.DELETED if os.fstat(w.fd).st_nlink == 0 else Release.ROTATED)

    def _release(self, w: FileWatcher, why: Release) -> None:
        """The one way a watcher is let go: what it read is remembered under its key, then it is closed."""
        if w in self._unidentified:
            self._unidentified.remove(w)
        if w in self._draining:
            self._draining.remove(w)
        owner = w.key is not None and self._by_key.get(w.key) is w
        if w.key is not None and owner:
            del self._by_key[w.key]
            if why is Release.DELETED:
                self._deleted[w.key] = (w.read_upto, self.checkpoints.get(w.key))
                self.checkpoints.remove(w.key)
            else:
                self._read_upto[w.key] = (w.read_upto, time.monotonic())
        if why is Release.COMPRESSED and w.gz_sig is not None:
            self._gz_done[(w.dev, w.ino)] = w.gz_sig
        if self._by_path.get(w.path) is w:
            del self._by_path[w.path]
        if self._by_inode.get((w.dev, w.ino)) is w:
            del self._by_inode[(w.dev, w.ino)]
        if why in (Release.ROTATED, Release.DELETED):
            log.info(f"released {why.value} file", extra={"path": w.path})
        elif why is Release.COMPRESSED and owner:
            log.info("compressed file read; released", extra={"path": w.path, "offset": w.read_upto})
        elif why is Release.GONE_WHILE_PARKED:
            self.rescan = True
        w.close()

    # -- open-file cap ------------------------------------------------------------------------
    def _open_count(self) -> int:
        return sum(1 for w in self._by_inode.values() if w.fd is not None)

    def _park_one(self) -> bool:
        """Close the file idle the longest to stay under max_open_files."""
        idle = [w for w in self._by_key.values()
                if w.fd is not None and w.at_eof and w.state is State.FOLLOWING and not w.lines.pending]
        if not idle:
            return False
        w = min(idle, key=lambda x: x.last_growth)
        w.park()
        log.debug("parked idle file (max_open_files)", extra={"path": w.path})
        return True

    def _unpark(self, w: FileWatcher) -> bool:
        """Reopen a parked file; False (and let it go) when its path names another file now."""
        assert w.key is not None
        s = self.settings
        try:
            fd = os.open(w.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._release(w, Release.GONE_WHILE_PARKED)
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (w.dev, w.ino) or not matches(fd, w.key, s.fingerprint_bytes):
            os.close(fd)
            self._release(w, Release.GONE_WHILE_PARKED)
            return False
        if st.st_size == w.pos and self._open_count() >= s.max_open_files:
            os.close(fd)  # nothing new: stay parked
            return False
        if self._open_count() >= s.max_open_files and not self._park_one():
            os.close(fd)
            return False
        w.unpark(fd)
        return True

    # -- expiry -------------------------------------------------------------------------------
    def _expire(self) -> None:
        ttl = self.settings.checkpoint_ttl
        cutoff = time.monotonic() - ttl
        for key, (_, when) in list(self._read_upto.items()):
            if when < cutoff:
                del self._read_upto[key]
                self._locations.pop(key, None)
        expired = self.checkpoints.expire(ttl, set(self._by_key) | set(self._read_upto))
        if expired:
            log.info("expired checkpoints of files not seen for checkpoint_ttl", extra={"keys": expired})
