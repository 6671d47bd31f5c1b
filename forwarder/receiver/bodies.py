"""Request bodies -> the lines to append: the seed endpoints' three shapes and the SDKs' `{"events": [...]}`.

Every body is decoded by msgspec calls over the whole body, against the Structs of
`forwarder.decode.event` (one definition of a valid event):

- `decode.event.checking_twin(Struct)`: the same fields, nested objects typed so that msgspec
  checks they are objects (or lists of objects, or users) and keeps nothing of them; both paths
  run it.
- seed endpoints: framing (`list[Raw]`: each event's own text) + checking. Each event is appended
  as the caller sent it, plus `time` (the receive time) when it has none.
- relay: `wire(SdkEvent)` (the same fields, nested objects kept as their text) + checking. The
  decoded events, nulls left out, ARE the lines: one `encode_lines` call.

Python runs per event only for the name rule (remembered per name), a depth bound (bracket
counts of texts long enough to nest deeper than MAX_DEPTH) and a missing time. The per-event
step of the file reader (`forwarder.decode.codec.judge_line`, which also gives each reason)
runs only for the events that need it: all of them, one by one, when a whole-body call refuses
anything (so a bad event costs only itself); and an event whose text may nest too deep, whose
name Statsig drops, whose user has null fields or privateAttributes (relay), and under
oversize_fields = "reject" one long enough to be over Statsig's limits.
"""
from __future__ import annotations

import contextlib
import typing
from typing import Any, Literal

import msgspec
from msgspec import UNSET, Raw, UnsetType

from ..decode.codec import LineError, judge_line, now_ms
from ..decode.event import (
    MAX_DEPTH,
    MAX_STRING_FIELD,
    SAFE_LINE_BYTES,
    FileEvent,
    ListRaw,
    ObjectRaw,
    OversizeFields,
    SdkEvent,
    UnknownFields,
    checking_twin,
    dropped_name,
)
from .intake import Decoded, Invalid
from .wire import ApiError

Shape = Literal["one", "array", "ndjson"]
EXPOSURES = frozenset(("statsig::gate_exposure", "statsig::config_exposure", "statsig::layer_exposure"))


def is_internal(name: str) -> bool:
    """An SDK's own bookkeeping event (statsig::diagnostics, ...), as opposed to exposures and app events."""
    return name.startswith("statsig::") and name not in EXPOSURES


# -- the checking decode -------------------------------------------------------------------------
_FILE_CHECK = checking_twin(FileEvent, True)
_SDK_CHECK = checking_twin(SdkEvent, True)


class _SdkChecked(msgspec.Struct, gc=False):
    events: list[_SDK_CHECK]  # type: ignore[valid-type]


class _SdkFramed(msgspec.Struct, gc=False):
    events: list[Raw]


class _SdkShape(msgspec.Struct, gc=False):
    """What a refused body has for `events` (for the error message)."""

    events: Raw = Raw(b"null")


_REFUSED = (msgspec.DecodeError, RecursionError)  # a ValidationError is a DecodeError
_CHECK_ONE = {"file": msgspec.json.Decoder(_FILE_CHECK).decode, "sdk": msgspec.json.Decoder(_SDK_CHECK).decode}
_CHECK_FILE_ARRAY = msgspec.json.Decoder(list[_FILE_CHECK]).decode  # type: ignore[valid-type]
_CHECK_FILE_LINES = msgspec.json.Decoder(_FILE_CHECK).decode_lines
_CHECK_SDK_BODY = msgspec.json.Decoder(_SdkChecked).decode
_FRAME_ONE = msgspec.json.Decoder(Raw).decode
_FRAME_LIST = msgspec.json.Decoder(list[Raw]).decode
_FRAME_SDK = msgspec.json.Decoder(_SdkFramed).decode
_SDK_SHAPE = msgspec.json.Decoder(_SdkShape).decode
_DICT = msgspec.json.Decoder(dict[str, Any]).decode
_ENCODE = msgspec.json.Encoder().encode
_FORMAT = msgspec.json.format
_DEPTH_BYTES = 2 * MAX_DEPTH  # a text this short cannot nest deeper than MAX_DEPTH
_PRIVATE = b'"privateAttributes"'


def _invalid_json(e: Exception) -> ApiError:
    if isinstance(e, RecursionError):
        return ApiError(422, f"nested deeper than an event may be ({MAX_DEPTH} levels): no event of this body "
                        "was read")
    return ApiError(400, f"invalid JSON: {e}")


def _maybe_deep(data: bytes) -> bool:
    """Whether an event's text may nest deeper than MAX_DEPTH (then the per-event step decides)."""
    return len(data) > _DEPTH_BYTES and data.count(b"{") + data.count(b"[") > MAX_DEPTH


_NAMES: dict[str, bool] = {}  # event name -> within Statsig's name rule (SDKs log few distinct names)


def _name_ok(name: str) -> bool:
    """Whether Statsig keeps events of this name (`dropped_name`, remembered: it is a regex search)."""
    ok = _NAMES.get(name)
    if ok is None:
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        ok = _NAMES[name] = dropped_name(name) is None
    return ok


def _reason(e: LineError) -> str:
    return str(e).removeprefix("invalid event: ")


# -- seed endpoints ---------------------------------------------------------------------------
def seed_events(body: bytes, shape: Shape, max_events: int, max_line: int, unknown: UnknownFields,
                oversize: OversizeFields) -> Decoded:
    """The caller's events as lines (as sent, plus `time` when missing); ApiError 400 (JSON), 413 (count), 422."""
    raws = _frame_seed(body, shape)
    if not raws:
        raise ApiError(422, "no events in the request")
    if len(raws) > max_events:
        raise ApiError(413, f"{len(raws)} events is over max_batch_events ({max_events})")
    checked = _check_seed(body, shape, len(raws))
    now = now_ms()
    out = Decoded()
    lines = []
    compact = shape != "ndjson" and (b"\n" in body or b"\r" in body)
    for i, raw in enumerate(raws):
        data = bytes(raw)
        ev: Any = checked[i] if checked is not None else _check_one(data)
        timed = ev is not None and ev.time is not None
        if (ev is None or (timed and type(ev.time) is not int)  # an ISO or fractional time: judged
                or not _name_ok(getattr(ev, "event_name", None) or ev.eventName)
                or _maybe_deep(data) or (oversize == "reject" and _maybe_over(ev, data))):
            try:
                timed = judge_line(data, unknown, oversize, now).timed
            except LineError as e:
                out.invalid.append(Invalid(i, _reason(e)))
                continue
        line = _render(data, compact, None if timed else now)
        if len(line) > max_line:
            out.invalid.append(Invalid(i, f"event is {len(line)} bytes as a line, over max_line_bytes ({max_line})"))
            continue
        lines.append(line)
    lines.append(b"")
    out.data = b"\n".join(lines)
    out.lines = len(lines) - 1
    return out


def _frame_seed(body: bytes, shape: Shape) -> list[Raw] | list[bytes]:
    """The JSON text of each event of the body."""
    if shape == "ndjson":
        return _frame_ndjson(body)
    try:
        if shape == "one":
            try:
                return [_FRAME_ONE(body)]
            except RecursionError:
                return [body.strip()]  # too deep to read: the per-event step says so (422)
        raws = _FRAME_LIST(body)
    except msgspec.ValidationError:  # valid JSON, not an array
        raise ApiError(422, f"expected a JSON array of events, got {_type_of(body)}") from None
    except _REFUSED as e:
        raise _invalid_json(e) from None
    return raws


def _type_of(body: bytes) -> str:
    first = body.lstrip()[:1]
    return {b"{": "object", b'"': "string", b"t": "boolean", b"f": "boolean", b"n": "null"}.get(first, "number")


def _frame_ndjson(body: bytes) -> list[bytes]:
    lines = []
    errors = []
    for i, line in enumerate(body.split(b"\n")):
        line = line.strip()
        if not line:
            continue
        try:
            _FRAME_ONE(line)
        except msgspec.DecodeError as e:
            errors.append({"index": i, "message": f"invalid JSON: {e}"})
            continue
        except RecursionError:
            pass  # too deep to read: the per-event step says so for this line (422)
        lines.append(line)
    if errors:
        raise ApiError(400, f"{len(errors)} line(s) are not valid JSON, nothing appended "
                       f"(first: line index {errors[0]['index']})", errors)
    return lines


def _check_seed(body: bytes, shape: Shape, count: int) -> list[Any] | None:
    """Every event of the body checked in one call, or None when any needs the per-event step."""
    try:
        if shape == "one":
            return [_CHECK_ONE["file"](body)]
        if shape == "array":
            checked: list[Any] = _CHECK_FILE_ARRAY(body)
            return checked
        checked = _CHECK_FILE_LINES(body)
    except _REFUSED:
        return None
    return checked if len(checked) == count else None  # decode_lines counts values, not lines


def _check_one(raw: bytes) -> Any:
    """One event checked in either form, or None."""
    for shape in ("file", "sdk"):
        try:
            return _CHECK_ONE[shape](raw)
        except _REFUSED:
            continue
    return None


def _maybe_over(ev: Any, raw: bytes) -> bool:
    """Whether an event may be over Statsig's size limits (the per-event step measures it)."""
    name = ev.event_name if hasattr(ev, "event_name") else ev.eventName
    value = ev.value
    return (len(raw) > SAFE_LINE_BYTES or len(name) > MAX_STRING_FIELD
            or (type(value) is str and len(value) > MAX_STRING_FIELD))


def _render(data: bytes, compact: bool, now: int | None) -> bytes:
    """An event's text as one line: whitespace out when it has line breaks, `time` added when `now`."""
    if compact and (b"\n" in data or b"\r" in data):
        data = _FORMAT(data, indent=-1)
    if now is None:
        return data
    if b'"time"' in data:  # "time": null, or a nested "time": set it where the caller's was
        obj = _DICT(data)
        obj["time"] = now
        return _ENCODE(obj)
    return data[:-1] + b',"time":%d}' % now


# -- the Statsig SDK relay ----------------------------------------------------------------------
def wire(struct: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """A Struct that decodes what `struct` (decode.event's SdkEvent) accepts and encodes it in Statsig's
    shape: nested objects kept as their text (`Raw`, UNSET when absent), `time` only as integer epoch ms;
    null and absent fields told apart (None, UNSET), so that the nulls of a body can be counted."""
    fields: list[Any] = []
    for f in msgspec.structs.fields(struct):
        if f.type in (ObjectRaw, ListRaw) or f.name == "user":
            fields.append((f.name, Raw | UnsetType, UNSET))
        elif f.name == "time":
            fields.append((f.name, typing.get_args(f.type)[0] | None | UnsetType, UNSET))
        elif f.name == "value":  # null (None) told from absent (UNSET): both left out
            fields.append((f.name, f.type | UnsetType, UNSET))
        else:
            fields.append((f.name, f.type) if f.required else (f.name, f.type, f.default))
    return msgspec.defstruct(f"Wire{struct.__name__}", fields, forbid_unknown_fields=True, omit_defaults=True,
                             gc=False)


_SDK_WIRE = wire(SdkEvent)
_NULL = Raw(b"null")


class _SdkWired(msgspec.Struct, gc=False):
    events: list[_SDK_WIRE]  # type: ignore[valid-type]


_WIRE_SDK_BODY = msgspec.json.Decoder(_SdkWired).decode
_WIRE_ONE = msgspec.json.Decoder(_SDK_WIRE).decode
_ENCODE_LINES = msgspec.json.Encoder().encode_lines
_NESTED_DEPTH_BYTES = 2 * (MAX_DEPTH - 1)  # a nested object this short is within the limit


def sdk_events(body: bytes, max_events: int, max_line: int, unknown: UnknownFields, oversize: OversizeFields,
               drop_internal: bool, masks: list[tuple[bytes, bytes]]) -> Decoded:
    """The events of an SDK request as Statsig-shaped lines; ApiError 400 (JSON, shape), 413 (count).

    Two calls decode the whole body: into `wire(SdkEvent)` (the lines: typed scalars, nested objects as
    text) and into `checking_twin(SdkEvent)` (the nested objects' types). Per event, Python only leaves out
    null nested fields, bounds the depth by counting brackets of nested texts longer than the limit
    allows, and fills a missing time; `judge_line` takes the events that need more.
    """
    if b"\n" in body:  # nested texts are appended as they are: no line breaks in them
        with contextlib.suppress(*_REFUSED):  # the decode says why
            body = _FORMAT(body, indent=-1)
    try:
        events: list[Any] = _WIRE_SDK_BODY(body).events
        checked: list[Any] | None = _CHECK_SDK_BODY(body).events
    except _REFUSED:
        events, checked = [], None
    raws: list[Raw] | None = None
    if checked is None:  # split: every event on its own
        raws = _frame_sdk(body)
        events = [_wire_sdk(raw) for raw in raws]
    if len(events) > max_events:
        raise ApiError(413, f"{len(events)} events is over relay.max_batch_events ({max_events})")
    now = now_ms()
    out = Decoded()
    good: list[Any] = []
    stepped, stripped = _prepare(events, now)
    if _users_to_clean(body, stripped):
        stepped = [step or _user_to_clean(ev) for step, ev in zip(stepped, events, strict=True)]
    for i, ev in enumerate(events):
        if stepped[i] or (oversize == "reject" and _wire_maybe_over(ev)):
            if raws is None:
                raws = _frame_sdk(body)
            data = bytes(raws[i])
            try:
                ev = judge_line(data, unknown, oversize, now).event
            except LineError as e:
                out.invalid.append(Invalid(i, _reason(e), mask(data, masks)))
                continue
        if drop_internal and is_internal(ev.eventName):
            out.dropped += 1
            continue
        good.append(ev)
    if len(body) > max_line:  # only then may a line be longer than max_line_bytes
        good = _within(good, max_line, out, events, masks)
    if good:
        out.data = mask(_ENCODE_LINES(good), masks)
        out.lines = len(good)
    return out


def _wire_sdk(raw: Raw) -> Any:
    """One event decoded for the fast path (both calls), or None: the per-event step decides."""
    try:
        _CHECK_ONE["sdk"](raw)
        return _WIRE_ONE(raw)
    except _REFUSED:
        return None


def _prepare(events: list[Any], now: int) -> tuple[list[bool], int]:
    """Leave out null fields (how many: the second value), fill a missing time; which events need the
    per-event step: refused alone (None), or may nest too deep (a nested text long enough to, with more
    brackets than the levels left for it), or has a name Statsig drops."""
    names = _NAMES
    stepped = []
    stripped = 0
    for ev in events:
        if ev is None or not (names.get(ev.eventName) or _name_ok(ev.eventName)):
            stepped.append(True)
            continue
        if ev.value is None:
            ev.value = UNSET
            stripped += 1
        t = ev.time
        if type(t) is not int:
            stripped += t is None
            ev.time = now
        deep = False
        r = ev.user
        if r is not UNSET:
            if r == _NULL:
                ev.user = UNSET
                stripped += 1
            elif len(r) > _NESTED_DEPTH_BYTES:
                deep = _too_many_brackets(r)
        r = ev.metadata
        if r is not UNSET:
            if r == _NULL:
                ev.metadata = UNSET
                stripped += 1
            elif len(r) > _NESTED_DEPTH_BYTES:
                deep = deep or _too_many_brackets(r)
        r = ev.secondaryExposures
        if r is not UNSET:
            if r == _NULL:
                ev.secondaryExposures = UNSET
                stripped += 1
            elif len(r) > _NESTED_DEPTH_BYTES:
                deep = deep or _too_many_brackets(r)
        r = ev.statsigMetadata
        if r is not UNSET:
            if r == _NULL:
                ev.statsigMetadata = UNSET
                stripped += 1
            elif len(r) > _NESTED_DEPTH_BYTES:
                deep = deep or _too_many_brackets(r)
        stepped.append(deep)
    return stepped, stripped


def _too_many_brackets(r: Raw) -> bool:
    """Whether a nested text has more `{` and `[` than the levels left for it (then it may nest too deep)."""
    data = bytes(r)
    return data.count(b"{") + data.count(b"[") > MAX_DEPTH - 1


def _users_to_clean(body: bytes, stripped: int) -> bool:
    """Whether some user may have privateAttributes or null fields (the step leaves them out).

    Without scanning each user: when the body holds no more `null`s than the top-level ones left out
    (`stripped`), no user has a null field.
    """
    return _PRIVATE in body or body.count(b"null") > stripped


def _user_to_clean(ev: Any) -> bool:
    r = None if ev is None else ev.user
    if r is None or r is UNSET:
        return False
    data = bytes(r)
    return b"null" in data or _PRIVATE in data


def _wire_maybe_over(ev: Any) -> bool:
    value = ev.value
    return (len(ev.eventName) > MAX_STRING_FIELD or (type(value) is str and len(value) > MAX_STRING_FIELD)
            or any(r is not UNSET and len(r) > SAFE_LINE_BYTES for r in (ev.user, ev.metadata)))


def _within(good: list[Any], max_line: int, out: Decoded, events: list[Any], masks: list[tuple[bytes, bytes]]) \
        -> list[Any]:
    """The events whose line fits max_line_bytes; the others invalid."""
    kept = []
    index = {id(ev): i for i, ev in enumerate(events)}
    for ev in good:
        line = _ENCODE(ev)
        if len(line) > max_line:
            reason = f"event is {len(line)} bytes as a line, over max_line_bytes ({max_line})"
            out.invalid.append(Invalid(index.get(id(ev), -1), reason, mask(line, masks)))
            continue
        kept.append(ev)
    out.invalid.sort(key=lambda bad: bad.index)
    return kept


def _frame_sdk(body: bytes) -> list[Raw]:
    try:
        events: list[Raw] = _FRAME_SDK(body).events
        return events
    except msgspec.ValidationError:
        pass
    except _REFUSED as e:
        raise _invalid_json(e) from None
    try:
        events_raw = bytes(_SDK_SHAPE(body).events)
    except msgspec.ValidationError:
        raise ApiError(400, f'expected {{"events": [...], "statsigMetadata": {{...}}}}, got {_type_of(body)}') \
            from None
    got = "array" if events_raw[:1] == b"[" else _type_of(events_raw)
    raise ApiError(400, f'"events" must be an array of events, got {got}')


def mask(data: bytes, masks: list[tuple[bytes, bytes]]) -> bytes:
    """`data` with every accepted key redacted (SDK diagnostics name their specs URL, which holds the key)."""
    for key, masked in masks:
        if key in data:
            data = data.replace(key, masked)
    return data

