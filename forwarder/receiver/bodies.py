"""Request bodies -> the lines to append: the seed endpoints' three shapes and the SDKs' `{"events": [...]}`.

Seed endpoints append each event as the caller sent it (plus `time`, the receive time,
when it has none); the relay appends each event in Statsig's shape, as the tailer will
send it, with every accepted key masked. Both validate with the event definition of
`forwarder.decode`, and say for each invalid event why.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from ..decode.codec import json_type
from ..decode.event import InvalidEvent, OversizeFields, UnknownFields, to_statsig
from .intake import Decoded, Invalid
from .wire import ApiError, loads

Shape = Literal["one", "array", "ndjson"]


def seed_events(body: bytes, shape: Shape, max_events: int, max_line: int, unknown: UnknownFields,
                oversize: OversizeFields) -> Decoded:
    """The caller's events as lines; ApiError 400 (JSON), 413 (count), 422 (shape)."""
    objs = _parse(body, shape)
    if not objs:
        raise ApiError(422, "no events in the request")
    if len(objs) > max_events:
        raise ApiError(413, f"{len(objs)} events is over max_batch_events ({max_events})")
    now = int(time.time() * 1000)
    out = Decoded()
    lines = []
    for i, obj in enumerate(objs):
        if type(obj) is not dict:
            out.invalid.append(Invalid(i, f"not a JSON object: got {json_type(obj)}"))
            continue
        if obj.get("time") is None:
            obj["time"] = now  # as the model would: a missing time is the receive time
        try:
            line: bytes | None = orjson.dumps(obj)
        except orjson.JSONEncodeError:
            line = None
        try:
            to_statsig(obj, unknown, oversize, None if line is None else len(line))
        except InvalidEvent as e:
            out.invalid.append(Invalid(i, str(e)))
            continue
        if line is None:
            line = orjson.dumps(obj)
        if len(line) > max_line:
            out.invalid.append(Invalid(i, f"event is {len(line)} bytes as a line, over max_line_bytes ({max_line})"))
            continue
        lines.append(line)
    lines.append(b"")
    out.data = b"\n".join(lines)
    out.lines = len(lines) - 1
    return out


def _parse(body: bytes, shape: Shape) -> list[Any]:
    if shape == "one":
        return [loads(body)]
    if shape == "array":
        doc = loads(body)
        if type(doc) is not list:
            raise ApiError(422, f"expected a JSON array of events, got {json_type(doc)}")
        return doc
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


def sdk_events(body: bytes, max_events: int, max_line: int, unknown: UnknownFields, oversize: OversizeFields,
               drop_internal: bool, masks: list[tuple[bytes, bytes]]) -> Decoded:
    """The events of an SDK request as Statsig-shaped lines; ApiError 400 (JSON, shape), 413 (count)."""
    doc = loads(body)
    if type(doc) is not dict:
        raise ApiError(400, f'expected {{"events": [...], "statsigMetadata": {{...}}}}, got {json_type(doc)}')
    events = doc.get("events")
    if type(events) is not list:
        raise ApiError(400, f'"events" must be an array of events, got {json_type(events)}')
    if len(events) > max_events:
        raise ApiError(413, f"{len(events)} events is over relay.max_batch_events ({max_events})")
    out = Decoded()
    lines: list[bytes] = []
    for i, obj in enumerate(events):
        try:
            if type(obj) is not dict:
                raise InvalidEvent(f"not a JSON object: got {json_type(obj)}")
            ev = to_statsig(obj, unknown, oversize)
            if drop_internal and is_internal(ev["eventName"]):
                out.dropped += 1
                continue
            line = orjson.dumps(ev)
            if len(line) > max_line:
                raise InvalidEvent(f"event is {len(line)} bytes as a line, over max_line_bytes ({max_line})")
        except (InvalidEvent, orjson.JSONEncodeError) as e:
            try:
                raw = orjson.dumps(obj)
            except orjson.JSONEncodeError:  # nested deeper than orjson writes
                raw = repr(obj).encode()
            out.invalid.append(Invalid(i, str(e), mask(raw, masks)))
            continue
        lines.append(line)
    if lines:
        lines.append(b"")
        out.data = mask(b"\n".join(lines), masks)
        out.lines = len(lines) - 1
    return out


EXPOSURES = frozenset(("statsig::gate_exposure", "statsig::config_exposure", "statsig::layer_exposure"))


def is_internal(name: str) -> bool:
    """An SDK's own bookkeeping event (statsig::diagnostics, ...), as opposed to exposures and app events."""
    return name.startswith("statsig::") and name not in EXPOSURES


def mask(data: bytes, masks: list[tuple[bytes, bytes]]) -> bytes:
    """`data` with every accepted key redacted (SDK diagnostics name their specs URL, which holds the key)."""
    for key, masked in masks:
        if key in data:
            data = data.replace(key, masked)
    return data
