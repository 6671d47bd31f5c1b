"""The HTTP API: event intake (optional) plus /healthz, /readyz and /metrics.

An accepted request's events are validated with the same model as file lines
(`forwarder.decode.event`), then appended as NDJSON to the log the tailer follows: the caller's
JSON object as sent, plus `time` (receive time, epoch ms) when it has none. The answer
comes only once the lines are written (and fsync'd). Checks run cheapest first: route
(404/405), token (401), declared size (413), body within read_timeout (408), gzip (400/413),
JSON (400), event count (413), model (422), append (503).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..decode.codec import json_type, to_statsig
from ..decode.event import InvalidEvent, OversizeFields, UnknownFields, event_schema
from ..logs import LAST_PROBLEM
from ..settings import ReceiverSettings
from .appender import Appender, AppendError
from .cors import Cors
from .relay import PATHS as RELAY_PATHS
from .relay import Relay
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

Ready = Callable[[], tuple[bool, list[str]]]

EVENTS_PATH = "/v1/analytics/events"
BATCH_PATH = "/v1/analytics/batch"
NDJSON_PATH = "/v1/events"
_PATHS = frozenset((EVENTS_PATH, BATCH_PATH, NDJSON_PATH, *RELAY_PATHS, "/healthz", "/readyz", "/metrics"))

REQUESTS = Counter("statsig_forwarder_receiver_requests", "HTTP requests answered, by path and status code.",
                   ["path", "code"])
APPEND_FAILURES = Counter("statsig_forwarder_receiver_append_failures", "Requests answered 503: the append failed.")


@dataclass
class Intake:
    """What the event endpoints need: where to append and the limits to enforce."""

    appender: Appender
    options: ReceiverSettings
    max_line_bytes: int = 1024 * 1024
    unknown_fields: UnknownFields = "metadata"
    oversize_fields: OversizeFields = "send"
    relay: Relay | None = None  # the Statsig SDK endpoints (relay.enabled)


class _CountRequests:
    """Pure ASGI middleware counting answers by path and status (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in _PATHS else "other"
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            REQUESTS.labels(path, str(status)).inc()


_EVENT_SCHEMA = event_schema()
_OK_SCHEMA = {"type": "object", "properties": {"success": {"type": "boolean"}, "message": {"type": "string"},
                                                "accepted": {"type": "integer"}}}
_ERROR_SCHEMA = {"type": "object", "properties": {
    "success": {"type": "boolean"}, "message": {"type": "string"},
    "errors": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"}, "message": {"type": "string"}}}}}}
_ERRORS = {
    "400": "Body is not valid JSON (or not valid gzip/zstd)",
    "401": "Missing or wrong bearer token",
    "408": "Body not received within read_timeout",
    "413": "Body larger than max_body_bytes, or more than max_batch_events events",
    "415": "Unsupported Content-Encoding (only gzip, zstd and identity)",
    "422": "Not a valid event; `errors` names each failing event (index) and field",
    "503": "The log cannot be written (disk full, unwritable); nothing was appended, retry later",
}


def _doc(content_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        code: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        for code, text in _ERRORS.items()
    }
    responses["200"] = {"description": "Appended (and fsync'd with durability fsync)",
                        "content": {"application/json": {"schema": _OK_SCHEMA}}}
    return {
        "requestBody": {"required": True, "content": {content_type: {"schema": schema}}},
        "responses": responses,
    }


def create_app(ready: Ready, intake: Intake | None = None) -> FastAPI:
    """The ASGI app; without `intake`, only health and metrics (for --metrics-listen)."""
    app = FastAPI(title="statsig-forwarder receiver", version="1",
                  description="Accepts analytics events and appends them durably to the log the "
                  "forwarder tails.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response(exc.status_code, {"success": False, "message": str(exc.detail)},
                             dict(exc.headers) if exc.headers else None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready: the log is writable and the Statsig key is accepted",
             responses={503: {"description": "Not ready; `reasons` says why"}})
    async def readyz() -> Response:
        ok, reasons = ready()
        doc: dict[str, Any] = {"ready": ok, "reasons": reasons, "last_problem": LAST_PROBLEM.as_dict()}
        if intake is not None:
            doc["relay"] = (intake.relay.status.as_dict() if intake.relay is not None
                            else {"enabled": False, "paths": [], "accepted_keys": []})
        return json_response(200 if ok else 503, doc)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if intake is not None:
        _add_intake(app, intake)
        if intake.options.cors_origins:  # web pages as producers (cors.py)
            app.add_middleware(Cors, origins=intake.options.cors_origins,
                               paths=(EVENTS_PATH, BATCH_PATH, NDJSON_PATH, *RELAY_PATHS))
    app.add_middleware(_CountRequests)
    return app


def _add_intake(app: FastAPI, intake: Intake) -> None:
    handle = _Handler(intake)

    @app.post(EVENTS_PATH, summary="Append one event", openapi_extra=_doc("application/json", _EVENT_SCHEMA))
    async def post_event(request: Request) -> Response:
        return await handle(request, _parse_one)

    @app.post(BATCH_PATH, summary="Append a JSON array of events (all or nothing)",
              openapi_extra=_doc("application/json", {"type": "array", "items": _EVENT_SCHEMA}))
    async def post_batch(request: Request) -> Response:
        return await handle(request, _parse_array)

    @app.post(NDJSON_PATH, summary="Append NDJSON events, one per line (all or nothing)",
              openapi_extra=_doc("application/x-ndjson", {"type": "string"}))
    async def post_ndjson(request: Request) -> Response:
        return await handle(request, _parse_ndjson)

    relay = intake.relay
    if relay is not None:
        async def post_sdk_events(request: Request) -> Response:
            return await relay(request)

        for path in RELAY_PATHS:
            app.add_api_route(path, post_sdk_events, methods=["POST"], include_in_schema=False)


Parser = Callable[[bytes], list[Any]]


class _Handler:
    """The steps every event endpoint shares."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.appender = intake.appender
        opts = intake.options
        self.token = bearer(opts.secret_token)
        self.max_body = opts.max_body_bytes
        self.max_events = opts.max_batch_events
        self.read_timeout = opts.read_timeout

    async def __call__(self, request: Request, parse: Parser) -> Response:
        try:
            check_bearer(request, self.token)
            body = await self._body(request)
            objs = parse(body)
            data = self._lines(objs)
            try:
                await self.appender.append(data)
            except AppendError as e:
                APPEND_FAILURES.inc()
                raise ApiError(503, str(e), headers={"Retry-After": "1"}) from None
        except ApiError as e:
            return error_response(e)
        RECEIVER_EVENTS.inc(len(objs))
        n = len(objs)
        return json_response(200, {"success": True, "message": f"{n} event{'s' if n != 1 else ''} accepted",
                                   "accepted": n})

    async def _body(self, request: Request) -> bytes:
        encoding = content_encoding(request)
        body = await read_body(request, self.max_body, self.read_timeout)
        return decompress(body, encoding, self.max_body)

    def _lines(self, objs: list[Any]) -> bytes:
        """Validate every event (all or nothing) and render the NDJSON to append."""
        if not objs:
            raise ApiError(422, "no events in the request")
        if len(objs) > self.max_events:
            raise ApiError(413, f"{len(objs)} events is over max_batch_events ({self.max_events})")
        now = int(time.time() * 1000)
        errors: list[dict[str, Any]] = []
        lines = []
        unknown = self.intake.unknown_fields
        max_line = self.intake.max_line_bytes
        for i, obj in enumerate(objs):
            if type(obj) is not dict:
                errors.append({"index": i, "message": f"not a JSON object: got {json_type(obj)}"})
                continue
            if obj.get("time") is None:
                obj["time"] = now  # as the model would: a missing time is the receive time
            # The line first: its length lets short events skip measuring their object fields
            # (most of the validation's cost at this endpoint otherwise).
            try:
                line: bytes | None = orjson.dumps(obj)
            except orjson.JSONEncodeError:
                line = None
            try:
                to_statsig(obj, unknown, self.intake.oversize_fields, None if line is None else len(line))
            except InvalidEvent as e:
                errors.append({"index": i, "message": str(e)})
                continue
            if line is None:
                line = orjson.dumps(obj)
            if len(line) > max_line:
                errors.append({"index": i, "message": f"event is {len(line)} bytes as a line, over "
                               f"max_line_bytes ({max_line})"})
                continue
            lines.append(line)
        if errors:
            shown = "; ".join(f"[{e['index']}] {e['message']}" for e in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise ApiError(422, f"{len(errors)} invalid event(s), nothing appended: {shown}{more}", errors)
        lines.append(b"")
        return b"\n".join(lines)


def _parse_one(body: bytes) -> list[Any]:
    return [loads(body)]


def _parse_array(body: bytes) -> list[Any]:
    doc = loads(body)
    if type(doc) is not list:
        raise ApiError(422, f"expected a JSON array of events, got {json_type(doc)}")
    return doc


def _parse_ndjson(body: bytes) -> list[Any]:
    objs = []
    errors = []
    for i, line in enumerate(body.split(b"\n")):
        if not line.strip():
            continue
        try:
            objs.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            errors.append({"index": i, "message": f"invalid JSON: {e}"})
    if errors:
        raise ApiError(400, f"{len(errors)} line(s) are not valid JSON, nothing appended "
                       f"(first: line index {errors[0]['index']})", errors)
    return objs


def default_ready(appender: Appender | None, pipeline: Ready | None = None) -> Ready:
    """Readiness: the receiver log is writable, and the forwarding pipeline (when there is
    one in this process) is ready: see forwarder.health.readiness."""

    def ready() -> tuple[bool, list[str]]:
        reasons = []
        ready = True
        if appender is not None:
            ok, why = appender.writable()
            if not ok:
                ready = False
                reasons.append(why)
        if pipeline is not None:
            ok, notes = pipeline()  # notes may come with ok (following no file yet)
            ready = ready and ok
            reasons.extend(notes)
        return ready, reasons

    return ready

