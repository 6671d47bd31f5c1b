"""The event definition: what a line may hold, its Statsig event, and the reasons for refusals.

One definition (msgspec Structs + the per-line step in codec.py) serves a line, a chunk of lines
decoded in one call, and a request body: the many-event paths must agree with the one-line path
on every input, and an all-good chunk must never take the per-line path.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.decode.codec import ChunkDecoder, LineError, check_events, decode_events, decode_line, judge_line
from forwarder.decode.event import DROPPED_NAME_CHARS, MAX_DEPTH, add_event_ids, event_schema, set_metadata
from forwarder.model import StatsigEvent


def wire(obj: Any, unknown: Any = "metadata", oversize: Any = "send") -> dict[str, Any]:
    return decode_line(orjson.dumps(obj), unknown, oversize).as_dict()


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
                           max_leaves=8)
user_keys = st.sampled_from(["userID", "user_id", "email", "ip", "custom", "customIDs", "privateAttributes",
                             "statsigEnvironment", "country", "other"])
users = st.dictionaries(user_keys, json_values | st.text() | st.dictionaries(st.text(), st.text()), max_size=4)
event_keys = st.sampled_from(["event_name", "user_id", "user", "value", "metadata", "time", "extra"])
events = st.dictionaries(
    event_keys,
    st.text(max_size=130) | st.integers(-5, 2**45) | st.floats(allow_nan=False) | users | json_values,
    max_size=6,
).map(lambda d: {"event_name": "e", **d} if len(d) % 2 else d)
sdk_keys = st.sampled_from(["eventName", "user", "value", "metadata", "time", "secondaryExposures",
                            "statsigMetadata", "extra", "event_name"])
exposure_lists = st.lists(st.dictionaries(st.sampled_from(["gate", "gateValue", "ruleID"]), st.text(max_size=3),
                                          max_size=3) | json_scalars, max_size=3)
sdk_events = st.dictionaries(
    sdk_keys,
    st.none() | st.text(max_size=130) | st.integers(-5, 2**45) | st.floats(allow_nan=False) | users | json_values
    | exposure_lists,
    max_size=7,
).map(lambda d: {**d, "eventName": "e"} if len(d) % 2 else d)
# Plain events of both forms: every one valid, so a chunk of them must take the one-call path.
plain_file = st.fixed_dictionaries({"event_name": st.text(st.sampled_from("ab_:. é"), min_size=1, max_size=70)},
                                   optional={"user_id": st.text(max_size=5),
                                             "value": st.text(max_size=70) | st.integers(-(2**63), 2**63 - 1),
                                             "metadata": st.dictionaries(st.text(max_size=3), json_values, max_size=3),
                                             "user": st.fixed_dictionaries({}, optional={
                                                 "userID": st.text(max_size=3), "email": st.text(max_size=3),
                                                 "custom": st.dictionaries(st.text(max_size=2), json_scalars)}),
                                             "time": st.integers(0, 2**41)})
plain_sdk = st.fixed_dictionaries({"eventName": st.text(st.sampled_from("ab_:"), min_size=1, max_size=10)},
                                  optional={"user": st.fixed_dictionaries({"userID": st.text(max_size=3)}),
                                            "metadata": st.dictionaries(st.text(max_size=3), json_scalars, max_size=3),
                                            "secondaryExposures": st.lists(st.fixed_dictionaries({"gate": st.text()}),
                                                                           max_size=2),
                                            "time": st.integers(0, 2**41)})


def _fate(line: bytes, now: int) -> Any:
    try:
        d = judge_line(line, now=now)
    except LineError as e:
        return ("error", str(e))
    return (d.event.as_dict(), d.over, d.timed)


@settings(max_examples=300, deadline=None)
@given(st.lists(events | sdk_events, min_size=1, max_size=6),
       st.lists(st.sampled_from([b"", b" ", b"\r", b"{}", b'{"event_name":"x"}']), max_size=2),
       st.sampled_from([b"\n", b"\r\n", b"}{", b" ", b"\n\n"]))
def test_chunk_fast_path_agrees_with_the_per_line_path(objs: list[Any], odd: list[bytes], sep: bytes) -> None:
    """Whatever a chunk holds, one call either declines it or gives what each line gives alone."""
    lines = [orjson.dumps(o) for o in objs] + odd
    data = sep.join(lines) + b"\n"
    now = 1_700_000_000_000
    many = ChunkDecoder().decode(data, "send", now)
    if many is None:
        return
    pieces = data.split(b"\n")[:-1]
    fates = [_fate(p, now) for p in pieces]
    assert all(f[0] != "error" for f in fates), (data, fates)
    assert [e.as_dict() for e in many.events] == [f[0] for f in fates]
    assert dict(many.over) == {i: f[1] for i, f in enumerate(fates) if f[1]}
    assert many.untimed == [i for i, f in enumerate(fates) if not f[2]]


@settings(max_examples=200, deadline=None)
@given(st.lists(plain_file | plain_sdk, min_size=1, max_size=8), st.sampled_from(["send", "reject"]),
       st.booleans(), st.booleans())
def test_an_all_good_chunk_takes_the_one_call_path(objs: list[Any], oversize: Any, crlf: bool, final: bool) -> None:
    lines = [orjson.dumps(o) for o in objs]
    now = 1_700_000_000_000
    fates = [_fate(line, now) for line in lines]
    if any(f[0] == "error" for f in fates) or len({"eventName" in o for o in objs}) > 1:
        return  # (names Statsig drops cannot come from these alphabets; mixed shapes: per line)
    if oversize == "reject" and any(f[1] for f in fates):
        return
    data = (b"\r\n" if crlf else b"\n").join(lines) + (b"" if final else b"\n")
    many = ChunkDecoder().decode(data, oversize, now)
    assert many is not None, data
    assert [e.as_dict() for e in many.events] == [f[0] for f in fates]


@settings(max_examples=200, deadline=None)
@given(st.lists(events | sdk_events | json_scalars, min_size=1, max_size=5), st.sampled_from(["array", "sdk"]))
def test_body_decode_agrees_with_each_event_alone(objs: list[Any], shape: Any) -> None:
    now = 1_700_000_000_000
    body = orjson.dumps(objs if shape == "array" else {"events": objs, "statsigMetadata": {}})
    got = decode_events(body, shape, now=now)
    want = [_fate(orjson.dumps(o), now) for o in objs]
    assert [("error", str(r)) if isinstance(r, LineError) else (r.event.as_dict(), r.over, r.timed)
            for r in got] == want


@settings(max_examples=200, deadline=None)
@given(st.lists(events | sdk_events | plain_file | plain_sdk | json_scalars, min_size=1, max_size=5),
       st.sampled_from(["array", "sdk", "one"]), st.sampled_from(["metadata", "reject"]),
       st.sampled_from(["send", "reject"]))
def test_body_verdicts_agree_with_each_event_alone(objs: list[Any], shape: Any, unknown: Any, oversize: Any) -> None:
    """check_events (one checking call, texts kept) judges each event as judge_line does; an event it
    passes without the per-event step is a valid line as it is."""
    if shape == "one":
        objs = objs[:1]
    body = orjson.dumps(objs[0] if shape == "one" else objs if shape == "array" else {"events": objs})
    now = 1_700_000_000_000
    for obj, verdict in zip(objs, check_events(body, shape, unknown, oversize, now), strict=True):
        line = orjson.dumps(obj)
        assert bytes(verdict.raw) == line
        try:
            alone = judge_line(line, unknown, oversize, now)
        except LineError as e:
            assert verdict.error is not None and str(verdict.error) == str(e)
            continue
        assert verdict.error is None and verdict.over == alone.over
        if verdict.event is not None:
            assert verdict.event.as_dict() == alone.event.as_dict()


def test_statsig_shaped_lines_pass_as_they_came() -> None:
    exposure = {"eventName": "statsig::gate_exposure", "value": None, "statsigMetadata": None, "time": 1795615408601,
                "user": {"userID": "u1", "customIDs": {"stableID": "s"}, "analyticsOnlyMetadata": {"a": 1}},
                "metadata": {"gate": "g", "gateValue": "true", "ruleID": "r"},
                "secondaryExposures": [{"gate": "c", "gateValue": "true", "ruleID": "rc"}]}
    assert wire(exposure) == {k: v for k, v in exposure.items() if v is not None}
    line = orjson.dumps(exposure)
    assert msgspec.json.encode(decode_line(line)).count(b'"analyticsOnlyMetadata":{"a":1}') == 1  # verbatim
    assert wire({"eventName": "a", "user": {"userID": "u", "privateAttributes": {"x": 1}, "email": None},
                 "time": "2024-01-01T00:00:00Z"}) == {"eventName": "a", "user": {"userID": "u"}, "time": 1704067200000}
    assert wire({"eventName": "a", "time": 1, "k": 1})["metadata"] == {"k": 1}
    with pytest.raises(LineError, match=r"unknown field\(s\): k"):
        wire({"eventName": "a", "k": 1}, "reject")
    with pytest.raises(LineError, match=r"secondaryExposures\.0"):
        wire({"eventName": "a", "secondaryExposures": ["g"]})
    with pytest.raises(LineError, match="eventName"):
        wire({"eventName": ""})
    # Both names: the project's own form, where eventName is just an unknown field.
    both = wire({"event_name": "mine", "eventName": "theirs", "time": 1})
    assert both["eventName"] == "mine" and both["metadata"] == {"eventName": "theirs"}
    assert decode_line(b'{"eventName": "a", "user": {}, "time": 5}').as_dict() == {
        "eventName": "a", "user": {}, "time": 5}


def test_mapping_of_a_full_event() -> None:
    obj = {
        "event_name": "purchase",
        "user": {"user_id": "u1", "email": "a@b.c", "privateAttributes": {"ssn": "x"}, "customIDs": {"org": 7}},
        "value": 9.5,
        "metadata": {"sku": "X", "n": 2},
        "time": "2025-01-02T03:04:05.678Z",
        "source": "web",
    }
    assert wire(obj) == {
        "eventName": "purchase",
        "user": {"userID": "u1", "email": "a@b.c", "customIDs": {"org": 7}},
        "value": 9.5,
        "metadata": {"source": "web", "sku": "X", "n": 2},
        "time": 1735787045678,
    }


def test_user_id_shorthand_and_anonymous_fallback() -> None:
    assert wire({"event_name": "a", "user_id": "u9", "time": 1})["user"] == {"userID": "u9"}
    assert wire({"event_name": "a", "time": 1})["user"] == {"userID": "anonymous"}
    assert wire({"event_name": "a", "user_id": "", "time": 1})["user"] == {"userID": ""}
    assert wire({"event_name": "a", "user_id": 'q"\\', "time": 1})["user"] == {"userID": 'q"\\'}
    assert wire({"event_name": "a", "user": {"email": "e"}, "time": 1})["user"] == {
        "email": "e", "userID": "anonymous"}
    assert wire({"event_name": "a", "user_id": "x", "user": {"userID": "y"}, "time": 1})["user"] == {
        "userID": "y"}
    assert wire({"event_name": "a", "user_id": "x", "user": {"email": None}, "time": 1})["user"] == {
        "userID": "x"}


def test_unknown_fields_policy() -> None:
    assert wire({"event_name": "a", "k": 1, "metadata": {"k": 2}, "time": 1})["metadata"] == {"k": 2}
    with pytest.raises(LineError, match=r"unknown field\(s\): k"):
        wire({"event_name": "a", "k": 1}, "reject")
    with pytest.raises(LineError, match=r"metadata: Expected `object`, got `array`"):
        wire({"event_name": "a", "k": 1, "metadata": [1]})


def test_time_forms() -> None:
    assert wire({"event_name": "a", "time": 1700000000123})["time"] == 1700000000123
    assert wire({"event_name": "a", "time": 1700000000123.9})["time"] == 1700000000123
    assert wire({"event_name": "a", "time": "2024-01-01T00:00:00"})["time"] == 1704067200000
    assert wire({"event_name": "a", "time": "2024-01-01T01:00:00+01:00"})["time"] == 1704067200000
    for bad in (-1, True, "soon", [1], "1969-12-31T00:00:00Z", 1e30):
        with pytest.raises(LineError, match="time"):
            wire({"event_name": "a", "time": bad})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b'{"event_name": NaN}', "invalid JSON"),
        (b'"just a string"', "not a JSON object: got string"),
        (b"null", "not a JSON object: got null"),
        (b"[1]", "not a JSON object: got array"),
        (b'{"event_name": "a\xc3"}', "invalid UTF-8 at byte 17"),
        (b'{"event_name": 5}', "invalid event: event_name: Expected `str`, got `int`"),
        (b'{"user_id": "u"}', "invalid event: event_name: Field required"),
        (b'{"event_name": "a", "metadata": [1]}', "invalid event: metadata: Expected `object`, got `array`"),
        (b'{"event_name": "a", "value": {"x": 1}}',
         "invalid event: value: Expected `int | float | str | null`, got `object`"),
        (b'{"event_name": "a", "value": 18446744073709551616}', "invalid event: value: "),
        (b'{"event_name": "a", "user": {"userID": "u", "nope": 1}}', "invalid event: user.nope: unknown field"),
        (b'{"event_name": "a", "user": {"custom": 5}}', "invalid event: user.custom: Expected `object`"),
        (b'{"event_name": "a", "user": {"customIDs": {"x": []}}}', "invalid event: user.customIDs[...]: Expected"),
        (b'{"eventName": "a", "user": {"userID": 5}}', "invalid event: user.userID: Expected `str | null`, got `int`"),
        (b'{"eventName": "a", "statsigMetadata": "x"}', "invalid event: statsigMetadata: Expected `object`"),
        (b'{"event_name": "' + b"n" * 129 + b'"}', "invalid event: event_name: Expected `str` of length <= 128"),
    ],
)
def test_decode_line_reasons(line: bytes, reason: str) -> None:
    with pytest.raises(LineError) as e:
        decode_line(line)
    assert str(e.value).startswith(reason), str(e.value)


def test_crlf_and_surrounding_whitespace_are_accepted() -> None:
    assert decode_line(b' {"event_name": "a", "time": 5}\r').eventName == "a"


def _nested(depth: int, where: str = "metadata") -> bytes:
    """An event whose nesting, counting the event itself, is exactly `depth`."""
    if where == "metadata":  # event > metadata > arrays
        return b'{"event_name":"e","metadata":{"a":' + b"[" * (depth - 2) + b"]" * (depth - 2) + b"}}"
    # event > user > custom > arrays
    return b'{"eventName":"e","user":{"custom":{"a":' + b"[" * (depth - 3) + b"]" * (depth - 3) + b"}}}"


@pytest.mark.parametrize("where", ["metadata", "user"])
def test_depth_limit_is_decided_at_decode(where: str) -> None:
    """At MAX_DEPTH an event passes; one level more, or a thousand (msgspec's own RecursionError),
    it is invalid with the same reason: never an exception of another kind."""
    assert decode_line(_nested(MAX_DEPTH, where)).eventName == "e"
    for depth in (MAX_DEPTH + 1, 500, 1000, 100_000):
        with pytest.raises(LineError, match=f"deeper than {MAX_DEPTH} levels"):
            decode_line(_nested(depth, where))
    # The same through a chunk and a body: only the deep one is refused.
    good = b'{"event_name":"ok"}'
    for bad in (_nested(MAX_DEPTH + 1, where), _nested(5000, where)):
        assert ChunkDecoder().decode(good + b"\n" + bad + b"\n") is None
        got = decode_events(b"[" + good + b"," + bad + b"]", "array")
        assert got[0].event.eventName == "ok" and "deeper than" in str(got[1])  # type: ignore[union-attr]


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = "[" * 500
    assert decode_line(orjson.dumps({"event_name": "e", "metadata": {"t": text}})).as_dict()["metadata"] == {"t": text}


@pytest.mark.parametrize(("metadata", "want"), [
    (None, {"id": "f:1"}), (b"{}", {"id": "f:1"}), (b"{ }", {"id": "f:1"}), (b'{ "a" : 1 }', {"a": 1, "id": "f:1"}),
    (b'{"a":{"b":[1,{}]}}', {"a": {"b": [1, {}]}, "id": "f:1"}), (b'{"id":"mine","b":2}', {"id": "f:1", "b": 2})])
def test_event_id_is_added_to_metadata_as_it_came(metadata: bytes | None, want: dict[str, Any]) -> None:
    ev = StatsigEvent("e", 1, metadata=None if metadata is None else msgspec.Raw(metadata))
    set_metadata(ev, "id", "f:1")
    assert ev.as_dict()["metadata"] == want
    ev = StatsigEvent("e", 1, metadata=None if metadata is None else msgspec.Raw(metadata))
    add_event_ids([ev], [0], "id", "f:", 1, metadata or b"")  # the chunk path
    assert ev.as_dict()["metadata"] == want


def test_schema_comes_from_the_structs() -> None:
    schema = event_schema()
    assert schema["required"] == ["event_name"]
    assert schema["properties"]["event_name"]["maxLength"] == 128
    assert "#" in schema["properties"]["event_name"]["pattern"]
    assert "userID" in schema["properties"]["user"]["anyOf"][0]["properties"]
    assert event_schema("sdk")["required"] == ["eventName"]


@pytest.mark.parametrize("name", [f"a{c}b" for c in DROPPED_NAME_CHARS])
def test_names_statsig_drops_fail_the_one_call_path_and_get_the_reason(name: str) -> None:
    line = orjson.dumps({"event_name": name})
    assert ChunkDecoder().decode(line + b"\n") is None
    with pytest.raises(LineError, match="Statsig drops events whose name"):
        decode_line(line)


@pytest.mark.parametrize("metadata", [None, b"{}", b"{ }", b'{"a":1}', b'{"a": 1 }', b'{"forwarder_event_id":"x"}'])
def test_chunk_path_sets_the_same_event_ids_as_line_by_line(metadata: bytes | None) -> None:
    tail = b"" if metadata is None else b',"metadata":' + metadata
    lines = [b'{"event_name":"e","time":1' + tail + b"}", b'{"event_name":"f","time":2}']
    data = b"\n".join(lines) + b"\n"
    many = ChunkDecoder().decode(data, ids=("forwarder_event_id", "fp:", 100))
    assert many is not None
    if not many.ids_set:
        add_event_ids(many.events, [0, *many.ends[:-1]], "forwarder_event_id", "fp:", 100, data)
    want = []
    at = 100
    for line in lines:
        ev = decode_line(line)
        set_metadata(ev, "forwarder_event_id", f"fp:{at}")
        want.append(ev.as_dict())
        at += len(line) + 1
    assert [e.as_dict() for e in many.events] == want


def test_the_decode_layer_imports_no_server_or_settings_library() -> None:
    """forwarder.client (another package) validates with decode_line: it must not pull these in."""
    import subprocess
    import sys

    code = ("import sys, forwarder.decode.codec; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'pydantic_settings', 'fastapi', 'uvicorn', 'watchdog', 'statsig_python_core'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
