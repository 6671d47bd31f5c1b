"""Split a byte stream into whole lines, in bounded memory."""

from __future__ import annotations

import time

from ..model import Chunk, Item, Rejection

REJECT_PREFIX_BYTES = 4096


def too_long(key: str | None, path: str, offset: int, end: int, raw: bytes, size: int, limit: int) -> Rejection:
    """The Rejection of a line over max_line_bytes (only its first bytes are kept)."""
    return Rejection(key, path, offset, end, too_long_reason(size, limit), raw[:REJECT_PREFIX_BYTES], size)


def too_long_reason(size: int, limit: int) -> str:
    return f"line too long: {size} bytes > max_line_bytes {limit}"


class LineBuffer:
    """Accumulates bytes of one stream and emits Chunks of whole lines.

    A line longer than `max_line_bytes` is not kept: its bytes are skipped up to the next
    newline and it is emitted as a Rejection with its offset, size and first bytes. NUL
    bytes where a line should start (the hole a writer leaves when it keeps its offset
    across a copytruncate) are skipped, not read as a line.
    """

    def __init__(self, key: str | None, path: str, offset: int, max_line_bytes: int) -> None:
        self.key = key
        self.path = path
        self.offset = offset  # start of the first byte not yet emitted
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._skipping = False
        self._skip_prefix = b""
        self._skipped = 0
        self.partial_since = 0.0  # monotonic time the current partial line started

    @property
    def pending(self) -> int:
        """Bytes read but not yet emitted (a partial line, or one being skipped)."""
        return len(self._buf) + (self._skipped if self._skipping else 0)

    def reset(self, offset: int) -> None:
        self.offset = offset
        self._buf = b""
        self._skipping = False
        self._skip_prefix = b""

    def feed(self, data: bytes, out: list[Item]) -> None:
        was_pending = self.pending
        if not self._buf and not self._skipping and data[:1] == b"\0":
            stripped = data.lstrip(b"\0")
            self.offset += len(data) - len(stripped)
            data = stripped
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self._skipped += len(data)
                return
            self._skipped += nl + 1
            self._end_skip(out)
            data = data[nl + 1 :]
        buf = self._buf + data if self._buf else data
        nl = buf.rfind(b"\n")
        if nl >= 0:
            out.append(Chunk(self.key, self.path, self.offset, buf[: nl + 1]))
            self.offset += nl + 1
            buf = buf[nl + 1 :]
        if len(buf) > self.max_line_bytes:
            self._skipping = True
            self._skip_prefix = buf[:REJECT_PREFIX_BYTES]
            self._skipped = len(buf)
            buf = b""
        self._buf = buf
        if self.pending and (not was_pending or nl >= 0):
            self.partial_since = time.monotonic()

    def finish(self, out: list[Item]) -> None:
        """End of input: release a partial last line (or an unterminated oversized one)."""
        if self._skipping:
            self._end_skip(out, terminated=False)
        elif self._buf:
            out.append(Chunk(self.key, self.path, self.offset, self._buf, final=True))
            self.offset += len(self._buf)
            self._buf = b""

    def _end_skip(self, out: list[Item], terminated: bool = True) -> None:
        size = self._skipped - (1 if terminated else 0)
        end = self.offset + self._skipped
        out.append(too_long(self.key, self.path, self.offset, end, self._skip_prefix, size, self.max_line_bytes))
        self.offset = end
        self._skipping = False
        self._skip_prefix = b""
