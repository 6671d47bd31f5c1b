"""One intake path for every event endpoint: request -> body -> one decode -> append -> answer.

The seed endpoints (`/v1/analytics/events`, `/v1/analytics/batch`, `/v1/events`) and the
Statsig SDK relay (`/v1/log_event`, `/v1/rgstr`) differ only in who may post, how a body is
shaped and what an invalid event costs (the whole request, 422; or only itself, dead-lettered).
Each family is a `Door` (api.py's `SeedDoor`, relay.py's `Relay`); `Intake.take` runs the
steps they share, cheapest first: admission (503, 401, 415), body within read_timeout (408)
and size (413), decompression (400/413), the door's decode of the whole body (400, 413, and
the per-event verdicts), the door's settling of invalid events (422, or the dead-letter
file), the append (503 with Retry-After), the answer. Decompression and decoding run on the
event loop: handing them to a worker thread measured more CPU per event and a worse p99 (the
two threads contend for the GIL; BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from fastapi import Request, Response
from prometheus_client import Counter

from ..decode.event import OversizeFields, UnknownFields
from ..settings import ReceiverSettings
from .appender import Appender, AppendError
from .wire import RECEIVER_EVENTS, ApiError, decompress, read_body

if TYPE_CHECKING:
    from .relay import Relay

APPEND_FAILURES = Counter("statsig_forwarder_receiver_append_failures", "Requests answered 503: the append failed.")


@dataclass(slots=True)
class Invalid:
    """One event of a body that is not a valid event: its index, the reason, its raw text (if known)."""

    index: int
    reason: str
    raw: bytes | None = None


@dataclass(slots=True)
class Decoded:
    """What a body decodes to: the lines to append (each newline-terminated) and the events left out."""

    data: bytes = b""
    lines: int = 0
    invalid: list[Invalid] = field(default_factory=list)
    dropped: int = 0  # valid events left out on purpose (relay.internal_events = "drop")


@dataclass(slots=True)
class Post:
    """One request on its way through the intake (what a door's metrics and answer need)."""

    request: Request
    encoding: str = "identity"
    size: int = 0  # body bytes as received (compressed)
    label: str = "unknown"  # the relay's SDK type


class Door(Protocol):
    """What one family of endpoints decides for itself."""

    max_body: int
    limit_name: str  # the option named in a 413

    def admit(self, post: Post) -> None:
        """Raise ApiError for a request that may not post (503, 401, 415); set post.encoding."""

    def decode(self, body: bytes) -> Decoded:
        """The whole (decompressed) body in one decode; ApiError when the body as a whole is unusable."""

    async def settle(self, decoded: Decoded, post: Post) -> None:
        """Deal with decoded.invalid before the append (refuse the request, or dead-letter them)."""

    def accepted(self, decoded: Decoded, post: Post) -> Response:
        """The answer once the lines are appended."""

    def refused(self, error: ApiError, post: Post) -> Response:
        """The answer to a refused request."""


@dataclass
class Intake:
    """What the event endpoints need: where to append and the limits to enforce."""

    appender: Appender
    options: ReceiverSettings
    max_line_bytes: int = 1024 * 1024
    unknown_fields: UnknownFields = "metadata"
    oversize_fields: OversizeFields = "send"
    relay: Relay | None = None  # the Statsig SDK endpoints (relay.enabled)

    async def take(self, request: Request, door: Door) -> Response:
        """Run one request through the shared steps."""
        post = Post(request)
        try:
            door.admit(post)
            raw = await read_body(request, door.max_body, self.options.read_timeout, door.limit_name)
            post.size = len(raw)
            decoded = door.decode(decompress(raw, post.encoding, door.max_body, door.limit_name))
            await door.settle(decoded, post)
            if decoded.data:
                try:
                    await self.appender.append(decoded.data)
                except AppendError as e:
                    APPEND_FAILURES.inc()
                    raise ApiError(503, str(e), headers={"Retry-After": "1"}) from None
        except ApiError as e:
            return door.refused(e, post)
        RECEIVER_EVENTS.inc(decoded.lines)
        return door.accepted(decoded, post)

