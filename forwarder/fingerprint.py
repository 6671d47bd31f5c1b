"""File identity: a checksum of the file's first line (at most FINGERPRINT_BYTES).

Keyed by content rather than path or inode, a renamed file keeps its checkpoint, a copy
made by copytruncate resumes where the original stopped, and a new file that reuses an
old inode starts from byte 0. A file whose first line is not complete yet has no
identity: it is retried, never failed (like Vector's "known small files").
"""

from __future__ import annotations

import hashlib
import os

FINGERPRINT_BYTES = 256


def fingerprint_bytes(head: bytes, size: int = FINGERPRINT_BYTES) -> str | None:
    """Identity of a file starting with `head`, or None while it is too short to tell."""
    nl = head.find(b"\n", 0, size)
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) >= size:
        head = head[:size]
    else:
        return None
    return "crc:" + hashlib.blake2b(head, digest_size=8).hexdigest()


def fingerprint_fd(fd: int, size: int = FINGERPRINT_BYTES) -> str | None:
    """Identity of the open file `fd` (reads its first bytes with pread)."""
    return fingerprint_bytes(os.pread(fd, size, 0), size)
