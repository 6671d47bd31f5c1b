"""The definition of a valid event: msgspec Structs, and the one small step a Struct cannot say.

A line (or a request's event) takes one of two forms. The project's own form (`event_name`,
`user_id`, `user`, `value`, `metadata`, `time`) is `FileEvent`; Statsig's own event shape
(`eventName`, `user`, `value`, `metadata`, `time`, `secondaryExposures`, `statsigMetadata`),
as Statsig SDKs send it to the relay, is `SdkEvent`. An object is in Statsig's shape when it
has `eventName` and no `event_name`. The Structs carry the types, the required fields,
Statsig's name rule and the length bounds, and msgspec checks them in one C call for a whole
chunk or body. Nested objects (`metadata`, an SDK event's `user`, `secondaryExposures`,
`statsigMetadata`, `user.custom`) stay `msgspec.Raw`: their syntax is checked, and they are
sent as they came, never turned into Python objects.

What a Struct cannot say is `to_wire`, run per decoded event: the `user_id` shorthand and the
anonymous user, a missing `time` (the read time) or an ISO-8601 one, that a Raw field is an
object, the nesting depth (`MAX_DEPTH`) and Statsig's size limits (`over_limits`). Unknown
top-level keys (moved into `metadata`, or refused) are handled by the per-line step in
codec.py, which runs only for lines the Structs refuse.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta, Raw

from ..model import StatsigEvent

UnknownFields = Literal["metadata", "reject"]
OversizeFields = Literal["send", "reject"]
ANONYMOUS = "anonymous"
MAX_EVENT_NAME = 128
# 9999-12-31T23:59:59.999Z. Beyond it a time is nonsense, and past 2**64 it cannot even be
# encoded, which used to kill the sender thread.
MAX_TIME_MS = 253_402_300_799_999
# Objects and arrays may nest this deep in an event, the event object itself counting as one
# level (`{"event_name": "e", "metadata": {"a": [1]}}` is 3 deep). Decided at decode, the same
# for `validate`, the reader, the receiver and the relay: far below what msgspec can decode
# (about 1,000 levels: RecursionError) and what any encoder on the way writes (orjson: 254).
MAX_DEPTH = 64

# Statsig's own acceptance rules (its docs, guides/logging-events.mdx; docs/statsig-rules.md).
#   "Statsig drops events that match this regex/contain this character set:
#    \[]{}<>#=;&$%| plus NUL, LF, CR."  -> always dead-lettered (nothing to gain by sending).
#   "Object fields have an overall limit of 4096 on its stringified length. String fields
#    have a limit of 64 on its length."  Whether Statsig truncates or drops is undocumented,
#   so `oversize_fields` chooses: send as is (and count), or reject to the dead-letter file.
# String fields: eventName, and value when it is a string. Object fields: metadata and user.
DROPPED_NAME_CHARS = "\\[]{}<>#=;&$%|\0\r\n"
_DROPPED_NAME = re.compile(r"[\\\[\]{}<>#=;&$%|\x00\r\n]").search
NAME_PATTERN = r"^[^\\\[\]{}<>#=;&$%|\x00\r\n]*$"  # anchored: msgspec's pattern is a search
MAX_STRING_FIELD = 64
MAX_OBJECT_FIELD = 4096
OVERSIZE_FIELDS = ("event_name", "value", "metadata", "user")  # as the input names them
# An object whose JSON text is this short cannot be over MAX_OBJECT_FIELD stringified, whatever
# it holds: strings never grow (UTF-8 bytes >= UTF-16 units, escapes only shrink), a number at
# most 4.5-fold ("9e15" -> 9000000000000000.0), and the forwarder adds at most
# `"userID":"anonymous",`. Up to MAX_OBJECT_FIELD, only a number with an exponent can grow.
SAFE_OBJECT_BYTES = MAX_OBJECT_FIELD * 2 // 11
SAFE_LINE_BYTES = SAFE_OBJECT_BYTES  # the same bound, for a whole line
_EXPONENT = re.compile(rb"[0-9][eE]").search
# A Raw this short cannot nest deeper than the levels left for it (each level takes 2 bytes).
_DEPTH_SAFE_BYTES = 2 * MAX_DEPTH - 4

# Statsig's name rule is stated in the schema (`pattern`) but checked by `dropped_name` in the
# per-event step, not by msgspec: its `pattern` calls Python's re for every value, which measured
# 0.6-0.9 us per event, about as much as the rest of the decode (`str.isidentifier()` accepts
# most names in 0.04 us, and only the others are searched).
Name = Annotated[str, Meta(min_length=1, max_length=MAX_EVENT_NAME, extra_json_schema={"pattern": NAME_PATTERN},
                           description="1-128 characters, none of \\[]{}<>#=;&$%|, NUL, CR, LF "
                           "(Statsig drops those); over 64 is over Statsig's limit")]
Time = Annotated[int, Meta(ge=0, le=MAX_TIME_MS)]
TimeF = Annotated[float, Meta(ge=0, le=MAX_TIME_MS)]
TimeField = Time | TimeF | str | None  # epoch ms, or ISO-8601 (UTC when it has no zone)
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Value = str | Int64 | float | None
_OBJECT = {"type": ["object", "null"]}
# A JSON object kept as its text (msgspec cannot type a Raw; `to_wire` checks it is an object).
# Absent: None (msgspec decodes no union with Raw, so a JSON null arrives as Raw(b"null")).
if TYPE_CHECKING:
    ObjectRaw = Raw | None
    ListRaw = Raw | None
    UserRaw = Raw | None
else:
    ObjectRaw = Annotated[Raw, Meta(extra_json_schema=_OBJECT)]
    ListRaw = Annotated[Raw, Meta(extra_json_schema={"type": ["array", "null"], "items": {"type": "object"}})]
    UserRaw = Annotated[Raw, Meta(extra_json_schema={"type": ["object", "null"], "description": "a Statsig "
                                                     "user (typed as FileUser; other keys pass)"})]
_OBJECT_RAW, _LIST_RAW, _USER_RAW = ObjectRaw, ListRaw, UserRaw


class FileUser(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """The Statsig user of a FileEvent (`userID` may also be spelled `user_id`); no other keys."""

    userID: str | None = None
    user_id: str | None = None
    email: str | None = None
    ip: str | None = None
    userAgent: str | None = None
    country: str | None = None
    locale: str | None = None
    appVersion: str | None = None
    custom: ObjectRaw = None
    customIDs: dict[str, str | Int64 | float] | None = None
    privateAttributes: ObjectRaw = None  # never sent
    statsigEnvironment: dict[str, str] | None = None


class SdkUser(msgspec.Struct, gc=False):
    """The user of an SdkEvent: typed like FileUser, and other keys pass (SDKs add some). Only
    checks: the user is sent as it came (without privateAttributes and null fields)."""

    userID: str | None = None
    email: str | None = None
    ip: str | None = None
    userAgent: str | None = None
    country: str | None = None
    locale: str | None = None
    appVersion: str | None = None
    custom: ObjectRaw = None
    customIDs: dict[str, str | Int64 | float] | None = None
    privateAttributes: ObjectRaw = None
    statsigEnvironment: dict[str, str] | None = None


class FileEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One analytics event as the backend writes it (one JSON object per line)."""

    event_name: Name
    user_id: str | None = None
    user: FileUser | None = None
    value: Value = None
    metadata: ObjectRaw = None
    time: TimeField = None


class SdkEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One event in Statsig's own shape, as a Statsig SDK logs it (forwarded as it came)."""

    eventName: Name
    user: UserRaw = None
    value: Value = None
    metadata: ObjectRaw = None
    time: TimeField = None
    secondaryExposures: ListRaw = None
    statsigMetadata: ObjectRaw = None


FILE_FIELDS = frozenset(FileEvent.__struct_fields__)
SDK_FIELDS = frozenset(SdkEvent.__struct_fields__)

_ENCODE = msgspec.json.Encoder().encode
_SDK_USER = msgspec.json.Decoder(SdkUser).decode
_FIELDS = msgspec.json.Decoder(dict[str, Raw]).decode


class _Object(msgspec.Struct):
    """Any JSON object (decoding one checks its syntax and type, and keeps nothing)."""


_OBJECTS = msgspec.json.Decoder(list[_Object]).decode
ANONYMOUS_USER = Raw(b'{"userID":"anonymous"}')
_LBRACE, _NULL, _LBRACKET = ord("{"), ord("n"), ord("[")


class InvalidEvent(ValueError):
    """A JSON object that is not a valid event; the message says why."""


class DroppedByStatsig(InvalidEvent):
    """A valid event that Statsig's documented rules would drop (or `oversize_fields` rejects).

    `over` names the fields over a size limit (empty for a name Statsig drops).
    """

    def __init__(self, message: str, over: list[str] | None = None) -> None:
        super().__init__(message)
        self.over = over or []


def is_sdk_shaped(keys: Any) -> bool:
    """Whether an object (its keys) is in Statsig's own event shape rather than the project's form."""
    return "eventName" in keys and "event_name" not in keys


def _object(raw: Raw | None, field: str) -> Raw | None:
    """`raw` if it is an object, None for null; InvalidEvent for any other JSON value."""
    if raw is None:
        return None
    first = memoryview(raw)[0]
    if first == _LBRACE:
        return raw
    if first == _NULL:
        return None
    raise InvalidEvent(f"{field}: Expected `object`, got `{_json_type_of(raw)}`")


def _json_type_of(raw: Raw) -> str:
    first = bytes(memoryview(raw)[:1])
    return {b"[": "array", b'"': "str", b"t": "bool", b"f": "bool"}.get(first, "number")


def check_depth(raw: Raw | bytes, levels: int, field: str) -> None:
    """InvalidEvent when `raw` nests more than `levels` levels of objects and arrays."""
    if len(raw) <= 2 * levels:
        return
    data = bytes(raw)
    if data.count(b"{") + data.count(b"[") <= levels:
        return
    if nesting(data) > levels:
        raise InvalidEvent(too_deep(field))


def too_deep(field: str = "event") -> str:
    return f"{field} nests objects/arrays deeper than {MAX_DEPTH} levels (the event counting as one)"


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def nesting(data: bytes) -> int:
    """How deep objects and arrays nest in JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    for m in _TOKENS.finditer(data):
        c = m.group()
        if c in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (b"}", b"]"):
            depth -= 1
    return deepest


def iso_to_epoch_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 date/time (UTC when it has no zone); ValueError otherwise."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is neither ISO-8601 nor epoch milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _epoch_ms(t: float | str) -> int:
    """A decoded `time` that is not a plain int: fractional epoch ms, or ISO-8601."""
    if type(t) is float:
        return int(t)
    try:
        ms = iso_to_epoch_ms(t)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidEvent(f"time: {e}") from None
    if not 0 <= ms <= MAX_TIME_MS:
        raise InvalidEvent(f"time: {t!r} is not between 1970 and year 9999")
    return ms


class UserID(msgspec.Struct, gc=False):
    """The Statsig user of the `user_id` shorthand."""

    userID: str


def file_user(user: FileUser, user_id: str | None) -> FileUser:
    """The Statsig user of a FileEvent: aliases resolved, anonymous when no id, privateAttributes
    out (None fields are left out when encoded)."""
    if user.userID is None:
        user.userID = user.user_id if user.user_id is not None else user_id if user_id is not None else ANONYMOUS
    user.user_id = None
    if user.privateAttributes is not None:
        _object(user.privateAttributes, "user.privateAttributes")  # must be an object, though never sent
        user.privateAttributes = None
    if user.custom is not None:
        user.custom = _object(user.custom, "user.custom")
        if user.custom is not None:
            check_depth(user.custom, MAX_DEPTH - 2, "user.custom")
    return user


def sdk_user_text(raw: Raw) -> Raw:
    """An SdkEvent's (checked) user without privateAttributes and null fields."""
    fields = _FIELDS(raw)
    return Raw(_ENCODE({k: v for k, v in fields.items() if k != "privateAttributes" and bytes(v) != b"null"}))


def _sdk_user(raw: Raw | None) -> Raw | None:
    """An SdkEvent's user, checked as SdkUser; sent as it came unless it has privateAttributes or nulls."""
    raw = _object(raw, "user")
    if raw is None:
        return None
    try:
        user = _SDK_USER(raw)
    except msgspec.ValidationError as e:
        raise InvalidEvent(describe(e, "user")) from None
    if user.custom is not None:
        _object(user.custom, "user.custom")
    if user.privateAttributes is not None:
        _object(user.privateAttributes, "user.privateAttributes")
    if user.privateAttributes is not None or b"null" in bytes(raw):
        raw = sdk_user_text(raw)
    return raw


def to_wire(ev: FileEvent | SdkEvent, now: int, metadata: Raw | None = None) -> StatsigEvent:
    """The Statsig event of a decoded line (raises InvalidEvent): what the Structs cannot say.

    `now` (epoch ms) stands for a missing time; `metadata`, when given, replaces the event's
    own (the per-line step merged unknown keys into it). Statsig's name rule and size limits
    are not checked here: see `check_statsig_rules`.
    """
    t = ev.time
    if type(t) is not int:
        t = now if t is None else _epoch_ms(t)
    m = _object(ev.metadata if metadata is None else metadata, "metadata")
    if m is not None:
        check_depth(m, MAX_DEPTH - 1, "metadata")
    if type(ev) is FileEvent:
        if ev.user is None:
            uid = ev.user_id
            user: Any = ANONYMOUS_USER if uid is None else UserID(uid)
        else:
            user = file_user(ev.user, ev.user_id)
        return StatsigEvent(ev.event_name, t, user, ev.value, m)
    assert type(ev) is SdkEvent
    user = _sdk_user(ev.user)
    if user is not None:
        check_depth(user, MAX_DEPTH - 1, "user")
    exposures = ev.secondaryExposures
    if exposures is not None:
        exposures = _exposures(exposures)
    sm = _object(ev.statsigMetadata, "statsigMetadata")
    if sm is not None:
        check_depth(sm, MAX_DEPTH - 1, "statsigMetadata")
    return StatsigEvent(ev.eventName, t, user, ev.value, m, exposures, sm)


def _exposures(raw: Raw) -> Raw | None:
    first = memoryview(raw)[0]
    if first == _NULL:
        return None
    if first != _LBRACKET:
        raise InvalidEvent(f"secondaryExposures: Expected `array`, got `{_json_type_of(raw)}`")
    if len(raw) > 2:
        try:
            _OBJECTS(raw)
        except msgspec.ValidationError as e:
            raise InvalidEvent(describe(e, "secondaryExposures")) from None
        check_depth(raw, MAX_DEPTH - 1, "secondaryExposures")
    return raw


def set_metadata(ev: StatsigEvent, key: str, value: str) -> None:
    """Set one metadata key of `ev` (the event id), without decoding its metadata when it lacks the key."""
    ev.metadata = with_key(ev.metadata, key, value)


def with_key(metadata: Raw | None, key: str, value: str) -> Raw:
    """A metadata object's text with metadata[key] = value (spliced in; decoded only when it may
    hold the key already)."""
    pair = _ENCODE(key) + b":" + _ENCODE(value)
    if metadata is None:
        return Raw(b"{" + pair + b"}")
    text = bytes(metadata)
    if _ENCODE(key) in text:  # maybe already there: the one rare case that decodes it
        fields = _FIELDS(text)
        fields[key] = Raw(_ENCODE(value))
        return Raw(_ENCODE(fields))
    head = text[:-1].rstrip()
    return Raw(head + (b"," if head[-1:] != b"{" else b"") + pair + b"}")


_SPACE_OR_OPEN = frozenset(b" \t\r\n{")


def add_event_ids(events: list[StatsigEvent], starts: list[int], key: str, prefix: str, base: int = 0,
                  source: bytes = b"") -> None:
    """Set metadata[key] = prefix + str(base + start) on each event (its stable id), splicing it
    into the metadata text as it came: what `set_metadata` does, for every event of a file, as
    cheaply as possible. `source`: the text the events were decoded from; where it holds the key
    (an event may have it already) or a metadata text ends oddly, set_metadata decides."""
    head = _ENCODE(key) + b":" + _ENCODE(prefix)[:-1]  # "key":"prefix  (the offset and '"}' follow)
    odd = _SPACE_OR_OPEN
    if _ENCODE(key) in source:
        for ev, start in zip(events, starts, strict=True):
            set_metadata(ev, key, prefix + str(base + start))
        return
    for ev, start in zip(events, starts, strict=True):
        m = ev.metadata
        if m is None:
            ev.metadata = Raw(b'{%b%d"}' % (head, base + start))
            continue
        text = bytes(m)
        if text[-2] in odd:
            set_metadata(ev, key, prefix + str(base + start))
        else:
            ev.metadata = Raw(b'%b,%b%d"}' % (text[:-1], head, base + start))


def over_limits(ev: StatsigEvent) -> list[str]:
    """The fields of `ev` over Statsig's size limits (see MAX_STRING_FIELD, MAX_OBJECT_FIELD)."""
    over = []
    if len(ev.eventName) > MAX_STRING_FIELD:
        over.append("event_name")
    value = ev.value
    if type(value) is str and len(value) > MAX_STRING_FIELD:
        over.append("value")
    m = ev.metadata
    if m is not None and len(m) > SAFE_OBJECT_BYTES and object_over(m):
        over.append("metadata")
    u = ev.user
    if u is not None:
        if type(u) is not Raw:
            u = _ENCODE(u)
        if len(u) > SAFE_OBJECT_BYTES and object_over(u):
            over.append("user")
    return over


def object_over(raw: Raw | bytes) -> bool:
    """Is this object over MAX_OBJECT_FIELD stringified? Measured only when its text may be."""
    if len(raw) <= MAX_OBJECT_FIELD and not _EXPONENT(memoryview(raw)):
        return False
    return stringified_length(raw) > MAX_OBJECT_FIELD


def stringified_length(obj: Any) -> int:
    """Length of JSON.stringify(obj) as JavaScript counts it (UTF-16 code units); `obj` a
    decoded value, or the JSON text of one (Raw or bytes)."""
    if isinstance(obj, Raw | bytes):
        obj = msgspec.json.decode(obj)
    try:
        data = orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        data = _ENCODE(obj)  # numbers beyond 64 bits: orjson refuses them
    if data.isascii():
        return len(data)
    return len(data.decode("utf-8").encode("utf-16-le")) // 2


_CLEAN_NAMES: set[str] = set()  # names seen to pass (few distinct ones: statsig::gate_exposure, ...)
MAX_CLEAN_NAMES = 10_000  # hostile name cardinality must not grow memory without bound


def dropped_name(name: str) -> DroppedByStatsig | None:
    """The refusal of a name Statsig drops, or None."""
    if name.isidentifier() or name in _CLEAN_NAMES:
        return None
    bad = _DROPPED_NAME(name)
    if bad is None:
        if len(_CLEAN_NAMES) < MAX_CLEAN_NAMES:
            _CLEAN_NAMES.add(name)
        return None
    return DroppedByStatsig(
        f"event_name contains {bad.group()!r}: Statsig drops events whose name contains any of "
        "\\[]{}<>#=;&$%|, NUL, CR or LF")


def check_statsig_rules(ev: StatsigEvent, oversize_fields: OversizeFields = "send") -> list[str]:
    """The fields over Statsig's size limits; DroppedByStatsig for a name Statsig drops, or for
    fields over its limits under "reject"."""
    refusal = dropped_name(ev.eventName)
    if refusal is not None:
        raise refusal
    over = over_limits(ev)
    if over and oversize_fields == "reject":
        raise DroppedByStatsig(describe_over(ev, over), over)
    return over


def describe_over(ev: StatsigEvent, over: list[str]) -> str:
    """`metadata is 5000 characters stringified, over Statsig's limit of 4096; ...`."""
    parts = []
    for field in over:
        if field in ("metadata", "user"):
            obj = getattr(ev, field)
            n = stringified_length(obj if type(obj) is Raw else _ENCODE(obj))
            parts.append(f"{field} is {n} characters stringified, over Statsig's limit of {MAX_OBJECT_FIELD}")
        else:
            n = len(ev.eventName if field == "event_name" else ev.value)  # type: ignore[arg-type]
            parts.append(f"{field} is {n} characters, over Statsig's limit of {MAX_STRING_FIELD}")
    return "; ".join(parts) + " (Statsig may truncate or drop it; oversize_fields = reject)"


_MISSING = re.compile(r"Object missing required field `(.*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")


def describe(e: msgspec.ValidationError, prefix: str = "") -> str:
    """msgspec's reason as `field.path: message`, e.g. `event_name: Expected `str`, got `int``."""
    text = str(e)
    message, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$")
    path = re.sub(r"\[(\d+)\]", r".\1", path).strip(".")
    parts = [p for p in (prefix, path) if p]
    m = _MISSING.fullmatch(message)
    if m:
        parts.append(m.group(1))
        message = "Field required"
    m = _UNKNOWN.fullmatch(message)
    if m:
        parts.append(m.group(1))
        message = "unknown field"
    where = ".".join(parts)
    return f"{where}: {message}" if where else message


@functools.cache
def checking_twin(cls: type[msgspec.Struct], forbid_unknown: bool) -> type[msgspec.Struct]:
    """The Struct `cls` with its Raw fields typed for checking instead of kept (an object, a list
    of objects, an SdkUser), unknown fields refused or ignored: derived from the definition, so
    a whole body is checked in one call when nothing needs the per-event step."""
    name = f"{cls.__name__}{'Strict' if forbid_unknown else ''}Check"
    fields: list[Any] = []
    for f in msgspec.structs.fields(cls):
        if f.default is msgspec.NODEFAULT:
            fields.append((f.name, _twin_type(f.type)))
        else:
            fields.append((f.name, _twin_type(f.type), f.default))
    return msgspec.defstruct(name, fields, forbid_unknown_fields=forbid_unknown, gc=False)


def _twin_type(t: Any) -> Any:
    import types
    import typing

    if t == _OBJECT_RAW:
        return _Object | None
    if t == _LIST_RAW:
        return list[_Object] | None
    if t == _USER_RAW:
        return checking_twin(SdkUser, False) | None
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = tuple(_twin_type(a) for a in typing.get_args(t))
        return typing.Union[args]  # noqa: UP007
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return checking_twin(t, bool(t.__struct_config__.forbid_unknown_fields))
    return t


def event_schema(shape: Literal["file", "sdk"] = "file") -> dict[str, Any]:
    """JSON Schema (2020-12, as OpenAPI 3.1 takes it) of one event, from the same Structs, $defs inlined."""
    schema = msgspec.json.schema(FileEvent if shape == "file" else SdkEvent)
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result
