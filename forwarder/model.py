"""Plain data types shared by the pipeline stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


class StatsigEvent(msgspec.Struct, omit_defaults=True, gc=False):
    """One event as Statsig's intake takes it: the pipeline's event from decode to sink.

    Nested objects are `msgspec.Raw` (JSON text, sent as it came): `metadata`,
    `secondaryExposures` and `statsigMetadata` when present (None: left out), and `user`, which
    may also be a Struct that encodes to the user object (decode.event's FileUser, UserID).
    """

    eventName: str
    time: int
    user: Any = None
    value: str | int | float | None = None
    metadata: Any = None
    secondaryExposures: Any = None
    statsigMetadata: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The event as plain JSON values (tests, dry runs, rules that read nested fields)."""
        result: dict[str, Any] = msgspec.json.decode(_encode(self))
        return result


@dataclass(slots=True)
class Chunk:
    """Complete lines read from one source.

    `data` holds whole lines, each ending in b"\\n" (the last may lack it only when
    `final` is set: a partial last line released at end of input). `start` is the byte
    offset of data[0] in the source; `key` identifies the source for checkpoints (None
    for stdin, which has no checkpoint).
    """

    key: str | None
    path: str
    start: int
    data: bytes
    final: bool = False


@dataclass(slots=True)
class Rejection:
    """A line that cannot be forwarded, bound for the dead-letter file.

    `raw` may be only a prefix of the line (`size` is the whole line's length); `end` is
    the offset just past it, which becomes deliverable once the rejection is recorded.
    """

    key: str | None
    path: str
    offset: int
    end: int
    reason: str
    raw: bytes
    size: int


Item = Chunk | Rejection


@dataclass(slots=True)
class Batch:
    """Events to send together, with the source positions they complete."""

    seq: int
    events: list[StatsigEvent] = field(default_factory=list)
    nbytes: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)
