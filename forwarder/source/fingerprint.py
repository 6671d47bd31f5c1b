"""File identity: a checksum of the file's first line (at most `fingerprint_bytes`).

Keyed by content rather than path or inode, a renamed file keeps its checkpoint, a copy
made by copytruncate resumes where the original stopped, and a new file that reuses an
old inode starts from byte 0. Two kinds of key:

- ``crc:<hex>``: the first line, newline included, or the first `fingerprint_bytes` bytes
  when the first line is longer. The normal case.
- ``head<N>:<hex>``: the first N bytes of a file too short for a ``crc`` key (its first
  line is not complete and shorter than `fingerprint_bytes`) once `fingerprint_wait` has
  passed, so short files never wait forever (Filebeat ignores files under 1 KiB). The
  same file, grown later, still matches: its first N bytes are unchanged.

A file whose first line is not complete yet has no identity until then: it is retried,
never failed (like Vector's "known small files"). Leading NUL bytes (the hole left by a
writer that kept its offset across a copytruncate) are not part of the identity.

A file's kind (gzip or text) is decided from the same bytes its identity is read from
(`read_head`), so a `.gz` that gzip is still filling is never identified as text. A gzip
file's identity is the key of its *decompressed* start (`content_key`), so the compressed
copy of a file has the identity of the original.

Every reader of identities (the tailer, the .gz source, `checkpoints`, `replay`) goes
through `read_head` + `content_key`, or `identify_path` for a whole file, with the one
`fingerprint_bytes` setting.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass

from ..settings import Settings

# Callers pass settings.fingerprint_bytes; this default (for tools and tests) is the setting's own.
FINGERPRINT_BYTES: int = Settings.model_fields["fingerprint_bytes"].default
GZIP_MAGIC = b"\x1f\x8b"
_HOLE_SLACK = 4096  # NULs left before the first data byte after SEEK_DATA (block granularity)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def fingerprint_bytes(head: bytes, size: int = FINGERPRINT_BYTES) -> str | None:
    """``crc`` identity of a file starting with `head`, or None while it is too short to tell."""
    nl = head.find(b"\n", 0, size)
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) >= size:
        head = head[:size]
    else:
        return None
    return "crc:" + _digest(head)


def head_key(head: bytes) -> str | None:
    """``head<N>`` identity of a short file (None when it is empty)."""
    return f"head{len(head)}:{_digest(head)}" if head else None


def content_key(head: bytes, size: int, *, short_ok: bool = False, complete: bool = False) -> str | None:
    """Identity of content starting with `head` (its first `size` bytes, or all there is).

    A first line that is not complete yet gives no identity, unless `short_ok` (a ``head``
    key: fingerprint_wait has passed) or `complete` (the content is all there will ever be,
    as in a finished .gz: a ``crc`` key of the whole of it).
    """
    key = fingerprint_bytes(head, size)
    if key is None and complete and head:
        key = fingerprint_bytes(head, len(head))
    if key is None and short_ok:
        key = head_key(head)
    return key


@dataclass(frozen=True, slots=True)
class Head:
    """The first bytes of a file, read once: its kind and its identity both come from them."""

    data: bytes  # up to `size` bytes from the first data byte (leading NULs skipped)
    compressed: bool  # starts with the gzip magic: `data` is compressed, identify through gzip

    @property
    def undecided(self) -> bool:
        """Too few bytes to tell gzip from text (empty, or the first magic byte alone)."""
        return GZIP_MAGIC.startswith(self.data)


def data_start(fd: int) -> int | None:
    """Offset of the first data byte (skipping a leading hole); None for an empty file."""
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    except OSError:  # ENXIO: no data at all; EINVAL: filesystem without SEEK_DATA
        return None if os.fstat(fd).st_size == 0 else 0


def read_head(fd: int, size: int = FINGERPRINT_BYTES) -> Head:
    """The first `size` bytes of the file's content with its kind, from one read."""
    start = data_start(fd)
    if start is None:
        return Head(b"", False)
    raw = os.pread(fd, size + _HOLE_SLACK, start)
    if start == 0 and raw.startswith(GZIP_MAGIC):
        return Head(raw[:size], True)
    return Head(raw.lstrip(b"\0")[:size], False)


def fingerprint_fd(fd: int, size: int = FINGERPRINT_BYTES, short_ok: bool = False) -> str | None:
    """Identity of the open plain-text file `fd`; with `short_ok`, a ``head`` key for a short file."""
    return content_key(read_head(fd, size).data, size, short_ok=short_ok)


def matches(fd: int, key: str, size: int = FINGERPRINT_BYTES) -> bool:
    """Does the open file `fd` (still) carry identity `key`?"""
    return matches_head(read_head(fd, size).data, key, size)


def matches_head(head: bytes, key: str, size: int = FINGERPRINT_BYTES) -> bool:
    """Does content starting with `head` (at least `size` bytes when there are) carry `key`?"""
    if key.startswith("head"):
        n = int(key[4 : key.index(":")])
        return head_key(head[:n]) == key
    return fingerprint_bytes(head, size) == key


@dataclass(frozen=True, slots=True)
class PathIdentity:
    """What a command sees of a file: its content start, length and kind."""

    head: bytes  # decompressed for gzip
    size: int  # content bytes (decompressed for gzip: the file is read through)
    compressed: bool

    def key(self, size: int) -> str | None:
        """The identity `run` gives this content when its first line is complete (or it is a .gz)."""
        return content_key(self.head, size, complete=self.compressed)

    def matches(self, key: str, size: int) -> bool:
        """Does this content carry `key` (``head`` keys of files grown since included)?"""
        return self.key(size) == key or matches_head(self.head, key, size)


def identify_path(path: str, size: int = FINGERPRINT_BYTES) -> PathIdentity:
    """Read `path` as `run` would: kind and start from one read, gzip decompressed (read through)."""
    with open(path, "rb") as raw:
        head = read_head(raw.fileno(), size)
        if not head.compressed:
            return PathIdentity(head.data, os.fstat(raw.fileno()).st_size, False)
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            try:
                start = gz.read(size)
                while gz.read(1 << 20):
                    pass
            except (EOFError, zlib.error) as e:
                raise OSError(f"gzip file is truncated or corrupt: {e}") from None
            return PathIdentity(start, gz.tell(), True)
