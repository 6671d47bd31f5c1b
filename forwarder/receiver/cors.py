"""CORS on the event endpoints: which web pages may post events, enforced by the server.

Browsers send `Origin` on every POST (same-origin ones too) and on preflights. With
`receiver.cors_origins` set, a request to an event endpoint whose Origin is not listed gets
403 before its body is read, so nothing is appended: also a "simple" request that a browser
sends without asking first (a `text/plain` POST, `navigator.sendBeacon`), which CORS alone
(and Starlette's CORSMiddleware, which only withholds its headers) would let through. A
listed origin gets its preflight answered (POST, the headers the seed's snippet and the
Statsig client SDKs send) and `Access-Control-Allow-Origin` on every answer. Requests
without Origin (servers, backend SDKs, curl) pass unchanged. Empty list: this middleware is
not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_AGE = "7200"  # seconds a browser may reuse a preflight's answer (Chromium caps it at 2 hours)
# Request headers a page may send: the seed's snippet sends content-type, the Statsig client SDKs
# statsig-event-count, -retry-count, -sdk-type, -sdk-version; authorization for receiver.token.
ALLOWED_HEADERS = frozenset(("content-type", "content-encoding", "authorization"))
ALLOWED_HEADER_PREFIX = "statsig-"
_LOGGED_ORIGINS_MAX = 100  # refused origins logged once each, up to this many

REFUSED = Counter("statsig_forwarder_receiver_cors_refused", "Requests from web pages answered 403, by reason: "
                  "origin (not in receiver.cors_origins), preflight (a method or header the endpoints do not take).",
                  ["reason"])


def header_allowed(name: str) -> bool:
    return name in ALLOWED_HEADERS or name.startswith(ALLOWED_HEADER_PREFIX)


class Cors:
    """Pure ASGI middleware: the origin allowlist and the CORS answers for `paths`."""

    def __init__(self, app: ASGIApp, origins: Iterable[str], paths: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.any = "*" in self.origins
        self.paths = frozenset(paths)
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not (self.any or origin in self.origins):
            self._log_refused(origin)
            REFUSED.labels("origin").inc()
            await _answer(send, 403, f"origin {origin} is not in receiver.cors_origins: nothing appended")
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        requested_method = headers.get("access-control-request-method")
        if scope["method"] == "OPTIONS" and requested_method is not None:
            await self._preflight(send, cors, requested_method, headers.get("access-control-request-headers", ""))
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors,
                                                  (b"access-control-expose-headers", b"Retry-After")]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, send: Send, cors: list[tuple[bytes, bytes]], method: str, requested: str) -> None:
        names = [h.strip().lower() for h in requested.split(",") if h.strip()]
        refused = [h for h in names if not header_allowed(h)]
        if method != "POST" or refused:
            REFUSED.labels("preflight").inc()
            why = f"method {method}" if method != "POST" else f"header(s) {', '.join(refused)}"
            await _answer(send, 403, f"preflight refused: {why} not allowed (POST with content-type, "
                          "content-encoding, authorization, statsig-*)")
            return
        answer = [*cors, (b"access-control-allow-methods", b"POST"), (b"access-control-max-age", MAX_AGE.encode())]
        if names:
            answer.append((b"access-control-allow-headers", ", ".join(names).encode("latin-1")))
        answer.append((b"vary", b"Access-Control-Request-Method, Access-Control-Request-Headers"))
        await send({"type": "http.response.start", "status": 204, "headers": answer})
        await send({"type": "http.response.body", "body": b""})

    def _log_refused(self, origin: str) -> None:
        if origin in self._logged or len(self._logged) >= _LOGGED_ORIGINS_MAX:
            return
        self._logged.add(origin)
        log.warning("refused a request from a web page: its origin is not in receiver.cors_origins "
                    "(logged once per origin; counted in statsig_forwarder_receiver_cors_refused_total)",
                    extra={"origin": origin[:200]})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _answer(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"success": False, "message": message})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
