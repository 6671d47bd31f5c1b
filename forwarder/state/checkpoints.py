"""Per-file delivery positions: the view, and the files that keep it across a crash.

File format (version 1), pinned by tests/test_units.py:
    {"version": 1, "serial": int, "boot_id": str, "durable": bool, "written": float,
     "in_flight": {"batches": int, "events": int},
     "files": {"<fingerprint>": {"offset": int, "path": str, "dev": int, "ino": int, "updated": float}}}
Only "version" and "files" are required (files written before issue 21 have nothing else).

Two crashes, two files:
- checkpoints.json reaches the kernel after every acknowledgement (`publish`: written to
  checkpoints.json.tmp and renamed over it, no fsync: microseconds). A process crash (kill -9,
  the OOM killer) keeps everything the kernel has, so the next run resumes exactly there.
- checkpoints.json.synced is the last fsync'd copy (`sync`, on the checkpoint_fsync_interval
  cadence; the dead-letter file is fsync'd first). A machine crash may lose or tear what was
  not fsync'd, so after a reboot (another boot_id) a checkpoints.json that was not written
  durably is not trusted and the synced copy is used: at most one fsync interval older.
`flush` (shutdown, `checkpoints set`) writes checkpoints.json durably (fsync'd, "durable": true).

Loading takes, among the valid files the current boot can trust, the one with the highest
serial (a valid .tmp is the newest: its rename never happened); a corrupt file is moved aside
and reported; with no valid file reading starts over from byte 0 (duplicates, never loss).
"in_flight" is what was sent and not yet passed by this checkpoint when it was written: what a
crash right then re-sends at most (0 after a clean stop), logged at the next start.
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
SYNCED_SUFFIX = ".synced"  # the last fsync'd copy: checkpoints.json.synced


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
    unsynced_bytes: int | None  # after a reboot: bytes the newer, untrusted file said were delivered past it


@dataclass(slots=True)
class _Doc:
    files: dict[str, FileState]
    serial: int
    boot_id: str | None
    durable: bool
    written: float
    in_flight: tuple[int, int]  # (batches, events)


def boot_id() -> str | None:
    """This boot's id (Linux); a checkpoint written under another one may have lost unsynced data."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


class Checkpoints:
    """Thread-safe view of delivered positions plus its writes.

    Every change of the view bumps `version`; `published` is the version checkpoints.json
    holds. The acker records what is in flight here too (`set_in_flight`), so each file
    written says what a crash right then would re-send.
    """

    def __init__(self, state_dir: Path, namespace: str = CHECKPOINT_FILE, readonly: bool = False) -> None:
        self.path = state_dir / namespace
        self.synced_path = self.path.with_name(self.path.name + SYNCED_SUFFIX)
        self.readonly = readonly  # inspect only: never move a file aside (its owner may be writing it)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._synced_tmp = self.synced_path.with_name(self.synced_path.name + ".tmp")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one write of checkpoints.json at a time, in version order
        self._sync_lock = threading.Lock()
        self._files: dict[str, FileState] = {}
        self._version = 0
        self._published = 0
        self._serial = 0  # of the newest file written (or loaded)
        self._synced = 0  # serial of the newest file fsync'd
        self._last: bytes | None = None  # what checkpoints.json holds, for `sync`
        self._in_flight = (0, 0)
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

    def set_in_flight(self, batches: int, events: int) -> int:
        """Record what is sent and not yet passed by the view; returns the version holding it."""
        with self._lock:
            if self._in_flight != (batches, events):
                self._in_flight = (batches, events)
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
    def publish(self, through: int | None = None, durable: bool = False,
                before_write: Callable[[], None] | None = None) -> bool:
        """Make checkpoints.json hold version `through` (default: the current one) or newer;
        True when this call wrote it.

        Plain: written and renamed, no fsync; it is in the kernel when this returns, which a
        process crash does not undo. `durable`: fsync'd before the rename, the directory
        after, and `before_write` (the dead-letter fsync) runs between taking the view and
        writing it; also rewrites an unchanged view that was not yet fsync'd. Writes are
        serialized: one that finds nothing to do returns once the write in progress is done.
        """
        with self._write_lock:
            with self._lock:
                target = self._version if through is None else through
                if self._published >= target and (not durable or self._synced >= self._serial):
                    return False
                version, serial = self._version, self._serial + 1
                data = self._document(serial, durable)
            if before_write is not None:
                before_write()
            _atomic_write(self.path, self._tmp, data, durable)
            with self._lock:
                self._serial, self._published, self._last = serial, version, data
                if durable:
                    self._synced = serial
            return True

    def sync(self, before_write: Callable[[], None] | None = None) -> bool:
        """fsync what checkpoints.json holds, as checkpoints.json.synced; True when written.

        `before_write` (the dead-letter fsync) runs first: every record whose line that
        checkpoint passes reached the kernel before it did, so it is on disk before it.
        """
        with self._sync_lock:
            with self._lock:
                data, serial = self._last, self._serial
                if data is None or self._synced >= serial:
                    return False
            if before_write is not None:
                before_write()
            _atomic_write(self.synced_path, self._synced_tmp, data, True)
            with self._lock:
                self._synced = max(self._synced, serial)
            return True

    def flush(self, before_write: Callable[[], None] | None = None) -> bool:
        """Write the view durably if it changed or was not yet fsync'd (shutdown, edits)."""
        return self.publish(durable=True, before_write=before_write)

    def _document(self, serial: int, durable: bool) -> bytes:  # with self._lock held
        batches, events = self._in_flight
        return orjson.dumps({
            "version": FORMAT_VERSION, "serial": serial, "boot_id": self._boot, "durable": durable,
            "written": time.time(), "in_flight": {"batches": batches, "events": events},
            "files": {k: {"offset": v.offset, "path": v.path, "dev": v.dev, "ino": v.ino, "updated": v.updated}
                      for k, v in self._files.items()},
        }, option=orjson.OPT_INDENT_2)

    # -- load ----------------------------------------------------------------------------
    def _load(self) -> None:
        problems: list[tuple[Path, str]] = []
        found: list[tuple[Path, _Doc]] = []
        for candidate in (self._tmp, self.path, self.synced_path):
            if not candidate.exists():
                continue
            try:
                found.append((candidate, _parse(candidate.read_bytes())))
            except (OSError, ValueError) as e:
                problems.append((candidate, f"{candidate}: {e}"))
        pool = [(p, d) for p, d in found if self._trusted(p, d)] or found
        chosen: Path | None = None
        if pool:
            # The highest serial is the newest; on a tie the earlier candidate (tmp, then the file).
            chosen, doc = max(pool, key=lambda pd: pd[1].serial)
            newest = max(found, key=lambda pd: pd[1].serial)[1]
            self._files, self._serial = doc.files, newest.serial
            self._synced = doc.serial if chosen == self.synced_path or doc.durable else 0
            if chosen != self.path:
                self._version = 1  # promote it to checkpoints.json on the next write
            reboot = newest is not doc and not self._trusted(self.path, newest)
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
            # machine crash with its fsync'd copy intact: no reason to re-read anything.
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
        """Whether a file holds what was last written to it: fsync'd, or written in this boot
        (the kernel's copy survives a process crash), or by a version that always fsync'd."""
        return path == self.synced_path or doc.durable or doc.boot_id is None or doc.boot_id == self._boot


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
        boot = doc.get("boot_id")
        return _Doc(files, int(doc.get("serial", 0)), None if boot is None else str(boot),
                    bool(doc.get("durable", False)), float(doc.get("written", 0.0)),
                    (int(in_flight.get("batches", 0)), int(in_flight.get("events", 0))))
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"bad header: {e}") from None


def _atomic_write(path: Path, tmp: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` in one rename; `durable`: fsync'd, and the rename too."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a torn temp file is no checkpoint; the previous file stays intact
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
