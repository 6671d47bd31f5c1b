"""Bytes of one line -> Statsig event, or the reason it cannot be one."""

from __future__ import annotations

from typing import Any

import orjson

from ..model import StatsigEvent
from .event import DroppedByStatsig, InvalidEvent, OversizeFields, UnknownFields, to_statsig


class LineError(ValueError):
    """The line is not a valid event; str(e) is the reason written to the dead-letter file."""


class StatsigRuleError(LineError):
    """A valid event that Statsig would drop, or over its size limits; `over` names those fields."""

    def __init__(self, message: str, over: list[str]) -> None:
        super().__init__(message)
        self.over = over


def decode_line(line: bytes, unknown_fields: UnknownFields = "metadata",
                oversize_fields: OversizeFields = "send") -> StatsigEvent:
    """Parse and validate one line (without its newline).

    Hot loops may try `orjson.loads` + `event.fast_path` themselves first and call this
    only when that declines: it gives the same result, and the reason when there is none.
    """
    return decode_object(parse_line(line), unknown_fields, oversize_fields)


def parse_line(line: bytes) -> dict[str, Any]:
    """The JSON object of one line, before validation (raises LineError like decode_line)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise _parse_error(line, e) from None
    if type(obj) is not dict:
        raise LineError(f"not a JSON object: got {json_type(obj)}")
    return obj


def decode_object(obj: dict[str, Any], unknown_fields: UnknownFields = "metadata",
                  oversize_fields: OversizeFields = "send") -> StatsigEvent:
    """Validate an object from parse_line; decode_line(x) == decode_object(parse_line(x))."""
    try:
        return to_statsig(obj, unknown_fields, oversize_fields)
    except DroppedByStatsig as e:
        raise StatsigRuleError(f"invalid event: {e}", e.over) from None
    except InvalidEvent as e:
        raise LineError(f"invalid event: {e}") from None


def _parse_error(line: bytes, e: orjson.JSONDecodeError) -> LineError:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as u:
        return LineError(f"invalid UTF-8 at byte {u.start}")
    return LineError(f"invalid JSON: {e}")


def json_type(obj: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if obj is None:
        return "null"
    names = {list: "array", dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(obj), type(obj).__name__)
