"""Durable appends to the log the tailer follows: one writer, group commit.

Requests hand their lines (whole, newline-terminated) to `Appender.append` and wait.
One flush at a time takes everything waiting, writes it with a single `write` on an
O_APPEND descriptor (so lines from other writers of the file never land inside ours) and,
with durability "fsync", one `fdatasync` for the whole group; then every waiter is
answered. While a flush runs, new requests queue up for the next one: under load, many
requests share one write and one fsync.

A write that fails part way (disk full, file size limit) is cut back so that no partial
line stays in the file, and every request of the group gets `AppendError`; the next group
tries again, so the receiver recovers by itself once space is back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_GROUP_BYTES = 16 * 1024 * 1024  # one write at most this big (a bigger single request goes alone)

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class AppendError(Exception):
    """The lines were not (durably) appended; str(e) is the reason to tell the client."""


class Appender:
    """Single writer of one log file, used from one asyncio event loop."""

    def __init__(self, path: Path, durability: str = "fsync") -> None:
        self.path = path
        self.durability = durability
        self.fsync = durability == "fsync"
        self.healthy = True  # the last commit worked (readiness)
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # _commit runs in worker threads, one at a time anyway
        self.commits = 0
        self.requests = 0

    async def append(self, data: bytes) -> None:
        """Append `data` (whole lines); returns once written (and fsync'd), else AppendError."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((data, fut))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush_loop())
        await fut

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                group = self._take_group()
                try:
                    await asyncio.to_thread(self._commit, [data for data, _ in group])
                except AppendError as e:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                except BaseException as e:  # a bug must not leave requests hanging
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(AppendError(f"internal error appending: {e!r}"))
                    raise
                for _, fut in group:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = False

    def _take_group(self) -> list[tuple[bytes, asyncio.Future[None]]]:
        size = 0
        n = 0
        for data, _ in self._pending:
            if n and size + len(data) > MAX_GROUP_BYTES:
                break
            size += len(data)
            n += 1
        group, self._pending = self._pending[:n], self._pending[n:]
        return group

    def _commit(self, chunks: list[bytes]) -> None:
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        with self._lock:
            try:
                fd = self._open()
                self._write_whole(fd, buf)
                if self.fsync:
                    try:
                        os.fdatasync(fd)
                    except OSError as e:
                        # The bytes are in the file (the tailer may have read them already) but
                        # not known to be on disk: the client retries, a duplicate at worst.
                        raise AppendError(f"cannot sync {self.path}: {e.strerror}; "
                                          "the events may not be stored, retry later") from None
            except AppendError as e:
                self._failed(e)
                raise
            except OSError as e:
                err = AppendError(_describe(e, self.path))
                self._failed(err)
                raise err from None
        if not self.healthy:
            log.info("receiver log writable again", extra={"path": str(self.path)})
        self.healthy = True
        self.commits += 1
        self.requests += len(chunks)

    def _write_whole(self, fd: int, buf: bytes) -> None:
        try:
            n = os.write(fd, buf)
        except OSError as e:
            raise AppendError(_describe(e, self.path)) from None
        if n == len(buf):
            return
        # Short write: the device or the file size limit is full. Cut our partial bytes
        # off again, unless another writer appended meanwhile (then it is no longer ours
        # to cut; the tailer dead-letters the broken line).
        end = os.lseek(fd, 0, os.SEEK_CUR)
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, end - n)
        else:
            log.error("partial write could not be undone: another writer appended after it",
                      extra={"path": str(self.path), "bytes": n})
        raise AppendError(f"no space left to append to {self.path} (wrote {n} of {len(buf)} bytes, "
                          "undone); retry later")

    def _open(self) -> int:
        """The descriptor for self.path, reopened when the path names another file (rotation)."""
        try:
            st = os.stat(self.path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ident = None
        if self._fd is not None and ident == self._ident:
            return self._fd
        self.close()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        if ident is not None:
            log.debug("receiver log opened", extra={"path": str(self.path)})
        else:
            log.info("receiver log created", extra={"path": str(self.path)})
        return fd

    def _failed(self, e: AppendError) -> None:
        if self.healthy:
            log.error("cannot append to receiver log; answering 503 until it works again",
                      extra={"path": str(self.path), "error": str(e)})
        self.healthy = False

    def writable(self) -> tuple[bool, str]:
        """Whether appending looks possible now (for readiness), and why not."""
        if not self.healthy:
            return False, f"last append to {self.path} failed"
        target = self.path if self.path.exists() else self.path.parent
        if not os.access(target, os.W_OK):
            return False, f"{target} is not writable"
        return True, ""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._ident = None


def _describe(e: OSError, path: Path) -> str:
    if e.errno in _NO_SPACE:
        return f"no space left to append to {path} ({e.strerror}); retry later"
    return f"cannot append to {path}: {e.strerror or e}"
