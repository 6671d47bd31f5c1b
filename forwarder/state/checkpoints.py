"""Per-file delivery positions: the view, and the files that keep it across a crash.

File format (version 1), pinned by tests/test_units.py:
    {"version": 1, "serial": int, "boot_id": str, "written": float,
     "in_flight": {"batches": int, "events": int, "sent": {"<fingerprint>": int}},
     "files": {"<fingerprint>": {"offset": int, "path": str, "dev": int, "ino": int, "updated": float}}}
Only "version" and "files" are required (files written before issue 21 have nothing else).

Two crashes, two files:
- checkpoints.json.journal gets the whole view appended as one line after every
  acknowledgement (`publish`: one write(2), no fsync, about a microsecond). A process crash
  (kill -9, the OOM killer) keeps everything the kernel has, so the next run resumes exactly
  at its last complete line.
- checkpoints.json is the fsync'd view (`flush`: temp file, fsync, rename, fsync of the
  directory, the dead-letter file fsync'd first), written every checkpoint_fsync_interval,
  at shutdown and by `checkpoints set`; the journal is removed after it. A machine crash may
  lose or tear what was not fsync'd: after a reboot (another boot_id) the journal is not
  trusted and checkpoints.json is used, at most one fsync interval older.
Loading takes, among the valid candidates the current boot can trust, the one with the highest
serial (a valid checkpoints.json.tmp is fsync'd and newer than checkpoints.json: its rename never
happened); a corrupt checkpoint file is moved aside and reported; with nothing valid reading
starts over from byte 0 (duplicates, never loss). "in_flight" is what was sent and not yet
passed when the view was written (batches, events, and per file the end of the furthest batch
sent): what a crash right then re-sends at most (0 after a clean stop), logged at the next
start. A run inherits what the file it resumed from had in flight until its own positions pass
it, so a run killed before re-sending it all passes it on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoints.json"
REPLAY_CHECKPOINT_FILE = "replay-checkpoints.json"  # `replay` keeps its own positions (and lock: lock.py)
JOURNAL_SUFFIX = ".journal"  # checkpoints.json.journal: the view after every acknowledgement


@dataclass(slots=True)
class FileState:
    """What is known about one tracked file; `offset` is just past its last delivered line."""

    offset: int
    path: str
    dev: int = 0
    ino: int = 0
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class Loaded:
    """Which file a run resumed from, and what it said about the run that wrote it."""

    path: Path
    in_flight_batches: int
    in_flight_events: int
    written: float  # epoch seconds (0: unknown, written before issue 21)
    after_reboot: bool  # the machine restarted since; only what was fsync'd was trusted
    unsynced_bytes: int | None  # after a reboot: bytes the journal said were delivered past it


@dataclass(slots=True)
class _Doc:
    files: dict[str, FileState]
    serial: int
    boot_id: str | None
    written: float
    in_flight: tuple[int, int]  # (batches, events)
    sent: dict[str, int]  # per file: the end of the furthest batch in flight


def boot_id() -> str | None:
    """This boot's id (Linux); a checkpoint written under another one may have lost unsynced data."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


class Checkpoints:
    """Thread-safe view of delivered positions plus its writes.

    Every change of the view bumps `version`; `published` is the version the kernel holds
    (journal or checkpoints.json). The acker records what is in flight here too
    (`set_in_flight`), so each view written says what a crash right then would re-send.
    """

    def __init__(self, state_dir: Path, namespace: str = CHECKPOINT_FILE, readonly: bool = False) -> None:
        self.path = state_dir / namespace
        self.journal_path = self.path.with_name(self.path.name + JOURNAL_SUFFIX)
        self.readonly = readonly  # inspect only: never move a file aside (its owner may be writing it)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one write at a time, in version order
        self._journal: int | None = None  # its fd, opened on the first publish
        self._journal_size = 0
        self._files: dict[str, FileState] = {}
        self._version = 0
        self._published = 0  # the version in the kernel (journal or checkpoints.json)
        self._serial = 0  # of the newest view written (or loaded)
        self._synced = 0  # serial of the newest view fsync'd
        self._in_flight = (0, 0)  # this run's: batches, events
        self._sent: dict[str, int] = {}  # this run's: per file, the end of the furthest batch in flight
        self._inherited: _Doc | None = None  # what the file it resumed from had in flight, until passed
        self._boot = boot_id()
        self._forgotten: set[str] = set()  # removed keys that late acks must not bring back
        self._changed: Callable[[], None] = lambda: None
        self.load_problem: str | None = None
        self.loaded: Loaded | None = None
        self._load()

    # -- view --------------------------------------------------------------------------
    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` (cheap, non-blocking) whenever the view changes: the writer's wake-up."""
        self._changed = changed

    def _moved(self) -> None:  # with self._lock held
        self._version += 1
        self._changed()

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    @property
    def published(self) -> int:
        """The version checkpoints.json holds."""
        with self._lock:
            return self._published

    @property
    def unsynced(self) -> bool:
        """Written to the kernel since the last fsync (or changed and not yet written)."""
        with self._lock:
            return self._synced < self._serial or self._published < self._version

    def get(self, key: str) -> FileState | None:
        with self._lock:
            state = self._files.get(key)
            return None if state is None else FileState(**asdict(state))

    def snapshot(self) -> dict[str, FileState]:
        with self._lock:
            return {k: FileState(**asdict(v)) for k, v in self._files.items()}

    def known(self) -> list[str]:
        with self._lock:
            return list(self._files)

    def track(self, key: str, path: str, dev: int, ino: int) -> None:
        """Remember where a file is now (its offset is unchanged)."""
        with self._lock:
            self._forgotten.discard(key)
            state = self._files.get(key)
            if state is None:
                return
            if (state.path, state.dev, state.ino) != (path, dev, ino):
                state.path, state.dev, state.ino = path, dev, ino
                self._moved()

    def advance(self, positions: dict[str, int], where: dict[str, tuple[str, int, int]]) -> None:
        """Move offsets forward after delivery; `where` gives (path, dev, ino) for new keys."""
        now = time.time()
        moved = False
        with self._lock:
            for key, offset in positions.items():
                if key in self._forgotten:
                    continue
                state = self._files.get(key)
                if state is None:
                    path, dev, ino = where.get(key, ("", 0, 0))
                    self._files[key] = FileState(offset, path, dev, ino, now)
                elif offset != state.offset:
                    state.offset, state.updated = offset, now
                else:
                    continue
                moved = True
            if moved:
                self._moved()

    def set_in_flight(self, batches: int, events: int, sent: dict[str, int]) -> int:
        """Record what is sent and not yet passed by the view (`sent`: per file, the end of the
        furthest batch); returns the version holding it."""
        with self._lock:
            if self._in_flight != (batches, events) or self._sent != sent:
                self._in_flight, self._sent = (batches, events), sent
                self._moved()
            return self._version

    def set(self, key: str, state: FileState) -> None:
        with self._lock:
            self._files[key] = state
            self._moved()

    def remove(self, key: str) -> None:
        """Forget a file for good (deleted); acks still in flight for it are ignored."""
        with self._lock:
            self._forgotten.add(key)
            if self._files.pop(key, None) is not None:
                self._moved()

    def expire(self, ttl: float, keep: Collection[str]) -> list[str]:
        """Drop entries not in `keep` whose offset has not moved for `ttl` seconds."""
        cutoff = time.time() - ttl
        with self._lock:
            old = [k for k, v in self._files.items() if k not in keep and v.updated < cutoff]
            for k in old:
                del self._files[k]
            if old:
                self._moved()
        return old

    # -- writes --------------------------------------------------------------------------
    def publish(self, through: int | None = None) -> bool:
        """Put view version `through` (default: the current one) or newer into the kernel: one
        line appended to the journal, no fsync, which a process crash does not undo. True
        when this call wrote. Writes are serialized: one that finds nothing to do returns
        once the write in progress is done."""
        with self._write_lock:
            with self._lock:
                target = self._version if through is None else through
                if self._published >= target:
                    return False
                version, serial = self._version, self._serial + 1
                line = self._document(serial) + b"\n"
            if self._journal is None:
                fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._journal, self._journal_size = fd, os.fstat(fd).st_size
                if self._journal_size and os.pread(fd, 1, self._journal_size - 1) != b"\n":
                    line = b"\n" + line  # after what a power loss left: start a line of our own
            try:
                _write_all(self._journal, line)
            except OSError:
                with contextlib.suppress(OSError):  # a short write (full disk): no torn line stays
                    os.ftruncate(self._journal, self._journal_size)
                raise
            self._journal_size += len(line)
            with self._lock:
                self._serial, self._published = serial, version
            return True

    def flush(self, before_write: Callable[[], None] | None = None) -> bool:
        """Write the view to checkpoints.json durably if it changed or is not fsync'd yet;
        True when written. `before_write` (the dead-letter fsync) runs between taking the view
        and writing it: every record whose line the view passes reached the kernel before it
        was taken. The journal is removed after: checkpoints.json is newer than all of it."""
        with self._write_lock:
            with self._lock:
                if self._published >= self._version and self._synced >= self._serial:
                    return False
                version, serial = self._version, self._serial + 1
                data = self._document(serial, pretty=True)
            if before_write is not None:
                before_write()
            _atomic_write(self.path, self._tmp, data)
            if self._journal is not None:
                os.close(self._journal)
                self._journal = None
            with contextlib.suppress(OSError):  # if it stays, its lines are older than this file: ignored
                self.journal_path.unlink(missing_ok=True)
            with self._lock:
                self._serial = self._synced = serial
                self._published = version
            return True

    def _document(self, serial: int, pretty: bool = False) -> bytes:  # with self._lock held
        (batches, events), sent = self._in_flight, self._sent
        inherited = self._inherited
        if inherited is not None:
            files = self._files
            if all(k not in files or files[k].offset >= end for k, end in inherited.sent.items()):
                self._inherited = inherited = None  # this run's positions passed all of it
            else:
                (b, e), own = inherited.in_flight, sent
                sent = {**inherited.sent, **{k: max(v, inherited.sent.get(k, 0)) for k, v in own.items()}}
                if len(sent) == 1:  # one file: both are ranges from its checkpoint on, the longer holds the other
                    batches, events = max(batches, b), max(events, e)
                else:  # an upper bound: where files are read in another order they need not overlap
                    batches, events = batches + b, events + e
        return orjson.dumps({
            "version": FORMAT_VERSION, "serial": serial, "boot_id": self._boot, "written": time.time(),
            "in_flight": {"batches": batches, "events": events, "sent": sent},
            "files": {k: {"offset": v.offset, "path": v.path, "dev": v.dev, "ino": v.ino, "updated": v.updated}
                      for k, v in self._files.items()},
        }, option=orjson.OPT_INDENT_2 if pretty else None)

    # -- load ----------------------------------------------------------------------------
    def _load(self) -> None:
        problems: list[tuple[Path, str]] = []
        found: list[tuple[Path, _Doc]] = []
        for candidate in (self._tmp, self.path):
            if not candidate.exists():
                continue
            try:
                found.append((candidate, _parse(candidate.read_bytes())))
            except (OSError, ValueError) as e:
                problems.append((candidate, f"{candidate}: {e}"))
        journal = _last_line(self.journal_path)
        if journal is not None:
            found.append((self.journal_path, journal))
        pool = [(p, d) for p, d in found if self._trusted(p, d)] or found
        chosen: Path | None = None
        if pool:
            # The highest serial is the newest; on a tie the earlier candidate (tmp, then the file).
            chosen, doc = max(pool, key=lambda pd: pd[1].serial)
            newest = max(found, key=lambda pd: pd[1].serial)[1]
            self._files, self._serial = doc.files, newest.serial
            self._synced = doc.serial if chosen != self.journal_path else 0
            if chosen != self.path:
                self._version = 1  # written to checkpoints.json by the first flush
            reboot = newest.serial > doc.serial and not self._trusted(self.journal_path, newest)
            if doc.in_flight != (0, 0):
                self._inherited = doc
            self.loaded = Loaded(chosen, *doc.in_flight, doc.written, reboot,
                                 _bytes_between(doc.files, newest.files) if reboot else None)
        if chosen == self._tmp:
            problems = []  # a valid temp file is the newest write; the others are replaced by it
        if not self.readonly:
            for candidate, _ in problems:
                with contextlib.suppress(OSError):
                    candidate.rename(candidate.with_name(f"{candidate.name}.corrupt-{int(time.time())}"))
        if problems and chosen is not None and not self.readonly:
            # A torn temp file (a crash mid-write, a full disk), or a checkpoint file torn by a
            # machine crash with a newer journal of this boot: no reason to re-read anything.
            log.warning(f"unreadable checkpoint file moved aside; using {chosen.name}",
                        extra={"problem": "; ".join(m for _, m in problems)})
        elif problems and chosen is None:
            self.load_problem = "; ".join(m for _, m in problems)
            if not self.readonly:
                log.error(
                    "checkpoint file unreadable, moved aside; files without a valid checkpoint are read "
                    "from the start (duplicates possible, nothing lost)",
                    extra={"problem": self.load_problem},
                )

    def _trusted(self, path: Path, doc: _Doc) -> bool:
        """Whether a candidate holds what was last written to it: checkpoints.json (and its
        temp file) are fsync'd; the journal only if written in this boot (the kernel's copy
        survives a process crash, not a machine crash)."""
        return path != self.journal_path or self._boot is None or doc.boot_id == self._boot


def _last_line(path: Path) -> _Doc | None:
    """The newest complete view in a journal (lines after a machine crash may be torn or zeros)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    for line in reversed(raw.split(b"\n")):
        line = line.strip(b" \0")
        if line:
            try:
                return _parse(line)
            except ValueError:
                continue
    return None


def _bytes_between(older: dict[str, FileState], newer: dict[str, FileState]) -> int:
    """Bytes the newer view says were delivered past the older one."""
    return sum(max(0, s.offset - older[k].offset) for k, s in newer.items() if k in older)


def _parse(raw: bytes) -> _Doc:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise ValueError(f"unsupported checkpoint format version {version!r}")
    files: dict[str, FileState] = {}
    entries: Any = doc.get("files")
    if not isinstance(entries, dict):
        raise ValueError("'files' is not an object")
    for key, entry in entries.items():
        try:
            files[key] = FileState(
                offset=int(entry["offset"]),
                path=str(entry.get("path", "")),
                dev=int(entry.get("dev", 0)),
                ino=int(entry.get("ino", 0)),
                updated=float(entry.get("updated", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad entry for {key!r}: {e}") from None
        if files[key].offset < 0:
            raise ValueError(f"negative offset for {key!r}")
    try:
        in_flight: Any = doc.get("in_flight") or {}
        sent: Any = in_flight.get("sent") or {}
        boot = doc.get("boot_id")
        return _Doc(files, int(doc.get("serial", 0)), None if boot is None else str(boot),
                    float(doc.get("written", 0.0)),
                    (int(in_flight.get("batches", 0)), int(in_flight.get("events", 0))),
                    {str(k): int(v) for k, v in sent.items()})
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"bad header: {e}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _atomic_write(path: Path, tmp: Path, data: bytes) -> None:
    """Replace `path` with `data` durably: temp file, fsync, rename, fsync of the directory."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a torn temp file is no checkpoint; the previous file stays intact
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
