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
"""

from __future__ import annotations

import hashlib
import os

FINGERPRINT_BYTES = 256
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


def data_start(fd: int) -> int | None:
    """Offset of the first data byte (skipping a leading hole); None for an empty file."""
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    except OSError:  # ENXIO: no data at all; EINVAL: filesystem without SEEK_DATA
        return None if os.fstat(fd).st_size == 0 else 0


def read_head(fd: int, size: int = FINGERPRINT_BYTES) -> bytes:
    """The first `size` bytes of the file's content, leading NULs skipped."""
    start = data_start(fd)
    if start is None:
        return b""
    raw = os.pread(fd, size + _HOLE_SLACK, start)
    return raw.lstrip(b"\0")[:size]


def fingerprint_fd(fd: int, size: int = FINGERPRINT_BYTES, short_ok: bool = False) -> str | None:
    """Identity of the open file `fd`; with `short_ok`, a ``head`` key for a short file."""
    head = read_head(fd, size)
    key = fingerprint_bytes(head, size)
    if key is None and short_ok:
        key = head_key(head)
    return key


def matches(fd: int, key: str, size: int = FINGERPRINT_BYTES) -> bool:
    """Does the open file `fd` (still) carry identity `key`?"""
    return matches_head(read_head(fd, size), key, size)


def matches_head(head: bytes, key: str, size: int = FINGERPRINT_BYTES) -> bool:
    """Does content starting with `head` (at least `size` bytes when there are) carry `key`?"""
    if key.startswith("head"):
        n = int(key[4 : key.index(":")])
        return head_key(head[:n]) == key
    return fingerprint_bytes(head, size) == key
