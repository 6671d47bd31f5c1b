"""Durable per-file delivery positions.

File format (version 1), pinned by tests/test_checkpoint.py:
    {"version": 1, "files": {"<fingerprint>": {"offset": int, "path": str,
                                               "dev": int, "ino": int, "updated": float}}}
Writes go to checkpoints.json.tmp, are fsync'd, renamed over checkpoints.json, then the
directory is fsync'd. On load a valid tmp file wins (it is newer); a corrupt file is moved
aside and reported, and reading starts over from byte 0 (duplicates, never loss).
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


@dataclass(slots=True)
class FileState:
    """What is known about one tracked file; `offset` is just past its last delivered line."""

    offset: int
    path: str
    dev: int = 0
    ino: int = 0
    updated: float = 0.0


class Checkpoints:
    """Thread-safe view of delivered positions plus its durable writer."""

    def __init__(self, state_dir: Path, namespace: str = CHECKPOINT_FILE, readonly: bool = False) -> None:
        self.path = state_dir / namespace
        self.readonly = readonly  # inspect only: never move a file aside (its owner may be writing it)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._files: dict[str, FileState] = {}
        self._dirty = False
        self._forgotten: set[str] = set()  # removed keys that late acks must not bring back
        self._changed: Callable[[], None] = lambda: None
        self.load_problem: str | None = None
        self._load()

    # -- view --------------------------------------------------------------------------
    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` (cheap, non-blocking) whenever the view changes: the writer's wake-up."""
        self._changed = changed

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
                self._dirty = True
                self._changed()

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
                self._dirty = moved = True
            if moved:
                self._changed()

    def set(self, key: str, state: FileState) -> None:
        with self._lock:
            self._files[key] = state
            self._dirty = True
            self._changed()

    def remove(self, key: str) -> None:
        """Forget a file for good (deleted); acks still in flight for it are ignored."""
        with self._lock:
            self._forgotten.add(key)
            if self._files.pop(key, None) is not None:
                self._dirty = True
                self._changed()

    def expire(self, ttl: float, keep: Collection[str]) -> list[str]:
        """Drop entries not in `keep` whose offset has not moved for `ttl` seconds."""
        cutoff = time.time() - ttl
        with self._lock:
            old = [k for k, v in self._files.items() if k not in keep and v.updated < cutoff]
            for k in old:
                del self._files[k]
            if old:
                self._dirty = True
                self._changed()
        return old

    # -- durability --------------------------------------------------------------------
    def flush(self, before_write: Callable[[], None] | None = None) -> bool:
        """Write the view if it changed; returns True when a write happened.

        `before_write` runs after the view is taken and before it is written (the writer
        syncs the dead-letter file there). Writers are serialized: a flush that finds nothing
        dirty returns only once any write in progress is on disk, so a final flush at
        shutdown never races another one.
        """
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return False
                doc = {"version": FORMAT_VERSION, "files": {k: asdict(v) for k, v in self._files.items()}}
                self._dirty = False
            try:
                if before_write is not None:
                    before_write()
                _atomic_write(self.path, self._tmp, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            except BaseException:
                with self._lock:
                    self._dirty = True
                raise
            return True

    def _load(self) -> None:
        problems = []
        for candidate in (self._tmp, self.path):
            if not candidate.exists():
                continue
            try:
                self._files = _parse(candidate.read_bytes())
            except (OSError, ValueError) as e:
                problems.append(f"{candidate}: {e}")
                if self.readonly:
                    continue
                with contextlib.suppress(OSError):
                    aside = candidate.with_name(f"{candidate.name}.corrupt-{int(time.time())}")
                    candidate.rename(aside)
                continue
            if candidate == self._tmp:
                self._dirty = True  # promote it on the next flush
            elif problems:
                # Only the temp file was bad: a write cut short (crash, full disk). The
                # checkpoint file itself is intact, so this is no reason to re-read anything.
                if not self.readonly:
                    log.warning("incomplete checkpoint temp file moved aside; using the checkpoint file",
                                extra={"problem": problems[0]})
                problems = []
            break
        if problems:
            self.load_problem = "; ".join(problems)
        if problems and not self.readonly:
            log.error(
                "checkpoint file unreadable, moved aside; files without a valid checkpoint are read "
                "from the start (duplicates possible, nothing lost)",
                extra={"problem": self.load_problem},
            )


def _parse(raw: bytes) -> dict[str, FileState]:
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
    return files


def _atomic_write(path: Path, tmp: Path, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
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
