"""The HTTP API: event intake (optional) plus /healthz, /readyz and /metrics.

An accepted request's events are validated with the same model as file lines
(`forwarder.decode.event`), then appended as NDJSON to the log the tailer follows: the caller's
JSON object as sent, plus `time` (receive time, epoch ms) when it has none. The answer
comes only once the lines are written (and fsync'd). Checks run cheapest first: route
(404/405), token (401), declared size (413), body within read_timeout (408), gzip (400/413),
JSON (400), event count (413), model (422), append (503).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..decode.event import event_schema
from ..logs import LAST_PROBLEM
from .appender import Appender
from .bodies import Shape, seed_events
from .cors import Cors
from .intake import Decoded, Intake, Post
from .relay import PATHS as RELAY_PATHS
from .wire import ApiError, bearer, check_bearer, content_encoding, error_response, json_response

Ready = Callable[[], tuple[bool, list[str]]]

EVENTS_PATH = "/v1/analytics/events"
BATCH_PATH = "/v1/analytics/batch"
NDJSON_PATH = "/v1/events"
_PATHS = frozenset((EVENTS_PATH, BATCH_PATH, NDJSON_PATH, *RELAY_PATHS, "/healthz", "/readyz", "/metrics"))

REQUESTS = Counter("statsig_forwarder_receiver_requests", "HTTP requests answered, by path and status code.",
                   ["path", "code"])


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


_EVENT_SCHEMA = event_schema()  # from the Structs that decide (msgspec.json.schema)
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
    one, array, ndjson = (SeedDoor(intake, shape) for shape in ("one", "array", "ndjson"))

    @app.post(EVENTS_PATH, summary="Append one event", openapi_extra=_doc("application/json", _EVENT_SCHEMA))
    async def post_event(request: Request) -> Response:
        return await intake.take(request, one)

    @app.post(BATCH_PATH, summary="Append a JSON array of events (all or nothing)",
              openapi_extra=_doc("application/json", {"type": "array", "items": _EVENT_SCHEMA}))
    async def post_batch(request: Request) -> Response:
        return await intake.take(request, array)

    @app.post(NDJSON_PATH, summary="Append NDJSON events, one per line (all or nothing)",
              openapi_extra=_doc("application/x-ndjson", {"type": "string"}))
    async def post_ndjson(request: Request) -> Response:
        return await intake.take(request, ndjson)

    relay = intake.relay
    if relay is not None:
        async def post_sdk_events(request: Request) -> Response:
            return await intake.take(request, relay)

        for path in RELAY_PATHS:
            app.add_api_route(path, post_sdk_events, methods=["POST"], include_in_schema=False)


class SeedDoor:
    """The seed endpoints' door to the intake path: bearer token, all or nothing, 200 with a count."""

    limit_name = "max_body_bytes"

    def __init__(self, intake: Intake, shape: Shape) -> None:
        self.intake = intake
        self.shape = shape
        opts = intake.options
        self.token = bearer(opts.secret_token)
        self.max_body = opts.max_body_bytes

    def admit(self, post: Post) -> None:
        check_bearer(post.request, self.token)
        post.encoding = content_encoding(post.request)

    def decode(self, body: bytes) -> Decoded:
        i = self.intake
        return seed_events(body, self.shape, i.options.max_batch_events, i.max_line_bytes, i.unknown_fields,
                           i.oversize_fields)

    async def settle(self, decoded: Decoded, post: Post) -> None:
        errors = decoded.invalid
        if errors:
            shown = "; ".join(f"[{e.index}] {e.reason}" for e in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise ApiError(422, f"{len(errors)} invalid event(s), nothing appended: {shown}{more}",
                           [{"index": e.index, "message": e.reason} for e in errors])

    def accepted(self, decoded: Decoded, post: Post) -> Response:
        n = decoded.lines
        return json_response(200, {"success": True, "message": f"{n} event{'s' if n != 1 else ''} accepted",
                                   "accepted": n})

    def refused(self, error: ApiError, post: Post) -> Response:
        return error_response(error)


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

