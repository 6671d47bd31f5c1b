"""Read one gzip-compressed NDJSON file as whole lines, checkpointable, in bounded memory.

Offsets (Chunk.start, checkpoints, event ids) count bytes of the *decompressed* stream,
and the identity is the fingerprint of the decompressed start (forwarder/fingerprint.py).
So `events.log.1.gz` has the same identity and offsets as the `events.log.1` it was made
from: a position saved while tailing the plain file still holds for its compressed copy.

Usage (a Source for `replay`; FileTailer reads a compressed file it meets through one too,
handing over its open descriptor):

    src = GzipSource("events.log.1.gz", max_line_bytes)   # or GzipSource(path, n, fd=fd)
    if src.key is not None:               # None: an empty file, nothing to read
        src.start(saved_offset or 0)      # decompress-and-discard up to the offset
        while not src.exhausted:
            items = src.poll(1 << 20)     # Chunks / Rejections, like any Source

Multi-member files (concatenated gzip) are read through. A truncated or corrupt file
yields every complete line before the damage, then an error is logged and the source is
exhausted (the checkpoint stops there; a later attempt resumes at the same place).
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib

from ..model import Item
from .fingerprint import FINGERPRINT_BYTES, GZIP_MAGIC, content_key, read_head
from .lines import LineBuffer

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
__all__ = ["GZIP_MAGIC", "GzipSource", "is_gzip"]


def is_gzip(path: str) -> bool:
    """True for a file that starts with the gzip magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return read_head(f.fileno(), len(GZIP_MAGIC)).compressed
    except OSError:
        return False


class GzipSource:
    """A Source over one gzip file, read from `start(offset)` to its end (never followed)."""

    def __init__(self, path: str, max_line_bytes: int, fd: int | None = None,
                 fingerprint_size: int = FINGERPRINT_BYTES) -> None:
        """Open `path`, or read through `fd` (already open on it; the caller keeps and closes it)."""
        self.path = path
        if fd is None:
            self._raw = open(path, "rb")  # noqa: SIM115 - lives as long as the source
        else:
            self._raw = open(fd, "rb", closefd=False)  # noqa: SIM115
            self._raw.seek(0)
        st = os.fstat(self._raw.fileno())
        self.size = st.st_size  # compressed bytes on disk
        self._where = (os.path.abspath(path), st.st_dev, st.st_ino)
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._lines = LineBuffer(None, path, 0, max_line_bytes)
        self._done = False
        self._fp_size = fingerprint_size
        self.head = b""  # the decompressed start the identity was taken from
        self.key = self._identify()
        if self.key is None:
            self._done = True

    def _identify(self) -> str | None:
        try:
            head = self._gz.read(self._fp_size)
        except (OSError, EOFError, zlib.error) as e:
            log.error("cannot read gzip file", extra={"path": self.path, "error": str(e)})
            return None
        if not head:
            return None
        self.head = head
        # The file is complete: a first line shorter than the fingerprint size and without a
        # newline is all there is, so it identifies the file by itself.
        return content_key(head, self._fp_size, complete=True)

    def start(self, offset: int, restart_if_shorter: bool = True) -> None:
        """Position at `offset` of the decompressed stream.

        When the file is shorter: read it from 0 or, without `restart_if_shorter`, read nothing
        (a compressed copy of a file already read further than the copy goes).
        """
        assert self.key is not None
        self._lines.key = self.key
        try:
            self._gz.seek(offset)
            reached = self._gz.tell()
        except (OSError, EOFError, zlib.error):
            reached = -1
        if reached != offset and not restart_if_shorter:
            log.warning("compressed file ends before the position already read; nothing to send",
                        extra={"path": self.path, "offset": offset})
            self._lines.reset(offset)
            self._done = True
            return
        if reached != offset:
            log.warning("compressed file is shorter than its checkpoint; reading from 0",
                        extra={"path": self.path, "checkpoint": offset})
            self._gz.seek(0)
            offset = 0
        self._lines.reset(offset)

    @property
    def exhausted(self) -> bool:
        return self._done

    @property
    def offset(self) -> int:
        """Decompressed offset just past the last line emitted (where a checkpoint can stand)."""
        return self._lines.offset

    @property
    def position(self) -> int:
        """Decompressed bytes read so far (emitted, plus a partial line held back)."""
        return self._lines.offset + self._lines.pending

    @property
    def disk_position(self) -> int:
        """Compressed bytes consumed so far (for progress against `size`)."""
        return self.size if self._done else self._raw.tell()

    def location(self, key: str) -> tuple[str, int, int]:
        return self._where

    def poll(self, budget: int) -> list[Item]:
        out: list[Item] = []
        pieces: list[bytes] = []  # fed as one block: one Chunk per poll, not one per step
        end = False
        while budget > 0 and not self._done:
            try:
                # read1: one decompression step at a time, so a damaged tail costs only itself
                data = self._gz.read1(min(READ_SIZE, budget))
            except (OSError, EOFError, zlib.error) as e:
                log.error("gzip file is truncated or corrupt; stopping at the last complete line",
                          extra={"path": self.path,
                                 "offset": self._lines.offset + self._lines.pending + sum(map(len, pieces)),
                                 "error": str(e)})
                self._done = True
                break
            if not data:
                self._done = end = True
                break
            budget -= len(data)
            pieces.append(data)
        if pieces:
            self._lines.feed(b"".join(pieces), out)
        if end:
            self._lines.finish(out)
        return out

    def close(self) -> None:
        self._gz.close()
        self._raw.close()
