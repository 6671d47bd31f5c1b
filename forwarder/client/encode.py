"""One event -> one NDJSON line, refused here when the forwarder would dead-letter it.

The line is the project's own form (README "Input: one event per line"): `event_name`, then
`user_id` (a plain id) or `user` (Statsig's user object), `value`, `metadata` and `time`
(epoch ms, when the call was made). The encoded bytes are checked with the forwarder's own
`decode_line`, so what this module accepts is exactly what the forwarder delivers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from ..decode.codec import LineError, decode_line
from ..decode.event import OversizeFields

ANONYMOUS = "anonymous"
MAX_LINE_BYTES = 1024 * 1024  # the forwarder's default max_line_bytes: longer lines are dead-lettered

# A Statsig SDK user's attribute -> the key Statsig's `user` object uses for it. Both
# statsig-python-core's and the legacy `statsig` SDK's StatsigUser have these attributes
# (the legacy one spells the environment `_statsig_environment`); dicts may use either name.
# privateAttributes are left out of the line: Statsig SDKs never log them with an event, and
# the forwarder would strip them before sending, so writing them would only put them on disk.
USER_KEYS = {
    "user_id": "userID", "email": "email", "ip": "ip", "user_agent": "userAgent", "country": "country",
    "locale": "locale", "app_version": "appVersion", "custom": "custom", "custom_ids": "customIDs",
    "statsig_environment": "statsigEnvironment",
}
_PRIVATE = frozenset(("private_attributes", "privateAttributes"))
_MAPPINGS = frozenset(("custom", "customIDs", "statsigEnvironment"))


class EventRefused(ValueError):
    """The event cannot be written: the forwarder would dead-letter it; str(e) says why."""


def encode_event(user: Any, event_name: str, value: Any = None, metadata: Any = None,
                 time_ms: int | None = None, *, oversize_fields: OversizeFields = "send",
                 max_line_bytes: int = MAX_LINE_BYTES) -> bytes:
    """The event's line (ending in a newline), or EventRefused.

    `user`: a user id (str or int), None (anonymous), a dict of user fields (Statsig's key names
    or the SDK's snake_case ones), or a Statsig SDK `StatsigUser`. The keyword options are the
    forwarder's settings of the same names; give them the values the forwarder runs with (its
    `unknown_fields` never applies: the line holds only known keys).
    """
    doc: dict[str, Any] = {"event_name": event_name}
    if isinstance(user, str):
        doc["user_id"] = user
    elif isinstance(user, int) and not isinstance(user, bool):
        doc["user_id"] = str(user)
    elif user is not None:
        doc["user"] = statsig_user(user)
    if value is not None:
        doc["value"] = value
    if metadata is not None:
        doc["metadata"] = metadata
    doc["time"] = time.time_ns() // 1_000_000 if time_ms is None else time_ms
    try:
        line = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError) as e:
        raise EventRefused(f"not JSON-serializable: {e}") from None
    if len(line) >= max_line_bytes:
        raise EventRefused(f"event is {len(line) + 1} bytes as a line, over max_line_bytes ({max_line_bytes})")
    try:
        decode_line(line, "metadata", oversize_fields)
    except LineError as e:
        raise EventRefused(str(e)) from None
    return line + b"\n"


def statsig_user(user: Any) -> dict[str, Any]:
    """Statsig's `user` object for a dict of user fields or a StatsigUser (its None fields left out)."""
    out: dict[str, Any] = {}
    if isinstance(user, Mapping):
        for k, v in user.items():
            if v is not None and k not in _PRIVATE:
                key = USER_KEYS.get(k) or k
                out[key] = dict(v) if key in _MAPPINGS and isinstance(v, Mapping) else v
        return out
    for attr, key in USER_KEYS.items():
        v = getattr(user, attr, None)
        if v is None and attr == "statsig_environment":
            v = getattr(user, "_statsig_environment", None)
        if v is not None:
            out[key] = dict(v) if isinstance(v, Mapping) else v
    if not out and not any(hasattr(user, a) for a in USER_KEYS):
        raise EventRefused(f"user must be a user id, a dict of user fields or a StatsigUser, "
                           f"got {type(user).__name__}")
    return out


def user_id_of(user: Any) -> str:
    """The user id to name in a log line about the event (`anonymous` when there is none)."""
    if isinstance(user, str):
        return user
    try:
        if isinstance(user, Mapping):
            uid = user.get("userID", user.get("user_id"))
        else:
            uid = user if isinstance(user, int) else getattr(user, "user_id", None)
        return ANONYMOUS if uid is None else str(uid)
    except Exception:  # a user object whose attributes raise: the log line must still be written
        return "?"
