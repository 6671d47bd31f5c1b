"""The Statsig SDK relay: Statsig's own event endpoints, answered only once the events are on disk.

An app points its Statsig SDK's event URL at the sidecar: server SDKs post to
`/v1/log_event`, client SDKs (@statsig/js-client) to `/v1/rgstr?k=<key>&...`, both with
`{"events": [...], "statsigMetadata": {...}}` plain, gzip (`Content-Encoding`, or `gz=1`
from the JS client) or zstd (the Node core SDK). Each valid event is appended as one line in
Statsig's own shape (`forwarder.decode.event.SdkEvent`), so the tailer forwards it as it
came, with every guarantee of a file line.

Answers speak the SDKs' language (docs/sdk-relay.md): 202 `{"success": true}` only
after the append (and fsync); what an SDK should retry (log not writable, shutting down) is
a 503 with Retry-After, never 413 or 429, which core SDKs treat as "drop". An invalid event
costs only itself: it is dead-lettered with its reason, the others are appended, and the
answer's `deadLettered` and `errors` say so. Checks run cheapest first: shutting down
(503), bearer token when configured and the STATSIG-API-KEY (or `k`) among the accepted
keys, compared in constant time (401), size (413), body within read_timeout (408),
encoding (415/400), body shape (400), event count (413), then per event. An accepted key
found inside an event (SDK diagnostics name their specs URL, which holds the key) is masked
before the append.

Internal SDK events (names starting `statsig::` other than the exposures, such as
`statsig::diagnostics`) are forwarded like any event unless relay.internal_events = "drop".
"""

from __future__ import annotations

import asyncio
import hmac
import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from prometheus_client import Counter

from ..decode.codec import json_type, to_statsig
from ..decode.event import InvalidEvent, OversizeFields, UnknownFields
from ..logs import redact
from ..model import Rejection
from ..settings import RelaySettings
from ..state.deadletter import DeadLetter
from .appender import Appender, AppendError
from .wire import (
    RECEIVER_EVENTS,
    ApiError,
    bearer,
    check_bearer,
    content_encoding,
    decompress,
    error_response,
    json_response,
    loads,
    read_body,
)

LOG_EVENT_PATH = "/v1/log_event"
RGSTR_PATH = "/v1/rgstr"
PATHS = (LOG_EVENT_PATH, RGSTR_PATH)
EXPOSURES = frozenset(("statsig::gate_exposure", "statsig::config_exposure", "statsig::layer_exposure"))
MAX_DEAD_RAW = 64 * 1024  # bytes of an invalid event kept in its dead-letter record

REQUESTS = Counter("statsig_forwarder_relay_requests", "Relay requests answered, by SDK type and outcome "
                   "(accepted, unauthorized, invalid, too_large, unavailable).", ["sdk_type", "outcome"])
EVENTS = Counter("statsig_forwarder_relay_events", "Events of relay requests, by SDK type and outcome "
                 "(appended, dead_lettered, dropped).", ["sdk_type", "outcome"])
BYTES = Counter("statsig_forwarder_relay_bytes", "Relay request body bytes as received (compressed), by SDK "
                "type, content encoding and outcome.", ["sdk_type", "encoding", "outcome"])

_OUTCOMES = {401: "unauthorized", 408: "invalid", 400: "invalid", 415: "invalid", 413: "too_large",
             503: "unavailable"}


def is_internal(name: str) -> bool:
    """An SDK's own bookkeeping event (statsig::diagnostics, ...), as opposed to exposures and app events."""
    return name.startswith("statsig::") and name not in EXPOSURES


@dataclass
class RelayStatus:
    """What /readyz and `check` say about the relay."""

    enabled: bool
    keys: list[str]  # redacted as in the logs

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "paths": list(PATHS) if self.enabled else [],
                "accepted_keys": self.keys if self.enabled else []}

    def describe(self) -> str:
        if not self.enabled:
            return "Statsig SDK relay: disabled (relay.enabled = false)"
        keys = ", ".join(self.keys) if self.keys else "none (every SDK request gets 401: set " \
            "STATSIG_SERVER_SECRET_KEY or relay.keys)"
        return f"Statsig SDK relay: enabled on {' and '.join(PATHS)} wherever the receiver listens; " \
            f"accepted keys: {keys}"


def relay_status(options: RelaySettings, server_key: str | None) -> RelayStatus:
    return RelayStatus(options.enabled, [redact(k) for k in options.accepted_keys(server_key)])


class _SdkTypes:
    """Metric label of the SDK type: sanitised, and at most `limit` distinct values (then "other")."""

    _CLEAN = re.compile(r"[^a-z0-9._-]")

    def __init__(self, limit: int = 20) -> None:
        self.seen: set[str] = set()
        self.limit = limit

    def __call__(self, raw: str | None) -> str:
        if not raw:
            return "unknown"
        label = self._CLEAN.sub("", raw.lower())[:40] or "unknown"
        if label not in self.seen:
            if len(self.seen) >= self.limit:
                return "other"
            self.seen.add(label)
        return label


class Relay:
    """Handles the relay endpoints for one receiver."""

    def __init__(self, appender: Appender, deadletter: DeadLetter, options: RelaySettings, server_key: str | None,
                 token: str | None, read_timeout: float, max_line_bytes: int,
                 unknown_fields: UnknownFields, oversize_fields: OversizeFields = "send") -> None:
        self.appender = appender
        self.deadletter = deadletter
        self.options = options
        self.status = relay_status(options, server_key)
        self._keys = [k.encode() for k in options.accepted_keys(server_key)]
        self._masks = [(k, redact(k.decode()).encode()) for k in self._keys]
        self._token = bearer(token)
        self.read_timeout = read_timeout
        self.max_line_bytes = max_line_bytes
        self.unknown_fields = unknown_fields
        self.oversize_fields = oversize_fields
        self.drop_internal = options.internal_events == "drop"
        self.sdk_type = _SdkTypes()
        self.stopping = False  # set when the server stops: answer 503 so SDKs retry elsewhere or later

    async def __call__(self, request: Request) -> Response:
        sdk = "unknown"
        size = 0
        encoding = "identity"
        try:
            if self.stopping:
                raise ApiError(503, "shutting down; retry", headers={"Retry-After": "1"})
            check_bearer(request, self._token)
            self._check_key(request)
            query = request.query_params
            sdk = self.sdk_type(request.headers.get("statsig-sdk-type") or query.get("st"))
            # The JS client marks gzip only with gz=1 (no Content-Encoding).
            encoding = content_encoding(request, "gzip" if query.get("gz") == "1" else "identity")
            limit = self.options.max_body_bytes
            raw = await read_body(request, limit, self.read_timeout, "relay.max_body_bytes")
            size = len(raw)
            events = self._events(decompress(raw, encoding, limit, "relay.max_body_bytes"))
            answer = await self._store(events, request.url.path, sdk)
        except ApiError as e:
            outcome = _OUTCOMES.get(e.status, "invalid")
            REQUESTS.labels(sdk, outcome).inc()
            BYTES.labels(sdk, encoding, outcome).inc(size)
            return error_response(e)
        REQUESTS.labels(sdk, "accepted").inc()
        BYTES.labels(sdk, encoding, "accepted").inc(size)
        return json_response(202, answer)

    def _check_key(self, request: Request) -> None:
        given = (request.headers.get("statsig-api-key") or request.query_params.get("k") or "").encode()
        ok = False
        for key in self._keys:  # every key compared, so the time does not say which one matched
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise ApiError(401, "missing or unknown STATSIG-API-KEY: the relay accepts the forwarder's server "
                           "secret key and relay.keys")

    def _events(self, body: bytes) -> list[Any]:
        doc = loads(body)
        if type(doc) is not dict:
            raise ApiError(400, f'expected {{"events": [...], "statsigMetadata": {{...}}}}, got {json_type(doc)}')
        events = doc.get("events")
        if type(events) is not list:
            raise ApiError(400, f'"events" must be an array of events, got {json_type(events)}')
        if len(events) > self.options.max_batch_events:
            raise ApiError(413, f"{len(events)} events is over relay.max_batch_events "
                           f"({self.options.max_batch_events})")
        return events

    async def _store(self, events: list[Any], path: str, sdk: str) -> dict[str, Any]:
        """Dead-letter the invalid events, append the valid ones; the answer's document."""
        lines: list[bytes] = []
        dead: list[Rejection] = []
        errors: list[dict[str, Any]] = []
        dropped = 0
        max_line = self.max_line_bytes
        source = f"relay {path} ({sdk})"
        for i, obj in enumerate(events):
            try:
                if type(obj) is not dict:
                    raise InvalidEvent(f"not a JSON object: got {json_type(obj)}")
                ev = to_statsig(obj, self.unknown_fields, self.oversize_fields)
                if self.drop_internal and is_internal(ev["eventName"]):
                    dropped += 1
                    continue
                line = self._mask(orjson.dumps(ev))
                if len(line) > max_line:
                    raise InvalidEvent(f"event is {len(line)} bytes as a line, over max_line_bytes ({max_line})")
            except (InvalidEvent, orjson.JSONEncodeError) as e:
                reason = f"invalid event: {e}"
                try:
                    raw = self._mask(orjson.dumps(obj))
                except orjson.JSONEncodeError:  # nested deeper than orjson writes
                    raw = self._mask(repr(obj).encode())
                dead.append(Rejection(None, source, i, i, reason, raw[:MAX_DEAD_RAW], len(raw)))
                errors.append({"index": i, "message": reason})
                continue
            lines.append(line)
        if dead:
            await self._dead_letter(dead)
        if lines:
            lines.append(b"")
            try:
                await self.appender.append(b"\n".join(lines))
            except AppendError as e:
                raise ApiError(503, str(e), headers={"Retry-After": "1"}) from None
        appended = len(lines) - 1 if lines else 0
        EVENTS.labels(sdk, "appended").inc(appended)
        RECEIVER_EVENTS.inc(appended)
        if dead:
            EVENTS.labels(sdk, "dead_lettered").inc(len(dead))
        if dropped:
            EVENTS.labels(sdk, "dropped").inc(dropped)
        answer: dict[str, Any] = {"success": True, "accepted": appended, "deadLettered": len(dead),
                                  "dropped": dropped}
        if errors:
            answer["errors"] = errors[:100]
        return answer

    def _mask(self, line: bytes) -> bytes:
        """The line with every accepted key redacted (SDK diagnostics name their specs URL, which holds the key)."""
        for key, masked in self._masks:
            if key in line:
                line = line.replace(key, masked)
        return line

    async def _dead_letter(self, dead: list[Rejection]) -> None:
        def write() -> None:
            for r in dead:
                self.deadletter.write(r)
            if self.appender.fsync:
                self.deadletter.sync()

        try:
            await asyncio.to_thread(write)
        except OSError as e:
            raise ApiError(503, f"cannot write the dead-letter file: {e.strerror or e}; nothing appended, retry "
                           "later", headers={"Retry-After": "1"}) from None
