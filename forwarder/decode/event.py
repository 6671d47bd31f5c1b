"""The event model: what one NDJSON line may contain, and its Statsig wire shape.

A line takes one of two forms. The project's own form (`event_name`, `user_id`, ...) is
defined by `Event`; Statsig's own event shape (`eventName`, `user`, `value`, `metadata`,
`time`, `secondaryExposures`, `statsigMetadata`), as Statsig SDKs send it to the relay,
is defined by `SdkEvent`. A line is in Statsig's shape when it has `eventName` and no
`event_name`. `to_statsig` maps a decoded JSON object to the event Statsig's intake
expects: an `Event` is mapped field by field, an `SdkEvent` is passed on as it came
(null fields and the user's privateAttributes left out). Plain, common lines of either
form take a fast path that accepts only a strict subset of what the model accepts;
everything else (ISO times, aliases, nulls, unknown keys, any error) goes through the
model, which decides and explains.
"""

from __future__ import annotations

import re
import time as _time
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from ..model import StatsigEvent

UnknownFields = Literal["metadata", "reject"]
OversizeFields = Literal["send", "reject"]
ANONYMOUS = "anonymous"
MAX_EVENT_NAME = 128
# 9999-12-31T23:59:59.999Z. Beyond it a time is nonsense, and past 2**64 it cannot even be
# encoded (orjson refuses such integers), which used to kill the sender thread.
MAX_TIME_MS = 253_402_300_799_999

# Statsig's own acceptance rules (its docs, guides/logging-events.mdx, quoted in
# docs/statsig-rules.md). A 202 does not mean such an event is kept.
#   "Statsig drops events that match this regex/contain this character set:
#    \[]{}<>#=;&$%| plus NUL, LF, CR."  -> always dead-lettered (nothing to gain by sending).
#   "Object fields have an overall limit of 4096 on its stringified length. String fields
#    have a limit of 64 on its length."  Whether Statsig truncates or drops is undocumented,
#   so `oversize_fields` chooses: send as is (and count), or reject to the dead-letter file.
# String fields: eventName, and value when it is a string. Object fields: metadata and user
# (user.custom and the rest count within user; a user agent alone often exceeds 64).
DROPPED_NAME_CHARS = "\\[]{}<>#=;&$%|\0\r\n"
_DROPPED_NAME = re.compile(r"[\\\[\]{}<>#=;&$%|\x00\r\n]").search
MAX_STRING_FIELD = 64
MAX_OBJECT_FIELD = 4096
OVERSIZE_FIELDS = ("event_name", "value", "metadata", "user")  # as the input names them
# A line this short cannot hold an object field over MAX_OBJECT_FIELD once re-encoded:
# strings never grow (UTF-8 bytes >= UTF-16 units), a number at most 4.5-fold ("9e15" ->
# 9000000000000000.0), and the forwarder adds at most `"userID":"anonymous",`.
SAFE_LINE_BYTES = MAX_OBJECT_FIELD * 2 // 11

_USER_KINDS: dict[str, type] = {
    **dict.fromkeys(("userID", "email", "ip", "userAgent", "country", "locale", "appVersion"), str),
    **dict.fromkeys(("custom", "customIDs", "privateAttributes", "statsigEnvironment"), dict),
}


class User(BaseModel):
    """The Statsig user an event is about (`userID` may also be spelled `user_id`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    userID: StrictStr | None = Field(None, validation_alias=AliasChoices("userID", "user_id"))
    email: StrictStr | None = None
    ip: StrictStr | None = None
    userAgent: StrictStr | None = None
    country: StrictStr | None = None
    locale: StrictStr | None = None
    appVersion: StrictStr | None = None
    custom: dict[str, Any] | None = None
    customIDs: dict[str, StrictStr | StrictInt | StrictFloat] | None = None
    privateAttributes: dict[str, Any] | None = None
    statsigEnvironment: dict[str, StrictStr] | None = None


class Event(BaseModel):
    """One analytics event as the backend writes it (one JSON object per line)."""

    model_config = ConfigDict(extra="allow")

    event_name: StrictStr = Field(min_length=1, max_length=MAX_EVENT_NAME)
    user_id: StrictStr | None = None
    user: User | None = None
    value: StrictStr | StrictInt | StrictFloat | None = None
    metadata: dict[str, Any] | None = None
    time: int | None = Field(None, description="epoch milliseconds, or an ISO-8601 string")

    @field_validator("time", mode="before")
    @classmethod
    def _time_to_epoch_ms(cls, v: Any) -> Any:
        return _epoch_ms(v)


def _epoch_ms(v: Any) -> Any:
    """A line's `time` (epoch ms, possibly fractional, or ISO-8601) as integer epoch ms."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError("time must be epoch milliseconds or an ISO-8601 string")
    if isinstance(v, int | float):
        if not 0 <= v <= MAX_TIME_MS:  # also false for NaN
            raise ValueError("time must be epoch milliseconds between 0 and year 9999")
        return int(v)
    if isinstance(v, str):
        ms = iso_to_epoch_ms(v)
        if ms < 0:
            raise ValueError(f"time {v!r} is before 1970")
        return ms
    raise ValueError("time must be epoch milliseconds or an ISO-8601 string")


class SdkUser(User):
    """The user of a Statsig-shaped event: typed like `User`, and other keys pass (SDKs add some)."""

    model_config = ConfigDict(extra="allow")

    userID: StrictStr | None = None


class SdkEvent(BaseModel):
    """One event in Statsig's own shape, as a Statsig SDK logs it (forwarded as it came)."""

    model_config = ConfigDict(extra="allow")

    eventName: StrictStr = Field(min_length=1, max_length=MAX_EVENT_NAME)
    user: SdkUser | None = None
    value: StrictStr | StrictInt | StrictFloat | None = None
    metadata: dict[str, Any] | None = None
    time: int | None = Field(None, description="epoch milliseconds, or an ISO-8601 string")
    secondaryExposures: list[dict[str, Any]] | None = None
    statsigMetadata: dict[str, Any] | None = None

    @field_validator("time", mode="before")
    @classmethod
    def _time_to_epoch_ms(cls, v: Any) -> Any:
        return _epoch_ms(v)


def iso_to_epoch_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 date/time (UTC when it has no zone); ValueError otherwise."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is neither ISO-8601 nor epoch milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class InvalidEvent(ValueError):
    """A JSON object that is not a valid event; the message says why."""


class DroppedByStatsig(InvalidEvent):
    """A valid event that Statsig's documented rules would drop (or `oversize_fields` rejects).

    `over` names the fields over a size limit (empty for a name Statsig drops).
    """

    def __init__(self, message: str, over: list[str] | None = None) -> None:
        super().__init__(message)
        self.over = over or []


def to_statsig(obj: dict[str, Any], unknown_fields: UnknownFields = "metadata",
               oversize_fields: OversizeFields = "send", line_bytes: int | None = None) -> StatsigEvent:
    """Validate one decoded line and return its Statsig wire event (raises InvalidEvent).

    `line_bytes`: the length of `obj` as a JSON line, when known (see `fast_path`)."""
    slow = _slow_sdk if is_sdk_shaped(obj) else _slow
    return fast_path(obj, line_bytes) or slow(obj, unknown_fields, oversize_fields)


def is_sdk_shaped(obj: dict[str, Any]) -> bool:
    """Whether a line is in Statsig's own event shape rather than the project's own form."""
    return "eventName" in obj and "event_name" not in obj


def fast_path(d: dict[str, Any], line_bytes: int | None = None) -> StatsigEvent | None:
    """The common case without pydantic; None means "let the model decide".

    Accepts only plain, non-null values of the known fields, within Statsig's rules; `seen`
    counts them so that any other key (unknown, or an explicit null) sends the line to the
    model. `line_bytes`, the length of the line `d` was parsed from, lets short lines skip
    measuring the object fields.
    """
    name = d.get("event_name")
    if type(name) is not str or not 0 < len(name) <= MAX_STRING_FIELD:
        return _fast_sdk(d, line_bytes) if name is None and is_sdk_shaped(d) else None
    if not name.isidentifier() and _DROPPED_NAME(name):
        return None
    ev: StatsigEvent = {"eventName": name}
    seen = 1
    user_id = d.get("user_id")
    if user_id is not None:
        if type(user_id) is not str:
            return None
        seen += 1
    user = d.get("user")
    if user is None:
        ev["user"] = {"userID": user_id if user_id is not None else ANONYMOUS}
    else:
        if type(user) is not dict or not _plain_user(user):
            return None
        seen += 1
        if "userID" not in user or "privateAttributes" in user:
            user = {k: v for k, v in user.items() if k != "privateAttributes"}
            user.setdefault("userID", user_id if user_id is not None else ANONYMOUS)
        ev["user"] = user
    value = d.get("value")
    if value is not None:
        if type(value) not in _VALUE_TYPES or (type(value) is str and len(value) > MAX_STRING_FIELD):
            return None
        ev["value"] = value
        seen += 1
    metadata = d.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            return None
        ev["metadata"] = metadata
        seen += 1
    t = d.get("time")
    if t is None:
        t = int(_time.time() * 1000)
    elif type(t) is not int or not 0 <= t <= MAX_TIME_MS:
        return None
    else:
        seen += 1
    ev["time"] = t
    if seen != len(d):
        return None
    if (line_bytes is None or line_bytes > SAFE_LINE_BYTES) and _objects_over(ev):
        return None
    return ev


_VALUE_TYPES = (str, int, float)
# Statsig-shaped fields and the types the fast path takes as they are (null: left out).
_SDK_KINDS: dict[str, tuple[type, ...]] = {
    "eventName": (str,), "user": (dict,), "value": _VALUE_TYPES, "metadata": (dict,), "time": (int,),
    "secondaryExposures": (list,), "statsigMetadata": (dict,),
}


def _fast_sdk(d: dict[str, Any], line_bytes: int | None) -> StatsigEvent | None:
    """fast_path for a Statsig-shaped line: the event as it came, without its null fields."""
    name = d["eventName"]
    if type(name) is not str or not 0 < len(name) <= MAX_STRING_FIELD:
        return None
    if not name.isidentifier() and _DROPPED_NAME(name):
        return None
    ev: StatsigEvent = {}
    kinds = _SDK_KINDS
    for k, v in d.items():
        kind = kinds.get(k)
        if kind is None:  # unknown key: the model applies unknown_fields
            return None
        if v is None:
            continue
        if type(v) not in kind:
            return None
        ev[k] = v
    user = ev.get("user")
    if user is not None:
        if not _plain_user(user):
            return None
        if "privateAttributes" in user:
            ev["user"] = {k: v for k, v in user.items() if k != "privateAttributes"}
    exposures = ev.get("secondaryExposures")
    if exposures is not None and not all(type(x) is dict for x in exposures):
        return None
    value = ev.get("value")
    if type(value) is str and len(value) > MAX_STRING_FIELD:
        return None
    t = ev.get("time")
    if t is None:
        ev["time"] = int(_time.time() * 1000)
    elif not 0 <= t <= MAX_TIME_MS:
        return None
    if (line_bytes is None or line_bytes > SAFE_LINE_BYTES) and _objects_over(ev):
        return None
    return ev


def _plain_user(user: dict[str, Any]) -> bool:
    kinds = _USER_KINDS
    for k, v in user.items():
        if type(v) is not kinds.get(k):
            return False
    if "customIDs" in user and not all(type(x) in (str, int, float) for x in user["customIDs"].values()):
        return False
    return "statsigEnvironment" not in user or all(type(x) is str for x in user["statsigEnvironment"].values())


def over_limits(ev: StatsigEvent, line_bytes: int | None = None) -> list[str]:
    """The fields of `ev` over Statsig's size limits (see MAX_STRING_FIELD, MAX_OBJECT_FIELD)."""
    over = []
    if len(ev["eventName"]) > MAX_STRING_FIELD:
        over.append("event_name")
    value = ev.get("value")
    if type(value) is str and len(value) > MAX_STRING_FIELD:
        over.append("value")
    if line_bytes is None or line_bytes > SAFE_LINE_BYTES:
        for field in ("metadata", "user"):
            if field in ev and stringified_length(ev[field]) > MAX_OBJECT_FIELD:
                over.append(field)
    return over


def stringified_length(obj: Any) -> int:
    """Length of JSON.stringify(obj) as JavaScript counts it (UTF-16 code units)."""
    try:
        data = orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return 0  # cannot be sent at all; the sender dead-letters it
    if data.isascii():
        return len(data)
    return len(data.decode("utf-8").encode("utf-16-le")) // 2


def _objects_over(ev: StatsigEvent) -> bool:
    return any(f in ev and stringified_length(ev[f]) > MAX_OBJECT_FIELD
               for f in ("metadata", "user"))


def check_statsig_rules(ev: StatsigEvent, oversize_fields: OversizeFields = "send") -> None:
    """Raise DroppedByStatsig for a name Statsig drops, or fields over its limits under "reject"."""
    bad = _DROPPED_NAME(ev["eventName"])
    if bad:
        raise DroppedByStatsig(
            f"event_name contains {bad.group()!r}: Statsig drops events whose name contains any of "
            "\\[]{}<>#=;&$%|, NUL, CR or LF")
    if oversize_fields == "reject":
        over = over_limits(ev)
        if over:
            raise DroppedByStatsig(describe_over(ev, over), over)


def describe_over(ev: StatsigEvent, over: list[str]) -> str:
    """`metadata is 5000 characters stringified, over Statsig's limit of 4096; ...`."""
    parts = []
    for field in over:
        if field in ("metadata", "user"):
            n = stringified_length(ev[field])
            parts.append(f"{field} is {n} characters stringified, over Statsig's limit of {MAX_OBJECT_FIELD}")
        else:
            n = len(ev["eventName" if field == "event_name" else "value"])
            parts.append(f"{field} is {n} characters, over Statsig's limit of {MAX_STRING_FIELD}")
    return "; ".join(parts) + " (Statsig may truncate or drop it; oversize_fields = reject)"


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], obj: dict[str, Any], unknown_fields: UnknownFields) -> tuple[_M, dict[str, Any]]:
    """(the model's instance, the unknown top-level fields); InvalidEvent when the model refuses it."""
    try:
        event = model.model_validate(obj)
    except ValidationError as e:
        raise InvalidEvent(describe(e)) from None
    extra = event.model_extra or {}
    if extra and unknown_fields == "reject":
        raise InvalidEvent("unknown field(s): " + ", ".join(sorted(extra)))
    return event, extra


def _slow(obj: dict[str, Any], unknown_fields: UnknownFields,
          oversize_fields: OversizeFields = "send") -> StatsigEvent:
    event, extra = _validate(Event, obj, unknown_fields)
    user: dict[str, Any] = {}
    if event.user is not None:
        user = {
            k: v
            for k, v in event.user
            if v is not None and k != "privateAttributes"
        }
    user.setdefault("userID", event.user_id if event.user_id is not None else ANONYMOUS)
    ev: StatsigEvent = {"eventName": event.event_name, "user": user}
    if event.value is not None:
        ev["value"] = event.value
    metadata = {**extra, **(event.metadata or {})}
    if metadata or event.metadata is not None:
        ev["metadata"] = metadata
    ev["time"] = event.time if event.time is not None else int(_time.time() * 1000)
    check_statsig_rules(ev, oversize_fields)
    return ev


def _slow_sdk(obj: dict[str, Any], unknown_fields: UnknownFields,
              oversize_fields: OversizeFields = "send") -> StatsigEvent:
    event, extra = _validate(SdkEvent, obj, unknown_fields)
    ev: StatsigEvent = {"eventName": event.eventName}
    user = obj.get("user")
    if user is not None:
        ev["user"] = {k: v for k, v in user.items() if v is not None and k != "privateAttributes"}
    for k in ("value", "metadata", "secondaryExposures", "statsigMetadata"):
        if obj.get(k) is not None:
            ev[k] = obj[k]
    if extra:
        ev["metadata"] = {**extra, **(obj.get("metadata") or {})}
    ev["time"] = event.time if event.time is not None else int(_time.time() * 1000)
    check_statsig_rules(ev, oversize_fields)
    return ev


def describe(e: ValidationError) -> str:
    """One line naming each failing field: `event_name: Field required; value: ...`."""
    parts: dict[str, str] = {}
    for err in e.errors(include_url=False):
        loc = [str(x) for x in err["loc"]]
        msg = err["msg"]
        if loc and loc[-1] in _UNION_TAGS:  # one message per field, not one per union member
            loc.pop()
            msg = "Input should be a string or a number"
        parts.setdefault(".".join(loc) or "event", msg)
    return "; ".join(f"{k}: {v}" for k, v in parts.items())


_UNION_TAGS = frozenset(("str", "int", "float"))
