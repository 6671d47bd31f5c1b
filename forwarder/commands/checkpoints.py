"""`checkpoints`: show and edit the saved delivery positions of a state directory.

Reads never disturb a running forwarder (a read-only load that moves nothing aside).
Edits take the namespace's lock first, so they are refused while its owner (`run`, or
`replay` for the replay namespace) is running.
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..source.compressed import is_gzip
from ..source.fingerprint import FINGERPRINT_BYTES, identify_path
from ..state.checkpoints import CHECKPOINT_FILE, REPLAY_CHECKPOINT_FILE, Checkpoints, FileState
from ..state.lock import LOCK_FILE, REPLAY_LOCK_FILE

NAMESPACES = {"run": (CHECKPOINT_FILE, LOCK_FILE), "replay": (REPLAY_CHECKPOINT_FILE, REPLAY_LOCK_FILE)}


class PositionError(Exception):
    """An edit that cannot be made; the message says why."""


@dataclass
class Row:
    """One tracked file as the `list` and `show` subcommands report it."""

    fingerprint: str
    path: str
    offset: int
    size: int | None  # bytes of the file at `path` now (decompressed for .gz); None if unknown
    lag: int | None  # size - offset
    status: str  # ok | missing | replaced (the path now holds another file) | unreadable
    last_delivered: str | None  # ISO-8601 UTC of the last position change

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _open(path: str) -> BinaryIO:
    raw = open(path, "rb")  # noqa: SIM115
    return gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip(path) else raw  # type: ignore[return-value]


def rows(checkpoints: Checkpoints, fp: int = FINGERPRINT_BYTES) -> list[Row]:
    """Every checkpoint, its file's identity checked as `run` checks it (fp: settings.fingerprint_bytes)."""
    out = []
    for key, state in sorted(checkpoints.snapshot().items(), key=lambda kv: kv[1].path):
        size: int | None = None
        status = "ok"
        if not state.path or not os.path.exists(state.path):
            status = "missing"
        else:
            try:
                now = identify_path(state.path, fp)
            except (OSError, EOFError) as e:
                status = f"unreadable: {e}"
            else:
                if now.matches(key, fp):
                    size = now.size
                else:
                    status = "replaced"
        lag = None if size is None else max(0, size - state.offset)
        out.append(Row(key, state.path, state.offset, size, lag, status, _iso(state.updated)))
    return out


def find(checkpoints: Checkpoints, target: str) -> list[str]:
    """Keys matching a fingerprint or a path (several when a path held several files)."""
    snapshot = checkpoints.snapshot()
    if target in snapshot:
        return [target]
    path = os.path.abspath(target)
    return [k for k, s in snapshot.items() if s.path == path]


def set_position(checkpoints: Checkpoints, target: str, offset: str,
                 fp: int = FINGERPRINT_BYTES) -> tuple[str, int | None, int]:
    """Move the position of `target` (a path, or a tracked fingerprint) to `offset`.

    `offset` is a byte offset, `start` or `end`; an offset inside a line moves forward to
    the start of the next line. The file's identity is the one `run` gives it with the same
    fingerprint_bytes (`fp`). Returns (fingerprint, old offset, new offset).
    """
    keys = find(checkpoints, target)
    if os.path.isfile(target):
        now = identify_path(target, fp)
        tracked = [k for k in keys if now.matches(k, fp)]  # e.g. a short file's head<N> key
        key = tracked[0] if tracked else now.key(fp)
        if key is None:
            raise PositionError(f"{target}: first line incomplete, the file has no identity yet")
        size = now.size
        path = os.path.abspath(target)
    elif len(keys) == 1:
        key = keys[0]
        path = checkpoints.snapshot()[key].path
        if not os.path.isfile(path):
            raise PositionError(f"{path} (last path of {key}) does not exist: give the file's current path")
        now = identify_path(path, fp)
        if not now.matches(key, fp):
            raise PositionError(f"{path} now holds another file: give the current path of {key}")
        size = now.size
    else:
        raise PositionError(f"no such file and no checkpoint for {target!r}")
    if offset == "start":
        new = 0
    elif offset == "end":
        new = size
    else:
        try:
            new = int(offset)
        except ValueError:
            raise PositionError(f"offset must be a byte offset, 'start' or 'end'; got {offset!r}") from None
        if not 0 <= new <= size:
            raise PositionError(f"offset {new} is outside the file (0..{size})")
        new = _line_start(path, new)
    old = checkpoints.get(key)
    st = os.stat(path)
    checkpoints.set(key, FileState(new, path, st.st_dev, st.st_ino, old.updated if old else 0.0))
    return key, old.offset if old else None, new


def _line_start(path: str, offset: int) -> int:
    """`offset` if a line starts there, else the start of the next line."""
    if offset == 0:
        return 0
    with _open(path) as f:
        f.seek(offset - 1)
        if f.read(1) == b"\n":
            return offset
        while block := f.read(64 * 1024):  # not readline(): a huge line must not fill memory
            nl = block.find(b"\n")
            if nl >= 0:
                return f.tell() - len(block) + nl + 1
        return f.tell()


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
