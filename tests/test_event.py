"""The event model: the fast path agrees with the pydantic model on every input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.decode.codec import LineError, decode_line
from forwarder.decode.event import (
    DROPPED_NAME_CHARS,
    InvalidEvent,
    _slow,
    _slow_sdk,
    fast_path,
    is_sdk_shaped,
    over_limits,
    to_statsig,
)

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


def _outcome(fn: Any, obj: dict[str, Any]) -> Any:
    try:
        out = fn(obj)
    except InvalidEvent:
        return "invalid"
    if out is not None:
        out = dict(out)
        out.pop("time", None) if "time" not in obj or obj["time"] is None else None
    return out


@settings(max_examples=500, deadline=None)
@given(events)
def testfast_path_path_accepts_only_what_the_model_accepts_identically(obj: dict[str, Any]) -> None:
    fast = _outcome(fast_path, obj)
    if fast is None:
        return
    assert fast == _outcome(lambda o: _slow(o, "metadata"), obj)


# Statsig's rules: names with the characters it drops, fields on both sides of its size limits.
rule_texts = st.text(st.sampled_from("ab_:. é😀" + DROPPED_NAME_CHARS), max_size=70)
rule_events = st.fixed_dictionaries(
    {"event_name": rule_texts.filter(bool)},
    optional={
        "value": rule_texts | st.integers(-(2**63), 2**63 - 1),
        "user_id": st.text(max_size=3),
        "metadata": st.dictionaries(st.text(max_size=3),
                                    st.floats(allow_nan=False) | st.builds("x".__mul__, st.integers(0, 2100)),
                                    max_size=3),
        "user": st.fixed_dictionaries({}, optional={
            "userID": st.builds("u".__mul__, st.integers(0, 4200)),
            "custom": st.dictionaries(st.text(max_size=2), st.text(max_size=9))}),
        "time": st.integers(0, 2**41),
    },
)


@settings(max_examples=500, deadline=None)
@given(rule_events, st.sampled_from(["send", "reject"]))
def test_fast_path_agrees_with_the_model_on_statsig_rules(obj: dict[str, Any], oversize: Any) -> None:
    slow = _outcome(lambda o: _slow(o, "metadata", oversize), obj)
    for line_bytes in (None, len(orjson.dumps(obj))):
        fast = _outcome(lambda o: fast_path(o, line_bytes), obj)  # noqa: B023
        if fast is not None:
            assert fast == slow
            assert over_limits(to_statsig(obj)) == []  # the fast path takes only events within the limits
    name = obj["event_name"]
    if any(c in DROPPED_NAME_CHARS for c in name):
        assert slow == "invalid"


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


@settings(max_examples=500, deadline=None)
@given(sdk_events)
def test_fast_path_of_statsig_shaped_lines_agrees_with_their_model(obj: dict[str, Any]) -> None:
    fast = _outcome(fast_path, obj)
    if fast is None:
        return
    slow = _slow_sdk if is_sdk_shaped(obj) else _slow
    assert fast == _outcome(lambda o: slow(o, "metadata"), obj)


def test_statsig_shaped_lines_pass_as_they_came() -> None:
    exposure = {"eventName": "statsig::gate_exposure", "value": None, "statsigMetadata": None, "time": 1795615408601,
                "user": {"userID": "u1", "customIDs": {"stableID": "s"}, "analyticsOnlyMetadata": {"a": 1}},
                "metadata": {"gate": "g", "gateValue": "true", "ruleID": "r"},
                "secondaryExposures": [{"gate": "c", "gateValue": "true", "ruleID": "rc"}]}
    assert to_statsig(exposure) == {k: v for k, v in exposure.items() if v is not None}
    assert to_statsig({"eventName": "a", "user": {"userID": "u", "privateAttributes": {"x": 1}, "email": None},
                       "time": "2024-01-01T00:00:00Z"}) == {"eventName": "a", "user": {"userID": "u"},
                                                            "time": 1704067200000}
    assert to_statsig({"eventName": "a", "time": 1, "k": 1})["metadata"] == {"k": 1}
    with pytest.raises(InvalidEvent, match=r"unknown field\(s\): k"):
        to_statsig({"eventName": "a", "k": 1}, "reject")
    with pytest.raises(InvalidEvent, match=r"secondaryExposures\.0"):
        to_statsig({"eventName": "a", "secondaryExposures": ["g"]})
    with pytest.raises(InvalidEvent, match="eventName"):
        to_statsig({"eventName": ""})
    # Both names: the project's own form, where eventName is just an unknown field.
    both = to_statsig({"event_name": "mine", "eventName": "theirs", "time": 1})
    assert both["eventName"] == "mine" and both["metadata"] == {"eventName": "theirs"}
    assert decode_line(b'{"eventName": "a", "user": {}, "time": 5}') == {"eventName": "a", "user": {}, "time": 5}


def test_mapping_of_a_full_event() -> None:
    obj = {
        "event_name": "purchase",
        "user": {"user_id": "u1", "email": "a@b.c", "privateAttributes": {"ssn": "x"}, "customIDs": {"org": 7}},
        "value": 9.5,
        "metadata": {"sku": "X", "n": 2},
        "time": "2025-01-02T03:04:05.678Z",
        "source": "web",
    }
    assert to_statsig(obj) == {
        "eventName": "purchase",
        "user": {"userID": "u1", "email": "a@b.c", "customIDs": {"org": 7}},
        "value": 9.5,
        "metadata": {"source": "web", "sku": "X", "n": 2},
        "time": 1735787045678,
    }


def test_user_id_shorthand_and_anonymous_fallback() -> None:
    assert to_statsig({"event_name": "a", "user_id": "u9", "time": 1})["user"] == {"userID": "u9"}
    assert to_statsig({"event_name": "a", "time": 1})["user"] == {"userID": "anonymous"}
    assert to_statsig({"event_name": "a", "user_id": "", "time": 1})["user"] == {"userID": ""}
    assert to_statsig({"event_name": "a", "user": {"email": "e"}, "time": 1})["user"] == {
        "email": "e", "userID": "anonymous"}
    assert to_statsig({"event_name": "a", "user_id": "x", "user": {"userID": "y"}, "time": 1})["user"] == {
        "userID": "y"}


def test_unknown_fields_policy() -> None:
    assert to_statsig({"event_name": "a", "k": 1, "metadata": {"k": 2}, "time": 1})["metadata"] == {"k": 2}
    with pytest.raises(InvalidEvent, match=r"unknown field\(s\): k"):
        to_statsig({"event_name": "a", "k": 1}, "reject")


def test_time_forms() -> None:
    assert to_statsig({"event_name": "a", "time": 1700000000123})["time"] == 1700000000123
    assert to_statsig({"event_name": "a", "time": 1700000000123.9})["time"] == 1700000000123
    assert to_statsig({"event_name": "a", "time": "2024-01-01T00:00:00"})["time"] == 1704067200000
    assert to_statsig({"event_name": "a", "time": "2024-01-01T01:00:00+01:00"})["time"] == 1704067200000
    for bad in (-1, True, "soon", [1]):
        with pytest.raises(InvalidEvent, match="time"):
            to_statsig({"event_name": "a", "time": bad})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b'{"event_name": NaN}', "invalid JSON"),
        (b'"just a string"', "not a JSON object: got string"),
        (b"null", "not a JSON object: got null"),
        (b'{"event_name": "a\xc3"}', "invalid UTF-8 at byte 17"),
        (b'{"event_name": 5}', "invalid event: event_name: Input should be a valid string"),
        (b'{"event_name": "a", "metadata": [1]}', "invalid event: metadata: Input should be a valid dictionary"),
        (b'{"event_name": "a", "value": {"x": 1}}', "invalid event: value: Input should be a string or a number"),
        (b'{"event_name": "a", "user": {"userID": "u", "nope": 1}}', "invalid event: user.nope: Extra inputs"),
    ],
)
def test_decode_line_reasons(line: bytes, reason: str) -> None:
    with pytest.raises(LineError) as e:
        decode_line(line)
    assert str(e.value).startswith(reason), str(e.value)


def test_crlf_and_surrounding_whitespace_are_accepted() -> None:
    assert decode_line(b' {"event_name": "a", "time": 5}\r')["eventName"] == "a"


def _sdk_shaped(obj: dict[str, Any]) -> dict[str, Any]:
    return {("eventName" if k == "event_name" else k): v for k, v in obj.items() if k != "user_id"}


@settings(max_examples=300, deadline=None)
@given(rule_events.map(_sdk_shaped), st.sampled_from(["send", "reject"]))
def test_statsig_rules_apply_to_statsig_shaped_lines_on_both_paths(obj: dict[str, Any], oversize: Any) -> None:
    slow = _outcome(lambda o: _slow_sdk(o, "metadata", oversize), obj)
    for line_bytes in (None, len(orjson.dumps(obj))):
        fast = _outcome(lambda o: fast_path(o, line_bytes), obj)  # noqa: B023
        if fast is not None:
            assert fast == slow
            assert over_limits(to_statsig(obj)) == []
    if any(c in DROPPED_NAME_CHARS for c in obj["eventName"]):
        assert slow == "invalid"
