"""`EventLog`: append events to the forwarder's log from any number of threads and processes.

Each call is one `write` on an O_APPEND descriptor: the kernel puts the whole buffer at the
end of the file, so lines from other threads and processes never land inside ours. Before
each write the path is `stat`ed, as `logging.handlers.WatchedFileHandler` does: when it names
another file (logrotate `create` renamed it) or none (deleted), the file at the path is opened,
or created. Nothing is raised into the caller: a failure returns False and logs the event as
the seed's fallback line.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from ..decode.event import OversizeFields
from .encode import MAX_LINE_BYTES, EventRefused, encode_event, user_id_of

log = logging.getLogger("forwarder.client")

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteFailed(OSError):
    """The write did not complete (short write, undone or not)."""


class EventLog:
    """The NDJSON file the forwarder tails, written one event (or one batch) per `write`.

    `mode` is the permission a newly created file gets (less the process umask, as with any
    `open`). `oversize_fields` and `max_line_bytes` are the forwarder's settings of the same
    names: events it would dead-letter are refused here instead.
    Thread-safe; after `fork` the child keeps writing to the same file.
    """

    def __init__(self, path: str | os.PathLike[str], mode: int = 0o640, *, oversize_fields: OversizeFields = "send",
                 max_line_bytes: int = MAX_LINE_BYTES, logger: logging.Logger | None = None) -> None:
        self.path = os.fspath(path)
        self.mode = mode
        self.options: dict[str, Any] = {"oversize_fields": oversize_fields, "max_line_bytes": max_line_bytes}
        self.log = logger or log
        self.failing = False  # the last write failed (its error was logged; the next success says so)
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._lock = threading.Lock()
        _instances.add(self)

    def log_event(self, user: Any, event_name: str, value: Any = None, metadata: Any = None) -> bool:
        """Append one event; True once its line is in the file (the seed's StatsigService signature).

        `user`: a user id, None, a dict of user fields, or a Statsig SDK `StatsigUser`.
        """
        try:
            line = encode_event(user, event_name, value, metadata, **self.options)
        except EventRefused as e:
            self._refused(event_name, user, e)
            return False
        except Exception as e:  # a bug, or a user object whose attributes raise: never the caller's problem
            self._refused(event_name, user, EventRefused(repr(e)))
            return False
        return self._append(line, ((event_name, user),))

    def log_events(self, events: Iterable[Mapping[str, Any]]) -> bool:
        """Append a batch in one `write`, all or nothing; True once every line is in the file.

        Each event is a mapping with `event_name` and optionally `user` (as for log_event) or
        `user_id`, `value`, `metadata` and `time` (epoch ms). One refused event refuses the batch.
        """
        lines = []
        named = []
        try:
            for i, ev in enumerate(events):
                name: Any = ev.get("event_name")
                user = ev.get("user")
                if user is None:
                    user = ev.get("user_id")
                named.append((name, user))
                try:
                    lines.append(encode_event(user, name, ev.get("value"), ev.get("metadata"), ev.get("time"),
                                              **self.options))
                except EventRefused as e:
                    self._refused(name, user, EventRefused(f"event [{i}] of the batch: {e}; nothing written"))
                    return False
        except Exception as e:
            self.log.warning("Analytics events refused, nothing written: %r", e)
            return False
        if not lines:
            return True
        return self._append(b"".join(lines), named)

    def _append(self, data: bytes, named: Iterable[tuple[Any, Any]]) -> bool:
        try:
            self.write(data)
        except Exception as e:
            self._failed(e, named)
            return False
        if self.failing:
            self.failing = False
            self.log.info("event log %s is writable again", self.path)
        return True

    def write(self, data: bytes) -> None:
        """Append whole lines in one write (raises OSError); the primitive under log_event."""
        with self._lock:
            fd = self._open()
            try:
                n = os.write(fd, data)
                if n != len(data):
                    self._undo(fd, n, len(data))
            except OSError:
                self._close()  # the next call opens the path afresh
                raise

    def _open(self) -> int:
        try:
            st = os.stat(self.path)
            if self._fd is not None and (st.st_dev, st.st_ino) == self._ident:
                return self._fd
        except FileNotFoundError:
            pass
        self._close()
        fd = os.open(self.path, _OPEN_FLAGS, self.mode)
        st = os.fstat(fd)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        return fd

    def _undo(self, fd: int, n: int, size: int) -> None:
        """A short write (the device or the file size limit is full): cut our partial line off again,
        unless another writer appended after it (then it is no longer ours to cut)."""
        end = os.lseek(fd, 0, os.SEEK_CUR)
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, end - n)
            raise WriteFailed(errno.ENOSPC, f"short write (device full or file size limit): wrote {n} of {size} "
                              "bytes, undone")
        raise WriteFailed(errno.ENOSPC, f"short write (device full or file size limit): wrote {n} of {size} "
                          "bytes, not undone as another writer appended after them (the forwarder dead-letters "
                          "that line)")

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._ident = self._fd, None, None
            os.close(fd)

    def _refused(self, event_name: Any, user: Any, e: Exception) -> None:
        self.log.warning("Analytics event %r (user: %s) refused, not written: %s", event_name, user_id_of(user), e)

    def _failed(self, e: Exception, named: Iterable[tuple[Any, Any]]) -> None:
        if not self.failing:
            self.failing = True
            kind = "no space" if isinstance(e, OSError) and e.errno in _NO_SPACE else "cannot write"
            self.log.error("event log %s: %s (%s); events are logged as fallback lines until it works again",
                           self.path, kind, e)
        for name, user in named:
            self.log.warning("[Fallback] Analytics event: %s (user: %s)", name, user_id_of(user))

    def close(self) -> None:
        """Close the file (the next call opens it again)."""
        with self._lock:
            self._close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork


_instances: weakref.WeakSet[EventLog] = weakref.WeakSet()


def _reset_locks() -> None:
    for event_log in list(_instances):
        event_log._after_fork()


os.register_at_fork(after_in_child=_reset_locks)
