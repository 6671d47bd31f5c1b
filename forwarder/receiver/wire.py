"""What every intake endpoint shares: error answers, the bearer token, reading and decompressing bodies.

Bodies are read within `read_timeout` (408) and never past `limit` bytes, before or after
decompression (413), so a small compressed body cannot expand into a large one.
"""

from __future__ import annotations

import asyncio
import hmac
import io
from typing import Any, cast

import orjson
import zstandard
from fastapi import Request, Response
from isal import isal_zlib
from prometheus_client import Counter

ENCODINGS = ("identity", "gzip", "zstd")
_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)  # its stub declares an instance
RECEIVER_EVENTS = Counter("statsig_forwarder_receiver_events", "Events accepted and appended to the receiver log.")


class ApiError(Exception):
    """An error answer: `{"success": false, "message": ..., "errors": [...]}`."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers


def json_response(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def error_response(e: ApiError) -> Response:
    doc: dict[str, Any] = {"success": False, "message": e.message}
    if e.errors is not None:
        doc["errors"] = e.errors
    return json_response(e.status, doc, e.headers)


def bearer(token: str | None) -> bytes | None:
    """The Authorization header value a configured token requires (None: no token)."""
    return f"Bearer {token}".encode() if token else None


def check_bearer(request: Request, expected: bytes | None) -> None:
    """401 unless the request carries the expected bearer token (compared in constant time)."""
    if expected is None:
        return
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <receiver.token>)",
                       headers={"WWW-Authenticate": "Bearer"})


def content_encoding(request: Request, default: str = "identity") -> str:
    """The body's encoding from Content-Encoding (415 for one not in ENCODINGS)."""
    encoding = request.headers.get("content-encoding", "").strip().lower() or default
    if encoding not in ENCODINGS:
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}: use gzip, zstd or none")
    return encoding


async def read_body(request: Request, limit: int, read_timeout: float, name: str = "max_body_bytes") -> bytes:
    """The raw (still compressed) body: 413 past `limit` (the option `name`), 408 when slower than `read_timeout`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes is over {name} ({limit})")
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"body is over {name} ({limit})")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"body not received within read_timeout ({read_timeout} s)") from None
    return b"".join(chunks)


def decompress(body: bytes, encoding: str, limit: int, name: str = "max_body_bytes") -> bytes:
    """The body decoded (400 when corrupt or truncated, 413 when over `limit` once decoded)."""
    if encoding == "gzip":
        return _gunzip(body, limit, name)
    if encoding == "zstd":
        return _unzstd(body, limit, name)
    return body


def _gunzip(body: bytes, limit: int, name: str) -> bytes:
    # isal's inflate: the same gzip, 4-8x less CPU than zlib's for an SDK's 2,000-event body.
    out = bytearray()
    data = body
    try:
        while data:
            d = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit or d.unconsumed_tail:
                raise ApiError(413, f"body is over {name} ({limit}) once gunzipped")
            if not d.eof:
                raise ApiError(400, "invalid gzip body: truncated")
            data = d.unused_data
    except _INFLATE_ERROR as e:
        raise ApiError(400, f"invalid gzip body: {e}") from None
    return bytes(out)


def _unzstd(body: bytes, limit: int, name: str) -> bytes:
    try:
        # stream_reader bounds the output (a zstd bomb stops at limit + 1 bytes) but says
        # nothing of a truncated frame; decompressobj's `eof` does, once the size is known safe.
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
        out = bytearray()
        while len(out) <= limit:
            piece = reader.read(limit + 1 - len(out))
            if not piece:
                break
            out += piece
        if len(out) > limit:
            raise ApiError(413, f"body is over {name} ({limit}) once decompressed (zstd)")
        data = body
        while data:
            d = zstandard.ZstdDecompressor().decompressobj()
            d.decompress(data)
            if not d.eof:
                raise ApiError(400, "invalid zstd body: truncated")
            data = d.unused_data
    except zstandard.ZstdError as e:
        raise ApiError(400, f"invalid zstd body: {e}") from None
    return bytes(out)
