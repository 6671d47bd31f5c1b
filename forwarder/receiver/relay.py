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

from fastapi import Response
from prometheus_client import Counter

from ..decode.event import OversizeFields, UnknownFields
from ..logs import redact
from ..model import Rejection
from ..settings import RelaySettings
from ..state.deadletter import DeadLetter
from .bodies import sdk_events
from .intake import Decoded, Post
from .wire import ApiError, bearer, check_bearer, content_encoding, error_response, json_response

LOG_EVENT_PATH = "/v1/log_event"
RGSTR_PATH = "/v1/rgstr"
PATHS = (LOG_EVENT_PATH, RGSTR_PATH)
MAX_DEAD_RAW = 64 * 1024  # bytes of an invalid event kept in its dead-letter record

REQUESTS = Counter("statsig_forwarder_relay_requests", "Relay requests answered, by SDK type and outcome "
                   "(accepted, unauthorized, invalid, too_large, unavailable).", ["sdk_type", "outcome"])
EVENTS = Counter("statsig_forwarder_relay_events", "Events of relay requests, by SDK type and outcome "
                 "(appended, dead_lettered, dropped).", ["sdk_type", "outcome"])
BYTES = Counter("statsig_forwarder_relay_bytes", "Relay request body bytes as received (compressed), by SDK "
                "type, content encoding and outcome.", ["sdk_type", "encoding", "outcome"])

_OUTCOMES = {401: "unauthorized", 408: "invalid", 400: "invalid", 415: "invalid", 413: "too_large",
             503: "unavailable"}


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
    """The relay's door to the intake path (intake.py): Statsig's keys, bodies and answers."""

    limit_name = "relay.max_body_bytes"

    def __init__(self, deadletter: DeadLetter, options: RelaySettings, server_key: str | None,
                 token: str | None, max_line_bytes: int, unknown_fields: UnknownFields,
                 oversize_fields: OversizeFields = "send", fsync: bool = True) -> None:
        self.deadletter = deadletter
        self.options = options
        self.max_body = options.max_body_bytes
        self.status = relay_status(options, server_key)
        self._keys = [k.encode() for k in options.accepted_keys(server_key)]
        self._masks = [(k, redact(k.decode()).encode()) for k in self._keys]
        self._token = bearer(token)
        self.max_line_bytes = max_line_bytes
        self.unknown_fields = unknown_fields
        self.oversize_fields = oversize_fields
        self.fsync = fsync
        self.drop_internal = options.internal_events == "drop"
        self.sdk_type = _SdkTypes()
        self.stopping = False  # set when the server stops: answer 503 so SDKs retry elsewhere or later

    def admit(self, post: Post) -> None:
        if self.stopping:
            raise ApiError(503, "shutting down; retry", headers={"Retry-After": "1"})
        request = post.request
        check_bearer(request, self._token)
        self._check_key(request)
        query = request.query_params
        post.label = self.sdk_type(request.headers.get("statsig-sdk-type") or query.get("st"))
        # The JS client marks gzip only with gz=1 (no Content-Encoding).
        post.encoding = content_encoding(request, "gzip" if query.get("gz") == "1" else "identity")

    def _check_key(self, request: Any) -> None:
        given = (request.headers.get("statsig-api-key") or request.query_params.get("k") or "").encode()
        ok = False
        for key in self._keys:  # every key compared, so the time does not say which one matched
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise ApiError(401, "missing or unknown STATSIG-API-KEY: the relay accepts the forwarder's server "
                           "secret key and relay.keys")

    def decode(self, body: bytes) -> Decoded:
        return sdk_events(body, self.options.max_batch_events, self.max_line_bytes, self.unknown_fields,
                          self.oversize_fields, self.drop_internal, self._masks)

    async def settle(self, decoded: Decoded, post: Post) -> None:
        """Dead-letter the invalid events (and sync them with durability fsync) before the others are appended."""
        if not decoded.invalid:
            return
        source = f"relay {post.request.url.path} ({post.label})"
        dead = []
        for bad in decoded.invalid:
            raw = bad.raw if bad.raw is not None else b""
            dead.append(Rejection(None, source, bad.index, bad.index, f"invalid event: {bad.reason}",
                                  raw[:MAX_DEAD_RAW], len(raw)))

        def write() -> None:
            for r in dead:
                self.deadletter.write(r)
            if self.fsync:
                self.deadletter.sync()

        try:
            await asyncio.to_thread(write)
        except OSError as e:
            raise ApiError(503, f"cannot write the dead-letter file: {e.strerror or e}; nothing appended, retry "
                           "later", headers={"Retry-After": "1"}) from None

    def accepted(self, decoded: Decoded, post: Post) -> Response:
        sdk = post.label
        REQUESTS.labels(sdk, "accepted").inc()
        BYTES.labels(sdk, post.encoding, "accepted").inc(post.size)
        EVENTS.labels(sdk, "appended").inc(decoded.lines)
        if decoded.invalid:
            EVENTS.labels(sdk, "dead_lettered").inc(len(decoded.invalid))
        if decoded.dropped:
            EVENTS.labels(sdk, "dropped").inc(decoded.dropped)
        answer: dict[str, Any] = {"success": True, "accepted": decoded.lines, "deadLettered": len(decoded.invalid),
                                  "dropped": decoded.dropped}
        if decoded.invalid:
            answer["errors"] = [{"index": bad.index, "message": f"invalid event: {bad.reason}"}
                                for bad in decoded.invalid[:100]]
        return json_response(202, answer)

    def refused(self, error: ApiError, post: Post) -> Response:
        outcome = _OUTCOMES.get(error.status, "invalid")
        REQUESTS.labels(post.label, outcome).inc()
        BYTES.labels(post.label, post.encoding, outcome).inc(post.size)
        return error_response(error)

