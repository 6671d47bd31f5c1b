"""Bytes of one line -> Statsig event, or the reason it cannot be one."""

from __future__ import annotations

import orjson

from .event import InvalidEvent, UnknownFields, to_statsig
from .model import StatsigEvent


class LineError(ValueError):
    """The line is not a valid event; str(e) is the reason written to the dead-letter file."""


def decode_line(line: bytes, unknown_fields: UnknownFields = "metadata") -> StatsigEvent:
    """Parse and validate one line (without its newline)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as u:
            raise LineError(f"invalid UTF-8 at byte {u.start}") from None
        raise LineError(f"invalid JSON: {e}") from None
    if type(obj) is not dict:
        raise LineError(f"not a JSON object: got {json_type(obj)}")
    try:
        return to_statsig(obj, unknown_fields)
    except InvalidEvent as e:
        raise LineError(f"invalid event: {e}") from None


def json_type(obj: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if obj is None:
        return "null"
    names = {list: "array", dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(obj), type(obj).__name__)
