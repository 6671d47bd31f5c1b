"""Bytes -> Statsig events, or the reason each cannot be one: one line, a chunk of lines, a request body.

Every entry point runs the same definition (event.py). The many-event ones (`decode_chunk`,
`decode_events`) decode everything in one msgspec call; when that call refuses anything they
fall back to one object at a time (`decode_line`), so a bad one costs only itself and gets
the same reason it would get alone.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

import msgspec
from msgspec import Raw

from ..model import StatsigEvent
from .event import (
    _DEPTH_SAFE_BYTES,
    _EXPONENT,
    _SPACE_OR_OPEN,
    ANONYMOUS_USER,
    FILE_FIELDS,
    MAX_DEPTH,
    MAX_OBJECT_FIELD,
    MAX_STRING_FIELD,
    SAFE_LINE_BYTES,
    SDK_FIELDS,
    DroppedByStatsig,
    FileEvent,
    InvalidEvent,
    OversizeFields,
    SdkEvent,
    UnknownFields,
    UserID,
    check_depth,
    check_statsig_rules,
    checking_twin,
    describe,
    dropped_name,
    file_user,
    is_sdk_shaped,
    over_limits,
    sdk_user_text,
    to_wire,
    too_deep,
    with_key,
)

_FILE = msgspec.json.Decoder(FileEvent)
_SDK = msgspec.json.Decoder(SdkEvent)
_FIELDS = msgspec.json.Decoder(dict[str, Raw]).decode
_ANY = msgspec.json.Decoder().decode
_ENCODE = msgspec.json.Encoder().encode
_REFUSED = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError


class LineError(ValueError):
    """The line is not a valid event; str(e) is the reason written to the dead-letter file."""


class StatsigRuleError(LineError):
    """A valid event that Statsig would drop, or over its size limits; `over` names those fields."""

    def __init__(self, message: str, over: list[str]) -> None:
        super().__init__(message)
        self.over = over


@dataclass(slots=True)
class Decoded:
    """A valid event, the fields over Statsig's size limits (sent as they are under oversize_fields
    = "send"; counted), and whether the input had its own time."""

    event: StatsigEvent
    over: list[str]
    timed: bool


def now_ms() -> int:
    return int(time.time() * 1000)


def decode_line(line: bytes, unknown_fields: UnknownFields = "metadata",
                oversize_fields: OversizeFields = "send") -> StatsigEvent:
    """Decode and validate one line (without its newline); raises LineError (StatsigRuleError
    for what Statsig's rules refuse, with `.over`)."""
    return judge_line(line, unknown_fields, oversize_fields).event


def judge_line(line: bytes | Raw, unknown_fields: UnknownFields = "metadata",
               oversize_fields: OversizeFields = "send", now: int | None = None) -> Decoded:
    """decode_line with everything the reader needs to know; `now` stands for a missing time."""
    if not line.isascii() if type(line) is bytes else not bytes(line).isascii():
        _check_utf8(bytes(line))
    try:
        ev: FileEvent | SdkEvent = _FILE.decode(line)
    except _REFUSED:
        return _slow(line, unknown_fields, oversize_fields, now_ms() if now is None else now)
    return _finish(ev, now_ms() if now is None else now, None, oversize_fields)


def _finish(ev: FileEvent | SdkEvent, now: int, metadata: Raw | None, oversize: OversizeFields) -> Decoded:
    try:
        wire = to_wire(ev, now, metadata)
        over = check_statsig_rules(wire, oversize)
    except DroppedByStatsig as e:
        raise StatsigRuleError(f"invalid event: {e}", e.over) from None
    except InvalidEvent as e:
        raise LineError(f"invalid event: {e}") from None
    return Decoded(wire, over, ev.time is not None)


def _slow(line: bytes | Raw, unknown: UnknownFields, oversize: OversizeFields, now: int) -> Decoded:
    """The per-line step for what the Structs refused: JSON errors, the SDK shape, unknown
    top-level keys, and the reason for everything else."""
    try:
        fields = _FIELDS(line)
    except msgspec.ValidationError as e:
        raise LineError(f"not a JSON object: got {_got(str(e))}") from None
    except msgspec.DecodeError as e:
        raise _parse_error(line, e) from None
    except RecursionError:
        raise LineError(f"invalid event: {too_deep()}") from None
    sdk = is_sdk_shaped(fields)
    known = SDK_FIELDS if sdk else FILE_FIELDS
    extra = [k for k in fields if k not in known]
    body: bytes | Raw = line
    if extra:
        if unknown == "reject":
            raise LineError("invalid event: unknown field(s): " + ", ".join(sorted(extra)))
        body = _ENCODE({k: v for k, v in fields.items() if k in known})
    try:
        ev: FileEvent | SdkEvent = (_SDK if sdk else _FILE).decode(body)
    except msgspec.ValidationError as e:
        raise LineError(f"invalid event: {describe(e)}") from None
    except msgspec.DecodeError as e:
        raise _parse_error(line, e) from None
    except RecursionError:
        raise LineError(f"invalid event: {too_deep()}") from None
    metadata = None
    if extra:
        try:
            metadata = _merge(fields, extra)
        except InvalidEvent as e:
            raise LineError(f"invalid event: {e}") from None
    return _finish(ev, now, metadata, oversize)


def _merge(fields: dict[str, Raw], extra: list[str]) -> Raw:
    """metadata with the unknown top-level keys added (metadata's own keys win)."""
    merged = {k: fields[k] for k in extra}
    own = fields.get("metadata")
    if own is not None and bytes(own) != b"null":
        if bytes(memoryview(own)[:1]) != b"{":
            raise InvalidEvent(f"metadata: Expected `object`, got `{json_type(_ANY(own))}`")
        merged.update(_FIELDS(own))
    return Raw(_ENCODE(merged))


def _got(message: str) -> str:
    """The JSON type named by msgspec's `Expected `object`, got `array``."""
    kind = message.rpartition("got `")[2].partition("`")[0]
    return {"str": "string", "int": "number", "float": "number", "bool": "boolean"}.get(kind, kind)


def _check_utf8(data: bytes) -> None:
    """LineError for invalid UTF-8 anywhere (msgspec checks it in the strings it decodes, not in
    the Raw fields it keeps)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as u:
        raise LineError(f"invalid UTF-8 at byte {u.start}") from None


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_error(line: bytes | Raw, e: msgspec.DecodeError) -> LineError:
    try:
        bytes(line).decode("utf-8")
    except UnicodeDecodeError as u:
        return LineError(f"invalid UTF-8 at byte {u.start}")
    return LineError(f"invalid JSON: {e}")


def json_type(obj: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if obj is None:
        return "null"
    names = {list: "array", dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(obj), type(obj).__name__)


# -- many events in one call ---------------------------------------------------------------
@dataclass(slots=True)
class Many:
    """A whole chunk or body decoded in one call: the events in order, the (index, fields) of
    those over Statsig's size limits, the indexes of those without their own time, and (for a
    chunk) where each line ends in it, just past its newline."""

    events: list[StatsigEvent]
    over: list[tuple[int, list[str]]] = field(default_factory=list)
    untimed: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    ids_set: bool = False


_NEWLINE = re.compile(b"\n")


def line_ends(data: bytes) -> list[int]:
    """Where each line of a chunk ends in it (just past its newline; a last line without one
    ends at len(data))."""
    ends = [m.end() for m in _NEWLINE.finditer(data)]
    if not data.endswith(b"\n"):
        ends.append(len(data))
    return ends


class ChunkDecoder:
    """Decodes chunks of NDJSON lines in one msgspec call each, trying first the shape that
    worked last (a file tends to hold one shape)."""

    def __init__(self) -> None:
        self._decoders: list[msgspec.json.Decoder[Any]] = [_FILE, _SDK]

    def decode(self, data: bytes, oversize: OversizeFields = "send", now: int | None = None,
               ids: tuple[str, str, int] | None = None) -> Many | None:
        """All lines of `data` (whole lines; the last may lack its newline), or None when any
        line needs the per-line step: a refused or blank line, a line in the other shape, two
        objects on one line or one object over two (decode_lines reads a stream of values, so
        one value per line is checked here: every inner newline must sit in `}\\n{`).

        `ids` = (metadata key, prefix, offset of data[0]): each event's stable id, prefix + the
        offset of its line, is set in its metadata where that is cheap (`Many.ids_set`; else
        the caller does it with `add_event_ids`)."""
        items = None
        if not _utf8(data):
            return None
        for i, decoder in enumerate(self._decoders):
            try:
                items = decoder.decode_lines(data)
            except _REFUSED:
                continue
            if i:
                self._decoders.reverse()
            break
        if items is None:
            return None
        ends = line_ends(data)
        if len(items) != len(ends) or not _one_per_line(data, ends):
            return None
        now = now_ms() if now is None else now
        if type(items[0]) is not FileEvent:
            many = _wire_sdk_lines(data, items, ends, now, oversize)
        elif ids is not None and _ENCODE(ids[0]) not in data:  # (else an event may have the key already)
            many = _wire_file_lines(items, ends, now, oversize, ids)
            if many is not None:
                many.ids_set = True
        else:
            many = _wire_file_lines(items, ends, now, oversize)
        if many is not None:
            many.ends = ends
        return many


def _one_per_line(data: bytes, ends: list[int]) -> bool:
    """Given as many values as lines: is every line exactly one of them? Yes when each inner
    newline sits in `}\n{` (or `}\r\n{`): JSON allows `}` newline `{` only between two top-level
    values, so each line then holds at least one value, hence exactly one. Checked with
    itemgetter (C) on the bytes around the newlines, not per line in Python."""
    newlines = ends[:-1]  # just past each newline that has a line after it
    if len(newlines) < 2:  # (itemgetter of one index returns no tuple)
        if not newlines:
            return True
        p = newlines[0]
        return p >= 3 and data[p] == 123 and (data[p - 2] == 125 or data[p - 3:p - 1] == b"}\r")
    after = itemgetter(*newlines)(data)  # the first byte of each next line
    if after.count(123) != len(after):  # {
        return False
    before = itemgetter(*newlines)(b"\0\0" + data)  # the byte before each newline
    if before.count(125) == len(before):  # }
        return True
    return data.count(b"}\n{") + data.count(b"}\r\n{") == len(newlines)  # CRLF lines


def _wire_file_lines(items: list[FileEvent], ends: list[int], now: int, oversize: OversizeFields,
                     ids: tuple[str, str, int] | None = None) -> Many | None:
    """`_wire_all` for the lines of a chunk in the project's form, with what `to_wire` does
    inlined for the common case (this runs once per event of every file): any other case
    returns None, and the per-line path decides and explains it. With `ids`, what
    `add_event_ids` does, in the same pass."""
    out = Many([])
    events = out.events
    append = events.append
    untimed = out.untimed
    start = 0
    anonymous = ANONYMOUS_USER
    safe_line, safe_depth, max_string = SAFE_LINE_BYTES, _DEPTH_SAFE_BYTES, MAX_STRING_FIELD
    dropped = dropped_name
    view = memoryview
    id_head = _ENCODE(ids[0]) + b":" + _ENCODE(ids[1])[:-1] if ids is not None else None  # "key":"prefix
    base = ids[2] if ids is not None else 0
    odd = _SPACE_OR_OPEN
    try:
        for ev, end in zip(items, ends, strict=True):
            t = ev.time
            if type(t) is not int:
                if t is not None:
                    return None  # fractional or ISO: per line
                t = now
                untimed.append(len(events))
            u = ev.user
            if u is None:
                uid = ev.user_id
                user: Any = anonymous if uid is None else UserID(uid)
            elif u.userID is None or u.user_id is not None or u.privateAttributes is not None:
                user = file_user(u, ev.user_id)
            else:
                c = u.custom
                if c is not None:
                    if view(c)[0] != 123:  # not {: null, or per line
                        if view(c)[0] != 110:
                            return None
                        u.custom = None
                    elif len(c) > safe_depth - 2:
                        check_depth(c, MAX_DEPTH - 2, "user.custom")
                user = u
            m = ev.metadata
            if m is not None:
                if view(m)[0] != 123:  # not {: null, or per line
                    if view(m)[0] != 110:
                        return None
                    m = None
                elif len(m) > safe_depth:
                    check_depth(m, MAX_DEPTH - 1, "metadata")
            name = ev.event_name
            value = ev.value
            if end - start > safe_line:  # long enough to be over a size limit: measured
                max_string = -1
            if not name.isidentifier() and dropped(name):
                return None
            if id_head is not None:
                if m is None:
                    m = Raw(b'{%b%d"}' % (id_head, base + start))
                else:
                    text = bytes(m)
                    if text[-2] in odd:  # {} or whitespace before its }
                        m = with_key(m, ids[0], ids[1] + str(base + start))  # type: ignore[index]
                    else:
                        m = Raw(b'%b,%b%d"}' % (text[:-1], id_head, base + start))
            if len(name) > max_string or (type(value) is str and len(value) > max_string):
                max_string = MAX_STRING_FIELD
                wire = StatsigEvent(name, t, user, value, m)
                over = over_limits(wire)
                if over:
                    if oversize == "reject":
                        return None
                    out.over.append((len(events), over))
                append(wire)
            else:
                append(StatsigEvent(name, t, user, value, m))
            start = end
    except InvalidEvent:
        return None
    return out


_SDK_LINES_CHECK = msgspec.json.Decoder(checking_twin(SdkEvent, True))
_NULL = Raw(b"null")


def _wire_sdk_lines(data: bytes, items: list[SdkEvent], ends: list[int], now: int,
                    oversize: OversizeFields) -> Many | None:
    """`_wire_all` for the lines of a chunk in Statsig's shape (what the relay appends): the nested
    objects are checked in one more msgspec call over the chunk (the checking twin), so that
    per event only what a Struct cannot say runs here; anything unusual returns None."""
    try:
        checked: list[Any] = _SDK_LINES_CHECK.decode_lines(data)
    except _REFUSED:
        return None
    out = Many([])
    events = out.events
    append = events.append
    start = 0
    nulls = b"null" in data  # (a user's null fields are left out: only then is its text searched)
    try:
        for ev, chk, end in zip(items, checked, ends, strict=True):
            t = ev.time
            if type(t) is not int:
                if t is not None:
                    return None
                t = now
                out.untimed.append(len(events))
            name = ev.eventName
            if not name.isidentifier() and dropped_name(name):
                return None
            user = ev.user
            cu = chk.user
            if cu is None:
                user = None
            elif cu.privateAttributes is not None or (nulls and b"null" in bytes(user)):  # type: ignore[arg-type]
                user = sdk_user_text(user)  # type: ignore[arg-type]
            m = ev.metadata if chk.metadata is not None else None
            exposures = ev.secondaryExposures if chk.secondaryExposures is not None else None
            sm = ev.statsigMetadata if chk.statsigMetadata is not None else None
            wire = StatsigEvent(name, t, user, ev.value, m, exposures, sm)
            if end - start > _DEPTH_SAFE_BYTES:
                for raw, what in ((m, "metadata"), (user, "user"), (exposures, "secondaryExposures"),
                                  (sm, "statsigMetadata")):
                    if raw is not None:
                        check_depth(raw, MAX_DEPTH - 1, what)
                over = check_statsig_rules(wire, oversize) if end - start > SAFE_LINE_BYTES or len(name) > \
                    MAX_STRING_FIELD or type(ev.value) is str else []
            else:
                over = check_statsig_rules(wire, oversize) if len(name) > MAX_STRING_FIELD or \
                    type(ev.value) is str else []
            if over:
                out.over.append((len(events), over))
            append(wire)
            start = end
    except InvalidEvent:
        return None
    return out


def _wire_all(items: list[Any], oversize: OversizeFields, now: int) -> Many | None:
    """The Statsig events of decoded items, or None if any needs the per-line step to explain it."""
    out = Many([])
    events = out.events
    append = events.append
    try:
        for ev in items:
            if ev.time is None:
                out.untimed.append(len(events))
            wire = to_wire(ev, now)
            over = check_statsig_rules(wire, oversize)
            if over:
                out.over.append((len(events), over))
            append(wire)
    except InvalidEvent:
        return None
    return out


# -- request bodies --------------------------------------------------------------------------
BodyShape = Literal["array", "sdk", "one"]
_BODY_FILE: dict[str, msgspec.json.Decoder[Any]] = {
    "array": msgspec.json.Decoder(list[FileEvent]), "one": msgspec.json.Decoder(FileEvent)}
_BODY_SDK: dict[str, msgspec.json.Decoder[Any]] = {
    "array": msgspec.json.Decoder(list[SdkEvent]), "one": msgspec.json.Decoder(SdkEvent)}


class _SdkBatch(msgspec.Struct):
    events: list[SdkEvent]


class _SdkBatchRaw(msgspec.Struct):
    events: list[Raw]


_SDK_BATCH = msgspec.json.Decoder(_SdkBatch)
_SDK_BATCH_RAW = msgspec.json.Decoder(_SdkBatchRaw)
_LIST_RAW = msgspec.json.Decoder(list[Raw])


class BodyError(ValueError):
    """The body as a whole is not what the endpoint takes (not JSON, wrong shape); str(e) says why."""


def decode_events(body: bytes, shape: BodyShape, unknown_fields: UnknownFields = "metadata",
                  oversize_fields: OversizeFields = "send",
                  now: int | None = None) -> list[Decoded | LineError]:
    """Every event of a request body, in order: a Decoded, or the LineError saying why not.

    shape "array": a JSON array of events (`/v1/analytics/batch`); "one": one event object
    (`/v1/analytics/events`); "sdk": Statsig's `{"events": [...], ...}` (the relay). Each
    event may be in either form (FileEvent or SdkEvent), as a line may. One msgspec call
    decodes the whole body when every event is plain; otherwise each is decoded alone with
    `judge_line`, so each bad one gets its own reason and the others are unaffected. Raises
    BodyError when the body itself is refused: not JSON, not the shape, or nested past any
    event's depth limit in a way that hides where the events are.
    """
    now = now_ms() if now is None else now
    fast = _decode_body_fast(body, shape, oversize_fields, now)
    if fast is not None:
        return fast
    results: list[Decoded | LineError] = []
    for raw in _split_body(body, shape):  # each event alone: a bad one costs only itself
        try:
            results.append(judge_line(raw, unknown_fields, oversize_fields, now))
        except LineError as e:
            results.append(e)
    return results


def _decode_body_fast(body: bytes, shape: BodyShape, oversize: OversizeFields,
                      now: int) -> list[Decoded | LineError] | None:
    items: Any = None
    if not _utf8(body):
        return None
    try:
        items = _SDK_BATCH.decode(body).events if shape == "sdk" else _BODY_FILE[shape].decode(body)
    except _REFUSED:
        if shape == "sdk":
            return None
        try:
            items = _BODY_SDK[shape].decode(body)
        except _REFUSED:
            return None
    if shape == "one":
        items = [items]
    many = _wire_all(items, oversize, now)
    if many is None:
        return None
    over = dict(many.over)
    untimed = set(many.untimed)
    return [Decoded(ev, over.get(i, []), i not in untimed) for i, ev in enumerate(many.events)]


def _split_body(body: bytes, shape: BodyShape) -> list[Raw] | list[bytes]:
    """The events of a body as raw JSON texts (BodyError when the body is refused as a whole)."""
    try:
        if shape == "one":
            _ANY_RAW.decode(body)
            return [Raw(body)]
        if shape == "array":
            return _LIST_RAW.decode(body)
        return _SDK_BATCH_RAW.decode(body).events
    except msgspec.ValidationError as e:
        if shape == "array":
            raise BodyError(f"expected a JSON array of events, got {_got(str(e))}") from None
        raise BodyError(f'expected {{"events": [...], "statsigMetadata": {{...}}}}: {describe(e)}') from None
    except msgspec.DecodeError as e:
        raise BodyError(f"invalid JSON: {e}") from None
    except RecursionError:
        return _split_deep(body, shape)


_ANY_RAW = msgspec.json.Decoder(Raw)
_BODY_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.S)


def _split_deep(body: bytes, shape: BodyShape) -> list[bytes]:
    """The events of a body nested too deep for msgspec, found by scanning its brackets (outside
    strings): each is then decoded alone, and only the deep ones are refused."""
    if shape == "one":
        return [body]
    depth = 0
    inner: int | None = None  # the depth inside the events array, once found
    start = 0
    items: list[bytes] = []
    prev = key = b""
    for m in _BODY_TOKENS.finditer(body):
        token = m.group()
        kind = token[:1]
        if kind in b"[{":
            if inner is None and kind == b"[" and (
                    (shape == "array" and depth == 0)
                    or (shape == "sdk" and depth == 1 and prev == b":" and key == b'"events"')):
                inner, start = depth + 1, m.end()
            depth += 1
        elif kind in b"]}":
            depth -= 1
            if inner is not None and depth == inner - 1:
                last = body[start:m.start()].strip()
                if last or items:
                    items.append(last)
                return items
        elif kind == b",":
            if inner is not None and depth == inner:
                items.append(body[start:m.start()].strip())
                start = m.end()
        elif kind == b":" and depth == 1:
            key = prev
        prev = token
    raise BodyError("invalid JSON: the events array does not end")


# -- verdicts only: a body checked in one call, each event's text kept as sent ----------------
@dataclass(slots=True)
class Verdict:
    """One event of a body: its JSON text as sent; why it is refused (None: valid); the fields
    over Statsig's size limits; and its Statsig event when the per-event step had to run (None
    when the text is, as it is, a valid event that needs nothing more: see `check_events`)."""

    raw: Raw | bytes
    error: LineError | None = None
    over: list[str] = field(default_factory=list)
    event: StatsigEvent | None = None


_CHECKS: dict[tuple[str, bool], msgspec.json.Decoder[Any]] = {}
for _shape, _cls in (("file", FileEvent), ("sdk", SdkEvent)):
    for _strict in (False, True):
        _twin = checking_twin(_cls, _strict)
        _CHECKS[(_shape, _strict)] = msgspec.json.Decoder(list[_twin])  # type: ignore[valid-type]
        _CHECKS[(_shape + "-one", _strict)] = msgspec.json.Decoder(_twin)
        _CHECKS[(_shape + "-batch", _strict)] = msgspec.json.Decoder(
            msgspec.defstruct(f"{_twin.__name__}Batch", [("events", list[_twin])]))  # type: ignore[valid-type]


def check_events(body: bytes, shape: BodyShape, unknown_fields: UnknownFields = "metadata",
                 oversize_fields: OversizeFields = "send", now: int | None = None) -> list[Verdict]:
    """Every event of a request body (shapes as in `decode_events`), judged as a file line would
    be, with its JSON text as sent: for intake that appends what it was given.

    The whole body is checked in one msgspec call against the definition with nested objects
    typed (`event.checking_twin`); an event then needs no Python beyond a few length checks
    unless it is unusual, and `Verdict.event` stays None: its text is valid as it is. For the
    file form that includes a missing time (the reader stamps it), unknown top-level keys under
    unknown_fields = "metadata" (the reader moves them into metadata); for Statsig's shape, the
    text is a ready Statsig event. Anything else (an ISO or missing SDK time, privateAttributes,
    a long or deep event, any refusal) takes `judge_line`, which sets `event` (the Statsig event
    to append instead, e.g. with `encode_line`) or `error`. Raises BodyError like decode_events.
    """
    raws = _split_body(body, shape)
    strict = unknown_fields == "reject"
    checked: list[Any] | None = None
    kind = "file"
    if _utf8(body):
        for kind in (("sdk",) if shape == "sdk" else ("file", "sdk")):
            try:
                if shape == "sdk":
                    checked = _CHECKS[("sdk-batch", strict)].decode(body).events
                elif shape == "one":
                    checked = [_CHECKS[(kind + "-one", strict)].decode(body)]
                else:
                    checked = _CHECKS[(kind, strict)].decode(body)
            except _REFUSED:
                continue
            break
    now = now_ms() if now is None else now
    verdicts: list[Verdict] = []
    sdk = kind == "sdk"
    for i, raw in enumerate(raws):
        over = _light(checked[i], raw, sdk, oversize_fields) if checked is not None else None
        if over is not None:
            verdicts.append(Verdict(raw, None, over))
            continue
        try:
            d = judge_line(raw, unknown_fields, oversize_fields, now)
        except LineError as e:
            verdicts.append(Verdict(raw, e))
            continue
        verdicts.append(Verdict(raw, None, d.over, d.event))
    return verdicts


def _light(ev: Any, raw: Raw | bytes, sdk: bool, oversize: OversizeFields) -> list[str] | None:
    """What a checked event still needs: its fields over Statsig's string limits, or None when it
    needs the per-event step."""
    t = ev.time
    if type(t) is not int and (sdk or t is not None):
        return None
    name = ev.eventName if sdk else ev.event_name
    if not name.isidentifier() and dropped_name(name):
        return None
    if sdk and ev.user is not None and ev.user.privateAttributes is not None:
        return None
    n = len(raw)
    if n > _DEPTH_SAFE_BYTES:
        text = bytes(raw)
        if text.count(b"{") + text.count(b"[") > MAX_DEPTH:
            return None
        if n > SAFE_LINE_BYTES and (n > MAX_OBJECT_FIELD or _EXPONENT(text)):
            return None  # an object may be over 4096 stringified: measured per event
    over = []
    if len(name) > MAX_STRING_FIELD:
        over.append("event_name")
    value = ev.value
    if type(value) is str and len(value) > MAX_STRING_FIELD:
        over.append("value")
    if over and oversize == "reject":
        return None
    return over


def encode_line(event: StatsigEvent) -> bytes:
    """One event as a line in Statsig's shape (no newline): decode_line gives the same event back."""
    return _ENCODE(event)
